import assert from 'node:assert/strict';
import { hashPassword } from '../../src/password.js';
import type { StaffRecord, StudentRecord } from '../../src/actors/student-rules.js';
import type { SectionInfo, Sex } from '../../src/actors/types.js';
import { createEngine, type Engine, type NewSection } from '../../src/engine/engine.js';
import { buildApp, type App, type AppDeps } from '../../src/http/app.js';
import { TokenService } from '../../src/http/auth.js';
import type { HttpLimits } from '../../src/http/server-options.js';
import { createLogger } from '../../src/logger.js';
import type { ReadinessReport } from '../../src/persistence/types.js';
import { MemoryPersistence } from './memory-persistence.js';

/**
 * Shared set-up for the HTTP tests: a real Engine over MemoryPersistence, seeded with a small
 * registrar's worth of data, behind the real app, driven with `app.inject`. The clock is shared by
 * the engine (enrollment windows) and the app (token times), and the logs are captured so tests can
 * check what is (and is not) logged.
 */

export const PASSWORD = 'pw';
/** Computed once with cost 4, so logins in tests cost about a millisecond. */
export const PW_HASH = await hashPassword(PASSWORD, 4);
export const SECRET = 'test-secret-test-secret-test-secret-0123456789';
export const MINUTE = 60_000;
export const WINDOW_MS = 60 * MINUTE;
export const T0 = Date.UTC(2025, 8, 1, 8, 0, 0);
export const TTL_SECONDS = 3600;
/** Exam instants (ms); the API reports them in seconds. */
export const EXAM_A = Date.UTC(2026, 0, 10, 9, 0, 0);
export const EXAM_B = Date.UTC(2026, 0, 12, 9, 0, 0);

/** Packs a weekly slot the way the Go schema does. */
export function slot(days: number[], start: number, end: number): number {
  const mask = days.reduce((m, d) => m | (1 << d), 0);
  return start + 1440 * end + mask * 2 ** 22;
}

export const STAFF = 900;
export const OTHER_STAFF = 901;
/** Students, by what they are for. */
export const S = {
  alice: 1, // male, window open, 20 units, 5 actions
  bea: 2, // female, window open
  carl: 3, // window opens in an hour
  dan: 4, // only 4 units allowed
  eve: 5, // female, no actions left
  f1: 10,
  f2: 11,
  f3: 12,
  f4: 13,
} as const;

/** Sections, as [course, group]. */
export const C = {
  algo1: [101, 1], // cap 2, reserve 2, EXAM_A, Sun+Tue 08:00-09:30, dept 1
  algo2: [101, 2], // cap 30, Mon+Wed 08:00-09:30
  db: [102, 1], // EXAM_A (clashes with algo), Mon 10:00-11:30
  compilers: [103, 1], // EXAM_B, Sun 09:00-10:00 (clashes with algo1's class)
  linalg: [104, 1], // female only, dept 2, 4 units
  closed: [105, 1], // closed
  tiny: [106, 1], // cap 1, no reserve
  heavy: [107, 1], // 5 units
  physics: [108, 1], // no exam, no class time
} as const;

function student(id: number, over: Partial<StudentRecord> = {}): StudentRecord {
  return {
    id,
    passwordHash: PW_HASH,
    enrollmentStart: T0,
    maxUnits: 20,
    remainingActions: 5,
    departmentId: 1,
    entryYear: 2024,
    gender: 'male',
    ...over,
  };
}

function section(
  [courseId, groupId]: readonly [number, number],
  info: Partial<SectionInfo>,
  opts: { capacity?: number; reserveCapacity?: number; sexLock?: Sex | null; closed?: boolean } = {},
): NewSection {
  return {
    info: {
      courseId,
      groupId,
      forDepartment: 1,
      name: `Course ${courseId}`,
      lecturer: 'Staff',
      units: 3,
      examTime: null,
      classTime: null,
      notes: '',
      ...info,
    },
    capacity: opts.capacity ?? 30,
    reserveCapacity: opts.reserveCapacity ?? 5,
    sexLock: opts.sexLock ?? null,
    closed: opts.closed ?? false,
  };
}

export function seedData(): { departments: { id: number; name: string }[]; staff: StaffRecord[]; students: StudentRecord[]; sections: NewSection[] } {
  return {
    departments: [
      { id: 1, name: 'Computer Science' },
      { id: 2, name: 'Mathematics' },
    ],
    staff: [
      { id: STAFF, passwordHash: PW_HASH, departmentId: 1 },
      { id: OTHER_STAFF, passwordHash: PW_HASH, departmentId: null },
    ],
    students: [
      student(S.alice),
      student(S.bea, { gender: 'female' }),
      student(S.carl, { enrollmentStart: T0 + 60 * MINUTE }),
      student(S.dan, { maxUnits: 4 }),
      student(S.eve, { gender: 'female', remainingActions: 0 }),
      student(S.f1),
      student(S.f2),
      student(S.f3),
      student(S.f4),
    ],
    sections: [
      section(C.algo1, { name: 'Algorithms', lecturer: 'Donald Knuth', examTime: EXAM_A, classTime: slot([0, 2], 480, 570) }, { capacity: 2, reserveCapacity: 2 }),
      section(C.algo2, { name: 'Algorithms', lecturer: 'Robert Tarjan', examTime: EXAM_A, classTime: slot([1, 3], 480, 570) }),
      section(C.db, { name: 'Databases', lecturer: 'Edgar Codd', examTime: EXAM_A, classTime: slot([1], 600, 690) }),
      section(C.compilers, { name: 'Compilers', lecturer: 'Frances Allen', examTime: EXAM_B, classTime: slot([0], 540, 600) }),
      section(C.linalg, { name: 'Linear Algebra', lecturer: 'Gilbert Strang', units: 4, forDepartment: 2 }, { sexLock: 'female' }),
      section(C.closed, { name: 'Closed Course' }, { closed: true }),
      section(C.tiny, { name: 'Tiny Seminar' }, { capacity: 1, reserveCapacity: 0 }),
      section(C.heavy, { name: 'Heavy Project', units: 5 }),
      section(C.physics, { name: 'Physics', lecturer: 'Lise Meitner', forDepartment: null }),
    ],
  };
}

export interface Reply {
  status: number;
  // Tests inspect arbitrary JSON; `any` keeps the assertions readable.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
  raw: string;
  headers: Record<string, string | string[] | number | undefined>;
}

export interface RequestOptions {
  token?: string | null;
  body?: unknown;
  /** Sent as-is (for malformed JSON); overrides `body`. */
  rawBody?: string;
  headers?: Record<string, string>;
}

export interface HttpFixture {
  app: App;
  engine: Engine;
  persistence: FlakyPersistence;
  clock: { now: number };
  /** Captured JSON log lines. */
  logs: string[];
  readiness: { report: ReadinessReport | Error };
  /** A token for the user, signed the way the app signs them (no login round trip). */
  token(id: number, role?: 'student' | 'staff'): string;
  studentToken(id?: number): string;
  staffToken(id?: number): string;
  request(method: string, url: string, opts?: RequestOptions): Promise<Reply>;
  close(): Promise<void>;
}

/**
 * MemoryPersistence whose loads can fail too, as when the database is still down while the engine
 * tries to reload after a failed write.
 */
export class FlakyPersistence extends MemoryPersistence {
  failLoads = 0;
  /** While set, appends wait for it (a slow broker), so requests pile up behind them. */
  holdAppends: Promise<void> | null = null;

  override async append(events: Parameters<MemoryPersistence['append']>[0]): Promise<void> {
    if (this.holdAppends) await this.holdAppends;
    return super.append(events);
  }

  override async load(): ReturnType<MemoryPersistence['load']> {
    if (this.failLoads > 0) {
      this.failLoads -= 1;
      throw new Error('injected load failure');
    }
    return super.load();
  }
}

export async function createHttpFixture(
  opts: {
    seed?: boolean;
    now?: number;
    logLevel?: string;
    logRequests?: boolean;
    limits?: HttpLimits;
    app?: Partial<AppDeps>;
    studentMailboxLimit?: number;
  } = {},
): Promise<HttpFixture> {
  const persistence = new FlakyPersistence();
  const clock = { now: opts.now ?? T0 + 5 * MINUTE };
  const logs: string[] = [];
  const logger = createLogger(opts.logLevel ?? 'debug', { write: (line: string) => void logs.push(line) });
  const engine = createEngine({
    persistence,
    logger,
    enrollmentWindowMs: WINDOW_MS,
    now: () => clock.now,
    ...(opts.studentMailboxLimit === undefined ? {} : { studentMailboxLimit: opts.studentMailboxLimit }),
  });
  await engine.start();
  if (opts.seed ?? true) await engine.importBatch(seedData(), { requestId: 'seed', actor: 'system' });
  const readiness: HttpFixture['readiness'] = { report: { ready: true, checks: { memory: { ok: true } } } };
  const app = await buildApp({
    engine,
    logger,
    jwtSecret: SECRET,
    tokenTtlSeconds: TTL_SECONDS,
    readiness: async () => {
      if (readiness.report instanceof Error) throw readiness.report;
      return readiness.report;
    },
    now: () => clock.now,
    logRequests: opts.logRequests ?? false,
    limits: opts.limits,
    // STAFF is the admin (may create staff); OTHER_STAFF is ordinary staff.
    adminStaffIds: [STAFF],
    ...opts.app,
  });
  // Signed as the app signs them (same secret, clock and claims), with no login round trip.
  const signer = new TokenService({ secret: SECRET, ttlSeconds: TTL_SECONDS, now: () => clock.now });
  const token = (id: number, role: 'student' | 'staff' = 'student') => signer.issue({ id, role });
  return {
    app,
    engine,
    persistence,
    clock,
    logs,
    readiness,
    token,
    studentToken: (id = S.alice) => token(id, 'student'),
    staffToken: (id = STAFF) => token(id, 'staff'),
    async request(method, url, o = {}) {
      const headers: Record<string, string> = { ...o.headers };
      if (o.token) headers['authorization'] = `Bearer ${o.token}`;
      let payload: string | undefined;
      if (o.rawBody !== undefined) payload = o.rawBody;
      else if (o.body !== undefined) payload = JSON.stringify(o.body);
      if (payload !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
        headers['content-type'] = 'application/json';
      }
      const res = await app.inject({ method: method as 'GET', url, headers, payload });
      let body: unknown = undefined;
      if (res.body.length > 0) {
        try {
          body = JSON.parse(res.body);
        } catch {
          body = res.body;
        }
      }
      return { status: res.statusCode, body, raw: res.body, headers: res.headers };
    },
    async close() {
      await app.close();
      engine.stop();
    },
  };
}

/** Reads the log lines as objects. */
export function parsedLogs(fx: HttpFixture): Record<string, unknown>[] {
  return fx.logs.map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Asserts a status, showing the body when it differs. */
export function expectStatus(r: Reply, status: number): void {
  assert.equal(r.status, status, `expected ${status}, got ${r.status}: ${r.raw}`);
}

/** Asserts an error reply: status, stable code, and a non-empty reason. */
export function expectError(r: Reply, status: number, code: string): void {
  expectStatus(r, status);
  assert.equal(r.body?.code, code, r.raw);
  assert.equal(typeof r.body?.reason, 'string', r.raw);
  assert.ok(r.body.reason.length > 0, r.raw);
}

/** Every route that needs a token, with the role it needs ('any' = any logged-in user). */
export const GUARDED: { method: string; url: string; role: 'student' | 'staff' | 'any' }[] = [
  { method: 'POST', url: '/refresh', role: 'any' },
  { method: 'PUT', url: '/student/course', role: 'student' },
  { method: 'PATCH', url: '/student/course', role: 'student' },
  { method: 'DELETE', url: '/student/course?course_id=101', role: 'student' },
  { method: 'GET', url: '/student/course', role: 'student' },
  { method: 'GET', url: '/student/courses', role: 'student' },
  { method: 'POST', url: '/student/swap', role: 'student' },
  { method: 'PUT', url: '/staff/force-std', role: 'staff' },
  { method: 'DELETE', url: '/staff/force-std?std_id=1&course_id=101&group_id=1', role: 'staff' },
  { method: 'GET', url: '/staff/student-courses?std_id=1', role: 'staff' },
  { method: 'GET', url: '/staff/course-students?course_id=101&group_id=1', role: 'staff' },
  { method: 'PATCH', url: '/staff/capacity', role: 'staff' },
  { method: 'GET', url: '/sections', role: 'any' },
  { method: 'GET', url: '/sections/101/1', role: 'any' },
  { method: 'GET', url: '/sections/101/1/students', role: 'staff' },
  { method: 'POST', url: '/sections', role: 'staff' },
  { method: 'PATCH', url: '/sections/101/1', role: 'staff' },
  { method: 'POST', url: '/sections/101/1/close', role: 'staff' },
  { method: 'POST', url: '/sections/101/1/reopen', role: 'staff' },
  { method: 'GET', url: '/sections/101/1/transitions', role: 'staff' },
  { method: 'POST', url: '/students', role: 'staff' },
  { method: 'GET', url: '/students/1', role: 'staff' },
  { method: 'PATCH', url: '/students/1', role: 'staff' },
  { method: 'POST', url: '/staff', role: 'staff' },
  { method: 'PATCH', url: '/staff/1', role: 'staff' },
  { method: 'POST', url: '/me/password', role: 'any' },
  { method: 'GET', url: '/departments', role: 'any' },
  { method: 'GET', url: '/me', role: 'any' },
];
