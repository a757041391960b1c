import { createSectionActor, sectionMachine, type PersistedSection } from '../src/actors/section-machine.js';
import { initialSectionContext } from '../src/actors/section-logic.js';
import { getInitialSnapshot } from 'xstate';
const cause = { requestId: 'r', actor: 'student:1', at: Date.now() };
for (let r = 0; r < 5; r++) {
  const parked: PersistedSection[] = [];
  for (let i = 0; i < 1500; i++) {
    const ctx = initialSectionContext({ courseId: 1000 + i, groupId: 1, units: 2 } as never, { capacity: 30, reserveCapacity: 10, sexLock: null });
    ctx.seq = 1;
    parked.push(sectionMachine.getPersistedSnapshot(getInitialSnapshot(sectionMachine, ctx)) as PersistedSection);
  }
  let t0 = performance.now();
  const actors = parked.map((p) => {
    const a = createSectionActor({ snapshot: p });
    a.on('*', () => undefined);
    a.subscribe({ error: () => undefined });
    return a;
  });
  const tAct = performance.now() - t0;
  t0 = performance.now();
  for (const a of actors) a.send({ type: 'enroll', studentId: 5, gender: 'male', schedule: { maxUnits: 20, held: [], checkSameCourse: true }, cause } as never);
  const tSend = performance.now() - t0;
  console.log(`activate ${((tAct * 1000) / 1500).toFixed(1)} µs each, first send ${((tSend * 1000) / 1500).toFixed(1)} µs`);
}
