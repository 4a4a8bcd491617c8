import type { ExecutionProviderName } from '../onnx/execution-provider.js';

/** How big one encoder run may be, and what starting another one costs. */
export interface BatchLimits {
  /** Rows in one run. */
  maxBatchSize: number;
  /** `rows × padded length` in one run: bounds memory and keeps long inputs in small batches. */
  maxBatchTokens: number;
  /**
   * The fixed cost of one more run, in padded tokens of work: splitting a batch pays this to
   * save the padding of its shorter rows.
   */
  runCostTokens: number;
}

/**
 * Measured on CPU with the e5-base shape (benchmarks/encoder-throughput): time per padded token
 * is flat from about 4 rows up, and a run costs about 8 tokens' time more than its tokens (layer
 * by layer thread-pool hand-offs), so short runs of equal length beat long padded ones.
 */
export const DEFAULT_BATCH_LIMITS: BatchLimits = { maxBatchSize: 32, maxBatchTokens: 16_384, runCostTokens: 8 };

/**
 * Not measured (no GPU here): a CUDA run pays kernel launches and host-device copies, worth far
 * more tokens than on CPU, so the plan keeps to the fewest full runs and cuts where padding is least.
 */
const CUDA_RUN_COST_TOKENS = 1024;

export function defaultBatchLimits(provider: ExecutionProviderName): BatchLimits {
  return provider === 'cuda' ? { ...DEFAULT_BATCH_LIMITS, runCostTokens: CUDA_RUN_COST_TOKENS } : DEFAULT_BATCH_LIMITS;
}

/**
 * Groups items of similar token length so the batches cost least: items sorted shortest first
 * are cut into consecutive runs within `limits`, minimising padded tokens plus `runCostTokens`
 * per run (an exact dynamic programme over the cut points). Returns input indices per batch;
 * callers scatter results back by index, so output order stays input order.
 */
export function batchesByLength(lengths: readonly number[], limits: BatchLimits): number[][] {
  const order = lengths.map((_, index) => index).sort((a, b) => lengths[a] - lengths[b] || a - b);
  const sorted = order.map((index) => lengths[index]);
  // cost[end]: least cost of running sorted[0, end); start[end]: where that plan's last run begins.
  const cost = new Float64Array(sorted.length + 1).fill(Infinity);
  const start = new Int32Array(sorted.length + 1);
  cost[0] = 0;
  for (let end = 1; end <= sorted.length; end++) {
    const paddedLength = sorted[end - 1];
    // Widest run first, so among equal costs the plan with fewer runs wins.
    const widest = Math.max(0, end - limits.maxBatchSize);
    for (let begin = widest; begin < end; begin++) {
      const rows = end - begin;
      if (rows > 1 && rows * paddedLength > limits.maxBatchTokens) continue;
      const candidate = cost[begin] + limits.runCostTokens + rows * paddedLength;
      if (candidate < cost[end]) {
        cost[end] = candidate;
        start[end] = begin;
      }
    }
  }
  const batches: number[][] = [];
  for (let end = sorted.length; end > 0; end = start[end]) batches.push(order.slice(start[end], end));
  return batches.reverse();
}

/**
 * The same limits without reordering, each batch filled as far as they allow: the baseline that
 * length batching is measured against.
 */
export function batchesInInputOrder(lengths: readonly number[], limits: BatchLimits): number[][] {
  const batches: number[][] = [];
  let batch: number[] = [];
  let longest = 0;
  lengths.forEach((length, index) => {
    const paddedLength = Math.max(longest, length);
    const fits = batch.length < limits.maxBatchSize && (batch.length + 1) * paddedLength <= limits.maxBatchTokens;
    if (batch.length > 0 && !fits) {
      batches.push(batch);
      batch = [];
      longest = 0;
    }
    batch.push(index);
    longest = Math.max(longest, length);
  });
  if (batch.length > 0) batches.push(batch);
  return batches;
}
