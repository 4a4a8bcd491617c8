import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/** `benchmarks/` in the source tree, whether run from `dist/benchmarks` or not. */
export const benchmarksDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'benchmarks');
export const workDir = path.join(benchmarksDir, 'work');

export type Row = Record<string, string | number>;

export function seconds(startNs: bigint): number {
  return Number(process.hrtime.bigint() - startNs) / 1e9;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** The nearest-rank percentile (`fraction` 0.99 for p99) of `values`, in any order; NaN for none. */
export function percentile(values: readonly number[], fraction: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1))]!;
}

/** Cosines of the row pairs of two row-major matrices, min and mean; divides by both norms, so a bad norm cannot pass. */
export function rowCosines(a: Float32Array, b: Float32Array, dimension: number): { min: number; mean: number } {
  const cosines: number[] = [];
  for (let offset = 0; offset < a.length; offset += dimension) {
    let dot = 0;
    let aa = 0;
    let bb = 0;
    for (let d = offset; d < offset + dimension; d++) {
      dot += a[d]! * b[d]!;
      aa += a[d]! ** 2;
      bb += b[d]! ** 2;
    }
    cosines.push(dot / Math.sqrt(aa * bb));
  }
  return { min: Math.min(...cosines), mean: cosines.reduce((sum, c) => sum + c, 0) / cosines.length };
}

/** Prints a Markdown table and writes the results with the machine they ran on to `benchmarks/results/<name>.json`. */
export async function report(name: string, rows: Row[], results: Record<string, unknown>): Promise<void> {
  const columns = Object.keys(rows[0]!);
  const lines = [`| ${columns.join(' | ')} |`, `| ${columns.map(() => '---').join(' | ')} |`];
  for (const row of rows) lines.push(`| ${columns.map((column) => String(row[column] ?? '')).join(' | ')} |`);
  console.log(lines.join('\n'));
  // Other work on the machine skews absolute numbers; the load average says how much there was.
  const machine = { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, loadAverage: os.loadavg() };
  const file = path.join(benchmarksDir, 'results', `${name}.json`);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, JSON.stringify({ name, date: new Date().toISOString(), machine, results, table: rows }, null, 2) + '\n');
  console.log(`\nresults written to ${path.relative(process.cwd(), file)}`);
}

/** A vega-lite chart as SVG, rendered headless. */
export async function plotSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}
