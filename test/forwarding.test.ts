import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Fastify from 'fastify';
import { EngineError } from '../src/errors.js';
import { createForwarder } from '../src/http/forwarding.js';
import type { ClusterMembership, WriteRoute } from '../src/persistence/types.js';
import { homeShardOf, shardOfCourse } from '../src/persistence/types.js';

/**
 * The forwarder against a membership of its own making (the project's ClusterMembership interface):
 * what a shard being drained for a hand-over lets through. The cluster tests show the same with real
 * processes; here the moment the drain begins is chosen exactly.
 */

const SHARDS = 2;

/** One instance holding every shard; `drain(shard)` starts giving one up: no new writes, admitted ones counted. */
function createMembership() {
  const draining = new Set<number>();
  const admitted = new Map<number, number>();
  const membership: ClusterMembership = {
    shards: SHARDS,
    instanceId: 'test',
    peers: 1,
    routeWrite: (shard): WriteRoute => (draining.has(shard) ? { self: false, address: null } : { self: true }),
    admitWrite(shard) {
      if (draining.has(shard)) return null;
      admitted.set(shard, (admitted.get(shard) ?? 0) + 1);
      let open = true;
      return () => {
        if (open) admitted.set(shard, (admitted.get(shard) ?? 1) - 1);
        open = false;
      };
    },
    decides: () => true,
    refreshRoutes: () => Promise.resolve(),
    syncReads: () => Promise.resolve(true),
    follow: () => undefined,
    onGained: () => undefined,
    handOver: () => Promise.resolve(),
  };
  return { membership, draining, admitted };
}

/** A student and a course whose shards are both `shard`. */
function pick(shard: number): { student: number; course: number } {
  let student = 1;
  while (homeShardOf(student, SHARDS) !== shard) student += 1;
  let course = 100;
  while (shardOfCourse(course, SHARDS) !== shard) course += 1;
  return { student, course };
}

async function createInstance() {
  const { membership, draining, admitted } = createMembership();
  const app = Fastify();
  app.decorateRequest('principal', null);
  app.addHook('onRequest', (request, _reply, done) => {
    request.principal = { id: Number(request.headers['x-student']), role: 'student' };
    done();
  });
  app.setErrorHandler((err: Error, _request, reply) => {
    const code = err instanceof EngineError ? err.code : 'INTERNAL';
    void reply.code(err instanceof EngineError ? err.statusCode : 500).send({ code });
  });
  app.addHook('preValidation', createForwarder({ cluster: membership, retryMs: 300 }));
  /** Requests the handler holds until `open()`. */
  let gate!: () => void;
  let gated = new Promise<void>((r) => (gate = r));
  const decided: number[] = [];
  app.put<{ Body: { course_id: number; n: number } }>('/student/course', async (request) => {
    await gated;
    decided.push(request.body.n);
    return { ok: request.body.n };
  });
  await app.ready();
  const put = (student: number, course: number, n: number) =>
    app.inject({ method: 'PUT', url: '/student/course', headers: { 'x-student': String(student) }, payload: { course_id: course, n } });
  return {
    app,
    put,
    draining,
    admitted,
    decided,
    open() {
      gate();
      gated = Promise.resolve();
    },
  };
}

describe('forwarding while a shard drains for a hand-over', () => {
  test("a student's write admitted before the drain, for a section of the home's own shard, is decided here, not sent after a next owner", async () => {
    const i = await createInstance();
    const shard = 1;
    const { student, course } = pick(shard);
    // The student's first write is being decided; the second waits behind it (one at a time per student).
    const first = i.put(student, course, 1);
    const second = i.put(student, course, 2);
    await new Promise((r) => setTimeout(r, 20));
    assert.ok((i.admitted.get(shard) ?? 0) >= 2, 'both writes were admitted for the home shard');
    // The shard starts to drain: nothing new is let through, the two admitted writes are awaited.
    i.draining.add(shard);
    const third = i.put(student, course, 3);
    i.open();
    const [r1, r2, r3] = await Promise.all([first, second, third]);
    assert.equal(r1.statusCode, 200);
    assert.equal(r2.statusCode, 200, `the admitted second write is decided here (got ${r2.statusCode} ${r2.body})`);
    assert.deepEqual(i.decided, [1, 2], 'both admitted writes decided, in order');
    assert.equal(i.admitted.get(shard), 0, 'the drain sees every admitted write answered');
    // A write arriving after the drain began is not taken here: with nobody else owning the shard
    // (this test has no other instance) it is refused after the retry window, having changed nothing.
    assert.equal(r3.statusCode, 503);
    assert.equal((r3.json() as { code: string }).code, 'UNAVAILABLE');
    await i.app.close();
  });
});
