import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { ClusterMembership } from '../src/persistence/types.js';
import { registry } from '../src/metrics/registry.js';
import { FORWARDED_HEADER } from '../src/http/forwarding.js';
import { C, createHttpFixture, expectStatus, S, type HttpFixture } from './support/http-fixture.js';

/**
 * Probe O2, finding 1: a write sent to an instance that does not own its shard is forwarded to the
 * owner, and both instances used to observe it in `http_request_duration_seconds` with the same
 * {method, route, status}. Dashboards sum over instances, so every forwarded write counted twice
 * and the owner's inner latency went into the p99. The rule: the instance the client talked to
 * records the request; the owner does not record a request that reached it by forwarding (its
 * mark signed by the forwarding instance). Two real apps (buildApp over an engine each), one owning
 * every shard and listening, the other owning none: its writes go over HTTP to the first. Both
 * observe into this process's one registry, which is exactly what a dashboard's sum over the two
 * instances reads.
 */

const fixtures: HttpFixture[] = [];
after(async () => {
  for (const f of fixtures) await f.close();
});

/** One instance's view: it owns every shard (`owner`) or none (its writes go to `peer()`). */
function membership(owner: boolean, peer: () => string): ClusterMembership {
  return {
    shards: 1,
    instanceId: owner ? 'owner' : 'other',
    peers: 1,
    storageUnreachable: false,
    routeWrite: () => (owner ? { self: true } : { self: false, address: peer() }),
    admitWrite: () => (owner ? () => undefined : null),
    decides: () => owner,
    refreshRoutes: () => Promise.resolve(),
    syncReads: () => Promise.resolve(true),
    follow: () => undefined,
    onGained: () => undefined,
    handOver: () => Promise.resolve(),
    join: () => undefined,
  };
}

/** `http_request_duration_seconds_count` for the labels, as the registry holds it now (0 if none). */
async function requestCount(method: string, route: string, status: number): Promise<number> {
  const metric = await registry.getSingleMetric('http_request_duration_seconds')?.get();
  const v = metric?.values.find(
    (x) => (x as { metricName?: string }).metricName === 'http_request_duration_seconds_count' && x.labels.method === method && x.labels.route === route && x.labels.status === String(status),
  );
  return v?.value ?? 0;
}

async function enrollOutcomes(code: string): Promise<number> {
  const metric = await registry.getSingleMetric('enrollment_enroll_outcomes_total')?.get();
  return metric?.values.find((x) => x.labels.code === code)?.value ?? 0;
}

describe('request metrics with forwarding between instances', () => {
  test('a write forwarded to its owner is counted once in http_request_duration_seconds (by the instance the client talked to), and its outcome once', async () => {
    let ownerAddress = '';
    const owner = await createHttpFixture({ logLevel: 'silent', app: { cluster: membership(true, () => '') } });
    fixtures.push(owner);
    ownerAddress = await owner.app.listen({ port: 0, host: '127.0.0.1' });
    const other = await createHttpFixture({ logLevel: 'silent', app: { cluster: membership(false, () => ownerAddress) } });
    fixtures.push(other);

    const before = await requestCount('PUT', '/student/course', 204);
    const okBefore = await enrollOutcomes('OK');
    const sections = [C.algo2, C.db, C.physics];
    const students = [S.alice, S.bea, S.f1];
    for (let i = 0; i < 3; i++) {
      const [course_id, group_id] = sections[i] as readonly [number, number];
      const r = await other.request('PUT', '/student/course', { token: other.studentToken(students[i]), body: { course_id, group_id } });
      expectStatus(r, 204);
    }
    // Decided by the owner (its engine holds the places), not by the instance that forwarded them.
    for (const s of students) {
      assert.equal(owner.engine.studentSections(s).length, 1, `student ${s} placed by the owner`);
      assert.equal(other.engine.studentSections(s).length, 0, 'and not by the instance that forwarded the write');
    }
    assert.equal(
      (await requestCount('PUT', '/student/course', 204)) - before,
      3,
      'three client requests, counted once each across both instances (the owner does not count what was forwarded to it)',
    );
    assert.equal((await enrollOutcomes('OK')) - okBefore, 3, 'enroll outcomes counted once, on the owner');
  });

  test("a client's own x-engine-forwarded header does not hide its request from the metrics", async () => {
    const owner = await createHttpFixture({ logLevel: 'silent', app: { cluster: membership(true, () => '') } });
    fixtures.push(owner);
    const before = await requestCount('PUT', '/student/course', 204);
    const r = await owner.request('PUT', '/student/course', {
      token: owner.studentToken(S.f2),
      body: { course_id: C.algo2[0], group_id: C.algo2[1] },
      headers: { [FORWARDED_HEADER]: `${Date.now()}.x.bogus` },
    });
    expectStatus(r, 204);
    assert.equal((await requestCount('PUT', '/student/course', 204)) - before, 1);
  });
});
