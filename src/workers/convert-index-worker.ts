/**
 * Entry of an index conversion process (src/index/convert-host.ts): it answers one request, a dry
 * index_factory of a `faiss_type` or a whole conversion with its progress, then exits.
 */
import { convertIndex, factoryIndex } from '../index/convert-index.js';
import type { ConvertProgress, ConvertReply, ConvertRequest } from '../index/convert-host.js';
import { failedReply } from '../threads/replies.js';

async function answer(request: ConvertRequest): Promise<ConvertReply> {
  if (request.op === 'check') {
    factoryIndex(request.dimension, request.faissType);
    return { kind: 'reply', id: request.id, ok: true };
  }
  const result = await convertIndex({
    ...request.options,
    onProgress: (stage, done, total) => process.send!({ kind: 'progress', stage, done, total } satisfies ConvertProgress),
  });
  return { kind: 'reply', id: request.id, ok: true, result };
}

process.once('message', (request: ConvertRequest) => {
  void answer(request)
    .catch((error: unknown) => failedReply(request.id, error))
    .then((reply) => process.send!(reply, () => process.disconnect()));
});
