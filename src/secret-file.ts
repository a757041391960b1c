import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';

/**
 * Embedded mode needs no set-up, yet tokens must survive a restart: the JWT secret is generated
 * once and kept (mode 0600) under the data directory. Full mode always takes JWT_SECRET instead.
 * Anyone who reads the file can mint staff tokens, so an existing file readable by others is
 * narrowed to 0600 (and logged), and a secret shorter than JWT_SECRET's minimum is refused.
 */

/** The same floor as JWT_SECRET's (src/config.ts). */
export const MIN_SECRET_LENGTH = 32;

export function loadOrCreateSecret(dataDir: string, logger?: Logger): string {
  const file = join(dataDir, 'jwt-secret');
  const log = logger?.child({ module: 'secret-file' });
  if (existsSync(file)) {
    const mode = statSync(file).mode & 0o777;
    if (mode !== 0o600) {
      try {
        chmodSync(file, 0o600);
      } catch (err) {
        throw new Error(`the JWT secret file ${file} has mode ${mode.toString(8)} and cannot be made 0600: ${(err as Error).message}`);
      }
      log?.warn({ file, was: mode.toString(8) }, 'the JWT secret file was readable by others; narrowed to 0600 (consider replacing the secret)');
    }
    const secret = readFileSync(file, 'utf8').trim();
    if (secret.length < MIN_SECRET_LENGTH) {
      throw new Error(
        `the JWT secret in ${file} is ${secret.length} characters; at least ${MIN_SECRET_LENGTH} are required ` +
          '(delete the file to have a new one generated, which logs everyone out, or set JWT_SECRET)',
      );
    }
    return secret;
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const secret = randomBytes(48).toString('base64url');
  writeFileSync(file, secret + '\n', { mode: 0o600, flag: 'wx' });
  return secret;
}
