import { copyFile, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Express } from 'express';
import request from 'supertest';
import { bertConfigJson } from '../../src/encoder/hf-checkpoint.js';
import { readManifest, type BertArchitecture } from '../../src/encoder/manifest.js';
import { writeSafetensors } from '../../src/encoder/safetensors.js';
import { SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, VOCAB_FILE } from '../../src/encoder/tokenizer-files.js';
import { generateBertWeights } from '../../src/encoder/weights.js';
import { Retriever, type RetrieverFiles } from '../../src/engine/retriever.js';
import type { QueryInput } from '../../src/encoder/embedding-encoder.js';
import type { SearchHit } from '../../src/engine/types.js';
import type { VectorIndexOptions } from '../../src/index/open-index.js';
import type { JobView } from '../../src/versions/index-jobs.js';
import type { VersionRecord } from '../../src/versions/version-registry.js';
import { assertMatchesOpenApi } from './openapi-schemas.js';

export const TOKEN = 'versions-secret-91c2';
export const AUTH = `Bearer ${TOKEN}`;

export function temporaryDir(name: string): Promise<string> {
  return mkdtemp(path.join(tmpdir(), `versions-${name}-`));
}

/**
 * A tevatron-style Hugging Face checkpoint folder (config.json, fp16 model.safetensors, the
 * tokenizer files; no ONNX) with the architecture and tokenizer of `likeModelDir` and fresh
 * weights from `seed`: a "fine-tuned" version of that model; `shape` overrides its sizes.
 */
export async function writeCheckpoint(
  dir: string,
  likeModelDir: string,
  seed: number,
  shape: Partial<BertArchitecture> = {},
): Promise<string> {
  const architecture = { ...(await readManifest(likeModelDir)).architecture, ...shape };
  await mkdir(dir, { recursive: true });
  for (const file of [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE, VOCAB_FILE]) {
    await copyFile(path.join(likeModelDir, file), path.join(dir, file));
  }
  await writeFile(path.join(dir, 'config.json'), JSON.stringify(bertConfigJson(architecture, 'float16')));
  await writeSafetensors(path.join(dir, 'model.safetensors'), generateBertWeights(architecture, seed), 'F16', { format: 'pt' });
  return dir;
}

/** What `POST /retrieve` with `return_scores: true` answers for these hits. */
export function scoredResult(hits: SearchHit[][]): { document: unknown; score: number }[][] {
  return hits.map((list) => list.map((hit) => ({ document: hit.document, score: hit.score })));
}

/** Each version's own answer to each query set, from its own Retriever (its index opened with `index`), loaded and closed here. */
export async function expectedResults(
  versions: Record<string, RetrieverFiles>,
  querySets: readonly (readonly QueryInput[])[],
  topk: number,
  index?: VectorIndexOptions,
): Promise<Map<string, unknown[][][]>> {
  const expected = new Map<string, unknown[][][]>();
  for (const [version, files] of Object.entries(versions)) {
    const retriever = await Retriever.load(files, { version, ...(index && { index }) });
    try {
      const results = [];
      for (const inputs of querySets) results.push(scoredResult((await retriever.encodeSearchFetch(inputs, topk)).hits));
      expected.set(version, results);
    } finally {
      await retriever.close();
    }
  }
  return expected;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `GET /training/jobs/:id` until the job leaves `running`; returns every view seen. */
export async function pollJob(app: Express, jobId: string, until: (job: JobView) => boolean = (job) => job.state !== 'running'): Promise<JobView[]> {
  const seen: JobView[] = [];
  for (;;) {
    const response = await request(app).get(`/training/jobs/${jobId}`).set('Authorization', AUTH).expect(200);
    assertMatchesOpenApi('GET', '/training/jobs/{id}', response);
    const body = response.body as JobView;
    seen.push(body);
    if (until(body)) return seen;
    await sleep(20);
  }
}

/** Polls `GET /training/versions/:id` until `until` holds, by default until its checkpoint's conversion has ended; returns the version then. */
export async function pollVersion(app: Express, id: string, until: (version: VersionRecord) => boolean = (version) => version.state !== 'converting'): Promise<VersionRecord> {
  for (;;) {
    const response = await request(app).get(`/training/versions/${id}`).set('Authorization', AUTH).expect(200);
    assertMatchesOpenApi('GET', '/training/versions/{id}', response);
    if (until(response.body as VersionRecord)) return response.body as VersionRecord;
    await sleep(20);
  }
}
