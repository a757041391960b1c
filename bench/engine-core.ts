import { pino } from 'pino';
import { Engine } from '../src/engine/engine.ts';
import { makeInfo, makeStudent, T0, MINUTE } from '../test/support/engine-fixture.ts';
import { EMPTY_STATE } from '../src/persistence/fold.ts';

const persistence: any = {
  mode: 'embedded', async migrate() {}, async load() { return structuredClone(EMPTY_STATE); },
  async append(_e: any) { await Promise.resolve(); },
  async recentTransitions() { return []; }, async readiness() { return { ok: true }; }, async close() {},
};
const engine = new Engine({ persistence, logger: pino({ level: 'silent' }), enrollmentWindowMs: 7 * 24 * 60 * MINUTE, now: () => T0 + 5 * MINUTE });
await engine.start();
const m = { requestId: 'r', actor: 'staff:1' };
const secs: any[] = []; const studs: any[] = [];
for (let c = 1; c <= 500; c++) for (let g = 1; g <= 3; g++) secs.push({ info: makeInfo(c, g, { units: 2, examTime: null, classTime: null }), capacity: 30, reserveCapacity: 10, sexLock: null });
for (let s = 1; s <= 1000; s++) studs.push(makeStudent(40000000 + s, { maxUnits: 20, remainingActions: 1e6 }));
await (engine as any).importBatch({ sections: secs, students: studs, staff: [], departments: [] }, m).catch(async (e: any) => {
  console.log('importBatch failed', e.message);
});
let rng = 1; const rand = () => { rng = (rng * 1103515245 + 12345) & 0x7fffffff; return rng / 0x7fffffff; };
async function round() {
  const t0 = performance.now(); let ok = 0, rej = 0;
  const ps: Promise<unknown>[] = [];
  for (let i = 0; i < 7; i++) for (let s = 1; s <= 1000; s++) {
    const c = 1 + Math.floor(rand() * 500), g = 1 + Math.floor(rand() * 3);
    ps.push(engine.enroll(40000000 + s, c, g, { requestId: 'r' + i, actor: 'student:' + s }).then(() => ok++, () => rej++));
  }
  await Promise.all(ps);
  const dt = performance.now() - t0;
  // drop all
  const ds: Promise<unknown>[] = [];
  for (let s = 1; s <= 1000; s++) for (const h of engine.studentSections(40000000 + s)) ds.push(engine.drop(40000000 + s, h.section.info.courseId, { requestId: 'd', actor: 'x' }).catch(() => 0));
  await Promise.all(ds);
  return { dt, ok, rej };
}
for (let k = 0; k < 8; k++) { const r = await round(); console.log(`7000 enrolls: ${r.dt.toFixed(1)} ms = ${(r.dt * 1000 / 7000).toFixed(1)} µs/req ok ${r.ok} rej ${r.rej}`); }
