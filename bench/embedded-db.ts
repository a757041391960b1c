/**
 * Opens an embedded-mode data directory (PGlite) while no engine holds it, for the harness:
 * `seed` migrates it and inserts the benchmark data set before the engine starts; `counts` reads
 * the enrollment rows after the engine stopped. Run as a child process so the harness itself
 * never holds a PGlite instance. Input: one JSON argument; output: one JSON line on stdout.
 */
import { join } from 'node:path';
import { migrate } from '../src/persistence/migrations.js';
import { createPgliteClient } from '../src/persistence/pglite-client.js';
import { countEnrollments, seedDatabase, type SeedSpec } from './lib/seed.js';

interface Input {
  dataDir: string;
  action: 'seed' | 'counts';
  spec?: SeedSpec;
  passwordHash?: string;
}

const input = JSON.parse(process.argv[2] ?? '{}') as Input;
// The engine keeps its PGlite files under <DATA_DIR>/pglite (src/main.ts).
const db = await createPgliteClient(join(input.dataDir, 'pglite'));
try {
  if (input.action === 'seed') {
    await migrate(db);
    const report = await seedDatabase(db, input.spec as SeedSpec, input.passwordHash as string);
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } else {
    process.stdout.write(`${JSON.stringify(await countEnrollments(db))}\n`);
  }
} finally {
  await db.close();
}
