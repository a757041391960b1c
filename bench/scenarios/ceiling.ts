import autocannon from 'autocannon';
import { check, type BenchOptions, type ScenarioReport } from '../lib/common.js';
import { buildRequest, closeAll, openConnections } from '../lib/http.js';
import { runTimed, type LoadResult } from '../lib/load.js';
import { readCpuSeconds, readMemory } from '../lib/procs.js';
import { note, Progress } from '../lib/progress.js';
import { fmt, medianDeep, round } from '../lib/stats.js';
import { startCeiling } from '../lib/system.js';

/**
 * `ceiling`: the bare Fastify server on its own, at the steady scenario's connection count and
 * duration, loaded with the harness's generator and with autocannon in turn. It is what the
 * engine's throughput is divided by, and the autocannon figure shows whether the harness's own
 * generator is the limit.
 */

export interface CeilingScenarioFigures {
  connections: number;
  durationS: number;
  startupMs: number;
  rssMb: number | null;
  generator: { reqPerSec: number; latencyMs: LoadResult['latencyMs']; errors: number; serverCpuUsPerRequest: number };
  autocannon: { reqPerSec: number; latencyMs: { p50: number; p90: number; p99: number; max: number }; non2xx: number; errors: number };
  /** This harness's generator over autocannon on the same server. */
  generatorVsAutocannon: number;
  ratioToCeiling: number;
}

/** A request shaped like an enroll: PUT with a JSON body and a bearer token of a real token's length. */
const FAKE_TOKEN = `eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.${'x'.repeat(110)}.${'y'.repeat(43)}`;
const BODY = { course_id: 100123, group_id: 2 };

export async function ceilingScenario(opts: BenchOptions, report: ScenarioReport<CeilingScenarioFigures>): Promise<void> {
  report.notes.push(
    `bare Fastify, one route answering {"ok":true}; PUT /student/course with a JSON body and a bearer token; ` +
      `${opts.connections} connections, ${opts.warmupS} s warm-up, ${opts.durationS} s measured, first with this harness's generator, then with autocannon.`,
  );
  const runs: CeilingScenarioFigures[] = [];
  for (let r = 1; r <= opts.runs; r++) {
    const run = `ceiling-${opts.stamp}-run${r}`;
    const { child, port, startupMs } = await startCeiling(opts.runner);
    try {
      const host = '127.0.0.1';
      const raw = buildRequest({ method: 'PUT', path: '/student/course', host: `${host}:${port}`, token: FAKE_TOKEN, body: BODY });
      const conns = await openConnections(host, port, opts.connections);
      let gen: LoadResult;
      let serverCpuUs = 0;
      try {
        const job = { op: 'put', raw };
        if (opts.warmupS > 0) await runTimed({ label: `${run} warm-up`, conns, durationMs: opts.warmupS * 1000, next: () => job });
        const cpu0 = readCpuSeconds(child.pid);
        const { lastReplyAt: _l, ...g } = await runTimed({ label: `${run} generator`, conns, durationMs: opts.durationS * 1000, next: () => job });
        gen = g;
        serverCpuUs = g.requests > 0 ? round(((readCpuSeconds(child.pid) - cpu0) * 1e6) / g.requests, 0) : 0;
      } finally {
        closeAll(conns);
      }
      let done = 0;
      const progress = new Progress({ label: `${run} autocannon`, done: () => done, errors: () => 0 });
      let ac: autocannon.Result;
      try {
        ac = await new Promise<autocannon.Result>((resolve, reject) => {
          const instance = autocannon(
            {
              url: `http://${host}:${port}/student/course`,
              method: 'PUT',
              headers: { 'content-type': 'application/json', authorization: `Bearer ${FAKE_TOKEN}` },
              body: JSON.stringify(BODY),
              connections: opts.connections,
              duration: opts.durationS,
            },
            (err: unknown, result: autocannon.Result) => (err ? reject(err as Error) : resolve(result)),
          );
          instance.on('response', () => {
            done += 1;
          });
        });
      } finally {
        progress.stop();
      }
      const acRps = round((ac.requests.total * 1000) / (ac.duration * 1000), 0);
      const f: CeilingScenarioFigures = {
        connections: opts.connections,
        durationS: opts.durationS,
        startupMs: Math.round(startupMs),
        rssMb: readMemory(child.pid)?.rssMb ?? null,
        generator: { reqPerSec: gen.reqPerSec, latencyMs: gen.latencyMs, errors: gen.errorCount, serverCpuUsPerRequest: serverCpuUs },
        autocannon: {
          reqPerSec: acRps,
          latencyMs: { p50: ac.latency.p50, p90: ac.latency.p90, p99: ac.latency.p99, max: ac.latency.max },
          non2xx: ac.non2xx,
          errors: ac.errors,
        },
        generatorVsAutocannon: acRps > 0 ? round(gen.reqPerSec / acRps, 3) : 0,
        ratioToCeiling: 1,
      };
      runs.push(f);
      report.checks.push({ name: `${run}: no errors from the bare server`, ok: gen.errorCount === 0 && ac.errors === 0 && ac.non2xx === 0, detail: `generator ${gen.errorCount}, autocannon ${ac.errors} errors / ${ac.non2xx} non-2xx` });
      note(
        `[${run}] bare Fastify at ${opts.connections} connections: harness generator ${fmt(gen.reqPerSec)} req/s (p50 ${gen.latencyMs.p50} p99 ${gen.latencyMs.p99} ms), ` +
          `autocannon ${fmt(acRps)} req/s (p50 ${ac.latency.p50} p99 ${ac.latency.p99} ms); server CPU ${serverCpuUs} µs per request; RSS ${f.rssMb} MB, startup ${f.startupMs} ms`,
      );
    } finally {
      await child.stop();
    }
  }
  const m = medianDeep(runs);
  report.variants.push({
    variant: 'bare Fastify',
    runs,
    median: m,
    targets: [
      check('ceiling (harness generator)', '-', `${fmt(m.generator.reqPerSec)} req/s`, null),
      check('ceiling (autocannon)', '-', `${fmt(m.autocannon.reqPerSec)} req/s`, null),
      check('harness generator / autocannon', '-', `${m.generatorVsAutocannon}`, null),
      check('server CPU time per request (no target)', '-', `${fmt(m.generator.serverCpuUsPerRequest)} µs`, null),
    ],
  });
}
