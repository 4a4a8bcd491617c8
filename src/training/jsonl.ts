import { createReadStream } from 'node:fs';

/** Where an input item sat: `index` counts items from 0; `line` (1-based) is set for JSONL input. */
export interface ItemPosition {
  index: number;
  line?: number;
}

/** One input item: its parsed JSON value, or why its line did not parse. */
export type InputItem = ItemPosition & ({ value: unknown } | { parseError: string });

function parseLine(raw: string, index: number, line: number): InputItem | undefined {
  const text = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
  if (text.trim() === '') return undefined;
  try {
    return { index, line, value: JSON.parse(text) };
  } catch (error) {
    return { index, line, parseError: (error as Error).message };
  }
}

export function positionOf(item: InputItem): ItemPosition {
  return item.line === undefined ? { index: item.index } : { index: item.index, line: item.line };
}

export function itemsOfArray(values: readonly unknown[]): InputItem[] {
  return values.map((value, index) => ({ index, value }));
}

export interface LineSpan {
  /** 1-based line number. */
  line: number;
  /** Byte offsets of the line within the file, its `\n` excluded. */
  start: number;
  end: number;
  text: string;
  /** False only for a last line that has no `\n` after it. */
  terminated: boolean;
}

const READ_CHUNK = 1024 * 1024;

/** Lines of a file read in chunks, with their byte offsets; `end` bounds the read (exclusive). */
export async function* readLineSpans(path: string, end?: number): AsyncGenerator<LineSpan> {
  if (end === 0) return;
  yield* lineSpansOf(createReadStream(path, end === undefined ? { highWaterMark: READ_CHUNK } : { highWaterMark: READ_CHUNK, end: end - 1 }));
}

/** Lines of a byte stream (a file, a request body) as its chunks arrive, with their byte offsets. */
async function* lineSpansOf(chunks: AsyncIterable<Buffer>): AsyncGenerator<LineSpan> {
  let pending: Buffer[] = [];
  let pendingStart = 0;
  let offset = 0;
  let line = 0;
  for await (const chunk of chunks) {
    let from = 0;
    for (let newline = chunk.indexOf(10); newline >= 0; newline = chunk.indexOf(10, from)) {
      // Only a line that straddles chunks needs its pieces copied together.
      const bytes = pending.length === 0 ? chunk.subarray(from, newline) : Buffer.concat([...pending, chunk.subarray(from, newline)]);
      pending = [];
      line += 1;
      yield { line, start: pendingStart, end: pendingStart + bytes.length, text: bytes.toString('utf8'), terminated: true };
      pendingStart = offset + newline + 1;
      from = newline + 1;
    }
    if (from < chunk.length) pending.push(chunk.subarray(from));
    offset += chunk.length;
  }
  if (pending.length > 0) {
    const bytes = Buffer.concat(pending);
    yield { line: line + 1, start: pendingStart, end: pendingStart + bytes.length, text: bytes.toString('utf8'), terminated: false };
  }
}

/**
 * JSON Lines items of a byte stream, parsed one line at a time as they are taken, so a large body
 * is never one string nor one array of values. Blank lines are skipped (they still count for
 * `line`), a trailing `\r` is tolerated, a missing final `\n` is normal.
 */
export async function* jsonLinesOf(chunks: AsyncIterable<Buffer>): AsyncGenerator<InputItem> {
  let index = 0;
  for await (const span of lineSpansOf(chunks)) {
    const item = parseLine(span.text, index, span.line);
    if (!item) continue;
    index += 1;
    yield item;
  }
}

/** JSONL items of a file (CLI input). */
export function readJsonLinesFile(path: string): AsyncGenerator<InputItem> {
  return jsonLinesOf(createReadStream(path, { highWaterMark: READ_CHUNK }));
}
