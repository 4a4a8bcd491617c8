import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { RerankBatchStats, RerankObserver, RetrievalService, RetrievalTimings, RetrieverInfo } from '../engine/types.js';
import { registerThroughputMetrics } from './throughput-metrics.js';

const LATENCY_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2560, 4096];

/** A gauge with one series, 1, labelled with what `value` reads from the active retriever; none while nothing is active. */
function activeRetrieverGauge<L extends string>(
  registry: Registry,
  service: RetrievalService,
  label: L,
  gauge: { name: string; help: string; value: (info: RetrieverInfo) => string },
): void {
  new Gauge<L>({
    name: gauge.name,
    help: gauge.help,
    labelNames: [label],
    registers: [registry],
    collect() {
      this.reset();
      const info = service.info();
      if (info) this.set({ [label]: gauge.value(info) } as Record<L, string>, 1);
    },
  });
}

/**
 * Prometheus metrics of one app instance, in a registry of its own so that two apps in one
 * process (tests, a hot-swap rehearsal) never share counters. Other route groups register
 * theirs in `registry`.
 */
export class ServiceMetrics implements RerankObserver {
  readonly registry = new Registry();
  readonly requests: Counter<'method' | 'route' | 'status'>;
  readonly requestSeconds: Histogram<'method' | 'route' | 'status'>;
  readonly queriesPerRequest: Histogram;
  readonly stageSeconds: Histogram<'stage'>;
  readonly rerankSeconds: Histogram;
  readonly rerankPairsPerBatch: Histogram;

  constructor(service: RetrievalService) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: 'retriever_http_requests_total',
      help: 'HTTP requests answered, by route template and status',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.requestSeconds = new Histogram({
      name: 'retriever_http_request_duration_seconds',
      help: 'Time from request arrival to the last response byte',
      labelNames: ['method', 'route', 'status'],
      buckets: LATENCY_BUCKETS_SECONDS,
      registers,
    });
    this.queriesPerRequest = new Histogram({
      name: 'retriever_queries_per_request',
      help: 'Queries carried by one /retrieve request',
      buckets: BATCH_BUCKETS,
      registers,
    });
    this.stageSeconds = new Histogram({
      name: 'retriever_stage_duration_seconds',
      help: 'Engine time per /retrieve batch by stage (encode, search, fetch)',
      labelNames: ['stage'],
      buckets: LATENCY_BUCKETS_SECONDS,
      registers,
    });
    this.rerankSeconds = new Histogram({
      name: 'retriever_rerank_duration_seconds',
      help: 'Time of one reranker call: the (query, passage) pairs of the requests merged into it, scored by the cross-encoder',
      buckets: LATENCY_BUCKETS_SECONDS,
      registers,
    });
    this.rerankPairsPerBatch = new Histogram({
      name: 'retriever_rerank_pairs_per_batch',
      help: 'Pairs scored in one reranker call (merged across concurrent requests)',
      buckets: BATCH_BUCKETS,
      registers,
    });
    activeRetrieverGauge(this.registry, service, 'provider', {
      name: 'retriever_execution_provider',
      help: 'Execution provider the active encoder runs on (1 for the active one)',
      value: (info) => info.provider,
    });
    // Each replica of a fleet exports its own: a dashboard shows who serves what by the scrape's instance.
    activeRetrieverGauge(this.registry, service, 'version', {
      name: 'retriever_active_version',
      help: 'Retriever version this instance serves (1 for the active one)',
      value: (info) => info.version,
    });
    new Gauge({
      name: 'retriever_index_rows',
      help: 'Vectors in the active index',
      registers,
      collect() {
        this.set(service.info()?.indexRows ?? 0);
      },
    });
    new Gauge({
      name: 'retriever_ready',
      help: '1 when a retriever is loaded and serving',
      registers,
      collect() {
        this.set(service.readiness().ready ? 1 : 0);
      },
    });
    registerThroughputMetrics(this.registry, service);
  }

  observeRequest(method: string, route: string, status: number, seconds: number): void {
    const labels = { method, route, status: String(status) };
    this.requests.inc(labels);
    this.requestSeconds.observe(labels, seconds);
  }

  rerankBatch(stats: RerankBatchStats): void {
    this.rerankSeconds.observe(stats.seconds);
    this.rerankPairsPerBatch.observe(stats.pairs);
  }

  observeRetrieval(queries: number, timings: RetrievalTimings): void {
    this.queriesPerRequest.observe(queries);
    this.stageSeconds.observe({ stage: 'encode' }, timings.encodeMs / 1000);
    this.stageSeconds.observe({ stage: 'search' }, timings.searchMs / 1000);
    this.stageSeconds.observe({ stage: 'fetch' }, timings.fetchMs / 1000);
  }
}
