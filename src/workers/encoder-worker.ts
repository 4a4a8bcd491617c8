import { parentPort, workerData } from 'node:worker_threads';
import type { EncoderRequest, EncoderWorkerData, EncoderWorkerMessage } from '../encoder/encoder-worker-protocol.js';
import { OnnxCrossEncoder } from '../encoder/onnx-cross-encoder.js';
import { OnnxEncoder } from '../encoder/onnx-encoder.js';
import { ServiceError } from '../errors.js';
import { failedReply, serializeError } from '../threads/replies.js';

// ONNX Runtime's run computes synchronously; in this thread it blocks only this thread.
const port = parentPort!;
const data = workerData as EncoderWorkerData;

function post(message: EncoderWorkerMessage, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

/** Encodes still running; close waits for them so none loses its session halfway. */
const inFlight = new Set<Promise<void>>();

type Model = OnnxEncoder | OnnxCrossEncoder;

function compute(model: Model, request: Exclude<EncoderRequest, { op: 'close' }>): Promise<Float32Array> {
  if (model instanceof OnnxCrossEncoder) {
    if (request.op === 'pairs') return model.score(request.pairs);
  } else if (request.op === 'queries') {
    return model.encodeQueries(request.inputs);
  } else if (request.op === 'passages') {
    return model.encodePassages(request.texts);
  }
  return Promise.reject(new ServiceError('internal', `a ${data.kind} worker has no ${request.op} operation`));
}

async function answer(model: Model, request: EncoderRequest): Promise<void> {
  try {
    if (request.op === 'close') {
      await Promise.all(inFlight);
      await model.close();
      post({ kind: 'reply', id: request.id, ok: true });
      return;
    }
    const values = await compute(model, request);
    post({ kind: 'reply', id: request.id, ok: true, values }, [values.buffer as ArrayBuffer]);
  } catch (error) {
    post(failedReply(request.id, error));
  }
}

try {
  const warn = (message: string) => post({ kind: 'warning', message });
  const model =
    data.kind === 'reranker'
      ? await OnnxCrossEncoder.load(data.modelDir, { ...data.settings, warn })
      : await OnnxEncoder.load(data.modelDir, { ...data.settings, warn });
  port.on('message', (request: EncoderRequest) => {
    const answering = answer(model, request);
    inFlight.add(answering);
    void answering.finally(() => inFlight.delete(answering));
  });
  post({ kind: 'ready', manifest: model.manifest, provider: model.provider, modelFile: model.modelFile });
} catch (error) {
  post({ kind: 'load-failed', error: serializeError(error) });
}
