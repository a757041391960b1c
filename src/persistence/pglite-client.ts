import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { createDataDirFromTemplate, SHIPPED_TEMPLATE, type TemplatePaths } from './pglite-template.js';
import type { SqlClient, SqlExecutor } from './sql-client.js';

/**
 * PostgreSQL settings PGlite starts with, beside its own defaults. WebAssembly memory only ever
 * grows, so whatever the buffer pool or one query's sort or index build touches once stays
 * resident for the life of the process:
 * - `shared_buffers` 16 MB instead of 128 MB (the embedded data set is a few MB; the OS page
 *   cache still holds the files, so a miss costs a copy, not a disk read);
 * - `work_mem` 2 MB and `maintenance_work_mem` 16 MB: a larger sort or index build spills to
 *   temporary files instead of raising the memory floor for good.
 */
export const PGLITE_SETTINGS: Readonly<Record<string, string>> = {
  shared_buffers: '16MB',
  work_mem: '2MB',
  maintenance_work_mem: '16MB',
};

/** Options of {@link createPgliteClient}. */
export interface PgliteOptions {
  /** Overrides `shared_buffers` (MB); PGLITE_SHARED_BUFFERS_MB, to measure or to trade memory for a larger data set. */
  sharedBuffersMb?: number;
  /**
   * The ready-made empty data directory a new directory is created from (default: the one shipped
   * beside pglite-template.ts); null always runs initdb (in a child). Tests point it elsewhere.
   */
  template?: TemplatePaths | null;
  /** Told how the data directory came to be, once, before PGlite opens it (the store logs it). */
  onDataDir?: (origin: DataDirOrigin) => void;
}

/** How {@link prepareDataDir} found or made the data directory. */
export type DataDirOrigin =
  | { from: 'existing' }
  | { from: 'template'; pglite: string; pgVersion: string }
  | { from: 'initdb'; reason: string };

const startParams = (opts: PgliteOptions = {}): string[] => [
  ...PGlite.defaultStartParams,
  ...Object.entries({ ...PGLITE_SETTINGS, ...(opts.sharedBuffersMb ? { shared_buffers: `${opts.sharedBuffersMb}MB` } : {}) }).flatMap(([k, v]) => [
    '-c',
    `${k}=${v}`,
  ]),
];

/**
 * This process's module loader flags (`--import tsx` when running from source), so a child process
 * or worker thread can load this folder's sibling modules the same way; with `liftoff`, also the
 * WebAssembly compiler setting (a process-wide V8 flag, so only for a child: a worker thread shares
 * it anyway and may not be given V8 flags).
 */
export function loaderExecArgv(liftoff: boolean): string[] {
  const out: string[] = [];
  for (let i = 0; i < process.execArgv.length; i++) {
    const a = process.execArgv[i] as string;
    if (/^--(import|require|loader|experimental-loader)=/.test(a)) out.push(a);
    else if (/^--(import|require|loader|experimental-loader)$/.test(a) || a === '-r') out.push(a, process.execArgv[++i] as string);
    // The same WebAssembly compiler setting (see docs/memory.md): faster and smaller for initdb too.
    else if (liftoff && a === '--liftoff-only') out.push(a);
  }
  return out;
}

/**
 * Creates a new PGlite data directory in a short-lived child process. PGlite's initdb runs a
 * second PostgreSQL instance and the separate initdb WebAssembly program and copies the new
 * directory between them: several hundred MB that a long-running process would keep (WebAssembly
 * memory never shrinks, and the rest waits for a full GC). In a child, all of it ends with the
 * child. The child is this module's sibling `pglite-initdb` run by the same node with the same
 * loader flags (`--import tsx` when running from source) and `--liftoff-only` when set.
 * Its peak (about 670 MB with `--liftoff-only`, measured) is the child's alone and ends with it.
 */
export async function initDataDirInChild(dataDir: string): Promise<void> {
  const self = fileURLToPath(import.meta.url);
  const script = join(self, '..', `pglite-initdb${self.endsWith('.ts') ? '.ts' : '.js'}`);
  const child = spawn(process.execPath, [...loaderExecArgv(true), script, dataDir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 8000) stderr += d.toString('utf8');
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (c, signal) => resolve(c ?? (signal ? -1 : null)));
  });
  if (code !== 0) throw new Error(`creating the PGlite data directory ${dataDir} failed (exit ${code}): ${stderr.trim()}`);
}

/**
 * Makes sure `dataDir` holds a PGlite data directory: an existing one is left alone; a new one is
 * unpacked from the shipped template (pglite-template.ts: no initdb, no second process) and, when the template cannot be used (made by another PGlite version, damaged, missing,
 * or the directory is not empty), created by initdb in a child process as before. A template that
 * fails leaves nothing behind, so the fallback starts from the same state.
 */
export async function prepareDataDir(dataDir: string, template: TemplatePaths | null = SHIPPED_TEMPLATE): Promise<DataDirOrigin> {
  if (existsSync(join(dataDir, 'PG_VERSION'))) return { from: 'existing' };
  let reason = 'no template';
  if (template) {
    try {
      const m = await createDataDirFromTemplate(dataDir, template);
      return { from: 'template', pglite: m.pglite, pgVersion: m.pgVersion };
    } catch (err) {
      reason = (err as Error).message;
    }
  }
  mkdirSync(dataDir, { recursive: true });
  await initDataDirInChild(dataDir);
  return { from: 'initdb', reason };
}

/** Creates (initdb) and closes a PGlite data directory in this process; what the child runs. */
export async function initDataDir(dataDir: string): Promise<void> {
  mkdirSync(dataDir, { recursive: true });
  const db = await PGlite.create(dataDir, { startParams: startParams() });
  await db.close();
}

/**
 * PGlite (PostgreSQL compiled to WebAssembly, in this process) behind the SqlClient interface.
 * `dataDir` null keeps everything in memory (tests); otherwise files survive restarts, and a new
 * directory is created first, from the shipped template or by initdb in a child (see
 * {@link prepareDataDir}).
 */
export async function createPgliteClient(dataDir: string | null, opts: PgliteOptions = {}): Promise<SqlClient> {
  if (dataDir) {
    const origin = await prepareDataDir(dataDir, opts.template === undefined ? SHIPPED_TEMPLATE : opts.template);
    opts.onDataDir?.(origin);
  }
  const db = dataDir ? await PGlite.create(dataDir, { startParams: startParams(opts) }) : await PGlite.create({ startParams: startParams(opts) });
  const wrap = (q: Pick<PGlite, 'query'>): SqlExecutor => ({
    async query<R>(text: string, params?: unknown[]) {
      const r = await q.query<R>(text, params);
      return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
    },
  });
  const base = wrap(db);
  return {
    query: base.query,
    transaction: (fn) => db.transaction((tx) => fn(wrap(tx))),
    exec: async (sql) => {
      await db.exec(sql);
    },
    close: () => db.close(),
  };
}
