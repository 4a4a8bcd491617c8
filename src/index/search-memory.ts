import { readFile } from 'node:fs/promises';
import path from 'node:path';
import bytes from 'bytes';
import { ServiceError } from '../errors.js';

/** Where the kernel reports memory; tests point these at fixture files. */
export interface MemoryFiles {
  meminfo: string;
  /** `/proc/self/cgroup`: which cgroup (v1 `memory` controller or v2 unified) holds this process. */
  selfCgroup: string;
  /** Where the cgroup file systems are mounted: v2 at the root, v1's memory controller at `memory/`. */
  cgroupRoot: string;
}

export const SYSTEM_MEMORY_FILES: MemoryFiles = { meminfo: '/proc/meminfo', selfCgroup: '/proc/self/cgroup', cgroupRoot: '/sys/fs/cgroup' };

export interface CgroupMemory {
  version: 1 | 2;
  /** The cgroup folder whose limit is the tightest over this process's cgroup and its ancestors. */
  dir: string;
  limitBytes: number;
  usageBytes: number;
  /** Inactive file pages charged to it, which the kernel reclaims before it hits the limit. */
  reclaimableBytes: number;
}

export interface HostMemory {
  totalBytes: number;
  /** `MemAvailable`: free memory plus the page cache and slabs the kernel can reclaim without swapping. */
  availableBytes: number;
  /** Present when a cgroup limit (a container's) is set on this process. */
  cgroup?: CgroupMemory;
  /** What this process may still fill: `MemAvailable`, or the cgroup's headroom when that is less. */
  usableBytes: number;
}

/** v1 writes "no limit" as the largest page-aligned signed 64-bit count; anything this large is none. */
const NO_LIMIT = 2 ** 62;

function meminfoField(text: string, name: string): number | undefined {
  const kB = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(text)?.[1];
  return kB === undefined ? undefined : Number(kB) * 1024;
}

function statField(text: string, name: string): number {
  return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
}

async function readText(file: string): Promise<string | undefined> {
  return readFile(file, 'utf8').catch(() => undefined);
}

/** This process's cgroup folder and its ancestors up to the mount, innermost first, for v1's memory controller or v2. */
function cgroupDirs(selfCgroup: string, cgroupRoot: string): { version: 1 | 2; dirs: string[] } | undefined {
  const lines = selfCgroup.split('\n').map((line) => line.split(':'));
  const v1 = lines.find((fields) => fields.length >= 3 && fields[1]!.split(',').includes('memory'));
  const v2 = lines.find((fields) => fields.length >= 3 && fields[0] === '0' && fields[1] === '');
  const found = v1 ? { version: 1 as const, base: path.join(cgroupRoot, 'memory'), at: v1.slice(2).join(':') } : v2 && { version: 2 as const, base: cgroupRoot, at: v2.slice(2).join(':') };
  if (!found) return undefined;
  const parts = found.at.split('/').filter(Boolean);
  // Inside a container's cgroup namespace the path may name a folder the mount does not show; the missing ones read as absent.
  const dirs = parts.map((_, i) => path.join(found.base, ...parts.slice(0, parts.length - i)));
  return { version: found.version, dirs: [...dirs, found.base] };
}

async function cgroupLimit(version: 1 | 2, dir: string): Promise<CgroupMemory | undefined> {
  const [limitFile, usageFile, inactiveField] =
    version === 2 ? ['memory.max', 'memory.current', 'inactive_file'] : ['memory.limit_in_bytes', 'memory.usage_in_bytes', 'total_inactive_file'];
  const limit = (await readText(path.join(dir, limitFile)))?.trim();
  if (limit === undefined || limit === 'max' || !(Number(limit) < NO_LIMIT)) return undefined;
  const usage = Number((await readText(path.join(dir, usageFile)))?.trim() ?? 0);
  const stat = (await readText(path.join(dir, 'memory.stat'))) ?? '';
  return { version, dir, limitBytes: Number(limit), usageBytes: usage, reclaimableBytes: statField(stat, inactiveField) };
}

/** Headroom left under a cgroup limit: what kubelet and `docker stats` call the limit minus the working set. */
function headroom(cgroup: CgroupMemory): number {
  return Math.max(0, cgroup.limitBytes - cgroup.usageBytes + cgroup.reclaimableBytes);
}

/** Reads the host's memory as the kernel reports it: `/proc/meminfo` and, in a container, the tightest cgroup limit. */
export async function readHostMemory(files: MemoryFiles = SYSTEM_MEMORY_FILES): Promise<HostMemory> {
  const meminfo = await readText(files.meminfo);
  const totalBytes = meminfo === undefined ? undefined : meminfoField(meminfo, 'MemTotal');
  const availableBytes = meminfo === undefined ? undefined : meminfoField(meminfo, 'MemAvailable');
  if (totalBytes === undefined || availableBytes === undefined) {
    throw new ServiceError('internal', `cannot read MemTotal and MemAvailable from ${files.meminfo}`);
  }
  const groups = cgroupDirs((await readText(files.selfCgroup)) ?? '', files.cgroupRoot);
  const limits = groups ? await Promise.all(groups.dirs.map((dir) => cgroupLimit(groups.version, dir))) : [];
  const cgroup = limits.filter((limit) => limit !== undefined).sort((a, b) => headroom(a) - headroom(b))[0];
  return { totalBytes, availableBytes, ...(cgroup && { cgroup }), usableBytes: Math.min(availableBytes, cgroup ? headroom(cgroup) : Infinity) };
}

/** What opening an index will hold: the largest device's share, and what lands in this host's RAM. */
export interface SearchMemoryPlan {
  indexPath: string;
  /** What one row is held as, for the refusal after "N rows × ": "768 fp32", or "768 dims as 64-byte PQ codes in 4096 IVF lists". */
  rowFormat: string;
  /** Where and by what, for the refusal: "mapped by the onnx backend on CPU". */
  holding: string;
  /** The devices holding a share each, at most `perDevice`: `cpu` or `cuda:<ordinal>`. */
  devices: string[];
  /** The largest device's rows, vectors and score buffers, held against `--search_memory_budget`. */
  perDevice: { rows: number; vectorBytes: number; scoreBytes: number };
  /** Rows whose vectors this host holds (every CPU session's). */
  hostRows: number;
  /** Mapped file pages, counted against RAM: a flat scan touches every one on every query, an IVF search those of the lists it probes. */
  hostMappedBytes: number;
  /** Which of the mapped pages a query reads, for the refusal: "every one read by every query". */
  mappedReads: string;
  /** Anonymous memory on this host: a copy of the vectors (faiss) and score buffers; past RAM it fails to allocate or is killed. */
  hostAnonymousBytes: number;
}

export const showBytes = (n: number): string => bytes.format(n, { unitSeparator: ' ', decimalPlaces: 1 }) ?? `${n} B`;

// HNSW64 and IVF,Flat hold at least Flat's bytes (fp32 vectors plus links or ids): only codes hold fewer.
const WAYS_OUT =
  'ways out: a compressed index (convert-index --faiss_type SQ8 or HNSW32,SQ8 holds a quarter of the fp32 bytes a row, IVF4096,PQ64 64 bytes); fp16 on a GPU (--faiss_gpu: half the bytes, in device memory); or a host with more RAM';

/**
 * The weights of the encoder that serves beside an index, on the device it runs on: where that is
 * one of the index's devices, `--search_memory_budget` there covers both, as an activation's swap
 * plan counts them, so a version that starts also fits when a swap plans it.
 */
export interface EncoderWeights {
  /** `cpu` or `cuda:<ordinal>`. */
  device: string;
  bytes: number;
}

/**
 * Refuses, with the sizes and the ways out, an index that would not fit: the largest device's share
 * (with `encoderWeights` where they share its device) over `budgetBytes` (when set), or this host's share over what the host leaves this process.
 * Mapped pages past RAM still work, read through the page cache as queries reach them, so an explicit
 * budget that covers them is taken as the user's word: the index opens, with `warn` saying so.
 * Anonymous memory past RAM never works, whatever the budget.
 */
export function checkSearchMemory(
  plan: SearchMemoryPlan,
  budgetBytes: number,
  host: HostMemory,
  warn: (message: string) => void,
  encoderWeights?: EncoderWeights,
): void {
  checkDeviceBudget(plan, budgetBytes, encoderWeights);
  const deviceBytes = deviceShare(plan) + encoderShare(plan, encoderWeights);
  const details = { indexPath: plan.indexPath, budgetBytes, neededBytes: deviceBytes };
  const hostBytes = hostShare(plan);
  if (hostBytes <= host.usableBytes) return;
  const cgroupBinds = host.cgroup !== undefined && host.usableBytes < host.availableBytes;
  const shortfall =
    `index ${plan.indexPath} needs ${showBytes(hostBytes)} of this host's memory but ` +
    (cgroupBinds ? `the cgroup limit of ${showBytes(host.cgroup!.limitBytes)} (${host.cgroup!.dir}) leaves ` : 'MemAvailable is ') +
    `${showBytes(host.usableBytes)} (${showBytes(host.totalBytes)} RAM): ${plan.hostRows} rows × ${plan.rowFormat} ${plan.holding}` +
    (plan.hostMappedBytes > 0 ? ` (${showBytes(plan.hostMappedBytes)} of file pages, ${plan.mappedReads})` : '') +
    (plan.hostAnonymousBytes > 0 ? ` and ${showBytes(plan.hostAnonymousBytes)} of the process's own memory` : '');
  const streamable = plan.hostMappedBytes > 0 && plan.hostAnonymousBytes <= host.usableBytes;
  if (streamable && budgetBytes > 0) {
    warn(`${shortfall}; mapping it anyway, as --search_memory_budget ${showBytes(budgetBytes)} allows: queries read the pages that do not fit from disk as they reach them`);
    return;
  }
  // Whole GiB, rounded up, so the suggested value covers the need once parsed back.
  const override = streamable ? `; or --search_memory_budget ${Math.ceil(deviceBytes / 2 ** 30)}gb to map it anyway and read the pages that do not fit from disk as queries reach them` : '';
  throw new ServiceError('bad_request', `${shortfall}; ${WAYS_OUT}${override}`, { ...details, hostBytes, usableBytes: host.usableBytes });
}

/** The largest device's share: its vectors and one query chunk's scores. */
const deviceShare = (plan: SearchMemoryPlan): number => plan.perDevice.vectorBytes + plan.perDevice.scoreBytes;

/** What lands in this host's memory: mapped file pages and anonymous memory. */
const hostShare = (plan: SearchMemoryPlan): number => plan.hostMappedBytes + plan.hostAnonymousBytes;

/** The encoder's weights where they share a device with the index (the largest share stands for each). */
const encoderShare = (plan: SearchMemoryPlan, encoder: EncoderWeights | undefined): number =>
  encoder && plan.devices.includes(encoder.device) ? encoder.bytes : 0;

/** Refuses, with the sizes and the ways out, an index whose largest device share (encoder included) is over `budgetBytes` (0: no budget). */
function checkDeviceBudget(plan: SearchMemoryPlan, budgetBytes: number, encoder: EncoderWeights | undefined): void {
  const { rows, vectorBytes, scoreBytes } = plan.perDevice;
  const encoderBytes = encoderShare(plan, encoder);
  const neededBytes = deviceShare(plan) + encoderBytes;
  if (budgetBytes <= 0 || neededBytes <= budgetBytes) return;
  throw new ServiceError(
    'bad_request',
    `index ${plan.indexPath} does not fit the search memory budget of ${showBytes(budgetBytes)} per device: ` +
      `${rows} rows × ${plan.rowFormat} take ${showBytes(vectorBytes)} plus ${showBytes(scoreBytes)} of scores (${plan.holding})` +
      (encoderBytes > 0 ? `, beside ${showBytes(encoderBytes)} of encoder weights on ${encoder!.device}` : '') +
      `; ${WAYS_OUT}`,
    { indexPath: plan.indexPath, budgetBytes, neededBytes },
  );
}

/**
 * How a new version takes over: loaded and warmed beside the serving one (`side-by-side`: no
 * request waits), or after the serving one's sessions are closed (`replace`: requests wait in
 * the queue while the new one loads), when the two do not fit together.
 */
export type SwapMode = 'side-by-side' | 'replace';
export type SwapModeSetting = SwapMode | 'auto';

/** What one version holds: its index, and its encoder's weights on the device the encoder runs on. */
export interface VersionMemory {
  index: SearchMemoryPlan;
  encoder: EncoderWeights;
}

/** One device's memory in a swap: what each version holds there, and what both are held against. */
export interface DeviceSwapMemory {
  /** `cpu` (the CPU search session and encoder, against the budget) or `cuda:<ordinal>`. */
  name: string;
  /** All the serving version holds there: its index share (vectors + one query chunk's scores) and its encoder when it runs there. */
  activeBytes: number;
  nextBytes: number;
  /** Of those, each version's encoder weights. */
  encoderBytes: { active: number; next: number };
  /** `--search_memory_budget` (0: none). */
  budgetBytes: number;
  /** What the driver reports free on a CUDA device (nvidia-smi); absent where it cannot tell. */
  freeBytes?: number;
  /**
   * What the versions are held against there: the budget, or the driver's free memory plus what
   * the serving version holds (the driver counts that as used already), whichever is less; 0: none.
   */
  limitBytes: number;
}

/** The memory plan of one activation, decided before anything of the new version is loaded. */
export interface SwapPlan {
  mode: SwapMode;
  /** Why this mode, with the sizes: what fits or does not, or that `--swap_mode` forced it. */
  reason: string;
  /** Whether both versions fit together on every device and on the host; false with side by side only when `--swap_mode` forced it. */
  fits: boolean;
  /** The device with the least room left for both versions. */
  device: DeviceSwapMemory;
  /** Every device either version holds memory on. */
  devices: DeviceSwapMemory[];
  /** Each version's share of this host's memory (its encoder too, when it runs on CPU) against what the host leaves this process. */
  host: { activeBytes: number; nextBytes: number; usableBytes: number };
}

/** Bytes `version` holds on device `name`: its index share where the index is, its encoder where that runs. */
function heldOn(version: VersionMemory, name: string): { total: number; encoder: number } {
  const encoder = version.encoder.device === name ? version.encoder.bytes : 0;
  return { total: (version.index.devices.includes(name) ? deviceShare(version.index) : 0) + encoder, encoder };
}

/** Each device either version holds memory on, with its limit: the budget, and on CUDA what the driver leaves. */
function deviceMemory(active: VersionMemory, next: VersionMemory, budgetBytes: number, gpuFree: ReadonlyMap<string, number>): DeviceSwapMemory[] {
  const names = [...new Set([...active.index.devices, active.encoder.device, ...next.index.devices, next.encoder.device])];
  return names.map((name) => {
    const [activeHeld, nextHeld] = [heldOn(active, name), heldOn(next, name)];
    const freeBytes = gpuFree.get(name);
    const limits = [...(budgetBytes > 0 ? [budgetBytes] : []), ...(freeBytes !== undefined ? [freeBytes + activeHeld.total] : [])];
    return {
      name,
      activeBytes: activeHeld.total,
      nextBytes: nextHeld.total,
      encoderBytes: { active: activeHeld.encoder, next: nextHeld.encoder },
      budgetBytes,
      ...(freeBytes !== undefined && { freeBytes }),
      limitBytes: limits.length > 0 ? Math.min(...limits) : 0,
    };
  });
}

/** Room left on `device` with both versions on it; Infinity without a limit. */
const roomForBoth = (device: DeviceSwapMemory): number => (device.limitBytes > 0 ? device.limitBytes - device.activeBytes - device.nextBytes : Infinity);

/** What `device`'s limit is, in words: the budget, or the driver's free memory with the serving version's share. */
function limitWords(device: DeviceSwapMemory): string {
  const byDriver = device.freeBytes !== undefined && (device.budgetBytes === 0 || device.freeBytes + device.activeBytes < device.budgetBytes);
  return byDriver
    ? `the ${showBytes(device.limitBytes)} the driver leaves there (${showBytes(device.freeBytes!)} free + the serving version's ${showBytes(device.activeBytes)})`
    : `the search memory budget of ${showBytes(device.budgetBytes)}`;
}

/** `bytes on cuda:0 (0.4 GB of it encoder weights)`. */
function onDevice(bytes: number, encoderBytes: number, device: DeviceSwapMemory): string {
  return `${showBytes(bytes)} on ${device.name}${encoderBytes > 0 ? ` (${showBytes(encoderBytes)} of it encoder weights)` : ''}`;
}

/**
 * Refuses, before anything is closed, a new version that does not fit a device even alone, once
 * the serving version's share there is freed: replace mode would close the serving one for nothing.
 */
function checkNextAlone(next: VersionMemory, devices: readonly DeviceSwapMemory[]): void {
  const over = devices.find((device) => device.limitBytes > 0 && device.nextBytes > device.limitBytes);
  if (!over) return;
  throw new ServiceError(
    'bad_request',
    `index ${next.index.indexPath} with its encoder needs ${onDevice(over.nextBytes, over.encoderBytes.next, over)}, over ${limitWords(over)}, even once the serving version is closed; ${WAYS_OUT}`,
    { indexPath: next.index.indexPath, budgetBytes: over.budgetBytes, neededBytes: over.nextBytes, device: over.name },
  );
}

/**
 * Plans the memory of swapping `active` (serving) for `next`: side by side when both fit every
 * device they hold memory on and the host, else replace; `setting` may force either (a forced
 * side by side that does not fit says so: `fits` false). Each device counts both versions' index
 * shares (devices hold equal slices, so the largest device's share stands for each) and the
 * encoders' weights where they run, against the budget and, on CUDA, against what the driver
 * reports free (`gpuFree`, by device name) plus what the serving version holds there. Refuses,
 * before anything is closed, a `next` that does not fit even alone. The serving version's
 * anonymous memory is already outside MemAvailable, but its mapped pages are counted there as
 * reclaimable cache, while side by side keeps them in use: they count again.
 */
export function planSwap(
  active: VersionMemory,
  next: VersionMemory,
  budgetBytes: number,
  host: HostMemory,
  setting: SwapModeSetting,
  gpuFree: ReadonlyMap<string, number> = new Map(),
): SwapPlan {
  const onHost = (version: VersionMemory) => (version.encoder.device === 'cpu' ? version.encoder.bytes : 0);
  // The new index must fit alone, with what closing the serving version gives back (its anonymous
  // memory and encoder; its mapped pages already count as available) and what the new encoder takes.
  // Its load warns of a budget override; here it would only repeat it.
  const leftForIndex = host.usableBytes + active.index.hostAnonymousBytes + onHost(active) - onHost(next);
  checkSearchMemory(next.index, budgetBytes, { ...host, usableBytes: leftForIndex }, () => undefined);
  const devices = deviceMemory(active, next, budgetBytes, gpuFree);
  checkNextAlone(next, devices);
  const device = devices.reduce((tightest, candidate) =>
    roomForBoth(candidate) < roomForBoth(tightest) || (roomForBoth(candidate) === roomForBoth(tightest) && candidate.activeBytes + candidate.nextBytes > tightest.activeBytes + tightest.nextBytes)
      ? candidate
      : tightest,
  );
  const hostSizes = { activeBytes: hostShare(active.index) + onHost(active), nextBytes: hostShare(next.index) + onHost(next), usableBytes: host.usableBytes };
  const both = device.activeBytes + device.nextBytes;
  const bothOnDevice = onDevice(both, device.encoderBytes.active + device.encoderBytes.next, device);
  const overDevice = roomForBoth(device) < 0;
  const hostNeeds = active.index.hostMappedBytes + hostSizes.nextBytes;
  const overHost = hostNeeds > host.usableBytes;
  const fits = !overDevice && !overHost;
  const why = overDevice
    ? `both versions need ${bothOnDevice}, over ${limitWords(device)}`
    : overHost
      ? `both versions need ${showBytes(hostNeeds)} more of this host's memory than the ${showBytes(host.usableBytes)} it has left`
      : `both versions fit: ${bothOnDevice}${device.limitBytes > 0 ? ` of ${limitWords(device)}` : ''}, ${showBytes(hostNeeds)} of the host's ${showBytes(host.usableBytes)}`;
  const sizes = { fits, device, devices, host: hostSizes };
  if (setting === 'side-by-side' && !fits) {
    return { mode: setting, reason: `--swap_mode side-by-side forced though they do not fit (${why}): loading the new version beside the serving one may run out of memory`, ...sizes };
  }
  if (setting !== 'auto') return { mode: setting, reason: `--swap_mode ${setting} (${why})`, ...sizes };
  return { mode: fits ? 'side-by-side' : 'replace', reason: why, ...sizes };
}
