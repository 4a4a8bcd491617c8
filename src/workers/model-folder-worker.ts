import { parentPort } from 'node:worker_threads';
import { resolveModelFolder } from '../engine/model-folder.js';
import type { ModelFolderCall, ModelFolderReply } from '../engine/model-folder-thread.js';
import { failedReply } from '../threads/replies.js';

const port = parentPort!;
// Once: with no listener left after its reply, the thread ends by itself.
port.once('message', async ({ id, dir, ...options }: ModelFolderCall) => {
  let reply: ModelFolderReply;
  try {
    reply = { kind: 'reply', id, ok: true, modelDir: await resolveModelFolder(dir, options) };
  } catch (error) {
    reply = failedReply(id, error);
  }
  port.postMessage(reply);
});
