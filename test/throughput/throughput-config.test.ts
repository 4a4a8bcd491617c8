import assert from 'node:assert/strict';
import { CONFIG_DEFAULTS, parseServeArgs } from '../../src/config.js';
import { isServiceError } from '../support/assert-service-error.js';

describe('throughput settings: batching, queue and result cache', function () {
  it('defaults to merging up to 256 queries at once, an 8192-query queue, a 64 MiB cache and 32-row encoder runs', function () {
    const config = parseServeArgs([], {});
    assert.equal(config.batchMaxQueries, 256);
    assert.equal(config.batchMaxTokens, 16_384);
    assert.equal(config.batchMaxWaitMs, 0);
    assert.equal(config.queueMaxQueries, 8192);
    assert.equal(config.resultCacheBytes, 64 * 2 ** 20);
    assert.equal(config.encoderBatchRows, 32);
    assert.equal(CONFIG_DEFAULTS.resultCacheBytes, config.resultCacheBytes);
  });

  it('reads flags and RETRIEVER_* variables, with 0 turning the cache off and sizes in bytes notation', function () {
    const config = parseServeArgs(['--batch_max_queries', '1', '--result_cache_size', '0', '--batch-max-wait-ms', '5'], {
      RETRIEVER_QUEUE_MAX_QUERIES: '100',
      RETRIEVER_BATCH_MAX_TOKENS: '4096',
    });
    assert.deepEqual(
      [config.batchMaxQueries, config.resultCacheBytes, config.batchMaxWaitMs, config.queueMaxQueries, config.batchMaxTokens],
      [1, 0, 5, 100, 4096],
    );
    assert.equal(parseServeArgs(['--result_cache_size', '1gb'], {}).resultCacheBytes, 2 ** 30);
  });

  it('refuses values that cannot work, naming the setting', function () {
    assert.throws(() => parseServeArgs(['--batch_max_queries', '0'], {}), isServiceError('bad_request', /--batch_max_queries/));
    assert.throws(() => parseServeArgs(['--result_cache_size', 'lots'], {}), isServiceError('bad_request', /--result_cache_size/));
    assert.throws(() => parseServeArgs([], { RETRIEVER_QUEUE_MAX_QUERIES: '-1' }), isServiceError('bad_request', /RETRIEVER_QUEUE_MAX_QUERIES/));
  });
});
