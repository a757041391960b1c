import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { watchEngine } from '../src/metrics/engine-metrics.js';
import { renderMetrics } from '../src/metrics/registry.js';
import { startMetricsServer } from '../src/metrics/server.js';
import { createPasswordGate } from '../src/http/password-gate.js';
import { watchPasswordGate } from '../src/http/request-metrics.js';
import { createGroupCommitter } from '../src/persistence/group-commit.js';
import { createLogger } from '../src/logger.js';
import { createHttpFixture, expectError, expectStatus, PASSWORD, S, type HttpFixture } from './support/http-fixture.js';

/**
 * Issue 15: `/metrics` (staff token on the API; no token on METRICS_PORT) exports what an operator
 * watches on registration day, and every metric the Grafana dashboard queries is really exported.
 * docker-compose.yml runs Prometheus and Grafana with the provisioning files in ops/.
 */

const fixtures: HttpFixture[] = [];
after(async () => {
  for (const f of fixtures) await f.close();
});

async function scrape(): Promise<{ fx: HttpFixture; text: string }> {
  const fx = await createHttpFixture();
  fixtures.push(fx);
  watchEngine(fx.engine, { kind: 'memory', connected: true });
  // Traffic to observe: a login, an enroll that works, one refused, a 404.
  expectStatus(await fx.request('POST', '/login', { body: { user: S.alice, password: PASSWORD } }), 200);
  expectStatus(await fx.request('PUT', '/student/course', { token: fx.studentToken(S.alice), body: { course_id: 101, group_id: 1 } }), 204);
  expectStatus(await fx.request('PUT', '/student/course', { token: fx.studentToken(S.alice), body: { course_id: 101, group_id: 1 } }), 400);
  expectStatus(await fx.request('GET', '/no-such-route'), 404);
  // A group committer exists in every store; one here makes the gauge's source live in this process too.
  createGroupCommitter(async () => undefined, 10);
  const r = await fx.request('GET', '/metrics', { token: fx.staffToken() });
  expectStatus(r, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain/);
  return { fx, text: r.raw };
}

/**
 * Names a Prometheus text scrape exports: every sample name (`name{labels} value`), and every
 * declared family (`# TYPE name kind`; a histogram's `_bucket`, `_sum`, `_count` with it), so a
 * labelled gauge with no sample yet (no log reader stalled) still counts as exported.
 */
function exportedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{| )/.exec(line);
    if (m) names.add(m[1] as string);
    const t = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)/.exec(line);
    if (t) {
      names.add(t[1] as string);
      if (t[2] === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${t[1]}${suffix}`);
    }
  }
  return names;
}

const PROMQL_WORDS = new Set([
  'sum', 'by', 'rate', 'irate', 'increase', 'histogram_quantile', 'max', 'min', 'avg', 'count', 'le', 'without', 'on',
  'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'offset', 'topk', 'bottomk', 'delta', 'deriv',
  'abs', 'clamp_min', 'clamp_max', 'time', 'vector', 'scalar', 'label_replace', 'avg_over_time', 'max_over_time',
]);

/** Metric names a PromQL expression reads: identifiers that are not functions, keywords or label names. */
function metricsIn(expr: string): string[] {
  const noLabels = expr.replace(/\{[^}]*\}/g, '').replace(/\[[^\]]*\]/g, '').replace(/\b(by|without|on|ignoring)\s*\([^)]*\)/g, '');
  const ids = noLabels.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? [];
  return ids.filter((id) => !PROMQL_WORDS.has(id) && !/^\d/.test(id));
}

describe('/metrics', () => {
  it('answers staff only on the API port, with clear refusals', async () => {
    const fx = await createHttpFixture();
    fixtures.push(fx);
    expectError(await fx.request('GET', '/metrics'), 401, 'UNAUTHENTICATED');
    const student = await fx.request('GET', '/metrics', { token: fx.studentToken() });
    expectError(student, 403, 'FORBIDDEN');
    assert.match(student.body.reason, /students cannot use the admin page or staff routes/);
  });

  it('exports request durations by route and status, enroll outcomes by code, queues, actors, event-loop delay and GC', async () => {
    const { text } = await scrape();
    assert.match(text, /http_request_duration_seconds_bucket\{le="[^"]+",method="PUT",route="\/student\/course",status="204"\}/);
    assert.match(text, /http_request_duration_seconds_count\{method="GET",route="unmatched",status="404"\} [1-9]/);
    assert.match(text, /enrollment_enroll_outcomes_total\{code="OK"\} [1-9]/);
    assert.match(text, /enrollment_enroll_outcomes_total\{code="SAME_COURSE"\} [1-9]/);
    assert.match(text, /enrollment_section_actors\{state="active"\} \d+/);
    assert.match(text, /enrollment_section_actors\{state="passivated"\} \d+/);
    assert.match(text, /enrollment_student_mailbox_requests \d+/);
    assert.match(text, /enrollment_group_commit_queued_events \d+/);
    assert.match(text, /enrollment_publish_confirm_seconds_bucket/);
    assert.match(text, /enrollment_batcher_lag_seconds \d+/);
    assert.match(text, /enrollment_coordination_connected\{store="memory"\} 1/);
    assert.match(text, /nodejs_eventloop_lag_p99_seconds \d/);
    assert.match(text, /# TYPE nodejs_gc_duration_seconds histogram/);
  });

  it('histogram buckets reach past the slow paths (login queue 5 s, forwards 8-16 s, confirm timeout 5 s) and keep every earlier boundary', async () => {
    const { text } = await scrape();
    const bounds = (series: RegExp): string[] => [...text.matchAll(series)].map((m) => m[1] as string);
    const http = bounds(/^http_request_duration_seconds_bucket\{le="([^"]+)",method="PUT",route="\/student\/course",status="204"\}/gm);
    const confirm = bounds(/^enrollment_publish_confirm_seconds_bucket\{le="([^"]+)"\}/gm);
    // The boundaries dashboards and recorded queries may name (le="..."): never dropped.
    const before = ['0.0005', '0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5'];
    for (const le of [...before, '5']) assert.ok(http.includes(le), `http_request_duration_seconds lost le=${le}: ${http.join(' ')}`);
    for (const le of before) assert.ok(confirm.includes(le), `enrollment_publish_confirm_seconds lost le=${le}: ${confirm.join(' ')}`);
    const top = (les: string[]) => Math.max(...les.filter((le) => le !== '+Inf').map(Number));
    assert.ok(top(http) >= 20, `a forwarded write settles within 16 s; the last finite bucket is ${top(http)} s`);
    assert.ok(top(confirm) >= 10, `a confirm times out at 5 s; the last finite bucket is ${top(confirm)} s`);
  });

  it('counts the logins waiting for a password-check slot and the checks running', async () => {
    const gate = createPasswordGate({ max: 1, maxWaitMs: 5000 });
    watchPasswordGate(gate);
    const releases: (() => void)[] = [];
    const check = () => new Promise<boolean>((resolve) => releases.push(() => resolve(true)));
    const logins = [gate.run(check), gate.run(check), gate.run(check)];
    const text = (await renderMetrics()).body;
    // Other apps of this file are watched too; none has a login in flight now.
    assert.match(text, /enrollment_login_queue 2\n/);
    assert.match(text, /enrollment_password_checks_active 1\n/);
    while (releases.length > 0) {
      releases.shift()?.();
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all(logins);
    assert.match((await renderMetrics()).body, /enrollment_login_queue 0\n/);
  });

  it('is served without a token on the separate Prometheus listener, and nothing else is', async () => {
    const server = await startMetricsServer({ host: '127.0.0.1', port: 0, logger: createLogger('silent') });
    after(() => void server.close());
    const { port } = server.address() as AddressInfo;
    const r = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(r.status, 200);
    assert.match(await r.text(), /nodejs_eventloop_lag_p99_seconds/);
    assert.equal((await fetch(`http://127.0.0.1:${port}/login`)).status, 404);
  });
});

describe('Grafana dashboard and docker-compose.yml', () => {
  const dashboard = JSON.parse(readFileSync('ops/grafana/dashboards/enrollment.json', 'utf8')) as {
    uid: string;
    panels: { title: string; datasource: { uid: string }; targets: { expr: string }[] }[];
  };

  it('queries only metrics that /metrics exports', async () => {
    const { text } = await scrape();
    const exported = exportedNames(text);
    const named = new Set<string>();
    for (const p of dashboard.panels) {
      assert.ok(p.targets.length > 0, `panel ${p.title} has no query`);
      assert.equal(p.datasource.uid, 'prometheus', p.title);
      for (const t of p.targets) for (const m of metricsIn(t.expr)) named.add(m);
    }
    assert.ok(named.size >= 15, `the dashboard names ${named.size} metrics`);
    const missing = [...named].filter((m) => !exported.has(m));
    assert.deepEqual(missing, [], `the dashboard queries metrics /metrics does not export: ${missing.join(', ')}`);
  });

  it('the name extraction finds a misspelt metric (so the check above can fail)', () => {
    assert.deepEqual(metricsIn('sum by (route) (rate(http_request_duration_secs_count{status="204"}[1m]))'), ['http_request_duration_secs_count']);
  });

  it('compose runs Prometheus (scraping server and batcher on METRICS_PORT) and Grafana provisioned with the dashboard', () => {
    // `merge: true`: the replicas take the shared environment through a YAML merge key (`<<:`), as compose does.
    const compose = parseYaml(readFileSync('docker-compose.yml', 'utf8'), { merge: true }) as {
      services: Record<string, { image?: string; volumes?: string[]; environment?: Record<string, string>; depends_on?: unknown }>;
      'x-app-environment': Record<string, string>;
    };
    const env = compose['x-app-environment'];
    assert.equal(env['METRICS_PORT'], '9464');
    assert.equal(env['METRICS_HOST'], '0.0.0.0');
    for (const replica of ['server', 'server-2']) {
      assert.equal(compose.services[replica]?.environment?.['METRICS_PORT'], '9464', `${replica} gets the shared environment`);
      assert.equal(compose.services[replica]?.environment?.['ADVERTISE_URL'], `http://${replica}:8080`, `${replica} advertises its own address`);
    }
    assert.equal(compose.services['batcher']?.environment?.['METRICS_PORT'], '9464');
    const prom = compose.services["prometheus"]!;
    assert.ok(prom?.image?.startsWith('prom/prometheus:'));
    assert.ok(prom.volumes?.includes('./ops/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro'));
    const grafana = compose.services["grafana"]!;
    assert.ok(grafana?.image?.startsWith('grafana/grafana:'));
    assert.ok(grafana.volumes?.includes('./ops/grafana/provisioning:/etc/grafana/provisioning:ro'));
    assert.ok(grafana.volumes?.includes('./ops/grafana/dashboards:/var/lib/grafana/dashboards:ro'));

    const promConfig = parseYaml(readFileSync('ops/prometheus/prometheus.yml', 'utf8')) as {
      scrape_configs: { static_configs: { targets: string[] }[] }[];
    };
    const targets = promConfig.scrape_configs.flatMap((s) => s.static_configs.flatMap((c) => c.targets));
    assert.deepEqual(targets.sort(), ['batcher:9464', 'server-2:9464', 'server:9464']);
    const ds = parseYaml(readFileSync('ops/grafana/provisioning/datasources/prometheus.yml', 'utf8')) as {
      datasources: { uid: string; url: string; type: string }[];
    };
    assert.deepEqual(ds.datasources.map((d) => [d.uid, d.type, d.url]), [['prometheus', 'prometheus', 'http://prometheus:9090']]);
    const provider = parseYaml(readFileSync('ops/grafana/provisioning/dashboards/enrollment.yml', 'utf8')) as {
      providers: { type: string; options: { path: string } }[];
    };
    assert.equal(provider.providers[0]?.options.path, '/var/lib/grafana/dashboards');
    assert.equal(grafana.environment?.['GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH'], `/var/lib/grafana/dashboards/enrollment.json`);
  });

  it('the engine containers read an optional .env, and the compose values for addresses, HOST and PORT win over it', () => {
    const compose = parseYaml(readFileSync('docker-compose.yml', 'utf8'), { merge: true }) as {
      services: Record<string, { env_file?: unknown; environment?: Record<string, string> }>;
    };
    for (const name of ['server', 'server-2', 'batcher']) {
      const svc = compose.services[name];
      // A missing .env must not stop `docker compose up` (Compose 2.24+ long syntax).
      assert.deepEqual(svc?.env_file, [{ path: '.env', required: false }], `${name} reads .env, optionally`);
      // `environment` overrides env_file in compose: a .env written for `npm start` (HOST=127.0.0.1,
      // a PORT, localhost service URLs) must not break the containers.
      const env = svc?.environment ?? {};
      assert.equal(env['HOST'], '0.0.0.0', name);
      assert.equal(env['PORT'], '8080', name);
      assert.match(env['DATABASE_URL'] ?? '', /@postgres:5432\//, name);
      assert.match(env['RABBITMQ_URL'] ?? '', /@rabbitmq:5672$/, name);
      assert.equal(env['REDIS_URL'], 'redis://redis:6379', name);
    }
  });
});

describe('Prometheus alert rules (ops/prometheus/alerts.yml)', () => {
  type Rule = { alert: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  const rulesFile = parseYaml(readFileSync('ops/prometheus/alerts.yml', 'utf8')) as { groups: { name: string; rules: Rule[] }[] };
  const rules = rulesFile.groups.flatMap((g) => g.rules);
  /** The engine's metric names a rule reads, in its expression and in its annotations' queries. */
  const enginesNamesIn = (r: Rule): string[] => [r.expr, ...Object.values(r.annotations ?? {})].flatMap((s) => s.match(/\benrollment_\w+/g) ?? []);

  it('name only metrics the engine registers', async () => {
    const { text } = await scrape();
    const exported = exportedNames(text);
    const named = new Set(rules.flatMap(enginesNamesIn));
    assert.ok(named.has('enrollment_batcher_leader') && named.has('enrollment_log_stalled'), [...named].join(', '));
    const missing = [...named].filter((m) => !exported.has(m));
    assert.deepEqual(missing, [], `the alert rules name metrics the engine does not register: ${missing.join(', ')}`);
    // The check can fail: a misspelt name is not among them.
    assert.equal(exported.has(enginesNamesIn({ alert: 'x', expr: 'sum(enrollment_batcher_leaders) == 0' })[0] as string), false);
  });

  it('are the alerts docs/operations.md asks for, loaded by prometheus.yml and mounted by compose', () => {
    const docs = readFileSync('docs/operations.md', 'utf8');
    assert.match(docs, /`sum\(enrollment_batcher_leader\) == 0`[^|]*alert on it/);
    assert.match(docs, /`enrollment_log_stalled\{stream,reader\}`.*\(page someone\)/);
    const leader = rules.find((r) => /sum\(enrollment_batcher_leader\)\s*==\s*0/.test(r.expr));
    assert.ok(leader, 'an alert on sum(enrollment_batcher_leader) == 0');
    assert.ok(leader.for !== undefined, 'held for a while: a lead handed over reads 0 for a moment');
    const stalled = rules.find((r) => /enrollment_log_stalled\b/.test(r.expr));
    assert.ok(stalled, 'an alert on enrollment_log_stalled');
    assert.equal(stalled.labels?.['severity'], 'page');
    for (const r of rules) assert.ok(r.annotations?.['summary'], `${r.alert} says what happened`);

    const promConfig = parseYaml(readFileSync('ops/prometheus/prometheus.yml', 'utf8')) as { rule_files?: string[] };
    assert.deepEqual(promConfig.rule_files, ['alerts.yml']);
    const compose = parseYaml(readFileSync('docker-compose.yml', 'utf8'), { merge: true }) as { services: Record<string, { volumes?: string[] }> };
    assert.ok(compose.services['prometheus']?.volumes?.includes('./ops/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro'), 'compose mounts the rules beside prometheus.yml');
  });

  it("the batcher panel shows its 0/1 series (stalled, leader) as counts, not in the panel's seconds", () => {
    const dashboard = JSON.parse(readFileSync('ops/grafana/dashboards/enrollment.json', 'utf8')) as {
      panels: {
        title: string;
        fieldConfig: { defaults: { unit?: string }; overrides: { matcher: { id: string; options: string }; properties: { id: string; value: unknown }[] }[] };
        targets: { refId: string; expr: string }[];
      }[];
    };
    const countSeries = /enrollment_log_stalled\b|enrollment_batcher_leader\b/;
    let checked = 0;
    for (const p of dashboard.panels) {
      for (const t of p.targets.filter((x) => countSeries.test(x.expr))) {
        const override = p.fieldConfig.overrides.find((o) => o.matcher.id === 'byFrameRefID' && o.matcher.options === t.refId);
        const unit = override?.properties.find((x) => x.id === 'unit')?.value ?? p.fieldConfig.defaults.unit;
        assert.ok(unit !== 's', `${p.title}: ${t.expr} is shown in seconds`);
        checked += 1;
      }
    }
    assert.equal(checked, 2);
  });
});
