import type { ScenarioReport } from './common.js';
import { note } from './progress.js';

/** The summary printed after each scenario: issue 6's targets beside the measured figures. */
export function printReport(report: ScenarioReport<unknown>): void {
  const lines: string[] = [];
  const runs = report.options.runs;
  lines.push('');
  lines.push(`== ${report.scenario} (${report.mode}) — ${runs > 1 ? `median of ${runs} runs` : '1 run'}; ${report.machine.cpus} CPUs, ${report.machine.cpuModel}, Node ${report.machine.node}, load average at start ${report.machine.loadAverage.join(' ')} ==`);
  for (const n of report.notes) lines.push(`   ${n}`);
  for (const v of report.variants) {
    lines.push(`-- ${v.variant}`);
    if (v.targets.length === 0) continue;
    const w1 = Math.max(...v.targets.map((t) => t.name.length), 6);
    const w2 = Math.max(...v.targets.map((t) => t.actual.length), 8);
    const w3 = Math.max(...v.targets.map((t) => t.target.length), 6);
    lines.push(`   ${'figure'.padEnd(w1)}  ${'measured'.padEnd(w2)}  ${'target'.padEnd(w3)}  met`);
    for (const t of v.targets) {
      const met = t.met === null ? '-' : t.met ? 'yes' : 'NO';
      lines.push(`   ${t.name.padEnd(w1)}  ${t.actual.padEnd(w2)}  ${t.target.padEnd(w3)}  ${met}`);
    }
  }
  const failed = report.checks.filter((c) => !c.ok);
  lines.push(`   harness checks: ${report.checks.length - failed.length} passed, ${failed.length} failed`);
  for (const c of failed) lines.push(`   FAILED ${c.name}: ${c.detail.split('\n')[0]}`);
  note(lines.join('\n'));
}
