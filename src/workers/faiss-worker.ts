/**
 * Entry of a faiss host process: it loads one IndexFlatIP file and answers searches on it.
 * faiss-node blocks its thread for a whole read or search and crashes when loaded in two
 * threads of one process, so each loaded index gets a process of its own: loading the next
 * version's index (minutes for wiki18) never stalls searches on the active one, and ending
 * the process gives the index's memory back at once.
 */
import { createRequire } from 'node:module';
import type { FaissReply, FaissRequest } from '../index/faiss-protocol.js';
import { failedReply } from '../threads/replies.js';

// faiss-node is CommonJS with a native addon.
const { IndexFlatIP } = createRequire(import.meta.url)('faiss-node') as typeof import('faiss-node');

let index: InstanceType<typeof IndexFlatIP> | undefined;

function answer(request: FaissRequest): FaissReply {
  switch (request.op) {
    case 'load': {
      if (index) throw new Error('this faiss host already holds an index');
      index = IndexFlatIP.read(request.path);
      return { kind: 'reply', id: request.id, ok: true, dimension: index.getDimension(), rows: index.ntotal() };
    }
    case 'search': {
      if (!index) throw new Error('no index loaded');
      // faiss-node takes a plain Array and answers plain Arrays of numbers.
      const { labels, distances } = index.search(Array.from(request.vectors), request.topk);
      return { kind: 'reply', id: request.id, ok: true, rowIndices: Int32Array.from(labels), scores: Float32Array.from(distances) };
    }
  }
}

process.on('message', (request: FaissRequest) => {
  let reply: FaissReply;
  try {
    reply = answer(request);
  } catch (error) {
    // The service answers with this message: it says which library failed.
    reply = failedReply(request.id, new Error(`faiss: ${(error as Error).message}`));
  }
  process.send!(reply);
});
// The client closing the channel (or dying) ends this process and frees the index.
process.on('disconnect', () => process.exit(0));
