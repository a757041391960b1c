/**
 * A batcher worker that dies at its first `start` (exit code 1), once per stream: the marker file
 * in the temporary directory says it has; every later start runs the real worker.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';

export const crashMarker = (stream: string): string => join(tmpdir(), `${stream}.crashed`);

if (parentPort) {
  const marker = crashMarker((workerData as { stream: string }).stream);
  if (!existsSync(marker)) {
    parentPort.once('message', () => {
      writeFileSync(marker, '');
      process.exit(1);
    });
  } else {
    await import('../../src/cli/batcher-worker.js');
  }
}
