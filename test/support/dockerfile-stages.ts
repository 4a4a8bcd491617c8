/** What a built target of a Dockerfile runs with: its own and its parent stages' instructions. */
export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  env: Record<string, string>;
  expose: number[];
  volumes: string[];
  /** The HEALTHCHECK's command, exec form. */
  healthcheck: string[];
}

interface Stage {
  name: string;
  from: string;
  instructions: { keyword: string; args: string }[];
}

/** Instructions of a Dockerfile by stage: comments dropped, continuation lines joined. */
export function dockerfileStages(text: string): Stage[] {
  const logical = text
    .split('\n')
    .filter((line) => !/^\s*#/.test(line))
    .join('\n')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, keyword = '', args = ''] = /^(\w+)\s+(.*)$/.exec(line) ?? [];
    const upper = keyword.toUpperCase();
    if (upper === 'FROM') {
      const [from = '', , name] = args.split(/\s+/);
      stages.push({ name: name ?? String(stages.length), from, instructions: [] });
    } else if (stages.length > 0) {
      stages.at(-1)!.instructions.push({ keyword: upper, args });
    }
  }
  return stages;
}

function execForm(args: string, keyword: string): string[] {
  const parsed = JSON.parse(args) as unknown;
  if (!Array.isArray(parsed) || !parsed.every((arg) => typeof arg === 'string')) {
    throw new Error(`${keyword} ${args}: expected the exec form (a JSON array of strings)`);
  }
  return parsed;
}

/** ENV's `KEY=value` pairs (values without spaces or quotes, as ours are). */
function envPairs(args: string): [string, string][] {
  return args.split(/\s+/).map((pair) => {
    const at = pair.indexOf('=');
    return [pair.slice(0, at), pair.slice(at + 1)];
  });
}

/** The configuration the image built with `--target target` runs with. */
export function imageConfig(stages: Stage[], target: string): ImageConfig {
  const stage = stages.find((candidate) => candidate.name === target);
  if (!stage) throw new Error(`no stage named ${target}`);
  const parent = stages.find((candidate) => candidate.name === stage.from);
  const config: ImageConfig = parent
    ? structuredClone(imageConfig(stages, parent.name))
    : { entrypoint: [], cmd: [], env: {}, expose: [], volumes: [], healthcheck: [] };
  for (const { keyword, args } of stage.instructions) {
    if (keyword === 'ENTRYPOINT') config.entrypoint = execForm(args, keyword);
    if (keyword === 'CMD') config.cmd = execForm(args, keyword);
    if (keyword === 'ENV') Object.assign(config.env, Object.fromEntries(envPairs(args)));
    if (keyword === 'EXPOSE') config.expose.push(...args.split(/\s+/).map(Number));
    if (keyword === 'VOLUME') config.volumes.push(...execForm(args, keyword));
    if (keyword === 'HEALTHCHECK') config.healthcheck = execForm(args.replace(/^.*?\bCMD\s+/, ''), keyword);
  }
  return config;
}
