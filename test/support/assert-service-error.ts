import assert from 'node:assert/strict';
import type { ErrorCode } from '../../src/errors.js';
import { ServiceError } from '../../src/errors.js';

/** An `assert.rejects` validator: a ServiceError with this code and a message matching `pattern`. */
export function isServiceError(code: ErrorCode, pattern: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof ServiceError, `expected a ServiceError, got ${String(error)}`);
    assert.equal(error.code, code);
    assert.match(error.message, pattern);
    return true;
  };
}
