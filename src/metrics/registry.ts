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

/** What `/metrics` answers: the text format and its content type. */
export async function renderMetrics(): Promise<{ contentType: string; body: string }> {
  return { contentType: registry.contentType, body: await registry.metrics() };
}
