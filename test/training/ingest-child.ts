/**
 * Child process for the kill -9 test: ingests records one at a time into the store in argv[2]
 * and prints `ack <query_id>` once each ingest has answered (that is, after its fsync).
 */
import { ingestRecords } from '../../src/training/ingest.js';
import { TrainingExampleStore } from '../../src/training/store.js';
import { makeRecord, SAMPLE_ROWS } from '../support/training-fixtures.js';

const store = await TrainingExampleStore.open(process.argv[2]!);
for (let i = 0; ; i += 1) {
  const record = makeRecord({ query_id: `child-${i}`, history_queries: ['y'.repeat(i % 5000)] }, i % 900);
  const report = await ingestRecords(store, [{ index: 0, value: record }], { corpusRows: SAMPLE_ROWS });
  if (report.accepted !== 1) throw new Error(`record ${i} not accepted: ${JSON.stringify(report.results)}`);
  process.stdout.write(`ack ${record.query_id}\n`);
}
