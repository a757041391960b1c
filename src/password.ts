import { hash, verify } from '@node-rs/bcrypt';

/**
 * bcrypt, as the Go service stored passwords ($2a$/$2b$ hashes stay valid). Both calls run on
 * libuv's thread pool, so hashing and checking never block the event loop during a login rush.
 */
export function hashPassword(password: string, cost = 10): Promise<string> {
  return hash(password, cost);
}

/** False for a wrong password and for anything that is not a bcrypt hash (never throws). */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  try {
    return await verify(password, encoded);
  } catch {
    return false;
  }
}
