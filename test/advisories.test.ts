import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { findVulnerable, inRange, readJson, type Advisory } from './support/advisories.js';

/**
 * Issue 11: no installed dependency may fall in a range listed in security/advisories.json
 * (`npm audit` cannot reach its endpoint from the build machines). Run alone with
 * `npm run audit:offline`.
 */

const ROOT = new URL('../', import.meta.url);
const { advisories } = readJson<{ advisories: Advisory[] }>(new URL('security/advisories.json', ROOT));
const lock = readJson<{ lockfileVersion: number; packages: Record<string, { version?: string }> }>(new URL('package-lock.json', ROOT));

describe('known advisories (security/advisories.json)', () => {
  it('the advisory file is well formed', () => {
    assert.ok(advisories.length > 0);
    for (const a of advisories) {
      assert.equal(typeof a.package, 'string');
      assert.ok(a.ids.length > 0 && a.ids.every((id) => /^(GHSA(-[23456789cfghjmpqrvwx]{4}){3}|CVE-\d{4}-\d+)$/.test(id)), a.package);
      inRange('0.0.0', a.vulnerable); // parses
    }
  });

  it('ranges are read as npm reads them', () => {
    assert.equal(inRange('9.3.0', '<10.1.3'), true);
    assert.equal(inRange('10.1.2', '<10.1.3'), true);
    assert.equal(inRange('10.1.3', '<10.1.3'), false);
    assert.equal(inRange('10.1.11', '<10.1.3'), false);
    assert.equal(inRange('2.0.1', '>=1.0.0 <1.2.5 || >=2.0.0 <2.0.3'), true);
    assert.equal(inRange('1.5.0', '>=1.0.0 <1.2.5 || >=2.0.0 <2.0.3'), false);
    assert.equal(inRange('1.2.3', '=1.2.3'), true);
  });

  it('finds a vulnerable package anywhere in a lockfile, nested ones included', () => {
    const synthetic = {
      packages: {
        '': {},
        'node_modules/@fastify/static': { version: '10.1.11' },
        'node_modules/@fastify/swagger-ui/node_modules/@fastify/static': { version: '9.3.0' },
      },
    };
    const found = findVulnerable(synthetic, advisories);
    assert.deepEqual(found.map((f) => [f.path, f.version]), [['node_modules/@fastify/swagger-ui/node_modules/@fastify/static', '9.3.0']]);
  });

  it('package-lock.json installs no package in a listed range', () => {
    assert.ok(lock.lockfileVersion >= 2, 'a lockfile with the packages map');
    const found = findVulnerable(lock, advisories);
    assert.deepEqual(
      found.map((f) => `${f.path}@${f.version} is in ${f.vulnerable} (${f.ids.join(', ')})`),
      [],
      'upgrade (or add an npm override) past the listed advisories',
    );
  });

  it('node_modules matches: the installed copy is past the advisories too', async () => {
    const { createRequire } = await import('node:module');
    const require = createRequire(new URL('package.json', ROOT));
    for (const a of advisories) {
      let version: string;
      try {
        version = (require(`${a.package}/package.json`) as { version: string }).version;
      } catch {
        continue; // not installed at the top level (checked through the lockfile above)
      }
      assert.equal(inRange(version, a.vulnerable), false, `${a.package}@${version} installed`);
    }
  });
});
