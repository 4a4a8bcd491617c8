import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Express } from 'express';
import type { CorpusRow } from '../../src/corpus/corpus-row.js';
import type { RetrieverFiles } from '../../src/engine/retriever.js';
import type { VectorIndexOptions } from '../../src/index/open-index.js';
import { expectedResults } from './version-fixtures.js';

/** A request shape the clients send: `sets` fixed query batches of `size` queries, cycled through. */
export interface LoadShape {
  name: string;
  size: number;
  sets: number;
}

/** One answered (or failed) request. */
export interface LoadSample {
  shape: string;
  /** Milliseconds since the load started, when the request was sent. */
  sentAt: number;
  latencyMs: number;
  status: number;
  version?: string;
  /** The results equal what the version named in the header returns for these queries. */
  consistent: boolean;
  /** A refusal's Retry-After header. */
  retryAfter?: string;
  error?: string;
  /** Tries it took, with {@link LoadOptions.retries}: failed ones were retried as verl's client does. */
  attempts: number;
}

export interface LoadOptions {
  /** Tries after the first that a 500/502/503/504 or a connection error gets, as verl's search tool retries (default 0). */
  retries?: number;
}

/** What verl's search tool retries: these statuses and connection errors (status 0 here). */
const RETRIED_STATUSES = new Set([0, 500, 502, 503, 504]);

/** Query texts made from corpus rows: a title and a few words of its text, varied in length. */
export async function corpusQueries(corpusPath: string, count: number, offset = 0): Promise<string[]> {
  const rows = (await readFile(corpusPath, 'utf8'))
    .trimEnd()
    .split('\n')
    .map((line) => JSON.parse(line) as CorpusRow);
  return Array.from({ length: count }, (_, n) => {
    const position = offset + n;
    const [title = '', text = ''] = rows[(position * 37) % rows.length]!.contents.split('\n');
    const words = text.split(/\s+/);
    const start = (position * 13) % Math.max(1, words.length - 12);
    return `${title.replaceAll('"', '')} ${words.slice(start, start + 2 + (position % 10)).join(' ')}`;
  });
}

/** The batches of each shape, and what every version answers to each of them. */
export interface LoadPlan {
  topk: number;
  batches: Map<string, string[][]>;
  /** version -> shape -> per batch, the `result` of `POST /retrieve` with scores. */
  expected: Map<string, Map<string, unknown[][][]>>;
}

export async function planLoad(
  versions: Record<string, RetrieverFiles>,
  corpusPath: string,
  shapes: readonly LoadShape[],
  topk: number,
  index?: VectorIndexOptions,
): Promise<LoadPlan> {
  const batches = new Map<string, string[][]>();
  let offset = 0;
  for (const shape of shapes) {
    const sets: string[][] = [];
    for (let set = 0; set < shape.sets; set++) {
      sets.push(await corpusQueries(corpusPath, shape.size, offset));
      offset += shape.size;
    }
    batches.set(shape.name, sets);
  }
  const expected = new Map<string, Map<string, unknown[][][]>>();
  const flat = [...batches.entries()].flatMap(([name, sets]) => sets.map((queries) => ({ name, queries })));
  const answers = await expectedResults(versions, flat.map(({ queries }) => queries.map((query) => ({ query }))), topk, index);
  for (const [version, results] of answers) {
    const byShape = new Map<string, unknown[][][]>();
    flat.forEach(({ name }, at) => {
      if (!byShape.has(name)) byShape.set(name, []);
      byShape.get(name)!.push(results[at]!);
    });
    expected.set(version, byShape);
  }
  return { topk, batches, expected };
}

/** The app on a real socket, for clients that send over keep-alive connections as agents do. */
export async function listen(app: Express): Promise<{ url: string; server: Server }> {
  const server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

/**
 * Clients that each send one shape's batches in a loop, one request at a time, until stopped,
 * checking every response against the version its `X-Retriever-Version` header names.
 */
export class LoadClients {
  readonly samples: LoadSample[] = [];
  private stopping = false;
  private running: Promise<void>[] = [];
  private readonly origin = performance.now();

  constructor(
    private readonly url: string,
    private readonly plan: LoadPlan,
    private readonly options: LoadOptions = {},
  ) {}

  /** Starts `count` clients sending batches of `shape`. */
  start(shape: string, count: number): void {
    for (let client = 0; client < count; client++) this.running.push(this.loop(shape, client));
  }

  /** Milliseconds since the clients were created, on the samples' clock. */
  now(): number {
    return performance.now() - this.origin;
  }

  /** Resolves once `count` more requests have been answered. */
  answered(count: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const target = this.samples.length + count;
      const check = (): void => void (this.samples.length >= target ? resolve() : setTimeout(check, 5));
      check();
    });
  }

  async stop(): Promise<LoadSample[]> {
    this.stopping = true;
    await Promise.all(this.running);
    return this.samples;
  }

  private async loop(shape: string, client: number): Promise<void> {
    const sets = this.plan.batches.get(shape)!;
    for (let turn = client; !this.stopping; turn++) {
      const set = turn % sets.length;
      this.samples.push(await this.sendWithRetries(shape, set, sets[set]!));
    }
  }

  private async sendWithRetries(shape: string, set: number, queries: string[]): Promise<LoadSample> {
    const tries = 1 + (this.options.retries ?? 0);
    for (let attempt = 1; ; attempt++) {
      const sample = await this.send(shape, set, queries);
      if (attempt === tries || !RETRIED_STATUSES.has(sample.status)) return { ...sample, attempts: attempt };
    }
  }

  private async send(shape: string, set: number, queries: string[]): Promise<Omit<LoadSample, 'attempts'>> {
    const sentAt = this.now();
    try {
      const response = await fetch(`${this.url}/retrieve`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ queries, topk: this.plan.topk, return_scores: true }),
      });
      const text = await response.text();
      const latencyMs = this.now() - sentAt;
      const version = response.headers.get('x-retriever-version') ?? undefined;
      const sample: Omit<LoadSample, 'attempts'> = { shape, sentAt, latencyMs, status: response.status, consistent: false, ...(version !== undefined && { version }) };
      const retryAfter = response.headers.get('retry-after');
      if (response.status !== 200) return { ...sample, ...(retryAfter !== null && { retryAfter }), error: text.slice(0, 300) };
      const expected = version === undefined ? undefined : this.plan.expected.get(version)?.get(shape)?.[set];
      sample.consistent = expected !== undefined && JSON.stringify((JSON.parse(text) as { result: unknown }).result) === JSON.stringify(expected);
      return sample;
    } catch (error) {
      return { shape, sentAt, latencyMs: this.now() - sentAt, status: 0, consistent: false, error: (error as Error).message };
    }
  }
}

/** Runs `clients` (count per shape) against `app` on a real socket while `during` runs; returns every sample. */
export async function underLoad(app: Express, plan: LoadPlan, clients: Record<string, number>, during: (load: LoadClients) => Promise<void>): Promise<LoadSample[]> {
  const { url, server } = await listen(app);
  try {
    const load = new LoadClients(url, plan);
    for (const [shape, count] of Object.entries(clients)) load.start(shape, count);
    try {
      await during(load);
    } finally {
      await load.stop();
    }
    return load.samples;
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

/** A swap as the clients saw it: the version it made active, when it was sent and when it answered (the clients' clock). */
export type SwapSeen = [version: string, sentAt: number, answeredAt: number];

/** Every 200 sent after a swap answered and done before the next was sent comes from that swap's version, and there are some. */
export function assertNewVersionAfterEachSwap(samples: readonly LoadSample[], swaps: readonly SwapSeen[]): void {
  swaps.forEach(([version, , answeredAt], at) => {
    const nextSwapSent = swaps[at + 1]?.[1] ?? Infinity;
    const between = samples.filter((sample) => sample.status === 200 && sample.sentAt > answeredAt && sample.sentAt + sample.latencyMs < nextSwapSent);
    assert.ok(between.length > 0, `requests ran after swap ${at}`);
    assert.deepEqual(new Set(between.map((sample) => sample.version)), new Set([version]), `after swap ${at}`);
  });
}
