import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { createActor, getInitialSnapshot } from 'xstate';
import { createSectionActor, restingSnapshotOf, sectionMachine } from '../src/actors/section-machine.js';
import type { Cause, SectionCommand, SectionContext, SectionEmitted, Sex } from '../src/actors/types.js';
import { makeInfo } from './support/engine-fixture.js';

/**
 * A section activated from its stored context starts in the state the machine's own initial step
 * picks (restingSnapshotOf remembers that step's answer per combination of the choices' inputs).
 * For any context, including ones the rules never produce (more members than seats, a closed
 * section with a queue), the snapshot and the actor's answers to a next command must be the same
 * as those of an actor that ran the initial step itself.
 */

const cause: Cause = { requestId: 'r1', actor: 'staff:1', at: 1_700_000_000_000 };
const sexArb = fc.constantFrom<Sex>('male', 'female');

const contextArb: fc.Arbitrary<SectionContext> = fc
  .record({
    capacity: fc.integer({ min: 0, max: 6 }),
    reserveCapacity: fc.integer({ min: 0, max: 4 }),
    sexLock: fc.option(sexArb, { nil: null }),
    closed: fc.boolean(),
    members: fc.uniqueArray(fc.integer({ min: 1, max: 20 }), { maxLength: 12 }),
    split: fc.nat(),
    seq: fc.nat({ max: 1000 }),
  })
  .map(({ members, split, ...rest }) => {
    const cut = members.length === 0 ? 0 : split % (members.length + 1);
    return { info: makeInfo(10, 1), ...rest, registered: members.slice(0, cut), queue: members.slice(cut) };
  });

const commandArb: fc.Arbitrary<SectionCommand> = fc.oneof(
  fc.record({ studentId: fc.integer({ min: 1, max: 22 }), gender: sexArb, seatOnly: fc.boolean() }).map(
    (c): SectionCommand => ({ type: 'enroll', ...c, schedule: { maxUnits: 1000, held: [], checkSameCourse: true }, cause }),
  ),
  fc.integer({ min: 1, max: 22 }).map((studentId): SectionCommand => ({ type: 'drop', studentId, reason: 'dropped', cause })),
  fc.integer({ min: 1, max: 22 }).map((studentId): SectionCommand => ({ type: 'forceEnroll', studentId, cause })),
  fc.record({ capacity: fc.integer({ min: 0, max: 8 }), reserveCapacity: fc.integer({ min: 0, max: 5 }) }).map(
    (change): SectionCommand => ({ type: 'changeSettings', change, cause }),
  ),
  fc.constant<SectionCommand>({ type: 'close', cause }),
  fc.constant<SectionCommand>({ type: 'reopen', cause }),
);

/** The command's outcome on a started actor: what it emitted and its persisted snapshot after. */
function answer(actor: ReturnType<typeof createSectionActor>, cmd: SectionCommand): { emitted: SectionEmitted[]; after: unknown } {
  const emitted: SectionEmitted[] = [];
  actor.on('*', (e) => emitted.push(e));
  actor.send(structuredClone(cmd));
  const after = actor.getPersistedSnapshot();
  actor.stop();
  return { emitted, after };
}

describe('a section activated from its stored context', () => {
  test("starts where the machine's initial step puts it, and answers the next command the same (fast-check)", () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(contextArb, commandArb, (ctx, cmd) => {
        const byStep = getInitialSnapshot(sectionMachine, structuredClone(ctx));
        const resting = restingSnapshotOf(structuredClone(ctx));
        seen.add(JSON.stringify(byStep.value));
        assert.deepEqual(sectionMachine.getPersistedSnapshot(resting), sectionMachine.getPersistedSnapshot(byStep));
        assert.deepEqual(resting.value, byStep.value);

        const stepped = createActor(sectionMachine, { input: structuredClone(ctx) });
        stepped.start();
        const activated = createSectionActor({ context: structuredClone(ctx) });
        assert.deepEqual(answer(activated, cmd), answer(stepped, cmd));
      }),
      { numRuns: 2000 },
    );
    // Every resting state was reached, so the remembered answers were each checked many times.
    assert.deepEqual([...seen].sort(), ['"closed"', '{"open":"full"}', '{"open":"reserveOnly"}', '{"open":"seatsAvailable"}']);
  });
});
