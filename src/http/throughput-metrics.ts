import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { RetrievalService } from '../engine/types.js';

const BATCH_QUERY_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2560, 4096];
const BATCH_TOKEN_BUCKETS = [16, 64, 256, 1024, 4096, 16_384, 65_536, 262_144];
const WAIT_BUCKETS_SECONDS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** A replacement at demo scale pauses for well under a second; at wiki18 scale for one fp16 index load, 15–65 s. */
const PAUSE_BUCKETS_SECONDS = [0.1, 0.5, 1, 2.5, 5, 15, 30, 60, 120, 300];

/** Cross-request batching, queue and result cache metrics of a service that has a batcher. */
export function registerThroughputMetrics(registry: Registry, service: RetrievalService): void {
  if (!service.observeThroughput || !service.throughput) return;
  const state = service.throughput.bind(service);
  const registers = [registry];
  const batchQueries = new Histogram({
    name: 'retriever_batch_queries',
    help: 'Queries merged into one engine batch (all requests in it, duplicates included)',
    buckets: BATCH_QUERY_BUCKETS,
    registers,
  });
  const batchUnique = new Histogram({
    name: 'retriever_batch_unique_queries',
    help: 'Distinct final query texts encoded and searched in one engine batch',
    buckets: BATCH_QUERY_BUCKETS,
    registers,
  });
  const batchRequests = new Histogram({
    name: 'retriever_batch_requests',
    help: 'Requests merged into one engine batch',
    buckets: BATCH_QUERY_BUCKETS,
    registers,
  });
  const batchTokens = new Histogram({
    name: 'retriever_batch_tokens',
    help: 'Estimated tokens (characters / 4 per query) in one engine batch',
    buckets: BATCH_TOKEN_BUCKETS,
    registers,
  });
  const waitSeconds = new Histogram({
    name: 'retriever_queue_wait_seconds',
    help: 'Time a request waited in the queue before its batch started',
    buckets: WAIT_BUCKETS_SECONDS,
    registers,
  });
  const overloaded = new Counter({
    name: 'retriever_overloaded_requests_total',
    help: 'Requests refused with 503 because the queue was full',
    registers,
  });
  const cacheLookups = new Counter({
    name: 'retriever_result_cache_lookups_total',
    help: 'Result cache lookups per query, by outcome',
    labelNames: ['result'],
    registers,
  });
  new Gauge({
    name: 'retriever_queue_queries',
    help: 'Queries waiting for a batch',
    registers,
    collect() {
      this.set(state().queuedQueries);
    },
  });
  new Gauge({
    name: 'retriever_queue_requests',
    help: 'Requests waiting for a batch',
    registers,
    collect() {
      this.set(state().queuedRequests);
    },
  });
  new Gauge({
    name: 'retriever_result_cache_entries',
    help: 'Entries in the result cache',
    registers,
    collect() {
      this.set(state().cacheEntries);
    },
  });
  new Gauge({
    name: 'retriever_result_cache_bytes',
    help: 'Estimated memory held by the result cache',
    registers,
    collect() {
      this.set(state().cacheBytes);
    },
  });
  const swaps = new Counter({
    name: 'retriever_swaps_total',
    help: 'Versions that took over from another: side-by-side (loaded beside it) or replace (loaded in its place)',
    labelNames: ['mode'],
    registers,
  });
  // Both series from the start, at 0: a rate or increase over a fleet's first swap then has a baseline.
  for (const mode of ['side-by-side', 'replace']) swaps.inc({ mode }, 0);
  const pauses = new Histogram({
    name: 'retriever_swap_pause_seconds',
    help: 'How long a replacement searched nothing: from admitting no new request until a version served again',
    buckets: PAUSE_BUCKETS_SECONDS,
    registers,
  });
  service.observeThroughput({
    batch(stats) {
      batchQueries.observe(stats.queries);
      batchUnique.observe(stats.uniqueQueries);
      batchRequests.observe(stats.requests);
      batchTokens.observe(stats.estimatedTokens);
      for (const ms of stats.waitMs) waitSeconds.observe(ms / 1000);
    },
    cacheLookups(hits, misses) {
      if (hits > 0) cacheLookups.inc({ result: 'hit' }, hits);
      if (misses > 0) cacheLookups.inc({ result: 'miss' }, misses);
    },
    overloaded() {
      overloaded.inc();
    },
    swapped(mode) {
      swaps.inc({ mode });
    },
    paused(seconds) {
      pauses.observe(seconds);
    },
  });
}
