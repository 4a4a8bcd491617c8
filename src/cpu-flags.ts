import { readFileSync } from 'node:fs';

/** `/proc/cpuinfo`'s text, or undefined where there is no such file (not Linux). */
export function readCpuinfo(): string | undefined {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return undefined;
  }
}

/** The feature flags the first processor of a `/proc/cpuinfo` text lists. */
export function parseCpuFlags(cpuinfo: string): ReadonlySet<string> {
  return new Set(/^flags\s*:(.*)$/m.exec(cpuinfo)?.[1]?.trim().split(/\s+/));
}
