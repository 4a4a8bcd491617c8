import { pipeline as pipe, Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import bytes from 'bytes';
import express, { type Request, type RequestHandler, type Response, type Router } from 'express';
import { ServiceError } from '../errors.js';
import { constructRecords, DEFAULT_ROUND_DATASET, newConstructionSummary } from '../training/construction.js';
import { jsonLines, tevatronRecords, type PassageSource } from '../training/export.js';
import { ingestRecords, type IngestReport } from '../training/ingest.js';
import { checkedName, isObject } from '../training/fields.js';
import { itemsOfArray, jsonLinesOf, type InputItem } from '../training/jsonl.js';
import type { TrainingRecord } from '../training/record.js';
import type { RecordFilter, TrainingExampleStore } from '../training/store.js';
import { authenticatedRouter, type BearerAuthOptions } from './auth.js';
import { unsupportedEncoding } from './errors.js';

export interface TrainingRouterOptions extends BearerAuthOptions {
  /** The open store; throws a `not_ready` ServiceError while it loads (the routes then answer 503). */
  store: () => TrainingExampleStore;
  /** The served corpus, or undefined while it loads (training routes then answer 503). */
  corpus: () => PassageSource | undefined;
  /** Body limit of these routes' JSON Lines, in body-parser's notation; JSONL uploads outgrow the app's JSON limit. */
  bodyLimit?: string | number;
  /** Dataset that legacy tevatron records are filed under. */
  legacyDataset?: string;
}

export const DEFAULT_TRAINING_BODY_LIMIT = '512mb';
/**
 * JSON bodies are parsed whole, holding the event loop (about 10 ms a megabyte) and several times
 * their size in memory, so they stay small; JSON Lines, parsed as they arrive, take the full limit.
 */
export const JSON_TRAINING_BODY_LIMIT = 16 * 1024 * 1024;
/** Results serialised per write of an ingest report, with a turn of the event loop between. */
const REPORT_SLICE_RESULTS = 10_000;
const JSON_TYPES = ['application/json', 'application/*+json'];
const JSON_LINES_TYPES = ['application/x-ndjson', 'application/jsonl', 'text/plain'];
const EXPORT_FORMATS = ['jsonl', 'tevatron'] as const;

/**
 * `/training/*`: ingest of Agentic-R records, their export and statistics, and construction from
 * scored rounds. Paths carry their `/training` prefix, so the app mounts this router at its root.
 * Throws at construction when no token is configured and authentication was not turned off.
 */
export function trainingRouter(options: TrainingRouterOptions): Router {
  const { store } = options;
  const router = authenticatedRouter(options);
  const readJson = jsonBodyReader();
  const limitBytes = bytes.parse(options.bodyLimit ?? DEFAULT_TRAINING_BODY_LIMIT) ?? 0;
  // Checked before a body is read: a large upload is not worth receiving only to answer 503.
  const storeReady: RequestHandler = (_req, _res, next) => {
    store();
    next();
  };
  const corpus = (): PassageSource => {
    const source = options.corpus();
    if (!source) throw new ServiceError('not_ready', 'the corpus is still loading; training routes need it');
    return source;
  };
  router.post('/training/examples', storeReady, readJson, async (req, res) => {
    const corpusRows = corpus().rows;
    const items = await requestItems(req, 'records', limitBytes);
    const report = await ingestRecords(store(), items, { corpusRows, legacyDataset: options.legacyDataset });
    // A keep-alive connection keeps its last request alive: without this, a parsed JSON body would stay too.
    req.body = undefined;
    await sendReport(res, report);
  });

  router.get('/training/examples', storeReady, async (req, res) => {
    const format = exportFormat(req);
    const records = store().records(recordFilter(req));
    const documents = format === 'tevatron' ? tevatronRecords(records, corpus()) : records;
    res.type('application/x-ndjson');
    try {
      await pipeline(Readable.from(jsonLines(documents)), res);
    } catch (error) {
      // A client that hangs up mid-stream is not a server failure.
      if ((error as NodeJS.ErrnoException).code !== 'ERR_STREAM_PREMATURE_CLOSE') throw error;
    }
  });

  router.get('/training/stats', (_req, res) => {
    res.json(store().stats());
  });

  router.post('/training/construct', storeReady, readJson, async (req, res) => {
    const corpusRows = corpus().rows;
    const body: unknown = req.body;
    const seed = integerParam(req, body, 'seed') ?? 0;
    const given = stringParam(req, body, 'dataset');
    const dataset = given === undefined ? DEFAULT_ROUND_DATASET : checkedName(given, 'dataset');
    const summary = newConstructionSummary(seed);
    const records: TrainingRecord[] = [];
    for await (const built of constructRecords(await requestItems(req, 'rounds', limitBytes), { seed, dataset, corpusRows }, summary)) {
      records.push(...built);
    }
    const outcomes = await store().append(records);
    res.json({
      ...summary,
      accepted: outcomes.filter((outcome) => outcome === 'accepted').length,
      duplicate: outcomes.filter((outcome) => outcome === 'duplicate').length,
    });
  });

  return router;
}

/** body-parser's JSON reader with the JSON limit; its failures become ServiceErrors saying what to do. */
function jsonBodyReader(): RequestHandler {
  const parse = express.json({ type: JSON_TYPES, limit: JSON_TRAINING_BODY_LIMIT });
  return (req, res, next) => {
    parse(req, res, (error?: unknown) => {
      if (!error) return next();
      const parserError = error as { type?: string; message?: string };
      if (parserError.type === 'entity.too.large') {
        return next(new ServiceError(
          'payload_too_large',
          `a JSON body may be at most ${JSON_TRAINING_BODY_LIMIT} bytes; send larger uploads as JSON Lines (application/x-ndjson)`,
          { field: 'body' },
        ));
      }
      // The app's error handler maps the rest: 415 for an unsupported encoding, 400 for an undecodable body.
      next(error);
    });
  };
}

/** The input items: of a parsed JSON body, or of a JSON Lines body parsed as it arrives. */
async function requestItems(req: Request, key: string, limitBytes: number): Promise<Iterable<InputItem> | AsyncIterable<InputItem>> {
  if (req.body !== undefined) return itemsOf(req.body, key);
  if (!req.is(JSON_LINES_TYPES)) {
    throw new ServiceError('bad_request', `send JSON Lines (application/x-ndjson) or JSON (application/json)`, { field: 'body' });
  }
  return nonEmpty(jsonLinesOf(bodyChunks(req, limitBytes)), key);
}

/** A JSON body holds an array or `{<key>: [...]}`. */
function itemsOf(body: unknown, key: string): InputItem[] {
  let items: InputItem[];
  if (Array.isArray(body)) items = itemsOfArray(body);
  else if (isObject(body) && Array.isArray(body[key])) items = itemsOfArray(body[key]);
  else throw new ServiceError('bad_request', `a JSON body must be an array or an object with a "${key}" array`, { field: 'body' });
  if (items.length === 0) throw new ServiceError('bad_request', `the body holds no ${key}`, { field: 'body' });
  return items;
}

/** The items, refused before anything is stored when there are none. */
async function nonEmpty(items: AsyncIterable<InputItem>, key: string): Promise<AsyncIterable<InputItem>> {
  const iterator = items[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done) throw new ServiceError('bad_request', `the body holds no ${key}`, { field: 'body' });
  return (async function* () {
    yield first.value;
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value;
  })();
}

const DECODERS: Record<string, () => Transform> = { gzip: createGunzip, deflate: createInflate, br: createBrotliDecompress };

/**
 * The body's bytes as they arrive, decoded, never gathered: a declared length over the limit is
 * refused before anything is read; a chunked body that outgrows it is cut off there (the slices
 * stored before stay stored, as after a dropped connection).
 */
async function* bodyChunks(req: Request, limitBytes: number): AsyncGenerator<Buffer> {
  const tooLarge = () => new ServiceError('payload_too_large', `request body exceeds the training body limit (${limitBytes} bytes)`, { field: 'body' });
  const encoding = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
  const decoder = DECODERS[encoding];
  if (!decoder && encoding !== 'identity') {
    throw unsupportedEncoding(encoding);
  }
  if (!decoder && Number(req.headers['content-length'] ?? 0) > limitBytes) throw tooLarge();
  const source = (decoder ? pipe(req, decoder(), () => undefined) : req) as AsyncIterable<Buffer>;
  let received = 0;
  try {
    for await (const chunk of source) {
      received += chunk.length;
      if (received > limitBytes) throw tooLarge();
      yield chunk;
    }
  } catch (error) {
    if (error instanceof ServiceError) throw error;
    // A client that hung up, or bytes that do not decompress: the request's fault, not ours.
    throw new ServiceError('bad_request', `unreadable request body: ${(error as Error).message}`, { field: 'body' });
  }
}

/**
 * Writes the report a slice of results at a time, yielding between slices: serialising 200k
 * results at once would hold the event loop as long as the ingest itself now does.
 */
async function sendReport(res: Response, report: IngestReport): Promise<void> {
  const { results, ...counts } = report;
  res.type('application/json');
  res.write(`${JSON.stringify(counts).slice(0, -1)},"results":[`);
  for (let start = 0; start < results.length; start += REPORT_SLICE_RESULTS) {
    const slice = JSON.stringify(results.slice(start, start + REPORT_SLICE_RESULTS)).slice(1, -1);
    res.write(start === 0 ? slice : `,${slice}`);
    await nextTurn();
  }
  res.end(']}');
}

function exportFormat(req: Request): (typeof EXPORT_FORMATS)[number] {
  const format = req.query.format ?? 'jsonl';
  const known = EXPORT_FORMATS.find((name) => name === format);
  if (!known) throw new ServiceError('bad_request', `format must be one of ${EXPORT_FORMATS.join(', ')}`, { field: 'format' });
  return known;
}

function recordFilter(req: Request): RecordFilter {
  const filter: RecordFilter = {};
  const dataset = req.query.dataset;
  if (dataset !== undefined) {
    if (typeof dataset !== 'string') throw new ServiceError('bad_request', 'dataset must be given once', { field: 'dataset' });
    filter.dataset = dataset;
  }
  const round = req.query.round;
  if (round !== undefined) {
    if (typeof round !== 'string' || !/^\d+$/.test(round)) {
      throw new ServiceError('bad_request', 'round must be a non-negative integer', { field: 'round' });
    }
    filter.roundIndex = Number(round);
  }
  return filter;
}

/** A parameter from the query string, else from a JSON object body. */
function param(req: Request, body: unknown, name: string): unknown {
  return req.query[name] ?? (isObject(body) ? body[name] : undefined);
}

function integerParam(req: Request, body: unknown, name: string): number | undefined {
  const value = param(req, body, name);
  if (value === undefined) return undefined;
  const number = typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value;
  if (typeof number !== 'number' || !Number.isSafeInteger(number)) {
    throw new ServiceError('bad_request', `${name} must be an integer`, { field: name });
  }
  return number;
}

function stringParam(req: Request, body: unknown, name: string): string | undefined {
  const value = param(req, body, name);
  if (value !== undefined && typeof value !== 'string') throw new ServiceError('bad_request', `${name} must be a string`, { field: name });
  return value;
}
