import { Worker } from 'node:worker_threads';
import type { WeightBitsSetting } from '../onnx/int8-quantization.js';
import { ServiceError, type ErrorCode } from '../errors.js';

export interface ModelFolderRequest {
  dir: string;
  cacheDir: string;
  fp16: boolean;
  int8?: WeightBitsSetting;
}

export type ModelFolderReply = { ok: true; modelDir: string } | { ok: false; code: ErrorCode; message: string };

/**
 * `resolveModelFolder` in a worker thread: converting a checkpoint reads and rewrites every
 * weight (seconds of CPU for an e5-base), which must not stall the event loop serving requests.
 */
export function resolveModelFolderOffThread(request: ModelFolderRequest): Promise<string> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('../workers/model-folder-worker.js', import.meta.url), { workerData: request });
    let replied = false;
    worker.once('message', (reply: ModelFolderReply) => {
      replied = true;
      if (reply.ok) resolve(reply.modelDir);
      else reject(new ServiceError(reply.code, reply.message));
    });
    worker.once('error', (error) => reject(new ServiceError('internal', `model conversion crashed: ${error.message}`)));
    worker.once('exit', (code) => {
      if (!replied) reject(new ServiceError('internal', `model conversion thread exited (code ${code}) without an answer`));
    });
  });
}
