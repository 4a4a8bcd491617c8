import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { MemoryFiles } from '../../src/index/search-memory.js';

/** /proc/meminfo as the kernel writes it (kB), with the two fields the check reads among others. */
export function meminfo(totalBytes: number, availableBytes: number): string {
  return `MemTotal:       ${totalBytes / 1024} kB\nMemFree:          123456 kB\nMemAvailable:   ${availableBytes / 1024} kB\nCached:          4000000 kB\n`;
}

/** Memory files in `dir` for a host with this much RAM and MemAvailable and no cgroup limit. */
export async function fixtureHost(dir: string, totalBytes: number, availableBytes: number): Promise<MemoryFiles> {
  await writeFile(path.join(dir, 'meminfo'), meminfo(totalBytes, availableBytes));
  await writeFile(path.join(dir, 'self-cgroup'), '0::/\n');
  return { meminfo: path.join(dir, 'meminfo'), selfCgroup: path.join(dir, 'self-cgroup'), cgroupRoot: path.join(dir, 'no-cgroup') };
}
