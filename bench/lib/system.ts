import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../../src/config.js';
import { hashPassword } from '../../src/password.js';
import amqp from 'amqplib';
import pg from 'pg';
import { deliveryQueueNames } from '../../src/persistence/delivery-queue.js';
import { migrate } from '../../src/persistence/migrations.js';
import { createPgClient } from '../../src/persistence/pg-client.js';
import { isInterrupted, track, type Resource } from './cleanup.js';
import { Child, engineFlags, entryArgs, freePort, readCpuSeconds, readMachineCpu, readMemory, REPO_ROOT, waitForHttp, type MachineCpu, type MemoryReading, type Runner } from './procs.js';
import { BENCH_PASSWORD, countEnrollments, seedDatabase, WINDOW_MINUTES, type Ledger, type RowCounts, type SeedReport, type SeedSpec } from './seed.js';

/**
 * One system under test, set up from nothing and torn down completely: a fresh database (full:
 * CREATE DATABASE on the shared PostgreSQL; embedded: a temporary data directory), a fresh AMQP
 * prefix, the data set seeded straight into the database, then the engine (and in full mode
 * optionally the batcher) started as child processes so their memory is measured on their own.
 */

export type Mode = 'full' | 'embedded';
export type BatcherPlacement = 'in-process' | 'separate';

export const PG_ADMIN_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const AMQP_URL = process.env.BENCH_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
export const PROFILE_DIR = join(REPO_ROOT, 'bench/results/profiles');

const execFileP = promisify(execFile);

/** Engine settings the harness controls; inherited values would make runs differ between shells. */
const CONTROLLED_ENV = [
  'HOST', 'PORT', 'JWT_SECRET', 'TOKEN_TTL_MINUTES', 'DATABASE_URL', 'RABBITMQ_URL', 'REDIS_URL', 'AMQP_PREFIX',
  'ENROLLMENT_WINDOW_MINUTES', 'LOG_LEVEL', 'LOG_REQUESTS', 'DATA_DIR', 'DEMO_DATA', 'BATCH_MAX_EVENTS',
  'IN_PROCESS_BATCHER', 'NODE_OPTIONS', 'SESSION_MAX_HOURS', 'MAX_CONCURRENT_PASSWORD_CHECKS', 'ADMIN_STAFF_IDS',
  'REDIS_PREFIX', 'STUDENT_WRITE_LIMIT', 'STUDENT_WRITE_WINDOW_SECONDS', 'LOGIN_FAILURES_PER_USER', 'LOGIN_FAILURES_PER_ADDRESS',
  'LOGIN_FAILURES_PER_USER_ALL_ADDRESSES', 'LOGIN_THROTTLE_WINDOW_SECONDS', 'TRUST_PROXY', 'METRICS_PORT', 'METRICS_HOST',
];

let cachedHash: Promise<string> | null = null;
/** One bcrypt hash (cost 4) for every benchmark user: a thousand hashes would take longer than the run. */
export function benchPasswordHash(): Promise<string> {
  cachedHash ??= hashPassword(BENCH_PASSWORD, 4);
  return cachedHash;
}

export interface SystemOptions {
  mode: Mode;
  batcher: BatcherPlacement;
  spec: SeedSpec;
  runner: Runner;
  /** Write CPU profiles of the children under bench/results/profiles with this name prefix. */
  cpuProfile: string | null;
  /** Extra engine environment (--env KEY=VALUE). */
  extraEnv: Record<string, string>;
  /** Start the engine with V8's --trace-opt --trace-deopt and keep its compile records (see {@link Child.compileBetween}). */
  traceCompile?: boolean;
}

export interface Profiles {
  engine: string | null;
  batcher: string | null;
  /** performance.now() when each child was spawned: where its profile starts. */
  engineStartedAt: number;
  batcherStartedAt: number;
}

export class System {
  readonly host = '127.0.0.1';
  port = 0;
  engine: Child | null = null;
  batcherChild: Child | null = null;
  /** More engines on the same database and stream (the `cluster` scenario): each with its own port. */
  readonly extraEngines: { child: Child; port: number }[] = [];
  /** Spawn of the engine to its first 200 on /health. */
  startupMs = 0;
  seed: SeedReport | null = null;
  readonly jwtSecret = randomBytes(32).toString('hex');
  readonly prefix = `bench_${process.pid}_${randomBytes(4).toString('hex')}`;
  private dbUrl: string | null = null;
  private dataDir: string | null = null;
  private pool: pg.Pool | null = null;
  private readonly resources: Resource[] = [];
  private profiles: Profiles = { engine: null, batcher: null, engineStartedAt: NaN, batcherStartedAt: NaN };
  /** Embedded mode: the rows read from the data directory after the engine stopped. */
  finalCounts: RowCounts | null = null;

  constructor(readonly opts: SystemOptions) {}

  get baseUrl(): string {
    return `http://${this.host}:${this.port}`;
  }

  get label(): string {
    return this.opts.mode === 'full' ? `full, batcher ${this.opts.batcher}` : 'embedded';
  }

  /** Creates the database, seeds it and starts the children; on failure everything made is undone. */
  async start(): Promise<void> {
    if (isInterrupted()) throw new Error('interrupted');
    try {
      const passwordHash = await benchPasswordHash();
      if (this.opts.mode === 'full') await this.prepareFull(passwordHash);
      else await this.prepareEmbedded(passwordHash);
      this.port = await freePort();
      if (this.opts.mode === 'full' && this.opts.batcher === 'separate') this.startBatcher();
      // Started as npm start starts it: the V8 flags and environment defaults of scripts/engine-flags.json.
      const flags = engineFlags(this.opts.mode);
      const trace = this.opts.traceCompile ? ['--trace-opt', '--trace-deopt'] : [];
      this.engine = new Child(
        'engine',
        [...flags.nodeArgs, ...trace, ...this.profileArgs('engine'), ...entryArgs(this.opts.runner, 'src/main.ts')],
        { ...flags.env, ...this.engineEnv() },
        { recordCompiles: this.opts.traceCompile === true },
      );
      this.startupMs = await waitForHttp(this.engine, `${this.baseUrl}/health`, 300_000);
    } catch (err) {
      await this.stop().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Starts one more engine on the same database, stream and secret, on its own port (issue 14: it
   * forwards writes to the lease owner and reads from its read copy); resolves once it is ready.
   */
  async startExtraEngine(): Promise<{ child: Child; port: number }> {
    const port = await freePort();
    const env = { ...this.engineEnv(), PORT: String(port), ADVERTISE_URL: `http://${this.host}:${port}` };
    const child = new Child(`engine-${this.extraEngines.length + 2}`, entryArgs(this.opts.runner, 'src/main.ts'), env);
    this.extraEngines.push({ child, port });
    await waitForHttp(child, `http://${this.host}:${port}/ready`, 300_000);
    return { child, port };
  }

  private profileArgs(who: 'engine' | 'batcher'): string[] {
    if (!this.opts.cpuProfile) return [];
    mkdirSync(PROFILE_DIR, { recursive: true });
    const name = `${this.opts.cpuProfile}-${who}.cpuprofile`;
    this.profiles[who] = join(PROFILE_DIR, name);
    return ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`, `--cpu-prof-name=${name}`];
  }

  private baseEnv(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of CONTROLLED_ENV) delete env[k];
    env.LOG_LEVEL = 'warn';
    env.JWT_SECRET = this.jwtSecret;
    if (this.opts.mode === 'full') {
      env.DATABASE_URL = this.dbUrl as string;
      env.RABBITMQ_URL = AMQP_URL;
      env.AMQP_PREFIX = this.prefix;
    }
    return env;
  }

  private engineEnv(): NodeJS.ProcessEnv {
    const env = this.baseEnv();
    env.HOST = this.host;
    env.PORT = String(this.port);
    env.DEMO_DATA = 'false';
    // No override of the password-check cap: the login phase logs every benchmark user in at once
    // (cost-4 hashes), and the engine's own cap and login queue take them as they would a
    // registration day's logins (before the queue, the default cap refused most of them).
    env.ENROLLMENT_WINDOW_MINUTES = String(WINDOW_MINUTES);
    if (this.opts.mode === 'full') env.IN_PROCESS_BATCHER = this.opts.batcher === 'in-process' ? 'true' : 'false';
    else env.DATA_DIR = this.dataDir as string;
    return { ...env, ...this.opts.extraEnv };
  }

  /** The queues a full-mode run makes: the engine's stream and webhook delivery queues, the batcher's dead-letter queue. */
  private queueNames(): string[] {
    const webhooks = deliveryQueueNames(this.prefix);
    return [`${this.prefix}.events`, `${this.prefix}.dead`, webhooks.work, webhooks.dead];
  }

  /**
   * What a stopped run left behind on the shared services or the disk (none, normally): its
   * database, its queues (every queue named with the run's prefix, where `rabbitmqctl` can list the
   * local broker's queues, so one the harness does not know of is seen; otherwise those it knows,
   * asked for by name, since AMQP cannot list queues), its data directory.
   */
  async leftovers(): Promise<{ left: string[]; queuesListed: boolean }> {
    const left: string[] = [];
    let queuesListed = false;
    if (this.opts.mode === 'full') {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      try {
        const r = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [this.prefix]);
        if (r.rowCount) left.push(`database ${this.prefix}`);
      } finally {
        await c.end();
      }
      // Every queue of a run is named `<prefix>.…` (queueNames() too): listed, any of them is seen.
      const listed = await listedQueues();
      queuesListed = listed !== null;
      const queues = listed ? listed.filter((q) => q.startsWith(`${this.prefix}.`)) : await existingQueues(this.queueNames());
      left.push(...queues.map((q) => `queue ${q}`));
    } else if (this.dataDir && existsSync(this.dataDir)) {
      left.push(`directory ${this.dataDir}`);
    }
    return { left, queuesListed };
  }

  private startBatcher(): void {
    this.batcherChild = new Child('batcher', [...this.profileArgs('batcher'), ...entryArgs(this.opts.runner, 'src/cli/batcher.ts')], {
      ...this.baseEnv(),
      ...this.opts.extraEnv,
    });
  }

  private async prepareFull(passwordHash: string): Promise<void> {
    const name = this.prefix;
    this.dbUrl = await createDatabase(name);
    this.resources.push(track(`database ${name}`, () => dropDatabase(name)));
    // The engine creates the stream and its webhook delivery queues, the batcher the dead-letter
    // queue; all go at the end.
    const queues = this.queueNames();
    this.resources.push(track(`AMQP queues ${this.prefix}.*`, () => deleteQueues(queues)));
    const db = createPgClient(this.dbUrl, { max: 2 });
    try {
      await migrate(db);
      this.seed = await seedDatabase(db, this.opts.spec, passwordHash);
    } finally {
      await db.close();
    }
    this.pool = new pg.Pool({ connectionString: this.dbUrl, max: 1 });
    this.pool.on('error', () => undefined);
  }

  private async prepareEmbedded(passwordHash: string): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), 'enroll-bench-'));
    this.dataDir = dir;
    this.resources.push(track(`data directory ${dir}`, async () => rmSync(dir, { recursive: true, force: true })));
    this.seed = JSON.parse(await this.embeddedDb({ action: 'seed', spec: this.opts.spec, passwordHash })) as SeedReport;
  }

  private async embeddedDb(input: Record<string, unknown>): Promise<string> {
    const args = [...entryArgs('tsx', 'bench/embedded-db.ts'), JSON.stringify({ dataDir: this.dataDir, ...input })];
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    const { stdout } = await execFileP(process.execPath, args, { cwd: REPO_ROOT, env, maxBuffer: 1 << 20 });
    return stdout.trim().split('\n').pop() ?? '';
  }

  /** Full mode, several instances: shard -> the address of its live owner (issue 14's lease table). */
  async shardOwners(): Promise<Map<number, string>> {
    const out = new Map<number, string>();
    if (!this.pool) return out;
    const r = await this.pool.query<{ shard: number; address: string }>(
      'SELECT shard, address FROM shard_leases WHERE log_name = $1 AND owner IS NOT NULL AND expires_at > now()',
      [`${this.prefix}.events`],
    );
    for (const row of r.rows) out.set(Number(row.shard), row.address);
    return out;
  }

  /** Full mode: what PostgreSQL holds now. Embedded: null (the engine holds the data directory). */
  async counts(): Promise<RowCounts | null> {
    if (!this.pool) return null;
    return countEnrollments({
      query: async <R>(text: string, params?: unknown[]) => {
        const r = await (this.pool as pg.Pool).query(text, params);
        return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 };
      },
    });
  }

  /**
   * Full mode: polls PostgreSQL until it holds exactly the rows the 204 replies acknowledged, and
   * returns the milliseconds from `lastReplyAt` (performance.now() of the last reply) until then.
   * Embedded mode: 0 by construction (a reply is sent only after the commit to the tables).
   */
  async catchUp(ledger: Ledger, lastReplyAt: number, timeoutMs = 120_000): Promise<CatchUp> {
    if (this.opts.mode === 'embedded') {
      return { ms: 0, caughtUp: true, byConstruction: true, counts: null, expectedRows: ledger.rows };
    }
    const deadline = performance.now() + timeoutMs;
    let counts: RowCounts | null = null;
    for (;;) {
      counts = await this.counts();
      const at = performance.now();
      if (counts && ledger.matches(counts)) {
        return { ms: Math.max(0, Math.round((at - lastReplyAt) * 10) / 10), caughtUp: true, byConstruction: false, counts, expectedRows: ledger.rows };
      }
      if (at > deadline) return { ms: Math.round(at - lastReplyAt), caughtUp: false, byConstruction: false, counts, expectedRows: ledger.rows };
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  memory(): { engine: MemoryReading | null; batcher: MemoryReading | null } {
    return {
      engine: this.engine ? readMemory(this.engine.pid) : null,
      batcher: this.batcherChild ? readMemory(this.batcherChild.pid) : null,
    };
  }

  cpuSeconds(): CpuSnapshot {
    return {
      engine: this.engine ? readCpuSeconds(this.engine.pid) : NaN,
      batcher: this.batcherChild ? readCpuSeconds(this.batcherChild.pid) : NaN,
      machine: readMachineCpu(),
    };
  }

  /** Error-level lines the children logged (checked after every run). */
  errorLines(): string[] {
    return [...(this.engine?.errorLines() ?? []), ...(this.batcherChild?.errorLines() ?? [])];
  }

  /**
   * Stops the children (SIGTERM: the engine closes gracefully and writes its CPU profile), reads
   * the final rows in embedded mode when asked, then drops the database, deletes the queues and the
   * data directory.
   */
  async stop(opts: { readEmbeddedCounts?: boolean } = {}): Promise<Profiles> {
    const errors: Error[] = [];
    for (const child of [this.engine, ...this.extraEngines.map((e) => e.child), this.batcherChild]) {
      if (child) await child.stop().catch((err: Error) => errors.push(err));
    }
    if (this.pool) {
      await this.pool.end().catch(() => undefined);
      this.pool = null;
    }
    if (opts.readEmbeddedCounts && this.opts.mode === 'embedded' && this.dataDir) {
      try {
        this.finalCounts = JSON.parse(await this.embeddedDb({ action: 'counts' })) as RowCounts;
      } catch (err) {
        errors.push(err as Error);
      }
    }
    while (this.resources.length > 0) {
      const r = this.resources.pop() as Resource;
      await r.release().catch((err: Error) => errors.push(err));
    }
    if (errors.length > 0) throw new Error(`teardown: ${errors.map((e) => e.message).join('; ')}`);
    return { ...this.profiles, engineStartedAt: this.engine?.startedAt ?? NaN, batcherStartedAt: this.batcherChild?.startedAt ?? NaN };
  }
}

export interface CpuSnapshot {
  engine: number;
  batcher: number;
  machine: MachineCpu;
}

export interface CatchUp {
  /** Milliseconds from the last reply until the database held every acknowledged change. */
  ms: number;
  caughtUp: boolean;
  /** Embedded mode: replies wait for the commit, so there is nothing to catch up. */
  byConstruction: boolean;
  counts: RowCounts | null;
  expectedRows: number;
}

/**
 * `steady` keeps each of its students writing several times a second on purpose, far past the
 * per-student write limit a real student meets (30 in 10 s by default); its runs turn the limit
 * off. The other workloads send a few writes per student and run with the engine's defaults.
 */
export const STEADY_ENV: Readonly<Record<string, string>> = { STUDENT_WRITE_LIMIT: '0' };

/** Those of `names` that exist on the broker (a passive declare of each, on a channel of its own). */
export async function existingQueues(names: string[]): Promise<string[]> {
  const c = await amqp.connect(AMQP_URL);
  const found: string[] = [];
  try {
    for (const n of names) {
      const ch = await c.createChannel();
      ch.on('error', () => undefined);
      if (await ch.checkQueue(n).then(() => true, () => false)) found.push(n);
      await ch.close().catch(() => undefined);
    }
  } finally {
    await c.close().catch(() => undefined);
  }
  return found;
}

/**
 * Every queue of the local broker, as `rabbitmqctl list_queues` gives them; null where the tool is
 * missing or cannot reach the broker (a remote broker, another user's Erlang cookie).
 */
export async function listedQueues(): Promise<string[] | null> {
  try {
    const { stdout } = await execFileP('rabbitmqctl', ['list_queues', 'name', '--quiet', '--no-table-headers'], { timeout: 30_000 });
    return stdout.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  } catch {
    return null;
  }
}

export async function deleteQueues(names: string[]): Promise<void> {
  const c = await amqp.connect(AMQP_URL);
  try {
    for (const n of names) {
      // A channel per queue: deleting a queue that was never made may close the channel.
      const ch = await c.createChannel();
      ch.on('error', () => undefined);
      await ch.deleteQueue(n).catch(() => undefined);
      await ch.close().catch(() => undefined);
    }
  } finally {
    await c.close().catch(() => undefined);
  }
}

/** One statement on the admin database (`BENCH_PG_URL`), on a connection of its own. */
async function adminQuery(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** Creates a database of the run's own on the shared PostgreSQL; returns its URL. */
async function createDatabase(name: string): Promise<string> {
  await adminQuery(`CREATE DATABASE ${name}`);
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${name}`;
  return u.toString();
}

function dropDatabase(name: string): Promise<void> {
  return adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
}

let ceilingScript: string | null = null;

/**
 * How the bare Fastify server starts: like the engine. With tsx under tsx; otherwise with plain
 * node, from a copy of bench/ceiling-server.ts (plain JavaScript in a .ts file) saved as .mjs in a
 * temporary directory that links the project's node_modules.
 */
function ceilingArgs(runner: Runner): string[] {
  if (runner === 'tsx') return entryArgs('tsx', 'bench/ceiling-server.ts');
  if (!ceilingScript) {
    const dir = mkdtempSync(join(tmpdir(), 'enroll-bench-ceiling-'));
    track(`ceiling directory ${dir}`, async () => rmSync(dir, { recursive: true, force: true }));
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'));
    ceilingScript = join(dir, 'ceiling-server.mjs');
    copyFileSync(join(REPO_ROOT, 'bench/ceiling-server.ts'), ceilingScript);
  }
  return [ceilingScript];
}

/** A bare Fastify server (bench/ceiling-server.ts) as a child: the ceiling every scenario is compared with. */
export async function startCeiling(runner: Runner): Promise<{ child: Child; port: number; startupMs: number }> {
  if (isInterrupted()) throw new Error('interrupted');
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), HOST: '127.0.0.1' };
  delete env.NODE_OPTIONS;
  const child = new Child('ceiling', ceilingArgs(runner), env);
  try {
    const startupMs = await waitForHttp(child, `http://127.0.0.1:${port}/health`, 60_000);
    return { child, port, startupMs };
  } catch (err) {
    await child.stop();
    throw err;
  }
}

/** A floor server as it runs: the child, its port, and the undo of its database and queue. */
export interface Floor {
  child: Child;
  port: number;
  /** What the floor's consumer has written to its database so far, counted as the engine's rows are (all registered). */
  counts(): Promise<RowCounts>;
  /** Stops the server, then drops its database and deletes its queue (also if the server did not). */
  stop(): Promise<void>;
}

/**
 * The floor (bench/floor-server.mjs, plain node whatever runs the engine) as a child, on a database and a stream queue of its own
 * (`bench_floor_<pid>_<random>`, dropped and deleted afterwards, also when the run is interrupted);
 * it checks tokens signed with `jwtSecret` and listens with the engine's default backlog.
 */
export async function startFloor(jwtSecret: string): Promise<Floor> {
  if (isInterrupted()) throw new Error('interrupted');
  const name = `bench_floor_${process.pid}_${randomBytes(4).toString('hex')}`;
  const dbUrl = await createDatabase(name);
  const queue = `${name}.floor`;
  const undo = track(`floor database and queue ${name}`, async () => {
    await dropDatabase(name);
    await deleteQueues([queue]);
  });
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    LISTEN_BACKLOG: String(loadConfig({}).listenBacklog),
    JWT_SECRET: jwtSecret,
    FLOOR_AMQP_URL: AMQP_URL,
    FLOOR_QUEUE: queue,
    FLOOR_DATABASE_URL: dbUrl,
  };
  delete env.NODE_OPTIONS;
  const child = new Child('floor', [join(REPO_ROOT, 'bench/floor-server.mjs')], env);
  const stop = async () => {
    await child.stop().catch(() => undefined);
    await undo.release();
  };
  const counts = async (): Promise<RowCounts> => {
    const c = new pg.Client({ connectionString: dbUrl });
    await c.connect();
    try {
      const r = await c.query<{ n: string; checksum: string }>(
        'SELECT count(*) AS n, COALESCE(sum(student_id::numeric * 100003 + course_id * 31 + group_id), 0)::text AS checksum FROM floor_enrollments',
      );
      const n = Number(r.rows[0]?.n ?? 0);
      return { rows: n, registered: n, queued: 0, checksum: r.rows[0]?.checksum ?? '0' };
    } finally {
      await c.end();
    }
  };
  try {
    await waitForHttp(child, `http://127.0.0.1:${port}/health`, 60_000);
    return { child, port, counts, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
