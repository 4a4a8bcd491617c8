import { writeFile } from 'node:fs/promises';
import { ServiceError } from '../errors.js';
import { readRegularFile } from '../file-io.js';
import { bfloat16ToFloat32, float16ToFloat32, float32ToBfloat16, float32ToFloat16 } from '../onnx/half-precision.js';
import { elementCount, type WeightTensor } from './weights.js';

/**
 * The safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes of
 * JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}`, then the
 * raw little-endian tensor bytes, offsets counted from the end of the header.
 */

export type FloatDtype = 'F32' | 'F16' | 'BF16';

/** Every dtype the format defines, so that files holding tensors we skip still read. */
const DTYPE_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

export interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

const HEADER_LENGTH_BYTES = 8;
/** The reference implementation refuses larger headers; so do we, before allocating one. */
const MAX_HEADER_BYTES = 100_000_000;

/** Reads every tensor of a `.safetensors` file, checking the header against the file's size. */
export async function readSafetensors(file: string): Promise<Map<string, SafetensorsEntry>> {
  const buffer = await readRegularFile(file, 'safetensors weights', { maxBytes: Infinity });
  const fail = (why: string) => new ServiceError('bad_request', `${file}: not a valid safetensors file: ${why}`);
  if (buffer.length < HEADER_LENGTH_BYTES) throw fail('shorter than its header length');
  const headerLength = Number(buffer.readBigUInt64LE(0));
  if (headerLength > MAX_HEADER_BYTES || HEADER_LENGTH_BYTES + headerLength > buffer.length) {
    throw fail(`header length ${headerLength} does not fit in ${buffer.length} bytes`);
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(buffer.toString('utf8', HEADER_LENGTH_BYTES, HEADER_LENGTH_BYTES + headerLength));
  } catch (error) {
    throw fail(`header is not JSON (${(error as Error).message})`);
  }
  const dataStart = HEADER_LENGTH_BYTES + headerLength;
  const dataLength = buffer.length - dataStart;
  const entries = new Map<string, SafetensorsEntry>();
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: offsets } = value as HeaderEntry;
    const width = DTYPE_BYTES[dtype];
    if (width === undefined) throw fail(`tensor ${name} has unknown dtype ${String(dtype)}`);
    const [begin, end] = offsets ?? [];
    if (!Number.isInteger(begin) || !Number.isInteger(end) || begin > end || end > dataLength) {
      throw fail(`tensor ${name} has offsets ${JSON.stringify(offsets)} outside the ${dataLength} data bytes`);
    }
    if (end - begin !== elementCount(shape) * width) {
      throw fail(`tensor ${name}: ${end - begin} bytes do not hold ${dtype}[${shape.join(', ')}]`);
    }
    entries.set(name, { dtype, shape, bytes: buffer.subarray(dataStart + begin, dataStart + end) });
  }
  return entries;
}

/** A float tensor widened to float32 (exactly: every F16 and BF16 value is a float32 value). */
export function toFloat32(entry: SafetensorsEntry, name: string): Float32Array {
  switch (entry.dtype) {
    case 'F32': {
      const values = new Float32Array(entry.bytes.byteLength / 4);
      new Uint8Array(values.buffer).set(entry.bytes);
      return values;
    }
    case 'F16':
      return float16ToFloat32(entry.bytes);
    case 'BF16':
      return bfloat16ToFloat32(entry.bytes);
    default:
      throw new ServiceError('bad_request', `tensor ${name} has dtype ${entry.dtype}; only F32, F16 and BF16 are supported`);
  }
}

/** Narrows float32 values to `dtype`, rounding to nearest even as torch's `.half()`/`.bfloat16()` do. */
function encodeFloats(values: Float32Array, dtype: FloatDtype): Uint8Array {
  switch (dtype) {
    case 'F32':
      return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    case 'F16':
      return float32ToFloat16(values);
    case 'BF16':
      return float32ToBfloat16(values);
  }
}

/** Writes float tensors as one `.safetensors` file of a single dtype, in the map's order. */
export async function writeSafetensors(
  file: string,
  tensors: ReadonlyMap<string, WeightTensor>,
  dtype: FloatDtype,
  metadata: Record<string, string> = {},
): Promise<void> {
  const header: Record<string, unknown> = { __metadata__: metadata };
  const payloads: Uint8Array[] = [];
  let offset = 0;
  for (const [name, tensor] of tensors) {
    const bytes = encodeFloats(tensor.data, dtype);
    header[name] = { dtype, shape: tensor.shape, data_offsets: [offset, offset + bytes.length] };
    payloads.push(bytes);
    offset += bytes.length;
  }
  // Padding the header to 8 bytes keeps every tensor aligned, as the reference writer does.
  let headerText = JSON.stringify(header);
  headerText += ' '.repeat((8 - (Buffer.byteLength(headerText) % 8)) % 8);
  const headerBytes = Buffer.from(headerText, 'utf8');
  const lengthBytes = Buffer.alloc(HEADER_LENGTH_BYTES);
  lengthBytes.writeBigUInt64LE(BigInt(headerBytes.length));
  await writeFile(file, [lengthBytes, headerBytes, ...payloads]);
}
