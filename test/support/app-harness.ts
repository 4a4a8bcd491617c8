import { Writable } from 'node:stream';
import type { Express, Router } from 'express';
import { CONFIG_DEFAULTS, type ServiceConfig } from '../../src/config.js';
import type { RetrievalService } from '../../src/engine/types.js';
import { createApp } from '../../src/http/app.js';
import { ServiceMetrics } from '../../src/http/metrics.js';
import type { PassageReranker } from '../../src/engine/reranker.js';
import { createLogger, type Logger } from '../../src/log.js';

export interface Harness {
  app: Express;
  config: ServiceConfig;
  metrics: ServiceMetrics;
  logger: Logger;
  /** Every log line written so far, parsed. */
  logLines: Record<string, unknown>[];
}

export function createHarness(
  service: RetrievalService,
  overrides: Partial<ServiceConfig> = {},
  extraRouters?: Router[],
  reranker?: PassageReranker,
): Harness {
  const config: ServiceConfig = { ...CONFIG_DEFAULTS, ...overrides };
  const logLines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line) logLines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  const logger = createLogger({ logLevel: 'info', logQueries: config.logQueries }, sink);
  const metrics = new ServiceMetrics(service);
  if (reranker) reranker.observe(metrics);
  const app = createApp({ service, config, logger, metrics, ...(extraRouters ? { extraRouters } : {}), ...(reranker && { reranker: () => reranker }) });
  return { app, config, metrics, logger, logLines };
}

/**
 * The value of the first sample named `name` (a histogram's `_count` line for its observation
 * count) whose labels include `labels`; undefined when absent. Read from the text exposition
 * itself, as a scraper sees it. (parse-prometheus-text-format was tried: it drops the labels of
 * labelled histograms.)
 */
export function metricValue(exposition: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of exposition.split('\n')) {
    const sample = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!sample || sample[1] !== name) continue;
    const found = new Map([...(sample[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([key, value]) => found.get(key) === value)) return Number(sample[3]);
  }
  return undefined;
}
