/**
 * What the HTTP layer costs on top of the engine for Search-R1-sized requests: the same batch of
 * queries is sent, alternately, straight to the engine (`RetrievalService.retrieve`) and as a
 * `POST /retrieve` over a real socket (JSON parse, validation, shaping, serialisation, logging,
 * metrics, transfer), in the same process and run. Reported: medians and the overhead as a
 * percentage of the engine's own time, measured two ways: (a) HTTP round trip minus engine call,
 * per alternating pair; (b) the HTTP round trip of a second app whose service replays the
 * engine's result for this batch instantly, i.e. the HTTP layer alone with the real payload,
 * which is steadier on a busy machine; (c) server-side, from the access log of each request:
 * arrival to last byte written minus the engine time of that same request (its
 * RetrievalResult.timings), which leaves out the benchmark's own HTTP client.
 *
 *   node dist/benchmarks/http-overhead.js [--preset tiny|e5-base] [--corpus-rows 1000] [--queries 512] [--topk 3] [--repeats 7]
 *
 * The engine's time for a batch is dominated by query encoding; `--corpus-rows` keeps the e5-base
 * index build (512-token passages) short on a small CPU without changing what is measured.
 */
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { CONFIG_DEFAULTS } from '../src/config.js';
import { isPresetName } from '../src/encoder/presets.js';
import type { RetrievalResult, RetrievalService } from '../src/engine/types.js';
import { createApp } from '../src/http/app.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { buildRetrieverFiles } from '../test/support/retriever-fixture.js';
import { loadRealService } from '../test/support/real-service.js';
import { report, seconds, type Row } from './bench-report.js';
import { sampleHead, sampleQueries } from './sample-queries.js';

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      preset: { type: 'string', default: 'tiny' },
      'corpus-rows': { type: 'string', default: '1000' },
      queries: { type: 'string', default: '512' },
      topk: { type: 'string', default: '3' },
      repeats: { type: 'string', default: '7' },
    },
  });
  const preset = values.preset!;
  if (!isPresetName(preset)) throw new Error(`--preset must be tiny, e5-base or demo, got ${preset}`);
  const queryCount = Number(values.queries);
  const topk = Number(values.topk);
  const repeats = Number(values.repeats);
  const corpusRows = Number(values['corpus-rows']);

  console.log(`building the ${preset} model and its index over ${corpusRows} wiki18 sample rows...`);
  const files = await buildRetrieverFiles({ preset, seed: 7, corpus: await sampleHead(corpusRows) });
  const real = await loadRealService(files, `bench-${preset}`);
  const config = { ...CONFIG_DEFAULTS, host: '127.0.0.1', port: 0 };
  // Request logs are part of the cost being measured; the real app's are kept for (c).
  const accessLog: { route?: string; durationMs?: number; engineMs?: number }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      accessLog.push(JSON.parse(chunk.toString('utf8')) as (typeof accessLog)[number]);
      done();
    },
  });
  const logger = createLogger(config, sink);
  const running = await startServer(createApp({ service: real.service, config, logger }), config, logger, {
    handleSignals: false,
  });
  const discard = createLogger(config, pino.destination('/dev/null'));

  const queries = await sampleQueries(queryCount);
  const inputs = queries.map((query) => ({ query }));
  const body = JSON.stringify({ queries, topk, return_scores: true });
  const viaEngine = () => real.service.retrieve(inputs, topk);
  const post = async (url: string) => {
    const response = await fetch(`${url}/retrieve`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`POST /retrieve answered ${response.status}: ${text.slice(0, 200)}`);
    return text;
  };

  const captured = await viaEngine();
  const replay: RetrievalService = {
    retrieve: async (): Promise<RetrievalResult> => captured,
    documents: (keys) => real.service.documents(keys),
    readiness: () => real.service.readiness(),
    info: () => real.service.info(),
  };
  const replaying = await startServer(createApp({ service: replay, config, logger: discard }), config, discard, {
    handleSignals: false,
  });

  try {
    const responseBytes = (await post(running.url)).length;
    await post(replaying.url);
    const engineMs: number[] = [];
    const httpMs: number[] = [];
    const pairOverheadMs: number[] = [];
    const httpLayerMs: number[] = [];
    const serverOverheadMs: number[] = [];
    for (let repeat = 0; repeat < repeats; repeat++) {
      let start = process.hrtime.bigint();
      await viaEngine();
      engineMs.push(seconds(start) * 1000);
      start = process.hrtime.bigint();
      await post(running.url);
      httpMs.push(seconds(start) * 1000);
      pairOverheadMs.push(httpMs.at(-1)! - engineMs.at(-1)!);
      const served = accessLog.filter((line) => line.route === '/retrieve').at(-1)!;
      serverOverheadMs.push(served.durationMs! - served.engineMs!);
      start = process.hrtime.bigint();
      await post(replaying.url);
      httpLayerMs.push(seconds(start) * 1000);
      console.log(
        `repeat ${repeat + 1}/${repeats}: engine ${engineMs.at(-1)!.toFixed(0)} ms, HTTP ${httpMs.at(-1)!.toFixed(0)} ms, HTTP layer alone ${httpLayerMs.at(-1)!.toFixed(0)} ms, server-side overhead ${serverOverheadMs.at(-1)!.toFixed(0)} ms`,
      );
    }
    const engine = median(engineMs);
    const pairOverhead = median(pairOverheadMs);
    const httpLayer = median(httpLayerMs);
    const serverOverhead = median(serverOverheadMs);
    const percent = (ms: number) => ((ms / engine) * 100).toFixed(1);
    const rows: Row[] = [
      {
        model: preset,
        'corpus rows': corpusRows,
        queries: queryCount,
        topk,
        'engine ms': engine.toFixed(1),
        'HTTP ms': median(httpMs).toFixed(1),
        '(a) HTTP - engine, ms': pairOverhead.toFixed(1),
        '(a) % of engine': percent(pairOverhead),
        '(b) HTTP layer alone, ms': httpLayer.toFixed(1),
        '(b) % of engine': percent(httpLayer),
        '(c) server-side, ms': serverOverhead.toFixed(1),
        '(c) % of engine': percent(serverOverhead),
        'response MB': (responseBytes / 1e6).toFixed(2),
      },
    ];
    await report(`http-overhead-${preset}`, rows, {
      model: preset,
      corpusRows,
      queries: queryCount,
      topk,
      repeats,
      statistic: 'median',
      requestBytes: Buffer.byteLength(body),
      responseBytes,
      engineMs,
      httpMs,
      pairOverheadMs,
      httpLayerMs,
      serverOverheadMs,
      overheadPercentServerSide: (serverOverhead / engine) * 100,
      overheadPercentPairs: (pairOverhead / engine) * 100,
      overheadPercentHttpLayer: (httpLayer / engine) * 100,
    });
  } finally {
    await Promise.all([running.shutdown('benchmark done'), replaying.shutdown('benchmark done')]);
    await real.close();
  }
}

await main();
