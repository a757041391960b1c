/**
 * `npm run create-staff -- --id <id> [--department <id>]`: creates a staff member straight in the
 * store (DATABASE_URL in full mode, the embedded files under DATA_DIR otherwise), so the first
 * staff member of a fresh deployment exists before anyone can log in (`POST /staff` needs a staff
 * token). The password comes from STAFF_PASSWORD, or is typed at the prompt (not echoed), or is
 * the first line of stdin; it follows the API's rules for new passwords (src/password-rules.ts: a
 * weak, common or demo password is refused with one line, exit code 2, before the store is
 * opened), is hashed with bcrypt (cost 10) and never printed or logged.
 *
 * Run it after `npm run migrate` and before the first start (a running server sees the new row
 * after a restart, as with any row inserted straight into the database). To let this member
 * create more staff, put the id in ADMIN_STAFF_IDS.
 *
 * Exit codes: 0 created; 1 the id exists already; 2 bad arguments, configuration or password.
 */
import { join } from 'node:path';
import { lockEmbeddedStore } from './embedded-lock.js';
import { createInterface } from 'node:readline';
import { ConfigError, loadCreateStaffConfig, type CreateStaffConfig } from '../config.js';
import { DEMO_PASSWORDS } from '../demo/demo-exposure.js';
import { createLogger } from '../logger.js';
import { hashPassword } from '../password.js';
import { DEFAULT_MIN_PASSWORD_LENGTH, newPasswordProblem } from '../password-rules.js';
import { migrate } from '../persistence/migrations.js';
import { createPgClient } from '../persistence/pg-client.js';
import { createPgliteClient } from '../persistence/pglite-client.js';

const MAX_ID = 2_147_483_647;

function fail(message: string, code = 2): never {
  process.stderr.write(`create-staff: ${message}\n`);
  process.exit(code);
}

function argValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

/** Reads one line: at a terminal without echo, else the first line of stdin. */
async function readPassword(): Promise<string> {
  const input = process.stdin;
  if (input.isTTY) {
    process.stdout.write('Password for the new staff member (not shown): ');
    input.setRawMode(true);
    return new Promise((resolve) => {
      let pw = '';
      const onData = (buf: Buffer) => {
        for (const ch of buf.toString('utf8')) {
          if (ch === '\r' || ch === '\n') {
            input.setRawMode(false);
            input.off('data', onData);
            input.pause();
            process.stdout.write('\n');
            resolve(pw);
            return;
          }
          if (ch === '\u0003') fail('cancelled');
          if (ch === '\u007f') pw = pw.slice(0, -1);
          else pw += ch;
        }
      };
      input.on('data', onData);
      input.resume();
    });
  }
  const rl = createInterface({ input });
  for await (const line of rl) {
    rl.close();
    return line;
  }
  return '';
}

let config: CreateStaffConfig;
try {
  config = loadCreateStaffConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  fail(err.message);
}
const args = process.argv.slice(2);
const idText = argValue(args, '--id');
if (idText === undefined || !/^\d{1,10}$/.test(idText) || Number(idText) < 1 || Number(idText) > MAX_ID) {
  fail('usage: npm run create-staff -- --id <staff id, a number> [--department <department id>]\n  password: STAFF_PASSWORD, or typed at the prompt, or the first line of stdin');
}
const id = Number(idText);
const departmentText = argValue(args, '--department');
if (departmentText !== undefined && !/^\d{1,10}$/.test(departmentText)) fail('--department must be a number');
const departmentId = departmentText === undefined ? null : Number(departmentText);

const password = config.staffPassword ?? (await readPassword());
// The API's rules for every new password (POST /staff answers 400 WEAK_PASSWORD for the same), before anything is opened.
const weak = newPasswordProblem(password, { minPasswordLength: DEFAULT_MIN_PASSWORD_LENGTH, refusedPasswords: DEMO_PASSWORDS });
if (weak !== null) fail(`the password is refused: ${weak.reason}`);

const logger = createLogger(config.logLevel).child({ module: 'create-staff' });
const dataDirLock = await lockEmbeddedStore(config.databaseUrl, config.dataDir, 'npm run create-staff');
const db = config.databaseUrl ? createPgClient(config.databaseUrl) : await createPgliteClient(join(config.dataDir, 'pglite'));
let created = false;
let unknownDepartment = false;
try {
  await migrate(db, { log: logger });
  // As POST /staff refuses it (400): a department nobody added (probe T: it was stored, and shown by /me).
  unknownDepartment = departmentId !== null && (await db.query('SELECT 1 FROM departments WHERE id = $1', [departmentId])).rows.length === 0;
  if (!unknownDepartment) {
    const passwordHash = await hashPassword(password, 10);
    const r = await db.query<{ id: string }>(
      'INSERT INTO staff (id, password, department_id) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING RETURNING id',
      [id, passwordHash, departmentId],
    );
    created = r.rows.length === 1;
  }
} finally {
  await db.close();
  await dataDirLock?.release();
}
if (unknownDepartment) fail(`department ${String(departmentId)} does not exist: add it first (POST /departments, or a row in the departments table), or leave --department out; nothing changed`, 1);
if (!created) fail(`staff ${id} exists already; nothing changed`, 1);
logger.info({ staff: id, target: config.databaseUrl ? 'postgres' : 'embedded' }, 'staff member created');
process.stdout.write(
  `Staff member ${id} created. Log in with {"user": ${id}, "password": <yours>, "staff": true}.\n` +
    `A running server sees it after a restart. Add ${id} to ADMIN_STAFF_IDS to let it create staff.\n`,
);
