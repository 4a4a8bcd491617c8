import { rm } from 'node:fs/promises';
import { pathExists } from '../file-io.js';
import type { BuildIndexResult } from './build-index.js';
import type { ConvertIndexResult } from './convert-index.js';
import { partialRowsWritten } from './ixfi-writer.js';

/** FlashRAG's default `--faiss_type`: the encoded vectors themselves, no conversion. */
export const FLAT_TYPE = 'Flat';

/** Where a build of `faissType` encodes the corpus: `outPath` itself for Flat, `<out>.flat` for a type converted from it. */
export function encodedFlatPath(outPath: string, faissType = FLAT_TYPE): string {
  return faissType === FLAT_TYPE ? outPath : `${outPath}.flat`;
}

/**
 * Rows a stopped build of `outPath` as `faissType` has encoded: all `rowsTotal` when only its
 * conversion is left (a complete `<out>.flat`), else those of its partial file.
 */
export async function rowsEncoded(outPath: string, faissType: string | undefined, rowsTotal: number): Promise<number> {
  const flatPath = encodedFlatPath(outPath, faissType);
  if (flatPath !== outPath && (await pathExists(flatPath))) return rowsTotal;
  return partialRowsWritten(flatPath);
}

/** A non-Flat build: the Flat it encoded or merged (absent when a complete one was reused) and its conversion. */
export interface TypedBuildResult<Encoded = BuildIndexResult> {
  encoded?: Encoded;
  conversion: ConvertIndexResult;
}

export interface TypedBuildSteps<Encoded = BuildIndexResult> {
  outPath: string;
  faissType?: string;
  /** Encode again even when a complete `<out>.flat` is there. */
  restart?: boolean;
  /** Writes the Flat index at `flatPath`: encodes the corpus (resuming its partial file as any build) or merges parts. */
  encode: (flatPath: string) => Promise<Encoded>;
  /** Converts the Flat at `flatPath` into `outPath` as `faissType`. */
  convert: (flatPath: string, faissType: string) => Promise<ConvertIndexResult>;
  /** Told when a complete Flat from an earlier run is converted without encoding. */
  onReuse?: (flatPath: string) => void;
}

/**
 * `build-index --faiss_type`, `merge-index --faiss_type` and the training routes' index jobs: a
 * Flat index is encoded (or merged) straight into `outPath`; any other type is written into
 * `<out>.flat`, converted into `outPath` without re-encoding, and the Flat deleted. A stopped
 * conversion keeps the complete Flat, so the next build only converts.
 */
export async function buildIndexOfType<Encoded = BuildIndexResult>(steps: TypedBuildSteps<Encoded>): Promise<Encoded | TypedBuildResult<Encoded>> {
  const { outPath, faissType = FLAT_TYPE } = steps;
  const flatPath = encodedFlatPath(outPath, faissType);
  if (flatPath === outPath) return steps.encode(outPath);
  const reuse = !steps.restart && (await pathExists(flatPath));
  if (reuse) steps.onReuse?.(flatPath);
  const encoded = reuse ? undefined : await steps.encode(flatPath);
  const conversion = await steps.convert(flatPath, faissType);
  await rm(flatPath);
  return { ...(encoded && { encoded }), conversion };
}
