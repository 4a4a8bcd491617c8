import type { FailedReply } from '../threads/replies.js';

/** Messages between a faiss host process and its client; one request, one reply, matched by id. */
export type FaissRequest =
  | { id: number; op: 'load'; path: string }
  | { id: number; op: 'search'; vectors: Float32Array; topk: number };

export type FaissReply =
  | { kind: 'reply'; id: number; ok: true; dimension?: number; rows?: number; rowIndices?: Int32Array; scores?: Float32Array }
  | FailedReply;
