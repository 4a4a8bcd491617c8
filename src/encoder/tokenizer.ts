import path from 'node:path';
import { Tokenizer, TruncationStrategy } from 'tokenizers';
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
    const tokenizer = await loadTokenizerFile(modelDir);
    tokenizer.disableTruncation();
    return new WordPieceTokenizer(tokenizer, padTokenIdOf(tokenizer));
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

/**
 * A model folder's `tokenizer.json` in Hugging Face's Rust tokenizer, without the padding its file
 * may carry: HF Python's call-time arguments override it, and we pad per batch ourselves.
 */
async function loadTokenizerFile(modelDir: string): Promise<Tokenizer> {
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
  tokenizer.disablePadding();
  return tokenizer;
}

/** Padded positions are masked out, so any valid id pads; BERT vocabularies name it [PAD]. */
function padTokenIdOf(tokenizer: Tokenizer): number {
  return tokenizer.tokenToId(PAD_TOKEN) ?? 0;
}

/** One (query, passage) pair's tokens: `[CLS] query [SEP] passage [SEP]`, token type 0 then 1. */
export interface TokenizedPair {
  ids: number[];
  typeIds: number[];
}

/**
 * A cross-encoder's tokenizer: (query, passage) pairs with their token type ids, cut to
 * `maxLength` as HF Python's fast tokenizer does under sentence-transformers' CrossEncoder
 * (`truncation=True`, i.e. `longest_first`). The length is fixed per model, so unlike
 * {@link WordPieceTokenizer} the Rust tokenizer's own truncation runs, shared state and all.
 */
export class PairTokenizer {
  private constructor(
    private readonly tokenizer: Tokenizer,
    readonly padTokenId: number,
    readonly maxLength: number,
  ) {}

  static async load(modelDir: string, maxLength: number): Promise<PairTokenizer> {
    if (!Number.isInteger(maxLength) || maxLength < 4) {
      throw badRequest(`a pair's max length must be an integer of at least 4, got ${maxLength}`);
    }
    const tokenizer = await loadTokenizerFile(modelDir);
    tokenizer.setTruncation(maxLength, { strategy: TruncationStrategy.LongestFirst });
    return new PairTokenizer(tokenizer, padTokenIdOf(tokenizer), maxLength);
  }

  async pairsOf(pairs: readonly (readonly [string, string])[]): Promise<TokenizedPair[]> {
    // The binding's encodeBatch takes single texts only; each encode runs on libuv's pool.
    const encodings = await Promise.all(pairs.map(([query, passage]) => this.tokenizer.encode(query, passage, { addSpecialTokens: true })));
    return encodings.map((encoding) => ({ ids: encoding.getIds(), typeIds: encoding.getTypeIds() }));
  }
}

/**
 * Pads `sequences` to the longest; padding has mask 0 and token type 0. Token types are 0
 * throughout (a single segment) unless `typeIds` gives each sequence's.
 */
export function padBatch(
  sequences: readonly (readonly number[])[],
  padTokenId: number,
  typeIds?: readonly (readonly number[])[],
): TokenizedBatch {
  const rows = sequences.length;
  const sequenceLength = sequences.reduce((longest, ids) => Math.max(longest, ids.length), 0);
  const inputIds = new BigInt64Array(rows * sequenceLength).fill(BigInt(padTokenId));
  const attentionMask = new BigInt64Array(rows * sequenceLength);
  const tokenTypeIds = new BigInt64Array(rows * sequenceLength);
  sequences.forEach((ids, row) => {
    const offset = row * sequenceLength;
    ids.forEach((id, position) => {
      inputIds[offset + position] = BigInt(id);
      attentionMask[offset + position] = 1n;
    });
    typeIds?.[row]!.forEach((type, position) => {
      tokenTypeIds[offset + position] = BigInt(type);
    });
  });
  return { rows, sequenceLength, inputIds, attentionMask, tokenTypeIds };
}
