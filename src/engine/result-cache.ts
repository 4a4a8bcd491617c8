import { LRUCache } from 'lru-cache';
import type { SearchHit } from './types.js';

/** Bytes counted per entry beyond its text, for the map slot, arrays and hit objects. */
const ENTRY_OVERHEAD_BYTES = 200;
const HIT_OVERHEAD_BYTES = 100;

/**
 * Results of one query, keyed by (version, final query text, topk), in a least-recently-used
 * map bounded by an estimate of the memory its entries hold. Results of a version never change,
 * so a hit is exactly what a search would return; the serving side clears it on every swap.
 */
export class ResultCache {
  private readonly entries: LRUCache<string, SearchHit[]>;

  constructor(readonly maxBytes: number) {
    this.entries = new LRUCache<string, SearchHit[]>({
      maxSize: maxBytes,
      // JS strings are UTF-16: two bytes per character of the key and of each document's JSON.
      sizeCalculation: (hits, key) =>
        ENTRY_OVERHEAD_BYTES +
        2 * key.length +
        hits.reduce((sum, hit) => sum + HIT_OVERHEAD_BYTES + 2 * JSON.stringify(hit.document).length, 0),
    });
  }

  get(version: string, queryText: string, topk: number): SearchHit[] | undefined {
    return this.entries.get(cacheKey(version, queryText, topk));
  }

  set(version: string, queryText: string, topk: number, hits: SearchHit[]): void {
    this.entries.set(cacheKey(version, queryText, topk), hits);
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.entries.calculatedSize;
  }
}

function cacheKey(version: string, queryText: string, topk: number): string {
  return JSON.stringify([version, topk, queryText]);
}
