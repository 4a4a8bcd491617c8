import { readFileSync } from 'node:fs';

let cpuinfo: { text: string | undefined } | undefined;

/** `/proc/cpuinfo`'s text, read once per process (the CPU does not change under it), or undefined where there is no such file (not Linux). */
export function readCpuinfo(): string | undefined {
  cpuinfo ??= { text: readProcCpuinfo() };
  return cpuinfo.text;
}

function readProcCpuinfo(): string | undefined {
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

let hostFlags: ReadonlySet<string> | undefined;

/** This CPU's feature flags (none where /proc/cpuinfo cannot be read), parsed once per process. */
export function hostCpuFlags(): ReadonlySet<string> {
  hostFlags ??= parseCpuFlags(readCpuinfo() ?? '');
  return hostFlags;
}
