// How the compiled engine is started, from scripts/engine-flags.json: full mode gets `nodeArgs` and
// `env`; embedded mode (no DATABASE_URL in the environment or in .env) also gets `embedded`'s.
// Shared by scripts/start.mjs (npm start) and its test.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const FLAGS = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'engine-flags.json'), 'utf8'));

/** Whether .env text (as node's --env-file reads it) gives `name` a non-empty value. */
export function envTextSets(text, name) {
  return text.split(/\r?\n/).some((line) => new RegExp(`^\\s*(?:export\\s+)?${name}\\s*=\\s*['"]?[^'"\\s#]`).test(line));
}

/**
 * The node arguments and environment defaults for the engine, given the launcher's environment and
 * the text of .env ('' when there is none). Variables already set win over the defaults.
 */
export function engineStart(env, envText) {
  const embedded = !env.DATABASE_URL && !envTextSets(envText, 'DATABASE_URL');
  return {
    embedded,
    nodeArgs: [...FLAGS.nodeArgs, ...(embedded ? FLAGS.embedded.nodeArgs : [])],
    env: { ...FLAGS.env, ...(embedded ? FLAGS.embedded.env : {}), ...env },
  };
}
