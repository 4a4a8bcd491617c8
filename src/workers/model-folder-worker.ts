import { parentPort } from 'node:worker_threads';
import { resolveModelFolder } from '../engine/model-folder.js';
import type { ModelFolderCall, ModelFolderReply } from '../engine/model-folder-thread.js';
import { failedReply } from '../threads/replies.js';

const port = parentPort!;
// Once: with no listener left after its reply, the thread ends by itself.
port.once('message', async ({ id, dir, cacheDir, fp16, int8 }: ModelFolderCall) => {
  let reply: ModelFolderReply;
  try {
    reply = { kind: 'reply', id, ok: true, modelDir: await resolveModelFolder(dir, { cacheDir, fp16, int8 }) };
  } catch (error) {
    reply = failedReply(id, error);
  }
  port.postMessage(reply);
});
