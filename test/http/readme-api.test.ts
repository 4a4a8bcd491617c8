import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { PROJECT_ROOT } from '../../src/project-files.js';
import { openApiDocument } from '../support/openapi-schemas.js';

const HTTP_METHODS = new Set(['get', 'post', 'put', 'patch', 'delete']);

describe("README's API table", function () {
  it('names every route openapi.yaml documents, with its method', async function () {
    const readme = await readFile(path.join(PROJECT_ROOT, 'README.md'), 'utf8');
    const table = readme.slice(readme.indexOf('\n## API\n'), readme.indexOf('\n## ', readme.indexOf('\n## API\n') + 1));
    // `GET /training/jobs[/:id]` names both the list and the item.
    const named = table.replaceAll(/`(\w+) ([^`\s]+)\[(\/:id)\]`/g, '`$1 $2` `$1 $2$3`');
    const missing = Object.entries(openApiDocument.paths)
      .filter(([route]) => route !== '/openapi.yaml')
      .flatMap(([route, operations]) =>
        Object.keys(operations)
          .filter((key) => HTTP_METHODS.has(key))
          .map((method) => `${method.toUpperCase()} ${route.replaceAll('{id}', ':id')}`),
      )
      .filter((operation) => !named.includes(`\`${operation}\``));
    assert.deepEqual(missing, []);
  });
});
