// `npm stop`: asks the engine that `npm start` left running (pid in .engine.pid) to shut down
// with SIGTERM, as a clean shutdown (every acknowledged change is already durable; the engine
// finishes what is in flight), and waits until it has exited (up to 60 s).
import { existsSync, readFileSync, rmSync } from 'node:fs';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { PID_FILE } from './build.mjs';

const say = (text) => process.stderr.write(`[npm stop] ${text}\n`);
if (!existsSync(PID_FILE)) {
  say('no engine started by npm start is recorded (.engine.pid is missing)');
  process.exit(0);
}
const pid = Number(readFileSync(PID_FILE, 'utf8').trim());
const cmdline = (() => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return null;
  }
})();
// A recorded pid may have been reused by another process since: signal only our engine.
if (!Number.isInteger(pid) || pid <= 0 || cmdline === null || !cmdline.includes('dist/src/main.js')) {
  say(`the engine recorded in .engine.pid (${pid}) is not running`);
  rmSync(PID_FILE, { force: true });
  process.exit(0);
}
process.kill(pid, 'SIGTERM');
const alive = () => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const deadline = Date.now() + 60_000;
while (alive() && Date.now() < deadline) await sleep(100);
if (alive()) {
  say(`engine ${pid} is still running 60 s after SIGTERM`);
  process.exit(1);
}
rmSync(PID_FILE, { force: true });
say(`engine ${pid} stopped`);
