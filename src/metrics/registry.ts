import { collectDefaultMetrics, Registry } from 'prom-client';

/**
 * The process's one metrics registry, scraped at `/metrics` (staff token) and on `METRICS_PORT`
 * (no token, for Prometheus on a private network). Every layer registers its metrics here, so one
 * scrape shows the HTTP layer, the engine, persistence and Node itself together.
 *
 * Node's default metrics come with it: `nodejs_eventloop_lag_*` (event-loop delay, p50/p90/p99
 * from `monitorEventLoopDelay`), `nodejs_gc_duration_seconds` (GC pauses by kind), heap, RSS,
 * CPU and handles, all collected at scrape time except the GC observer.
 */
export const registry = new Registry();
collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 });

/**
 * Sums a gauge's reading over the live objects it watches. They are held weakly, so an object
 * nobody else holds any more (a closed store, app or gate; tests make many) is forgotten.
 */
export function sumWeak<T extends object>(refs: Set<WeakRef<T>>, read: (t: T) => number): number {
  let total = 0;
  for (const r of refs) {
    const t = r.deref();
    if (t === undefined) refs.delete(r);
    else total += read(t);
  }
  return total;
}

/** What `/metrics` answers: the text format and its content type. */
export async function renderMetrics(): Promise<{ contentType: string; body: string }> {
  return { contentType: registry.contentType, body: await registry.metrics() };
}
