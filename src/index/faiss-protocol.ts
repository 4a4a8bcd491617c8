/** Messages between the faiss worker thread and its client; one request, one reply, matched by id. */
export type FaissRequest =
  | { id: number; op: 'load'; path: string }
  | { id: number; op: 'search'; handle: number; vectors: Float32Array; topk: number }
  | { id: number; op: 'unload'; handle: number };

export type FaissReply =
  | { id: number; ok: true; handle?: number; dimension?: number; rows?: number; rowIndices?: Int32Array; scores?: Float32Array }
  | { id: number; ok: false; message: string };
