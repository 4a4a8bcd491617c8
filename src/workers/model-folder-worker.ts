import { parentPort, workerData } from 'node:worker_threads';
import { resolveModelFolder } from '../engine/model-folder.js';
import { ServiceError } from '../errors.js';
import type { ModelFolderReply, ModelFolderRequest } from '../engine/model-folder-thread.js';

const { dir, cacheDir, fp16, int8 } = workerData as ModelFolderRequest;
let reply: ModelFolderReply;
try {
  reply = { ok: true, modelDir: await resolveModelFolder(dir, { cacheDir, fp16, int8 }) };
} catch (error) {
  const code = error instanceof ServiceError ? error.code : 'internal';
  reply = { ok: false, code, message: (error as Error).message };
}
parentPort!.postMessage(reply);
