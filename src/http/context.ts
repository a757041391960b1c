import type { Engine } from '../engine/engine.js';
import type { ReadinessReport, StorageRequirements } from '../persistence/types.js';
import type { TokenService } from './auth.js';
import type { PasswordGate } from './password-gate.js';
import type { Throttle } from './throttle.js';
import type { Drain } from './drain.js';

/**
 * What every route plugin is registered with. Passed as plugin options rather than decorated onto
 * the instance, so each route file states what it uses and tests can see the whole surface here.
 */
export interface RouteContext {
  engine: Engine;
  tokens: TokenService;
  readiness: () => Promise<ReadinessReport>;
  /** Caps concurrent password checks at login. */
  passwordGate: PasswordGate;
  /** Account rules: who may create staff, and which passwords are refused. */
  accounts: AccountPolicy;
  /** Login throttling and the per-student write limit (shared through Redis when configured). */
  throttle: Throttle;
  /** Fields the database insists on that the API otherwise leaves optional (the Go schema's NOT NULL columns). */
  requirements: StorageRequirements;
  /** The graceful shutdown: event streams end when it begins (src/http/drain.ts). */
  drain?: Drain;
}

/** Who may create staff accounts and which new passwords are refused. */
export interface AccountPolicy {
  /** Staff ids with the admin role (the only ones who may create staff). */
  adminStaffIds: ReadonlySet<number>;
  /** Shortest password a new account may have. */
  minPasswordLength: number;
  /** Passwords refused for new accounts (the well-known demo passwords, outside demo mode). */
  refusedPasswords: ReadonlySet<string>;
}
