/**
 * Entry of a faiss host process: it loads one FAISS index file of any type faiss reads and answers
 * searches on it. faiss-node blocks its thread for a whole read or search and crashes when loaded
 * in two threads of one process, so each loaded index gets a process of its own: loading the next
 * version's index (minutes for wiki18) never stalls searches on the active one, and ending the
 * process gives the index's memory back at once.
 */
import { faissIndexClass, type NativeIndex } from '../index/faiss-native.js';
import type { FaissReply, FaissRequest } from '../index/faiss-protocol.js';
import { failedReply } from '../threads/replies.js';

const Index = faissIndexClass();
let index: NativeIndex | undefined;

function loaded(): NativeIndex {
  if (!index) throw new Error('no index loaded');
  return index;
}

/** faiss labels as row numbers; -1 (fewer than k neighbours found) stays -1. */
function rowNumbers(labels: BigInt64Array): Int32Array {
  const rows = new Int32Array(labels.length);
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i]!;
    if (label > 0x7fffffffn) throw new Error(`index returned id ${label}, beyond any corpus row`);
    rows[i] = Number(label);
  }
  return rows;
}

function answer(request: FaissRequest): FaissReply {
  switch (request.op) {
    case 'load': {
      if (index) throw new Error('this faiss host already holds an index');
      index = Index.read(request.path, request.ioFlags);
      return { kind: 'reply', id: request.id, ok: true, description: index.describe() };
    }
    case 'configure': {
      for (const [name, value] of Object.entries(request.parameters)) loaded().setParameter(name, value);
      return { kind: 'reply', id: request.id, ok: true, description: loaded().describe() };
    }
    case 'search': {
      const { labels, distances } = loaded().searchVectors(request.vectors, request.topk);
      return { kind: 'reply', id: request.id, ok: true, rowIndices: rowNumbers(labels), scores: distances };
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
