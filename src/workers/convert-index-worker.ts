/**
 * Entry of an index conversion process (src/index/convert-host.ts): it answers one request, a dry
 * index_factory of a `faiss_type` or a whole conversion with its progress, then exits.
 */
import { convertIndex, factoryIndex } from '../index/convert-index.js';
import type { ConvertMessage, ConvertRequest } from '../index/convert-host.js';
import { serializeError } from '../threads/replies.js';

async function answer(request: ConvertRequest): Promise<ConvertMessage> {
  if (request.op === 'check') {
    factoryIndex(request.dimension, request.faissType);
    return { kind: 'done' };
  }
  const result = await convertIndex({
    ...request.options,
    onProgress: (stage, done, total) => process.send!({ kind: 'progress', stage, done, total } satisfies ConvertMessage),
  });
  return { kind: 'done', result };
}

process.once('message', (request: ConvertRequest) => {
  void answer(request)
    .catch((error: unknown): ConvertMessage => ({ kind: 'failed', error: serializeError(error) }))
    .then((message) => process.send!(message, () => process.disconnect()));
});
