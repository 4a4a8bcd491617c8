import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { badRequest } from '../errors.js';
import { readRegularFile } from '../file-io.js';
import {
  BERT_UNCASED_NORMALIZER,
  CLS_TOKEN,
  CONTINUING_SUBWORD_PREFIX,
  MASK_TOKEN,
  PAD_TOKEN,
  SEP_TOKEN,
  SPECIAL_TOKENS,
  UNK_TOKEN,
} from './vocabulary.js';

export const VOCAB_FILE = 'vocab.txt';
export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
export const SPECIAL_TOKENS_MAP_FILE = 'special_tokens_map.json';

const SPECIAL_TOKENS_MAP = {
  cls_token: CLS_TOKEN,
  mask_token: MASK_TOKEN,
  pad_token: PAD_TOKEN,
  sep_token: SEP_TOKEN,
  unk_token: UNK_TOKEN,
};

/**
 * Writes the four tokenizer files of a Hugging Face bert-base-uncased folder for `tokens`
 * (`tokens[i]` has id i), so Hugging Face's tokenizers (Rust, Python, JS) load the folder as is.
 */
export async function writeTokenizerFiles(
  dir: string,
  tokens: readonly string[],
  options: { modelMaxLength: number },
): Promise<void> {
  const specialIds = specialTokenIds(tokens);
  await mkdir(dir, { recursive: true });
  await Promise.all([
    writeVocabularyFile(path.join(dir, VOCAB_FILE), tokens),
    writeJson(path.join(dir, TOKENIZER_FILE), tokenizerJson(tokens, specialIds)),
    writeJson(path.join(dir, TOKENIZER_CONFIG_FILE), tokenizerConfig(specialIds, options.modelMaxLength)),
    writeJson(path.join(dir, SPECIAL_TOKENS_MAP_FILE), SPECIAL_TOKENS_MAP),
  ]);
}

/** Writes `tokens` as a `vocab.txt`: one token per line, line number is the id. */
export async function writeVocabularyFile(file: string, tokens: readonly string[]): Promise<void> {
  await writeFile(file, tokens.map((token) => token + '\n').join(''));
}

/** Reads a `vocab.txt` as BertTokenizer does: one token per line, line number is the id. */
export async function readVocabularyFile(file: string): Promise<string[]> {
  const text = (await readRegularFile(file, 'vocabulary')).toString('utf8');
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

function specialTokenIds(tokens: readonly string[]): Map<string, number> {
  const ids = new Map<string, number>();
  for (const special of SPECIAL_TOKENS) {
    const id = tokens.indexOf(special);
    if (id < 0) throw badRequest(`vocabulary lacks the special token ${special}`);
    ids.set(special, id);
  }
  return ids;
}

function tokenizerJson(tokens: readonly string[], specialIds: ReadonlyMap<string, number>): unknown {
  const clsId = specialIds.get(CLS_TOKEN);
  const sepId = specialIds.get(SEP_TOKEN);
  const special = (id: string, typeId: number) => ({ SpecialToken: { id, type_id: typeId } });
  const sequence = (id: 'A' | 'B', typeId: number) => ({ Sequence: { id, type_id: typeId } });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [...specialIds]
      .sort(([, a], [, b]) => a - b)
      .map(([content, id]) => ({
        id,
        content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      })),
    normalizer: BERT_UNCASED_NORMALIZER,
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [special(CLS_TOKEN, 0), sequence('A', 0), special(SEP_TOKEN, 0)],
      pair: [special(CLS_TOKEN, 0), sequence('A', 0), special(SEP_TOKEN, 0), sequence('B', 1), special(SEP_TOKEN, 1)],
      special_tokens: {
        [CLS_TOKEN]: { id: CLS_TOKEN, ids: [clsId], tokens: [CLS_TOKEN] },
        [SEP_TOKEN]: { id: SEP_TOKEN, ids: [sepId], tokens: [SEP_TOKEN] },
      },
    },
    decoder: { type: 'WordPiece', prefix: CONTINUING_SUBWORD_PREFIX, cleanup: true },
    model: {
      type: 'WordPiece',
      unk_token: UNK_TOKEN,
      continuing_subword_prefix: CONTINUING_SUBWORD_PREFIX,
      max_input_chars_per_word: 100,
      vocab: Object.fromEntries(tokens.map((token, id) => [token, id])),
    },
  };
}

function tokenizerConfig(specialIds: ReadonlyMap<string, number>, modelMaxLength: number): unknown {
  const addedTokensDecoder = Object.fromEntries(
    [...specialIds]
      .sort(([, a], [, b]) => a - b)
      .map(([content, id]) => [
        String(id),
        { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
      ]),
  );
  return {
    added_tokens_decoder: addedTokensDecoder,
    clean_up_tokenization_spaces: true,
    ...SPECIAL_TOKENS_MAP,
    do_lower_case: true,
    model_max_length: modelMaxLength,
    strip_accents: null,
    tokenize_chinese_chars: true,
    tokenizer_class: 'BertTokenizer',
  };
}

async function writeJson(file: string, value: unknown): Promise<void> {
  await writeFile(file, JSON.stringify(value, null, 2) + '\n');
}
