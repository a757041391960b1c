import { createSeededRandom } from '../../src/seeded-random.js';
import { buildRequest, type HttpConnection } from './http.js';
import { runFixed, runTimed, type Job, type LoadResult } from './load.js';
import { runStorm } from './storm.js';

type Timed = LoadResult & { lastReplyAt: number };
import { BENCH_PASSWORD, sectionRef, studentId, type Ledger, type SectionRef, type SeedSpec } from './seed.js';

/** The request mixes of the scenarios, built on the load generator. */


export interface Target {
  host: string;
  port: number;
}

function hostHeader(t: Target): string {
  return `${t.host}:${t.port}`;
}

/**
 * Logs students in: `owner(i)` is the connection student i logs in on. Returns their tokens
 * (index = student index) and the load figures of the login phase.
 */
export async function loginAll(opts: {
  label: string;
  target: Target;
  conns: HttpConnection[];
  students: number;
  owner: (student: number) => number;
}): Promise<{ tokens: string[]; result: LoadResult }> {
  const tokens: string[] = new Array<string>(opts.students).fill('');
  const queues: number[][] = opts.conns.map(() => []);
  for (let i = 0; i < opts.students; i++) queues[opts.owner(i)]!.push(i);
  const host = hostHeader(opts.target);
  const result = await runFixed({
    label: opts.label,
    conns: opts.conns,
    total: opts.students,
    next: (c) => {
      const i = queues[c]!.shift();
      if (i === undefined) return null;
      return {
        op: 'login',
        wantBody: true,
        raw: buildRequest({ method: 'POST', path: '/login', host, body: { user: studentId(i), password: BENCH_PASSWORD, staff: false } }),
        onReply: (r) => {
          if (r.status === 200 && r.body) tokens[i] = (JSON.parse(r.body.toString('utf8')) as { token: string }).token;
        },
      };
    },
  });
  const missing = tokens.filter((t) => t === '').length;
  if (missing > 0) {
    throw new Error(`${missing} of ${opts.students} logins failed: ${JSON.stringify(result.errors)}`);
  }
  return { tokens, result };
}

export function enrollRequest(target: Target, token: string, s: SectionRef): Buffer {
  return buildRequest({ method: 'PUT', path: '/student/course', host: hostHeader(target), token, body: { course_id: s.courseId, group_id: s.groupId } });
}

/**
 * The Go service's workload: every student sends `perStudent` enrolls for uniformly random
 * sections, one after another on the student's own keep-alive connection; all connections are
 * released at once (connections open and requests built beforehand).
 */
export function seedPlan(spec: SeedSpec, perStudent: number, seed: number): SectionRef[][] {
  const rand = createSeededRandom(seed);
  return Array.from({ length: spec.students }, () =>
    Array.from({ length: perStudent }, () => sectionRef(spec, Math.floor(rand() * spec.sections))),
  );
}

export async function runSeedLoad(opts: {
  label: string;
  target: Target;
  conns: HttpConnection[];
  tokens: string[];
  plan: SectionRef[][];
  ledger: Ledger | null;
  /** Every request on a new connection (`--fresh-connections`), one client per connection's worth. */
  fresh?: boolean;
}): Promise<Timed> {
  const jobs: Job[][] = opts.plan.map((sections, i) =>
    sections.map((s) => ({
      op: 'enroll',
      raw: enrollRequest(opts.target, opts.tokens[i]!, s),
      onReply: (r) => {
        if (r.status === 204) opts.ledger?.add(studentId(i), s.courseId, s.groupId);
      },
    })),
  );
  const cursor = new Array<number>(jobs.length).fill(0);
  const next = (c: number): Job | null => {
    const k = cursor[c]!;
    const j = jobs[c]![k];
    if (!j) return null;
    cursor[c] = k + 1;
    return j;
  };
  const total = jobs.reduce((a, j) => a + j.length, 0);
  if (opts.fresh) return runStorm({ label: opts.label, host: opts.target.host, port: opts.target.port, clients: opts.conns.length, next, total });
  return runFixed({ label: opts.label, conns: opts.conns, total, next });
}

/**
 * The registration rush: one enroll per student, student i on section i mod sections, every
 * request queued at once and taken by whichever of the (fewer) connections is free.
 */
export async function runRushLoad(opts: {
  label: string;
  target: Target;
  conns: HttpConnection[];
  tokens: string[];
  spec: SeedSpec;
  ledger: Ledger | null;
  /** Every request on a new connection (`--fresh-connections`), as many clients as connections. */
  fresh?: boolean;
}): Promise<Timed> {
  const queue: Job[] = opts.tokens.map((token, i) => {
    const s = sectionRef(opts.spec, i % opts.spec.sections);
    return {
      op: 'enroll',
      raw: enrollRequest(opts.target, token, s),
      onReply: (r) => {
        if (r.status === 204) opts.ledger?.add(studentId(i), s.courseId, s.groupId);
      },
    };
  });
  let next = 0;
  const take = (): Job | null => queue[next++] ?? null;
  if (opts.fresh) return runStorm({ label: opts.label, host: opts.target.host, port: opts.target.port, clients: opts.conns.length, next: take, total: queue.length });
  return runFixed({ label: opts.label, conns: opts.conns, total: queue.length, next: take });
}

export interface SteadyMix {
  enroll: number;
  drop: number;
  list: number;
}

/**
 * Steady mixed load for a fixed time: connection c serves students c, c + C, c + 2C, ... in
 * turn, so each student's requests stay in order and the client knows every student's holdings.
 * Each request is an enroll (random section), a drop (of a course held) or a list of the
 * student's own sections, by the weights of `mix`; a student holding `maxHeld` sections drops
 * instead of enrolling, one holding none enrolls instead of dropping. State carries over from one
 * `run` to the next (warm-up, then the measured run).
 */
export class SteadyDriver {
  private readonly rand: () => number;
  private readonly holdings: Map<number, number>[];
  private readonly turn: number[];
  private readonly listReqs: Buffer[];
  private readonly host: string;

  constructor(
    private readonly opts: {
      target: Target;
      conns: HttpConnection[];
      tokens: string[];
      spec: SeedSpec;
      mix: SteadyMix;
      seed: number;
      maxHeld: number;
      ledger: Ledger | null;
      /** Index of the student whose token is tokens[0] (default 0). */
      firstStudent?: number;
    },
  ) {
    if (opts.tokens.length < opts.conns.length) throw new Error('steady needs at least one student per connection');
    this.rand = createSeededRandom(opts.seed);
    this.host = hostHeader(opts.target);
    this.holdings = opts.tokens.map(() => new Map<number, number>());
    this.turn = opts.conns.map(() => 0);
    this.listReqs = opts.tokens.map((token) => buildRequest({ method: 'GET', path: '/student/course', host: this.host, token }));
  }

  run(label: string, durationMs: number): Promise<Timed> {
    return runTimed({ label, conns: this.opts.conns, durationMs, next: (c) => this.next(c) });
  }

  private next(c: number): Job {
    const { conns, tokens, mix, spec, ledger } = this.opts;
    const first = this.opts.firstStudent ?? 0;
    const perConn = Math.ceil((tokens.length - c) / conns.length);
    const i = c + conns.length * (this.turn[c]! % perConn);
    this.turn[c] = this.turn[c]! + 1;
    const held = this.holdings[i]!;
    const token = tokens[i]!;
    const x = this.rand() * (mix.enroll + mix.drop + mix.list);
    let op: 'enroll' | 'drop' | 'list' = x < mix.enroll ? 'enroll' : x < mix.enroll + mix.drop ? 'drop' : 'list';
    if (op === 'enroll' && held.size >= this.opts.maxHeld) op = 'drop';
    if (op === 'drop' && held.size === 0) op = 'enroll';
    if (op === 'list') return { op, raw: this.listReqs[i]! };
    if (op === 'drop') {
      const keys = [...held.keys()];
      const courseId = keys[Math.floor(this.rand() * keys.length)]!;
      return {
        op,
        raw: buildRequest({ method: 'DELETE', path: `/student/course?course_id=${courseId}`, host: this.host, token }),
        onReply: (r) => {
          if (r.status === 204) {
            ledger?.remove(studentId(first + i), courseId, held.get(courseId)!);
            held.delete(courseId);
          }
        },
      };
    }
    const s = sectionRef(spec, Math.floor(this.rand() * spec.sections));
    return {
      op,
      raw: enrollRequest(this.opts.target, token, s),
      onReply: (r) => {
        if (r.status === 204) {
          held.set(s.courseId, s.groupId);
          ledger?.add(studentId(first + i), s.courseId, s.groupId);
        }
      },
    };
  }
}
