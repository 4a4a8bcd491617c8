/** How big one encoder run may be. */
export interface BatchLimits {
  /** Rows in one run. */
  maxBatchSize: number;
  /** `rows × padded length` in one run: bounds memory and keeps long inputs in small batches. */
  maxBatchTokens: number;
}

/**
 * Measured on CPU with the e5-base shape (benchmarks/encoder-throughput): sorted batches of 32
 * rows pad least and ran fastest; 64 and 128 rows did not run faster per token. A GPU may want
 * larger batches: pass `batchLimits`.
 */
export const DEFAULT_BATCH_LIMITS: BatchLimits = { maxBatchSize: 32, maxBatchTokens: 16_384 };

/**
 * Groups items of similar token length, so a batch pads little: items are taken shortest first
 * and cut into batches within `limits`. Returns input indices per batch; callers scatter results
 * back by index, so output order stays input order.
 */
export function batchesByLength(lengths: readonly number[], limits: BatchLimits): number[][] {
  const order = lengths.map((_, index) => index).sort((a, b) => lengths[a] - lengths[b] || a - b);
  return packBatches(order, lengths, limits);
}

/** The same limits without reordering: the baseline that length batching is measured against. */
export function batchesInInputOrder(lengths: readonly number[], limits: BatchLimits): number[][] {
  return packBatches(
    lengths.map((_, index) => index),
    lengths,
    limits,
  );
}

function packBatches(order: readonly number[], lengths: readonly number[], limits: BatchLimits): number[][] {
  const batches: number[][] = [];
  let batch: number[] = [];
  let longest = 0;
  for (const index of order) {
    const paddedLength = Math.max(longest, lengths[index]);
    const fits = batch.length < limits.maxBatchSize && (batch.length + 1) * paddedLength <= limits.maxBatchTokens;
    if (batch.length > 0 && !fits) {
      batches.push(batch);
      batch = [];
      longest = 0;
    }
    batch.push(index);
    longest = Math.max(longest, lengths[index]);
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}
