import { Command, InvalidArgumentError, Option } from 'commander';
import { badRequest } from './errors.js';
import type { ValueType } from './value-types.js';

/** A commander option parser reading `type`; its refusal reads "option '--x <n>' argument 'y' is invalid. expected …". */
export function argParser<T>(type: ValueType<T>): (raw: string) => T {
  return (raw) => {
    const value = type.read(raw);
    if (value === undefined) throw new InvalidArgumentError(`expected ${type.expected}`);
    return value;
  };
}

export function dashed(flag: string): string {
  return flag.replaceAll('_', '-');
}

/** `index_path` ↔ `index-path`: Search-R1 writes flags with underscores, most CLIs with dashes. */
function otherSpelling(flag: string): string {
  return flag.includes('_') ? dashed(flag) : flag.replaceAll('-', '_');
}

/** The hidden other spelling of an option (same value and parser), or undefined when it has a single spelling. */
function spellingAlias(option: Option): Option | undefined {
  const name = option.long?.slice(2);
  if (name === undefined || otherSpelling(name) === name) return undefined;
  const alias = new Option(option.flags.replace(`--${name}`, `--${otherSpelling(name)}`)).hideHelp();
  if (option.parseArg) alias.argParser(option.parseArg);
  return alias;
}

interface SpellingPair {
  option: Option;
  alias: Option;
}

/** Each command's documented options and their hidden other spellings, as {@link addSpellingAliases} added them. */
const spellingPairs = new WeakMap<Command, SpellingPair[]>();

/**
 * Adds the hidden other spelling of every option of `command` declared so far (`--batch-size`
 * and `--batch_size`). Call it after the options are declared; {@link adoptAliasValues} then
 * moves what was given under an alias to the documented option.
 */
export function addSpellingAliases(command: Command): Command {
  const pairs = command.options.flatMap((option) => {
    const alias = spellingAlias(option);
    return alias ? [{ option, alias }] : [];
  });
  for (const { alias } of pairs) command.addOption(alias);
  spellingPairs.set(command, [...(spellingPairs.get(command) ?? []), ...pairs]);
  return command;
}

/**
 * Moves each value given under an alias on the command line to its documented option, as given
 * there; refuses the two spellings given with different values.
 */
export function adoptAliasValues(command: Command): void {
  for (const { option, alias } of spellingPairs.get(command) ?? []) {
    if (command.getOptionValueSource(alias.attributeName()) !== 'cli') continue;
    const value: unknown = command.getOptionValue(alias.attributeName());
    if (command.getOptionValueSource(option.attributeName()) === 'cli' && command.getOptionValue(option.attributeName()) !== value) {
      throw badRequest(`${option.long} and ${alias.long} were both given with different values`, { field: option.long });
    }
    command.setOptionValueWithSource(option.attributeName(), value, 'cli');
  }
}

/**
 * Accepts both spellings of every option of `command`, as `serve` does with its settings: the
 * other spelling is a hidden option whose value is moved to the documented one before the
 * action runs. Call it after the options are declared.
 */
export function acceptBothSpellings(command: Command): Command {
  return addSpellingAliases(command).hook('preAction', (_hooked, action) => adoptAliasValues(action));
}

/** A command's result, for a person or a script to read. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
