/**
 * Throughput of the real server under both agent traffic shapes, each against the baseline it
 * must beat, measured in the same run (`npm run bench`, or `npm run bench -- --profile 100k|1m`):
 *
 * - shape (a), Search-R1's trainer: sequential 512-query requests, topk 3. Service time (HTTP
 *   round trip) vs engine-only time for the same batch (Retriever.encodeSearchFetch in this process: encoder
 *   run + FAISS search + row fetch, no HTTP), and vs a naive one-query-at-a-time engine loop.
 * - shape (b), verl's search tool: 120 concurrent single-query clients (autocannon, 30 s timeout),
 *   cross-request batching on vs off (`--batch_max_queries 1`), both with the cache off and every
 *   query distinct; then the result cache on vs off for a rollout-like stream in which every
 *   query is sent 5 times close together (GRPO n=5).
 * - memory (the index's resident pages per million passages, wherever the backend keeps them) and
 *   time to ready.
 *
 * `--search_backend faiss|onnx` is passed to every server and to the engine-only side alike
 * (default: the service's own default); a run with it writes <date>-<profile>-<backend>.*.
 *
 * The model is the e5-base preset (12 layers, 768 wide), so encoder cost is real. Encoding the
 * corpus with it would take about an hour per 100k passages on 2 cores, so the index holds
 * pseudo-random unit vectors written straight into the IxFI file for a corpus made of the wiki18
 * sample's rows: the query path (e5-base encoder, FAISS Flat search, corpus row fetch) is real,
 * the neighbours are meaningless. Writes benchmarks/results/<date>-<profile>.{json,md,svg}.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { access, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import type { TopLevelSpec } from 'vega-lite';
import { CONFIG_DEFAULTS } from '../src/config.js';
import { makeModel } from '../src/encoder/make-model.js';
import { MANIFEST_FILE } from '../src/encoder/manifest.js';
import { Retriever, type RetrieverFiles } from '../src/engine/retriever.js';
import type { CorpusRow } from '../src/corpus/corpus-row.js';
import type { SearchBackendChoice } from '../src/index/open-index.js';
import { SAMPLE_CORPUS } from '../test/support/retriever-fixture.js';
import { benchmarksDir, plotSvg, seconds, workDir, type Row } from './bench-report.js';
import { syntheticIndex } from './synthetic-index.js';

interface Profile {
  rows: number;
  /** 512-query requests timed per side in shape (a). */
  shapeARepeats: number;
  /** Queries of the naive one-at-a-time loop, extrapolated to 512. */
  naiveQueries: number;
  /** Seconds of each shape (b) and cache run. */
  loadSeconds: number;
}

/**
 * Without batching, each single-query request pays a Flat scan of the whole index on one core,
 * so the gain of batching grows with the corpus (wiki18 has 21M passages). At the default's 200k
 * the unbatched shape (b) run still answers within the 30 s client timeout on 2 cores with room
 * to spare (about 22 s at p99), and the whole run takes about 5 minutes.
 */
const PROFILES: Record<string, Profile> = {
  default: { rows: 200_000, shapeARepeats: 3, naiveQueries: 16, loadSeconds: 45 },
  '100k': { rows: 100_000, shapeARepeats: 3, naiveQueries: 16, loadSeconds: 45 },
  '1m': { rows: 1_000_000, shapeARepeats: 2, naiveQueries: 32, loadSeconds: 60 },
};

const DIMENSION = 768;
const QUERIES_PER_TURN = 512;
const TOPK = 3;
const CLIENTS = 120;
const CLIENT_TIMEOUT_S = 30;
const GRPO_REPEATS = 5;
const CLI = path.resolve(benchmarksDir, '..', 'dist', 'src', 'cli.js');
const MODEL_DIR = path.join(workDir, 'e5-base');

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

async function e5BaseModel(): Promise<string> {
  if (!(await exists(path.join(MODEL_DIR, MANIFEST_FILE)))) {
    console.log(`building the e5-base preset model in ${MODEL_DIR} (once)...`);
    await makeModel({ outDir: MODEL_DIR, preset: 'e5-base', seed: 1, vocabularyCorpus: SAMPLE_CORPUS, overwrite: true });
  }
  return MODEL_DIR;
}

async function sampleRows(): Promise<CorpusRow[]> {
  return (await readFile(SAMPLE_CORPUS, 'utf8'))
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as CorpusRow);
}

/** `rows` lines cycling through the wiki18 sample, with ids equal to line numbers as in wiki18. */
async function generatedCorpus(rows: number, sample: CorpusRow[]): Promise<string> {
  const file = path.join(workDir, `throughput-corpus-${rows}.jsonl`);
  if (await exists(file)) return file;
  const out = createWriteStream(`${file}.tmp`);
  for (let row = 0; row < rows; row++) {
    const line = JSON.stringify({ ...sample[row % sample.length]!, id: String(row) }) + '\n';
    if (!out.write(line)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
  }
  await new Promise<void>((resolve, reject) => out.end((error?: Error) => (error ? reject(error) : resolve())));
  await rename(`${file}.tmp`, file);
  return file;
}

/** Distinct Search-R1-like sub-queries: a passage title plus a window of its words, lengths varied. */
function distinctQueries(count: number, sample: CorpusRow[], salt: number): string[] {
  const queries: string[] = [];
  for (let position = 0; queries.length < count; position++) {
    const [title = '', text = ''] = sample[(position * 37 + salt) % sample.length]!.contents.split('\n');
    const words = text.split(/\s+/);
    const start = (position * 13 + salt) % Math.max(1, words.length - 12);
    queries.push(`${title.replaceAll('"', '')} ${words.slice(start, start + 2 + (position % 10)).join(' ')} ${salt}-${position}`);
  }
  return queries;
}

/** Each query sent GRPO_REPEATS times, the copies spread over the next few hundred requests. */
function rolloutStream(distinct: string[]): string[] {
  const stream: string[] = [];
  const window = CLIENTS;
  for (let start = 0; start < distinct.length; start += window) {
    const group = distinct.slice(start, start + window);
    for (let copy = 0; copy < GRPO_REPEATS; copy++) stream.push(...(copy % 2 ? [...group].reverse() : group));
  }
  return stream;
}

interface Server {
  url: string;
  child: ChildProcess;
  readySeconds: number;
}

async function startServer(files: RetrieverFiles, port: number, flags: string[], dataDir: string): Promise<Server> {
  const started = process.hrtime.bigint();
  const child = spawn(
    process.execPath,
    [
      CLI, 'serve',
      '--retriever_model', files.modelDir, '--index_path', files.indexPath, '--corpus_path', files.corpusPath,
      '--host', '127.0.0.1', '--port', String(port), '--device', 'cpu', '--data_dir', dataDir, '--log_level', 'warn',
      ...flags,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const url = `http://127.0.0.1:${port}`;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with code ${child.exitCode} before it was ready`);
    const ready = await fetch(`${url}/ready`).then((response) => response.status === 200, () => false);
    if (ready) return { url, child, readySeconds: seconds(started) };
    await sleep(100);
  }
}

async function stopServer(server: Server): Promise<void> {
  const exited = new Promise((resolve) => server.child.once('exit', resolve));
  server.child.kill('SIGTERM');
  await exited;
}

/** Resident memory in bytes of the server process and of its children (a faiss host holds its index there). */
async function serverRss(pid: number): Promise<{ server: number; children: number }> {
  const rss = { server: 0, children: 0 };
  for (const entry of await readdir('/proc')) {
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    const bytes = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
    if (Number(entry) === pid) rss.server += bytes;
    else if (Number(/PPid:\s+(\d+)/.exec(status)?.[1]) === pid) rss.children += bytes;
  }
  return rss;
}

/** Resident bytes of a file's mappings in a process: the onnx backend maps the index file into the server. */
async function mappedRss(pid: number, file: string): Promise<number> {
  let bytes = 0;
  let inFile = false;
  for (const line of (await readFile(`/proc/${pid}/smaps`, 'utf8')).split('\n')) {
    const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (mapping) inFile = mapping[1] === file;
    else if (inFile && line.startsWith('Rss:')) bytes += Number(/(\d+) kB/.exec(line)?.[1] ?? 0) * 1024;
  }
  return bytes;
}

async function metricSum(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name} `) || line.startsWith(`${name}{`))
    .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
}

async function post(url: string, queries: string[]): Promise<number> {
  const start = process.hrtime.bigint();
  const response = await fetch(`${url}/retrieve`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ queries, topk: TOPK, return_scores: true }),
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`POST /retrieve answered ${response.status}: ${text.slice(0, 200)}`);
  return seconds(start) * 1000;
}

interface LoadRun {
  label: string;
  requests: number;
  throughput: number;
  p50: number;
  p90: number;
  p99: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  percentiles: { percentile: number; ms: number }[];
}

/** `CLIENTS` connections, each sending single-query requests taken in turn from `stream`. */
async function load(label: string, url: string, stream: string[], durationS: number): Promise<LoadRun> {
  let next = 0;
  const result = await autocannon({
    url: `${url}/retrieve`,
    connections: CLIENTS,
    duration: durationS,
    timeout: CLIENT_TIMEOUT_S,
    requests: [
      {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        setupRequest: (request) => ({
          ...request,
          body: JSON.stringify({ queries: [stream[next++ % stream.length]], topk: TOPK, return_scores: true }),
        }),
      },
    ],
  });
  const statusCodes = Object.fromEntries(
    Object.entries(result.statusCodeStats ?? {}).map(([code, { count }]) => [code, Number(count)]),
  );
  const latency = result.latency as unknown as Record<string, number>;
  const percentiles = [2.5, 50, 75, 90, 97.5, 99].map((percentile) => ({
    percentile,
    ms: latency[`p${String(percentile).replace('.', '_')}`]!,
  }));
  const run: LoadRun = {
    label,
    requests: result.requests.total,
    throughput: result.requests.total / result.duration,
    p50: latency.p50!,
    p90: latency.p90!,
    p99: latency.p99!,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    percentiles,
  };
  console.log(
    `${label}: ${run.requests} requests, ${run.throughput.toFixed(1)} req/s, p50 ${run.p50} ms, p99 ${run.p99} ms, non-2xx ${run.non2xx}, errors ${run.errors}`,
  );
  return run;
}

async function latencyPlot(runs: LoadRun[], title: string): Promise<string> {
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 520,
    height: 300,
    data: { values: runs.flatMap((run) => run.percentiles.map((point) => ({ run: run.label, ...point }))) },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'percentile', type: 'quantitative', title: 'percentile' },
      y: { field: 'ms', type: 'quantitative', scale: { type: 'log' }, title: 'latency (ms, log scale)' },
      color: { field: 'run', type: 'nominal', title: null },
    },
  };
  return plotSvg(spec);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const ratio = (value: number) => Math.round(value * 100) / 100;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      profile: { type: 'string', default: 'default' },
      rows: { type: 'string' },
      seconds: { type: 'string' },
      port: { type: 'string', default: '18431' },
      search_backend: { type: 'string' },
    },
  });
  const name = values.profile!;
  const base = PROFILES[name];
  if (!base) throw new Error(`--profile must be one of ${Object.keys(PROFILES).join(', ')}, got ${name}`);
  const profile: Profile = {
    ...base,
    ...(values.rows && { rows: Number(values.rows) }),
    ...(values.seconds && { loadSeconds: Number(values.seconds) }),
  };
  const port = Number(values.port);
  const backend = values.search_backend as SearchBackendChoice | undefined;
  const backendFlags = backend ? ['--search_backend', backend] : [];
  const loadBefore = os.loadavg();
  const benchStart = process.hrtime.bigint();

  await mkdir(workDir, { recursive: true });
  const sample = await sampleRows();
  console.log(`preparing: e5-base model, ${profile.rows} passages, synthetic ${profile.rows}x${DIMENSION} index...`);
  const files: RetrieverFiles = {
    modelDir: await e5BaseModel(),
    corpusPath: await generatedCorpus(profile.rows, sample),
    indexPath: await syntheticIndex(profile.rows, DIMENSION),
  };
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'bench-throughput-'));
  const turn = distinctQueries(QUERIES_PER_TURN, sample, 1);

  // Shape (a) and the no-cache runs: batching on (defaults), cache off.
  const batched = await startServer(files, port, ['--result_cache_size', '0', ...backendFlags], dataDir);
  const rss = await serverRss(batched.child.pid!);
  const indexRss = rss.children + (await mappedRss(batched.child.pid!, path.resolve(files.indexPath)));
  const indexBytes = (await stat(files.indexPath)).size;
  const offsetsBytes = (await stat(`${files.corpusPath}.offsets`).catch(() => ({ size: 0 }))).size;
  console.log(`ready in ${batched.readySeconds.toFixed(1)} s, RSS ${((rss.server + rss.children) / 2 ** 20).toFixed(0)} MiB`);

  // The same encoder settings as the server's defaults, so the two differ only by the service layer.
  const engine = await Retriever.load(files, {
    version: 'engine-only',
    encoder: { device: 'cpu', batchLimits: { maxBatchSize: CONFIG_DEFAULTS.encoderBatchRows } },
    ...(backend && { index: { backend } }),
  });
  const engineMs: number[] = [];
  const serviceMs: number[] = [];
  const inputs = turn.map((query) => ({ query }));
  const viaEngine = async () => {
    const start = process.hrtime.bigint();
    await engine.encodeSearchFetch(inputs, TOPK);
    engineMs.push(seconds(start) * 1000);
  };
  const viaService = async () => serviceMs.push(await post(batched.url, turn));
  // Alternating which side goes first cancels the drift of a machine shared with other work.
  for (let repeat = 0; repeat < profile.shapeARepeats; repeat++) {
    for (const side of repeat % 2 ? [viaService, viaEngine] : [viaEngine, viaService]) await side();
    console.log(`shape (a) ${repeat + 1}/${profile.shapeARepeats}: engine ${engineMs.at(-1)!.toFixed(0)} ms, service ${serviceMs.at(-1)!.toFixed(0)} ms`);
  }
  const naiveStart = process.hrtime.bigint();
  for (const input of inputs.slice(0, profile.naiveQueries)) await engine.encodeSearchFetch([input], TOPK);
  const naiveMs = ((seconds(naiveStart) * 1000) / profile.naiveQueries) * QUERIES_PER_TURN;
  await engine.close();
  console.log(`naive loop: ${naiveMs.toFixed(0)} ms per 512 queries (from ${profile.naiveQueries})`);

  const before = {
    queries: await metricSum(batched.url, 'retriever_batch_queries_sum'),
    batches: await metricSum(batched.url, 'retriever_batch_queries_count'),
  };
  const onRun = await load('(b) batching on', batched.url, distinctQueries(20_000, sample, 2), profile.loadSeconds);
  const batchQueries = (await metricSum(batched.url, 'retriever_batch_queries_sum')) - before.queries;
  const batchCount = (await metricSum(batched.url, 'retriever_batch_queries_count')) - before.batches;
  const cacheOffRun = await load('cache off, rollout stream', batched.url, rolloutStream(distinctQueries(20_000, sample, 3)), profile.loadSeconds);
  await stopServer(batched);

  const unbatched = await startServer(files, port, ['--result_cache_size', '0', '--batch_max_queries', '1', ...backendFlags], dataDir);
  const offRun = await load('(b) batching off', unbatched.url, distinctQueries(20_000, sample, 4), profile.loadSeconds);
  await stopServer(unbatched);

  const cached = await startServer(files, port, ['--result_cache_size', '64mb', ...backendFlags], dataDir);
  const cacheOnRun = await load('cache on, rollout stream', cached.url, rolloutStream(distinctQueries(20_000, sample, 3)), profile.loadSeconds);
  const hits = await metricSum(cached.url, 'retriever_result_cache_lookups_total{result="hit"}');
  const misses = await metricSum(cached.url, 'retriever_result_cache_lookups_total{result="miss"}');
  await stopServer(cached);
  await rm(dataDir, { recursive: true, force: true });

  const engineMedian = median(engineMs);
  const serviceMedian = median(serviceMs);
  const runs = [onRun, offRun, cacheOnRun, cacheOffRun];
  const non503Errors = runs.reduce(
    (sum, run) => sum + Object.entries(run.statusCodes).filter(([code]) => Number(code) >= 500 && code !== '503').reduce((s, [, n]) => s + n, 0),
    0,
  );
  const perMillion = 1e6 / profile.rows;
  const headline = {
    shapeAServiceOverEngine: ratio(serviceMedian / engineMedian),
    shapeANaiveOverService: ratio(naiveMs / serviceMedian),
    shapeBThroughputBatchingOnOverOff: ratio(onRun.throughput / offRun.throughput),
    cacheThroughputOnOverOff: ratio(cacheOnRun.throughput / cacheOffRun.throughput),
  };
  const targets = {
    'shape (a) service <= 1.05 x engine-only': headline.shapeAServiceOverEngine <= 1.05,
    'shape (b) batching >= 4 x without': headline.shapeBThroughputBatchingOnOverOff >= 4,
    'shape (b) batching on: p99 < 30 s, zero non-2xx': onRun.p99 < CLIENT_TIMEOUT_S * 1000 && onRun.non2xx === 0 && onRun.errors === 0,
    'no 5xx other than 503': non503Errors === 0,
  };

  const table: Row[] = [
    { measurement: 'shape (a) engine-only, 512 queries', value: `${engineMedian.toFixed(0)} ms`, ratio: '1.00' },
    { measurement: 'shape (a) service (HTTP), 512 queries', value: `${serviceMedian.toFixed(0)} ms`, ratio: `${headline.shapeAServiceOverEngine} x engine` },
    { measurement: 'shape (a) naive one-query loop, per 512', value: `${naiveMs.toFixed(0)} ms`, ratio: `${headline.shapeANaiveOverService} x service` },
    ...[onRun, offRun, cacheOffRun, cacheOnRun].map((run) => ({
      measurement: `${run.label}, ${CLIENTS} clients`,
      value: `${run.throughput.toFixed(1)} req/s, p50 ${run.p50} ms, p99 ${run.p99} ms, non-2xx ${run.non2xx}, errors ${run.errors}`,
      ratio:
        run === onRun
          ? `${headline.shapeBThroughputBatchingOnOverOff} x off`
          : run === cacheOnRun
            ? `${headline.cacheThroughputOnOverOff} x off (hit rate ${(hits / Math.max(1, hits + misses)).toFixed(2)})`
            : '',
    })),
    { measurement: 'mean queries per engine batch, (b) on', value: (batchQueries / Math.max(1, batchCount)).toFixed(1), ratio: '' },
    { measurement: 'RSS per million passages (index pages resident in the faiss host or mapped by the server, + corpus offsets)', value: `${(((indexRss + offsetsBytes) * perMillion) / 2 ** 30).toFixed(2)} GiB`, ratio: '' },
    { measurement: 'index + offsets files per million passages', value: `${(((indexBytes + offsetsBytes) * perMillion) / 2 ** 30).toFixed(2)} GiB`, ratio: '' },
    { measurement: 'RSS of the server process (model, corpus offsets, HTTP)', value: `${(rss.server / 2 ** 20).toFixed(0)} MiB`, ratio: '' },
    { measurement: 'time to ready', value: `${batched.readySeconds.toFixed(1)} s`, ratio: '' },
  ];
  const columns = Object.keys(table[0]!);
  const markdown = [
    `| ${columns.join(' | ')} |`,
    `| ${columns.map(() => '---').join(' | ')} |`,
    ...table.map((row) => `| ${columns.map((column) => String(row[column])).join(' | ')} |`),
    '',
    ...Object.entries(targets).map(([target, met]) => `- ${target}: ${met ? 'met' : 'NOT met'}`),
  ].join('\n');
  console.log(markdown);

  const date = new Date().toISOString().slice(0, 10);
  const stem = path.join(benchmarksDir, 'results', `${date}-${name}${backend ? `-${backend}` : ''}`);
  const machine = {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    loadAverage: { before: loadBefore, after: os.loadavg() },
  };
  await mkdir(path.dirname(stem), { recursive: true });
  await writeFile(
    `${stem}.json`,
    JSON.stringify(
      {
        name: `throughput-${name}`,
        searchBackend: backend ?? `${CONFIG_DEFAULTS.searchBackend} (the default)`,
        date: new Date().toISOString(),
        machine,
        note: 'e5-base preset encoder (real cost); index of pseudo-random unit vectors over a corpus cycling the wiki18 sample rows: the query path is real, the neighbours are not meaningful',
        profile,
        wallSeconds: seconds(benchStart),
        headline,
        targets,
        shapeA: { queries: QUERIES_PER_TURN, topk: TOPK, engineMs, serviceMs, naiveMsPer512: naiveMs, naiveQueries: profile.naiveQueries },
        shapeB: { clients: CLIENTS, timeoutS: CLIENT_TIMEOUT_S, batchingOn: onRun, batchingOff: offRun, meanBatchQueries: batchQueries / Math.max(1, batchCount) },
        cache: { repeatsPerQuery: GRPO_REPEATS, on: cacheOnRun, off: cacheOffRun, hits, misses },
        memory: { rows: profile.rows, serverRssBytes: rss.server, faissHostRssBytes: rss.children, indexRssBytes: indexRss, indexBytes, offsetsBytes, readySeconds: batched.readySeconds },
        table,
      },
      null,
      2,
    ) + '\n',
  );
  await writeFile(`${stem}.md`, `# Throughput, profile ${name} (${date})\n\n${markdown}\n`);
  await writeFile(`${stem}.svg`, await latencyPlot(runs, `/retrieve latency, ${CLIENTS} single-query clients, ${profile.rows} passages`));
  console.log(`\nresults written to ${path.relative(process.cwd(), stem)}.{json,md,svg}`);
}

await main();
