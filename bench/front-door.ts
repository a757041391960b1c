/**
 * `node --import tsx bench/front-door.ts [--root <checkout>] [--engine "<node args>"] [--env K=V ...] [--no-npm-start]`
 *
 * The front-door memory figures of bench/lib/front-door.ts for any checkout (default: this one),
 * so a change can be compared with the tree before it on the same machine at the same time:
 * first start on an empty data directory (with the demo data), restart, and `npm start`.
 * Default engine: `<flags of scripts/engine-flags.json> dist/src/main.js` (build first). Prints JSON.
 */
import { measureFrontDoor } from './lib/front-door.js';
import { EMBEDDED_ENGINE_FLAGS, REPO_ROOT } from './lib/procs.js';

const argv = process.argv.slice(2);
const value = (flag: string): string | undefined => {
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1] : undefined;
};
const root = value('--root') ?? REPO_ROOT;
// The front door is embedded mode: npm start adds engine-flags.json's `embedded` settings.
const flags = EMBEDDED_ENGINE_FLAGS;
const engineArgs = value('--engine')?.split(' ').filter(Boolean) ?? [...flags.nodeArgs, 'dist/src/main.js'];
const engineEnv: Record<string, string> = value('--engine') ? {} : { ...flags.env };
argv.forEach((a, i) => {
  if (a === '--env') {
    const [k, v] = (argv[i + 1] ?? '').split(/=(.*)/s);
    if (k) engineEnv[k] = v ?? '';
  }
});
const figures = await measureFrontDoor({ root, engineArgs, engineEnv, npmStart: !argv.includes('--no-npm-start') });
process.stdout.write(`${JSON.stringify({ root, engineArgs, engineEnv, load: (await import('node:os')).loadavg().map((x) => +x.toFixed(2)), ...figures }, null, 1)}\n`);
