import assert from 'node:assert/strict';
import { appendFile, copyFile, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CorpusIds, hashId, idsSidecarPath } from '../../src/corpus/corpus-ids.js';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { SAMPLE_CORPUS } from '../support/sample-data.js';

/** The ids sidecar's header (magic, version, corpus identity, count): all it holds when every id is its row number. */
const HEADER_BYTES = 72;

/** Row i has id IDS[i]: another id scheme, a repeated id, and ids that are other rows' numbers. */
const IDS = ['doc-a', '1', '7', 'doc-a', '0', '5', 'x/y', '3'];

describe('CorpusIds', function () {
  let dir: string;
  let opened: CorpusStore[];

  beforeEach(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'corpus-ids-'));
    opened = [];
  });

  afterEach(async function () {
    await Promise.all(opened.map((store) => store.close()));
    await rm(dir, { recursive: true, force: true });
  });

  async function open(corpusPath: string): Promise<CorpusStore> {
    const store = await CorpusStore.open(corpusPath);
    opened.push(store);
    return store;
  }

  async function writeCorpus(ids: readonly string[]): Promise<string> {
    const corpusPath = path.join(dir, 'corpus.jsonl');
    await writeFile(corpusPath, ids.map((id, row) => `${JSON.stringify({ id, contents: `"Title ${row}"\nrow ${row}` })}\n`).join(''));
    return corpusPath;
  }

  /** The row number each found row sits at (its contents say), or null where none was found. */
  async function rowsOf(lookup: CorpusIds, ids: string[]): Promise<(number | null)[]> {
    const found = await lookup.find(ids);
    return found.map((row) => (row ? Number(/row (\d+)$/.exec(row.contents)![1]) : null));
  }

  it('finds rows of any id scheme exactly, in the order asked: the first of a repeated id, row i for "i" only where row i has it', async function () {
    const lookup = new CorpusIds(await open(await writeCorpus(IDS)));
    assert.deepEqual(await rowsOf(lookup, ['doc-a', '1', '7', '0', '5', 'x/y', '3', '2', 'missing', '1', '01']), [0, 1, 2, 4, 5, 6, 7, null, null, 1, null]);
    const found = await lookup.find(['7']);
    assert.equal(found[0]!.id, '7');
    // Rows 0, 2, 3, 4, 6 and 7 carry an id other than their row number: 8 bytes each.
    assert.equal(await lookup.exceptionCount(), 6);
  });

  it('tells apart ids whose hashes collide by reading their rows', async function () {
    const seen = new Map<number, string>();
    const colliding: string[] = [];
    for (let n = 0; colliding.length < 3; n++) {
      const id = `id-${n}`;
      const other = seen.get(hashId(id));
      if (other === undefined) seen.set(hashId(id), id);
      else colliding.push(other, id);
    }
    const [first, second, absentTwin, absent] = colliding;
    assert.equal(hashId(first!), hashId(second!));
    assert.equal(hashId(absentTwin!), hashId(absent!));
    const lookup = new CorpusIds(await open(await writeCorpus(['x', second!, first!, absentTwin!])));
    assert.deepEqual(await rowsOf(lookup, [first!, second!, absent!, absentTwin!]), [2, 1, null, 3]);
  });

  it('keeps the scan in a sidecar beside the offsets one, read (not rebuilt) by the next store of the same corpus', async function () {
    const corpusPath = await writeCorpus(IDS);
    const first = new CorpusIds(await open(corpusPath));
    assert.equal(first.sidecarPath, path.join(dir, 'corpus.jsonl.ids'));
    assert.equal(idsSidecarPath(`${corpusPath}.offsets`), first.sidecarPath);
    await first.find(['doc-a']);
    const written = await stat(first.sidecarPath);
    assert.equal(written.size, HEADER_BYTES + 6 * 8);

    const second = new CorpusIds(await open(corpusPath));
    assert.deepEqual(await rowsOf(second, ['3', 'x/y', 'nope']), [7, 6, null]);
    assert.equal((await stat(second.sidecarPath)).mtimeMs, written.mtimeMs, 'read, not written again');
  });

  it('scans again when the corpus changed since its sidecar was written', async function () {
    const corpusPath = await writeCorpus(IDS);
    await new CorpusIds(await open(corpusPath)).find(['missing']);
    await appendFile(corpusPath, `${JSON.stringify({ id: 'appended', contents: '"Title 8"\nrow 8' })}\n`);
    const lookup = new CorpusIds(await open(corpusPath));
    assert.deepEqual(await rowsOf(lookup, ['appended', 'doc-a']), [8, 0]);
    assert.equal(await lookup.exceptionCount(), 7);
  });

  it('holds nothing for FlashRAG ids (row i has id "i"): the wiki18 sample answers by row reads, and an unknown id costs one scan kept as a bare header', async function () {
    const corpusPath = path.join(dir, 'wiki18.jsonl');
    await copyFile(SAMPLE_CORPUS, corpusPath);
    const lookup = new CorpusIds(await open(corpusPath));
    const known = await lookup.find(['999', '0', '500']);
    assert.deepEqual(
      known.map((row) => row!.id),
      ['999', '0', '500'],
    );
    await assert.rejects(stat(lookup.sidecarPath), { code: 'ENOENT' }, 'ids that are row numbers need no scan');
    const found = await lookup.find(['999', '1000', 'Evan Morris']);
    assert.deepEqual(
      found.map((row) => row?.id ?? null),
      ['999', null, null],
    );
    assert.equal(await lookup.exceptionCount(), 0);
    assert.equal((await stat(lookup.sidecarPath)).size, HEADER_BYTES);
  });
});
