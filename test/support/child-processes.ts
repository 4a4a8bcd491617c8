import { readdir, readFile } from 'node:fs/promises';

/** This process's child process ids (Linux /proc), e.g. to see a faiss host start or end. */
export async function childPids(): Promise<string[]> {
  const children: string[] = [];
  for (const task of await readdir(`/proc/${process.pid}/task`)) {
    children.push(...(await readFile(`/proc/${process.pid}/task/${task}/children`, 'utf8')).split(' ').filter(Boolean));
  }
  return children;
}
