import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { hashPassword } from '../../src/password.js';
import { encodeClassTime } from '../../src/actors/class-time.js';
import { sectionKey } from '../../src/actors/section-logic.js';
import { TokenService } from '../../src/http/auth.js';
import { deliveryQueueNames } from '../../src/persistence/delivery-queue.js';
import { streamNames } from '../../src/persistence/full-store.js';
import { migrate } from '../../src/persistence/migrations.js';
import { createPgClient } from '../../src/persistence/pg-client.js';
import type { SqlClient } from '../../src/persistence/sql-client.js';
import { loadState } from '../../src/persistence/state-store.js';
import { deleteQueues } from './amqp.js';
import { createTestDatabase } from './pg.js';
import { AMQP_URL, uniqueName } from './services.js';
import { TcpProxy } from './tcp-proxy.js';

/**
 * Fault-injection harness for full mode: the engine and the batcher run as real child processes
 * (`node --import tsx ...`) against the shared PostgreSQL and RabbitMQ, each run with its own
 * database and queue names, optionally behind TCP proxies that can cut the link. A load driver
 * sends enroll / drop / change-group / capacity requests over HTTP and records every reply; the
 * checker then replays each student's acknowledged requests through a small model (each student's
 * requests are sent one at a time, so their order is known) and compares the result with the API
 * and, once the batcher caught up, with PostgreSQL.
 *
 * Outcomes: 2xx = the change happened (exactly once); 4xx, or a connection the server never
 * accepted = nothing changed; 503, a reset connection or a timeout = in doubt (the broker may have
 * stored it), so both "absent" and "present exactly once" are accepted.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const SECRET = 'fault-test-secret-0123456789-abcdefghijklmnop';
export const PASSWORD = 'pw';
export const PW_HASH = await hashPassword(PASSWORD, 4);
export const STAFF_ID = 1;
export const FIRST_STUDENT = 1000;
export const INITIAL_ACTIONS = 10_000;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function waitFor<T>(probe: () => Promise<T | false | null | undefined>, timeoutMs: number, what: string, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await probe();
      if (v !== false && v !== null && v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    await sleep(everyMs);
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on host:port. */
export function portOpen(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

// ---------------------------------------------------------------------------------------------
// Seed data, inserted straight into PostgreSQL as an operator (or the Go benchmark) would.

export interface SeedSection {
  courseId: number;
  groupId: number;
  capacity: number;
  reserveCapacity: number;
}

export interface Seed {
  students: number[];
  sections: SeedSection[];
  courses: number[];
}

export async function seedDatabase(db: SqlClient, opts: { students: number; largeSections?: boolean }): Promise<Seed> {
  await migrate(db);
  const now = Date.now();
  // 8 courses x 2-3 groups = 20 sections; every course at its own weekly slot and exam time (no
  // conflicts between courses); 3 units each, 20 max -> a student holds at most 6 courses.
  const groupsPerCourse = [3, 3, 3, 3, 2, 2, 2, 2];
  let rnd = 7;
  const next = (n: number) => {
    rnd = (rnd * 1103515245 + 12345) % 2 ** 31;
    return rnd % n;
  };
  const sections: SeedSection[] = [];
  const rows: unknown[][] = [];
  groupsPerCourse.forEach((groups, k) => {
    const courseId = 201 + k;
    const day = (k % 5) + 1;
    const start = 480 + Math.floor(k / 5) * 180;
    for (let g = 1; g <= groups; g++) {
      // Small sections (3-10 seats, 0-5 queue places) keep them full and contested; large ones
      // (40-79, 5-14) let most requests succeed, for runs that need many events quickly.
      const s = opts.largeSections
        ? { courseId, groupId: g, capacity: 40 + next(40), reserveCapacity: 5 + next(10) }
        : { courseId, groupId: g, capacity: 3 + next(8), reserveCapacity: next(6) };
      sections.push(s);
      rows.push([
        courseId,
        g,
        `Fault course ${courseId}`,
        `Dr. ${g}`,
        s.capacity,
        s.reserveCapacity,
        new Date(Date.UTC(2027, 0, 10 + k, 9)),
        encodeClassTime({ days: 1 << day, startMinute: start, endMinute: start + 90 }),
        courseId === 208 && g === 2 ? 'female' : null,
      ]);
    }
  });
  const students = Array.from({ length: opts.students }, (_, i) => FIRST_STUDENT + i);
  await db.transaction(async (tx) => {
    await tx.query(`INSERT INTO departments (id, name) VALUES (1, 'Faults')`);
    await tx.query(`INSERT INTO staff (id, password, department_id) VALUES ($1, $2, 1)`, [STAFF_ID, PW_HASH]);
    await tx.query(
      `INSERT INTO students (id, password, enrollment_start_time, max_units, remaining_actions, department_id, entry_year, gender)
       SELECT id, $2, $3, 20, $4, 1, 2024, (CASE WHEN id % 2 = 0 THEN 'female' ELSE 'male' END)::sex
       FROM unnest($1::bigint[]) AS t(id)`,
      [students, PW_HASH, new Date(now - 3_600_000), INITIAL_ACTIONS],
    );
    for (const r of rows) {
      await tx.query(
        `INSERT INTO courses (course_id, group_id, for_department, name, lecturer, units, capacity, reserve_capacity, exam_time, class_time, sex_lock, notes)
         VALUES ($1, $2, 1, $3, $4, 3, $5, $6, $7, $8, $9::text::sex, '')`,
        r,
      );
    }
  });
  return { students, sections, courses: groupsPerCourse.map((_, k) => 201 + k) };
}

// ---------------------------------------------------------------------------------------------
// Child processes

/** Every child still running; killed if this process exits for any reason, so none is left behind. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

/** One engine or batcher process; its output is kept (last lines) for diagnostics and log probes. */
export class Child {
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;
  private readonly lines: string[] = [];
  private readonly watchers = new Set<(line: Record<string, unknown>) => void>();
  private partial = '';
  exitCode: number | null | undefined = undefined;
  readonly startedAt = performance.now();

  constructor(
    readonly name: string,
    script: string,
    env: Record<string, string>,
  ) {
    const base = { ...process.env };
    // A node:test child would otherwise take the engine for a test file and talk TAP to it.
    delete base.NODE_TEST_CONTEXT;
    delete base.NODE_OPTIONS;
    this.proc = spawn(process.execPath, ['--import', 'tsx', script], {
      cwd: ROOT,
      env: { ...base, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(this.proc);
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => {
        live.delete(this.proc);
        this.exitCode = code ?? (signal ? -1 : null);
        resolve(code);
      });
    });
    const take = (chunk: Buffer) => {
      const text = this.partial + chunk.toString('utf8');
      const parts = text.split('\n');
      this.partial = parts.pop() ?? '';
      for (const line of parts) this.onLine(line);
    };
    this.proc.stdout?.on('data', take);
    this.proc.stderr?.on('data', take);
  }

  get alive(): boolean {
    return this.exitCode === undefined;
  }

  private onLine(line: string): void {
    if (line.trim() === '') return;
    this.lines.push(line);
    if (this.lines.length > 300) this.lines.splice(0, this.lines.length - 300);
    if (this.watchers.size === 0) return;
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    for (const w of this.watchers) w(obj);
  }

  /** Resolves with the first JSON log line from now on (or already seen) that matches. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs: number, seenToo = true): Promise<Record<string, unknown>> {
    if (seenToo) {
      for (const l of this.lines) {
        try {
          const obj = JSON.parse(l) as Record<string, unknown>;
          if (match(obj)) return Promise.resolve(obj);
        } catch {
          // not JSON
        }
      }
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.watchers.delete(w);
        reject(new Error(`${this.name}: no matching log line within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      const w = (obj: Record<string, unknown>) => {
        if (!match(obj)) return;
        clearTimeout(timer);
        this.watchers.delete(w);
        resolve(obj);
      };
      this.watchers.add(w);
    });
  }

  hasLog(match: (line: Record<string, unknown>) => boolean): boolean {
    return this.lines.some((l) => {
      try {
        return match(JSON.parse(l) as Record<string, unknown>);
      } catch {
        return false;
      }
    });
  }

  output(last = 40): string {
    return this.lines.slice(-last).join('\n');
  }

  /** kill -9, and wait until the process is gone. */
  async kill9(): Promise<void> {
    if (!this.alive) return;
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM (graceful), SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.alive) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }
}

export const msg = (text: string) => (l: Record<string, unknown>) => l.msg === text;

// ---------------------------------------------------------------------------------------------
// HTTP client: node:http with a keep-alive agent and no automatic retries, so every request is
// sent exactly once and its outcome is exactly what the server (or the network) said.

export interface Reply {
  /** HTTP status; 0 = the connection broke or timed out (in doubt); -1 = refused (never reached the server). */
  status: number;
  body: unknown;
  ms: number;
}

export class Api {
  private readonly agent: http.Agent;

  constructor(
    readonly port: number,
    maxSockets = 128,
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets });
  }

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  request(method: string, path: string, token: string | null, body?: unknown, timeoutMs = 10_000): Promise<Reply> {
    const t0 = performance.now();
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<Reply>((resolve) => {
      let settled = false;
      const done = (status: number, data: unknown) => {
        if (settled) return;
        settled = true;
        resolve({ status, body: data, ms: performance.now() - t0 });
      };
      const headers: Record<string, string> = {};
      if (token) headers.authorization = `Bearer ${token}`;
      if (payload) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = String(payload.length);
      }
      const req = http.request({ host: '127.0.0.1', port: this.port, method, path, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let data: unknown = text;
          try {
            data = text === '' ? null : JSON.parse(text);
          } catch {
            // keep the text
          }
          done(res.statusCode ?? 0, data);
        });
        res.on('error', () => done(0, 'response aborted'));
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
      req.on('error', (err: NodeJS.ErrnoException) => done(err.code === 'ECONNREFUSED' ? -1 : 0, err.code ?? err.message));
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export function reasonOf(r: Reply): string {
  const b = r.body as { reason?: unknown } | null;
  return b && typeof b === 'object' && typeof b.reason === 'string' ? b.reason : '';
}

export function codeOf(r: Reply): string {
  const b = r.body as { code?: unknown } | null;
  return b && typeof b === 'object' && typeof b.code === 'string' ? b.code : '';
}

// ---------------------------------------------------------------------------------------------
// The environment of one scenario

export interface EnvOptions {
  students?: number;
  /** Put a TCP proxy in front of RabbitMQ for the engine and the batcher. */
  proxyBroker?: boolean;
  /** Put a TCP proxy in front of PostgreSQL for the engine and the batcher. */
  proxyDatabase?: boolean;
  /** 40-79 seats per section instead of 3-10. */
  largeSections?: boolean;
}

export class FaultEnv {
  readonly children = new Set<Child>();
  private readonly spawned: Child[] = [];
  /** Load drivers to stop on dispose (a failed test leaves its load running). */
  readonly loads = new Set<LoadDriver>();
  /** Set by {@link withFaultEnv} when the test failed: dispose() then prints the children's output. */
  failed = false;
  engine: Child | null = null;
  readonly tokens = new TokenService({ secret: SECRET, ttlSeconds: 3 * 3600 });
  readonly staffToken: string;
  private readonly studentTokens = new Map<number, string>();
  private disposed = false;

  private constructor(
    readonly db: SqlClient,
    readonly dbUrl: string,
    private readonly dropDb: () => Promise<void>,
    readonly prefix: string,
    readonly seed: Seed,
    readonly api: Api,
    readonly brokerProxy: TcpProxy | null,
    readonly dbProxy: TcpProxy | null,
  ) {
    this.staffToken = this.tokens.issue({ id: STAFF_ID, role: 'staff' });
  }

  static async create(opts: EnvOptions = {}): Promise<FaultEnv> {
    const tdb = await createTestDatabase();
    const db = createPgClient(tdb.url, { max: 4 });
    let brokerProxy: TcpProxy | null = null;
    let dbProxy: TcpProxy | null = null;
    try {
      const seed = await seedDatabase(db, { students: opts.students ?? 300, largeSections: opts.largeSections ?? false });
      if (opts.proxyBroker) {
        const u = new URL(AMQP_URL);
        brokerProxy = await TcpProxy.start(u.hostname, Number(u.port || 5672));
      }
      if (opts.proxyDatabase) {
        const u = new URL(tdb.url);
        dbProxy = await TcpProxy.start(u.hostname, Number(u.port || 5432));
      }
      const api = new Api(await freePort());
      return new FaultEnv(db, tdb.url, tdb.drop, uniqueName('faults'), seed, api, brokerProxy, dbProxy);
    } catch (err) {
      await brokerProxy?.close();
      await dbProxy?.close();
      await db.close().catch(() => undefined);
      await tdb.drop().catch(() => undefined);
      throw err;
    }
  }

  studentToken(id: number): string {
    let t = this.studentTokens.get(id);
    if (!t) this.studentTokens.set(id, (t = this.tokens.issue({ id, role: 'student' })));
    return t;
  }

  /** Environment of the engine and batcher processes. */
  childEnv(extra: Record<string, string> = {}): Record<string, string> {
    return {
      DATABASE_URL: this.dbProxy ? this.dbProxy.rewrite(this.dbUrl) : this.dbUrl,
      RABBITMQ_URL: this.brokerProxy ? this.brokerProxy.rewrite(AMQP_URL) : AMQP_URL,
      AMQP_PREFIX: this.prefix,
      JWT_SECRET: SECRET,
      HOST: '127.0.0.1',
      PORT: String(this.api.port),
      DEMO_DATA: 'false',
      IN_PROCESS_BATCHER: 'false',
      LOG_LEVEL: 'warn',
      ENROLLMENT_WINDOW_MINUTES: '100000',
      // The load picks students at random and may write for one faster than a person clicks.
      STUDENT_WRITE_LIMIT: '0',
      // Every restart here would pay about a second for it; test/warm-up.test.ts turns it on.
      WARMUP_REQUESTS: '0',
      ...extra,
    };
  }

  spawn(name: string, script: string, extra: Record<string, string> = {}): Child {
    if (this.disposed) throw new Error('environment disposed');
    const c = new Child(name, script, this.childEnv(extra));
    this.children.add(c);
    this.spawned.push(c);
    void c.exited.then(() => this.children.delete(c));
    return c;
  }

  /** Starts the engine and resolves once /ready answers 200, with the time that took. */
  async startEngine(extra: Record<string, string> = {}, timeoutMs = 30_000): Promise<{ child: Child; readyMs: number }> {
    const child = this.spawn('engine', 'src/main.ts', extra);
    this.engine = child;
    const t0 = performance.now();
    await waitFor(
      async () => {
        if (!child.alive) throw new Error(`the engine exited (${String(child.exitCode)}):\n${child.output()}`);
        const r = await this.api.request('GET', '/ready', null, undefined, 1000);
        return r.status === 200;
      },
      timeoutMs,
      'the engine to be ready',
      10,
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n--- engine output ---\n${child.output()}`);
    });
    return { child, readyMs: performance.now() - t0 };
  }

  startBatcher(extra: Record<string, string> = {}): Child {
    return this.spawn('batcher', 'src/cli/batcher.ts', extra);
  }

  /** Number of events in PostgreSQL's transition log. */
  async appliedEvents(): Promise<number> {
    const r = await this.db.query<{ n: number }>('SELECT count(*)::int AS n FROM transitions');
    return Number(r.rows[0]?.n ?? 0);
  }

  /** Waits until PostgreSQL's tables hold the student's place in the course (the batcher applied it). */
  async waitForEnrollmentRow(studentId: number, courseId: number, timeoutMs: number): Promise<void> {
    await waitFor(
      async () => {
        const q = await this.db.query<{ n: number }>('SELECT count(*)::int AS n FROM enrolled_courses WHERE student_id = $1 AND course_id = $2', [studentId, courseId]);
        return Number(q.rows[0]?.n) === 1;
      },
      timeoutMs,
      `student ${studentId}'s place in course ${courseId} to reach PostgreSQL`,
    );
  }

  /** Recent output of every process this environment started (for failure reports). */
  outputs(): string {
    return this.spawned.map((c) => `--- ${c.name} (pid ${String(c.proc.pid)}, ${c.alive ? 'running' : `exited ${String(c.exitCode)}`}) ---\n${c.output(30)}`).join('\n');
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await Promise.all([...this.loads].map((l) => l.stop()));
    if (this.failed || process.env.FAULTS_VERBOSE) console.error(this.outputs());
    await Promise.all([...this.children].map((c) => c.kill9()));
    this.api.close();
    await this.brokerProxy?.close();
    await this.dbProxy?.close();
    await this.db.close().catch(() => undefined);
    const n = streamNames(this.prefix);
    // The engines' webhook delivery queues too (retry queues appear only once a delivery is retried).
    const w = deliveryQueueNames(this.prefix);
    await deleteQueues([n.stream, n.dead, w.work, w.dead]).catch((err: unknown) => console.error('could not delete the test queues', err));
    await this.dropDb().catch((err: unknown) => console.error('could not drop the test database', err));
  }
}

/**
 * Runs one scenario in a fresh environment: its own database, stream and dead-letter queue, and
 * processes, all removed afterwards even when the test fails (which also prints the processes'
 * last output).
 */
export async function withFaultEnv(t: { after: (fn: () => Promise<void>) => void }, opts: EnvOptions, body: (env: FaultEnv) => Promise<void>): Promise<void> {
  const env = await FaultEnv.create(opts);
  t.after(() => env.dispose());
  try {
    await body(env);
  } catch (err) {
    env.failed = true;
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Load

export type OpKind = 'enroll' | 'drop' | 'change' | 'capacity';

export interface OpRecord {
  n: number;
  kind: OpKind;
  /** Students' own requests; absent for staff capacity changes. */
  student?: number;
  course: number;
  group?: number;
  capacity?: number;
  status: number;
  code: string;
  reason: string;
  start: number;
  ms: number;
  phase: string;
}

export type Outcome = 'applied' | 'refused' | 'doubt';

export function outcomeOf(status: number): Outcome {
  if (status >= 200 && status < 300) return 'applied';
  if ((status >= 400 && status < 500) || status === -1) return 'refused';
  return 'doubt';
}

export interface LoadOptions {
  concurrency?: number;
  /** Share of staff capacity changes among the requests. */
  staffShare?: number;
  /** Pause after a request that reached no server or got a 503, so a dead engine is not hammered. */
  backoffMs?: number;
  /** When the student holds something: chance of a drop, and of a change of group (else an enroll). */
  dropShare?: number;
  changeShare?: number;
}

/**
 * Keeps `concurrency` requests in flight: students' enroll / drop / change group (one request at a
 * time per student) and staff capacity changes (one at a time per section).
 */
export class LoadDriver {
  readonly records: OpRecord[] = [];
  phase = 'load';
  private running = false;
  private workers: Promise<void>[] = [];
  private readonly busyStudents = new Set<number>();
  private readonly busySections = new Set<string>();
  /** What each student holds, as far as the acknowledged replies tell (to pick sensible requests). */
  private readonly believed = new Map<number, Map<number, number>>();
  private counter = 0;
  private readonly concurrency: number;
  private readonly staffShare: number;
  private readonly backoffMs: number;
  private readonly dropShare: number;
  private readonly changeShare: number;
  /** Sections with a free seat or queue place at the last look (students watch live seat counts). */
  private withRoom: SeedSection[] = [];

  constructor(
    private readonly env: FaultEnv,
    opts: LoadOptions = {},
  ) {
    this.concurrency = opts.concurrency ?? 48;
    this.staffShare = opts.staffShare ?? 0.05;
    this.backoffMs = opts.backoffMs ?? 100;
    this.dropShare = opts.dropShare ?? 0.3;
    this.changeShare = opts.changeShare ?? 0.3;
    env.loads.add(this);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    for (let i = 0; i < this.concurrency; i++) this.workers.push(this.work());
    this.workers.push(this.watchSeats());
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
    this.workers = [];
  }

  private async watchSeats(): Promise<void> {
    while (this.running) {
      const r = await this.env.api.request('GET', '/sections', this.env.staffToken, undefined, 2000);
      if (r.status === 200) {
        const list = (r.body as { sections: CourseDataWire[] }).sections;
        this.withRoom = list
          .filter((s) => s.registered_count < s.capacity || s.reserved_count < s.reserve_capacity)
          .map((s) => ({ courseId: s.course_id, groupId: s.group_id, capacity: s.capacity, reserveCapacity: s.reserve_capacity }));
      }
      await sleep(100);
    }
  }

  /** Mostly a section that had room at the last look; sometimes any section. */
  private pickSection(pred: (s: SeedSection) => boolean = () => true): SeedSection | undefined {
    const roomy = this.withRoom.filter(pred);
    const pool = roomy.length > 0 && Math.random() < 0.85 ? roomy : this.env.seed.sections.filter(pred);
    return pool[Math.floor(Math.random() * pool.length)];
  }

  count(pred: (r: OpRecord) => boolean = () => true): number {
    let n = 0;
    for (const r of this.records) if (pred(r)) n++;
    return n;
  }

  /** A rough lower bound of the events the acknowledged requests produced. */
  eventsLowerBound(): number {
    let n = 0;
    for (const r of this.records) {
      if (outcomeOf(r.status) !== 'applied') continue;
      n += r.kind === 'enroll' || r.kind === 'capacity' ? 1 : r.kind === 'drop' ? 2 : 3;
    }
    return n;
  }

  private async work(): Promise<void> {
    while (this.running) {
      const answer = await this.one();
      // A dead engine (refused) or storage away (503): pause instead of spinning on fast failures.
      if (answer === -1 || answer === 0 || answer === 503) await sleep(this.backoffMs);
    }
  }

  /** Sends one request; returns its status (200 when none was sent). */
  private async one(): Promise<number> {
    const { seed } = this.env;
    if (Math.random() < this.staffShare) {
      const s = seed.sections[Math.floor(Math.random() * seed.sections.length)] as SeedSection;
      const key = sectionKey(s.courseId, s.groupId);
      if (this.busySections.has(key)) return 200;
      this.busySections.add(key);
      try {
        const capacity = 2 + Math.floor(Math.random() * 11);
        const r = await this.send(
          { kind: 'capacity', course: s.courseId, group: s.groupId, capacity },
          'PATCH',
          '/staff/capacity',
          this.env.staffToken,
          { course_id: s.courseId, group_id: s.groupId, capacity },
        );
        return r.status;
      } finally {
        this.busySections.delete(key);
      }
    }
    let student = -1;
    for (let i = 0; i < 8; i++) {
      const id = seed.students[Math.floor(Math.random() * seed.students.length)] as number;
      if (!this.busyStudents.has(id)) {
        student = id;
        break;
      }
    }
    if (student < 0) {
      await sleep(1);
      return 200;
    }
    this.busyStudents.add(student);
    try {
      const token = this.env.studentToken(student);
      const held = this.believed.get(student) ?? new Map<number, number>();
      const heldCourses = [...held.keys()];
      const dice = Math.random();
      let r: Reply;
      if (heldCourses.length > 0 && dice < this.dropShare) {
        const course = heldCourses[Math.floor(Math.random() * heldCourses.length)] as number;
        r = await this.send({ kind: 'drop', student, course }, 'DELETE', `/student/course?course_id=${course}`, token);
        if (r.status === 204) held.delete(course);
      } else if (heldCourses.length > 0 && dice < this.dropShare + this.changeShare) {
        const course = heldCourses[Math.floor(Math.random() * heldCourses.length)] as number;
        const group = (this.pickSection((s) => s.courseId === course && s.groupId !== held.get(course)) as SeedSection).groupId;
        r = await this.send({ kind: 'change', student, course, group }, 'PATCH', '/student/course', token, { course_id: course, group_id: group });
        if (r.status === 204) held.set(course, group);
      } else {
        const s = this.pickSection((x) => !held.has(x.courseId)) ?? (seed.sections[0] as SeedSection);
        r = await this.send({ kind: 'enroll', student, course: s.courseId, group: s.groupId }, 'PUT', '/student/course', token, {
          course_id: s.courseId,
          group_id: s.groupId,
        });
        if (r.status === 204) held.set(s.courseId, s.groupId);
      }
      this.believed.set(student, held);
      return r.status;
    } finally {
      this.busyStudents.delete(student);
    }
  }

  /** Sends one recorded request. */
  async send(
    op: Pick<OpRecord, 'kind' | 'student' | 'course' | 'group' | 'capacity'>,
    method: string,
    path: string,
    token: string,
    body?: unknown,
  ): Promise<Reply> {
    const start = performance.now();
    const n = this.counter++;
    const r = await this.env.api.request(method, path, token, body);
    this.records.push({ n, ...op, status: r.status, code: codeOf(r), reason: reasonOf(r), start, ms: r.ms, phase: this.phase });
    return r;
  }

  summary(): string {
    const by = new Map<string, number>();
    for (const r of this.records) {
      const k = r.status >= 200 && r.status < 300 ? '2xx' : r.status === 503 ? '503' : r.status === 0 ? 'broken' : r.status === -1 ? 'refused' : String(r.status);
      by.set(k, (by.get(k) ?? 0) + 1);
    }
    return `${this.records.length} requests (${[...by].map(([k, v]) => `${k}: ${v}`).join(', ')})`;
  }
}

// ---------------------------------------------------------------------------------------------
// State as seen through the API and in PostgreSQL

export interface SectionState {
  courseId: number;
  groupId: number;
  capacity: number;
  reserveCapacity: number;
  closed: boolean;
  registered: number[];
  queue: number[];
}

export interface Snapshot {
  sections: SectionState[];
  /** Remaining actions per student. */
  remaining: Record<number, number>;
}

interface CourseDataWire {
  course_id: number;
  group_id: number;
  capacity: number;
  reserve_capacity: number;
  registered_count: number;
  reserved_count: number;
  closed: boolean;
}

async function mapLimit<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (i < items.length) {
        const k = i++;
        out[k] = await fn(items[k] as T);
      }
    }),
  );
  return out;
}

async function getJson<T>(api: Api, path: string, token: string): Promise<T> {
  const r = await api.request('GET', path, token);
  if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as T;
}

/** The engine's state through the API: staff section list, members in order, students' actions. */
export async function readApi(env: FaultEnv): Promise<Snapshot> {
  const { api, staffToken } = env;
  const list = await getJson<{ sections: CourseDataWire[] }>(api, '/sections', staffToken);
  const sections = await mapLimit(list.sections, 16, async (s) => {
    const m = await getJson<{ registered_students: number[]; reserved_queue_students: number[] }>(
      api,
      `/sections/${s.course_id}/${s.group_id}/students`,
      staffToken,
    );
    if (m.registered_students.length !== s.registered_count || m.reserved_queue_students.length !== s.reserved_count) {
      throw new Error(`section ${s.course_id}/${s.group_id}: counts and member lists disagree (the state moved: is the load stopped?)`);
    }
    return {
      courseId: s.course_id,
      groupId: s.group_id,
      capacity: s.capacity,
      reserveCapacity: s.reserve_capacity,
      closed: s.closed,
      registered: m.registered_students,
      queue: m.reserved_queue_students,
    };
  });
  const remaining: Record<number, number> = {};
  await mapLimit(env.seed.students, 32, async (id) => {
    const me = await getJson<{ remaining_actions: number }>(api, '/me', env.studentToken(id));
    remaining[id] = me.remaining_actions;
  });
  return normalizeSnapshot({ sections, remaining });
}

/** The same view read from PostgreSQL with the engine's own loader. */
export async function readDatabase(db: SqlClient): Promise<Snapshot> {
  const s = await loadState(db);
  const remaining: Record<number, number> = {};
  for (const st of s.students) remaining[st.id] = st.remainingActions;
  return normalizeSnapshot({
    sections: s.sections.map((c) => ({
      courseId: c.info.courseId,
      groupId: c.info.groupId,
      capacity: c.capacity,
      reserveCapacity: c.reserveCapacity,
      closed: c.closed,
      registered: [...c.registered],
      queue: [...c.queue],
    })),
    remaining,
  });
}

function normalizeSnapshot(s: Snapshot): Snapshot {
  const remaining: Record<number, number> = {};
  for (const k of Object.keys(s.remaining).map(Number).sort((a, b) => a - b)) remaining[k] = s.remaining[k] as number;
  return { sections: [...s.sections].sort((a, b) => a.courseId - b.courseId || a.groupId - b.groupId), remaining };
}

/** Polls PostgreSQL until it equals `expected`; returns how long that took, or throws with the difference. */
export async function waitDatabaseEquals(env: FaultEnv, expected: Snapshot, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  const want = JSON.stringify(expected);
  let last: Snapshot | null = null;
  for (;;) {
    try {
      last = await readDatabase(env.db);
      if (JSON.stringify(last) === want) return performance.now() - t0;
    } catch {
      // the database may be briefly unreachable for our own client too
    }
    if (performance.now() - t0 > timeoutMs) {
      throw new Error(`PostgreSQL did not converge to the API's state within ${timeoutMs} ms:\n${diffSnapshots(expected, last)}`);
    }
    await sleep(100);
  }
}

export function diffSnapshots(api: Snapshot, db: Snapshot | null): string {
  if (!db) return 'the database could not be read';
  const out: string[] = [];
  const dbs = new Map(db.sections.map((s) => [sectionKey(s.courseId, s.groupId), s]));
  for (const s of api.sections) {
    const d = dbs.get(sectionKey(s.courseId, s.groupId));
    if (JSON.stringify(d) !== JSON.stringify(s)) out.push(`section ${s.courseId}/${s.groupId}: api ${JSON.stringify(s)} db ${JSON.stringify(d)}`);
  }
  for (const [id, n] of Object.entries(api.remaining)) {
    if (db.remaining[Number(id)] !== n) out.push(`student ${id}: api remaining ${n}, db ${String(db.remaining[Number(id)])}`);
  }
  return out.slice(0, 15).join('\n') || '(no difference in sections or actions)';
}

// ---------------------------------------------------------------------------------------------
// Checks

/** SPEC 4's invariants over a snapshot. */
export function checkInvariants(s: Snapshot): string[] {
  const problems: string[] = [];
  const perStudentCourse = new Map<string, string>();
  for (const sec of s.sections) {
    const name = `${sec.courseId}/${sec.groupId}`;
    if (sec.registered.length > sec.capacity) problems.push(`${name}: ${sec.registered.length} registered > capacity ${sec.capacity}`);
    if (sec.queue.length > sec.reserveCapacity) problems.push(`${name}: queue ${sec.queue.length} > reserve capacity ${sec.reserveCapacity}`);
    if (sec.queue.length > 0 && sec.registered.length < sec.capacity) {
      problems.push(`${name}: ${sec.queue.length} queued while only ${sec.registered.length}/${sec.capacity} seats are taken`);
    }
    const seen = new Set<number>();
    for (const id of [...sec.registered, ...sec.queue]) {
      if (seen.has(id)) problems.push(`${name}: student ${id} appears twice (registered and/or queued)`);
      seen.add(id);
      const k = `${id}:${sec.courseId}`;
      const other = perStudentCourse.get(k);
      if (other && other !== name) problems.push(`student ${id} holds two groups of course ${sec.courseId}: ${other} and ${name}`);
      perStudentCourse.set(k, name);
    }
  }
  return problems;
}

interface Candidate {
  held: Map<number, number>;
  used: number;
}

const candKey = (c: Candidate) =>
  `${[...c.held].sort((a, b) => a[0] - b[0]).map(([course, group]) => `${course}:${group}`).join(',')}|${c.used}`;

function applyOp(c: Candidate, r: OpRecord): Candidate | null {
  const held = new Map(c.held);
  switch (r.kind) {
    case 'enroll':
      if (held.has(r.course)) return null;
      held.set(r.course, r.group as number);
      return { held, used: c.used };
    case 'drop':
      if (!held.has(r.course)) return null;
      held.delete(r.course);
      return { held, used: c.used + 1 };
    case 'change':
      if (!held.has(r.course) || held.get(r.course) === r.group) return null;
      held.set(r.course, r.group as number);
      return { held, used: c.used + 1 };
    default:
      return null;
  }
}

export interface ModelReport {
  problems: string[];
  applied: number;
  refused: number;
  inDoubt: number;
  /** In-doubt requests whose change turned out to be present (decided by the final state). */
  inDoubtStudents: number;
}

/**
 * Replays each student's requests, in the order they were sent (one at a time per student), over
 * the set of states the student may be in: an acknowledged change must be possible and happens
 * once, a refused one changes nothing, an in-doubt one may or may not have happened. The final
 * state (sections held, actions used) must be one of the possible states. Staff capacity changes
 * are checked the same way per section.
 */
export function checkModel(records: OpRecord[], s: Snapshot, seed: Seed): ModelReport {
  const problems: string[] = [];
  let applied = 0;
  let refused = 0;
  let inDoubt = 0;
  const doubtStudents = new Set<number>();
  const byStudent = new Map<number, OpRecord[]>();
  const bySection = new Map<string, OpRecord[]>();
  for (const r of [...records].sort((a, b) => a.start - b.start)) {
    const o = outcomeOf(r.status);
    if (o === 'applied') applied++;
    else if (o === 'refused') refused++;
    else inDoubt++;
    if (r.status >= 500 && r.status !== 503) problems.push(`request #${r.n} (${r.kind}) answered ${r.status}: ${r.reason}`);
    if (r.status === 503 && r.reason === '') problems.push(`request #${r.n} (${r.kind}) answered 503 without a reason`);
    if (r.student !== undefined) {
      const l = byStudent.get(r.student) ?? [];
      l.push(r);
      byStudent.set(r.student, l);
      if (o === 'doubt') doubtStudents.add(r.student);
    } else {
      const k = sectionKey(r.course, r.group as number);
      const l = bySection.get(k) ?? [];
      l.push(r);
      bySection.set(k, l);
    }
  }

  // Actual holdings per student.
  const actual = new Map<number, Candidate>();
  for (const id of Object.keys(s.remaining).map(Number)) {
    actual.set(id, { held: new Map(), used: INITIAL_ACTIONS - (s.remaining[id] as number) });
  }
  for (const sec of s.sections) {
    for (const id of [...sec.registered, ...sec.queue]) {
      const a = actual.get(id);
      if (!a) problems.push(`section ${sec.courseId}/${sec.groupId} holds unknown student ${id}`);
      else a.held.set(sec.courseId, sec.groupId);
    }
  }

  const describe = (ops: OpRecord[]) =>
    ops.map((r) => `#${r.n} ${r.kind} ${r.course}${r.group !== undefined ? `/${r.group}` : ''} -> ${r.status}${r.code ? ` ${r.code}` : ''} [${r.phase}]`).join('; ');

  for (const [id, a] of actual) {
    const ops = byStudent.get(id) ?? [];
    let cands: Candidate[] = [{ held: new Map(), used: 0 }];
    let broken = false;
    for (const r of ops) {
      const o = outcomeOf(r.status);
      if (o === 'applied') {
        cands = cands.map((c) => applyOp(c, r)).filter((c): c is Candidate => c !== null);
      } else if (o === 'refused') {
        if (r.code === 'NOT_ENROLLED') cands = cands.filter((c) => !c.held.has(r.course));
        else if (r.code === 'SAME_COURSE' && r.kind === 'enroll') cands = cands.filter((c) => c.held.has(r.course));
      } else {
        const next = new Map(cands.map((c) => [candKey(c), c]));
        for (const c of cands) {
          const d = applyOp(c, r);
          if (d) next.set(candKey(d), d);
        }
        cands = [...next.values()];
      }
      if (cands.length === 0) {
        problems.push(`student ${id}: request #${r.n} (${r.kind}, ${r.status} ${r.code}) contradicts the replies before it: ${describe(ops)}`);
        broken = true;
        break;
      }
      if (cands.length > 4096) {
        problems.push(`student ${id}: too many in-doubt requests to check`);
        broken = true;
        break;
      }
    }
    if (broken) continue;
    if (!cands.some((c) => candKey(c) === candKey(a))) {
      problems.push(
        `student ${id}: final state ${candKey(a)} is not one the replies allow (${cands.slice(0, 4).map(candKey).join(' or ')}); requests: ${describe(ops)}`,
      );
    }
  }

  const initial = new Map(seed.sections.map((x) => [sectionKey(x.courseId, x.groupId), x.capacity]));
  for (const sec of s.sections) {
    const key = sectionKey(sec.courseId, sec.groupId);
    const ops = bySection.get(key) ?? [];
    let cands = new Set<number>([initial.get(key) ?? -1]);
    for (const r of ops) {
      const o = outcomeOf(r.status);
      if (o === 'applied') cands = new Set([r.capacity as number]);
      else if (o === 'doubt') cands.add(r.capacity as number);
    }
    if (!cands.has(sec.capacity)) {
      problems.push(`section ${sec.courseId}/${sec.groupId}: capacity ${sec.capacity}, but the replies allow only ${[...cands].join(' or ')}`);
    }
  }
  return { problems, applied, refused, inDoubt, inDoubtStudents: doubtStudents.size };
}

/**
 * The full check after a scenario: the API's state obeys the invariants and the model, and
 * PostgreSQL converges to it. Returns the snapshot and how long PostgreSQL took to catch up.
 */
export async function verifyAll(env: FaultEnv, load: LoadDriver, dbTimeoutMs = 30_000): Promise<{ snapshot: Snapshot; report: ModelReport; dbCatchUpMs: number }> {
  const snapshot = await readApi(env);
  const problems = checkInvariants(snapshot);
  const report = checkModel(load.records, snapshot, env.seed);
  problems.push(...report.problems);
  if (problems.length > 0) {
    throw new Error(`${problems.length} problem(s):\n  ${problems.slice(0, 25).join('\n  ')}`);
  }
  const dbCatchUpMs = await waitDatabaseEquals(env, snapshot, dbTimeoutMs);
  return { snapshot, report, dbCatchUpMs };
}

export function fmtMs(ms: number): string {
  return `${Math.round(ms)} ms`;
}

export function log(line: string): void {
  console.log(`[faults] ${line}`);
}
