import { Worker } from 'node:worker_threads';
import type { ModelKind } from '../encoder/manifest.js';
import type { WeightBitsSetting } from '../onnx/int8-quantization.js';
import type { FailedReply } from '../threads/replies.js';
import { threadChannel, WorkerRequests } from '../threads/worker-requests.js';

export interface ModelFolderRequest {
  dir: string;
  cacheDir: string;
  fp16: boolean;
  int8?: WeightBitsSetting;
  kind?: ModelKind;
}

/** The one request a model folder thread answers before it ends. */
export type ModelFolderCall = ModelFolderRequest & { id: number };

export type ModelFolderReply = { kind: 'reply'; id: number; ok: true; modelDir: string } | FailedReply;

/**
 * `resolveModelFolder` in a worker thread: converting a checkpoint reads and rewrites every
 * weight (seconds of CPU for an e5-base), which must not stall the event loop serving requests.
 */
export async function resolveModelFolderOffThread(request: ModelFolderRequest): Promise<string> {
  const worker = new Worker(new URL('../workers/model-folder-worker.js', import.meta.url));
  const channel = threadChannel(worker, 'model conversion', (code) => `model conversion thread exited (code ${code}) without an answer`);
  return (await new WorkerRequests<ModelFolderCall, ModelFolderReply>(channel).send(request)).modelDir;
}
