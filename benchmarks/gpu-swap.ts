/**
 * gpu-check's swap step: hot swaps of retriever versions over the largest synthetic fp16 index the
 * run reached, once as `--swap_mode auto` picks (side by side where both versions fit the cards'
 * free memory, as nvidia-smi reports it) and once forced to replace, each through the service's own
 * VersionManager and ActiveRetriever with the search and the encoder on CUDA. Both versions are the
 * e5-base model over that index (two versions' worth of device memory, without a second index on
 * disk). Each phase records the swap plan (per device: each version's index share and encoder,
 * the driver's free memory, the limit), load/release/pause times, the driver's free memory before
 * and after, and which version answers a query afterwards. A phase starts only when the pace of the
 * loads so far says it ends inside the step's slice; otherwise the step is partial, saying why.
 */
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { once } from 'node:events';
import { ActiveRetriever } from '../src/engine/active-retriever.js';
import type { RetrieverFiles } from '../src/engine/retriever.js';
import { untilAborted } from '../src/index/build-index.js';
import type { SwapModeSetting, SwapPlan } from '../src/index/search-memory.js';
import { gpuMemoryReader, type GpuMemoryReader } from '../src/onnx/gpu-memory.js';
import { VersionManager } from '../src/versions/version-manager.js';
import type { Figures, Publish, Slice } from './time-slices.js';

export interface SwapSettings {
  deviceIds: readonly number[];
  /** Fail where CUDA cannot load, instead of searching and encoding on CPU. */
  strict: boolean;
  shardRows: number;
  /** Where the swap's data folders go (deleted afterwards). */
  workDir: string;
}

/** A corpus of `rows` one-word passages, row i's id "i": what an index of that many rows needs beside it. */
async function shortCorpus(file: string, rows: number): Promise<void> {
  const out = createWriteStream(file);
  const chunk = 65_536;
  for (let first = 0; first < rows; first += chunk) {
    const lines: string[] = [];
    for (let row = first; row < Math.min(rows, first + chunk); row++) lines.push(`{"id":"${row}","contents":"\\"Row ${row}\\"\\npassage ${row}"}\n`);
    if (!out.write(lines.join(''))) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

/** One phase's record: what swapPhase found, or why it failed. */
type PhaseFigures = Figures & { swap?: SwapPlan; firstLoadSeconds?: number; partial?: string };

/** The driver's free memory of each device, in GB (null where unknown). */
async function freeGB(gpuMemory: GpuMemoryReader, deviceIds: readonly number[]): Promise<Record<string, number | null>> {
  const gpus = await gpuMemory(deviceIds);
  return Object.fromEntries(deviceIds.map((id) => [`cuda:${id}`, gpus.has(id) ? gpus.get(id)!.freeBytes / 1e9 : null]));
}

/**
 * One swap with `--swap_mode setting` on a fresh service: `first` serves (loaded, as at start-up),
 * then `second` is registered and activated. Stops before the activation when the load so far
 * says it would not end inside the slice.
 */
async function swapPhase(
  setting: SwapModeSetting,
  first: RetrieverFiles,
  second: RetrieverFiles,
  settings: SwapSettings,
  gpuMemory: GpuMemoryReader,
  slice: Slice,
): Promise<PhaseFigures> {
  const dataDir = await mkdtemp(path.join(settings.workDir, `swap-${setting}-`));
  const active = new ActiveRetriever();
  const warnings: string[] = [];
  const [deviceId] = settings.deviceIds;
  const versions = await VersionManager.open({
    dataDir,
    active,
    fp16: false,
    encoder: { device: 'cuda', deviceId, strict: settings.strict, warn: (message) => warnings.push(message) },
    index: { backend: 'onnx', gpu: true, deviceIds: settings.deviceIds, precision: 'fp16', shardRows: settings.shardRows, strict: settings.strict, warn: (message) => warnings.push(message) },
    swapMode: setting,
    gpuMemory,
    log: (message, _fields, level) => {
      if (level === 'warn' || level === 'error') warnings.push(message);
    },
  });
  const figures: PhaseFigures = { swapMode: setting, warnings };
  try {
    figures.freeGBBeforeLoad = await freeGB(gpuMemory, settings.deviceIds);
    const loading = Date.now();
    await versions.restore(first);
    const loadSeconds = (Date.now() - loading) / 1e3;
    Object.assign(figures, { firstLoadSeconds: loadSeconds, freeGBServingOne: await freeGB(gpuMemory, settings.deviceIds), placement: active.current?.index.placement });
    // A replacement loads once more than that, with closing before it; a side-by-side swap as much.
    if (slice.leftS() < 1.5 * loadSeconds) {
      figures.partial = `${slice.leftS().toFixed(0)} s of the slice left after a ${loadSeconds.toFixed(0)} s load: no swap`;
      return figures;
    }
    const { version } = await versions.register({ modelPath: second.modelDir, indexPath: second.indexPath, label: `gpu-check swap ${setting}` });
    const swapped = await versions.activate(version.id);
    const answer = await active.retrieve([{ query: 'who wrote hamlet' }], 3);
    Object.assign(figures, {
      swap: swapped.swap,
      loadSeconds: swapped.loadMs / 1e3,
      releaseSeconds: swapped.releaseMs / 1e3,
      ...(swapped.pausedMs !== undefined && { pausedSeconds: swapped.pausedMs / 1e3 }),
      freeGBAfterSwap: await freeGB(gpuMemory, settings.deviceIds),
      answeredBy: answer.version,
      answeredByNewVersion: answer.version === version.id,
    });
    return figures;
  } finally {
    await versions.close();
    await active.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/**
 * Swaps over `index` (an IxFI file with its fp16 copy) with the e5-base model of `modelDir`: as
 * `auto` plans it, then forced to replace, each phase only where the slice has room for it.
 */
export async function swapAtScale(
  index: Promise<{ indexPath: string; rows: number }>,
  modelDir: Promise<string>,
  settings: SwapSettings,
  slice: Slice,
  publish: Publish,
): Promise<Figures> {
  const { indexPath, rows } = await untilAborted(index, slice.signal);
  const model = await untilAborted(modelDir, slice.signal);
  const corpusPath = path.join(path.dirname(indexPath), 'gpu-check-swap-corpus.jsonl');
  const result: Figures = { rows, indexPath };
  const warnings: string[] = [];
  const gpuMemory = gpuMemoryReader({ warn: (message) => warnings.push(message) });
  result.driverWarnings = warnings;
  try {
    const writing = Date.now();
    await untilAborted(shortCorpus(corpusPath, rows), slice.signal);
    result.corpusSeconds = (Date.now() - writing) / 1e3;
    await publish(result);
    const files: RetrieverFiles = { modelDir: model, indexPath, corpusPath };
    const phases: Record<string, PhaseFigures> = {};
    result.phases = phases;
    for (const setting of ['auto', 'replace'] as const) {
      const last = Object.values(phases).at(-1);
      // A phase loads twice: the first version, then the swap's.
      const needS = last?.firstLoadSeconds !== undefined ? 2.5 * last.firstLoadSeconds : 0;
      if (slice.leftS() <= needS) {
        result.partial = `${slice.leftS().toFixed(0)} s of the slice left, a phase took about ${needS.toFixed(0)} s: ${setting} not run`;
        break;
      }
      try {
        phases[setting] = await swapPhase(setting, files, files, settings, gpuMemory, slice);
      } catch (error) {
        // A side-by-side swap out of device memory is a finding, not the end of the step: replace comes next.
        phases[setting] = { swapMode: setting, failed: (error as Error).message };
      }
      await publish(result);
      if (phases[setting].partial !== undefined) {
        result.partial = `${setting}: ${phases[setting].partial}`;
        break;
      }
    }
    result.modesSwapped = [...new Set(Object.values(phases).flatMap((phase) => (phase.swap ? [phase.swap.mode] : [])))];
    return result;
  } finally {
    await Promise.all([corpusPath, `${corpusPath}.offsets`].map((file) => rm(file, { force: true })));
  }
}
