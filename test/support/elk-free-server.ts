/**
 * Child-process entry for test/admin-machine.test.ts: builds the app as the engine does, serves
 * the statechart layout, and prints as JSON whether any elkjs module is loaded (elkjs is a
 * CommonJS bundle, so once imported it sits in the CommonJS module cache), then loads elkjs on
 * purpose and reports again, so the check is shown to see it.
 */
import { createRequire } from 'node:module';
import { createHttpFixture, PW_HASH, STAFF } from './http-fixture.js';

const require = createRequire(import.meta.url);
const elkLoaded = (): boolean => Object.keys(require.cache).some((k) => k.includes('/elkjs/'));

const fx = await createHttpFixture({ seed: false });
// Only the staff member whose token asks (a token of a user who does not exist is refused).
await fx.engine.importBatch({ departments: [], staff: [{ id: STAFF, passwordHash: PW_HASH, departmentId: null }], students: [], sections: [] }, { requestId: 'staff', actor: 'system' });
const r = await fx.request('GET', '/admin/api/machine', { token: fx.staffToken() });
const afterServing = elkLoaded();
await fx.close();
await import('elkjs/lib/elk.bundled.js');
process.stdout.write(`${JSON.stringify({ status: r.status, nodes: (r.body as { nodes?: unknown[] }).nodes?.length ?? 0, afterServing, afterImport: elkLoaded() })}\n`);
process.exit(0);
