import { Float16Array, getFloat16 } from '@petamoriken/float16';

/**
 * Conversions between float32 and the two 16-bit float formats of checkpoints and fp16 graphs,
 * in bulk: a model holds ~10⁸ values, and the library's per-value DataView accessors take
 * microseconds each.
 */

let float16Values: Float32Array | undefined;

/** Every float16 bit pattern's value, computed once by the library. */
function float16Table(): Float32Array {
  if (!float16Values) {
    const view = new DataView(new ArrayBuffer(2));
    float16Values = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) {
      view.setUint16(0, bits, true);
      float16Values[bits] = getFloat16(view, 0, true);
    }
  }
  return float16Values;
}

/** Little-endian 16-bit words of `bytes`, copied so that any byte offset works. */
function words(bytes: Uint8Array): Uint16Array {
  const result = new Uint16Array(bytes.byteLength / 2);
  new Uint8Array(result.buffer).set(bytes);
  return result;
}

export function float16ToFloat32(bytes: Uint8Array): Float32Array {
  const table = float16Table();
  return Float32Array.from(words(bytes), (bits) => table[bits]!);
}

/** Rounds to nearest even, as torch's `.half()` does. */
export function float32ToFloat16(values: Float32Array): Uint8Array {
  const half = new Float16Array(values);
  return new Uint8Array(half.buffer, half.byteOffset, half.byteLength);
}

/** bfloat16 is the upper half of a float32's bits. */
export function bfloat16ToFloat32(bytes: Uint8Array): Float32Array {
  const result = new Float32Array(bytes.byteLength / 2);
  const bits = new Uint32Array(result.buffer);
  const halves = words(bytes);
  for (let i = 0; i < halves.length; i++) bits[i] = halves[i]! << 16;
  return result;
}

/** Rounds to nearest even, as torch's `.bfloat16()` does. */
export function float32ToBfloat16(values: Float32Array): Uint8Array {
  const result = new Uint16Array(values.length);
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) {
    const word = bits[i]!;
    const isNaN = (word & 0x7fffffff) > 0x7f800000;
    result[i] = isNaN ? 0x7fc0 : (word + 0x7fff + ((word >>> 16) & 1)) >>> 16;
  }
  return new Uint8Array(result.buffer);
}
