import { existsSync, readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { REPO_ROOT } from './procs.js';
import { round } from './stats.js';

/**
 * Reads a V8 .cpuprofile (written by `node --cpu-prof` when the child exits) and sums self time by
 * function. Self time of a sample is its time delta; samples can be limited to a window (the load
 * phase) given in milliseconds after the start of the profile. The profile's clock is the child's
 * own; its start is within a few milliseconds of the spawn (the profiler starts while node boots),
 * a better anchor than its end, which comes before the slow write of the file.
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  function: string;
  location: string;
  selfMs: number;
  selfPct: number;
}

export interface ProfileSummary {
  file: string;
  /** Milliseconds of samples counted (the load window, or the whole run). */
  sampledMs: number;
  window: 'load' | 'whole run';
  top: ProfileEntry[];
  /** Self time by origin: a package, a folder of src/, node internals, V8 (GC, idle, program). */
  byOrigin: { origin: string; selfMs: number; selfPct: number }[];
}

/** Where a function comes from, for the by-origin summary. */
function origin(cf: CallFrame, loc: string): string {
  if (cf.functionName.startsWith('(') && !cf.url) return cf.functionName; // (garbage collector), (idle), (program)
  if (!cf.url) return 'native (V8 builtins, C++ bindings)';
  if (cf.url.startsWith('node:')) return 'node: internals';
  const pkg = /^~(@[^/]+\/[^/]+|[^/]+)/.exec(loc);
  if (pkg) return pkg[1] as string;
  const src = /(?:^|\/)src\/([^/:]+)/.exec(loc);
  if (src) return `src/${src[1]}`;
  return loc.split(':')[0] ?? 'other';
}

function location(cf: CallFrame): string {
  if (!cf.url) return '';
  let url = cf.url.replace(/^file:\/\//, '');
  if (url.startsWith('/')) {
    // A build in a temporary directory (--runner build) shows as dist/src/..., like ./dist.
    const built = url.indexOf('/dist/src/');
    url = built >= 0 && !url.startsWith(REPO_ROOT) ? url.slice(built + 1) : relative(REPO_ROOT, url);
    url = url.replace(/^(?:\.\.\/)*node_modules\//, '~');
  }
  return `${url}:${cf.lineNumber + 1}`;
}

/** `window`: [fromMsAfterStart, toMsAfterStart]; samples outside are skipped. Null: every sample. */
export function summarizeProfile(file: string, window: [number, number] | null, topN = 15): ProfileSummary | null {
  if (!existsSync(file)) return null;
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const totals = new Map<string, { cf: CallFrame; us: number }>();
  const from = window ? p.startTime + window[0] * 1000 : -Infinity;
  const to = window ? p.startTime + window[1] * 1000 : Infinity;
  let t = p.startTime;
  let sampled = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    t += dt;
    if (t < from || t > to) continue;
    const node = byId.get(p.samples[i] as number);
    if (!node) continue;
    // The delta before a sample is the time it stood for.
    const cf = node.callFrame;
    const key = `${cf.functionName}|${cf.url}|${cf.lineNumber}|${cf.columnNumber}`;
    const e = totals.get(key);
    if (e) e.us += dt;
    else totals.set(key, { cf, us: dt });
    sampled += dt;
  }
  const origins = new Map<string, number>();
  for (const e of totals.values()) {
    const o = origin(e.cf, location(e.cf));
    origins.set(o, (origins.get(o) ?? 0) + e.us);
  }
  const byOrigin = [...origins]
    .sort((a, b) => b[1] - a[1])
    .map(([o, us]) => ({ origin: o, selfMs: round(us / 1000, 1), selfPct: sampled > 0 ? round((100 * us) / sampled, 1) : 0 }));
  const top = [...totals.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, topN)
    .map((e) => ({
      function: e.cf.functionName || '(anonymous)',
      location: location(e.cf),
      selfMs: round(e.us / 1000, 1),
      selfPct: sampled > 0 ? round((100 * e.us) / sampled, 1) : 0,
    }));
  return { file: relative(REPO_ROOT, file), sampledMs: round(sampled / 1000, 0), window: window ? 'load' : 'whole run', top, byOrigin };
}

export function formatProfile(title: string, s: ProfileSummary): string {
  const lines = [`${title}: top ${s.top.length} functions by self time (${s.window}, ${s.sampledMs} ms sampled; ${s.file})`];
  for (const e of s.top) {
    lines.push(`  ${e.selfPct.toFixed(1).padStart(5)}%  ${e.selfMs.toFixed(1).padStart(8)} ms  ${e.function}  ${e.location}`);
  }
  lines.push(`  by origin: ${s.byOrigin.slice(0, 12).map((o) => `${o.origin} ${o.selfPct}%`).join(', ')}`);
  return lines.join('\n');
}
