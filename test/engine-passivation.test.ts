import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { initialSectionContext } from '../src/actors/section-logic.js';
import { SectionHost } from '../src/engine/section-host.js';
import { createFixture, makeSection, makeStudent, meta, studentMeta } from './support/engine-fixture.js';

test('idle section actors are passivated to their persisted snapshot and restored from it on the next command, unchanged', async () => {
  const fx = await createFixture();
  const e = fx.engine;
  await e.importBatch(
    { departments: [], staff: [], students: [1, 2, 3].map((id) => makeStudent(id)), sections: [makeSection(10, 1, { capacity: 1, reserveCapacity: 2 })] },
    meta(),
  );
  assert.equal(e.activeActors, 0, 'no actor is started before a section gets a command');
  await e.enroll(1, 10, 1, studentMeta(1));
  await e.enroll(2, 10, 1, studentMeta(2));
  assert.equal(e.activeActors, 1);
  const before = e.getSection(10, 1);
  assert.equal(before.state, 'open.reserveOnly');

  assert.equal(e.passivateIdle(performance.now() + 3_600_000), 1);
  assert.equal(e.activeActors, 0);
  assert.deepEqual(e.getSection(10, 1), before, 'reads are served from the persisted snapshot while passivated');

  // The next command restores the actor from its snapshot: the queue and the seat are still there.
  await e.drop(1, 10, studentMeta(1));
  assert.equal(e.activeActors, 1);
  assert.deepEqual(e.sectionMembers(10, 1), { registered: [2], queue: [] });
  assert.equal(e.getSection(10, 1).state, 'open.reserveOnly', 'the promoted student took the only seat');
  e.stop();
});

test('a section actor that throws is restored from its last good state and the request gets a 500, not silence', async () => {
  const fx = await createFixture();
  const e = fx.engine;
  await e.importBatch({ departments: [], staff: [], students: [makeStudent(1), makeStudent(2)], sections: [makeSection(10, 1)] }, meta());
  await e.enroll(1, 10, 1, studentMeta(1));
  const before = e.getSection(10, 1);
  // White-box: a malformed command makes the machine's guard throw inside the actor.
  const internal = e as unknown as { host: { send(key: string, cmd: unknown): unknown } };
  assert.throws(() => internal.host.send('10:1', { type: 'changeSettings', change: null }), (err: { code?: string }) => err.code === 'INTERNAL');
  assert.deepEqual(e.getSection(10, 1), before, 'nothing changed');
  // The section keeps working from its last good state.
  await e.enroll(2, 10, 1, studentMeta(2));
  assert.deepEqual(e.sectionMembers(10, 1).registered, [1, 2]);
  e.stop();
});

test('reading a stored section context builds no snapshot and no actor, and is what the machine starts from', () => {
  const host = new SectionHost(pino({ level: 'silent' }), 60_000);
  const stored = { ...initialSectionContext(makeSection(10, 1).info, { capacity: 2, reserveCapacity: 1, sexLock: null, closed: true }), seq: 7 };
  const key = host.add(stored);
  const internal = host as unknown as { sections: Map<string, { parked: unknown; actor: unknown }> };
  assert.equal(host.context(key), stored, 'the stored context itself');
  assert.equal(internal.sections.get(key)?.parked, null, 'no snapshot was made to read it');
  assert.equal(host.activeActors, 0);
  // The machine, asked for its snapshot, holds the same context (and finds its state: closed).
  assert.deepEqual(host.read(key), { context: stored, state: 'closed' });
  assert.equal(host.context(key), host.snapshot(key).context);
});
