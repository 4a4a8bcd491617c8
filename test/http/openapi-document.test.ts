import assert from 'node:assert/strict';
import SwaggerParser from '@apidevtools/swagger-parser';
import { OPENAPI_PATH } from '../../src/project-files.js';
import { openApiDocument } from '../support/openapi-schemas.js';

describe('openapi.yaml', () => {
  it('is a valid OpenAPI 3.1 document whose references all resolve', async () => {
    const api = await SwaggerParser.validate(OPENAPI_PATH);
    assert.equal((api as { openapi?: string }).openapi, '3.1.0');
  });

  it('documents the Search-R1 fields, their extensions and defaults', () => {
    const request = openApiDocument.components.schemas.RetrieveRequest as {
      properties: Record<string, { description?: string; default?: unknown }>;
    };
    assert.deepEqual(Object.keys(request.properties).sort(), ['k', 'queries', 'query', 'questions', 'return_scores', 'top_k', 'topk', 'topk_rerank', 'topk_retrieval']);
    assert.equal(request.properties.return_scores!.default, false);
    assert.match(request.properties.topk!.description!, /Missing, null and 0 mean the server default/);
    assert.match(request.properties.questions!.description!, /\{question\} \[SEP\] \{query\}/);
  });
});
