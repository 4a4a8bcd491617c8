import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PROJECT_ROOT } from '../../src/project-files.js';

/** The configuration deployments run; tests render this file, never a copy of it. */
export const NGINX_CONFIG = path.join(PROJECT_ROOT, 'deploy', 'nginx', 'retriever.conf');
/** Debian's nginx package (scripts/install.sh installs it). */
export const NGINX_BINARY = '/usr/sbin/nginx';

/** Where the rendered configuration sends traffic: ports on 127.0.0.1. */
export interface NginxPorts {
  listen: number;
  writer: number;
  replicas: number[];
}

/** Temp folders nginx writes request and response bodies to; the package's defaults are under /var/lib/nginx. */
const TEMP_PATHS = ['client_body_temp_path', 'proxy_temp_path', 'fastcgi_temp_path', 'uwsgi_temp_path', 'scgi_temp_path'];

/**
 * `deploy/nginx/retriever.conf` with the test's ports: its replica `server` lines become one per
 * port (with the file's own parameters), the writer's and the listen port are replaced, and the
 * temp paths point into `prefix`. Fails when the file no longer has the lines it replaces.
 */
export function renderNginxConfig(config: string, ports: NginxPorts, prefix: string): string {
  const replicaLine = /^(\s*)server replica-\d+:8000( [^;]*)?;\n/gm;
  const lines = [...config.matchAll(replicaLine)];
  if (lines.length === 0 || !/^\s*server writer:8000;$/m.test(config) || !/^\s*listen 8000;$/m.test(config) || !/^http \{$/m.test(config)) {
    throw new Error(`${NGINX_CONFIG} lacks the replica server lines, the writer's, "listen 8000;" or "http {" that tests replace`);
  }
  const [first] = lines;
  const [, indent, parameters = ''] = first!;
  const servers = ports.replicas.map((port) => `${indent}server 127.0.0.1:${port}${parameters};\n`).join('');
  let rendered = config.slice(0, first!.index) + servers + config.slice(first!.index).replace(replicaLine, '');
  rendered = rendered
    .replace(/^(\s*)server writer:8000;$/m, `$1server 127.0.0.1:${ports.writer};`)
    .replace(/^(\s*)listen 8000;$/m, `$1listen 127.0.0.1:${ports.listen};`)
    .replace(/^http \{$/m, `http {\n${TEMP_PATHS.map((name) => `  ${name} ${path.join(prefix, name)};`).join('\n')}`);
  return rendered;
}

export interface RunningNginx {
  url: string;
  /** Its stderr so far (warnings, upstream errors). */
  errors: string[];
  stop(): Promise<void>;
}

/** A real nginx, not daemonised, running the rendered configuration from its own prefix folder. */
export async function startNginx(ports: NginxPorts): Promise<RunningNginx> {
  if (!existsSync(NGINX_BINARY)) throw new Error(`${NGINX_BINARY} is missing: run scripts/install.sh (it installs Debian's nginx)`);
  const prefix = await mkdtemp(path.join(tmpdir(), 'nginx-'));
  // Workers drop to an unprivileged user when nginx runs as root: they must reach the temp folders.
  await chmod(prefix, 0o755);
  for (const name of TEMP_PATHS) {
    await mkdir(path.join(prefix, name));
    await chmod(path.join(prefix, name), 0o777);
  }
  const configFile = path.join(prefix, 'nginx.conf');
  await writeFile(configFile, renderNginxConfig(await readFile(NGINX_CONFIG, 'utf8'), ports, prefix));
  const child = spawn(NGINX_BINARY, ['-p', prefix, '-c', configFile, '-e', 'stderr', '-g', `daemon off; pid ${path.join(prefix, 'nginx.pid')};`]);
  const errors: string[] = [];
  child.stderr.setEncoding('utf8').on('data', (text: string) => errors.push(text));
  child.stdout.resume();
  const exited = once(child, 'close');
  const url = `http://127.0.0.1:${ports.listen}`;
  // Listening once it answers; an exit first (a bad line, a taken port) fails with what nginx said.
  for (;;) {
    const up = await fetch(`${url}/health`).then(
      () => true,
      () => false,
    );
    if (up) break;
    if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}): ${errors.join('')}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {
    url,
    errors,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGQUIT');
        await exited;
      }
      await rm(prefix, { recursive: true, force: true });
    },
  };
}
