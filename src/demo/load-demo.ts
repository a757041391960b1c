import { hashPassword } from '../password.js';
import type { Logger } from 'pino';
import type { Engine } from '../engine/engine.js';
import {
  DEMO_STAFF_ID,
  DEMO_STAFF_PASSWORD,
  DEMO_STUDENT_ID,
  DEMO_STUDENT_PASSWORD,
  generateDemoData,
} from './demo-data.js';

/**
 * Loads the demo data set into an empty engine through the ordinary event path (one durable
 * batch), so the demo rows are written exactly as live changes would be. Returns the credentials
 * to print.
 */
export async function loadDemoData(
  engine: Engine,
  logger: Logger,
): Promise<{ student: { user: number; password: string }; staff: { user: number; password: string; staff: true } }> {
  const t0 = performance.now();
  const [passwordHash, staffPasswordHash] = await Promise.all([hashPassword(DEMO_STUDENT_PASSWORD), hashPassword(DEMO_STAFF_PASSWORD)]);
  const data = generateDemoData({ passwordHash, staffPasswordHash, now: Date.now() });
  await engine.importBatch(data, { requestId: 'demo-data', actor: 'system' });
  logger.child({ module: 'demo' }).info(
    {
      departments: data.departments.length,
      sections: data.sections.length,
      students: data.students.length,
      staff: data.staff.length,
      enrollmentRequests: data.enrollments.length,
      closedSections: data.closures.length,
      ms: Math.round(performance.now() - t0),
    },
    'demo data loaded',
  );
  return {
    student: { user: DEMO_STUDENT_ID, password: DEMO_STUDENT_PASSWORD },
    staff: { user: DEMO_STAFF_ID, password: DEMO_STAFF_PASSWORD, staff: true },
  };
}
