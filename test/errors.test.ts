import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EngineError, ERROR_STATUS } from '../src/errors.js';

/** The one error type: codes map to statuses; refusals carry no stack, failures do. */
describe('EngineError', () => {
  it('takes its status from its code', () => {
    for (const code of Object.keys(ERROR_STATUS) as (keyof typeof ERROR_STATUS)[]) {
      const e = new EngineError(code, 'why');
      assert.equal(e.statusCode, ERROR_STATUS[code], code);
      assert.equal(e.code, code);
      assert.equal(e.message, 'why');
      assert.ok(e instanceof Error);
    }
  });

  it('captures no stack for a refusal (4xx), keeps one for a server-side failure (5xx), and leaves the stack limit as it was', () => {
    const limit = Error.stackTraceLimit;
    const refusal = new EngineError('SECTION_FULL', 'the section and its reserve queue are full');
    assert.equal(Error.stackTraceLimit, limit);
    assert.doesNotMatch(refusal.stack ?? '', /\n\s+at /, 'a refusal has no frames');
    assert.match(refusal.stack ?? '', /SECTION_FULL|full/);
    const failure = new EngineError('UNAVAILABLE', 'the message broker is unreachable');
    assert.match(failure.stack ?? '', /\n\s+at /, 'a failure keeps its frames for the logs');
    assert.equal(Error.stackTraceLimit, limit);
    // Ordinary errors made afterwards still get their stack.
    assert.match(new Error('x').stack ?? '', /\n\s+at /);
  });
});

describe('the codes the HTTP layer sends', () => {
  it('are all listed in src/errors.ts with the status they are sent with', async () => {
    const { CLIENT_ERROR_CODES } = await import('../src/http/error-handler.js');
    for (const [status, code] of Object.entries(CLIENT_ERROR_CODES)) {
      assert.ok(code in ERROR_STATUS, `${code} is missing from ERROR_STATUS`);
      assert.equal(ERROR_STATUS[code], Number(status), code);
    }
  });
});
