import onnxProto from 'onnx-proto';
import { GraphBuilder, tensorValue, type GraphPrecision } from '../onnx/graph-builder.js';

/** What a search graph holds its vectors and scores in (the encoder's int8 is not a vector format). */
export type SearchPrecision = Exclude<GraphPrecision, 'int8'>;

const { onnx } = onnxProto;
const { DataType } = onnx.TensorProto;

export const SEARCH_INPUTS = { queries: 'queries', k: 'k' } as const;
export const SEARCH_OUTPUTS = { scores: 'scores', rows: 'rows' } as const;

/** Where a slice of the vectors lies in a file: rows `firstRow…firstRow+rows-1`, row-major. */
export interface VectorSlice {
  /** File name relative to the folder the session resolves external data in. */
  location: string;
  /** Byte offset of the slice's first row in that file. */
  offset: number;
  /** Index row of the slice's first row: what the graph adds to the row numbers it finds. */
  firstRow: number;
  rows: number;
  dimension: number;
  /** fp32: the IxFI file's own floats; fp16: the half-precision sidecar's. */
  precision: SearchPrecision;
  /** Most rows per Gemm: the score matrix of one shard is `queries × shardRows` floats. */
  shardRows: number;
}

/**
 * Exact inner-product search over a slice of rows whose vectors stay in their file: each shard of
 * at most `shardRows` rows is one external initializer pointing into the file (ONNX Runtime maps
 * it, nothing is copied), scored by one `Gemm(queries, shardᵀ)` and cut to its TopK; the shards'
 * candidates are merged by a last TopK. TopK puts the lower position first among equal scores and
 * shards are concatenated in row order, so ties go to the lower row, as in one flat scan.
 *
 * Inputs: `queries` float32 `[n, dimension]`, `k` int64 `[1]` (at most `rows`).
 * Outputs: `scores` float32 `[n, k]`, best first, and `rows` int64 `[n, k]`, index row numbers.
 * In fp16 the product and the TopK run in half precision; the scores are widened at the end.
 */
export function buildSearchOnnx(slice: VectorSlice): Uint8Array {
  const g = new GraphBuilder(slice.precision);
  const elementBytes = slice.precision === 'fp16' ? 2 : 4;
  const k = SEARCH_INPUTS.k;
  const queries =
    slice.precision === 'fp16' ? g.op('Cast', [SEARCH_INPUTS.queries], { to: DataType.FLOAT16 }) : SEARCH_INPUTS.queries;

  const scoreParts: string[] = [];
  const rowParts: string[] = [];
  for (let start = 0; start < slice.rows; start += slice.shardRows) {
    const rows = Math.min(slice.shardRows, slice.rows - start);
    const shard = `shard_${slice.firstRow + start}`;
    g.initializers.push({
      name: shard,
      dims: [rows, slice.dimension],
      dataType: g.floatType,
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: slice.location },
        { key: 'offset', value: String(slice.offset + start * slice.dimension * elementBytes) },
        { key: 'length', value: String(rows * slice.dimension * elementBytes) },
      ],
    });
    const scores = g.op('Gemm', [queries, shard], { transB: 1 });
    const [top, positions] = g.ops('TopK', [scores, g.op('Min', [k, g.int64s([rows])])], 2, { axis: -1, largest: 1, sorted: 1 });
    scoreParts.push(top!);
    rowParts.push(g.op('Add', [positions!, g.int64s([slice.firstRow + start])]));
  }

  let scores: string;
  let rows: string;
  if (scoreParts.length === 1) {
    [scores, rows] = [scoreParts[0]!, rowParts[0]!];
  } else {
    const [top, positions] = g.ops('TopK', [g.op('Concat', scoreParts, { axis: 1 }), k], 2, { axis: -1, largest: 1, sorted: 1 });
    scores = top!;
    rows = g.op('GatherElements', [g.op('Concat', rowParts, { axis: 1 }), positions!], { axis: 1 });
  }
  g.op('Cast', [scores], { to: DataType.FLOAT }, SEARCH_OUTPUTS.scores);
  g.op('Identity', [rows], {}, SEARCH_OUTPUTS.rows);

  return g.serialize(
    'flat_inner_product_search',
    [
      tensorValue(SEARCH_INPUTS.queries, DataType.FLOAT, ['queries', slice.dimension]),
      tensorValue(SEARCH_INPUTS.k, DataType.INT64, [1]),
    ],
    [
      tensorValue(SEARCH_OUTPUTS.scores, DataType.FLOAT, ['queries', 'k']),
      tensorValue(SEARCH_OUTPUTS.rows, DataType.INT64, ['queries', 'k']),
    ],
  );
}

/** One Identity node: creating a session of it on CUDA tells whether the provider loads, in milliseconds. */
export function buildProbeOnnx(): Uint8Array {
  const g = new GraphBuilder('fp32');
  g.op('Identity', ['x'], {}, 'y');
  return g.serialize('cuda_probe', [tensorValue('x', DataType.FLOAT, [1])], [tensorValue('y', DataType.FLOAT, [1])]);
}
