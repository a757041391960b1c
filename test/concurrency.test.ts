import assert from 'node:assert/strict';
import { createSeededRandom } from '../src/seeded-random.js';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { assertStateInvariants } from './support/engine-fixture.js';
import {
  applyToEngine,
  applyToModel,
  assertSameState,
  type Command,
  commandArbitrary,
  comparableFromEngine,
  comparableFromModel,
  CROWD_STUDENTS,
  describeCommand,
  JitteryPersistence,
  newModel,
  newWorldEngine,
} from './support/model-commands.js';
import type { ReferenceModel } from './support/reference-model.js';

/**
 * Linearizability of concurrent bursts: requests fired at once (Promise.all) must behave as if
 * they had run one at a time in SOME order, each reply being the reference model's answer at that
 * point, and the final state being the model's final state.
 *
 * Large bursts: the order is the one the engine's log recorded (each request's events are one
 * contiguous append carrying its request id); every request that wrote something is checked against
 * the model run in that order, and every request that wrote nothing (a refusal, or a no-op) must
 * be answerable exactly so, with no change, at some point of that run.
 * Small bursts: we search every order for one that explains all replies and the final state.
 */

const commandArb = commandArbitrary(CROWD_STUDENTS);
const studentOf = (c: Command): number | null => ('s' in c ? c.s : null);
let burstCounter = 0;

interface Prepared {
  fx: Awaited<ReturnType<typeof newWorldEngine>>;
  model: ReferenceModel;
  forced: Set<number>;
}

/** Builds the world and plays the warm-up one request at a time, checked against the model. */
/** Fails the `failAt`-th append from the moment it is armed (and, as an ordered log must, those behind it). */
class FailingPersistence extends JitteryPersistence {
  appends = 0;
  failAt = -1;

  override append(events: Parameters<JitteryPersistence['append']>[0]): Promise<void> {
    this.appends += 1;
    if (this.appends === this.failAt) this.failNext = 1;
    return super.append(events);
  }
}

async function prepare(warmUp: Command[], seed: number): Promise<Prepared> {
  const fx = await newWorldEngine(CROWD_STUDENTS, new FailingPersistence(createSeededRandom(seed)));
  const model = newModel(CROWD_STUDENTS);
  const forced = new Set<number>();
  for (const cmd of warmUp) {
    const expected = applyToModel(model, cmd);
    assert.equal(await applyToEngine(fx.engine, cmd), expected, `warm-up ${describeCommand(cmd)}`);
    if (cmd.kind === 'force' && expected === 'ok') forced.add(cmd.s);
  }
  assertSameState(fx.engine, model, 'after the warm-up');
  return { fx, model, forced };
}

async function fire(p: Prepared, burst: Command[]): Promise<{ ids: string[]; replies: string[]; logStart: number }> {
  burstCounter += 1;
  const ids = burst.map((_c, i) => `burst-${burstCounter}-${i}`);
  const logStart = p.fx.persistence.log.length;
  const replies = await Promise.all(burst.map((cmd, i) => applyToEngine(p.fx.engine, cmd, ids[i])));
  return { ids, replies, logStart };
}

/** How many bursts were recorded in an order other than the order they were sent (for the log line). */
const stats = { bursts: 0, reordered: 0 };

/**
 * With `failAt`, the burst's `failAt`-th append fails. Then only what was acknowledged is held to
 * the model: refusals may have been decided on a change that later failed, so they are not.
 */
async function checkAgainstLogOrder(warmUp: Command[], burst: Command[], seed: number, failAt?: number): Promise<void> {
  const p = await prepare(warmUp, seed);
  try {
    const persistence = p.fx.persistence as FailingPersistence;
    if (failAt !== undefined) persistence.failAt = persistence.appends + failAt;
    const { ids, replies, logStart } = await fire(p, burst);
    persistence.failAt = -1;
    persistence.failNext = 0;
    const describe = (): string => burst.map((c, i) => `${describeCommand(c)} -> ${replies[i]}`).join('\n  ');
    const indexOf = new Map(ids.map((id, i) => [id, i]));

    // The order the log made durable; each request's events must be one contiguous run.
    const order: number[] = [];
    for (const e of p.fx.persistence.log.slice(logStart)) {
      const i = indexOf.get(e.cause.requestId);
      assert.ok(i !== undefined, `an event of an unknown request ${e.cause.requestId}`);
      if (order.at(-1) !== i) {
        assert.ok(!order.includes(i), `request ${i}'s events are not contiguous in the log:\n  ${describe()}`);
        order.push(i);
      }
    }

    stats.bursts += 1;
    if (order.some((v, k) => k > 0 && v < order[k - 1]!)) stats.reordered += 1;

    // Nothing refused as unavailable left a trace in the log.
    for (const i of order) assert.notEqual(replies[i], 'UNAVAILABLE', `request ${i} was refused but is in the log:\n  ${describe()}`);

    // Requests about one student are processed in the order they were sent (the student's mailbox).
    const lastByStudent = new Map<number, number>();
    for (const i of order) {
      const s = studentOf(burst[i]!);
      if (s === null) continue;
      assert.ok((lastByStudent.get(s) ?? -1) < i, `student ${s}'s requests were reordered:\n  ${describe()}`);
      lastByStudent.set(s, i);
    }

    // Replay the writers in log order on the model; keep every intermediate state.
    const states: ReferenceModel[] = [p.model.clone()];
    const model = p.model.clone();
    for (const i of order) {
      const expected = applyToModel(model, burst[i]!);
      assert.equal(replies[i], expected, `request ${i} (${describeCommand(burst[i]!)}) in log order:\n  ${describe()}`);
      states.push(model.clone());
    }

    // Everyone else must be explained, with no change, at some point of that run.
    for (const [i, cmd] of burst.entries()) {
      if (order.includes(i)) continue;
      if (failAt !== undefined && !['ok', 'registered', 'queued'].includes(replies[i]!)) continue;
      const explained = states.some((st) => {
        const probe = st.clone();
        const before = JSON.stringify(comparableFromModel(probe));
        return applyToModel(probe, cmd) === replies[i] && JSON.stringify(comparableFromModel(probe)) === before;
      });
      assert.ok(explained, `no point of the log order explains request ${i} (${describeCommand(cmd)} -> ${replies[i]}):\n  ${describe()}`);
    }

    assertSameState(p.fx.engine, model, `final state:\n  ${describe()}`);
    for (const [i, cmd] of burst.entries()) if (cmd.kind === 'force' && replies[i] === 'ok') p.forced.add(cmd.s);
    assertStateInvariants(p.fx.engine.dumpState(), p.forced);
    const final = structuredClone(p.fx.engine.dumpState());
    await p.fx.restart();
    assert.deepEqual(p.fx.engine.dumpState(), final, 'the log rebuilds the state after the burst');
    if (failAt !== undefined) {
      // Storage is back: the engine carries on in step with the model.
      for (const cmd of burst.slice(0, 10)) {
        assert.equal(await applyToEngine(p.fx.engine, cmd), applyToModel(model, cmd), `after recovery: ${describeCommand(cmd)}`);
      }
      assertSameState(p.fx.engine, model, 'after recovery');
    }
  } finally {
    p.fx.engine.stop();
  }
}

function* permutations(n: number): Generator<number[]> {
  const a = Array.from({ length: n }, (_v, i) => i);
  const c = new Array<number>(n).fill(0);
  yield [...a];
  let i = 0;
  while (i < n) {
    if (c[i]! < i) {
      const j = i % 2 === 0 ? 0 : c[i]!;
      [a[j], a[i]] = [a[i]!, a[j]!];
      yield [...a];
      c[i]! += 1;
      i = 0;
    } else {
      c[i] = 0;
      i += 1;
    }
  }
}

async function checkBySearch(warmUp: Command[], burst: Command[], seed: number): Promise<void> {
  const p = await prepare(warmUp, seed);
  try {
    const { replies } = await fire(p, burst);
    const target = JSON.stringify(comparableFromEngine(p.fx.engine.dumpState()));
    let found: number[] | null = null;
    for (const perm of permutations(burst.length)) {
      const m = p.model.clone();
      if (perm.every((i) => applyToModel(m, burst[i]!) === replies[i]) && JSON.stringify(comparableFromModel(m)) === target) {
        found = perm;
        break;
      }
    }
    assert.ok(
      found,
      `no sequential order explains the burst:\n  ${burst.map((c, i) => `${describeCommand(c)} -> ${replies[i]}`).join('\n  ')}`,
    );
  } finally {
    p.fx.engine.stop();
  }
}

describe('concurrent bursts are linearizable', () => {
  test('large bursts: the log order explains every reply and the final state', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(commandArb, { maxLength: 15, size: 'max' }),
        fc.array(commandArb, { minLength: 5, maxLength: 60, size: 'max' }),
        fc.integer(),
        async (warmUp, burst, seed) => checkAgainstLogOrder(warmUp, burst, seed),
      ),
      { numRuns: 150 },
    );
  });

  test('contended bursts: everyone rushes the same two sections', async () => {
    const rush = fc.oneof(
      fc.record({ kind: fc.constant('enroll' as const), s: fc.integer({ min: 1, max: 12 }), c: fc.constant(10), g: fc.constantFrom(1, 2) }),
      fc.record({ kind: fc.constant('change' as const), s: fc.integer({ min: 1, max: 12 }), c: fc.constant(10), g: fc.constantFrom(1, 2) }),
      fc.record({ kind: fc.constant('drop' as const), s: fc.integer({ min: 1, max: 12 }), c: fc.constant(10) }),
      fc.record({ kind: fc.constant('capacity' as const), c: fc.constant(10), g: fc.constantFrom(1, 2), n: fc.integer({ min: 0, max: 4 }) }),
      fc.record({ kind: fc.constant('forceDrop' as const), s: fc.integer({ min: 1, max: 12 }), c: fc.constant(10), g: fc.constantFrom(1, 2) }),
    ) as fc.Arbitrary<Command>;
    await fc.assert(
      fc.asyncProperty(
        fc.array(rush, { maxLength: 10 }),
        fc.array(rush, { minLength: 10, maxLength: 50, size: 'max' }),
        fc.integer(),
        async (warmUp, burst, seed) => checkAgainstLogOrder(warmUp, burst, seed),
      ),
      { numRuns: 100 },
    );
    console.log(`concurrency: ${stats.reordered}/${stats.bursts} bursts were made durable in an order other than the order sent`);
    assert.ok(stats.reordered > stats.bursts / 10, 'the bursts really interleave');
  });

  test('bursts with a failed append: only durable changes are acknowledged, and memory equals the log', async () => {
    let failures = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(commandArb, { maxLength: 15, size: 'max' }),
        fc.array(commandArb, { minLength: 5, maxLength: 40, size: 'max' }),
        fc.integer(),
        fc.integer({ min: 1, max: 12 }),
        async (warmUp, burst, seed, failAt) => {
          await checkAgainstLogOrder(warmUp, burst, seed, failAt);
          failures += 1;
        },
      ),
      { numRuns: 150 },
    );
    assert.ok(failures > 0);
  });

  test('small bursts: some sequential order explains all replies and the final state (exhaustive search)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(commandArb, { maxLength: 12, size: 'max' }),
        fc.array(commandArb, { minLength: 2, maxLength: 6, size: 'max' }),
        fc.integer(),
        async (warmUp, burst, seed) => checkBySearch(warmUp, burst, seed),
      ),
      { numRuns: 100 },
    );
  });
});
