import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createPgliteClient, PGLITE_SETTINGS } from '../src/persistence/pglite-client.js';

/**
 * PGlite starts with a small buffer pool and small sort / maintenance memory (its WebAssembly
 * memory never shrinks, so these bound what stays resident), on a new directory as on an existing
 * one, and a new directory is created (initdb) before the engine's own instance opens it.
 */

const dir = mkdtempSync(join(tmpdir(), 'enroll-pglite-settings-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const show = async (db: Awaited<ReturnType<typeof createPgliteClient>>, name: string): Promise<string> =>
  (await db.query<Record<string, string>>(`SHOW ${name}`)).rows[0]?.[name] as string;

describe('PGlite start parameters', () => {
  it('the defaults are small', () => {
    assert.deepEqual(PGLITE_SETTINGS, { shared_buffers: '16MB', work_mem: '2MB', maintenance_work_mem: '16MB' });
  });

  it('apply in memory', { timeout: 120_000 }, async () => {
    const db = await createPgliteClient(null);
    try {
      for (const [k, v] of Object.entries(PGLITE_SETTINGS)) assert.equal(await show(db, k), v, k);
    } finally {
      await db.close();
    }
  });

  it('apply to a new data directory (created by the initdb child) and again after reopening it; shared_buffers can be set', { timeout: 180_000 }, async () => {
    const path = join(dir, 'pglite');
    assert.equal(existsSync(join(path, 'PG_VERSION')), false);
    // template: null = no shipped template (test/pglite-template.test.ts covers that path): initdb in the child.
    const first = await createPgliteClient(path, { template: null });
    try {
      assert.ok(existsSync(join(path, 'PG_VERSION')), 'the directory was initialised');
      for (const [k, v] of Object.entries(PGLITE_SETTINGS)) assert.equal(await show(first, k), v, k);
      await first.exec('CREATE TABLE kept (x int); INSERT INTO kept VALUES (42);');
    } finally {
      await first.close();
    }
    const again = await createPgliteClient(path, { sharedBuffersMb: 24 });
    try {
      assert.equal(await show(again, 'shared_buffers'), '24MB');
      assert.equal(await show(again, 'work_mem'), '2MB');
      assert.deepEqual((await again.query<{ x: number }>('SELECT x FROM kept')).rows, [{ x: 42 }]);
    } finally {
      await again.close();
    }
  });

  it('applies to a new data directory created from the shipped template', { timeout: 120_000 }, async () => {
    const path = join(dir, 'from-template');
    const origins: string[] = [];
    const db = await createPgliteClient(path, { onDataDir: (o) => origins.push(o.from) });
    try {
      assert.deepEqual(origins, ['template']);
      for (const [k, v] of Object.entries(PGLITE_SETTINGS)) assert.equal(await show(db, k), v, k);
    } finally {
      await db.close();
    }
  });

  it('a directory that cannot be initialised is a clear error', { timeout: 120_000 }, async () => {
    // A regular file where the data directory's PG_VERSION parent should be: the template refuses a
    // directory that is not empty, and initdb fails in the child.
    const blocked = join(dir, 'blocked');
    const { writeFileSync, mkdirSync } = await import('node:fs');
    mkdirSync(blocked);
    writeFileSync(join(blocked, 'base'), 'not a directory');
    await assert.rejects(createPgliteClient(blocked), /creating the PGlite data directory .* failed/);
  });
});
