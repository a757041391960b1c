import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, describe, it } from 'node:test';
import { constants as zc, brotliCompressSync, brotliDecompressSync } from 'node:zlib';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { migrate } from '../src/persistence/migrations.js';
import { createPgliteClient, initDataDirInChild, type DataDirOrigin } from '../src/persistence/pglite-client.js';
import {
  createDataDirFromTemplate,
  installedPgliteVersion,
  SHIPPED_TEMPLATE,
  TemplateUnusable,
  type TemplateManifest,
  type TemplatePaths,
} from '../src/persistence/pglite-template.js';
import { freePort } from './support/fault-harness.js';
import { json } from './support/http-json.js';

/**
 * Issue 17: a new embedded data directory is unpacked from the shipped, initdb'd template instead
 * of running initdb (a child peaking at 670-750 MB). The shipped artefact must be the installed
 * PGlite's (else `npm run pglite-template`), it must be what initdb makes, a first start from it
 * must give a working database, and any template that does not check out must leave nothing behind
 * and fall back to initdb.
 */

const work = mkdtempSync(join(tmpdir(), 'enroll-pglite-template-'));
after(() => rmSync(work, { recursive: true, force: true }));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** The engine from source on `dataDir` (embedded, demo data on loopback), once it is ready. */
async function startEngine(dataDir: string, port: number): Promise<{ output: () => string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', DATA_DIR: dataDir, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 240_000;
  while (!/enrollment engine ready/.test(out)) {
    if (child.exitCode !== null) assert.fail(`the engine exited with ${child.exitCode}:\n${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      assert.fail(`the engine did not become ready:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    output: () => out,
    stop: async () => {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

const manifest = (): TemplateManifest => JSON.parse(readFileSync(SHIPPED_TEMPLATE.manifest, 'utf8')) as TemplateManifest;

/** A template in `work/<name>` with this archive and (by default) a manifest describing it correctly. */
function writeTemplate(name: string, archive: Buffer, patch: Partial<TemplateManifest> = {}): TemplatePaths {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  const paths = { archive: join(dir, 'template.tar.br'), manifest: join(dir, 'template.json') };
  writeFileSync(paths.archive, archive);
  const m = { ...manifest(), sha256: createHash('sha256').update(archive).digest('hex'), bytes: archive.length, ...patch };
  writeFileSync(paths.manifest, JSON.stringify(m));
  return paths;
}

/** Relative path -> size of every file, and every directory (size -1), under `dir`. */
function listing(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (p: string): void => {
    for (const name of readdirSync(p)) {
      const full = join(p, name);
      const st = statSync(full);
      out.set(relative(dir, full), st.isDirectory() ? -1 : st.size);
      if (st.isDirectory()) walk(full);
    }
  };
  walk(dir);
  return out;
}

const siblings = (dir: string): string[] => readdirSync(join(dir, '..')).filter((n) => n.startsWith(`${dir.split('/').pop()}.`));

describe('the shipped PGlite template', () => {
  it('was made by the installed PGlite and matches its manifest (else run npm run pglite-template)', () => {
    const m = manifest();
    assert.equal(m.pglite, installedPgliteVersion(), 'the template was made by another PGlite version: run npm run pglite-template');
    const archive = readFileSync(SHIPPED_TEMPLATE.archive);
    assert.equal(archive.length, m.bytes);
    assert.equal(createHash('sha256').update(archive).digest('hex'), m.sha256);
  });

  it('unpacks to what initdb creates (the same files and sizes), private modes, nothing left beside it', { timeout: 300_000 }, async () => {
    const fresh = join(work, 'initdb');
    await initDataDirInChild(fresh);
    const fromTemplate = join(work, 'from-template');
    const m = await createDataDirFromTemplate(fromTemplate);
    assert.equal(m.pglite, installedPgliteVersion());
    assert.deepEqual(listing(fromTemplate), listing(fresh));
    assert.equal(readFileSync(join(fromTemplate, 'PG_VERSION'), 'utf8'), readFileSync(join(fresh, 'PG_VERSION'), 'utf8'));
    assert.equal(statSync(fromTemplate).mode & 0o777, 0o700);
    assert.equal(statSync(join(fromTemplate, 'PG_VERSION')).mode & 0o777, 0o600);
    assert.deepEqual(siblings(fromTemplate), [], 'no staging directory left');
  });

  it('a first start of the engine from it gives a working database: migrations, the demo data, an enrollment kept across a restart', { timeout: 300_000 }, async () => {
    const dataDir = join(work, 'engine');
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const first = await startEngine(dataDir, port);
    try {
      assert.match(first.output(), /new PGlite data directory created from the shipped template/);
      assert.doesNotMatch(first.output(), /created by initdb/);
      assert.match(first.output(), /migrations applied/);
      const login = await json(base, 'POST', '/login', { user: 40000001, password: 'student-pass', staff: false });
      assert.equal(login.status, 200, 'the demo student exists');
      const token = (login.body as { token: string }).token;
      assert.equal((await json(base, 'PUT', '/student/course', { course_id: 40101, group_id: 1 }, token)).status, 204);
    } finally {
      await first.stop();
    }
    const again = await startEngine(dataDir, port);
    try {
      const told = again.output().split('\n').filter((l) => /shipped template|created by initdb|migrations applied/.test(l));
      assert.deepEqual(told, [], 'the restart opens the existing directory');
      const relogin = await json(base, 'POST', '/login', { user: 40000001, password: 'student-pass', staff: false });
      const mine = await json(base, 'GET', '/student/course', undefined, (relogin.body as { token: string }).token);
      assert.equal(mine.status, 200);
      assert.match(JSON.stringify(mine.body), /40101/, 'the enrollment acknowledged before the restart is there');
    } finally {
      await again.stop();
    }
  });

  it('another PGlite version: falls back to initdb (in the child), and the directory works', { timeout: 300_000 }, async () => {
    const other = writeTemplate('other-version', readFileSync(SHIPPED_TEMPLATE.archive), { pglite: '0.0.1' });
    const dataDir = join(work, 'other-version-data');
    const origins: DataDirOrigin[] = [];
    const db = await createPgliteClient(dataDir, { template: other, onDataDir: (o) => origins.push(o) });
    try {
      assert.equal(origins.length, 1);
      assert.equal(origins[0]?.from, 'initdb');
      assert.match((origins[0] as { reason: string }).reason, /made by PGlite 0\.0\.1, installed /);
      assert.ok((await migrate(db)).length > 0);
      assert.deepEqual((await db.query<{ n: number }>('SELECT 1 AS n')).rows, [{ n: 1 }]);
    } finally {
      await db.close();
    }
    assert.deepEqual(siblings(dataDir), []);
  });

  it('a damaged or inconsistent artefact is refused before anything reaches the data directory', async () => {
    const good = readFileSync(SHIPPED_TEMPLATE.archive);
    const flipped = Buffer.from(good);
    flipped[1000] = (flipped[1000] as number) ^ 0xff;
    const tar = brotliDecompressSync(good);
    // Quality 11 (the shipped artefact's) takes tens of seconds on 40 MB; these only need to be valid brotli.
    const compress = (b: Buffer): Buffer => brotliCompressSync(b, { params: { [zc.BROTLI_PARAM_QUALITY]: 4 } });
    // The last file's data and the end-of-archive blocks cut off, compressed again, manifest made to match the bytes.
    const truncated = compress(tar.subarray(0, tar.length - 64 * 1024));
    // One file's bytes changed without its size: a header checksum no longer matches when it is a header.
    const badHeader = Buffer.from(tar);
    badHeader[0] = 0x21;
    const cases: [string, TemplatePaths, RegExp][] = [
      ['a byte flipped (manifest unchanged)', writeTemplate('flipped', flipped, { sha256: manifest().sha256, bytes: manifest().bytes }), /SHA-256/],
      ['a truncated archive', writeTemplate('truncated', truncated), /truncated|unpacked to/],
      ['a bad header', writeTemplate('bad-header', compress(badHeader)), /header checksum/],
      ['not brotli at all', writeTemplate('not-brotli', Buffer.from('not an archive')), /cannot unpack/],
      ['more files listed than unpacked', writeTemplate('count', good, { files: manifest().files + 1 }), /manifest lists/],
      ['another format', writeTemplate('format', good, { format: 2 as 1 }), /format 2/],
      ['a missing archive', { archive: join(work, 'nowhere.tar.br'), manifest: SHIPPED_TEMPLATE.manifest }, /cannot read/],
    ];
    for (const [what, paths, reason] of cases) {
      const dataDir = join(work, `refused-${what.replace(/\W+/g, '-')}`);
      await assert.rejects(createDataDirFromTemplate(dataDir, paths), (err: Error) => err instanceof TemplateUnusable && reason.test(err.message), what);
      assert.equal(existsSync(dataDir), false, `${what}: the data directory was not created`);
      assert.deepEqual(siblings(dataDir), [], `${what}: no staging directory left`);
    }
  });

  it('a data directory that is not empty is left alone; a staging directory a crashed start left is replaced', async () => {
    const busy = join(work, 'busy');
    mkdirSync(busy);
    writeFileSync(join(busy, 'something'), 'x');
    await assert.rejects(createDataDirFromTemplate(busy), /is not empty/);
    assert.deepEqual(readdirSync(busy), ['something']);

    const dataDir = join(work, 'after-crash');
    mkdirSync(join(`${dataDir}.template-staging`, 'base'), { recursive: true });
    writeFileSync(join(`${dataDir}.template-staging`, 'PG_VERSION'), 'half');
    mkdirSync(dataDir);
    await createDataDirFromTemplate(dataDir);
    assert.equal(readFileSync(join(dataDir, 'PG_VERSION'), 'utf8').trim(), manifest().pgVersion);
    assert.deepEqual(siblings(dataDir), []);
  });
});
