import { parseCpuFlags, readCpuinfo } from '../cpu-flags.js';

/**
 * Weight quantization of the int8 graph (`model.int8.onnx`): symmetric int8 weights with one
 * scale per output column, multiplied against uint8 activations that DynamicQuantizeLinear
 * quantizes per run.
 */

/** 8 uses ±127; 7 uses ±63, for CPUs whose u8×s8 kernel can saturate (see {@link chooseWeightBits}). */
export type WeightBits = 8 | 7;

/** How a model folder's int8 graph was quantized; recorded in its manifest. */
export interface Int8Quantization {
  weightBits: WeightBits;
  /** Largest weight magnitude: 2^(bits−1) − 1. */
  weightRange: number;
  scheme: string;
  /** Why these bits: the CPU's int8 dot-product support, or an explicit setting. */
  reason: string;
}

export const INT8_SCHEME =
  'symmetric int8 weights, one scale per output column; uint8 activations quantized per run by DynamicQuantizeLinear';

export function weightRange(bits: WeightBits): number {
  return 2 ** (bits - 1) - 1;
}

export interface QuantizedLinearWeight {
  /** `[in, out]`, so that `x · W` is one MatMulInteger. */
  values: Int8Array;
  /** `[out]`: column `o` of the product is scaled by `scales[o]`. */
  scales: Float32Array;
}

/**
 * Quantizes a PyTorch Linear weight (`[out, in]`, row-major) to `bits`: each output row gets the
 * scale max|w| / range, values round to nearest. An all-zero row keeps scale 0 and zero values.
 */
export function quantizeLinearWeight(
  weight: Float32Array,
  outFeatures: number,
  inFeatures: number,
  bits: WeightBits,
): QuantizedLinearWeight {
  const range = weightRange(bits);
  const values = new Int8Array(weight.length);
  const scales = new Float32Array(outFeatures);
  for (let o = 0; o < outFeatures; o++) {
    let maxAbs = 0;
    for (let i = 0; i < inFeatures; i++) maxAbs = Math.max(maxAbs, Math.abs(weight[o * inFeatures + i]!));
    const scale = maxAbs / range;
    scales[o] = scale;
    if (scale === 0) continue;
    for (let i = 0; i < inFeatures; i++) {
      values[i * outFeatures + o] = Math.max(-range, Math.min(range, Math.round(weight[o * inFeatures + i]! / scale)));
    }
  }
  return { values, scales };
}

/** CPU flags that give x86 an int8 dot product which adds u8×s8 products without saturating. */
const INT8_DOT_PRODUCT_FLAGS = ['avx512_vnni', 'avx_vnni', 'amx_int8'] as const;

/** Which of {@link INT8_DOT_PRODUCT_FLAGS} a `/proc/cpuinfo` text lists. */
export function int8DotProductFlags(cpuinfo: string): string[] {
  const flags = parseCpuFlags(cpuinfo);
  return INT8_DOT_PRODUCT_FLAGS.filter((flag) => flags.has(flag));
}

export type WeightBitsSetting = 'auto' | WeightBits;

export interface HostCpu {
  arch: string;
  /** `/proc/cpuinfo`'s text, or undefined where it cannot be read. */
  cpuinfo?: string;
}

function thisCpu(): HostCpu {
  return { arch: process.arch, cpuinfo: readCpuinfo() };
}

/**
 * The weight bits for `setting`. `auto` takes 8 unless this is an x86 CPU without VNNI or AMX:
 * there ONNX Runtime's u8×s8 kernel multiplies with pmaddubsw, whose int16 sums of two products
 * saturate when both activations and weights are large (255 · 127 · 2 > 32767); weights within
 * ±63 keep every pair sum in range.
 */
export function chooseWeightBits(setting: WeightBitsSetting, cpu: HostCpu = thisCpu()): { weightBits: WeightBits; reason: string } {
  if (setting !== 'auto') return { weightBits: setting, reason: `set to ${setting} bits` };
  if (cpu.arch !== 'x64' && cpu.arch !== 'ia32') {
    return { weightBits: 8, reason: `auto: ${cpu.arch} has no pmaddubsw saturation to avoid` };
  }
  if (cpu.cpuinfo === undefined) {
    return { weightBits: 7, reason: 'auto: /proc/cpuinfo unreadable, so VNNI/AMX is not known to be present' };
  }
  const flags = int8DotProductFlags(cpu.cpuinfo);
  if (flags.length > 0) return { weightBits: 8, reason: `auto: the CPU has ${flags.join(', ')}` };
  return { weightBits: 7, reason: `auto: the CPU has none of ${INT8_DOT_PRODUCT_FLAGS.join(', ')}` };
}
