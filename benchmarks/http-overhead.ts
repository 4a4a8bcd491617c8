/**
 * What the HTTP layer costs on top of the engine for Search-R1-sized requests: the same batch of
 * queries is sent, alternately, straight to the engine (`RetrievalService.search`) and as a
 * `POST /retrieve` over a real socket (JSON parse, validation, shaping, serialisation, logging,
 * metrics, transfer), in the same process and run. Reported: medians and the overhead as a
 * percentage of the engine's own time, measured two ways: (a) HTTP round trip minus engine call,
 * per alternating pair; (b) the HTTP round trip of a second app whose service replays the
 * engine's result for this batch instantly, i.e. the HTTP layer alone with the real payload,
 * which is steadier on a busy machine.
 *
 *   node dist/benchmarks/http-overhead.js [--preset tiny|e5-base] [--queries 512] [--topk 3] [--repeats 7]
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { CONFIG_DEFAULTS } from '../src/config.js';
import { isPresetName } from '../src/encoder/presets.js';
import type { CorpusRow, RetrievalResult, RetrievalService } from '../src/engine/types.js';
import { createApp } from '../src/http/app.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { buildSampleRetriever, loadRealService } from '../test/http/real-service.js';
import { SAMPLE_CORPUS_PATH } from '../test/http/stand-in-service.js';
import { report, seconds, workDir, type Row } from './bench-report.js';

/** Search-R1-like sub-queries: a passage's title and a few of its words, varied in length. */
async function sampleQueries(count: number): Promise<string[]> {
  const rows = (await readFile(SAMPLE_CORPUS_PATH, 'utf8'))
    .trimEnd()
    .split('\n')
    .map((line) => JSON.parse(line) as CorpusRow);
  return Array.from({ length: count }, (_, position) => {
    const [title = '', text = ''] = rows[(position * 37) % rows.length]!.contents.split('\n');
    const words = text.split(/\s+/);
    const start = (position * 13) % Math.max(1, words.length - 12);
    return `${title.replaceAll('"', '')} ${words.slice(start, start + 2 + (position % 10)).join(' ')}`;
  });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      preset: { type: 'string', default: 'tiny' },
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

  console.log(`preparing the ${preset} retriever over the wiki18 sample (built once under benchmarks/work)...`);
  const files = await buildSampleRetriever(path.join(workDir, `http-overhead-${preset}`), preset);
  const real = await loadRealService(files, `bench-${preset}`);
  const config = { ...CONFIG_DEFAULTS, host: '127.0.0.1', port: 0 };
  // Request logs are part of the cost being measured; only their destination is discarded.
  const logger = createLogger(config, pino.destination('/dev/null'));
  const running = await startServer(createApp({ service: real.service, config, logger }), config, logger, {
    handleSignals: false,
  });

  const queries = await sampleQueries(queryCount);
  const inputs = queries.map((query) => ({ query }));
  const body = JSON.stringify({ queries, topk, return_scores: true });
  const viaEngine = () => real.service.search(inputs, topk);
  const post = async (url: string) => {
    const response = await fetch(`${url}/retrieve`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`POST /retrieve answered ${response.status}: ${text.slice(0, 200)}`);
    return text;
  };

  const captured = await viaEngine();
  const replay: RetrievalService = {
    search: async (): Promise<RetrievalResult> => captured,
    readiness: () => real.service.readiness(),
    info: () => real.service.info(),
  };
  const replaying = await startServer(createApp({ service: replay, config, logger }), config, logger, {
    handleSignals: false,
  });

  try {
    const responseBytes = (await post(running.url)).length;
    await post(replaying.url);
    const engineMs: number[] = [];
    const httpMs: number[] = [];
    const pairOverheadMs: number[] = [];
    const httpLayerMs: number[] = [];
    for (let repeat = 0; repeat < repeats; repeat++) {
      let start = process.hrtime.bigint();
      await viaEngine();
      engineMs.push(seconds(start) * 1000);
      start = process.hrtime.bigint();
      await post(running.url);
      httpMs.push(seconds(start) * 1000);
      pairOverheadMs.push(httpMs.at(-1)! - engineMs.at(-1)!);
      start = process.hrtime.bigint();
      await post(replaying.url);
      httpLayerMs.push(seconds(start) * 1000);
    }
    const engine = median(engineMs);
    const pairOverhead = median(pairOverheadMs);
    const httpLayer = median(httpLayerMs);
    const percent = (ms: number) => ((ms / engine) * 100).toFixed(1);
    const rows: Row[] = [
      {
        model: preset,
        queries: queryCount,
        topk,
        'engine ms': engine.toFixed(1),
        'HTTP ms': median(httpMs).toFixed(1),
        '(a) HTTP - engine, ms': pairOverhead.toFixed(1),
        '(a) % of engine': percent(pairOverhead),
        '(b) HTTP layer alone, ms': httpLayer.toFixed(1),
        '(b) % of engine': percent(httpLayer),
        'response MB': (responseBytes / 1e6).toFixed(2),
      },
    ];
    await report(`http-overhead-${preset}`, rows, {
      model: preset,
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
      overheadPercentPairs: (pairOverhead / engine) * 100,
      overheadPercentHttpLayer: (httpLayer / engine) * 100,
    });
  } finally {
    await Promise.all([running.shutdown('benchmark done'), replaying.shutdown('benchmark done')]);
    await real.close();
  }
}

await main();
