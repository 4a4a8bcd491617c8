import onnxProto from 'onnx-proto';
import { float32ToFloat16 } from './half-precision.js';

const { onnx } = onnxProto;
type NodeProto = onnxProto.onnx.INodeProto;
type TensorProto = onnxProto.onnx.ITensorProto;
type AttributeProto = onnxProto.onnx.IAttributeProto;
type ValueInfoProto = onnxProto.onnx.IValueInfoProto;

/** Opset 17 is the first with LayerNormalization as one operator. */
const OPSET = 17;
const IR_VERSION = 8;

/**
 * `fp16` stores weights and computes in half precision (for CUDA); `int8` runs the linear layers
 * as integer matrix products (for CPU) and the rest in float32. Outputs are float32 in each.
 */
export type GraphPrecision = 'fp32' | 'fp16' | 'int8';

const { DataType } = onnx.TensorProto;
const { AttributeType } = onnx.AttributeProto;

type AttributeValue = number | number[] | { float: number };

/** Collects nodes and initializers with unique names; one builder per graph. */
export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private counter = 0;

  constructor(readonly precision: GraphPrecision) {}

  get floatType(): number {
    return this.precision === 'fp16' ? DataType.FLOAT16 : DataType.FLOAT;
  }

  op(opType: string, inputs: string[], attributes: Record<string, AttributeValue> = {}, output?: string): string {
    const name = this.nodeName(opType);
    return this.node(name, opType, inputs, [output ?? `${name}_out`], attributes)[0]!;
  }

  /** An operator with several outputs (TopK), named `<node>_out<i>`. */
  ops(opType: string, inputs: string[], outputs: number, attributes: Record<string, AttributeValue> = {}): string[] {
    const name = this.nodeName(opType);
    const names = Array.from({ length: outputs }, (_, i) => `${name}_out${i}`);
    return this.node(name, opType, inputs, names, attributes);
  }

  /** The serialised ModelProto of the graph built so far. */
  serialize(name: string, input: ValueInfoProto[], output: ValueInfoProto[]): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: IR_VERSION,
      producerName: 'agentic-retriever',
      opsetImport: [{ domain: '', version: OPSET }],
      graph: { name, node: this.nodes, initializer: this.initializers, input, output },
    });
    return onnx.ModelProto.encode(model).finish();
  }

  private nodeName(opType: string): string {
    return `${opType}_${this.counter++}`;
  }

  private node(name: string, opType: string, input: string[], output: string[], attributes: Record<string, AttributeValue>): string[] {
    this.nodes.push({
      name,
      opType,
      input,
      output,
      attribute: Object.entries(attributes).map(([key, value]) => attribute(key, value)),
    });
    return output;
  }

  /** A float initializer in the graph's precision. */
  floats(name: string, dims: number[], values: Float32Array): string {
    this.initializers.push({ name, dims, dataType: this.floatType, rawData: floatBytes(values, this.precision) });
    return name;
  }

  int8s(name: string, dims: number[], values: Int8Array): string {
    this.initializers.push({ name, dims, dataType: DataType.INT8, rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) });
    return name;
  }

  /** A float constant, in the graph's precision unless `float32` is asked for. */
  scalar(value: number, type: 'graph' | 'float32' = 'graph'): string {
    const name = `const_${this.counter++}`;
    const precision = type === 'float32' ? 'fp32' : this.precision;
    const dataType = type === 'float32' ? DataType.FLOAT : this.floatType;
    this.initializers.push({ name, dims: [], dataType, rawData: floatBytes(Float32Array.of(value), precision) });
    return name;
  }

  int64s(values: number[]): string {
    const name = `const_${this.counter++}`;
    const raw = new BigInt64Array(values.map(BigInt));
    this.initializers.push({ name, dims: [values.length], dataType: DataType.INT64, rawData: bytesOf(raw) });
    return name;
  }
}

function attribute(name: string, value: AttributeValue): AttributeProto {
  if (Array.isArray(value)) return { name, type: AttributeType.INTS, ints: value };
  if (typeof value === 'object') return { name, type: AttributeType.FLOAT, f: value.float };
  return { name, type: AttributeType.INT, i: value };
}

function bytesOf(values: Float32Array | BigInt64Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

function floatBytes(values: Float32Array, precision: GraphPrecision): Uint8Array {
  return precision === 'fp16' ? float32ToFloat16(values) : bytesOf(values);
}

export function tensorValue(name: string, elemType: number, dims: Array<string | number>): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

