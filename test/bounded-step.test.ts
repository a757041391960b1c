import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { boundedStep } from '../src/bounded-step.js';

/** The shutdown's bounded steps (src/bounded-step.ts): done, failed or late, the shutdown goes on. */
function capture() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'warn' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  return { log, lines };
}

test('a step that finishes in time is waited for and logs nothing', async () => {
  const { log, lines } = capture();
  let finished = false;
  await boundedStep(log, 'a step', 1000, async () => {
    await new Promise((r) => setTimeout(r, 20));
    finished = true;
  });
  assert.equal(finished, true);
  assert.deepEqual(lines, []);
});

test('a step that fails is logged with its error and does not throw', async () => {
  const { log, lines } = capture();
  await boundedStep(log, 'a step', 1000, async () => {
    throw new Error('boom');
  });
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.['msg'], 'a step failed; going on');
  assert.match(JSON.stringify(lines[0]?.['err']), /boom/);
});

test('a step that never finishes is given up after its time and logged as late', async () => {
  const { log, lines } = capture();
  const t0 = performance.now();
  await boundedStep(log, 'a step', 100, () => new Promise(() => {}));
  const ms = performance.now() - t0;
  assert.ok(ms >= 95 && ms < 2000, `returned after ${Math.round(ms)} ms`);
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.['msg'], 'a step did not finish in time; going on (storage not answering?)');
  assert.equal(lines[0]?.['ms'], 100);
});
