import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { membershipOf } from '../src/actors/section-logic.js';
import { createSectionActor, sectionStateName } from '../src/actors/section-machine.js';
import type { SectionContext, SectionEmitted, SectionEvent } from '../src/actors/types.js';
import { ERROR_STATUS, type ErrorCode } from '../src/errors.js';
import { assertStateInvariants, makeSection, makeStaff, makeStudent, meta } from './support/engine-fixture.js';
import type { Reply } from './support/http-fixture.js';
import { applyToEngine, applyToModel, commandArb, comparableFromModel, describeCommand, WORLD_NOW } from './support/model-commands.js';
import { namespacedWorld } from './support/namespaced-world.js';
import { normalize } from './support/scenario.js';
import {
  abstractKey,
  buildModelGraph,
  genderOf,
  INITIAL,
  type Intent,
  type LabeledCommand,
  modelInitialContext,
  type ModelGraph,
  resolveIntent,
  STUDENTS,
} from './support/section-graph.js';
import { initialKey, stateCoverWalk, transitionCoverWalk, walkChunks } from './support/section-walks.js';
import { embeddedMode, fullMode, type ModeFactory, type StoreHarness } from './support/store-harness.js';

/**
 * SPEC section 7 and issue 4, end to end and on the real stores.
 *
 * 1. The generated model paths (support/section-graph.ts) replayed through the REST API with
 *    `app.inject`: student commands with the student's own token (PUT/PATCH/DELETE /student/course),
 *    staff commands through the staff routes (PUT/DELETE /staff/force-std, PATCH /staff/capacity)
 *    and the section routes (PATCH /sections/:c/:g, POST .../close and .../reopen). After every step
 *    GET /sections/:c/:g and GET /staff/course-students must report what the model expects (the
 *    reply's status and code, the machine state and numbers, the registered list, the queue in
 *    order), and now and then the student's own GET /student/course (queue position included).
 *    Coverage is counted on what the API reported: every abstract state and every transition of
 *    the graph. Replaying all 6,849 cover paths (~42,000 steps) through HTTP takes too long, so the
 *    replay uses one walk that takes every transition (~12,000 steps, support/section-walks.ts), cut
 *    into chunks run side by side on separate sections; the full path set still runs on the actor
 *    and the engine in section-model.test.ts.
 * 2. The same suite against each real store (a factory per mode, support/store-harness.ts): the
 *    embedded store (PGlite in memory) and the full store (PostgreSQL + RabbitMQ, batcher in
 *    process; skipped locally when unreachable, a failure under CI=true). Each runs the API replay
 *    with a restart half-way, a fast-check property against the reference model with a restart in
 *    every run, and checks that the database (loadState) equals the actors' state (dumpState).
 *    MemoryPersistence is left out: section-model.test.ts and section-property.test.ts run on it.
 */

/** Inside every student's window, the model paths' and the property worlds'. */
const NOW = WORLD_NOW;
/** Chunk i of the walk runs on course COURSE_BASE + i: group 1 is the model's section, group 2 a parking group. */
const COURSE_BASE = 500_000;
const STUDENT_BASE = 600_000;
const G = 1;
const PARK = 2;
/** Walk chunks, and how many run side by side (their appends share group commits). */
const CHUNKS = { transitions: 64, states: 16 };
const PARALLEL = 32;
/** Every how many steps a student's own view (GET /student/course with their token) is checked too. */
const STUDENT_VIEW_EVERY = 5;

type Cover = 'transitions' | 'states';
/**
 * Which walk each store replays through HTTP. The transition cover (~12,000 steps, each a command
 * and two or three GETs) costs ~15 s of CPU, too much to pay twice in `npm test`; the REST layer and
 * the engine are the same in every mode, so the full store replays the walk that visits every
 * state (~800 steps) unless MODEL_API_FULL_COVER=1 asks for every transition there too.
 */
const COVER: Record<'embedded' | 'full', Cover> = {
  embedded: 'transitions',
  full: process.env.MODEL_API_FULL_COVER === '1' ? 'transitions' : 'states',
};
const STAFF_ID = 1;

interface ModelSetup {
  graph: ModelGraph;
  cover: Cover;
  chunks: Intent[][];
  traces: StepRecord[][];
  edgeCount: number;
}

interface StepRecord {
  intent: Intent;
  command: LabeledCommand;
  outcome: { ok: true; first: SectionEvent['type'] | undefined } | { ok: false; code: string };
  context: SectionContext;
  state: string;
  /** The abstract state after the step, as the graph names it. */
  key: string;
}

let graphCache: ModelGraph | null = null;
const setups = new Map<Cover, ModelSetup>();

/** The graph, the chunks of the covering walk, and each chunk run on a bare actor (the expectation). */
function modelSetup(cover: Cover): ModelSetup {
  const cached = setups.get(cover);
  if (cached) return cached;
  graphCache ??= buildModelGraph();
  const graph = graphCache;
  const walk = cover === 'transitions' ? transitionCoverWalk(graph) : stateCoverWalk(graph);
  const chunks = walkChunks(graph, walk, CHUNKS[cover]);
  let edgeCount = 0;
  for (const out of graph.edges.values()) edgeCount += out.size;
  const setup: ModelSetup = { graph, cover, chunks, traces: chunks.map((c) => traceOnActor(graph, c)), edgeCount };
  setups.set(cover, setup);
  return setup;
}

function traceOnActor(graph: ModelGraph, path: Intent[]): StepRecord[] {
  const actor = createSectionActor({ context: modelInitialContext() });
  let emitted: SectionEmitted[] = [];
  actor.on('*', (e) => emitted.push(e));
  let key = initialKey(graph);
  const trace: StepRecord[] = [];
  for (const intent of path) {
    const cmd = resolveIntent(actor.getSnapshot().context, intent);
    assert.ok(cmd, `${intent} is enabled in ${key}`);
    emitted = [];
    actor.send(cmd);
    const snap = actor.getSnapshot();
    const next = abstractKey(sectionStateName(snap), snap.context);
    assert.equal(next, graph.edges.get(key)?.get(intent), `the actor follows the graph: ${key} --${intent}-->`);
    key = next;
    const rejection = emitted.find((e) => e.type === 'commandRefused');
    trace.push({
      intent,
      command: cmd,
      outcome: rejection ? { ok: false, code: rejection.code } : { ok: true, first: (emitted[0] as SectionEvent | undefined)?.type },
      context: snap.context,
      state: sectionStateName(snap),
      key,
    });
  }
  actor.stop();
  return trace;
}

// -------------------------------------------------------------------------------------------------
// The API replay

interface Coverage {
  states: Set<string>;
  edges: Set<string>;
  /** `route outcome` pairs seen, e.g. `PATCH /student/course 400 SECTION_FULL`. */
  routes: Set<string>;
  steps: number;
}

interface Expect {
  status: number;
  code?: string;
}

const refusal = (code: string): Expect => ({ status: ERROR_STATUS[code as ErrorCode], code });
/** On the Go service's routes (SPEC section 5) every rule refusal is a 400, with our code kept. */
const goRefusal = (code: string): Expect => ({ status: 400, code });

function expectReply(r: Reply, e: Expect, where: string): void {
  assert.equal(r.status, e.status, `${where}: status ${r.status} (${r.raw}), expected ${e.status} ${e.code ?? ''}`);
  if (e.code !== undefined) assert.equal(r.body?.code, e.code, `${where}: ${r.raw}`);
}

/** Replays one chunk of the walk on its own section (course COURSE_BASE + index) through the API. */
class ChunkRunner {
  readonly course: number;
  private readonly staff: string;
  private readonly tokens = new Map<number, string>();
  private readonly turns = new Map<string, number>();

  constructor(
    private readonly h: StoreHarness,
    private readonly graph: ModelGraph,
    private readonly index: number,
    private readonly cov: Coverage,
  ) {
    this.course = COURSE_BASE + index;
    this.staff = h.token(STAFF_ID, 'staff');
  }

  /** Cycles through the `n` ways of sending this kind of command, from a different one in each chunk. */
  private variant(kind: string, n: number): number {
    const t = this.turns.get(kind) ?? 0;
    this.turns.set(kind, t + 1);
    return (t + this.index) % n;
  }

  /** The student's own token (signed once per chunk). */
  private studentToken(id: number): string {
    let t = this.tokens.get(id);
    if (t === undefined) {
      t = this.h.token(id, 'student');
      this.tokens.set(id, t);
    }
    return t;
  }

  sid(modelId: number): number {
    return STUDENT_BASE + 10 * this.index + modelId;
  }

  private modelId(apiId: number): number {
    return apiId - STUDENT_BASE - 10 * this.index;
  }

  private async call(route: string, method: string, url: string, token: string, body?: unknown): Promise<Reply> {
    const r = await this.h.request(method, url, body === undefined ? { token } : { token, body });
    this.cov.routes.add(`${route} ${r.status}${r.status >= 400 ? ` ${r.body?.code}` : ''}`);
    return r;
  }

  /** Sends the step's command the way `variant` picks, and checks the reply. */
  private async send(step: StepRecord, where: string): Promise<void> {
    const cmd = step.command;
    const C = this.course;
    const ok = step.outcome.ok;
    const code = step.outcome.ok ? '' : step.outcome.code;
    const sectionUrl = `/sections/${C}/${G}`;
    let r: Reply;
    let e: Expect;
    // The API's students all have room in their schedules; that refusal is the actor's alone (the
    // API's own UNITS_EXCEEDED answers are tested in http-student). It changed nothing to observe.
    if (step.intent === 'enroll:overUnits') return;
    switch (cmd.type) {
      case 'enroll': {
        const id = this.sid(cmd.studentId);
        const token = this.studentToken(id);
        if (step.intent === 'enroll:seatOnly') {
          // A seat or nothing is a swap without queue_ok: park in group 2 of the course, then swap
          // the parked place for the model's section. Refused, the student is still parked.
          const park = await this.h.request('PUT', '/student/course', { token, body: { course_id: C, group_id: PARK } });
          expectReply(park, { status: 204 }, `${where}: parking`);
          r = await this.call('POST /student/swap', 'POST', '/student/swap', token, {
            drop: { course_id: C, group_id: PARK },
            enroll: { course_id: C, group_id: G },
          });
          e = ok ? { status: 200 } : refusal(code);
          if (!ok) {
            const out = await this.h.request('DELETE', `/staff/force-std?std_id=${id}&course_id=${C}&group_id=${PARK}`, { token: this.staff });
            expectReply(out, { status: 204 }, `${where}: unparking`);
          }
          break;
        }
        const variant = this.variant(step.intent === 'enroll:member' ? 'member' : 'enroll', 3);
        if (variant !== 1) {
          r = await this.call('PUT /student/course', 'PUT', '/student/course', token, { course_id: C, group_id: G });
          // The engine checks "already holds this course" before the section sees the command.
          e = ok ? { status: 204 } : goRefusal(code === 'ALREADY_IN_SECTION' ? 'SAME_COURSE' : code);
        } else if (step.intent === 'enroll:member') {
          r = await this.call('PATCH /student/course', 'PATCH', '/student/course', token, { course_id: C, group_id: G });
          e = goRefusal('SAME_GROUP');
        } else {
          // A change of group into the model's section: park in group 2 of the same course, then move.
          const park = await this.h.request('PUT', '/student/course', { token, body: { course_id: C, group_id: PARK } });
          expectReply(park, { status: 204 }, `${where}: parking`);
          r = await this.call('PATCH /student/course', 'PATCH', '/student/course', token, { course_id: C, group_id: G });
          e = ok ? { status: 204 } : goRefusal(code);
          if (!ok) {
            // A refused move changes nothing: the student is still parked. Staff take them out again.
            const held = await this.h.request('GET', '/student/course', { token });
            assert.deepEqual(held.body.data.map((d: { course: { group_id: number } }) => d.course.group_id), [PARK], `${where}: a refused move left the student where they were`);
            const out = await this.h.request('DELETE', `/staff/force-std?std_id=${id}&course_id=${C}&group_id=${PARK}`, { token: this.staff });
            expectReply(out, { status: 204 }, `${where}: unparking`);
          }
        }
        break;
      }
      case 'drop': {
        const id = this.sid(cmd.studentId);
        r =
          this.variant('drop', 2) === 0
            ? await this.call('DELETE /student/course', 'DELETE', `/student/course?course_id=${C}`, this.studentToken(id))
            : await this.call('DELETE /staff/force-std', 'DELETE', `/staff/force-std?std_id=${id}&course_id=${C}&group_id=${G}`, this.staff);
        e = ok ? { status: 204 } : goRefusal(code);
        break;
      }
      case 'forceEnroll':
        r = await this.call('PUT /staff/force-std', 'PUT', '/staff/force-std', this.staff, { std_id: this.sid(cmd.studentId), course_id: C, group_id: G });
        e = ok ? { status: 204 } : goRefusal(code);
        break;
      case 'changeSettings': {
        const c = cmd.change;
        if (c.capacity !== undefined && this.variant('capacity', 2) === 0) {
          r = await this.call('PATCH /staff/capacity', 'PATCH', '/staff/capacity', this.staff, { course_id: C, group_id: G, capacity: c.capacity });
          e = ok ? { status: 204 } : goRefusal(code);
        } else if (c.capacity !== undefined) {
          r = await this.call('PATCH /sections/:c/:g capacity', 'PATCH', sectionUrl, this.staff, { capacity: c.capacity });
          e = ok ? { status: 200 } : refusal(code);
        } else if (c.reserveCapacity !== undefined) {
          r = await this.call('PATCH /sections/:c/:g reserve_capacity', 'PATCH', sectionUrl, this.staff, { reserve_capacity: c.reserveCapacity });
          e = ok ? { status: 200 } : refusal(code);
        } else if (c.info?.units !== undefined) {
          // Units over every member's limit (the API's students may hold 99): MEMBER_RULES_CONFLICT.
          r = await this.call('PATCH /sections/:c/:g units', 'PATCH', sectionUrl, this.staff, { units: c.info.units });
          e = ok ? { status: 200 } : refusal(code);
        } else {
          r = await this.call('PATCH /sections/:c/:g sex_lock', 'PATCH', sectionUrl, this.staff, { sex_lock: c.sexLock });
          e = ok ? { status: 200 } : refusal(code);
        }
        break;
      }
      case 'close':
      case 'reopen':
        r = await this.call(`POST /sections/:c/:g/${cmd.type}`, 'POST', `${sectionUrl}/${cmd.type}`, this.staff);
        e = ok ? { status: 200 } : refusal(code);
        break;
      default:
        throw new Error(`the model never sends ${(cmd as { type: string }).type}`);
    }
    expectReply(r, e, where);
    // Routes that answer with the section answer with it as it is after the change (the swap
    // answers with where the student landed instead).
    if (r.status === 200 && step.intent === 'enroll:seatOnly') assert.deepEqual(r.body.status, 'registered', `${where}: the swap's answer`);
    else if (r.status === 200) assert.equal(r.body.state, step.state, `${where}: the reply's state`);
  }

  /** What the API says about the section now, checked against the model; returns the abstract state. */
  private async observe(step: StepRecord, i: number, where: string): Promise<string> {
    const C = this.course;
    const ctx = step.context;
    const sec = await this.h.request('GET', `/sections/${C}/${G}`, { token: this.staff });
    expectReply(sec, { status: 200 }, `${where}: GET /sections`);
    const b = sec.body;
    assert.deepEqual(
      {
        state: b.state,
        capacity: b.capacity,
        reserve_capacity: b.reserve_capacity,
        sex_lock: b.sex_lock,
        closed: b.closed,
        registered_count: b.registered_count,
        reserved_count: b.reserved_count,
      },
      {
        state: step.state,
        capacity: ctx.capacity,
        reserve_capacity: ctx.reserveCapacity,
        sex_lock: ctx.sexLock,
        closed: ctx.closed,
        registered_count: ctx.registered.length,
        reserved_count: ctx.queue.length,
      },
      `${where}: GET /sections/${C}/${G}`,
    );
    const lists = await this.h.request('GET', `/staff/course-students?course_id=${C}&group_id=${G}`, { token: this.staff });
    expectReply(lists, { status: 200 }, `${where}: GET /staff/course-students`);
    assert.deepEqual(
      lists.body,
      { registered_students: ctx.registered.map((m) => this.sid(m)), reserved_queue_students: ctx.queue.map((m) => this.sid(m)) },
      `${where}: registered list and queue order`,
    );
    // The students' own views (their tokens) now and then; all of them at the end of the chunk.
    if ((this.index + i) % STUDENT_VIEW_EVERY === 0 && 'studentId' in step.command) await this.checkStudentView(step.command.studentId, ctx, where);
    // The abstract state as the API reports it: coverage counts what was seen through HTTP.
    const seen: SectionContext = {
      ...modelInitialContext(),
      capacity: b.capacity,
      reserveCapacity: b.reserve_capacity,
      closed: b.closed,
      sexLock: b.sex_lock,
      registered: (lists.body.registered_students as number[]).map((id) => this.modelId(id)),
      queue: (lists.body.reserved_queue_students as number[]).map((id) => this.modelId(id)),
    };
    return abstractKey(b.state, seen);
  }

  /** The student's own view (their token): the model's section, with their queue position, or nothing. */
  private async checkStudentView(modelId: number, ctx: SectionContext, where: string, asStaff = false): Promise<void> {
    const id = this.sid(modelId);
    const r = asStaff
      ? await this.h.request('GET', `/staff/student-courses?std_id=${id}`, { token: this.staff })
      : await this.h.request('GET', '/student/course', { token: this.studentToken(id) });
    expectReply(r, { status: 200 }, `${where}: student ${id}'s courses`);
    const status = membershipOf(ctx, modelId);
    assert.deepEqual(
      (r.body.data as { course: { course_id: number; group_id: number }; reserve_queue_position?: number }[]).map((d) => [
        d.course.course_id,
        d.course.group_id,
        d.reserve_queue_position ?? null,
      ]),
      status === undefined ? [] : [[this.course, G, status === 'queued' ? ctx.queue.indexOf(modelId) + 1 : null]],
      `${where}: student ${id}'s own view`,
    );
  }

  async run(trace: StepRecord[]): Promise<void> {
    const graph = this.graph;
    let key = initialKey(graph);
    this.cov.states.add(key);
    for (const [i, step] of trace.entries()) {
      const where = `chunk ${this.index} step ${i + 1} (${step.intent} = ${JSON.stringify(step.command)}) from ${key}`;
      await this.send(step, where);
      const seen = await this.observe(step, i, where);
      assert.equal(seen, graph.edges.get(key)?.get(step.intent), `${where}: the API reports the state the graph says`);
      this.cov.edges.add(`${key} ${step.intent}`);
      this.cov.states.add(seen);
      this.cov.steps += 1;
      key = seen;
    }
    const last = trace.at(-1);
    if (last) for (const m of STUDENTS) await this.checkStudentView(m, last.context, `chunk ${this.index} end`, true);
  }
}

/** Runs `tasks` with at most `limit` at a time. */
async function pool<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await task(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

async function restartChecked(h: StoreHarness, reopenStore: boolean, where: string): Promise<void> {
  const before = normalize(h.engine.dumpState());
  await h.restart({ reopenStore });
  assert.deepEqual(normalize(h.engine.dumpState()), before, `${where}: the restart rebuilt a different state`);
}

async function databaseEqualsActors(h: StoreHarness, where: string): Promise<void> {
  assert.deepEqual(normalize(await h.databaseState()), normalize(h.engine.dumpState()), `${where}: the database differs from the actors`);
}

// -------------------------------------------------------------------------------------------------
// The suite, once per store

const PROPERTY_RUNS: Record<ModeFactory['name'], number> = { memory: 30, embedded: 30, 'embedded-worker': 15, full: 15 };

const MODES = [embeddedMode, fullMode];
// Services are probed before anything else runs (a busy event loop would time the probe out). An
// unreachable service under CI=true is an error, which fails that store's suite (and only it).
const SKIPS = await Promise.all(MODES.map((m) => m.skip().catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))))));

// The stores run side by side: one store's waits on PostgreSQL and RabbitMQ overlap another's CPU work.
describe('section model end to end, on every store', { concurrency: true }, () => {
  for (const [m, mode] of MODES.entries()) {
    // One store's tests run one after another: they share its engine and build on each other.
    describe(`section model end to end, ${mode.name} store`, { concurrency: 1 }, () => {
      const probe = SKIPS[m] ?? false;
      const skip = probe instanceof Error ? false : probe;
      let h: StoreHarness;
      let opened = false;
      before(async () => {
        if (probe instanceof Error) throw probe;
        if (skip) return;
        h = await mode.open({ now: NOW });
        opened = true;
      });
      after(async () => {
        if (opened) await h.close();
      });

      const cover = COVER[mode.name as 'embedded' | 'full'];
      const title =
        cover === 'transitions'
          ? 'the generated paths through the REST API: every state and every transition, checked after every step'
          : 'the generated paths through the REST API: every state (a walk through all of them), checked after every step';
      test(title, { skip }, async () => {
        const { graph, traces, edgeCount } = modelSetup(cover);
        const t0 = performance.now();
          await h.engine.importBatch(
          {
            departments: [],
            staff: [makeStaff(STAFF_ID)],
            students: traces.flatMap((_t, i) =>
              STUDENTS.map((m) => makeStudent(STUDENT_BASE + 10 * i + m, { gender: genderOf(m), remainingActions: 1000, maxUnits: 99 })),
            ),
            sections: traces.flatMap((_t, i) => [
              makeSection(COURSE_BASE + i, G, INITIAL),
              makeSection(COURSE_BASE + i, PARK, { capacity: 1000, reserveCapacity: 0 }),
            ]),
          },
          meta('system'),
        );
        const cov: Coverage = { states: new Set(), edges: new Set(), routes: new Set(), steps: 0 };
        const runners = traces.map((_t, i) => new ChunkRunner(h, graph, i, cov));
        const half = Math.ceil(traces.length / 2);
        const run = (from: number, to: number): Promise<void> =>
          pool(
            runners.slice(from, to).map((r, j) => [r, traces[from + j] as StepRecord[]] as const),
            PARALLEL,
            ([r, t]) => r.run(t),
          );
        await run(0, half);
        // A restart half-way: the state comes back exactly, and the second half runs on the new engine.
        await restartChecked(h, h.canReopenStore, 'API replay, half-way');
        await run(half, traces.length);
        await databaseEqualsActors(h, 'API replay');
        // Every transition is in the durable history, numbered as the model numbers them.
        for (const [i, t] of traces.entries()) {
          const r = await h.request('GET', `/sections/${COURSE_BASE + i}/${G}/transitions?limit=1`, { token: h.token(STAFF_ID, 'staff') });
          assert.equal(r.body.transitions[0]?.seq, t.at(-1)?.context.seq, `chunk ${i}: the last durable transition's seq`);
        }

        const machineStates = new Set([...cov.states].map((k) => k.split('|')[0]));
        console.log(
          `section model via REST (${mode.name} store, ${cover} cover): ${traces.length} walks, ${cov.steps} steps in ${Math.round(performance.now() - t0)} ms; ` +
            `machine states visited ${machineStates.size}/${graph.machineStates.length}; ` +
            `states visited ${cov.states.size}/${graph.edges.size} (${((100 * cov.states.size) / graph.edges.size).toFixed(1)}%), ` +
            `transitions visited ${cov.edges.size}/${edgeCount} (${((100 * cov.edges.size) / edgeCount).toFixed(1)}%)`,
        );
        assert.equal(machineStates.size, graph.machineStates.length, 'every machine state');
        assert.equal(cov.states.size, graph.edges.size, 'every abstract state, as the API reported it');
        if (cover === 'states') return;
        assert.equal(cov.edges.size, edgeCount, 'every transition, as the API reported it');
        for (const seen of [
          'PUT /student/course 204',
          'PUT /student/course 400 SECTION_FULL',
          'PUT /student/course 400 SECTION_CLOSED',
          'PUT /student/course 400 SEX_LOCK',
          'PUT /student/course 400 SAME_COURSE',
          'PATCH /student/course 204',
          'PATCH /student/course 400 SECTION_FULL',
          'PATCH /student/course 400 SECTION_CLOSED',
          'PATCH /student/course 400 SEX_LOCK',
          'PATCH /student/course 400 SAME_GROUP',
          'POST /student/swap 200',
          'POST /student/swap 409 NO_SEAT',
          'DELETE /student/course 204',
          'DELETE /student/course 400 NOT_ENROLLED',
          'DELETE /staff/force-std 204',
          'DELETE /staff/force-std 400 NOT_ENROLLED',
          'PUT /staff/force-std 204',
          'PUT /staff/force-std 400 ALREADY_IN_SECTION',
          'PATCH /staff/capacity 204',
          'PATCH /staff/capacity 400 CAPACITY_BELOW_REGISTERED',
          'PATCH /sections/:c/:g capacity 200',
          'PATCH /sections/:c/:g capacity 409 CAPACITY_BELOW_REGISTERED',
          'PATCH /sections/:c/:g reserve_capacity 200',
          'PATCH /sections/:c/:g reserve_capacity 409 RESERVE_BELOW_QUEUED',
          'PATCH /sections/:c/:g sex_lock 200',
          'PATCH /sections/:c/:g units 409 MEMBER_RULES_CONFLICT',
          'POST /sections/:c/:g/close 200',
          'POST /sections/:c/:g/reopen 200',
        ]) {
          assert.ok(cov.routes.has(seen), `the replay exercises ${seen} (saw ${[...cov.routes].sort().join(', ')})`);
        }
      });

      test('random command sequences agree with the reference model, with a restart in every run (fast-check)', { skip }, async () => {
        let k = 0;
        let restarts = 0;
        const t0 = performance.now();
          await fc.assert(
          fc.asyncProperty(fc.array(commandArb, { minLength: 1, maxLength: 40 }), fc.nat(), async (cmds, r) => {
            k += 1;
            const world = namespacedWorld(k);
            await world.importInto(h.engine);
            const model = world.model();
            const forced = new Set<number>();
            const history: string[] = [];
            const restartAt = r % (cmds.length + 1);
            for (const [i, raw] of cmds.entries()) {
              if (i === restartAt) {
                // Full mode: every fifth run closes the store and opens a new one; otherwise a new engine.
                const reopen = h.canReopenStore && k % 5 === 0;
                history.push(reopen ? 'restart (store reopened)' : 'restart');
                await restartChecked(h, reopen, `world ${k} after: ${history.join(' ; ')}`);
                restarts += 1;
              }
              const cmd = world.shift(raw);
              const expected = applyToModel(model, cmd);
              const got = await applyToEngine(h.engine, cmd);
              history.push(`${describeCommand(cmd)} -> ${got}`);
              const where = `world ${k} after: ${history.join(' ; ')}`;
              assert.equal(got, expected, `engine answered ${got}, model ${expected}; ${where}`);
              if (cmd.kind === 'force' && got === 'ok') forced.add(cmd.s);
              const state = h.engine.dumpState();
              assert.deepEqual(world.comparable(state), comparableFromModel(model), where);
              assertStateInvariants(world.slice(state), forced);
            }
            // What the database holds (loadState) equals the actors' state.
            await databaseEqualsActors(h, `world ${k}`);
          }),
          { numRuns: PROPERTY_RUNS[mode.name] },
        );
        console.log(`reference model vs engine (${mode.name} store): ${k} runs, ${restarts} restarts, ${Math.round(performance.now() - t0)} ms`);
      });

      test('a final restart rebuilds the state, and the database equals the actors', { skip }, async () => {
        await restartChecked(h, h.canReopenStore, 'final');
        await databaseEqualsActors(h, 'final');
      });
    });
  }
});
