// A child for test/logger-dead-output.test.ts: logs through the engine's logger to standard output
// until SIGTERM, then logs once more, flushes and exits 0 (as the engine's shutdown does).
import { createLogger } from '../../src/logger.js';

const log = createLogger('info');
const timer = setInterval(() => log.info({ at: Date.now() }, 'still here'), 20);
process.once('SIGTERM', () => {
  clearInterval(timer);
  log.info('shutting down');
  log.flush(() => process.exit(0));
});
log.info('ready');
