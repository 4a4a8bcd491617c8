import { readFileSync } from 'node:fs';
import path from 'node:path';
import bytes from 'bytes';
import { Command, CommanderError, Option } from 'commander';
import { load as loadYaml } from 'js-yaml';
import type { WeightBitsSetting } from './onnx/int8-quantization.js';
import type { CpuPrecision } from './encoder/session.js';
import { badRequest } from './errors.js';
import { DEFAULT_SHARD_ROWS } from './index/onnx-search-protocol.js';
import type { SearchBackendChoice, SearchPrecisionChoice } from './index/open-index.js';

export type DeviceChoice = 'cuda' | 'cpu' | 'auto';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** Everything `serve` needs, after defaults < config file < environment < flags. */
export interface ServiceConfig {
  /** FAISS Flat index file (Search-R1 `--index_path`). */
  indexPath?: string;
  /** wiki18-format JSONL corpus (Search-R1 `--corpus_path`). */
  corpusPath?: string;
  /** What a request's missing/null/0 `topk` means. */
  topk: number;
  /** Accepted for Search-R1 compatibility only: prefixes come from the model's retriever.json. */
  retrieverName?: string;
  /** Model folder holding retriever.json (Search-R1 `--retriever_model`). */
  retrieverModel?: string;
  /** Search on CUDA (Search-R1's flag): the ONNX backend's fp16 GPU path. */
  faissGpu: boolean;
  host: string;
  port: number;
  device: DeviceChoice;
  deviceId: number;
  /** Fail instead of falling back to CPU when the requested device cannot run. */
  strictDevice: boolean;
  /** `int8` encodes on CPU with the model's quantized graph (model.int8.onnx). */
  precision: CpuPrecision;
  /** Weight bits of int8 graphs built by checkpoint conversion; `auto` decides by the CPU's VNNI/AMX. */
  int8WeightBits: WeightBitsSetting;
  intraOpThreads?: number;
  interOpThreads?: number;
  maxQueries: number;
  maxQueryChars: number;
  maxTopk: number;
  /** JSON body limit in body-parser's notation (`64mb`). */
  bodyLimit: string;
  dataDir: string;
  /** Corpus row offsets file; the corpus module picks a path beside the corpus when absent. */
  sidecarPath?: string;
  logQueries: boolean;
  logLevel: LogLevel;
  trainingToken?: string;
  trainingAuth: boolean;
  /** 0 disables the per-request deadline. */
  requestTimeoutMs: number;
  /** Most queries merged into one engine batch across requests; 1 turns merging off. */
  batchMaxQueries: number;
  /** Most estimated tokens (characters / 4) merged into one engine batch. */
  batchMaxTokens: number;
  /** How long an idle batcher lingers for more requests; 0 runs at once. */
  batchMaxWaitMs: number;
  /** Queries allowed to wait for a batch; beyond that a request is refused with 503 + Retry-After. */
  queueMaxQueries: number;
  /** Result cache memory bound in bytes; 0 turns the cache off. */
  resultCacheBytes: number;
  /** `auto` picks the ONNX backend (see src/index/open-index.ts). */
  searchBackend: SearchBackendChoice;
  /** Rows per Gemm of the ONNX backend. */
  searchShardRows: number;
  /** `auto`: fp16 on GPU, fp32 on CPU. */
  searchDtype: SearchPrecisionChoice;
  /** fp16 candidates per query rescored exactly in fp32; 0 turns rescoring off. */
  searchRescore: number;
  /** Bytes one search device may hold; 0 means no limit. */
  searchMemoryBudget: number;
  /** HNSW efSearch; absent: the value stored in the index file (as the reference's faiss.read_index). */
  hnswEfSearch?: number;
  /** IVF nprobe; absent: the value stored in the index file. */
  ivfNprobe?: number;
  /** CUDA devices sharing the index rows on the GPU path; default `[deviceId]`. */
  searchDevices?: number[];
  /** Most rows in one ONNX Runtime run; the encoder sorts each batch's queries by token length and cuts them into runs of at most this size. */
  encoderBatchRows: number;
}

export const CONFIG_DEFAULTS: ServiceConfig = {
  topk: 3,
  faissGpu: false,
  host: '0.0.0.0',
  port: 8000,
  device: 'auto',
  deviceId: 0,
  strictDevice: false,
  precision: 'fp32',
  int8WeightBits: 'auto',
  // GRPO with n=5 over a 512-question batch sends 2,560 queries in one POST; leave headroom.
  maxQueries: 4096,
  maxQueryChars: 4096,
  maxTopk: 1000,
  // 2,560 queries × 4,096 chars of JSON-escaped text (up to 6 bytes per \uXXXX char in the worst
  // case is 63 MB; real text is far smaller) fits under 64 MB.
  bodyLimit: '64mb',
  dataDir: 'data',
  logQueries: false,
  logLevel: 'info',
  trainingAuth: true,
  requestTimeoutMs: 300_000,
  // Under many single-query clients batches form while the previous one runs; a lone big
  // request (Search-R1's turn) starts at once and runs whole, so neither shape waits.
  batchMaxQueries: 256,
  batchMaxTokens: 16_384,
  batchMaxWaitMs: 0,
  // Room for three GRPO-sized (2,560-query) turns, or thousands of single-query clients.
  queueMaxQueries: 8192,
  // Results of a version never change; GRPO rollouts repeat their questions' first queries.
  resultCacheBytes: 64 * 2 ** 20,
  // benchmarks/results/encoder-throughput.json: e5-base on 2 cores encodes 512 queries at 11.3
  // queries/s in length-sorted runs of 32 rows, 9.1 with 64 and 6.4 with 128.
  encoderBatchRows: 32,
  searchBackend: 'auto',
  searchShardRows: DEFAULT_SHARD_ROWS,
  searchDtype: 'auto',
  searchRescore: 0,
  searchMemoryBudget: 0,
};

type Parser = (raw: string, source: string) => unknown;

interface Setting {
  key: keyof ServiceConfig;
  /** Search-R1 spelling (snake_case); the dash spelling is accepted as an alias. */
  flag: string;
  description: string;
  /** Present for valued options; absent for switches, which take `valueWhenGiven`. */
  parse?: Parser;
  valueWhenGiven?: unknown;
}

function integer(min: number, max = Number.MAX_SAFE_INTEGER): Parser {
  return (raw, source) => {
    const value = Number(raw.trim());
    if (raw.trim() === '' || !Number.isInteger(value) || value < min || value > max) {
      throw badRequest(`${source} must be an integer between ${min} and ${max}, got ${JSON.stringify(raw)}`, {
        field: source,
      });
    }
    return value;
  };
}

function text(raw: string, source: string): string {
  if (raw === '') throw badRequest(`${source} must not be empty`, { field: source });
  return raw;
}

function oneOf<T extends string>(choices: readonly T[]): Parser {
  return (raw, source) => {
    if (!choices.includes(raw as T)) {
      throw badRequest(`${source} must be one of ${choices.join(', ')}, got ${JSON.stringify(raw)}`, { field: source });
    }
    return raw;
  };
}

function weightBits(raw: string, source: string): WeightBitsSetting {
  const parsed = oneOf(['auto', '8', '7'])(raw, source);
  return parsed === 'auto' ? 'auto' : (Number(parsed) as 8 | 7);
}

function byteSize(raw: string, source: string): string {
  const parsed = bytes.parse(raw);
  if (parsed === null || !Number.isFinite(parsed) || parsed <= 0) {
    throw badRequest(`${source} must be a size such as 64mb or 1048576, got ${JSON.stringify(raw)}`, { field: source });
  }
  return raw;
}

/** A byte count in `bytes` notation (`64mb`), where 0 is allowed and means "off". */
function byteCount(raw: string, source: string): number {
  const parsed = bytes.parse(raw);
  if (parsed === null || !Number.isFinite(parsed) || parsed < 0) {
    throw badRequest(`${source} must be a size such as 64mb, 0 or 1048576, got ${JSON.stringify(raw)}`, { field: source });
  }
  return Math.floor(parsed);
}

/** Comma-separated device ordinals (`0,1,2,3`), each at most once. */
/** Distinct device ordinals separated by commas (`0,1`), or undefined when `raw` is not that. */
export function deviceOrdinals(raw: string): number[] | undefined {
  const parts = raw.split(',').map((part) => part.trim());
  const ordinals = parts.map((part) => Number(part));
  if (parts.some((part) => part === '') || ordinals.some((n) => !Number.isInteger(n) || n < 0) || new Set(ordinals).size !== ordinals.length) {
    return undefined;
  }
  return ordinals;
}

function deviceList(raw: string, source: string): number[] {
  const ordinals = deviceOrdinals(raw);
  if (!ordinals) {
    throw badRequest(`${source} must be distinct device ordinals separated by commas, such as 0,1, got ${JSON.stringify(raw)}`, { field: source });
  }
  return ordinals;
}

/** Switch values as they arrive from environment variables and config files. */
function boolean(raw: string, source: string): boolean {
  const lowered = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(lowered)) return true;
  if (['0', 'false', 'no', 'off', ''].includes(lowered)) return false;
  throw badRequest(`${source} must be true or false, got ${JSON.stringify(raw)}`, { field: source });
}

const SETTINGS: readonly Setting[] = [
  { key: 'indexPath', flag: 'index_path', parse: text, description: 'FAISS index file: Flat, HNSW, IVF, SQ, PQ, or an IDMap of one' },
  { key: 'corpusPath', flag: 'corpus_path', parse: text, description: 'JSONL corpus, line i = index row i' },
  { key: 'topk', flag: 'topk', parse: integer(1), description: 'default topk when a request omits it or sends null/0' },
  {
    key: 'retrieverName',
    flag: 'retriever_name',
    parse: text,
    description: 'accepted for Search-R1 compatibility; prefixes come from retriever.json',
  },
  { key: 'retrieverModel', flag: 'retriever_model', parse: text, description: 'model folder with retriever.json' },
  {
    key: 'faissGpu',
    flag: 'faiss_gpu',
    valueWhenGiven: true,
    description: 'search on the GPU (ONNX backend, fp16 copy of the index on CUDA)',
  },
  { key: 'host', flag: 'host', parse: text, description: 'address to listen on' },
  { key: 'port', flag: 'port', parse: integer(0, 65535), description: 'port to listen on (0 = any free port)' },
  { key: 'device', flag: 'device', parse: oneOf(['cuda', 'cpu', 'auto']), description: 'encoder device: cuda|cpu|auto' },
  { key: 'deviceId', flag: 'device_id', parse: integer(0), description: 'CUDA device ordinal' },
  {
    key: 'strictDevice',
    flag: 'strict_device',
    valueWhenGiven: true,
    description: 'fail instead of falling back to CPU when the device cannot run',
  },
  {
    key: 'precision',
    flag: 'precision',
    parse: oneOf(['fp32', 'int8']),
    description: 'CPU encoder graph: fp32|int8 (int8 = model.int8.onnx, built on checkpoint conversion)',
  },
  {
    key: 'int8WeightBits',
    flag: 'int8_weight_bits',
    parse: weightBits,
    description: 'int8 weight bits: auto|8|7 (auto: 7 on x86 CPUs without VNNI/AMX)',
  },
  { key: 'intraOpThreads', flag: 'intra_op_threads', parse: integer(1), description: 'ONNX Runtime intra-op threads' },
  { key: 'interOpThreads', flag: 'inter_op_threads', parse: integer(1), description: 'ONNX Runtime inter-op threads' },
  { key: 'maxQueries', flag: 'max_queries', parse: integer(1), description: 'most queries in one request' },
  { key: 'maxQueryChars', flag: 'max_query_chars', parse: integer(1), description: 'most characters in one query' },
  { key: 'maxTopk', flag: 'max_topk', parse: integer(1), description: 'largest topk a request may ask for' },
  { key: 'bodyLimit', flag: 'body_limit', parse: byteSize, description: 'largest JSON request body (e.g. 64mb)' },
  { key: 'dataDir', flag: 'data_dir', parse: text, description: 'folder for service state' },
  { key: 'sidecarPath', flag: 'sidecar_path', parse: text, description: 'corpus row offsets file' },
  { key: 'logQueries', flag: 'log_queries', valueWhenGiven: true, description: 'include query text in logs' },
  {
    key: 'logLevel',
    flag: 'log_level',
    parse: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    description: 'log level',
  },
  { key: 'trainingToken', flag: 'training_token', parse: text, description: 'bearer token for the training routes' },
  {
    key: 'trainingAuth',
    flag: 'no_training_auth',
    valueWhenGiven: false,
    description: 'serve the training routes without a token',
  },
  {
    key: 'requestTimeoutMs',
    flag: 'request_timeout_ms',
    parse: integer(0),
    description: 'per-request deadline in ms, answered with 503 (0 = none)',
  },
  {
    key: 'batchMaxQueries',
    flag: 'batch_max_queries',
    parse: integer(1),
    description: 'most queries merged across requests into one encode + search batch (1 = no merging)',
  },
  {
    key: 'batchMaxTokens',
    flag: 'batch_max_tokens',
    parse: integer(1),
    description: 'most estimated tokens (characters / 4) in one merged batch',
  },
  {
    key: 'batchMaxWaitMs',
    flag: 'batch_max_wait_ms',
    parse: integer(0),
    description: 'ms an idle batcher waits for more requests before running (0 = at once)',
  },
  {
    key: 'queueMaxQueries',
    flag: 'queue_max_queries',
    parse: integer(1),
    description: 'queries allowed to wait for a batch; more are refused with 503 + Retry-After',
  },
  {
    key: 'resultCacheBytes',
    flag: 'result_cache_size',
    parse: byteCount,
    description: 'memory bound of the LRU result cache, e.g. 64mb (0 = off)',
  },
  {
    key: 'searchBackend',
    flag: 'search_backend',
    parse: oneOf(['faiss', 'onnx', 'auto']),
    description: 'vector search backend: faiss (faiss-node, CPU, every index type) | onnx (ONNX Runtime, CPU or CUDA, Flat inner product only) | auto (onnx for Flat inner product, faiss for the rest)',
  },
  {
    key: 'searchShardRows',
    flag: 'search_shard_rows',
    parse: integer(1),
    description: 'index rows per matrix product of the onnx backend (scores of a shard: queries × rows floats)',
  },
  {
    key: 'searchDtype',
    flag: 'search_dtype',
    parse: oneOf(['fp32', 'fp16', 'auto']),
    description: 'onnx backend precision: fp32 | fp16 (reads <index>.fp16, built once) | auto (fp16 on GPU, fp32 on CPU)',
  },
  {
    key: 'searchRescore',
    flag: 'search_rescore',
    parse: integer(0),
    description: 'fp16 candidates per query rescored exactly in fp32 from the index file, so scores match faiss (0 = off)',
  },
  {
    key: 'searchMemoryBudget',
    flag: 'search_memory_budget',
    parse: byteCount,
    description: 'bytes one search device may hold (vectors + scores), e.g. 40gb; a larger index is refused (0 = no limit)',
  },
  {
    key: 'hnswEfSearch',
    flag: 'hnsw_ef_search',
    parse: integer(1),
    description: "HNSW index: efSearch, candidates explored per query (default: the file's value, as faiss.read_index)",
  },
  {
    key: 'ivfNprobe',
    flag: 'ivf_nprobe',
    parse: integer(1),
    description: "IVF index: nprobe, lists scanned per query, at most nlist (default: the file's value, as faiss.read_index)",
  },
  {
    key: 'searchDevices',
    flag: 'search_devices',
    parse: deviceList,
    description: 'CUDA devices sharing the index rows on the GPU path, e.g. 0,1 (default --device_id)',
  },
  {
    key: 'encoderBatchRows',
    flag: 'encoder_batch_rows',
    parse: integer(1),
    description: 'most rows in one ONNX Runtime run (queries are grouped by token length into runs)',
  },
];

const CONFIG_FILE_FLAG = 'config';

export function envName(flag: string): string {
  return `RETRIEVER_${flag.toUpperCase()}`;
}

function dashed(flag: string): string {
  return flag.replaceAll('_', '-');
}

/** `index_path` ↔ `index-path`: Search-R1 writes flags with underscores, most CLIs with dashes. */
function otherSpelling(flag: string): string {
  return flag.includes('_') ? dashed(flag) : flag.replaceAll('-', '_');
}

/** The hidden other spelling of an option (same value and parser), or undefined when it has a single spelling. */
function spellingAlias(option: Option): Option | undefined {
  const name = option.long?.slice(2);
  if (name === undefined || otherSpelling(name) === name) return undefined;
  const alias = new Option(option.flags.replace(`--${name}`, `--${otherSpelling(name)}`)).hideHelp();
  if (option.parseArg) alias.argParser(option.parseArg);
  return alias;
}

/**
 * Accepts both spellings of every option of `command` (`--batch-size` and `--batch_size`), as
 * `serve` does with its settings: the other spelling is a hidden option whose value is moved to
 * the documented one before the action runs. Call it after the options are declared.
 */
export function acceptBothSpellings(command: Command): Command {
  const pairs = command.options.flatMap((option) => {
    const alias = spellingAlias(option);
    return alias ? [{ option, alias }] : [];
  });
  for (const { alias } of pairs) command.addOption(alias);
  return command.hook('preAction', (_hooked, action) => {
    for (const { option, alias } of pairs) {
      if (action.getOptionValueSource(alias.attributeName()) !== 'cli') continue;
      const value: unknown = action.getOptionValue(alias.attributeName());
      if (action.getOptionValueSource(option.attributeName()) === 'cli' && action.getOptionValue(option.attributeName()) !== value) {
        throw badRequest(`${option.long} and ${alias.long} were both given with different values`, { field: option.long });
      }
      action.setOptionValueWithSource(option.attributeName(), value, 'cli');
    }
  });
}

/**
 * Registers every serve option (Search-R1 snake_case spelling plus a hidden dash alias) on a
 * commander command, so the CLI's `serve` subcommand and `parseServeArgs` share one definition.
 */
export function addServeOptions(command: Command): Command {
  command.option(`--${CONFIG_FILE_FLAG} <file>`, `JSON or YAML file of settings (env ${envName(CONFIG_FILE_FLAG)})`);
  for (const setting of SETTINGS) {
    const value = setting.parse ? ' <value>' : '';
    const fallback = CONFIG_DEFAULTS[setting.key];
    // A byte count is shown as README writes it (64mb, and 0 for "off"), not as 67108864.
    const fallbackText =
      setting.parse === byteCount && typeof fallback === 'number' && fallback > 0
        ? (bytes.format(fallback, { unitSeparator: '' })?.toLowerCase() ?? String(fallback))
        : String(fallback);
    const shown = setting.parse && fallback !== undefined ? `default ${fallbackText}; ` : '';
    const help = `${setting.description} (${shown}env ${envName(setting.flag)})`;
    const option = new Option(`--${setting.flag}${value}`, help);
    command.addOption(option);
    const alias = spellingAlias(option);
    if (alias) command.addOption(alias);
  }
  return command;
}

type Layer = Partial<Record<keyof ServiceConfig, unknown>>;

function flagLayer(command: Command): Layer {
  const layer: Layer = {};
  for (const setting of SETTINGS) {
    const spellings = [...new Set([setting.flag, dashed(setting.flag)])];
    const given = spellings.flatMap((spelling) => {
      const option = command.options.find((candidate) => candidate.long === `--${spelling}`);
      if (!option || command.getOptionValueSource(option.attributeName()) !== 'cli') return [];
      return [{ spelling, raw: command.getOptionValue(option.attributeName()) as unknown }];
    });
    if (given.length === 0) continue;
    const values = new Set(given.map((entry) => String(entry.raw)));
    if (values.size > 1) {
      throw badRequest(`--${setting.flag} and --${dashed(setting.flag)} were both given with different values`, {
        field: `--${setting.flag}`,
      });
    }
    const { spelling, raw } = given[0]!;
    layer[setting.key] = setting.parse ? setting.parse(String(raw), `--${spelling}`) : setting.valueWhenGiven;
  }
  return layer;
}

function envLayer(env: NodeJS.ProcessEnv): Layer {
  const layer: Layer = {};
  for (const setting of SETTINGS) {
    const name = envName(setting.flag);
    const raw = env[name];
    if (raw === undefined) continue;
    layer[setting.key] = fromText(setting, raw, name);
  }
  return layer;
}

/** A switch named `no_x` given as `true` in env or a file means the same as passing `--no_x`. */
function fromText(setting: Setting, raw: string, source: string): unknown {
  if (setting.parse) return setting.parse(raw, source);
  return boolean(raw, source) ? setting.valueWhenGiven : !setting.valueWhenGiven;
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
    const setting = SETTINGS.find((s) => s.flag === name || dashed(s.flag) === name || s.key === name);
    const source = `${path.basename(file)}: ${name}`;
    if (!setting) throw badRequest(`${source} is not a setting`, { field: name });
    if (value === null || typeof value === 'object') {
      throw badRequest(`${source} must be a string, number or boolean`, { field: name });
    }
    layer[setting.key] = fromText(setting, String(value), source);
  }
  return layer;
}

function checkConsistency(config: ServiceConfig): void {
  if (config.topk > config.maxTopk) {
    throw badRequest(`--topk (${config.topk}) must not exceed --max_topk (${config.maxTopk})`, { field: '--topk' });
  }
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

/** Lines to log at startup about flags that are accepted but change nothing. */
export function compatibilityNotices(config: ServiceConfig): string[] {
  const notices: string[] = [];
  if (config.faissGpu && config.searchBackend === 'faiss') {
    notices.push('--faiss_gpu with --search_backend faiss: faiss-node searches on CPU only; the onnx backend searches on the GPU');
  }
  if (config.retrieverName !== undefined) {
    notices.push(
      `--retriever_name ${config.retrieverName}: accepted for compatibility; query and passage prefixes come from the model's retriever.json manifest, not from the name`,
    );
  }
  return notices;
}
