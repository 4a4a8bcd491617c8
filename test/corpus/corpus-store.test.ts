import assert from 'node:assert/strict';
import { appendFile, copyFile, mkdir, mkdtemp, readFile, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import type { CorpusRow } from '../../src/corpus/corpus-row.js';
import type { ServiceError } from '../../src/errors.js';
import { isServiceError } from '../support/assert-service-error.js';
import { SAMPLE_CORPUS as samplePath } from '../support/sample-data.js';


async function sampleLines(file = samplePath): Promise<string[]> {
  const lines = (await readFile(file, 'utf8')).split('\n');
  assert.equal(lines.pop(), '', 'sample ends with a newline');
  return lines;
}

describe('CorpusStore', function () {
  let dir: string;
  let corpusPath: string;

  beforeEach(async function () {
    dir = await mkdtemp(path.join(tmpdir(), 'corpus-store-'));
    corpusPath = path.join(dir, 'wiki18.jsonl');
    await copyFile(samplePath, corpusPath);
  });

  afterEach(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  it('returns the exact rows of the 1k sample by position: first, last and spread rows, in the order asked', async function () {
    const lines = await sampleLines();
    const corpus = await CorpusStore.open(corpusPath);
    try {
      assert.equal(corpus.rows, 1000);
      const asked = [0, 999, 1, 500, 501, 137, 999, 0, 42, 998, 250, 777];
      const rows = await corpus.readRows(asked);
      assert.equal(rows.length, asked.length);
      asked.forEach((rowIndex, i) => {
        const expected = JSON.parse(lines[rowIndex]!) as Record<string, unknown>;
        assert.deepEqual(rows[i], expected);
        assert.equal(rows[i]!.id, String(rowIndex), 'wiki18 ids are 0-based line numbers');
        assert.equal(rows[i]!.contents, expected.contents);
      });
      assert.deepEqual(await corpus.readRow(999), JSON.parse(lines[999]!));
    } finally {
      await corpus.close();
    }
  });

  it('reads every row, and every passage in order from a starting row, equal to the lines read independently', async function () {
    const lines = await sampleLines();
    const corpus = await CorpusStore.open(corpusPath);
    try {
      const all = await corpus.readRows(lines.map((_, i) => i));
      assert.deepEqual(all, lines.map((line) => JSON.parse(line)));
      const passages: string[] = [];
      for await (const contents of corpus.passages(990)) passages.push(contents);
      assert.deepEqual(passages, lines.slice(990).map((line) => (JSON.parse(line) as { contents: string }).contents));
    } finally {
      await corpus.close();
    }
  });

  it('writes the sidecar at <corpus>.offsets by default with progress up to the corpus size, and reuses it untouched', async function () {
    const progress: Array<[number, number]> = [];
    const first = await CorpusStore.open(corpusPath, { onProgress: (done, total) => progress.push([done, total]) });
    await first.close();
    const size = (await stat(corpusPath)).size;
    assert.equal(first.sidecarRebuilt, true);
    assert.equal(first.sidecarPath, `${corpusPath}.offsets`);
    assert.deepEqual(progress.at(-1), [size, size]);
    const before = await stat(first.sidecarPath);
    assert.equal(before.size, 72 + 1001 * 8, 'header + rows + 1 float64 offsets');

    const reopenProgress: number[] = [];
    const second = await CorpusStore.open(corpusPath, { onProgress: (done) => reopenProgress.push(done) });
    try {
      assert.equal(second.sidecarRebuilt, false);
      assert.deepEqual(reopenProgress, [], 'a valid sidecar is not rescanned');
      const after = await stat(second.sidecarPath);
      assert.equal(after.ino, before.ino);
      assert.equal(after.mtimeMs, before.mtimeMs);
      assert.equal((await second.readRow(999)).id, '999');
    } finally {
      await second.close();
    }
  });

  it('keeps the sidecar where it is told (a read-only corpus folder) and creates nothing beside the corpus', async function () {
    const sidecarPath = path.join(dir, 'data', 'corpus.offsets');
    await mkdir(path.dirname(sidecarPath));
    const corpus = await CorpusStore.open(corpusPath, { sidecarPath });
    await corpus.close();
    assert.equal(corpus.sidecarPath, sidecarPath);
    await stat(sidecarPath);
    await assert.rejects(stat(`${corpusPath}.offsets`), /ENOENT/);
  });

  it('rebuilds the sidecar after rows are appended', async function () {
    await (await CorpusStore.open(corpusPath)).close();
    await appendFile(corpusPath, '{"id": "1000", "contents": "\\"New\\"\\nappended row"}\n');
    const corpus = await CorpusStore.open(corpusPath);
    try {
      assert.equal(corpus.sidecarRebuilt, true);
      assert.equal(corpus.rows, 1001);
      assert.deepEqual(await corpus.readRow(1000), { id: '1000', contents: '"New"\nappended row' });
    } finally {
      await corpus.close();
    }
  });

  it('rebuilds after a same-size change that moves line boundaries (new mtime), reading the new rows', async function () {
    await (await CorpusStore.open(corpusPath)).close();
    const lines = await sampleLines();
    const shortened = lines[500]!.replace(/ [a-z]{6}/, '');
    assert.equal(shortened.length, lines[500]!.length - 7);
    lines[500] = shortened;
    lines[501] = `${lines[501]!.slice(0, -2)} padded"}`;
    const [shorter, longer] = [JSON.parse(lines[500]!), JSON.parse(lines[501]!)] as CorpusRow[];
    const changed = lines.join('\n') + '\n';
    assert.equal(Buffer.byteLength(changed), (await stat(corpusPath)).size, 'same size');
    await writeFile(corpusPath, changed);
    const later = new Date(Date.now() + 5000);
    await utimes(corpusPath, later, later);
    const corpus = await CorpusStore.open(corpusPath);
    try {
      assert.equal(corpus.sidecarRebuilt, true);
      assert.deepEqual(await corpus.readRows([500, 501]), [shorter, longer]);
    } finally {
      await corpus.close();
    }
  });

  it('rebuilds after a same-size edit that kept the old mtime (caught by the head/tail fingerprint)', async function () {
    const fixedTime = new Date('2024-01-02T03:04:05Z');
    await utimes(corpusPath, fixedTime, fixedTime);
    await (await CorpusStore.open(corpusPath)).close();
    const bytes = await readFile(corpusPath);
    bytes.write('Ivan', bytes.indexOf('Evan Morris'), 'latin1');
    await writeFile(corpusPath, bytes);
    await utimes(corpusPath, fixedTime, fixedTime);
    const corpus = await CorpusStore.open(corpusPath);
    try {
      assert.equal(corpus.sidecarRebuilt, true);
      assert.match((await corpus.readRow(0)).contents, /^"Ivan Morris"/);
    } finally {
      await corpus.close();
    }
  });

  it('rebuilds a damaged sidecar instead of trusting it', async function () {
    const first = await CorpusStore.open(corpusPath);
    await first.close();
    await truncate(first.sidecarPath, 1000);
    const corpus = await CorpusStore.open(corpusPath);
    try {
      assert.equal(corpus.sidecarRebuilt, true);
      assert.equal((await stat(corpus.sidecarPath)).size, 72 + 1001 * 8);
      assert.equal((await corpus.readRow(999)).id, '999');
    } finally {
      await corpus.close();
    }
  });

  it('reports a malformed line with the corpus path and its 1-based line number, and still serves good rows', async function () {
    await writeFile(
      corpusPath,
      ['{"id": "0", "contents": "a"}', '{"id": "1", "contents": "b"}', '{"id": "2", "contents": "c"', '[1, 2]', '{"id": 4, "contents": "e"}'].join('\n') + '\n',
    );
    const corpus = await CorpusStore.open(corpusPath);
    try {
      assert.equal(corpus.rows, 5);
      await assert.rejects(corpus.readRows([0, 2]), isServiceError('internal', new RegExp(`${corpusPath}, line 3 \\(1-based; row 2\\): not valid JSON`)));
      await assert.rejects(corpus.readRow(3), isServiceError('internal', /line 4 \(1-based; row 3\): not a JSON object/));
      await assert.rejects(corpus.readRow(4), isServiceError('internal', /line 5 .*"id" is not a string/));
      const error = await corpus.readRow(2).catch((caught: unknown) => caught as ServiceError);
      assert.deepEqual(error.details, { corpusPath, line: 3 });
      assert.deepEqual(await corpus.readRows([1, 0]), [{ id: '1', contents: 'b' }, { id: '0', contents: 'a' }]);
    } finally {
      await corpus.close();
    }
  });

  it('counts a final line without a newline as a row and the empty tail after a final newline as none', async function () {
    const body = '{"id": "0", "contents": "a"}\r\n{"id": "1", "contents": "b"}';
    for (const [text, rows] of [[body, 2], [`${body}\n`, 2], ['', 0]] as const) {
      await writeFile(corpusPath, text);
      const corpus = await CorpusStore.open(corpusPath);
      try {
        assert.equal(corpus.rows, rows, JSON.stringify(text));
        if (rows > 0) assert.deepEqual(await corpus.readRows([1, 0]), [{ id: '1', contents: 'b' }, { id: '0', contents: 'a' }]);
      } finally {
        await corpus.close();
      }
    }
  });

  it('rejects rows past the end as not_found and non-integer rows as bad_request', async function () {
    const corpus = await CorpusStore.open(corpusPath);
    try {
      await assert.rejects(corpus.readRows([0, 1000]), isServiceError('not_found', /row 1000 is past the end of corpus .* \(1000 rows\)/));
      await assert.rejects(corpus.readRow(-1), isServiceError('bad_request', /non-negative integer/));
      await assert.rejects(corpus.readRow(1.5), isServiceError('bad_request', /non-negative integer/));
    } finally {
      await corpus.close();
    }
  });

  it('answers a missing corpus with not_found naming the path', async function () {
    const missing = path.join(dir, 'missing.jsonl');
    await assert.rejects(CorpusStore.open(missing), isServiceError('not_found', new RegExp(missing)));
  });
});
