import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';

/** scripts/engine-args.mjs: which settings npm start gives the engine in each mode (docs/memory.md). */
const ROOT = join(import.meta.dirname, '..');
type Start = { embedded: boolean; nodeArgs: string[]; env: Record<string, string | undefined> };
const { engineStart } = (await import(pathToFileURL(join(ROOT, 'scripts', 'engine-args.mjs')).href)) as {
  engineStart: (env: Record<string, string | undefined>, envText: string) => Start;
};
const flags = JSON.parse(readFileSync(join(ROOT, 'scripts', 'engine-flags.json'), 'utf8')) as {
  nodeArgs: string[];
  env: Record<string, string>;
  embedded: { nodeArgs: string[]; env: Record<string, string> };
};

test('embedded mode (no DATABASE_URL anywhere) gets the embedded settings too', () => {
  const s = engineStart({}, '# DATABASE_URL=postgres://commented/out\nPORT=8080\n');
  assert.equal(s.embedded, true);
  assert.deepEqual(s.nodeArgs, [...flags.nodeArgs, ...flags.embedded.nodeArgs]);
  for (const [k, v] of Object.entries(flags.embedded.env)) assert.equal(s.env[k], v);
});

test('full mode, from the environment or from .env, runs without them', () => {
  for (const [env, text] of [
    [{ DATABASE_URL: 'postgres://h/db' }, ''],
    [{}, 'DATABASE_URL=postgres://h/db\n'],
    [{}, 'export DATABASE_URL="postgres://h/db"\n'],
  ] as const) {
    const s = engineStart({ ...env }, text);
    assert.equal(s.embedded, false, JSON.stringify([env, text]));
    assert.deepEqual(s.nodeArgs, flags.nodeArgs);
    for (const k of Object.keys(flags.embedded.env)) assert.equal(s.env[k], undefined);
  }
  assert.equal(engineStart({}, 'DATABASE_URL=\n').embedded, true, 'an empty value is no database');
});

test('variables already set win over the defaults', () => {
  assert.equal(engineStart({ MALLOC_ARENA_MAX: '8' }, '').env['MALLOC_ARENA_MAX'], '8');
});
