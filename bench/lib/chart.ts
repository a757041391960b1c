import type { ScenarioReport } from './common.js';
import { fmt } from './stats.js';

/**
 * A self-contained SVG (no scripts, fonts or CDN) of a result file: per scenario, horizontal bar
 * panels for throughput beside the ceiling, latency percentiles, database catch-up and memory,
 * with issue 6's targets drawn as dashed lines where they apply.
 */

interface Bar {
  name: string;
  value: number;
  /** Shown after the value, e.g. "(ratio 0.42)". */
  note?: string;
}

interface Group {
  label: string;
  bars: Bar[];
}

interface Panel {
  title: string;
  unit: string;
  groups: Group[];
  target?: { value: number; label: string };
}

const COLORS: Record<string, string> = {
  engine: '#2563eb',
  batcher: '#60a5fa',
  ceiling: '#9ca3af',
  generator: '#2563eb',
  autocannon: '#f59e0b',
  p50: '#93c5fd',
  p90: '#3b82f6',
  p99: '#1d4ed8',
  max: '#1e3a8a',
  'catch-up': '#059669',
  'after start': '#a78bfa',
  'after load': '#7c3aed',
  'peak': '#4c1d95',
  'bare Fastify': '#9ca3af',
  startup: '#0891b2',
};

type Loose = Record<string, unknown>;

function num(o: unknown, path: string): number | null {
  let cur: unknown = o;
  for (const k of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return null;
    cur = (cur as Loose)[k];
  }
  return typeof cur === 'number' && Number.isFinite(cur) ? cur : null;
}

function bar(name: string, value: number | null, note?: string): Bar[] {
  return value === null ? [] : [{ name, value, ...(note ? { note } : {}) }];
}

function panelsFor(report: ScenarioReport<unknown>): Panel[] {
  const vs = report.variants.map((v) => ({ label: v.variant, m: v.median as Loose }));
  const panels: Panel[] = [];
  if (report.scenario === 'memory') {
    panels.push({
      title: 'Engine memory (RSS)',
      unit: 'MB',
      groups: vs.map(({ label, m }) => ({
        label,
        bars: [
          ...bar('after start', num(m, 'rssAfterStartMb')),
          ...bar('after load', num(m, 'rssAfterLoadMb')),
          ...bar('peak', num(m, 'peakRssMb')),
          ...bar('bare Fastify', num(m, 'ceiling.rssMb')),
        ],
      })),
    });
    panels.push({
      title: 'Startup time (spawn to first /health reply)',
      unit: 'ms',
      groups: vs.map(({ label, m }) => ({ label, bars: [...bar('startup', num(m, 'startupMs')), ...bar('bare Fastify', num(m, 'ceiling.startupMs'))] })),
    });
    return panels;
  }
  if (report.scenario === 'ceiling') {
    panels.push({
      title: 'Bare Fastify throughput: this harness vs autocannon',
      unit: 'req/s',
      groups: vs.map(({ label, m }) => ({
        label,
        bars: [...bar('generator', num(m, 'generator.reqPerSec')), ...bar('autocannon', num(m, 'autocannon.reqPerSec'))],
      })),
    });
    panels.push({
      title: 'Bare Fastify latency (this harness)',
      unit: 'ms',
      groups: vs.map(({ label, m }) => ({
        label,
        bars: ['p50', 'p90', 'p99'].flatMap((p) => bar(p, num(m, `generator.latencyMs.${p}`))),
      })),
    });
    return panels;
  }
  panels.push({
    title: 'Throughput beside a bare Fastify server (same generator, same connections)',
    unit: 'req/s',
    groups: vs.map(({ label, m }) => ({
      label,
      bars: [
        ...bar(
          'engine',
          num(m, 'load.reqPerSec'),
          num(m, 'ratioToCeiling') !== null
            ? `(${fmt((num(m, 'ratioToCeiling') as number) * 100)}% of the ceiling of its own run${report.options.runs > 1 ? ', median' : ''})`
            : undefined,
        ),
        ...bar('ceiling', num(m, 'ceiling.reqPerSec')),
      ],
    })),
    ...(report.scenario === 'seed' ? { target: { value: 8000, label: 'target 8,000 req/s' } } : {}),
  });
  panels.push({
    title: 'Latency percentiles',
    unit: 'ms',
    groups: vs.map(({ label, m }) => ({
      label,
      bars: ['p50', 'p90', 'p99', 'max'].flatMap((p) => bar(p, num(m, `load.latencyMs.${p}`))),
    })),
    ...(report.scenario === 'steady' ? { target: { value: 20, label: 'p99 target 20 ms' } } : {}),
  });
  const cpu = vs.filter(({ m }) => num(m, 'cpuDuringLoad.engineCpuUsPerRequest') !== null);
  if (cpu.length > 0) {
    panels.push({
      title: 'CPU time per request (steadier than req/s on a busy machine)',
      unit: 'µs',
      groups: cpu.map(({ label, m }) => ({
        label,
        bars: [
          ...bar('engine', num(m, 'cpuDuringLoad.engineCpuUsPerRequest')),
          ...bar('batcher', num(m, 'cpuDuringLoad.batcherCpuUsPerRequest')),
          ...bar('ceiling', num(m, 'ceiling.cpuUsPerRequest')),
        ],
      })),
    });
  }
  const catchUps = vs.filter(({ m }) => num(m, 'catchUp.ms') !== null);
  if (catchUps.length > 0) {
    panels.push({
      title: 'Database caught up, after the last reply (embedded: 0 by construction)',
      unit: 'ms',
      groups: catchUps.map(({ label, m }) => ({ label, bars: bar('catch-up', num(m, 'catchUp.ms')) })),
      ...(report.scenario === 'seed' ? { target: { value: 1000, label: 'target 1 s' } } : {}),
    });
  }
  return panels;
}

/** Splits text into lines of at most `max` characters, at spaces where possible. */
function wrap(text: string, max: number): string[] {
  const lines: string[] = [];
  let cur = '';
  for (const word of text.split(' ')) {
    if (cur && cur.length + 1 + word.length > max) {
      lines.push(cur);
      cur = word;
    } else cur = cur ? `${cur} ${word}` : word;
  }
  if (cur) lines.push(cur);
  return lines.flatMap((l) => (l.length > max ? (l.match(new RegExp(`.{1,${max}}`, 'g')) ?? [l]) : [l]));
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

const WIDTH = 960;
const LABEL_W = 230;
const BAR_H = 16;
const GAP = 4;
const VALUE_W = 230;

export function renderChart(reports: ScenarioReport<unknown>[]): string {
  const parts: string[] = [];
  let y = 20;
  const first = reports[0];
  const title = reports.length === 1 && first ? `${first.scenario} (${first.mode})` : `benchmark (${first?.mode ?? ''})`;
  parts.push(`<text x="10" y="${y}" font-size="18" font-weight="bold">${esc(`Course-enrollment engine — ${title}`)}</text>`);
  y += 18;
  if (first) {
    const m = first.machine;
    parts.push(
      `<text x="10" y="${y}" font-size="12" fill="#555">${esc(`${first.startedAt} · ${m.cpus} CPUs (${m.cpuModel}) · ${m.memoryGb} GB · Node ${m.node} · load average at start ${m.loadAverage.join(' ')} · runs per figure: ${first.options.runs} (median)`)}</text>`,
    );
    y += 14;
  }
  for (const report of reports) {
    y += 28;
    parts.push(`<text x="10" y="${y}" font-size="16" font-weight="bold">${esc(`${report.scenario} (${report.mode})`)}</text>`);
    y += 6;
    for (const panel of panelsFor(report)) {
      y += 20;
      parts.push(`<text x="10" y="${y}" font-size="13" font-weight="bold">${esc(`${panel.title} [${panel.unit}]`)}</text>`);
      y += 8;
      const max = Math.max(1e-9, panel.target?.value ?? 0, ...panel.groups.flatMap((g) => g.bars.map((b) => b.value)));
      const scale = (WIDTH - LABEL_W - VALUE_W) / max;
      const top = y;
      for (const g of panel.groups) {
        if (g.bars.length === 0) continue;
        const groupTop = y;
        wrap(g.label, 34).forEach((line, i) => {
          parts.push(`<text x="10" y="${groupTop + BAR_H - 3 + i * 14}" font-size="12">${esc(line)}</text>`);
        });
        const labelBottom = groupTop + wrap(g.label, 34).length * 14;
        for (const b of g.bars) {
          const w = Math.max(1, b.value * scale);
          const color = COLORS[b.name] ?? '#64748b';
          parts.push(`<rect x="${LABEL_W}" y="${y}" width="${w.toFixed(1)}" height="${BAR_H}" fill="${color}"/>`);
          const digits = b.value < 10 ? 2 : b.value < 100 ? 1 : 0;
          const text = `${b.name}: ${fmt(b.value, digits)} ${panel.unit}${b.note ? ` ${b.note}` : ''}`;
          parts.push(`<text x="${(LABEL_W + w + 5).toFixed(1)}" y="${y + BAR_H - 4}" font-size="11">${esc(text)}</text>`);
          y += BAR_H + GAP;
        }
        y = Math.max(y, labelBottom) + 6;
      }
      if (panel.target) {
        const x = LABEL_W + panel.target.value * scale;
        parts.push(`<line x1="${x.toFixed(1)}" y1="${top - 4}" x2="${x.toFixed(1)}" y2="${y}" stroke="#dc2626" stroke-dasharray="4 3"/>`);
        parts.push(`<text x="${(x + 3).toFixed(1)}" y="${y + 10}" font-size="10" fill="#dc2626">${esc(panel.target.label)}</text>`);
        y += 12;
      }
    }
    const targets = report.variants.flatMap((v) => v.targets.map((t) => ({ v: v.variant, t })));
    if (targets.length > 0) {
      y += 18;
      parts.push(`<text x="10" y="${y}" font-size="13" font-weight="bold">Targets (issue 6)</text>`);
      for (const { v, t } of targets) {
        const met = t.met === null ? '–' : t.met ? '✓' : '✗';
        const color = t.met === null ? '#555' : t.met ? '#059669' : '#dc2626';
        wrap(`${met} ${v}: ${t.name}: ${t.actual} (target ${t.target})`, 150).forEach((line, i) => {
          y += i === 0 ? 15 : 13;
          parts.push(`<text x="${i === 0 ? 10 : 22}" y="${y}" font-size="11" fill="${color}">${esc(line)}</text>`);
        });
      }
    }
  }
  y += 20;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${y}" viewBox="0 0 ${WIDTH} ${y}" font-family="system-ui, sans-serif">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
