import { open, readFile } from 'node:fs/promises';
import { writeFully } from '../src/file-io.js';
import { SAMPLE_CORPUS } from '../test/support/sample-data.js';

/**
 * Writes a wiki18-like corpus of about `bytes`: the real sample's passages cycled, row i with the
 * id `idOf(i)` (wiki18's own scheme, the line number, by default).
 */
export async function generateWiki18Like(file: string, bytes: number, idOf: (row: number) => string = String): Promise<void> {
  const sample = (await readFile(SAMPLE_CORPUS, 'utf8'))
    .trimEnd()
    .split('\n')
    .map((line) => (JSON.parse(line) as { contents: string }).contents);
  const out = await open(file, 'w');
  try {
    let written = 0;
    for (let row = 0; written < bytes; ) {
      // One write per ~8 MB block: a write per line is what would make generation slow.
      const lines: string[] = [];
      for (let blockBytes = 0; blockBytes < 8e6 && written + blockBytes < bytes; row++) {
        const line = `${JSON.stringify({ id: idOf(row), contents: sample[row % sample.length] })}\n`;
        lines.push(line);
        blockBytes += Buffer.byteLength(line);
      }
      const block = Buffer.from(lines.join(''));
      await writeFully(out, block, written);
      written += block.length;
    }
  } finally {
    await out.close();
  }
}
