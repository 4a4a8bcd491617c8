/**
 * Child process for the kill -9 test of a streamed ingest: serves the real training routes over
 * the store in argv[2] (corpus offsets beside it) on a free port, and prints `port <n>`.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import express from 'express';
import { CorpusStore } from '../../src/corpus/corpus-store.js';
import { trainingRouter } from '../../src/http/training-routes.js';
import { TrainingExampleStore } from '../../src/training/store.js';
import { samplePath } from '../support/training-fixtures.js';

const dataDir = process.argv[2]!;
const store = await TrainingExampleStore.open(dataDir);
const corpus = await CorpusStore.open(samplePath, { sidecarPath: path.join(dataDir, '..', 'corpus.offsets') });
const app = express().use(trainingRouter({ store: () => store, corpus: () => corpus, allowUnauthenticated: true }));
const server = createServer(app).listen(0, '127.0.0.1', () => {
  process.stdout.write(`port ${(server.address() as AddressInfo).port}\n`);
});
