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
export function spellingAlias(option: Option): Option | undefined {
  const name = option.long?.slice(2);
  if (name === undefined || otherSpelling(name) === name) return undefined;
  const alias = new Option(option.flags.replace(`--${name}`, `--${otherSpelling(name)}`)).hideHelp();
  if (option.parseArg) alias.argParser(option.parseArg);
  return alias;
}

/**
 * Accepts both spellings of every option of `command` (`--batch-size` and `--batch_size`), as
 * `serve` does with its settings: the other spelling is a hidden option whose value is moved to
 * the documented one before the action runs. Call it after the options are declared.
 */
export function acceptBothSpellings(command: Command): Command {
  const pairs = command.options.flatMap((option) => {
    const alias = spellingAlias(option);
    return alias ? [{ option, alias }] : [];
  });
  for (const { alias } of pairs) command.addOption(alias);
  return command.hook('preAction', (_hooked, action) => {
    for (const { option, alias } of pairs) {
      if (action.getOptionValueSource(alias.attributeName()) !== 'cli') continue;
      const value: unknown = action.getOptionValue(alias.attributeName());
      if (action.getOptionValueSource(option.attributeName()) === 'cli' && action.getOptionValue(option.attributeName()) !== value) {
        throw badRequest(`${option.long} and ${alias.long} were both given with different values`, { field: option.long });
      }
      action.setOptionValueWithSource(option.attributeName(), value, 'cli');
    }
  });
}

/** A command's result, for a person or a script to read. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
