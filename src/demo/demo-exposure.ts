import type { Engine } from '../engine/engine.js';
import { verifyPassword } from '../password.js';
import { DEMO_STAFF_ID, DEMO_STAFF_PASSWORD, DEMO_STUDENT_ID, DEMO_STUDENT_PASSWORD } from './demo-data.js';

/**
 * The demo data set's passwords are published (README, start-up log). Whether they open accounts
 * is checked on the store itself, not inferred from DEMO_DATA: a data directory filled on a
 * laptop and later served on the network still carries them.
 */

/** The published demo passwords; new accounts may not use them outside demo mode. */
export const DEMO_PASSWORDS: readonly string[] = [DEMO_STUDENT_PASSWORD, DEMO_STAFF_PASSWORD];

/** Whether the demo staff member or demo student can log in with the published password now. */
export async function demoCredentialsLive(engine: Engine): Promise<boolean> {
  const staff = engine.getStaff(DEMO_STAFF_ID)?.passwordHash;
  const student = engine.getStudent(DEMO_STUDENT_ID)?.passwordHash;
  const [a, b] = await Promise.all([
    staff === undefined ? false : verifyPassword(DEMO_STAFF_PASSWORD, staff),
    student === undefined ? false : verifyPassword(DEMO_STUDENT_PASSWORD, student),
  ]);
  return a || b;
}

/**
 * What to do about live demo credentials at a listen address:
 * - `none`: no demo credentials, nothing to say;
 * - `local`: live, but only this machine can reach them;
 * - `warn`: live on the network because DEMO_DATA=true was set explicitly (say so loudly);
 * - `refuse`: live on the network without that explicit setting: do not serve.
 */
export type DemoExposure = 'none' | 'local' | 'warn' | 'refuse';

export function demoExposure(opts: { live: boolean; loopback: boolean; explicit: boolean }): DemoExposure {
  if (!opts.live) return 'none';
  if (opts.loopback) return 'local';
  return opts.explicit ? 'warn' : 'refuse';
}
