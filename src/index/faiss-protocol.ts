import type { FailedReply } from '../threads/replies.js';
import type { NativeDescription } from './faiss-native.js';

/** Messages between a faiss host process and its client; one request, one reply, matched by id. */
export type FaissRequest =
  | { id: number; op: 'load'; path: string; ioFlags: number }
  /** faiss search parameters by ParameterSpace name (`efSearch`, `nprobe`). */
  | { id: number; op: 'configure'; parameters: Record<string, number> }
  | { id: number; op: 'search'; vectors: Float32Array; topk: number };

export type FaissReply =
  | { kind: 'reply'; id: number; ok: true; description?: NativeDescription; rowIndices?: Int32Array; scores?: Float32Array }
  | FailedReply;
