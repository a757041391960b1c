import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger } from '../src/logger.js';

test('passwords, hashes, tokens and authorization headers never reach the log lines', () => {
  const lines: string[] = [];
  const log = createLogger('info', { write: (m: string) => void lines.push(m) });
  const hash = '$2b$10$abcdefghijklmnopqrstuuJ0Tzi4S7tL4SG6wHkcp7f3jX.0cCxBG';
  log.child({ module: 't' }).info(
    { password: 'pw-secret', passwordHash: hash, token: 'tok-secret', student: { passwordHash: hash }, req: { headers: { authorization: 'Bearer tok-secret' } } },
    'login',
  );
  const out = lines.join('');
  assert.ok(out.includes('"msg":"login"'));
  for (const secret of ['pw-secret', hash, 'tok-secret']) assert.ok(!out.includes(secret), `leaked ${secret}: ${out}`);
});
