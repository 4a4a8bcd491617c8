import { createHash, type Hash } from 'node:crypto';
import { readdir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { CONFIG_FILE, WEIGHTS_FILE, WEIGHTS_INDEX_FILE } from '../encoder/hf-checkpoint.js';
import { chooseWeightBits, type WeightBitsSetting } from '../onnx/int8-quantization.js';
import { makeModel } from '../encoder/make-model.js';
import { MANIFEST_KINDS, type ModelKind } from '../encoder/manifest.js';
import { pathExists } from '../file-io.js';
import { ServiceError } from '../errors.js';

export interface ModelFolderOptions {
  /** Where converted checkpoints are kept between runs. */
  cacheDir: string;
  /** Also build the half-precision graph (worth it only when CUDA may run it). */
  fp16: boolean;
  /** Also build the int8 graph, with weights of these bits (worth it when CPU encodes with precision int8). */
  int8?: WeightBitsSetting;
  /** A retriever's encoder (default) or a reranker's cross-encoder. */
  kind?: ModelKind;
  onConvert?: (checkpointDir: string, modelDir: string) => void;
}

/**
 * `owner/name`, as Search-R1's launch scripts name models (`intfloat/e5-base-v2`): given a model
 * id, the reference downloads it; nothing is downloaded here, and the message should say so.
 */
const HUB_ID = /^[\w.-]+\/[\w.-]+$/;

/**
 * A model folder we can serve for `dir`: the folder itself when it holds our `retriever.json`
 * (`reranker.json` for a reranker); for a Hugging Face/tevatron BERT checkpoint (config.json +
 * model.safetensors, or its shards with model.safetensors.index.json), its ONNX
 * conversion, built once and reused until the checkpoint's files change.
 */
export async function resolveModelFolder(dir: string, options: ModelFolderOptions): Promise<string> {
  const kind = options.kind ?? 'retriever';
  const folder = await modelFolderKind(dir, kind);
  if (folder.kind === 'model') return dir;
  const files = [path.join(dir, CONFIG_FILE), ...folder.weights.map((name) => path.join(dir, name))];
  const key = await checkpointKey(dir, files, { ...options, kind });
  const modelDir = path.join(options.cacheDir, `${path.basename(dir)}-${key}`);
  if (!(await pathExists(path.join(modelDir, MANIFEST_KINDS[kind].file)))) {
    options.onConvert?.(dir, modelDir);
    const conversion = { checkpointDir: dir, outDir: modelDir, fp16: options.fp16, int8: options.int8, reranker: kind === 'reranker', overwrite: true };
    await makeModel(conversion).catch((error: NodeJS.ErrnoException) => {
      // A system error on a path in the cache: it cannot be written (on a read-only file system, mkdir says ENOENT).
      if (!(error.code && error.path?.startsWith(options.cacheDir))) throw error;
      throw new ServiceError(
        'bad_request',
        `cannot convert checkpoint ${dir} into ${options.cacheDir} (${error.message}): give a writable --data_dir, or convert it elsewhere once with \`make-model --checkpoint ${dir} --out <folder>\` and serve that folder`,
      );
    });
  }
  return modelDir;
}

/**
 * What `dir` holds, without converting anything: a model folder of ours of `modelKind`, or a
 * Hugging Face BERT checkpoint with its weight files (sorted); anything else, a folder of the
 * other kind included, is refused naming what was looked for.
 */
export async function modelFolderKind(
  dir: string,
  modelKind: ModelKind = 'retriever',
): Promise<{ kind: 'model' } | { kind: 'checkpoint'; weights: string[] }> {
  const manifestFile = MANIFEST_KINDS[modelKind].file;
  if (HUB_ID.test(dir) && !(await pathExists(dir))) {
    throw new ServiceError(
      'not_found',
      `model folder ${dir} does not exist; if it is a Hugging Face model id, models are not downloaded here: ` +
        `download it first (huggingface-cli download ${dir} --local-dir <folder>) and give that local folder`,
    );
  }
  if (await pathExists(path.join(dir, manifestFile))) return { kind: 'model' };
  const other = (Object.keys(MANIFEST_KINDS) as ModelKind[]).find((kind) => kind !== modelKind)!;
  if (await pathExists(path.join(dir, MANIFEST_KINDS[other].file))) {
    throw new ServiceError('bad_request', `${dir} is a ${other} model folder (${MANIFEST_KINDS[other].file}), not a ${modelKind} (${manifestFile})`);
  }
  const weights = (await readdir(dir).catch(() => [])).filter((name) => name.endsWith('.safetensors') || name === WEIGHTS_INDEX_FILE);
  if (!(await pathExists(path.join(dir, CONFIG_FILE))) || weights.length === 0) {
    throw new ServiceError(
      'not_found',
      `${dir} is neither a model folder (${manifestFile}) nor a Hugging Face BERT checkpoint (${CONFIG_FILE} + ${WEIGHTS_FILE} or ${WEIGHTS_INDEX_FILE})`,
    );
  }
  return { kind: 'checkpoint', weights: weights.sort() };
}

/** Identifies a checkpoint by where it is and its files' sizes and times: hashing 440 MB would cost seconds. */
async function checkpointKey(dir: string, files: readonly string[], graphs: Pick<ModelFolderOptions, 'fp16' | 'int8' | 'kind'>): Promise<string> {
  const hash = createHash('sha256').update(await realpath(dir));
  await hashFileStamps(hash, files);
  // A retriever's conversion keeps its key; a reranker's, with its classifier, gets its own folder.
  if (graphs.kind === 'reranker') hash.update('\0reranker');
  hash.update(graphs.fp16 ? '\0fp16' : '\0fp32');
  // Conversions made without an int8 graph keep their key; each weight width gets its own folder.
  if (graphs.int8 !== undefined) hash.update(`\0int8-${chooseWeightBits(graphs.int8).weightBits}`);
  return hash.digest('hex').slice(0, 12);
}

/**
 * Identifies what a model folder or checkpoint holds now, without reading its weights: its real
 * path and every file's name, size and modification time (subfolders, such as a trainer's
 * optimizer states, are not part of the model). A file rewritten in place changes it.
 */
export async function modelFolderStamp(dir: string): Promise<string> {
  const hash = createHash('sha256').update(await realpath(dir));
  const files: string[] = [];
  for (const name of (await readdir(dir)).sort()) {
    // stat, not the directory entry: a Hugging Face cache snapshot links its files.
    if ((await stat(path.join(dir, name))).isFile()) files.push(path.join(dir, name));
  }
  await hashFileStamps(hash, files);
  return hash.digest('hex');
}

async function hashFileStamps(hash: Hash, files: readonly string[]): Promise<void> {
  for (const file of files) {
    const { size, mtimeMs } = await stat(file);
    hash.update(`\0${path.basename(file)}:${size}:${mtimeMs}`);
  }
}
