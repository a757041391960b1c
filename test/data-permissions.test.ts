import assert from 'node:assert/strict';
import { chmodSync, lstatSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { secureDataDir } from '../src/data-dir.js';
import { createLogger } from '../src/logger.js';
import { createEmbeddedStore } from '../src/persistence/embedded-store.js';
import { loadOrCreateSecret } from '../src/secret-file.js';

/** Issue 11: embedded mode's data directory is private (0700/0600), and so is the JWT secret file. */

const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'wt11-perm-'));
  dirs.push(d);
  return d;
};
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function capture() {
  const lines: string[] = [];
  const logger = createLogger('debug', { write: (l: string) => void lines.push(l) });
  return { logger, logs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

/** Every entry under dir with a mode other than 0700 (directories) or 0600 (files). */
function tooOpen(dir: string): string[] {
  const out: string[] = [];
  const visit = (p: string) => {
    const st = lstatSync(p);
    const want = st.isDirectory() ? 0o700 : 0o600;
    if ((st.mode & 0o777) !== want) out.push(`${p} ${(st.mode & 0o777).toString(8)}`);
    if (st.isDirectory()) for (const n of readdirSync(p)) visit(join(p, n));
  };
  visit(dir);
  return out;
}

describe('the embedded data directory', () => {
  it('entries readable by others (as PGlite and its initdb leave them) are narrowed to 0700 / 0600, and logged', async () => {
    const dir = join(tmp(), 'data');
    const { logger, logs } = capture();
    const store = await createEmbeddedStore({ dataDir: join(dir, 'pglite'), logger, batchMaxEvents: 100 });
    await store.migrate();
    await store.close();
    // The shipped template unpacks private files, but PGlite itself (and the initdb fallback)
    // creates new ones with the umask's modes: open everything up the way they leave it.
    const open = (p: string) => {
      const st = lstatSync(p);
      chmodSync(p, st.isDirectory() ? 0o755 : 0o644);
      if (st.isDirectory()) for (const n of readdirSync(p)) open(join(p, n));
    };
    open(dir);
    const before = tooOpen(dir);
    assert.ok(before.length > 100, `expected many open modes, found ${before.length}`);
    const r = secureDataDir(dir, logger, 'test');
    assert.equal(r.fixed, before.length);
    assert.deepEqual(tooOpen(dir), []);
    const warn = logs().find((l) => l['msg'] === 'data directory entries were readable by others; narrowed to 0700/0600');
    assert.ok(warn, 'a warning names the fix');
    assert.equal(warn['fixed'], before.length);
    // A second check finds nothing to do.
    assert.equal(secureDataDir(dir, logger, 'again').fixed, 0);
  });

  it('creates a missing directory 0700', () => {
    const dir = join(tmp(), 'fresh', 'data');
    secureDataDir(dir, capture().logger, 'test');
    assert.equal(statSync(dir).mode & 0o777, 0o700);
  });
});

describe('the JWT secret file', () => {
  it('is created 0600 with a long random secret', () => {
    const dir = tmp();
    const s = loadOrCreateSecret(dir);
    assert.ok(s.length >= 32);
    assert.equal(statSync(join(dir, 'jwt-secret')).mode & 0o777, 0o600);
    assert.equal(loadOrCreateSecret(dir), s);
  });

  it('an existing file readable by others is narrowed to 0600, with a warning', () => {
    const dir = tmp();
    const file = join(dir, 'jwt-secret');
    writeFileSync(file, 'x'.repeat(40) + '\n');
    chmodSync(file, 0o644);
    const { logger, logs } = capture();
    assert.equal(loadOrCreateSecret(dir, logger), 'x'.repeat(40));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.ok(logs().some((l) => l['level'] === 40 && String(l['msg']).includes('narrowed to 0600')));
  });

  it('a secret shorter than 32 characters is refused', () => {
    const dir = tmp();
    const file = join(dir, 'jwt-secret');
    writeFileSync(file, 'short-secret\n', { mode: 0o600 });
    assert.throws(() => loadOrCreateSecret(dir), /at least 32/);
  });
});
