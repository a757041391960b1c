import { createActor, enqueueActions, setup, type ActorRefFrom, type SnapshotFrom } from 'xstate';
import { decideSection, evolveSection } from './section-logic.js';
import type { SectionCommand, SectionContext, SectionEmitted } from './types.js';

/**
 * One actor per section. XState's mailbox processes one command at a time, so "check the seat and
 * take it" is a single step: two students can never both see the last seat as free.
 *
 * The visible states are derived from the context after every step (eventless transitions), so
 * they can never disagree with the numbers: `open.seatsAvailable` while a seat is free,
 * `open.reserveOnly` while only reserve-queue places are left, `open.full` when both are taken,
 * and `closed` when staff closed the section.
 */
export const sectionMachine = setup({
  types: {
    context: {} as SectionContext,
    events: {} as SectionCommand,
    input: {} as SectionContext,
    emitted: {} as SectionEmitted,
  },
  guards: {
    isClosed: ({ context }) => context.closed,
    isOpen: ({ context }) => !context.closed,
    seatFree: ({ context }) => context.registered.length < context.capacity,
    noSeatFree: ({ context }) => context.registered.length >= context.capacity,
    reservePlaceFree: ({ context }) => context.queue.length < context.reserveCapacity,
    reserveFull: ({ context }) => context.queue.length >= context.reserveCapacity,
  },
  actions: {
    /** Decides the command, then applies and emits the resulting events (or emits the rejection). */
    handle: enqueueActions(({ context, event, enqueue }) => {
      if (event.type === 'replay') {
        const next = evolveSection(context, event.event);
        enqueue.assign(() => next);
        return;
      }
      const decided = decideSection(context, event);
      if (!Array.isArray(decided)) {
        enqueue.emit(decided);
        return;
      }
      let next = context;
      for (const e of decided) next = evolveSection(next, e);
      if (next !== context) enqueue.assign(() => next);
      for (const e of decided) enqueue.emit(e);
    }),
  },
}).createMachine({
  id: 'section',
  context: ({ input }) => input,
  initial: 'open',
  on: {
    enroll: { actions: 'handle' },
    drop: { actions: 'handle' },
    forceEnroll: { actions: 'handle' },
    changeCapacity: { actions: 'handle' },
    changeReserveCapacity: { actions: 'handle' },
    changeSexLock: { actions: 'handle' },
    updateInfo: { actions: 'handle' },
    close: { actions: 'handle' },
    reopen: { actions: 'handle' },
    replay: { actions: 'handle' },
  },
  states: {
    open: {
      initial: 'seatsAvailable',
      always: { guard: 'isClosed', target: 'closed' },
      states: {
        seatsAvailable: {
          always: [{ guard: 'noSeatFree', target: 'reserveOnly' }],
        },
        reserveOnly: {
          always: [
            { guard: 'seatFree', target: 'seatsAvailable' },
            { guard: 'reserveFull', target: 'full' },
          ],
        },
        full: {
          always: [
            { guard: 'seatFree', target: 'seatsAvailable' },
            { guard: 'reservePlaceFree', target: 'reserveOnly' },
          ],
        },
      },
    },
    closed: {
      always: { guard: 'isOpen', target: 'open' },
    },
  },
});

export type SectionActor = ActorRefFrom<typeof sectionMachine>;
export type SectionSnapshot = SnapshotFrom<typeof sectionMachine>;

/** The state an admin sees, as one dotted name (e.g. `open.reserveOnly`). */
export function sectionStateName(snapshot: SectionSnapshot): string {
  const v = snapshot.value;
  if (typeof v === 'string') return v;
  const [parent, child] = Object.entries(v)[0] as [string, string];
  return `${parent}.${child}`;
}

/** Starts a section actor at the given context (a new section, a loaded one, or a restored one). */
export function createSectionActor(context: SectionContext): SectionActor {
  const actor = createActor(sectionMachine, { input: context });
  actor.start();
  return actor;
}
