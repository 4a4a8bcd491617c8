/**
 * What reranking costs, in Search-R1's two request shapes, against retrieval alone in the same run:
 * (a) one POST /retrieve of `--queries` queries (a PPO turn), retrieve-only (`topk` 3) against
 * retrieve `--candidates` per query then rerank to 3; (b) `--clients` concurrent single-query
 * clients (verl's search tool), the same two ways. Then the int8 reranker against fp32 on shape
 * (a): speed, and how often the two keep the same top 3.
 *
 *   node dist/benchmarks/rerank.js [--queries 512] [--candidates 10] [--clients 120] [--retriever-preset demo] [--reranker-preset minilm-l12]
 *
 * The retriever serves the 1k-passage wiki18 sample; the reranker is the shape of Search-R1's
 * cross-encoder/ms-marco-MiniLM-L12-v2 (12 layers × 384) with generated weights, built by
 * `make-model --reranker`, both on CPU with the service's defaults.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import path from 'node:path';
import { pino } from 'pino';
import { CONFIG_DEFAULTS, type ServiceConfig } from '../src/config.js';
import type { CorpusRow } from '../src/corpus/corpus-row.js';
import { makeModel } from '../src/encoder/make-model.js';
import { isPresetName } from '../src/encoder/presets.js';
import { ActiveRetriever } from '../src/engine/active-retriever.js';
import { PassageReranker } from '../src/engine/reranker.js';
import { Retriever } from '../src/engine/retriever.js';
import type { RerankBatchStats } from '../src/engine/types.js';
import { createApp } from '../src/http/app.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import { buildRetrieverFiles, SAMPLE_CORPUS } from '../test/support/retriever-fixture.js';
import { median, percentile, report, seconds, workDir, type Row } from './bench-report.js';
import { sampleQueries } from './sample-queries.js';

type Result = { result: { document: CorpusRow; score: number }[][] };

const KEEP = 3;

/**
 * CPU seconds of this process (every thread: the encoder, search and reranker workers run in it)
 * while `work` runs. On the shared box the process gets a varying share of the cores, so CPU
 * time compares phases where wall time also measures the neighbours.
 */
async function cpuSeconds<T>(work: () => Promise<T>): Promise<{ cpuS: number; value: T }> {
  const before = process.cpuUsage();
  const value = await work();
  const used = process.cpuUsage(before);
  return { cpuS: (used.user + used.system) / 1e6, value };
}

// node:http, not fetch: undici gives up on a response whose headers take over 300 s, as a whole
// batch of pairs can on the shared box; a keep-alive agent without a socket cap serves 120 clients.
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

async function post(url: string, body: unknown): Promise<{ ms: number; answer: Result }> {
  const start = process.hrtime.bigint();
  const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const request = http.request(`${url}/retrieve`, { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(JSON.stringify(body));
  });
  if (status !== 200) throw new Error(`POST /retrieve answered ${status}: ${text.slice(0, 200)}`);
  return { ms: seconds(start) * 1000, answer: JSON.parse(text) as Result };
}

/** Every client sends one query at once; wall time until the last answer, and each one's latency. */
async function concurrentClients(url: string, queries: readonly string[], body: (query: string) => unknown) {
  const start = process.hrtime.bigint();
  const latencies = (await Promise.all(queries.map(async (query) => (await post(url, body(query))).ms)));
  const wallS = seconds(start);
  return { wallS, requestsPerS: queries.length / wallS, p50Ms: median(latencies), p99Ms: percentile(latencies, 0.99) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      queries: { type: 'string', default: '512' },
      candidates: { type: 'string', default: '10' },
      clients: { type: 'string', default: '120' },
      'retriever-preset': { type: 'string', default: 'demo' },
      'reranker-preset': { type: 'string', default: 'minilm-l12' },
    },
  });
  const [queryCount, candidates, clients] = [Number(values.queries), Number(values.candidates), Number(values.clients)];
  const retrieverPreset = values['retriever-preset']!;
  const rerankerPreset = values['reranker-preset']!;
  if (!isPresetName(retrieverPreset) || !isPresetName(rerankerPreset)) throw new Error('unknown preset');

  console.log(`building the ${retrieverPreset} retriever over the wiki18 sample and the ${rerankerPreset} reranker (fp32 + int8)...`);
  const files = await buildRetrieverFiles({ preset: retrieverPreset, seed: 0, corpus: SAMPLE_CORPUS });
  const rerankerDir = path.join(workDir, `reranker-${rerankerPreset}`);
  await makeModel({ outDir: rerankerDir, preset: rerankerPreset, reranker: true, int8: 'auto', vocabularyCorpus: SAMPLE_CORPUS, overwrite: true });

  // No deadline: on a shared 2-core box a whole batch of pairs can outlast the default 300 s.
  const config: ServiceConfig = {
    ...CONFIG_DEFAULTS,
    host: '127.0.0.1',
    port: 0,
    requestTimeoutMs: 0,
    rerankerModel: rerankerDir,
    retrievalTopk: candidates,
    rerankingTopk: KEEP,
  };
  // Results are not cached: every request must pay what it measures.
  const active = new ActiveRetriever({
    batching: { maxBatchQueries: config.batchMaxQueries, maxBatchTokens: config.batchMaxTokens, maxWaitMs: config.batchMaxWaitMs, maxQueuedQueries: config.queueMaxQueries },
  });
  await active.activate(await Retriever.load(files, { version: 'bench' }));
  // serve's merge limits (src/commands/serve.ts).
  const batching = {
    maxBatchPairs: config.batchMaxQueries * config.retrievalTopk,
    maxBatchTokens: config.batchMaxTokens * config.retrievalTopk,
    maxQueuedPairs: config.queueMaxQueries * config.retrievalTopk,
  };
  const rerankers = {
    fp32: await PassageReranker.load(rerankerDir, { device: 'cpu', batchLimits: { maxBatchSize: config.rerankerBatchSize } }, batching),
    int8: await PassageReranker.load(rerankerDir, { device: 'cpu', precision: 'int8', batchLimits: { maxBatchSize: config.rerankerBatchSize } }, batching),
  };
  const batches: RerankBatchStats[] = [];
  for (const reranker of Object.values(rerankers)) reranker.observe({ rerankBatch: (stats) => batches.push(stats) });
  let serving: PassageReranker = rerankers.fp32;

  const logger = createLogger(config, pino.destination('/dev/null'));
  const servers: RunningServer[] = [];
  const listen = async (app: Parameters<typeof startServer>[0]) => {
    servers.push(await startServer(app, config, logger, { handleSignals: false }));
    return servers.at(-1)!.url;
  };
  const plainUrl = await listen(createApp({ service: active, config: { ...config, rerankerModel: undefined }, logger }));
  const rerankUrl = await listen(createApp({ service: active, config, logger, reranker: () => serving }));

  const queries = await sampleQueries(queryCount);
  const retrieveOnly = { queries, topk: KEEP, return_scores: true };
  const retrieveRerank = { queries, topk_retrieval: candidates, topk_rerank: KEEP, return_scores: true };
  try {
    // Warm both paths (sessions' first runs, page cache).
    await post(plainUrl, { ...retrieveOnly, queries: queries.slice(0, 8) });
    await post(rerankUrl, { ...retrieveRerank, queries: queries.slice(0, 8) });

    console.log(`shape (a): ${queryCount} queries in one request...`);
    const plainMs: number[] = [];
    const plainCpu: number[] = [];
    for (let repeat = 0; repeat < 3; repeat++) {
      const { cpuS, value } = await cpuSeconds(() => post(plainUrl, retrieveOnly));
      plainMs.push(value.ms);
      plainCpu.push(cpuS);
    }
    batches.length = 0;
    const { cpuS: fp32Cpu, value: fp32 } = await cpuSeconds(() => post(rerankUrl, retrieveRerank));
    const fp32Pairs = batches.reduce((sum, batch) => sum + batch.pairs, 0);
    serving = rerankers.int8;
    const { cpuS: int8Cpu, value: int8 } = await cpuSeconds(() => post(rerankUrl, retrieveRerank));
    serving = rerankers.fp32;
    const ids = (answer: Result) => answer.result.map((list) => list.map((item) => item.document.id));
    const [fp32Top, int8Top] = [ids(fp32.answer), ids(int8.answer)];
    const sameOrder = fp32Top.filter((list, i) => list.join() === int8Top[i]!.join()).length / fp32Top.length;
    const overlap = fp32Top.reduce((sum, list, i) => sum + list.filter((id) => int8Top[i]!.includes(id)).length / list.length, 0) / fp32Top.length;

    console.log(`shape (b): ${clients} concurrent single-query clients...`);
    const clientQueries = await sampleQueries(clients);
    const { cpuS: plainClientsCpu, value: plainClients } = await cpuSeconds(() =>
      concurrentClients(plainUrl, clientQueries, (query) => ({ queries: [query], topk: KEEP, return_scores: true })),
    );
    batches.length = 0;
    const { cpuS: rerankClientsCpu, value: rerankClients } = await cpuSeconds(() =>
      concurrentClients(rerankUrl, clientQueries, (query) => ({ queries: [query], topk_retrieval: candidates, topk_rerank: KEEP, return_scores: true })),
    );
    const clientBatches = batches.map((batch) => batch.pairs);

    const retrieveOnlyMs = median(plainMs);
    const retrieveOnlyCpu = median(plainCpu);
    const rows: Row[] = [
      { measurement: `(a) ${queryCount} queries, retrieve-only (topk ${KEEP}), median of 3`, wall: `${Math.round(retrieveOnlyMs)} ms`, cpuS: +retrieveOnlyCpu.toFixed(2), 'CPU ratio': 1 },
      {
        measurement: `(a) retrieve ${candidates} + rerank to ${KEEP}, fp32 reranker (${fp32Pairs} pairs)`,
        wall: `${Math.round(fp32.ms)} ms`,
        cpuS: +fp32Cpu.toFixed(2),
        'CPU ratio': +(fp32Cpu / retrieveOnlyCpu).toFixed(1),
      },
      {
        measurement: `(a) retrieve ${candidates} + rerank to ${KEEP}, int8 reranker`,
        wall: `${Math.round(int8.ms)} ms`,
        cpuS: +int8Cpu.toFixed(2),
        'CPU ratio': +(int8Cpu / retrieveOnlyCpu).toFixed(1),
      },
      {
        measurement: `(b) ${clients} clients, retrieve-only`,
        wall: `${plainClients.requestsPerS.toFixed(1)} req/s, p50/p99 ${Math.round(plainClients.p50Ms)}/${Math.round(plainClients.p99Ms)} ms`,
        cpuS: +plainClientsCpu.toFixed(2),
        'CPU ratio': 1,
      },
      {
        measurement: `(b) ${clients} clients, retrieve + rerank (fp32)`,
        wall: `${rerankClients.requestsPerS.toFixed(2)} req/s, p50/p99 ${Math.round(rerankClients.p50Ms)}/${Math.round(rerankClients.p99Ms)} ms`,
        cpuS: +rerankClientsCpu.toFixed(2),
        'CPU ratio': +(rerankClientsCpu / plainClientsCpu).toFixed(1),
      },
    ];
    await report('rerank', rows, {
      retriever: { preset: retrieverPreset, passages: 1000 },
      reranker: { preset: rerankerPreset, manifest: rerankers.fp32.info(), int8Manifest: rerankers.int8.info() },
      shapeA: {
        queries: queryCount,
        candidates,
        keep: KEEP,
        retrieveOnlyMs: plainMs,
        retrieveOnlyCpuS: plainCpu,
        rerankFp32Ms: fp32.ms,
        rerankFp32CpuS: fp32Cpu,
        rerankInt8Ms: int8.ms,
        rerankInt8CpuS: int8Cpu,
        rerankFp32PairsPerCpuS: fp32Pairs / (fp32Cpu - retrieveOnlyCpu),
        rerankInt8PairsPerCpuS: fp32Pairs / (int8Cpu - retrieveOnlyCpu),
        int8CpuSpeedupOfRerankStage: (fp32Cpu - retrieveOnlyCpu) / (int8Cpu - retrieveOnlyCpu),
        top3SameOrder: sameOrder,
        top3Overlap: overlap,
      },
      shapeB: {
        clients,
        retrieveOnly: { ...plainClients, cpuS: plainClientsCpu },
        retrieveRerank: { ...rerankClients, cpuS: rerankClientsCpu },
        pairsPerRerankCall: clientBatches,
      },
    });
  } finally {
    agent.destroy();
    await Promise.all(servers.map((server) => server.shutdown('benchmark done')));
    await Promise.all([active.close(), rerankers.fp32.close(), rerankers.int8.close()]);
  }
}

await main();
