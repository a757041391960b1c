import type { Logger } from 'pino';
import { sectionKey } from '../actors/section-logic.js';
import {
  createSectionActor,
  persistSection,
  restingSnapshotOf,
  sectionMachine,
  sectionStateName,
  type PersistedSection,
  type SectionActor,
  type SectionSnapshot,
} from '../actors/section-machine.js';
import type { SectionCommand, SectionContext, SectionEmitted, SectionEvent, SectionRefusal } from '../actors/types.js';
import { EngineError } from '../errors.js';

/**
 * The section host: spawns one XState actor per section, routes commands to it, passivates it when
 * idle and restores it on the next command. While an actor lives it is the only holder of its
 * section's state (every read is `actor.getSnapshot()`); a passivated section is kept as the
 * snapshot the actor persisted (`getPersistedSnapshot()`), restored with
 * `createActor(machine, { snapshot })`, and read from that snapshot meanwhile. A section loaded
 * from storage starts out as its stored context, which the machine turns into a snapshot (finding
 * its own state) the first time it is read or sent a command.
 */

/** One hosted section: exactly one of the three forms holds its state. */
interface Hosted {
  actor: SectionActor | null;
  parked: PersistedSection | null;
  stored: SectionContext | null;
  /** Monotonic time of the last command, for passivation. */
  lastUsed: number;
  /** Collects what the actor emits while one command is processed. */
  sink: SectionEmitted[] | null;
}

/** A section as read: its context and the state the machine is in. */
export interface SectionRead {
  context: SectionContext;
  state: string;
}

/** A section's snapshot as the host keeps it: the live actor's, or the persisted form. */
export type AnySectionSnapshot = SectionSnapshot | PersistedSection;

/** The outcome of one command: the events it recorded and the snapshots around it (for durability tracking). */
export interface Routed {
  events: SectionEvent[];
  before: SectionSnapshot;
  snapshot: SectionSnapshot;
}

export function refusalError(r: SectionRefusal | { code: EngineError['code']; reason: string }): EngineError {
  return new EngineError(r.code, r.reason);
}

export class SectionHost {
  private sections = new Map<string, Hosted>();
  private readonly tick = () => performance.now();

  constructor(
    private readonly log: Logger,
    private readonly passivateAfterMs: number,
  ) {}

  get size(): number {
    return this.sections.size;
  }

  has(key: string): boolean {
    return this.sections.has(key);
  }

  keys(): IterableIterator<string> {
    return this.sections.keys();
  }

  /** Hosts a section from a stored context (new, or loaded from storage); no actor is started yet. */
  add(context: SectionContext): string {
    const key = sectionKey(context.info.courseId, context.info.groupId);
    this.sections.set(key, { actor: null, parked: null, stored: context, lastUsed: 0, sink: null });
    return key;
  }

  /** Replaces a section's state with a context from the log (read copy); its actor, if any, is stopped. */
  replace(context: SectionContext): void {
    const key = sectionKey(context.info.courseId, context.info.groupId);
    this.sections.get(key)?.actor?.stop();
    this.add(context);
  }

  /** Forgets every section (their actors are stopped). */
  clear(): void {
    for (const h of this.sections.values()) h.actor?.stop();
    this.sections = new Map();
  }

  /** Throws SECTION_NOT_FOUND for a section that is not hosted. */
  require(courseId: number, groupId: number): string {
    const key = sectionKey(courseId, groupId);
    if (!this.sections.has(key)) throw new EngineError('SECTION_NOT_FOUND', `course ${courseId} group ${groupId} does not exist`);
    return key;
  }

  /** The section's current snapshot: the live actor's, else the parked one. */
  snapshot(key: string): AnySectionSnapshot {
    const h = this.hosted(key);
    if (h.actor) return h.actor.getSnapshot();
    return this.park(h);
  }

  read(key: string): SectionRead {
    const s = this.snapshot(key);
    return { context: s.context, state: sectionStateName(s as SectionSnapshot) };
  }

  /**
   * The section's context. A section still in its stored form is not turned into a snapshot for
   * this: the machine's context is its input (no state assigns on entry), so the stored context is
   * what a snapshot would hold. Reading every section at start (the notice hub does) then costs
   * nothing, where making 1,500 initial snapshots allocated about 110 MB (storm bench).
   */
  context(key: string): SectionContext {
    const h = this.hosted(key);
    if (h.actor) return h.actor.getSnapshot().context;
    if (h.parked === null && h.stored !== null) return h.stored;
    return this.park(h).context;
  }

  /**
   * Sends one command to the section's actor (restoring it first if passivated) and returns the
   * events it recorded, or throws the refusal it emitted. XState processes the command to the end
   * synchronously, so the decision and what the caller does with the events are one step. An actor
   * that fails is dropped; the section goes on from the snapshot it had before the command.
   */
  send(key: string, cmd: SectionCommand): Routed {
    const h = this.hosted(key);
    const actor = this.activate(h);
    const before = actor.getSnapshot();
    const sink: SectionEmitted[] = [];
    h.sink = sink;
    try {
      actor.send(cmd);
    } finally {
      h.sink = null;
    }
    const after = actor.getSnapshot();
    if (after.status === 'error') {
      this.log.error({ err: after.error, command: cmd.type, section: key }, 'section actor failed; restored');
      actor.stop();
      h.actor = null;
      h.parked = sectionMachine.getPersistedSnapshot(before) as PersistedSection;
      throw new EngineError('INTERNAL', 'the section could not process the request; nothing was changed');
    }
    const events: SectionEvent[] = [];
    for (const e of sink) {
      if (e.type === 'commandRefused') throw refusalError(e);
      events.push(e);
    }
    return { events, before, snapshot: after };
  }

  /**
   * Puts the section back to a snapshot it had (rollback after a failed write), or removes it
   * (`null`: its creation never became durable). The actor, if any, is stopped; the next command
   * restores it from that snapshot.
   */
  restore(key: string, snapshot: AnySectionSnapshot | null): void {
    const h = this.sections.get(key);
    if (!h) return;
    h.actor?.stop();
    if (snapshot === null) {
      this.sections.delete(key);
      return;
    }
    h.actor = null;
    h.stored = null;
    h.parked = 'machine' in snapshot ? (sectionMachine.getPersistedSnapshot(snapshot) as PersistedSection) : snapshot;
  }

  /** Stops actors idle for the passivation period; each keeps its persisted snapshot. */
  passivateIdle(now: number = this.tick()): number {
    let n = 0;
    for (const h of this.sections.values()) {
      if (h.actor && now - h.lastUsed >= this.passivateAfterMs) {
        h.parked = persistSection(h.actor);
        h.actor.stop();
        h.actor = null;
        n += 1;
      }
    }
    return n;
  }

  /** Number of section actors currently started (the rest are passivated snapshots). */
  get activeActors(): number {
    let n = 0;
    for (const h of this.sections.values()) if (h.actor) n += 1;
    return n;
  }

  private hosted(key: string): Hosted {
    const h = this.sections.get(key);
    if (!h) throw new EngineError('SECTION_NOT_FOUND', `section ${key} does not exist`);
    return h;
  }

  /** The parked snapshot, made from the stored context by the machine itself the first time. */
  private park(h: Hosted): PersistedSection {
    if (h.parked === null) {
      const initial = restingSnapshotOf(h.stored as SectionContext);
      h.parked = sectionMachine.getPersistedSnapshot(initial) as PersistedSection;
      h.stored = null;
    }
    return h.parked;
  }

  private activate(h: Hosted): SectionActor {
    h.lastUsed = this.tick();
    if (h.actor) return h.actor;
    const actor =
      h.parked === null && h.stored !== null ? createSectionActor({ context: h.stored }) : createSectionActor({ snapshot: this.park(h) });
    actor.on('*', (e) => h.sink?.push(e));
    // An error listener keeps XState from rethrowing; send() restores the section itself.
    actor.subscribe({ error: () => undefined });
    h.actor = actor;
    h.parked = null;
    h.stored = null;
    return actor;
  }
}
