import type { TrainingRecord } from './record.js';

export interface DatasetStats {
  /** Stored records; each holds exactly one positive. */
  records: number;
  /** Distinct `query_id`s. */
  queries: number;
  /** Distinct search rounds (`query_id`, `round_index`). */
  rounds: number;
  /** Distinct positives (`query_id`, `round_index`, positive passage): records that differ only in negatives count once. */
  positives: number;
  /** Records per `round_index`. */
  byRound: Record<string, number>;
}

interface DatasetTally {
  records: number;
  queries: Set<string>;
  rounds: Set<string>;
  positives: Set<string>;
  byRound: Map<number, number>;
}

/** Counts of stored records per dataset and round, kept current as records are appended. */
export class RecordTally {
  private readonly datasets = new Map<string, DatasetTally>();
  private total = 0;

  add(record: TrainingRecord): void {
    let tally = this.datasets.get(record.dataset);
    if (!tally) {
      tally = { records: 0, queries: new Set(), rounds: new Set(), positives: new Set(), byRound: new Map() };
      this.datasets.set(record.dataset, tally);
    }
    const round = JSON.stringify([record.query_id, record.round_index]);
    tally.records += 1;
    tally.queries.add(record.query_id);
    tally.rounds.add(round);
    tally.positives.add(`${round}${record.passage_ids[0]}`);
    tally.byRound.set(record.round_index, (tally.byRound.get(record.round_index) ?? 0) + 1);
    this.total += 1;
  }

  get records(): number {
    return this.total;
  }

  datasetStats(): Record<string, DatasetStats> {
    const out: Record<string, DatasetStats> = {};
    for (const [dataset, tally] of [...this.datasets].sort(([a], [b]) => a.localeCompare(b))) {
      out[dataset] = {
        records: tally.records,
        queries: tally.queries.size,
        rounds: tally.rounds.size,
        positives: tally.positives.size,
        byRound: Object.fromEntries([...tally.byRound].sort(([a], [b]) => a - b).map(([r, n]) => [String(r), n])),
      };
    }
    return out;
  }
}
