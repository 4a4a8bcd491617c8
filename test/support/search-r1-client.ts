import type { CorpusRow } from '../../src/corpus/corpus-row.js';

export interface ScoredItem {
  document: CorpusRow;
  score: number;
}

/**
 * What Search-R1's agent (`generation.py`, `_passages2string`) does with one query's hits: the
 * title is `contents` up to the first newline, quotes kept; the text is the rest.
 */
export function renderLikeSearchR1(hits: ScoredItem[]): string {
  return hits
    .map((hit, position) => {
      const lines = hit.document.contents.split('\n');
      return `Doc ${position + 1}(Title: ${lines[0]}) ${lines.slice(1).join('\n')}\n`;
    })
    .join('');
}
