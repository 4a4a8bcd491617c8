import path from 'node:path';
import { Tokenizer } from 'tokenizers';
import { badRequest } from '../errors.js';
import { checkRegularFile, METADATA_FILE_LIMIT } from '../file-io.js';
import { TOKENIZER_FILE } from './tokenizer-files.js';
import { PAD_TOKEN } from './vocabulary.js';

/** One padded batch as BERT's int64 inputs, row-major `rows × sequenceLength`. */
export interface TokenizedBatch {
  rows: number;
  sequenceLength: number;
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  tokenTypeIds: BigInt64Array;
}

/**
 * A model folder's `tokenizer.json`, run by Hugging Face's own Rust tokenizer (the core of HF
 * Python's fast tokenizers), so ids match the reference pipeline on every input.
 */
export class WordPieceTokenizer {
  private constructor(
    private readonly tokenizer: Tokenizer,
    readonly padTokenId: number,
  ) {}

  static async load(modelDir: string): Promise<WordPieceTokenizer> {
    const file = path.join(path.resolve(modelDir), TOKENIZER_FILE);
    await checkRegularFile(file, 'tokenizer', {
      maxBytes: METADATA_FILE_LIMIT,
      missing: `no ${TOKENIZER_FILE} in model folder ${path.dirname(file)}`,
    });
    let tokenizer: Tokenizer;
    try {
      tokenizer = Tokenizer.fromFile(file);
    } catch (error) {
      throw badRequest(`cannot load the tokenizer of ${path.dirname(file)}: ${(error as Error).message}`);
    }
    // A checkpoint's file may carry padding or truncation settings; HF Python's call-time
    // arguments override them, and we pad and truncate per batch ourselves.
    tokenizer.disablePadding();
    tokenizer.disableTruncation();
    // Padded positions are masked out, so any valid id pads; BERT vocabularies name it [PAD].
    return new WordPieceTokenizer(tokenizer, tokenizer.tokenToId(PAD_TOKEN) ?? 0);
  }

  /**
   * Token ids of each text with the template's specials (`[CLS] … [SEP]`), at most `maxLength`
   * long. A longer text keeps its head and the final special token, as HF Python's truncation
   * does. Truncating here rather than with `setTruncation` keeps the shared tokenizer stateless
   * while calls with different lengths overlap.
   */
  async tokenIdsOf(texts: readonly string[], maxLength: number): Promise<number[][]> {
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw badRequest(`max length must be an integer of at least 2, got ${maxLength}`);
    }
    const encodings = await this.tokenizer.encodeBatch([...texts], { addSpecialTokens: true });
    return encodings.map((encoding) => {
      const ids = encoding.getIds();
      return ids.length <= maxLength ? ids : [...ids.slice(0, maxLength - 1), ids[ids.length - 1]!];
    });
  }

  /** {@link tokenIdsOf} for one text. */
  async tokenIds(text: string, maxLength: number): Promise<number[]> {
    const [ids] = await this.tokenIdsOf([text], maxLength);
    return ids!;
  }

  /** The vocabulary strings of `ids`, for inspection and tests. */
  tokensOf(ids: readonly number[]): string[] {
    return ids.map((id) => this.tokenizer.idToToken(id) ?? '');
  }
}

/** Pads `sequences` to the longest; padding has mask 0, every token type is 0 (single segment). */
export function padBatch(sequences: readonly (readonly number[])[], padTokenId: number): TokenizedBatch {
  const rows = sequences.length;
  const sequenceLength = sequences.reduce((longest, ids) => Math.max(longest, ids.length), 0);
  const inputIds = new BigInt64Array(rows * sequenceLength).fill(BigInt(padTokenId));
  const attentionMask = new BigInt64Array(rows * sequenceLength);
  sequences.forEach((ids, row) => {
    const offset = row * sequenceLength;
    ids.forEach((id, position) => {
      inputIds[offset + position] = BigInt(id);
      attentionMask[offset + position] = 1n;
    });
  });
  return { rows, sequenceLength, inputIds, attentionMask, tokenTypeIds: new BigInt64Array(rows * sequenceLength) };
}
