import { readFileSync } from 'node:fs';

/**
 * An offline stand-in for `npm audit`: a small list of known advisories kept in the repository
 * (security/advisories.json) checked against the exact versions in package-lock.json.
 */

export interface Advisory {
  package: string;
  vulnerable: string;
  fixed?: string;
  ids: string[];
}

export interface Finding {
  package: string;
  version: string;
  path: string;
  ids: string[];
  vulnerable: string;
}

type Triple = [number, number, number];

function parse(version: string): Triple {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version.trim());
  if (!m) throw new Error(`not a version: ${version}`);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

function compare(a: Triple, b: Triple): number {
  return a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
}

/** Whether `version` is in `range` ("<10.1.3", ">=1.0.0 <1.2.5 || >=2.0.0 <2.0.3", "=1.2.3"). */
export function inRange(version: string, range: string): boolean {
  const v = parse(version);
  return range.split('||').some((alt) =>
    alt
      .trim()
      .split(/\s+/)
      .filter((c) => c !== '')
      .every((c) => {
        const m = /^(<=|>=|<|>|=)?\s*(.+)$/.exec(c);
        if (!m) throw new Error(`bad comparator ${c}`);
        const d = compare(v, parse(m[2] as string));
        switch (m[1] ?? '=') {
          case '<':
            return d < 0;
          case '<=':
            return d <= 0;
          case '>':
            return d > 0;
          case '>=':
            return d >= 0;
          default:
            return d === 0;
        }
      }),
  );
}

/** Every package in a lockfile (v2/v3 `packages` map) whose version falls in a listed range. */
export function findVulnerable(lock: { packages?: Record<string, { version?: string }> }, advisories: Advisory[]): Finding[] {
  const out: Finding[] = [];
  for (const [path, entry] of Object.entries(lock.packages ?? {})) {
    const i = path.lastIndexOf('node_modules/');
    if (i < 0 || entry.version === undefined) continue;
    const name = path.slice(i + 'node_modules/'.length);
    for (const a of advisories) {
      if (a.package === name && inRange(entry.version, a.vulnerable)) {
        out.push({ package: name, version: entry.version, path, ids: a.ids, vulnerable: a.vulnerable });
      }
    }
  }
  return out;
}

export function readJson<T>(file: string | URL): T {
  return JSON.parse(readFileSync(file, 'utf8')) as T;
}
