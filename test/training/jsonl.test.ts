import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { jsonLinesOf, readLineSpans, type LineSpan } from '../../src/training/jsonl.js';
import { temporaryDir } from '../support/training-fixtures.js';

async function spans(file: string, end?: number): Promise<LineSpan[]> {
  const out: LineSpan[] = [];
  for await (const span of readLineSpans(file, end)) out.push(span);
  return out;
}

describe('JSONL reading', function () {
  let dir: string;

  beforeEach(async function () {
    dir = await temporaryDir('jsonl');
  });

  afterEach(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  it('splits a multi-megabyte file into lines with exact byte offsets, multi-byte text across chunk edges intact', async function () {
    // Lines of 1..~40k bytes of 3-byte characters: many straddle the 1 MiB read chunks mid-character.
    const lines = Array.from({ length: 300 }, (_, i) => `${i}:${'€'.repeat((i * 7919) % 13000)}`);
    const file = path.join(dir, 'big.jsonl');
    await writeFile(file, `${lines.join('\n')}\n`);
    const read = await spans(file);
    assert.deepEqual(read.map((span) => span.text), lines);
    let offset = 0;
    read.forEach((span, i) => {
      assert.deepEqual([span.line, span.start, span.end, span.terminated], [i + 1, offset, offset + Buffer.byteLength(lines[i]!), true]);
      offset = span.end + 1;
    });
  });

  it('reports an unterminated last line as such, and stops at `end`', async function () {
    const file = path.join(dir, 'torn.jsonl');
    await writeFile(file, 'first\nsecond\nthi');
    const read = await spans(file);
    assert.deepEqual(read.map(({ text, start, end, terminated }) => ({ text, start, end, terminated })), [
      { text: 'first', start: 0, end: 5, terminated: true },
      { text: 'second', start: 6, end: 12, terminated: true },
      { text: 'thi', start: 13, end: 16, terminated: false },
    ]);
    assert.deepEqual((await spans(file, 13)).map((span) => span.text), ['first', 'second']);
    assert.deepEqual(await spans(file, 0), []);
  });

  it('parses a JSONL stream in 3-byte chunks: blank lines skipped but counted, CRLF tolerated, bad lines kept as parse errors, characters across chunks intact', async function () {
    const body = Buffer.from('{"a":1}\r\n\n  \nnot json\n[2]\n{"€":"😀"}');
    const chunks = Array.from({ length: Math.ceil(body.length / 3) }, (_, i) => body.subarray(3 * i, 3 * i + 3));
    const items = [];
    for await (const item of jsonLinesOf(Readable.from(chunks))) items.push(item);
    assert.deepEqual(items.slice(0, 1), [{ index: 0, line: 1, value: { a: 1 } }]);
    assert.equal(items[1]!.index, 1);
    assert.equal(items[1]!.line, 4);
    assert.ok('parseError' in items[1]!);
    assert.deepEqual(items[2], { index: 2, line: 5, value: [2] });
    assert.deepEqual(items[3], { index: 3, line: 6, value: { '€': '😀' } });
    assert.equal(items.length, 4);
  });
});
