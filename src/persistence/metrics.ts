import { Gauge, Registry } from 'prom-client';

/**
 * Persistence metrics, kept in their own registry so the `/metrics` endpoint (a later issue) can
 * merge it without persistence knowing about HTTP. Only what an operator must be paged for lives
 * here today: a log reader stopped at a message it cannot read or apply.
 */
export const persistenceRegistry = new Registry();

/** 1 while the reader (`batcher` or `replay`) of a stream is stopped at a message, 0 once it moves on. */
export const logStalled = new Gauge({
  name: 'enrollment_log_stalled',
  help: 'A log reader is stopped at a message it cannot read or apply (1) or not (0)',
  labelNames: ['stream', 'reader'] as const,
  registers: [persistenceRegistry],
});

/** The stream offset the reader is stopped at; -1 when it is not stopped. */
export const logStalledOffset = new Gauge({
  name: 'enrollment_log_stalled_offset',
  help: 'Stream offset of the message a log reader is stopped at (-1 when not stopped)',
  labelNames: ['stream', 'reader'] as const,
  registers: [persistenceRegistry],
});

/** Records (offset) or clears (null) a stall in both gauges. */
export function setLogStall(stream: string, reader: 'batcher' | 'replay', offset: number | null): void {
  logStalled.set({ stream, reader }, offset === null ? 0 : 1);
  logStalledOffset.set({ stream, reader }, offset ?? -1);
}
