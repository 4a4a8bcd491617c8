import path from 'node:path';
import { AutoTokenizer, env, type PreTrainedTokenizer } from '@huggingface/transformers';
import { badRequest } from '../errors.js';
import { checkRegularFile, METADATA_FILE_LIMIT } from '../file-io.js';
import { TOKENIZER_CONFIG_FILE, TOKENIZER_FILE } from './tokenizer-files.js';

/** Model files come only from local folders; a missing file must fail, never trigger a download. */
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.useFSCache = false;
env.useBrowserCache = false;

/** One padded batch as BERT's int64 inputs, row-major `rows × sequenceLength`. */
export interface TokenizedBatch {
  rows: number;
  sequenceLength: number;
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  tokenTypeIds: BigInt64Array;
}

/** A model folder's Hugging Face tokenizer, truncating the way HF Python does. */
export class WordPieceTokenizer {
  private constructor(
    private readonly tokenizer: PreTrainedTokenizer,
    readonly padTokenId: number,
  ) {}

  static async load(modelDir: string): Promise<WordPieceTokenizer> {
    // An absolute path is not a hub model id, so transformers.js reads it as a plain local path.
    const dir = path.resolve(modelDir);
    await checkRegularFile(path.join(dir, TOKENIZER_FILE), 'tokenizer', {
      maxBytes: METADATA_FILE_LIMIT,
      missing: `no ${TOKENIZER_FILE} in model folder ${dir}`,
    });
    // transformers.js reads this one by name too, when present.
    await checkRegularFile(path.join(dir, TOKENIZER_CONFIG_FILE), 'tokenizer config', { maxBytes: METADATA_FILE_LIMIT, optional: true });
    let tokenizer: PreTrainedTokenizer;
    try {
      tokenizer = await AutoTokenizer.from_pretrained(dir);
    } catch (error) {
      throw badRequest(`cannot load the tokenizer of ${dir}: ${(error as Error).message}`);
    }
    return new WordPieceTokenizer(tokenizer, tokenizer.pad_token_id ?? 0);
  }

  /**
   * Token ids with the template's specials (`[CLS] … [SEP]`), at most `maxLength` long. A longer
   * text keeps its head and the final special token, as HF Python's truncation does
   * (transformers.js would cut the final [SEP] off).
   */
  tokenIds(text: string, maxLength: number): number[] {
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw badRequest(`max length must be an integer of at least 2, got ${maxLength}`);
    }
    const ids = this.tokenizer.encode(text, { add_special_tokens: true });
    if (ids.length <= maxLength) return ids;
    return [...ids.slice(0, maxLength - 1), ids[ids.length - 1]];
  }

  /** The vocabulary strings of `ids`, for inspection and tests. */
  tokensOf(ids: readonly number[]): string[] {
    return ids.map((id) => this.tokenizer._tokenizer.id_to_token(id) ?? '');
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
