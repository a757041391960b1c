// Preloaded into every test process (package.json's test script). With --test-force-exit, Node
// exits a test file's process once its tests are done, while the last report frames may still
// sit in the non-blocking stdout pipe to the runner: those tests ran, but their verdicts (a
// failure included) vanish from the summary and the run still passes (nodejs/node#64833; seen
// here: a CI run reported 499 of 504 tests, the last five of test/engine-rules.test.ts missing).
// Blocking writes deliver every frame before the exit.
import process from 'node:process';

const handle = /** @type {{ setBlocking?: (b: boolean) => void } | undefined} */ (/** @type {any} */ (process.stdout)._handle);
if (handle && typeof handle.setBlocking === 'function') handle.setBlocking(true);
