import { isEngineError } from '../errors.js';

/**
 * What a storage failure at start says about the engine's own settings, when it says anything: a
 * wrong password, a database or virtual host that is not there, a host name that does not resolve.
 * These look like an outage in the driver's first words ("unreachable", retried for ever), so an
 * operator with a typo in DATABASE_URL or RABBITMQ_URL waited for a service that was up all along
 * (probe J). Null when the failure looks like an outage. Never quotes a URL (it may hold a password).
 */
export function storageSettingHint(err: unknown): string | null {
  const texts: string[] = [];
  if (err instanceof Error) texts.push(err.message);
  const cause = isEngineError(err) ? err.details?.cause : undefined;
  if (typeof cause === 'string') texts.push(cause);
  const text = texts.join('\n');
  const broker = /broker/i.test(err instanceof Error ? err.message : '');
  const setting = broker ? 'RABBITMQ_URL' : 'DATABASE_URL';
  if (/ACCESS.REFUSED/.test(text)) return 'the message broker refused the user or password of RABBITMQ_URL';
  if (/ConnectionOpenOk|NOT_ALLOWED/.test(text)) return 'the message broker refused the connection: is the virtual host of RABBITMQ_URL there, and may the user use it?';
  if (/password authentication failed|no pg_hba\.conf entry|role ".*" does not exist/.test(text)) return 'the database refused the user or password of DATABASE_URL';
  if (/no PostgreSQL user name specified/.test(text)) return 'DATABASE_URL names no user, and the OS account has no name to use instead: put the user in the URL (postgres://USER@host/db)';
  if (/database ".*" does not exist/.test(text)) return 'the database named in DATABASE_URL does not exist';
  if (/ENOTFOUND|EAI_AGAIN/.test(text)) return `the host name of ${setting} does not resolve`;
  return null;
}
