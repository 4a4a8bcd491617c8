/**
 * The two search backends on CPU, same index, same queries, same run: faiss-node (FaissIndex, its
 * own host process) against ONNX Runtime (OnnxFlatIndex, fp32, default shard rows), at 1, 8, 64
 * and 512 queries a call over 200k and 1M rows × 768 (synthetic unit vectors, as in
 * throughput.ts). Calls alternate between the backends so load on the machine hits both alike;
 * each cell reports the median of its calls and checks the two backends found the same rows.
 * `node dist/benchmarks/search-backends.js [--rows 200000,1000000] [--budget-s 8]`
 */
import { parseArgs } from 'node:util';
import type { VectorIndex } from '../src/index/vector-index.js';
import { FaissIndex } from '../src/index/faiss-index.js';
import { OnnxFlatIndex } from '../src/index/onnx-flat-index.js';
import { median, report, seconds, type Row } from './bench-report.js';
import { syntheticIndex } from './synthetic-index.js';

const DIMENSION = 768;
const TOPK = 3;
const QUERY_COUNTS = [1, 8, 64, 512];
const MIN_CALLS = 2;
const MAX_CALLS = 20;

/** Queries drawn the way the index rows are, from a different seed. */
function queryVectors(count: number, seed: number): Float32Array {
  const vectors = new Float32Array(count * DIMENSION);
  let state = seed;
  for (let q = 0; q < count; q++) {
    let norm = 0;
    for (let d = 0; d < DIMENSION; d++) {
      state = (state * 1103515245 + 12345) % 2 ** 31;
      const value = state / 2 ** 31 - 0.5;
      vectors[q * DIMENSION + d] = value;
      norm += value * value;
    }
    for (let d = 0; d < DIMENSION; d++) vectors[q * DIMENSION + d]! /= Math.sqrt(norm);
  }
  return vectors;
}

async function timed(index: VectorIndex, queries: Float32Array): Promise<{ s: number; rows: Int32Array }> {
  const start = process.hrtime.bigint();
  const found = await index.nearest(queries, TOPK);
  return { s: seconds(start), rows: found.rowIndices };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rows: { type: 'string', default: '200000,1000000' }, 'budget-s': { type: 'string', default: '8' } } });
  const budgetS = Number(values['budget-s']);
  const table: Row[] = [];
  const results: Record<string, unknown>[] = [];
  for (const rows of values.rows.split(',').map(Number)) {
    const file = await syntheticIndex(rows, DIMENSION);
    let start = process.hrtime.bigint();
    const faiss = await FaissIndex.open(file);
    const faissOpenS = seconds(start);
    start = process.hrtime.bigint();
    const onnx = await OnnxFlatIndex.open(file);
    const onnxOpenS = seconds(start);
    try {
      for (const count of QUERY_COUNTS) {
        const queries = queryVectors(count, rows + count);
        // The first call of each pays page faults and thread start-up.
        await timed(faiss, queries);
        await timed(onnx, queries);
        const times = { faiss: [] as number[], onnx: [] as number[] };
        let mismatched = 0;
        const cellStart = process.hrtime.bigint();
        while (times.faiss.length < MAX_CALLS && (times.faiss.length < MIN_CALLS || seconds(cellStart) < budgetS)) {
          const a = await timed(faiss, queries);
          const b = await timed(onnx, queries);
          times.faiss.push(a.s);
          times.onnx.push(b.s);
          mismatched += a.rows.filter((row, i) => row !== b.rows[i]).length;
        }
        const faissS = median(times.faiss);
        const onnxS = median(times.onnx);
        table.push({
          rows,
          queries: count,
          calls: times.faiss.length,
          'faiss ms': (faissS * 1e3).toFixed(1),
          'onnx ms': (onnxS * 1e3).toFixed(1),
          'onnx speed-up': `×${(faissS / onnxS).toFixed(2)}`,
          'rows differing': mismatched,
        });
        results.push({ rows, queries: count, faissSeconds: times.faiss, onnxSeconds: times.onnx, mismatchedRows: mismatched });
        console.log(JSON.stringify(table.at(-1)));
      }
      results.push({ rows, faissOpenSeconds: faissOpenS, onnxOpenSeconds: onnxOpenS });
      console.log(`open ${rows} rows: faiss ${faissOpenS.toFixed(2)} s (reads the file into its heap), onnx ${onnxOpenS.toFixed(2)} s (maps it)`);
    } finally {
      await Promise.all([faiss.close(), onnx.close()]);
    }
  }
  await report('search-backends', table, { dimension: DIMENSION, topk: TOPK, results });
}

await main();
