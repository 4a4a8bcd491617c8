import bytes from 'bytes';
import type { WeightBitsSetting } from './onnx/int8-quantization.js';
import type { DevicePreference } from './onnx/execution-provider.js';
import type { RowSelection } from './index/row-range.js';

/**
 * How a text from the command line, the environment or a config file becomes a value. One per
 * kind of value, shared by `serve`'s settings and the other commands' options, which word the
 * same refusal differently ("--port must be …, got …" and commander's "expected …").
 */
export interface ValueType<T> {
  /** What a valid text looks like ("an integer between 1 and 10"). */
  expected: string;
  /** The value `raw` spells, or undefined when it spells none. */
  read(raw: string): T | undefined;
  /** What follows the flag, variable or file key in `serve`'s refusal; `must be <expected>, got <raw>` when absent. */
  refusal?: string;
  /** How `serve --help` shows a default; `String(value)` when absent. */
  show?(value: T): string;
}

export function integer(min: number, max = Number.MAX_SAFE_INTEGER): ValueType<number> {
  const unbounded = min <= Number.MIN_SAFE_INTEGER && max >= Number.MAX_SAFE_INTEGER;
  return {
    expected: unbounded ? 'an integer' : `an integer between ${min} and ${max}`,
    read: (raw) => {
      const value = Number(raw.trim());
      return raw.trim() !== '' && Number.isInteger(value) && value >= min && value <= max ? value : undefined;
    },
  };
}

/** The other commands' numbers: seeds may be negative, and a batch size or passage length is checked where it is used. */
export const anyInteger = integer(Number.MIN_SAFE_INTEGER);

export const text: ValueType<string> = {
  expected: 'a non-empty text',
  read: (raw) => (raw === '' ? undefined : raw),
  refusal: 'must not be empty',
};

export function oneOf<T extends string>(choices: readonly T[]): ValueType<T> {
  return {
    expected: `one of ${choices.join(', ')}`,
    read: (raw) => choices.find((choice) => choice === raw),
  };
}

export const device = oneOf<DevicePreference>(['cuda', 'cpu', 'auto']);

const weightBitsChoice = oneOf(['auto', '8', '7']);

export const weightBits: ValueType<WeightBitsSetting> = {
  expected: weightBitsChoice.expected,
  read: (raw) => {
    const choice = weightBitsChoice.read(raw);
    return choice === undefined || choice === 'auto' ? choice : (Number(choice) as 8 | 7);
  },
};

/** A size kept in `bytes` notation (`64mb`), for body-parser, which reads that notation itself. */
export const byteSize: ValueType<string> = {
  expected: 'a size such as 64mb or 1048576',
  read: (raw) => {
    const parsed = bytes.parse(raw);
    return parsed !== null && Number.isFinite(parsed) && parsed > 0 ? raw : undefined;
  },
};

/** A byte count in `bytes` notation (`64mb`), where 0 is allowed and means "off". */
export const byteCount: ValueType<number> = {
  expected: 'a size such as 64mb, 0 or 1048576',
  read: (raw) => {
    const parsed = bytes.parse(raw);
    return parsed !== null && Number.isFinite(parsed) && parsed >= 0 ? Math.floor(parsed) : undefined;
  },
  // As README writes it (64mb, and 0 for "off"), not as 67108864.
  show: (value) => (value > 0 ? (bytes.format(value, { unitSeparator: '' })?.toLowerCase() ?? String(value)) : String(value)),
};

/** Comma-separated device ordinals (`0,1,2,3`), each at most once. */
export const deviceList: ValueType<number[]> = {
  expected: 'distinct device ordinals separated by commas, such as 0,1',
  read: (raw) => {
    const parts = raw.split(',').map((part) => part.trim());
    const ordinals = parts.map((part) => Number(part));
    const valid = parts.every((part) => part !== '') && ordinals.every((n) => Number.isInteger(n) && n >= 0);
    return valid && new Set(ordinals).size === ordinals.length ? ordinals : undefined;
  },
};

/** `START:END` as a Python slice writes rows (END excluded; an empty END means the corpus's end). */
export const rowSlice: ValueType<RowSelection> = {
  expected: 'rows START:END (END excluded, empty for the end), such as 0:5000000',
  read: (raw) => {
    const match = /^(\d+):(\d*)$/.exec(raw.trim());
    if (!match) return undefined;
    return { rows: { start: Number(match[1]), ...(match[2] !== '' && { end: Number(match[2]) }) } };
  },
};

/** `I/N`: shard I (from 0) of N equal row ranges. */
export const shardOf: ValueType<RowSelection> = {
  expected: 'I/N, shard I of N numbered from 0 (0/4, 1/4, 2/4 and 3/4 for four shards)',
  read: (raw) => {
    const match = /^(\d+)\/(\d+)$/.exec(raw.trim());
    if (!match) return undefined;
    const shard = { index: Number(match[1]), count: Number(match[2]) };
    return shard.count > 0 && shard.index < shard.count ? { shard } : undefined;
  },
};

/** Switch values as they arrive from environment variables and config files. */
export const boolean: ValueType<boolean> = {
  expected: 'true or false',
  read: (raw) => {
    const lowered = raw.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(lowered)) return true;
    if (['0', 'false', 'no', 'off', ''].includes(lowered)) return false;
    return undefined;
  },
};
