/**
 * The start-up banner for a person at a terminal: where to go (API, docs, admin page, metrics),
 * which mode, and how to log in to the demo. Printed only when stdout is a terminal; logs stay
 * JSON lines either way, so a log shipper reading a pipe never sees it.
 */
export interface BannerInfo {
  base: string;
  mode: 'embedded' | 'full';
  startupMs: number;
  /** `memory` (one instance) or `redis` with whether it answers now. */
  coordination: { kind: 'memory' | 'redis'; connected: boolean };
  /** The Prometheus listener's URL, when METRICS_PORT is set. */
  metricsUrl: string | null;
  /** Demo logins when the demo data set is live. */
  demo: { student: { user: number; password: string }; staff: { user: number; password: string } } | null;
  logLevel: string;
}

export function formatBanner(i: BannerInfo): string {
  const lines = [
    '',
    `  Course-enrollment engine ready (${i.mode} mode, started in ${(i.startupMs / 1000).toFixed(1)} s)`,
    '',
    `  API          ${i.base}`,
    `  API docs     ${i.base}/docs`,
    `  Admin page   ${i.base}/admin   (staff)`,
    `  Metrics      ${i.base}/metrics (staff token)${i.metricsUrl ? `, ${i.metricsUrl} (Prometheus)` : ''}`,
    `  Redis        ${
      i.coordination.kind === 'memory'
        ? i.mode === 'embedded'
          ? 'not configured (one process): login throttling in memory, revocations kept in the data directory'
          : 'not configured: login throttling and revocations hold in this process only'
        : i.coordination.connected
          ? 'connected: throttling and revocations shared by every instance'
          : 'UNREACHABLE: rate limits fail open, revocations local until it is back'
    }`,
  ];
  if (i.demo) {
    lines.push(
      '',
      '  Demo logins (POST /login):',
      `    student  {"user": ${i.demo.student.user}, "password": "${i.demo.student.password}", "staff": false}`,
      `    staff    {"user": ${i.demo.staff.user}, "password": "${i.demo.staff.password}", "staff": true}`,
    );
  }
  lines.push('', `  Stop with \`npm stop\` (or Ctrl+C when it runs in the foreground). Logs follow as JSON lines (LOG_LEVEL=${i.logLevel}).`, '', '');
  return lines.join('\n');
}
