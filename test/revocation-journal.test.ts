import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createMemoryCoordination } from '../src/coordination/memory.js';
import { openRevocationJournal, REVOCATION_FILE } from '../src/coordination/revocation-journal.js';
import { isEngineError } from '../src/errors.js';

/** Embedded mode's revocations outlive a restart: the journal in the data directory. */
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const freshDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'enroll-revocations-'));
  dirs.push(d);
  return d;
};
const subject = (over: Partial<{ jti: string; sid: string; subject: string; authTimeMs: number }> = {}) => ({
  jti: 'j1',
  sid: 's1',
  subject: 'student:40000001',
  authTimeMs: 1_000,
  ...over,
});

describe('revocation journal', () => {
  it('reads back what was appended, drops expired entries and a torn last line, and rewrites the file without them', async () => {
    const dir = freshDir();
    const now = 1_800_000_000_000;
    const nowS = now / 1000;
    const j = await openRevocationJournal(dir, now);
    assert.deepEqual(j.loaded, []);
    await j.append([{ key: 'j:live', until: nowS + 60 }, { key: 'j:old', until: nowS + 5 }]);
    await j.append([{ key: 'u:student:1', until: nowS + 60, at: now - 10 }]);
    await j.close();
    appendFileSync(join(dir, REVOCATION_FILE), '{"key":"j:torn","unt');

    const later = await openRevocationJournal(dir, now + 10_000);
    assert.deepEqual(later.loaded, [{ key: 'j:live', until: nowS + 60 }, { key: 'u:student:1', until: nowS + 60, at: now - 10 }]);
    await later.close();
    const lines = readFileSync(join(dir, REVOCATION_FILE), 'utf8').trim().split('\n');
    assert.equal(lines.length, 2, 'the expired entry and the torn line are gone from the file');
  });

  it('answers every one of many concurrent appends, and keeps them all', async () => {
    const dir = freshDir();
    const j = await openRevocationJournal(dir);
    const until = Math.floor(Date.now() / 1000) + 600;
    await Promise.all(Array.from({ length: 200 }, (_, i) => j.append([{ key: `j:${i}`, until }])));
    await j.close();
    const again = await openRevocationJournal(dir);
    assert.equal(again.loaded.length, 200);
    assert.deepEqual(new Set(again.loaded.map((e) => e.key)), new Set(Array.from({ length: 200 }, (_, i) => `j:${i}`)));
    await again.close();
  });
});

describe('in-process coordination with a data directory', () => {
  it('a revocation holds at once and again in a new process (a new store on the same directory)', async () => {
    const dir = freshDir();
    const first = createMemoryCoordination({ dataDir: dir });
    await first.start();
    const until = Math.floor(Date.now() / 1000) + 600;
    const pending = first.revocations.revoke({ jti: 'j1', until });
    assert.ok(first.revocations.isRevoked(subject()), 'held before the write is on disk');
    await pending;
    await first.revocations.revoke({ subject: 'student:40000002', at: 5_000, until });
    await first.close();

    const second = createMemoryCoordination({ dataDir: dir });
    assert.equal(second.revocations.isRevoked(subject()), false, 'nothing before start');
    await second.start();
    assert.ok(second.revocations.isRevoked(subject()));
    assert.ok(second.revocations.isRevoked(subject({ jti: 'other', sid: 'other', subject: 'student:40000002', authTimeMs: 4_000 })));
    assert.equal(second.revocations.isRevoked(subject({ jti: 'other', sid: 'other', subject: 'student:40000002', authTimeMs: 6_000 })), false, 'a later login is not revoked');
    assert.equal(second.revocations.isRevoked(subject({ jti: 'other', sid: 'other' })), false);
    await second.close();
  });

  it('without a data directory nothing is written and revoke still holds in memory', async () => {
    const c = createMemoryCoordination();
    await c.start();
    await c.revocations.revoke({ jti: 'j1', until: Math.floor(Date.now() / 1000) + 60 });
    assert.ok(c.revocations.isRevoked(subject()));
    await c.close();
  });

  it('a revocation that cannot be written to disk is answered 503 UNAVAILABLE, and still holds in this process', async () => {
    const dir = freshDir();
    const c = createMemoryCoordination({
      dataDir: dir,
      openJournal: async (d, now) => {
        const real = await openRevocationJournal(d, now);
        return { loaded: real.loaded, close: () => real.close(), append: async () => Promise.reject(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })) };
      },
    });
    await c.start();
    await assert.rejects(c.revocations.revoke({ jti: 'j1', until: Math.floor(Date.now() / 1000) + 60 }), (err: unknown) => isEngineError(err) && err.code === 'UNAVAILABLE' && err.statusCode === 503);
    assert.ok(c.revocations.isRevoked(subject()));
    await c.close();
  });
});
