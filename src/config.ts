import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { load as loadYaml } from 'js-yaml';
import { addSpellingAliases, adoptAliasValues, dashed } from './command-line.js';
import type { CpuPrecision } from './encoder/session.js';
import { badRequest } from './errors.js';
import { DEFAULT_SHARD_ROWS } from './index/onnx-search-protocol.js';
import type { SearchBackendChoice, SearchPrecisionChoice } from './index/open-index.js';
import type { SwapModeSetting } from './index/search-memory.js';
import { LOG_LEVELS } from './log.js';
import { boolean, byteCount, byteSize, device, deviceList, integer, oneOf, text, weightBits, type ValueType } from './value-types.js';

/** One setting of `serve`: a flag, an environment variable `RETRIEVER_<FLAG>` and a config file key. */
interface Setting<T> {
  /** Search-R1's spelling (snake_case); the dash spelling is accepted too. */
  flag: string;
  type: ValueType<T>;
  /** Absent for a setting that is unset unless given. */
  fallback?: T;
  /** Present for a switch (a flag without a value), which takes this value when given. */
  whenGiven?: boolean;
  /** `serve --help`'s line. */
  doc: string;
}

function setting<T>(flag: string, type: ValueType<T>, fallback: NoInfer<T>, doc: string): Setting<T> & { fallback: T } {
  return { flag, type, fallback, doc };
}

function optional<T>(flag: string, type: ValueType<T>, doc: string): Setting<T> {
  return { flag, type, doc };
}

/** Env and config files give a switch true or false, true meaning what the bare flag means. */
function toggle(flag: string, doc: string, whenGiven = true): Setting<boolean> & { fallback: boolean } {
  return { flag, type: boolean, fallback: !whenGiven, whenGiven, doc };
}

/**
 * Every setting of `serve`, in `serve --help`'s order; `ServiceConfig`, `CONFIG_DEFAULTS`, the
 * options, environment variables and config file keys all come from here.
 */
export const SETTINGS = {
  indexPath: optional('index_path', text, 'FAISS index file: Flat, HNSW, IVF, SQ, PQ, or an IDMap of one'),
  corpusPath: optional('corpus_path', text, 'JSONL corpus, line i = index row i'),
  topk: setting('topk', integer(1), 3, 'default topk when a request omits it or sends null/0'),
  retrieverName: optional('retriever_name', text, 'accepted for Search-R1 compatibility; prefixes come from retriever.json (bm25 is not served)'),
  retrieverModel: optional(
    'retriever_model',
    text,
    'model folder with retriever.json, or a Hugging Face BERT checkpoint folder (config.json + *.safetensors), converted once',
  ),
  faissGpu: toggle('faiss_gpu', 'search on the GPU (ONNX backend, fp16 copy of the index on CUDA)'),
  host: setting('host', text, '0.0.0.0', 'address to listen on'),
  port: setting('port', integer(0, 65535), 8000, 'port to listen on (0 = any free port)'),
  device: setting('device', device, 'auto', 'encoder device: cuda|cpu|auto'),
  deviceId: setting('device_id', integer(0), 0, 'CUDA device ordinal'),
  strictDevice: toggle('strict_device', 'fail instead of falling back to CPU when the device cannot run'),
  precision: setting(
    'precision',
    oneOf<CpuPrecision>(['fp32', 'int8']),
    'fp32',
    'CPU encoder graph: fp32|int8 (int8 = model.int8.onnx, built on checkpoint conversion)',
  ),
  int8WeightBits: setting('int8_weight_bits', weightBits, 'auto', 'int8 weight bits: auto|8|7 (auto: 7 on x86 CPUs without VNNI/AMX)'),
  intraOpThreads: optional('intra_op_threads', integer(1), 'ONNX Runtime intra-op threads'),
  interOpThreads: optional('inter_op_threads', integer(1), 'ONNX Runtime inter-op threads'),
  // GRPO with n=5 over a 512-question batch sends 2,560 queries in one POST; leave headroom.
  maxQueries: setting('max_queries', integer(1), 4096, 'most queries in one request'),
  maxQueryChars: setting('max_query_chars', integer(1), 4096, 'most characters in one query'),
  maxTopk: setting('max_topk', integer(1), 1000, 'largest topk a request may ask for'),
  // 2,560 queries × 4,096 chars of JSON-escaped text (up to 6 bytes per \uXXXX char in the worst
  // case is 63 MB; real text is far smaller) fits under 64 MB.
  bodyLimit: setting('body_limit', byteSize, '64mb', 'largest JSON request body (e.g. 64mb)'),
  dataDir: setting('data_dir', text, 'data', 'folder for service state'),
  // Absent: the corpus module picks a path beside the corpus.
  sidecarPath: optional('sidecar_path', text, 'corpus row offsets file'),
  logQueries: toggle('log_queries', 'include query text in logs'),
  logLevel: setting('log_level', oneOf(LOG_LEVELS), 'info', 'log level'),
  trainingToken: optional('training_token', text, 'bearer token for the training routes'),
  trainingAuth: toggle('no_training_auth', 'serve the training routes without a token', false),
  replica: toggle(
    'replica',
    "serve read-only as one of a writer's replicas: the version its registry in --data_dir marks active, prepared and switched with the writer's activations; no training routes, no data dir lock",
  ),
  heartbeatMs: setting(
    'heartbeat_ms',
    integer(50),
    1000,
    "ms between a fleet's heartbeats and registry polls: a replica switches within one after a flip; one that misses 3 is left out",
  ),
  // Loading wiki18's fp16 index onto a GPU takes minutes; a replica that hangs must not hold activations forever.
  replicaPrepareTimeoutMs: setting(
    'replica_prepare_timeout_ms',
    integer(1),
    600_000,
    "ms the writer waits for every live replica to prepare a version it activates before failing the activation (the old version stays active)",
  ),
  requestTimeoutMs: setting('request_timeout_ms', integer(0), 300_000, 'per-request deadline in ms, answered with 503 (0 = none)'),
  // Under many single-query clients batches form while the previous one runs; a lone big
  // request (Search-R1's turn) starts at once and runs whole, so neither shape waits.
  batchMaxQueries: setting(
    'batch_max_queries',
    integer(1),
    256,
    'most queries merged across requests into one encode + search batch (1 = no merging)',
  ),
  batchMaxTokens: setting('batch_max_tokens', integer(1), 16_384, 'most estimated tokens (characters / 4) in one merged batch'),
  batchMaxWaitMs: setting('batch_max_wait_ms', integer(0), 0, 'ms an idle batcher waits for more requests before running (0 = at once)'),
  // Room for three GRPO-sized (2,560-query) turns, or thousands of single-query clients.
  queueMaxQueries: setting(
    'queue_max_queries',
    integer(1),
    8192,
    'queries allowed to wait for a batch; more are refused with 503 + Retry-After',
  ),
  // Results of a version never change; GRPO rollouts repeat their questions' first queries.
  resultCacheBytes: setting('result_cache_size', byteCount, 64 * 2 ** 20, 'memory bound of the LRU result cache, e.g. 64mb (0 = off)'),
  // auto: see src/index/open-index.ts.
  searchBackend: setting(
    'search_backend',
    oneOf<SearchBackendChoice>(['faiss', 'onnx', 'auto']),
    'auto',
    'vector search backend: faiss (faiss-node, CPU, every index type) | onnx (ONNX Runtime, CPU or CUDA, Flat inner product only) | auto (onnx for Flat inner product, faiss for the rest)',
  ),
  searchShardRows: setting(
    'search_shard_rows',
    integer(1),
    DEFAULT_SHARD_ROWS,
    'index rows per matrix product of the onnx backend (scores of a shard: queries × rows floats)',
  ),
  searchDtype: setting(
    'search_dtype',
    oneOf<SearchPrecisionChoice>(['fp32', 'fp16', 'auto']),
    'auto',
    'onnx backend precision: fp32 | fp16 (reads <index>.fp16, built once) | auto (fp16 on GPU, fp32 on CPU)',
  ),
  searchRescore: setting(
    'search_rescore',
    integer(0),
    0,
    'fp16 candidates per query rescored exactly in fp32 from the index file, so scores match faiss (0 = off)',
  ),
  searchMemoryBudget: setting(
    'search_memory_budget',
    byteCount,
    0,
    "bytes one search device may hold (vectors + scores), e.g. 40gb; a larger index is refused; on CPU it also lets an index past the host's available memory be mapped anyway (0 = no limit)",
  ),
  hnswEfSearch: optional('hnsw_ef_search', integer(1), "HNSW index: efSearch, candidates explored per query (default: the file's value, as faiss.read_index)"),
  ivfNprobe: optional('ivf_nprobe', integer(1), "IVF index: nprobe, lists scanned per query, at most nlist (default: the file's value, as faiss.read_index)"),
  swapMode: setting(
    'swap_mode',
    oneOf<SwapModeSetting>(['auto', 'side-by-side', 'replace']),
    'auto',
    'how an activation makes room: side-by-side (the new version loads beside the serving one) | replace (the serving one is closed first; requests wait) | auto (side by side when both, encoders included, fit each device under --search_memory_budget and the free memory nvidia-smi reports, and the host)',
  ),
  searchDevices: optional(
    'search_devices',
    deviceList,
    'CUDA devices sharing the index rows on the GPU path, e.g. 0,1 (default --device_id)',
  ),
  // benchmarks/results/encoder-throughput.json: e5-base on 2 cores encodes 512 queries at 11.3
  // queries/s in length-sorted runs of 32 rows, 9.1 with 64 and 6.4 with 128.
  encoderBatchRows: setting(
    'encoder_batch_rows',
    integer(1),
    32,
    'most rows in one ONNX Runtime run (queries are grouped by token length into runs)',
  ),
  // Search-R1's retrieval_rerank_server.py spellings and defaults.
  rerankerModel: optional(
    'reranker_model',
    text,
    'cross-encoder folder (reranker.json), or a Hugging Face BertForSequenceClassification checkpoint with one label (converted once): /retrieve retrieves, then reranks; POST /rerank',
  ),
  retrievalTopk: setting('retrieval_topk', integer(1), 10, 'with --reranker_model: passages retrieved per query before reranking, when a request sends no topk_retrieval'),
  rerankingTopk: setting('reranking_topk', integer(1), 3, 'with --reranker_model: passages kept per query after reranking, when a request sends no topk_rerank (or topk)'),
  rerankerBatchSize: setting('reranker_batch_size', integer(1), 32, 'most (query, passage) pairs in one reranker ONNX Runtime run (pairs are grouped by token length into runs)'),
  rerankerPrecision: setting(
    'reranker_precision',
    oneOf<CpuPrecision>(['fp32', 'int8']),
    'fp32',
    'CPU reranker graph: fp32|int8 (int8 = model.int8.onnx, built on checkpoint conversion; CUDA runs fp16)',
  ),
} satisfies Record<string, Setting<unknown>>;

type Settings = typeof SETTINGS;
type ValueOf<S> = S extends Setting<infer T> ? T : never;
type HasDefault = { fallback: unknown };

/** Everything `serve` needs, after defaults < config file < environment < flags: a field per setting, optional where it has no default. */
export type ServiceConfig = {
  [K in keyof Settings as Settings[K] extends HasDefault ? K : never]: ValueOf<Settings[K]>;
} & {
  [K in keyof Settings as Settings[K] extends HasDefault ? never : K]?: ValueOf<Settings[K]>;
};

type SettingKey = keyof ServiceConfig;

const SETTING_LIST = Object.entries(SETTINGS) as [SettingKey, Setting<unknown>][];

export const CONFIG_DEFAULTS = Object.fromEntries(
  SETTING_LIST.flatMap(([key, { fallback }]) => (fallback === undefined ? [] : [[key, fallback]])),
) as ServiceConfig;

const CONFIG_FILE_FLAG = 'config';

export function envName(flag: string): string {
  return `RETRIEVER_${flag.toUpperCase()}`;
}

/**
 * Registers every serve option (Search-R1 snake_case spelling plus a hidden dash alias) on a
 * commander command, so the CLI's `serve` subcommand and `parseServeArgs` share one definition.
 */
export function addServeOptions(command: Command): Command {
  command.option(`--${CONFIG_FILE_FLAG} <file>`, `JSON or YAML file of settings (env ${envName(CONFIG_FILE_FLAG)})`);
  for (const [, setting] of SETTING_LIST) {
    const { flag, type, fallback, whenGiven, doc } = setting;
    const valued = whenGiven === undefined;
    const shown = valued && fallback !== undefined ? `default ${type.show?.(fallback) ?? String(fallback)}; ` : '';
    command.addOption(new Option(`--${flag}${valued ? ' <value>' : ''}`, `${doc} (${shown}env ${envName(flag)})`));
  }
  return addSpellingAliases(command);
}

type Layer = Partial<Record<SettingKey, unknown>>;

/** The value `raw` spells, or a bad_request naming `source` (a flag, variable or file key). */
function read<T>(type: ValueType<T>, raw: string, source: string): T {
  const value = type.read(raw);
  if (value === undefined) {
    throw badRequest(`${source} ${type.refusal ?? `must be ${type.expected}, got ${JSON.stringify(raw)}`}`, { field: source });
  }
  return value;
}

function flagLayer(command: Command): Layer {
  adoptAliasValues(command);
  const layer: Layer = {};
  for (const [key, setting] of SETTING_LIST) {
    const option = command.options.find((candidate) => candidate.long === `--${setting.flag}`);
    if (!option || command.getOptionValueSource(option.attributeName()) !== 'cli') continue;
    layer[key] = setting.whenGiven ?? read(setting.type, String(command.getOptionValue(option.attributeName())), `--${setting.flag}`);
  }
  return layer;
}

function envLayer(env: NodeJS.ProcessEnv): Layer {
  const layer: Layer = {};
  for (const [key, setting] of SETTING_LIST) {
    const name = envName(setting.flag);
    const raw = env[name];
    if (raw === undefined) continue;
    layer[key] = fromText(setting, raw, name);
  }
  return layer;
}

/** A switch named `no_x` given as `true` in env or a file means the same as passing `--no_x`. */
function fromText(setting: Setting<unknown>, raw: string, source: string): unknown {
  if (setting.whenGiven === undefined) return read(setting.type, raw, source);
  return read(boolean, raw, source) ? setting.whenGiven : !setting.whenGiven;
}

/** Keys may be spelled as the flag (`index_path`), its dash alias, or the config field (`indexPath`). */
function fileLayer(file: string): Layer {
  let parsed: unknown;
  try {
    const content = readFileSync(file, 'utf8');
    parsed = /\.ya?ml$/i.test(file) ? loadYaml(content) : JSON.parse(content);
  } catch (error) {
    throw badRequest(`--${CONFIG_FILE_FLAG} ${file}: ${(error as Error).message}`, { field: `--${CONFIG_FILE_FLAG}` });
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw badRequest(`--${CONFIG_FILE_FLAG} ${file}: expected a mapping of settings`, { field: `--${CONFIG_FILE_FLAG}` });
  }
  const layer: Layer = {};
  for (const [name, value] of Object.entries(parsed)) {
    const entry = SETTING_LIST.find(([key, s]) => s.flag === name || dashed(s.flag) === name || key === name);
    const source = `${path.basename(file)}: ${name}`;
    if (!entry) throw badRequest(`${source} is not a setting`, { field: name });
    if (value === null || typeof value === 'object') {
      throw badRequest(`${source} must be a string, number or boolean`, { field: name });
    }
    const [key, setting] = entry;
    layer[key] = fromText(setting, String(value), source);
  }
  return layer;
}

function checkRerankCounts(config: ServiceConfig): void {
  if (config.retrievalTopk > config.maxTopk) {
    throw badRequest(`--retrieval_topk (${config.retrievalTopk}) must not exceed --max_topk (${config.maxTopk})`, { field: '--retrieval_topk' });
  }
  if (config.rerankingTopk > config.retrievalTopk) {
    throw badRequest(`--reranking_topk (${config.rerankingTopk}) must not exceed --retrieval_topk (${config.retrievalTopk}): reranking keeps passages out of those retrieved`, {
      field: '--reranking_topk',
    });
  }
}

function checkConsistency(config: ServiceConfig): void {
  if (config.replica && (config.trainingToken !== undefined || !config.trainingAuth)) {
    const given = config.trainingToken !== undefined ? '--training_token' : '--no_training_auth';
    throw badRequest(`--replica serves no training routes (the writer does): drop ${given}`, { field: '--replica' });
  }
  if (config.topk > config.maxTopk) {
    throw badRequest(`--topk (${config.topk}) must not exceed --max_topk (${config.maxTopk})`, { field: '--topk' });
  }
  // Only a reranker reads these two; without one their defaults must not refuse a small --max_topk.
  if (config.rerankerModel !== undefined) checkRerankCounts(config);
}

/** Merges the layers of an already-parsed command (the CLI's `serve`) with env and config file. */
export function resolveServeConfig(command: Command, env: NodeJS.ProcessEnv): ServiceConfig {
  const configFile = (command.getOptionValue(CONFIG_FILE_FLAG) as string | undefined) ?? env[envName(CONFIG_FILE_FLAG)];
  const config = {
    ...CONFIG_DEFAULTS,
    ...(configFile ? fileLayer(configFile) : {}),
    ...envLayer(env),
    ...flagLayer(command),
  } as ServiceConfig;
  checkConsistency(config);
  return config;
}

/**
 * Parses `serve`'s arguments (without the program name or the subcommand) into one config.
 * Throws ServiceError('bad_request') naming the flag, env variable or file key at fault.
 */
export function parseServeArgs(argv: string[], env: NodeJS.ProcessEnv): ServiceConfig {
  const command = addServeOptions(new Command('serve'))
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  try {
    command.parse(argv, { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) throw badRequest(error.message.replace(/^error: /, ''));
    throw error;
  }
  return resolveServeConfig(command, env);
}

/** `--faiss_gpu` (Search-R1's switch) or `--device cuda` put search on the GPU too. */
export function searchOnGpu(config: ServiceConfig): boolean {
  return config.faissGpu || config.device === 'cuda';
}

/** Lines to log at startup about flags that are accepted but change nothing. */
export function compatibilityNotices(config: ServiceConfig): string[] {
  const notices: string[] = [];
  const faiss = config.searchBackend === 'faiss';
  if (config.faissGpu && faiss) {
    notices.push('--faiss_gpu with --search_backend faiss: faiss-node searches on CPU only; the onnx backend searches on the GPU');
  }
  // --search_dtype auto is fp16 on the GPU and fp32 (exact) on CPU; faiss is exact fp32 too.
  const fp32 = faiss || config.searchDtype === 'fp32' || (config.searchDtype === 'auto' && !searchOnGpu(config));
  if (config.searchRescore > 0 && fp32) {
    notices.push(
      `--search_rescore ${config.searchRescore} is ignored: this search runs in fp32, already exact; it rescores fp16 candidates (--search_dtype fp16, or auto on the GPU)`,
    );
  }
  if (config.retrieverName?.toLowerCase() === 'bm25') {
    notices.push(
      `--retriever_name ${config.retrieverName}: BM25 is not served; this service retrieves with the dense encoder of --retriever_model over its FAISS-format index only`,
    );
  } else if (config.retrieverName !== undefined) {
    notices.push(
      `--retriever_name ${config.retrieverName}: accepted for compatibility; query and passage prefixes come from the model's retriever.json manifest, not from the name`,
    );
  }
  return notices;
}
