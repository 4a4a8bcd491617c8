import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { CorpusRow } from '../src/corpus/corpus-row.js';
import { SAMPLE_CORPUS } from '../test/support/retriever-fixture.js';
import { workDir } from './bench-report.js';

async function sampleLines(): Promise<string[]> {
  return (await readFile(SAMPLE_CORPUS, 'utf8')).split('\n').filter((line) => line !== '');
}

/** The first `rows` lines of the wiki18 sample, as a corpus file under benchmarks/work. */
export async function sampleHead(rows: number): Promise<string> {
  const file = path.join(workDir, `wiki18-sample-head-${rows}.jsonl`);
  await mkdir(workDir, { recursive: true });
  await writeFile(file, (await sampleLines()).slice(0, rows).join('\n') + '\n');
  return file;
}

/** Search-R1-like sub-queries: a passage's title and a few of its words, varied in length. */
export async function sampleQueries(count: number): Promise<string[]> {
  const rows = (await sampleLines()).map((line) => JSON.parse(line) as CorpusRow);
  return Array.from({ length: count }, (_, position) => {
    const [title = '', text = ''] = rows[(position * 37) % rows.length]!.contents.split('\n');
    const words = text.split(/\s+/);
    const start = (position * 13) % Math.max(1, words.length - 12);
    return `${title.replaceAll('"', '')} ${words.slice(start, start + 2 + (position % 10)).join(' ')}`;
  });
}
