import { EngineError } from './errors.js';

/**
 * The rules every new password follows, wherever it comes from: the API (`POST /staff`,
 * `POST /students`, `PATCH /students/{id}`, `PATCH /staff/{id}`, `POST /me/password`), the
 * `npm run create-staff` command and `BOOTSTRAP_STAFF_PASSWORD`. They live here, outside the HTTP
 * layer and apart from the bcrypt helper (src/password.ts, a native addon that config.ts has no
 * use for), so the configuration, the command line and the routes all import the one copy:
 * before, the first staff member (the admin of a new deployment, the account most worth guessing)
 * was checked only for its length, and `1234567890` opened it.
 */

/** Shortest password a new account may have, unless the app is given another (tests). */
export const DEFAULT_MIN_PASSWORD_LENGTH = 10;
/** bcrypt reads only the first 72 bytes; longer passwords would be silently truncated. */
export const MAX_PASSWORD_BYTES = 72;

/** What a new password is checked against. */
export interface NewPasswordRules {
  /** Shortest password allowed, in characters. */
  minPasswordLength: number;
  /** Passwords refused, also as the start of a longer one (the published demo passwords). */
  refusedPasswords: Iterable<string>;
}

/** Why a new password is refused: the error code the API answers with, and the reason in words. */
export interface PasswordProblem {
  code: 'BAD_REQUEST' | 'WEAK_PASSWORD';
  reason: string;
}

/**
 * Why `password` may not be a new account's password, or null when it may: not over bcrypt's
 * limit, long enough, not (the start of) a published demo password, at least 4 different
 * characters, and neither a keyboard or counting run nor one of the most common passwords. For the
 * callers that refuse in their own words (the command line, the configuration); the routes use
 * {@link checkNewPassword}.
 */
export function newPasswordProblem(password: string, rules: NewPasswordRules): PasswordProblem | null {
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) {
    return { code: 'BAD_REQUEST', reason: `password must be at most ${MAX_PASSWORD_BYTES} bytes` };
  }
  if ([...password].length < rules.minPasswordLength) {
    return { code: 'WEAK_PASSWORD', reason: `password must be at least ${rules.minPasswordLength} characters` };
  }
  const plain = password.trim().toLowerCase();
  if ([...rules.refusedPasswords].some((p) => plain.startsWith(p.toLowerCase()))) {
    return { code: 'WEAK_PASSWORD', reason: 'that password is (or starts with) one published with the demo data; choose another' };
  }
  if (new Set(plain).size < MIN_DISTINCT_CHARACTERS) {
    return { code: 'WEAK_PASSWORD', reason: `password must have at least ${MIN_DISTINCT_CHARACTERS} different characters` };
  }
  if (COMMON_PASSWORDS.has(plain) || RUNS.some((run) => run.includes(plain))) {
    return { code: 'WEAK_PASSWORD', reason: 'that password is among the first any guesser tries; choose another' };
  }
  return null;
}

/** {@link newPasswordProblem} as the API's refusal: throws the EngineError (400 WEAK_PASSWORD or BAD_REQUEST). */
export function checkNewPassword(password: string, rules: NewPasswordRules): void {
  const problem = newPasswordProblem(password, rules);
  if (problem !== null) throw new EngineError(problem.code, problem.reason);
}

/** Fewer different characters than this ('aaaaaaaaaa', ten spaces, 'ababababab') is refused. */
const MIN_DISTINCT_CHARACTERS = 4;
/** Keyboard and counting runs: any 10+ character piece of one ('1234567890', 'qwertyuiop', 'abcdefghij') is refused. */
const RUNS = ['01234567890123456789', '98765432109876543210', 'abcdefghijklmnopqrstuvwxyz', 'qwertyuiopasdfghjklzxcvbnm', '1q2w3e4r5t6y7u8i9o0p', 'q1w2e3r4t5y6u7i8o9p0'];
/** The most common passwords of 10 or more characters in public breach lists (compared in lower case, trimmed). */
const COMMON_PASSWORDS = new Set([
  'password123', 'password1234', 'password12345', 'password!23', 'passw0rd123', 'iloveyou123', 'qwerty12345', 'qwerty123456',
  '1234567890a', 'a1234567890', 'abc1234567', 'abcd123456', 'abc123456789', '123456789a', '123456789abc', '1234567890q',
  '1111111111', '0000000000', '1234512345', '1212121212', '1122334455', '9876543210a', 'letmein123', 'welcome123',
  'admin12345', 'administrator', 'changeme123', 'football123', 'monkey12345', 'dragon12345', 'sunshine123', 'princess123',
  'student123', 'student1234', 'university', 'university1', 'registration', 'enrollment', 'myspace123', 'baseball123',
]);
