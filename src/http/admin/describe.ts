/**
 * Transitions in words a registrar reads, instead of event names, flags and request ids
 * (`studentDropped reason=movedOut`, `movedIn=false`, `req-7f3a...`). The admin page shows these
 * sentences; the raw record stays available through the transitions route for tools.
 */

type Payload = Record<string, unknown>;

/** `student:5` -> `student 5`, `staff:1` -> `staff 1`; anything else as it is. */
export function describeActor(actor: string): string {
  const m = /^(student|staff):(\d+)$/.exec(actor);
  return m ? `${m[1]} ${m[2]}` : actor;
}

const place = (from: unknown): string => (from === 'queued' ? 'place in the reserve queue' : 'seat');

/** One section's transition, told from the section's side ("Student 7 took a seat"). */
export function describeSectionTransition(type: string, studentId: number | null, p: Payload): string {
  const who = studentId === null ? 'A student' : `Student ${studentId}`;
  switch (type) {
    case 'sectionCreated':
      return `Section created with ${String(p.capacity)} seats and ${String(p.reserveCapacity)} reserve places${p.closed === true ? ', closed' : ''}`;
    case 'studentEnrolled':
      if (p.forced === true) return `${who} was given a seat by staff`;
      return p.movedIn === true ? `${who} took a seat (moving from another section)` : `${who} took a seat`;
    case 'studentQueued':
      return p.movedIn === true
        ? `${who} joined the reserve queue (moving from another section)`
        : `${who} joined the reserve queue`;
    case 'studentPromoted':
      return `${who} moved up from the reserve queue to a seat`;
    case 'studentDropped':
      if (p.reason === 'forceDropped') return `Staff removed ${who.toLowerCase()} from their ${place(p.from)}`;
      if (p.reason === 'movedOut') return `${who} gave up their ${place(p.from)} for another section`;
      return `${who} dropped their ${place(p.from)}`;
    case 'capacityChanged':
      return `Capacity set to ${String(p.capacity)} seats`;
    case 'reserveCapacityChanged':
      return `Reserve queue size set to ${String(p.reserveCapacity)}`;
    case 'sexLockChanged':
      return p.sexLock === null || p.sexLock === undefined ? 'Sex lock removed: open to everyone' : `Sex lock set: ${String(p.sexLock)} students only`;
    case 'infoUpdated': {
      const fields = Object.keys((p.info as Payload | undefined) ?? {});
      return fields.length > 0 ? `Details changed: ${fields.join(', ')}` : 'Details changed';
    }
    case 'sectionClosed':
      return 'Section closed for enrollment';
    case 'sectionReopened':
      return 'Section reopened for enrollment';
    default:
      return type;
  }
}

/** One of a student's transitions, told from the student's side ("Took a seat in 40101-1 Algebra"). */
export function describeStudentTransition(type: string, section: string, p: Payload, actor?: string): string {
  switch (type) {
    case 'studentEnrolled':
      if (p.forced === true) return `Given a seat in ${section} by staff`;
      return p.movedIn === true ? `Took a seat in ${section} (moving from another section)` : `Took a seat in ${section}`;
    case 'studentQueued':
      return p.movedIn === true
        ? `Joined the reserve queue of ${section} (moving from another section)`
        : `Joined the reserve queue of ${section}`;
    case 'studentPromoted':
      return `Moved up from the reserve queue to a seat in ${section}`;
    case 'studentDropped':
      if (p.reason === 'forceDropped') return `Removed by staff from their ${place(p.from)} in ${section}`;
      if (p.reason === 'movedOut') return `Gave up their ${place(p.from)} in ${section} for another section`;
      return `Dropped their ${place(p.from)} in ${section}`;
    case 'actionUsed':
      return `Used a drop or change action (${String(p.remainingActions)} left)`;
    case 'studentUpdated': {
      const changes = (p.changes as Payload | undefined) ?? {};
      // The student's own change of password (POST /me/password), not a registrar's.
      if (actor !== undefined && actor === `student:${String(p.studentId)}`) return 'Changed their own password';
      return describeStudentChanges(changes);
    }
    default:
      return type;
  }
}

/** A registrar's change of a student's record, field by field (the password only as changed). */
function describeStudentChanges(c: Payload): string {
  const parts: string[] = [];
  if (typeof c.enrollmentStart === 'number') parts.push(`enrollment window from ${new Date(c.enrollmentStart).toISOString().slice(0, 19).replace('T', ' ')} UTC`);
  if (c.maxUnits !== undefined) parts.push(`unit limit ${String(c.maxUnits)}`);
  if (c.remainingActions !== undefined) parts.push(`${String(c.remainingActions)} drop or change actions left`);
  if (c.departmentId !== undefined) parts.push(c.departmentId === null ? 'no department' : `department ${String(c.departmentId)}`);
  if (c.entryYear !== undefined) parts.push(c.entryYear === null ? 'no entry year' : `entry year ${String(c.entryYear)}`);
  // The SQL stores keep `passwordChanged` in place of the hash; the whole event (the test store) has the hash.
  if (c.passwordChanged === true || c.passwordHash !== undefined) parts.push('password reset');
  return parts.length > 0 ? `Record changed by staff: ${parts.join(', ')}` : 'Record changed by staff';
}
