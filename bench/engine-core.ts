/**
 * The engine alone, without HTTP or storage: the seed workload's 7,000 enrolls (1,000 students x 7,
 * uniformly random sections of 1,500) sent straight to `Engine.enroll` over a Persistence whose
 * appends resolve at once, then every place dropped again; repeated `--rounds` times. It isolates
 * the cost of the mailbox, the student rules and the section actors from everything around them.
 *
 *   node --import tsx bench/engine-core.ts [--rounds 8]
 */
import { pino } from 'pino';
import { Engine, type NewSection } from '../src/engine/engine.js';
import type { StudentRecord } from '../src/actors/student-rules.js';
import { createScratchPersistence } from '../src/persistence/scratch-store.js';
import { createSeededRandom } from '../src/seeded-random.js';

const MINUTE = 60_000;
const NOW = Date.UTC(2026, 0, 12, 8, 0, 0);
const FIRST_STUDENT = 40_000_001;

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

async function main(): Promise<void> {
  const rounds = arg('rounds', 8);
  // Appends succeed at once: the engine's own cost is what is measured.
  const persistence = createScratchPersistence();
  const engine = new Engine({ persistence, logger: pino({ level: 'silent' }), enrollmentWindowMs: 7 * 24 * 60 * MINUTE, now: () => NOW });
  await engine.start();
  const sections: NewSection[] = [];
  for (let c = 1; c <= 500; c += 1) {
    for (let g = 1; g <= 3; g += 1) {
      sections.push({
        info: { courseId: c, groupId: g, forDepartment: null, name: `course ${c}`, lecturer: 'x', units: 2, examTime: null, classTime: null, notes: '' },
        capacity: 30,
        reserveCapacity: 10,
        sexLock: null,
      });
    }
  }
  const students: StudentRecord[] = [];
  for (let s = 0; s < 1000; s += 1) {
    students.push({ id: FIRST_STUDENT + s, passwordHash: 'x', enrollmentStart: NOW - MINUTE, maxUnits: 20, remainingActions: 1e9, departmentId: null, entryYear: null, gender: 'male' });
  }
  await engine.importBatch({ sections, students, staff: [], departments: [] }, { requestId: 'import', actor: 'system' });

  const random = createSeededRandom(1);
  for (let r = 1; r <= rounds; r += 1) {
    let ok = 0;
    let refused = 0;
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const calls: Promise<void>[] = [];
    for (let i = 0; i < 7; i += 1) {
      for (let s = 0; s < 1000; s += 1) {
        const courseId = 1 + Math.floor(random() * 500);
        const groupId = 1 + Math.floor(random() * 3);
        const id = FIRST_STUDENT + s;
        calls.push(engine.enroll(id, courseId, groupId, { requestId: `r${r}-${i}-${s}`, actor: `student:${id}` }).then(() => void (ok += 1), () => void (refused += 1)));
      }
    }
    await Promise.all(calls);
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const cpuMicros = cpu.user + cpu.system;
    const drops: Promise<unknown>[] = [];
    for (let s = 0; s < 1000; s += 1) {
      const id = FIRST_STUDENT + s;
      for (const h of engine.studentSections(id)) drops.push(engine.drop(id, h.section.info.courseId, { requestId: 'd', actor: 'system' }).catch(() => undefined));
    }
    await Promise.all(drops);
    process.stdout.write(
      `round ${r}: 7,000 enrolls in ${ms.toFixed(1)} ms = ${((ms * 1000) / 7000).toFixed(1)} µs each, CPU ${(cpuMicros / 7000).toFixed(1)} µs each (${ok} placed, ${refused} refused)\n`,
    );
  }
  engine.stop();
}

await main();
