import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EngineError } from '../src/errors.js';
import { migrate } from '../src/persistence/migrations.js';
import { createPgliteThreadClient, type PgliteThreadClient } from '../src/persistence/pglite-thread.js';
import { loadState } from '../src/persistence/state-store.js';
import type { DomainEvent } from '../src/persistence/types.js';

/**
 * PGlite on its own worker thread (PGLITE_THREAD=worker) behaves as PGlite in process: values,
 * errors with their PostgreSQL fields, transactions that commit or roll back as a whole, and a
 * group commit's one-message transaction whose webhook step runs back on this thread inside it.
 */

const cause = { requestId: 'r-1', actor: 'staff:1', at: Date.UTC(2026, 11, 3) };
const info = {
  courseId: 501,
  groupId: 1,
  forDepartment: 1,
  name: 'Threads',
  lecturer: 'L',
  units: 3,
  examTime: null,
  classTime: null,
  notes: '',
};
const created: DomainEvent = {
  type: 'sectionCreated',
  courseId: 501,
  groupId: 1,
  seq: 1,
  cause,
  info,
  capacity: 2,
  reserveCapacity: 1,
  sexLock: null,
  closed: false,
} as unknown as DomainEvent;

describe('PGlite on a worker thread', () => {
  let db: PgliteThreadClient;
  before(async () => {
    db = await createPgliteThreadClient(null);
    await db.exec('CREATE TABLE t (id int PRIMARY KEY, v text, at timestamptz, j jsonb)');
  });
  after(() => db.close());

  test('values come back as PGlite gives them in process', async () => {
    await db.query('INSERT INTO t VALUES ($1, $2, $3, $4)', [1, 'a', new Date(0), JSON.stringify({ x: [1, 2] })]);
    const r = await db.query<{ id: number; v: string; at: Date; j: unknown }>('SELECT * FROM t WHERE id = 1');
    assert.equal(r.rows.length, 1);
    assert.deepEqual(r.rows[0], { id: 1, v: 'a', at: new Date(0), j: { x: [1, 2] } });
    assert.ok(r.rows[0]!.at instanceof Date);
  });

  test("an error keeps PostgreSQL's code and detail (the stores map them to the project's codes)", async () => {
    await assert.rejects(db.query('INSERT INTO t (id) VALUES (1)'), (err: Error & { code?: string; detail?: string }) => {
      assert.equal(err.code, '23505');
      assert.match(err.detail ?? '', /already exists/);
      return true;
    });
  });

  test('a transaction commits as a whole, or rolls back as a whole when its callback throws', async () => {
    const got = await db.transaction(async (tx) => {
      await tx.query('INSERT INTO t (id) VALUES (2)');
      await tx.query('INSERT INTO t (id) VALUES (3)');
      return 'done';
    });
    assert.equal(got, 'done');
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.query('INSERT INTO t (id) VALUES (4)');
        throw new Error('changed my mind');
      }),
      /changed my mind/,
    );
    // A failing statement inside aborts the transaction; nothing of it stays.
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.query('INSERT INTO t (id) VALUES (5)');
        await tx.query('INSERT INTO t (id) VALUES (1)');
      }),
      (err: Error & { code?: string }) => err.code === '23505',
    );
    const ids = (await db.query<{ id: number }>('SELECT id FROM t ORDER BY id')).rows.map((r) => r.id);
    assert.deepEqual(ids, [1, 2, 3]);
  });

  test('statements outside a transaction wait for it (one at a time, as in process)', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const tx = db.transaction(async (t) => {
      await t.query('UPDATE t SET v = $1 WHERE id = 2', ['in-tx']);
      await held;
    });
    await new Promise((r) => setTimeout(r, 20));
    const outside = db.query<{ v: string | null }>('SELECT v FROM t WHERE id = 2');
    let seen = false;
    void outside.then(() => (seen = true));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(seen, false, 'the outside read waits for the open transaction');
    release();
    await tx;
    assert.equal((await outside).rows[0]!.v, 'in-tx');
  });
});

describe('a group commit in one message (applyEvents on the worker)', () => {
  let db: PgliteThreadClient;
  before(async () => {
    db = await createPgliteThreadClient(null);
    await migrate(db);
  });
  after(() => db.close());

  test('the stage step runs here, inside the transaction, with the fresh events; its failure rolls back the batch', async () => {
    const outboxFailure = new EngineError('UNAVAILABLE', 'the outbox failed');
    await assert.rejects(
      db.applyEvents([created], async (tx, fresh) => {
        assert.deepEqual(
          fresh.map((e) => `${e.type}:${e.seq}`),
          ['sectionCreated:1'],
        );
        // It sees the transaction's own insert (the transitions row) before the tables change.
        const n = (await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM transitions')).rows[0]!.n;
        assert.equal(n, 1);
        throw outboxFailure;
      }),
      (err: unknown) => err === outboxFailure, // the step's own error, as in process, not a copy
    );
    assert.equal((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM transitions')).rows[0]!.n, 0, 'rolled back');

    const staged: string[] = [];
    const count = await db.applyEvents([created], async (tx, fresh) => {
      staged.push(...fresh.map((e) => e.type));
      await tx.query("INSERT INTO departments (id, name) VALUES (77, 'staged in the same transaction') ON CONFLICT DO NOTHING");
    });
    assert.equal(count, 1);
    assert.deepEqual(staged, ['sectionCreated']);
    const state = await loadState(db);
    assert.equal(state.sections.length, 1);
    assert.equal(state.sections[0]!.capacity, 2);
    assert.ok(state.departments.some((d) => d.id === 77));

    // Redelivered: nothing is fresh, so nothing is staged and nothing changes.
    const again = await db.applyEvents([created], async () => {
      throw new Error('must not be called');
    });
    assert.equal(again, 0);
  });
});

test('after close every call fails, and close again is a no-op', async () => {
  const db = await createPgliteThreadClient(null);
  assert.equal((await db.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one, 1);
  await db.close();
  await assert.rejects(db.query('SELECT 1'), /closed/);
  await db.close();
});

test('a worker thread that dies fails the call in flight and every later one (nothing hangs, nothing is retried)', async () => {
  // A worker whose heap is bounded and then overrun stops, as one hit by any fatal error would.
  const db = await createPgliteThreadClient(null, { resourceLimits: { maxOldGenerationSizeMb: 48 } });
  assert.equal((await db.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one, 1);
  await assert.rejects(db.query("SELECT repeat('x', 100000) AS s FROM generate_series(1, 3000)"), /embedded database thread (failed|stopped)/);
  await assert.rejects(db.query('SELECT 1'), /embedded database thread (failed|stopped)/);
  await assert.rejects(
    db.transaction(async (tx) => tx.query('SELECT 1')),
    /embedded database thread (failed|stopped)/,
  );
  await db.close();
});

test('a call in flight keeps the process alive until it is answered; an idle client does not keep it alive (as PGlite in process)', () => {
  // A script that awaits a slow statement and then does not close the client: it must print the
  // answer (the pending call held the process) and then exit by itself (the idle worker did not).
  const client = new URL('../src/persistence/pglite-thread.ts', import.meta.url).href;
  const script = `const { createPgliteThreadClient } = await import(${JSON.stringify(client)});
    const db = await createPgliteThreadClient(null);
    db.query("SELECT 'answered' AS a FROM pg_sleep(0.5)").then((r) => console.log(r.rows[0].a));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.signal, null, `the process did not exit by itself: ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'answered');
});
