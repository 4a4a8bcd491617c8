import { parentPort, workerData } from 'node:worker_threads';
import type { EncoderRequest, EncoderWorkerData, EncoderWorkerMessage } from '../encoder/encoder-worker-protocol.js';
import { OnnxEncoder } from '../encoder/onnx-encoder.js';
import { failedReply, serializeError } from '../threads/replies.js';

// ONNX Runtime's run computes synchronously; in this thread it blocks only this thread.
const port = parentPort!;
const { modelDir, settings } = workerData as EncoderWorkerData;

function post(message: EncoderWorkerMessage, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

/** Encodes still running; close waits for them so none loses its session halfway. */
const inFlight = new Set<Promise<void>>();

async function answer(encoder: OnnxEncoder, request: EncoderRequest): Promise<void> {
  try {
    if (request.op === 'close') {
      await Promise.all(inFlight);
      await encoder.close();
      post({ kind: 'reply', id: request.id, ok: true });
      return;
    }
    const vectors =
      request.op === 'queries' ? await encoder.encodeQueries(request.inputs) : await encoder.encodePassages(request.texts);
    post({ kind: 'reply', id: request.id, ok: true, vectors }, [vectors.buffer as ArrayBuffer]);
  } catch (error) {
    post(failedReply(request.id, error));
  }
}

try {
  const encoder = await OnnxEncoder.load(modelDir, {
    ...settings,
    warn: (message) => post({ kind: 'warning', message }),
  });
  port.on('message', (request: EncoderRequest) => {
    const answering = answer(encoder, request);
    inFlight.add(answering);
    void answering.finally(() => inFlight.delete(answering));
  });
  post({ kind: 'ready', manifest: encoder.manifest, provider: encoder.provider, modelFile: encoder.modelFile });
} catch (error) {
  post({ kind: 'load-failed', error: serializeError(error) });
}
