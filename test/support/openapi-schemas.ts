import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { load as loadYaml } from 'js-yaml';
import type { Response } from 'supertest';
import { OPENAPI_PATH } from '../../src/project-files.js';

interface OpenApiResponse {
  $ref?: string;
  headers?: Record<string, { $ref?: string; required?: boolean }>;
  content?: Record<string, { schema: { $ref?: string } }>;
}

interface OpenApiDocument {
  paths: Record<string, Record<string, { responses: Record<string, OpenApiResponse> }>>;
  components: {
    responses: Record<string, OpenApiResponse>;
    headers: Record<string, { required?: boolean }>;
    schemas: Record<string, unknown>;
  };
}

export const openApiDocument = loadYaml(readFileSync(OPENAPI_PATH, 'utf8')) as OpenApiDocument;

// OpenAPI 3.1 schemas are JSON Schema 2020-12: the components load into Ajv as one schema
// document, and '#/components/schemas/X' references resolve inside it.
const ajv = new Ajv2020({ strict: false, allErrors: true });
ajv.addSchema({ $id: 'openapi', components: openApiDocument.components });

function resolveResponse(response: OpenApiResponse): OpenApiResponse {
  if (!response.$ref) return response;
  const name = response.$ref.replace('#/components/responses/', '');
  const resolved = openApiDocument.components.responses[name];
  assert.ok(resolved, `openapi.yaml: ${response.$ref} is not defined`);
  return resolved;
}

/** Asserts a supertest response is one that openapi.yaml documents for this route and status. */
export function assertMatchesOpenApi(method: string, route: string, res: Response): void {
  const operation = openApiDocument.paths[route]?.[method.toLowerCase()];
  assert.ok(operation, `openapi.yaml documents no ${method} ${route}`);
  const documented = operation.responses[String(res.status)];
  assert.ok(documented, `openapi.yaml documents no ${res.status} for ${method} ${route}`);
  const response = resolveResponse(documented);
  for (const [header, declared] of Object.entries(response.headers ?? {})) {
    const definition = declared.$ref ? openApiDocument.components.headers[declared.$ref.replace('#/components/headers/', '')] : declared;
    if (!definition?.required) continue;
    assert.ok(res.headers[header.toLowerCase()] !== undefined, `${method} ${route} ${res.status}: header ${header} missing`);
  }
  const schema = response.content?.['application/json']?.schema;
  if (!schema?.$ref) return;
  assertMatchesSchema(schema.$ref, res.body, `${method} ${route} ${res.status} body`);
}

/** Asserts a value matches a schema of openapi.yaml, e.g. one line of a JSON Lines response. */
export function assertMatchesSchema(ref: string, value: unknown, what: string): void {
  const validate = ajv.getSchema(`openapi${ref}`);
  assert.ok(validate, `openapi.yaml: ${ref} is not defined`);
  const valid = validate(value);
  assert.ok(valid, `${what} violates ${ref}: ${ajv.errorsText(validate.errors)}`);
}
