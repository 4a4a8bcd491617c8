/** Per-query nearest rows, row-major `queries × width`, best first. */
export interface RankedRows {
  rowIndices: Int32Array;
  scores: Float32Array;
}

interface Candidate {
  row: number;
  score: number;
}

/** Higher score first; among equal scores the lower row, as one flat scan over the rows finds them. */
function byRank(a: Candidate, b: Candidate): number {
  return b.score - a.score || a.row - b.row;
}

function ranked(queries: number, k: number, candidatesOf: (query: number) => Candidate[]): RankedRows {
  const rowIndices = new Int32Array(queries * k);
  const scores = new Float32Array(queries * k);
  for (let query = 0; query < queries; query++) {
    const best = candidatesOf(query).sort(byRank).slice(0, k);
    best.forEach(({ row, score }, rank) => {
      rowIndices[query * k + rank] = row;
      scores[query * k + rank] = score;
    });
  }
  return { rowIndices, scores };
}

/**
 * Replaces half-precision scores of `width` candidates per query by exact float32 inner products
 * (rows read by `readRow`) and keeps the best `k`: the order and scores FAISS would give, as long
 * as the true top k are among the candidates.
 */
export function rescoreExactly(
  vectors: Float32Array,
  dimension: number,
  found: RankedRows,
  width: number,
  k: number,
  readRow: (row: number, into: Float32Array) => void,
): RankedRows {
  const row = new Float32Array(dimension);
  return ranked(vectors.length / dimension, k, (query) => {
    const candidates: Candidate[] = [];
    for (let rank = 0; rank < width; rank++) {
      const index = found.rowIndices[query * width + rank]!;
      readRow(index, row);
      let dot = 0;
      for (let i = 0; i < dimension; i++) dot += vectors[query * dimension + i]! * row[i]!;
      candidates.push({ row: index, score: Math.fround(dot) });
    }
    return candidates;
  });
}

/** The best `k` per query of several searches over disjoint rows, each `queries × part width`. */
export function mergeRanked(parts: readonly RankedRows[], queries: number, k: number): RankedRows {
  return ranked(queries, k, (query) =>
    parts.flatMap((part) => {
      const width = part.rowIndices.length / queries;
      return Array.from({ length: width }, (_, rank) => ({
        row: part.rowIndices[query * width + rank]!,
        score: part.scores[query * width + rank]!,
      }));
    }),
  );
}
