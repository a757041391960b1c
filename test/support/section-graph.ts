import { getAdjacencyMap, getShortestPaths } from '@xstate/graph';
import type { ActorLogic } from 'xstate';
import { initialSectionContext, membershipOf } from '../../src/actors/section-logic.js';
import { sectionMachine, sectionStateName, type SectionSnapshot } from '../../src/actors/section-machine.js';
import type { Cause, SectionCommand, SectionContext, Sex } from '../../src/actors/types.js';
import { makeInfo } from './engine-fixture.js';

/**
 * The section machine as a finite graph for model-based testing (SPEC section 7).
 *
 * Concrete contexts carry student ids, so the raw state space is large; the graph is taken over an
 * abstraction that keeps everything the rules depend on: the machine state, capacity, reserve
 * capacity, closed, the sex lock, how many of each sex are registered, and the sexes of the queue
 * in order. Every event is an *intent* ("drop the first registered female", "force the queue tail")
 * resolved against the concrete context, so its effect on the abstraction is the same whichever
 * concrete context the abstraction stands for: a path found in the graph can be replayed on any
 * actor and must land in the same abstract states, step by step.
 */

export const MODEL_COURSE = 10;
export const MODEL_GROUP = 1;
export const MALES = [1, 2] as const;
export const FEMALES = [3, 4] as const;
export const STUDENTS: readonly number[] = [...MALES, ...FEMALES];
export const CAPACITY_MAX = 3;
export const RESERVE_MAX = 2;
export const INITIAL = { capacity: 2, reserveCapacity: 1, sexLock: null as Sex | null };

export const genderOf = (id: number): Sex => ((MALES as readonly number[]).includes(id) ? 'male' : 'female');

const cause: Cause = { requestId: 'model', actor: 'staff:1', at: 0 };
/** The model's students hold nothing else, so only the section's own rules can refuse them. */
const schedule = { maxUnits: 99, held: [], checkSameCourse: true };
const memberSexes: Record<number, Sex> = Object.fromEntries(STUDENTS.map((id) => [id, genderOf(id)]));

/** The section's first context; seq 1 because the engine's `sectionCreated` is event 1. */
export function modelInitialContext(): SectionContext {
  return { ...initialSectionContext(makeInfo(MODEL_COURSE, MODEL_GROUP), INITIAL), seq: 1 };
}

export type Intent =
  | `enroll:${Sex}`
  | 'enroll:member'
  | 'enroll:overUnits'
  | 'enroll:seatOnly'
  | `drop:registered:${Sex}`
  | 'drop:queueHead'
  | 'drop:queueTail'
  | 'drop:stranger'
  | `force:${Sex}`
  | 'force:queueHead'
  | 'force:queueTail'
  | 'force:registered'
  | 'capacity:+1'
  | 'capacity:-1'
  | 'capacity:fraction'
  | 'reserve:+1'
  | 'reserve:-1'
  | `lock:${Sex}`
  | 'lock:none'
  | 'info:overUnits'
  | 'close'
  | 'reopen';

export type LabeledCommand = SectionCommand & { label: Intent };

const nonMembers = (ctx: SectionContext, g?: Sex): number[] =>
  STUDENTS.filter((id) => membershipOf(ctx, id) === undefined && (g === undefined || genderOf(id) === g));

/** The concrete command an intent means in this context, or null when it does not apply here. */
export function resolveIntent(ctx: SectionContext, label: Intent): LabeledCommand | null {
  const at = <T>(xs: readonly T[], i: number): T | undefined => (i < 0 ? xs[xs.length + i] : xs[i]);
  const withLabel = (c: SectionCommand | null): LabeledCommand | null => (c ? ({ ...c, label } as LabeledCommand) : null);
  const [kind, arg] = label.split(':') as [string, string | undefined];
  switch (kind) {
    case 'enroll': {
      if (arg === 'overUnits') {
        // A newcomer whose own schedule has no room for the units (SPEC rule 4): refused by the section.
        const id = nonMembers(ctx)[0];
        if (id === undefined) return null;
        return withLabel({ type: 'enroll', studentId: id, gender: genderOf(id), schedule: { ...schedule, maxUnits: 0 }, cause });
      }
      if (arg === 'seatOnly') {
        // A newcomer who takes a seat or nothing (a swap without queue_ok): NO_SEAT in reserveOnly.
        const id = nonMembers(ctx)[0];
        if (id === undefined) return null;
        return withLabel({ type: 'enroll', studentId: id, gender: genderOf(id), schedule, seatOnly: true, cause });
      }
      if (arg === 'member') {
        const id = ctx.registered[0] ?? ctx.queue[0];
        return id === undefined ? null : withLabel({ type: 'enroll', studentId: id, gender: genderOf(id), schedule, cause });
      }
      const id = nonMembers(ctx, arg as Sex)[0];
      return id === undefined ? null : withLabel({ type: 'enroll', studentId: id, gender: arg as Sex, schedule, cause });
    }
    case 'drop': {
      let id: number | undefined;
      if (label === 'drop:queueHead') id = at(ctx.queue, 0);
      else if (label === 'drop:queueTail') id = ctx.queue.length >= 2 ? at(ctx.queue, -1) : undefined;
      else if (label === 'drop:stranger') id = nonMembers(ctx)[0];
      else id = ctx.registered.find((s) => genderOf(s) === label.split(':')[2]);
      return id === undefined ? null : withLabel({ type: 'drop', studentId: id, reason: 'dropped', cause });
    }
    case 'force': {
      let id: number | undefined;
      if (arg === 'queueHead') id = at(ctx.queue, 0);
      else if (arg === 'queueTail') id = ctx.queue.length >= 2 ? at(ctx.queue, -1) : undefined;
      else if (arg === 'registered') id = ctx.registered[0];
      else id = nonMembers(ctx, arg as Sex)[0];
      return id === undefined ? null : withLabel({ type: 'forceEnroll', studentId: id, cause });
    }
    case 'capacity': {
      if (arg === 'fraction') return withLabel({ type: 'changeSettings', change: { capacity: ctx.capacity + 0.5 }, cause });
      const capacity = ctx.capacity + (arg === '+1' ? 1 : -1);
      if (capacity < 0 || (arg === '+1' && capacity > CAPACITY_MAX)) return null;
      return withLabel({ type: 'changeSettings', change: { capacity }, cause });
    }
    case 'reserve': {
      const reserveCapacity = ctx.reserveCapacity + (arg === '+1' ? 1 : -1);
      if (reserveCapacity < 0 || reserveCapacity > RESERVE_MAX) return null;
      return withLabel({ type: 'changeSettings', change: { reserveCapacity }, cause });
    }
    case 'lock': {
      const lock = arg === 'none' ? null : (arg as Sex);
      if (lock === ctx.sexLock) return null;
      // A lock that would exclude a member is offered too: the section refuses it (SEX_LOCK_CONFLICT).
      return withLabel({ type: 'changeSettings', change: { sexLock: lock }, memberSexes, cause });
    }
    case 'info': {
      // New units over every member's limit (their schedules hold nothing else): refused with
      // MEMBER_RULES_CONFLICT. Offered only with members, so the section's units never change.
      const members = [...ctx.registered, ...ctx.queue];
      if (members.length === 0) return null;
      const memberSchedules = Object.fromEntries(members.map((id) => [id, { ...schedule, checkSameCourse: false }]));
      return withLabel({ type: 'changeSettings', change: { info: { units: schedule.maxUnits + 1 } }, memberSchedules, cause });
    }
    case 'close':
      return ctx.closed ? null : withLabel({ type: 'close', cause });
    case 'reopen':
      return ctx.closed ? withLabel({ type: 'reopen', cause }) : null;
    default:
      throw new Error(`unknown intent ${label}`);
  }
}

export const ALL_INTENTS: readonly Intent[] = [
  'enroll:male',
  'enroll:female',
  'enroll:member',
  'enroll:overUnits',
  'enroll:seatOnly',
  'drop:registered:male',
  'drop:registered:female',
  'drop:queueHead',
  'drop:queueTail',
  'drop:stranger',
  'force:male',
  'force:female',
  'force:queueHead',
  'force:queueTail',
  'force:registered',
  'capacity:+1',
  'capacity:-1',
  'capacity:fraction',
  'reserve:+1',
  'reserve:-1',
  'lock:male',
  'lock:female',
  'lock:none',
  'info:overUnits',
  'close',
  'reopen',
];

export function enabledEvents(ctx: SectionContext): LabeledCommand[] {
  const out: LabeledCommand[] = [];
  for (const label of ALL_INTENTS) {
    const c = resolveIntent(ctx, label);
    if (c) out.push(c);
  }
  return out;
}

/** The abstraction: machine state and every number the rules look at. */
export function abstractKey(state: string, ctx: SectionContext): string {
  const reg = (g: Sex): number => ctx.registered.filter((id) => genderOf(id) === g).length;
  const queue = ctx.queue.map((id) => (genderOf(id) === 'male' ? 'M' : 'F')).join('');
  return `${state}|cap=${ctx.capacity}|res=${ctx.reserveCapacity}|closed=${ctx.closed}|lock=${ctx.sexLock ?? '-'}|regM=${reg('male')}|regF=${reg('female')}|queue=${queue}`;
}

export const serializeSnapshot = (s: SectionSnapshot): string => abstractKey(sectionStateName(s), s.context);

export interface ModelGraph {
  /** Abstract state key -> the intents enabled there (the edges out of it) -> the key they lead to. */
  edges: Map<string, Map<Intent, string>>;
  /** Abstract state key -> the shortest intent sequence reaching it from the initial state. */
  shortest: Map<string, Intent[]>;
  /** The machine's own state nodes (leaves), e.g. `open.full`. */
  machineStates: string[];
}

export function buildModelGraph(): ModelGraph {
  const options = {
    input: modelInitialContext(),
    events: (s: SectionSnapshot) => enabledEvents(s.context),
    serializeState: serializeSnapshot,
    serializeEvent: (e: SectionCommand) => (e as LabeledCommand).label,
  };
  // getAdjacencyMap's signature does not carry the machine's emitted-event type; the logic is the same.
  const logic = sectionMachine as unknown as ActorLogic<SectionSnapshot, SectionCommand, SectionContext>;
  const adjacency = getAdjacencyMap(logic, options);
  const edges = new Map<string, Map<Intent, string>>();
  for (const [key, value] of Object.entries(adjacency)) {
    const out = new Map<Intent, string>();
    const transitions = Object.entries(value.transitions) as [string, { event: SectionCommand; state: SectionSnapshot }][];
    for (const [intent, t] of transitions) out.set(intent as Intent, serializeSnapshot(t.state));
    edges.set(key, out);
  }
  const shortest = new Map<string, Intent[]>();
  for (const path of getShortestPaths(sectionMachine, options)) {
    shortest.set(
      serializeSnapshot(path.state),
      // The first step of every path is the machine's `xstate.init`, not one of our commands.
      path.steps.filter((step) => (step.event as { type: string }).type !== 'xstate.init').map((step) => (step.event as LabeledCommand).label),
    );
  }
  const machineStates = ['open.seatsAvailable', 'open.reserveOnly', 'open.full', 'closed'];
  return { edges, shortest, machineStates };
}

/**
 * Paths that together take every edge: for each edge, the shortest path to its source plus the
 * edge. Paths that are a prefix of another path are dropped (the longer one walks them too).
 */
export function transitionCoverPaths(graph: ModelGraph): Intent[][] {
  const all: Intent[][] = [];
  for (const [key, intents] of graph.edges) {
    const prefix = graph.shortest.get(key);
    if (!prefix) throw new Error(`no shortest path to ${key}`);
    for (const intent of intents.keys()) all.push([...prefix, intent]);
  }
  all.sort((a, b) => b.length - a.length);
  const prefixes = new Set<string>();
  const kept: Intent[][] = [];
  for (const path of all) {
    const id = path.join(' ');
    if (prefixes.has(id)) continue;
    kept.push(path);
    for (let i = 1; i <= path.length; i++) prefixes.add(path.slice(0, i).join(' '));
  }
  return kept;
}
