import type { Logger } from 'pino';

/**
 * Runs a step of a shutdown that waits on storage which may never answer (a stalled database or
 * broker), for at most `ms`: then the shutdown goes on without it. Everything acknowledged is in
 * the stream already, and what the step leaves undone the next engine or batcher does (a lease
 * expires, the stream is applied), so a failure or a timeout is logged and nothing more.
 */
export async function boundedStep(log: Logger, what: string, ms: number, step: () => Promise<unknown>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  // Not unref'd: when the step holds no handle of its own, the timer keeps the process to its end.
  const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), ms)));
  const done = step().then(
    () => 'done' as const,
    (err: unknown) => void log.warn({ err }, `${what} failed; going on`),
  );
  const outcome = await Promise.race([done, late]);
  clearTimeout(timer);
  if (outcome === 'late') log.warn({ ms }, `${what} did not finish in time; going on (storage not answering?)`);
}
