import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { membershipOf } from '../src/actors/section-logic.js';
import { createActor, type AnyStateNode, type InspectionEvent } from 'xstate';
import { sectionMachine, sectionStateName, type SectionSnapshot } from '../src/actors/section-machine.js';
import { machineGraph } from '../src/http/admin/machine-graph.js';
import type { SectionContext, SectionEmitted, SectionEvent } from '../src/actors/types.js';
import type { Engine } from '../src/engine/engine.js';
import { createFixture, makeSection, makeStaff, makeStudent, meta, outcome, studentMeta } from './support/engine-fixture.js';
import {
  abstractKey,
  buildModelGraph,
  genderOf,
  INITIAL,
  type Intent,
  type LabeledCommand,
  MODEL_COURSE as C,
  MODEL_GROUP as G,
  modelInitialContext,
  type ModelGraph,
  resolveIntent,
  STUDENTS,
  transitionCoverPaths,
} from './support/section-graph.js';

/**
 * SPEC section 7: model-based tests of the section machine. @xstate/graph explores the machine
 * (over the abstraction in support/section-graph.ts), we generate paths that take every transition,
 * run each on a real actor checking the invariants after every step, then run the same paths
 * through the engine and check its views agree with the actor step by step.
 */

interface StepRecord {
  intent: Intent;
  command: LabeledCommand;
  /** `events:<types>` or the rejection code. */
  outcome: { ok: true; first: SectionEvent['type'] | undefined } | { ok: false; code: string };
  context: SectionContext;
  state: string;
}

let graph: ModelGraph;
let paths: Intent[][];
const traces: StepRecord[][] = [];

function expectedStateName(ctx: SectionContext): string {
  if (ctx.closed) return 'closed';
  if (ctx.registered.length < ctx.capacity) return 'open.seatsAvailable';
  if (ctx.queue.length < ctx.reserveCapacity) return 'open.reserveOnly';
  return 'open.full';
}

/** Every invariant of one step of one section actor. `tickets` gives each queued student's arrival. */
function checkStep(prev: SectionContext, snap: SectionSnapshot, cmd: LabeledCommand, emitted: SectionEmitted[], tickets: Map<number, number>): void {
  const ctx = snap.context;
  const where = `after ${cmd.label} (${JSON.stringify(cmd)})`;
  assert.ok(ctx.registered.length <= ctx.capacity, `${where}: registered > capacity`);
  assert.ok(ctx.queue.length <= ctx.reserveCapacity, `${where}: queue > reserve capacity`);
  if (ctx.queue.length > 0) assert.equal(ctx.registered.length, ctx.capacity, `${where}: a seat is free while the queue waits`);
  assert.equal(new Set([...ctx.registered, ...ctx.queue]).size, ctx.registered.length + ctx.queue.length, `${where}: a student twice`);
  assert.equal(sectionStateName(snap), expectedStateName(ctx), `${where}: state name disagrees with the numbers`);
  for (const id of [...ctx.registered, ...ctx.queue]) {
    if (ctx.sexLock !== null && membershipOf(prev, id) === undefined && cmd.type === 'enroll') {
      assert.equal(genderOf(id), ctx.sexLock, `${where}: sex lock let ${id} in`);
    }
  }

  const rejection = emitted.find((e) => e.type === 'commandRefused');
  if (rejection) {
    assert.equal(emitted.length, 1, `${where}: a rejection comes alone`);
    assert.deepEqual(ctx, prev, `${where}: a rejected command changed the context`);
    return;
  }
  const events = emitted as SectionEvent[];
  assert.deepEqual(events.map((e) => e.seq), events.map((_e, i) => prev.seq + i + 1), `${where}: event numbering`);
  assert.equal(ctx.seq, prev.seq + events.length, `${where}: context seq`);

  // FIFO: newcomers join the tail; the queue stays in arrival order; promotions take the head.
  for (const id of ctx.queue) if (!tickets.has(id)) tickets.set(id, tickets.size === 0 ? 0 : Math.max(...tickets.values()) + 1);
  for (const id of [...tickets.keys()]) if (!ctx.queue.includes(id)) tickets.delete(id);
  const byTicket = [...ctx.queue].sort((a, b) => tickets.get(a)! - tickets.get(b)!);
  assert.deepEqual(ctx.queue, byTicket, `${where}: queue not in arrival order`);
  const promoted = prev.queue.filter((id) => ctx.registered.includes(id));
  if (cmd.type === 'forceEnroll' && membershipOf(prev, cmd.studentId) === 'queued') {
    assert.deepEqual(promoted, [cmd.studentId], `${where}: force enroll promotes exactly the forced student`);
  } else {
    assert.deepEqual(promoted, prev.queue.slice(0, promoted.length), `${where}: promotion out of queue order`);
  }
  // Capacity moves only when staff asks, or by exactly one for a force into a full section.
  if (cmd.type === 'changeSettings' && cmd.change.capacity !== undefined) assert.equal(ctx.capacity, cmd.change.capacity, where);
  else if (cmd.type === 'forceEnroll' && prev.registered.length >= prev.capacity) assert.equal(ctx.capacity, prev.registered.length + 1, where);
  else assert.equal(ctx.capacity, prev.capacity, `${where}: capacity changed`);
}

/** Ids (as the admin graph names them) of the machine's own transitions taken, from XState's inspection. */
const takenTransitions = new Set<string>();

function transitionIds(defs: readonly { source: AnyStateNode; eventType: string }[]): string[] {
  return defs.map((d) => {
    const source = d.source;
    if (d.eventType === '') return `${source.id}:always:${(source.always ?? []).indexOf(d as never)}`;
    const list = source.transitions.get(d.eventType) ?? [];
    return `${source.id}:${d.eventType}:${list.indexOf(d as never)}`;
  });
}

function collectTransitions(ev: InspectionEvent): void {
  if (ev.type !== '@xstate.microstep') return;
  for (const id of transitionIds((ev as unknown as { _transitions: { source: AnyStateNode; eventType: string }[] })._transitions)) {
    takenTransitions.add(id);
  }
}

function runOnActor(path: Intent[], visitedStates: Set<string>, visitedEdges: Set<string>): StepRecord[] {
  const actor = createActor(sectionMachine, {
    input: modelInitialContext(),
    inspect: collectTransitions,
  });
  actor.start();
  let emitted: SectionEmitted[] = [];
  actor.on('*', (e) => emitted.push(e));
  const tickets = new Map<number, number>();
  const trace: StepRecord[] = [];
  let key = abstractKey(sectionStateName(actor.getSnapshot()), actor.getSnapshot().context);
  visitedStates.add(key);
  for (const intent of path) {
    const prev = actor.getSnapshot().context;
    const cmd = resolveIntent(prev, intent);
    assert.ok(cmd, `${intent} must be enabled in ${key} (the abstraction must be exact)`);
    const expectedNext = graph.edges.get(key)?.get(intent);
    assert.ok(expectedNext, `the graph has the edge ${key} --${intent}-->`);
    visitedEdges.add(`${key} ${intent}`);
    emitted = [];
    actor.send(cmd);
    const snap = actor.getSnapshot();
    assert.equal(snap.status, 'active');
    checkStep(prev, snap, cmd, emitted, tickets);
    key = abstractKey(sectionStateName(snap), snap.context);
    assert.equal(key, expectedNext, `${intent} led where the graph says`);
    visitedStates.add(key);
    const rejection = emitted.find((e) => e.type === 'commandRefused');
    trace.push({
      intent,
      command: cmd,
      outcome: rejection ? { ok: false, code: rejection.code } : { ok: true, first: (emitted[0] as SectionEvent | undefined)?.type },
      context: snap.context,
      state: sectionStateName(snap),
    });
  }
  actor.stop();
  return trace;
}

/** What the engine answers for the command the actor was sent, given what the actor did. */
function engineExpectation(step: StepRecord): string {
  if (!step.outcome.ok) {
    // The engine checks "already holds this course" before the section sees the command.
    if (step.command.type === 'enroll' && step.outcome.code === 'ALREADY_IN_SECTION') return 'SAME_COURSE';
    return step.outcome.code;
  }
  if (step.command.type === 'enroll') return step.outcome.first === 'studentQueued' ? 'queued' : 'registered';
  return 'ok';
}

function sendToEngine(engine: Engine, cmd: LabeledCommand): Promise<string> {
  switch (cmd.type) {
    case 'enroll':
      return outcome(engine.enroll(cmd.studentId, C, G, studentMeta(cmd.studentId)));
    case 'drop':
      return outcome(engine.drop(cmd.studentId, C, studentMeta(cmd.studentId)));
    case 'forceEnroll':
      return outcome(engine.forceEnroll(cmd.studentId, C, G, meta()));
    case 'changeSettings':
      if (cmd.change.capacity !== undefined) return outcome(engine.changeCapacity(C, G, cmd.change.capacity, meta()));
      return outcome(engine.updateSection(C, G, { ...cmd.change }, meta()));
    case 'close':
      return outcome(engine.setClosed(C, G, true, meta()));
    case 'reopen':
      return outcome(engine.setClosed(C, G, false, meta()));
    default:
      throw new Error(`the model never sends ${(cmd as { type: string }).type}`);
  }
}

describe('section machine, model-based (SPEC 7)', () => {
  before(() => {
    graph = buildModelGraph();
    paths = transitionCoverPaths(graph);
  });

  test('the graph reaches every machine state', () => {
    const reached = new Set([...graph.edges.keys()].map((k) => k.split('|')[0]!));
    assert.deepEqual([...reached].sort(), [...graph.machineStates].sort());
    assert.ok(graph.edges.size > 100, `a non-trivial graph (${graph.edges.size} abstract states)`);
    assert.equal(graph.shortest.size, graph.edges.size, 'a shortest path to every state');
  });

  test('every transition, on a real actor, with the invariants after every step', () => {
    const visitedStates = new Set<string>();
    const visitedEdges = new Set<string>();
    for (const path of paths) traces.push(runOnActor(path, visitedStates, visitedEdges));
    let edgeCount = 0;
    for (const out of graph.edges.values()) edgeCount += out.size;
    const machineStates = new Set([...visitedStates].map((k) => k.split('|')[0]!));
    console.log(
      `section model: ${paths.length} paths, ${paths.reduce((n, p) => n + p.length, 0)} steps; ` +
        `machine states visited ${machineStates.size}/${graph.machineStates.length}; ` +
        `states visited ${visitedStates.size}/${graph.edges.size}, transitions visited ${visitedEdges.size}/${edgeCount}`,
    );
    assert.equal(machineStates.size, graph.machineStates.length);
    // A section started from a stored context (as after a restart) lands in the state it was in.
    for (const trace of traces) {
      const last = trace.at(-1);
      if (!last) continue;
      const restarted = createActor(sectionMachine, { input: last.context, inspect: collectTransitions });
      restarted.start();
      assert.equal(sectionStateName(restarted.getSnapshot()), last.state, 'a restart from the stored context');
      restarted.stop();
    }
    // Every transition of the machine definition itself (each guard branch of each state, the
    // choice pseudostates' branches, the initial ones) was taken at least once.
    const defined = machineGraph(sectionMachine).transitions;
    const initialTaken = (t: { source: string; target: string | null }): boolean =>
      [...takenTransitions].some((id) => id.startsWith(`${t.source}:`)) || t.source === 'section';
    const missing = defined.filter((t) => (t.kind === 'initial' ? !initialTaken(t) : !takenTransitions.has(t.id))).map((t) => t.id);
    assert.deepEqual(missing, [], 'machine transitions never taken');
    console.log(`section model: ${defined.length}/${defined.length} machine transitions taken`);
    assert.equal(visitedStates.size, graph.edges.size, 'every abstract state visited');
    assert.equal(visitedEdges.size, edgeCount, 'every transition taken');
    // Every kind of command, accepted and refused, is in there.
    const kind = (c: LabeledCommand): string => (c.type === 'changeSettings' ? `${c.type}.${Object.keys(c.change).join('+')}` : c.type);
    const outcomes = new Set(traces.flat().map((s) => (s.outcome.ok ? kind(s.command) : `${kind(s.command)}:${s.outcome.code}`)));
    for (const o of [
      'enroll',
      'enroll:SECTION_FULL',
      'enroll:SECTION_CLOSED',
      'enroll:SEX_LOCK',
      'enroll:ALREADY_IN_SECTION',
      'enroll:NO_SEAT',
      'drop',
      'drop:NOT_ENROLLED',
      'forceEnroll',
      'forceEnroll:ALREADY_IN_SECTION',
      'changeSettings.capacity',
      'changeSettings.capacity:CAPACITY_BELOW_REGISTERED',
      'changeSettings.reserveCapacity',
      'changeSettings.reserveCapacity:RESERVE_BELOW_QUEUED',
      'changeSettings.sexLock',
      'changeSettings.sexLock:SEX_LOCK_CONFLICT',
      'changeSettings.info:MEMBER_RULES_CONFLICT',
      'close',
      'reopen',
    ]) {
      assert.ok(outcomes.has(o), `the paths exercise ${o}`);
    }
  });

  test('the same paths through the engine: same answers, same views, step by step', async () => {
    assert.equal(traces.length, paths.length, 'the actor test ran first');
    for (const trace of traces) {
      const fx = await createFixture();
      const engine = fx.engine;
      await engine.importBatch(
        {
          departments: [],
          staff: [makeStaff(1)],
          students: STUDENTS.map((id) => makeStudent(id, { gender: genderOf(id), remainingActions: 1000, maxUnits: 99 })),
          sections: [makeSection(C, G, INITIAL)],
        },
        meta('system'),
      );
      for (const [i, step] of trace.entries()) {
        // The engine's students all have room in their schedules: that refusal is the actor's alone
        // (the engine's own UNITS_EXCEEDED answers are tested in engine-rules).
        if (step.intent === 'enroll:overUnits') continue;
        // A seat-or-nothing enroll is the engine's swap; refused, it changed nothing to replay, and
        // accepted, it did what a plain enroll does (swaps themselves: test/http-swap.test.ts).
        if (step.intent === 'enroll:seatOnly' && !step.outcome.ok && step.outcome.code === 'NO_SEAT') continue;
        const where = `step ${i + 1} of [${trace.map((s) => s.intent).join(', ')}]`;
        assert.equal(await sendToEngine(engine, step.command), engineExpectation(step), where);
        const view = engine.getSection(C, G);
        const ctx = step.context;
        assert.deepEqual(
          {
            state: view.state,
            capacity: view.capacity,
            reserveCapacity: view.reserveCapacity,
            sexLock: view.sexLock,
            closed: view.closed,
            registeredCount: view.registeredCount,
            queueLength: view.queueLength,
            seq: view.seq,
          },
          {
            state: step.state,
            capacity: ctx.capacity,
            reserveCapacity: ctx.reserveCapacity,
            sexLock: ctx.sexLock,
            closed: ctx.closed,
            registeredCount: ctx.registered.length,
            queueLength: ctx.queue.length,
            seq: ctx.seq,
          },
          where,
        );
        assert.deepEqual(engine.sectionMembers(C, G), { registered: ctx.registered, queue: ctx.queue }, where);
        for (const id of STUDENTS) {
          const held = engine.studentSections(id);
          const status = membershipOf(ctx, id);
          assert.deepEqual(
            held.map((h) => [h.status, h.queuePosition]),
            status === undefined ? [] : [[status, status === 'queued' ? ctx.queue.indexOf(id) + 1 : undefined]],
            `${where}: student ${id}'s own view`,
          );
        }
      }
      engine.stop();
    }
  });
});
