import { createRequire } from 'node:module';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort } from 'node:worker_threads';
import type { FaissReply, FaissRequest } from '../index/faiss-protocol.js';

// faiss-node is CommonJS with a native addon; it must be loaded in this one thread only.
const { IndexFlatIP } = createRequire(import.meta.url)('faiss-node') as typeof import('faiss-node');

// The addon never tells V8 about the native vectors a wrapper owns, so V8 feels no pressure to
// collect an unloaded multi-GB index; unload collects explicitly to give that memory back now.
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

type LoadedIndex = InstanceType<typeof IndexFlatIP>;

const indexes = new Map<number, LoadedIndex>();
let nextHandle = 1;
const port = parentPort!;

function handle(request: FaissRequest): { reply: FaissReply; transfer: ArrayBuffer[] } {
  switch (request.op) {
    case 'load': {
      const index = IndexFlatIP.read(request.path);
      const handle = nextHandle++;
      indexes.set(handle, index);
      return {
        reply: { id: request.id, ok: true, handle, dimension: index.getDimension(), rows: index.ntotal() },
        transfer: [],
      };
    }
    case 'search': {
      const index = indexes.get(request.handle);
      if (!index) throw new Error(`index handle ${request.handle} is not loaded`);
      // faiss-node takes a plain Array and answers plain Arrays of numbers.
      const { labels, distances } = index.search(Array.from(request.vectors), request.topk);
      const rowIndices = Int32Array.from(labels);
      const scores = Float32Array.from(distances);
      return {
        reply: { id: request.id, ok: true, rowIndices, scores },
        transfer: [rowIndices.buffer as ArrayBuffer, scores.buffer as ArrayBuffer],
      };
    }
    case 'unload':
      // faiss-node has no dispose: the vectors are freed when the wrapper is collected.
      indexes.delete(request.handle);
      collectGarbage();
      return { reply: { id: request.id, ok: true }, transfer: [] };
  }
}

port.on('message', (request: FaissRequest) => {
  try {
    const { reply, transfer } = handle(request);
    port.postMessage(reply, transfer);
  } catch (error) {
    port.postMessage({ id: request.id, ok: false, message: (error as Error).message } satisfies FaissReply);
  }
});
