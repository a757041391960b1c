import { Gauge } from 'prom-client';
import { registry } from './registry.js';

/** What the gauges read from the engine at scrape time (a structural view of `Engine`). */
export interface EngineStats {
  /** Section actors running now. */
  readonly activeActors: number;
  /** Sections known (running or passivated). */
  readonly sectionCount: number;
  /** Students with a mailbox (requests waiting or running). */
  readonly activeMailboxes: number;
  /** Requests waiting or running in every student mailbox together. */
  readonly queuedRequests: number;
}

/** What the gauges read from the coordination store. */
export interface CoordinationStats {
  readonly kind: 'memory' | 'redis';
  readonly connected: boolean;
}

let engineSource: EngineStats | null = null;
let coordinationSource: CoordinationStats | null = null;

const actors = new Gauge({
  name: 'enrollment_section_actors',
  help: 'Section actors by state: active (running) or passivated (kept as a snapshot)',
  labelNames: ['state'] as const,
  registers: [registry],
  collect() {
    if (engineSource === null) return;
    this.set({ state: 'active' }, engineSource.activeActors);
    this.set({ state: 'passivated' }, Math.max(0, engineSource.sectionCount - engineSource.activeActors));
  },
});

const mailboxes = new Gauge({
  name: 'enrollment_student_mailboxes',
  help: 'Students with requests waiting or running in their mailbox',
  registers: [registry],
  collect() {
    if (engineSource !== null) this.set(engineSource.activeMailboxes);
  },
});

const mailboxDepth = new Gauge({
  name: 'enrollment_student_mailbox_requests',
  help: 'Requests waiting or running in all student mailboxes together (mailbox depth)',
  registers: [registry],
  collect() {
    if (engineSource !== null) this.set(engineSource.queuedRequests);
  },
});

const coordinationUp = new Gauge({
  name: 'enrollment_coordination_connected',
  help: 'The coordination store (rate limits, revocations) answers: 1, or 0 while Redis is away (limits fail open)',
  labelNames: ['store'] as const,
  registers: [registry],
  collect() {
    if (coordinationSource !== null) this.set({ store: coordinationSource.kind }, coordinationSource.connected ? 1 : 0);
  },
});

/** Points the engine and coordination gauges at this process's engine and store (main.ts, once). */
export function watchEngine(engine: EngineStats, coordination?: CoordinationStats): void {
  engineSource = engine;
  coordinationSource = coordination ?? null;
}

/** The gauges defined here, for tests that check a scrape names them. */
export const engineGauges = [actors, mailboxes, mailboxDepth, coordinationUp];
