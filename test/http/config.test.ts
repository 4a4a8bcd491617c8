import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { addServeOptions, CONFIG_DEFAULTS, compatibilityNotices, parseServeArgs, SETTINGS } from '../../src/config.js';
import { PROJECT_ROOT } from '../../src/project-files.js';
import { ServiceError } from '../../src/errors.js';

function rejects(run: () => unknown, field: RegExp): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof ServiceError, `expected ServiceError, got ${String(error)}`);
    assert.equal(error.code, 'bad_request');
    assert.match(error.message, field);
    return true;
  });
}

/** The default `serve --help` shows for a valued setting, or undefined where it shows none. */
function helpDefault(flag: string): string | undefined {
  const help = addServeOptions(new Command('serve')).helpInformation().replace(/\s+/g, ' ');
  return new RegExp(`--${flag} <value> (?:(?! --).)*?\\(default (\\S+);`).exec(help)?.[1];
}

describe('serve config', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'serve-config-'));
  });

  it('defaults: 0.0.0.0:8000, topk 3, limits sized for a GRPO batch, queries not logged', () => {
    const config = parseServeArgs([], {});
    assert.deepEqual(config, CONFIG_DEFAULTS);
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.port, 8000);
    assert.equal(config.topk, 3);
    assert.equal(config.device, 'auto');
    assert.equal(config.maxQueries, 4096);
    assert.equal(config.bodyLimit, '64mb');
    assert.equal(config.logQueries, false);
    assert.equal(config.trainingAuth, true);
  });

  it("accepts retrieval_server.py's launch line verbatim", () => {
    const config = parseServeArgs(
      [
        '--index_path', 'e5_Flat.index', '--corpus_path', 'wiki-18.jsonl', '--topk', '3',
        '--retriever_name', 'e5', '--retriever_model', 'models/e5', '--faiss_gpu',
      ],
      {},
    );
    assert.equal(config.indexPath, 'e5_Flat.index');
    assert.equal(config.corpusPath, 'wiki-18.jsonl');
    assert.equal(config.topk, 3);
    assert.equal(config.retrieverName, 'e5');
    assert.equal(config.retrieverModel, 'models/e5');
    assert.equal(config.faissGpu, true);
    assert.deepEqual(compatibilityNotices(config), [
      "--retriever_name e5: accepted for compatibility; query and passage prefixes come from the model's retriever.json manifest, not from the name",
    ]);
  });

  it('accepts dash spellings as aliases, and rejects the two spellings disagreeing', () => {
    const config = parseServeArgs(['--index-path', 'a.index', '--max-topk', '50', '--no-training-auth', '--strict-device'], {});
    assert.equal(config.indexPath, 'a.index');
    assert.equal(config.maxTopk, 50);
    assert.equal(config.trainingAuth, false);
    assert.equal(config.strictDevice, true);
    assert.equal(parseServeArgs(['--no_training_auth'], {}).trainingAuth, false);
    rejects(() => parseServeArgs(['--topk', '3', '--topk', '3', '--max_topk', '5', '--max-topk', '6'], {}), /--max_topk and --max-topk/);
  });

  it("takes a dash spelling's value as the documented flag's, as every other command does (one alias check: adoptAliasValues)", () => {
    assert.equal(parseServeArgs(['--max-topk', '7', '--max_topk', '7'], {}).maxTopk, 7);
    rejects(() => parseServeArgs(['--max-topk', 'many'], {}), /^--max_topk must be/);
  });

  it("shows each default in serve --help as README's configuration table does", async () => {
    const readme = await readFile(path.join(PROJECT_ROOT, 'README.md'), 'utf8');
    const rows = [...readme.matchAll(/^\| `--([a-z_]+)` \| `?([^|`]+?)`? \|/gm)].map(([, flag, value]) => [flag!, value!] as const);
    const compared = rows.flatMap(([flag, readmeDefault]) => {
      const shown = helpDefault(flag);
      return shown ? [[flag, shown, readmeDefault]] : [];
    });
    assert.ok(compared.some(([flag]) => flag === 'result_cache_size'), JSON.stringify(compared));
    for (const [flag, help, readme] of compared) assert.equal(help, readme, `--${flag}: serve --help says ${help}, README says ${readme}`);
  });

  it("README's configuration table names every setting, with the default serve --help shows (off for a switch)", async () => {
    const readme = await readFile(path.join(PROJECT_ROOT, 'README.md'), 'utf8');
    const rows = [...readme.matchAll(/^\| (`--.+?) \| (.+?) \|/gm)].map(([, flags, defaults]) => ({
      flags: [...flags!.matchAll(/`--([a-z0-9_]+)`/g)].map(([, flag]) => flag!),
      defaults: defaults!.split(', ').map((value) => value.replaceAll('`', '')),
    }));
    const documented = new Set(rows.flatMap((row) => row.flags));
    assert.deepEqual(Object.values(SETTINGS).map(({ flag }) => flag).filter((flag) => !documented.has(flag)), []);
    // A row of several flags gives their defaults in order, or one phrase for all of them.
    const compared = rows.flatMap(({ flags, defaults }) => (flags.length === defaults.length ? flags.map((flag, i) => [flag, defaults[i]!] as const) : []));
    const switches = new Set(Object.values(SETTINGS).flatMap((setting) => ('whenGiven' in setting ? [setting.flag] : [])));
    let checked = 0;
    for (const [flag, readmeDefault] of compared) {
      const shown = switches.has(flag) ? 'off' : helpDefault(flag);
      if (shown === undefined) continue;
      assert.equal(readmeDefault, shown, `--${flag}: README says ${readmeDefault}, serve --help ${shown}`);
      checked += 1;
    }
    assert.ok(checked >= 25, `only ${checked} defaults compared`);
  });

  it('layers defaults < config file < environment < flags', async () => {
    const file = path.join(dir, 'serve.yaml');
    await writeFile(file, 'port: 9100\ntopk: 5\nmax_queries: 100\nlogQueries: true\ndevice: cpu\n');
    const env = { RETRIEVER_CONFIG: file, RETRIEVER_TOPK: '7', RETRIEVER_MAX_QUERIES: '200', RETRIEVER_HOST: '127.0.0.1' };
    const config = parseServeArgs(['--topk', '9'], env);
    assert.equal(config.port, 9100, 'file over default');
    assert.equal(config.device, 'cpu', 'file over default');
    assert.equal(config.logQueries, true, 'file switch');
    assert.equal(config.maxQueries, 200, 'env over file');
    assert.equal(config.host, '127.0.0.1', 'env over default');
    assert.equal(config.topk, 9, 'flag over env and file');
    assert.equal(config.maxTopk, 1000, 'default where nothing is said');
  });

  it('reads a JSON config file named by --config', async () => {
    const file = path.join(dir, 'serve.json');
    await writeFile(file, JSON.stringify({ 'body-limit': '2mb', faiss_gpu: true, request_timeout_ms: 0 }));
    const config = parseServeArgs(['--config', file], {});
    assert.equal(config.bodyLimit, '2mb');
    assert.equal(config.faissGpu, true);
    assert.equal(config.requestTimeoutMs, 0);
  });

  it('reads switches from the environment: true/false, 1/0', () => {
    const env = { RETRIEVER_LOG_QUERIES: '1', RETRIEVER_NO_TRAINING_AUTH: 'true', RETRIEVER_FAISS_GPU: 'false' };
    const config = parseServeArgs([], env);
    assert.equal(config.logQueries, true);
    assert.equal(config.trainingAuth, false);
    assert.equal(config.faissGpu, false);
  });

  it('takes the int8 precision and its weight bits from flags, environment and file', async () => {
    assert.equal(CONFIG_DEFAULTS.precision, 'fp32');
    assert.equal(CONFIG_DEFAULTS.int8WeightBits, 'auto');
    const flags = parseServeArgs(['--precision', 'int8', '--int8_weight_bits', '7'], {});
    assert.equal(flags.precision, 'int8');
    assert.equal(flags.int8WeightBits, 7);
    const env = parseServeArgs([], { RETRIEVER_PRECISION: 'int8', RETRIEVER_INT8_WEIGHT_BITS: '8' });
    assert.equal(env.precision, 'int8');
    assert.equal(env.int8WeightBits, 8);
    const file = path.join(dir, 'int8.yaml');
    await writeFile(file, 'precision: int8\nint8_weight_bits: auto\n');
    const fromFile = parseServeArgs(['--config', file], {});
    assert.equal(fromFile.precision, 'int8');
    assert.equal(fromFile.int8WeightBits, 'auto');
    rejects(() => parseServeArgs(['--precision', 'int4'], {}), /--precision must be one of fp32, int8, got "int4"/);
    rejects(() => parseServeArgs(['--int8_weight_bits', '6'], {}), /--int8_weight_bits must be one of auto, 8, 7, got "6"/);
  });

  it('search backend settings: defaults, parsing, and the faiss-on-GPU notice', () => {
    const defaults = parseServeArgs([], {});
    assert.equal(defaults.searchBackend, 'auto');
    assert.equal(defaults.searchShardRows, 524_288);
    assert.equal(defaults.searchDtype, 'auto');
    assert.equal(defaults.searchRescore, 0);
    assert.equal(defaults.searchMemoryBudget, 0);
    assert.equal(defaults.searchDevices, undefined);
    const config = parseServeArgs(
      ['--search_backend', 'onnx', '--search_shard_rows', '1000', '--search_dtype', 'fp16', '--search_rescore', '32', '--search_memory_budget', '40gb', '--search_devices', '0, 2'],
      {},
    );
    assert.equal(config.searchBackend, 'onnx');
    assert.equal(config.searchShardRows, 1000);
    assert.equal(config.searchDtype, 'fp16');
    assert.equal(config.searchRescore, 32);
    assert.equal(config.searchMemoryBudget, 40 * 2 ** 30);
    assert.deepEqual(config.searchDevices, [0, 2]);
    assert.equal(parseServeArgs([], { RETRIEVER_SEARCH_BACKEND: 'faiss' }).searchBackend, 'faiss');
    assert.equal(defaults.swapMode, 'auto');
    assert.equal(parseServeArgs(['--swap-mode', 'replace'], {}).swapMode, 'replace');
    assert.equal(parseServeArgs([], { RETRIEVER_SWAP_MODE: 'side-by-side' }).swapMode, 'side-by-side');
    rejects(() => parseServeArgs(['--swap_mode', 'swap'], {}), /--swap_mode must be one of auto, side-by-side, replace, got "swap"/);
    assert.deepEqual(compatibilityNotices(parseServeArgs(['--faiss_gpu'], {})), []);
    // fp16 on the GPU (auto) or asked for: rescoring applies.
    assert.deepEqual(compatibilityNotices(parseServeArgs(['--faiss_gpu', '--search_rescore', '16'], {})), []);
    assert.deepEqual(compatibilityNotices(parseServeArgs(['--search_dtype', 'fp16', '--search_rescore', '16'], {})), []);
    assert.deepEqual(compatibilityNotices(parseServeArgs(['--faiss_gpu', '--search_backend', 'faiss'], {})), [
      '--faiss_gpu with --search_backend faiss: faiss-node searches on CPU only; the onnx backend searches on the GPU',
    ]);
  });

  it('rejects bad search backend settings, naming the flag', () => {
    rejects(() => parseServeArgs(['--search_backend', 'gpu'], {}), /--search_backend must be one of faiss, onnx, auto, got "gpu"/);
    rejects(() => parseServeArgs(['--search_shard_rows', '0'], {}), /--search_shard_rows must be an integer between 1/);
    rejects(() => parseServeArgs(['--search_dtype', 'int8'], {}), /--search_dtype must be one of fp32, fp16, auto/);
    rejects(() => parseServeArgs(['--search_rescore', '-1'], {}), /--search_rescore must be an integer between 0/);
    rejects(() => parseServeArgs(['--search_memory_budget', 'lots'], {}), /--search_memory_budget must be a size/);
    rejects(() => parseServeArgs(['--search_devices', '0,0'], {}), /--search_devices must be distinct device ordinals/);
    rejects(() => parseServeArgs(['--search_devices', '1,'], {}), /--search_devices must be distinct device ordinals/);
    rejects(() => parseServeArgs([], { RETRIEVER_SEARCH_DEVICES: 'gpu0' }), /RETRIEVER_SEARCH_DEVICES must be distinct/);
  });

  it('names the flag, variable or file key at fault', async () => {
    rejects(() => parseServeArgs(['--port', 'eighty'], {}), /--port must be an integer between 0 and 65535, got "eighty"/);
    rejects(() => parseServeArgs(['--port', '70000'], {}), /--port/);
    rejects(() => parseServeArgs(['--topk', '2.5'], {}), /--topk must be an integer/);
    rejects(() => parseServeArgs(['--topk', '0'], {}), /--topk/);
    rejects(() => parseServeArgs(['--device', 'tpu'], {}), /--device must be one of cuda, cpu, auto, got "tpu"/);
    rejects(() => parseServeArgs(['--body_limit', 'lots'], {}), /--body_limit must be a size/);
    rejects(() => parseServeArgs(['--topk', '20', '--max_topk', '10'], {}), /--topk \(20\) must not exceed --max_topk \(10\)/);
    rejects(() => parseServeArgs(['--bogus'], {}), /unknown option '--bogus'/);
    rejects(() => parseServeArgs(['--index_path'], {}), /--index_path/);
    rejects(() => parseServeArgs([], { RETRIEVER_MAX_QUERIES: '-1' }), /RETRIEVER_MAX_QUERIES must be an integer/);
    rejects(() => parseServeArgs([], { RETRIEVER_LOG_QUERIES: 'maybe' }), /RETRIEVER_LOG_QUERIES must be true or false/);
    const file = path.join(dir, 'bad.yaml');
    await writeFile(file, 'max_topk: many\n');
    rejects(() => parseServeArgs(['--config', file], {}), /bad\.yaml: max_topk must be an integer/);
    await writeFile(file, 'colour: blue\n');
    rejects(() => parseServeArgs(['--config', file], {}), /bad\.yaml: colour is not a setting/);
    rejects(() => parseServeArgs(['--config', path.join(dir, 'missing.json')], {}), /--config .*missing\.json/);
  });
});
