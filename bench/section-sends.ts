/**
 * The section actor alone: XState's cost per command, without the engine, HTTP or storage.
 * 1,500 section actors (capacity 30, reserve 10); each round sends 20,000 enrolls and the 20,000
 * drops that undo them, to actors spread over all sections, and prints microseconds per send of
 * each. A change to the section machine's transitions shows here first (issue 10: a drop went from
 * 29 to 13 µs when the state it happens in took it, instead of the root re-entering openOrClosed).
 *
 *   node --import tsx bench/section-sends.ts
 */
import { createSectionActor } from '../src/actors/section-machine.js';
import type { SectionActor } from '../src/actors/section-machine.js';
import { initialSectionContext } from '../src/actors/section-logic.js';
const N = 1500;
const actors: SectionActor[] = [];
for (let i = 0; i < N; i++) {
  const ctx = initialSectionContext({ courseId: 1000 + Math.floor(i / 3), groupId: (i % 3) + 1, units: 2, title: 't', departmentId: 1, examTime: null, classTimes: [] } as never, { capacity: 30, reserveCapacity: 10, sexLock: null });
  ctx.seq = 1;
  actors.push(createSectionActor({ context: ctx }));
}
let sink = 0;
for (const a of actors) a.on('*', () => { sink++; });
const cause = { requestId: 'r', actor: 'student:1', at: Date.now() };
function round(r: number) {
  let te = 0, td = 0;
  let n = 0;
  for (let b = 0; b < 20; b++) {
    let t0 = performance.now();
    for (let k = 0; k < 1000; k++) {
      const a = actors[((b * 1000 + k) * 7919) % N] as SectionActor;
      a.send({ type: 'enroll', studentId: 1 + k + r, gender: 'male', schedule: { maxUnits: 20, held: [], checkSameCourse: true }, cause } as never);
    }
    te += performance.now() - t0;
    t0 = performance.now();
    for (let k = 0; k < 1000; k++) {
      const a = actors[((b * 1000 + k) * 7919) % N] as SectionActor;
      a.send({ type: 'drop', studentId: 1 + k + r, reason: 'dropped', cause } as never);
    }
    td += performance.now() - t0;
    n += 1000;
  }
  console.log(`round ${r}: enroll ${((te * 1000) / n).toFixed(2)} µs, drop ${((td * 1000) / n).toFixed(2)} µs`);
}
for (let r = 0; r < 8; r++) round(r);
console.log(`${sink} events emitted`);
