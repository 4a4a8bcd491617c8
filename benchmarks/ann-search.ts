/**
 * Approximate search on CPU against exact Flat, in one run on one set of clustered unit vectors
 * (uniform random vectors make HNSW/IVF recall meaningless): HNSW64 at efSearch 16/64/256 and
 * IVF at nprobe 8/32/128, each served by FaissIndex (faiss host process) and by Python faiss on
 * the same file with the same parameters and threads. Reports queries per second at 1, 8 and 512
 * queries a call, the ours/Python throughput ratio, recall@3 and @10 against the Flat answers,
 * and convert-index's build time per million rows.
 * `node dist/benchmarks/ann-search.js [--rows 50000] [--dim 768] [--queries 512] [--budget-s 2]`
 */
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { convertIndex } from '../src/index/convert-index.js';
import { faissHostEnv } from '../src/index/faiss-host.js';
import { FaissIndex } from '../src/index/faiss-index.js';
import { CLUSTERED_PY } from '../test/support/index-fixtures.js';
import { report, seconds, workDir, type Row } from './bench-report.js';

const BATCHES = [1, 8, 512];
const TOPK = 10;

const DATA_PY = `import sys, faiss, numpy as np
${CLUSTERED_PY}
out, rows, d, nq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(1)
x = clustered(rng, rows, d)
near(rng, x, nq).tofile(f'{out}/queries.f32')
flat = faiss.IndexFlatIP(d)
flat.add(x)
faiss.write_index(flat, f'{out}/Flat.index')
`;

/** Python faiss's queries per second on a file at given parameters, with the harness's batching. */
const PYTHON_QPS_PY = `import sys, json, time, faiss, numpy as np
path, queries, d, params, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), float(sys.argv[5])
index = faiss.read_index(path)
for name, value in params.items(): faiss.ParameterSpace().set_index_parameter(index, name, value)
q = np.fromfile(queries, dtype='<f4').reshape(-1, d)
qps = {}
for batch in map(int, sys.argv[6].split(',')):
    done, start = 0, time.perf_counter()
    while True:
        at = done % (len(q) - batch + 1)
        index.search(q[at:at + batch], ${TOPK})
        done += batch
        if time.perf_counter() - start >= budget and done >= batch * 2: break
    qps[batch] = done / (time.perf_counter() - start)
print(json.dumps(qps))
`;

interface Config {
  name: string;
  file: string;
  parameters: { efSearch?: number; nprobe?: number };
}

async function ourQps(index: FaissIndex, queries: Float32Array, dimension: number, batch: number, budgetS: number): Promise<number> {
  const count = queries.length / dimension;
  let done = 0;
  const start = process.hrtime.bigint();
  while (seconds(start) < budgetS || done < batch * 2) {
    const at = done % (count - batch + 1);
    await index.nearest(queries.subarray(at * dimension, (at + batch) * dimension), TOPK);
    done += batch;
  }
  return done / seconds(start);
}

function recallAt(k: number, found: Int32Array, exact: Int32Array, queries: number): number {
  let hits = 0;
  for (let q = 0; q < queries; q++) {
    const truth = new Set(exact.subarray(q * TOPK, q * TOPK + k));
    for (let r = 0; r < k; r++) if (truth.has(found[q * TOPK + r]!)) hits++;
  }
  return hits / (queries * k);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { rows: { type: 'string', default: '50000' }, dim: { type: 'string', default: '768' }, queries: { type: 'string', default: '512' }, 'budget-s': { type: 'string', default: '2' } },
  });
  const [rows, dimension, queryCount, budgetS] = [Number(values.rows), Number(values.dim), Number(values.queries), Number(values['budget-s'])];
  const dir = path.join(workDir, 'ann-search');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  // Python and the faiss hosts run with the same OpenBLAS/OpenMP settings, so the ratio compares bindings, not settings.
  const env = faissHostEnv(process.env);
  Object.assign(process.env, env);
  execFileSync('/usr/bin/python3', ['-c', DATA_PY, dir, String(rows), String(dimension), String(queryCount)], { env });
  const raw = await readFile(path.join(dir, 'queries.f32'));
  const queries = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);

  const nlist = 2 ** Math.round(Math.log2(4 * Math.sqrt(rows)));
  const builds: Record<string, unknown>[] = [];
  for (const faissType of ['HNSW64', `IVF${nlist},Flat`]) {
    const built = await convertIndex({ sourcePath: path.join(dir, 'Flat.index'), outPath: path.join(dir, `${faissType.replace(',', '_')}.index`), faissType });
    builds.push({ faissType, seconds: built.seconds, secondsPerMillionRows: (built.seconds * 1e6) / rows });
    console.log(`built ${faissType} in ${built.seconds.toFixed(1)} s`);
  }

  const configs: Config[] = [
    { name: 'Flat (exact)', file: 'Flat.index', parameters: {} },
    ...[16, 64, 256].map((efSearch) => ({ name: `HNSW64 ef ${efSearch}`, file: 'HNSW64.index', parameters: { efSearch } })),
    ...[8, 32, 128].map((nprobe) => ({ name: `IVF${nlist} nprobe ${nprobe}`, file: `IVF${nlist}_Flat.index`, parameters: { nprobe } })),
  ];
  let exact: Int32Array | undefined;
  const table: Row[] = [];
  for (const config of configs) {
    const file = path.join(dir, config.file);
    const index = await FaissIndex.open(file, {}, config.parameters);
    try {
      const found = (await index.nearest(queries, TOPK)).rowIndices;
      exact ??= found;
      const ours: number[] = [];
      for (const batch of BATCHES) ours.push(await ourQps(index, queries, dimension, batch, budgetS));
      const python = JSON.parse(
        execFileSync('/usr/bin/python3', ['-c', PYTHON_QPS_PY, file, path.join(dir, 'queries.f32'), String(dimension), JSON.stringify(config.parameters), String(budgetS), BATCHES.join(',')], { env, encoding: 'utf8' }),
      ) as Record<string, number>;
      const row: Row = { index: config.name, 'recall@3': recallAt(3, found, exact, queryCount).toFixed(3), 'recall@10': recallAt(10, found, exact, queryCount).toFixed(3) };
      BATCHES.forEach((batch, i) => {
        row[`qps @${batch}`] = ours[i]!.toFixed(0);
        row[`ours/python @${batch}`] = (ours[i]! / python[batch]!).toFixed(2);
      });
      row['resident MB'] = (index.info.residentBytes / 2 ** 20).toFixed(0);
      table.push(row);
    } finally {
      await index.close();
    }
  }
  await report(`ann-search-${rows}x${dimension}`, table, { rows, dimension, queries: queryCount, topk: TOPK, nlist, builds });
  await rm(dir, { recursive: true, force: true });
}

await main();
