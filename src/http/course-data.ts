import { classTimeEntries } from '../actors/class-time.js';
import type { HeldSection, SectionView } from '../engine/engine.js';
import type { TransitionRecord } from '../persistence/types.js';
import type { CourseDataT } from './schemas.js';

/**
 * Maps the engine's views to the wire format. The engine keeps times in milliseconds and names in
 * camelCase; the Go service's clients expect unix seconds and snake_case, so the translation lives
 * here, in one place, and nowhere else.
 */

/** A section as the Go clients' CourseData, plus the live members this API adds. */
export function toCourseData(v: SectionView): CourseDataT {
  const i = v.info;
  return {
    course_id: i.courseId,
    group_id: i.groupId,
    name: i.name,
    units: i.units,
    capacity: v.capacity,
    registered_count: v.registeredCount,
    reserve_capacity: v.reserveCapacity,
    reserved_count: v.queueLength,
    exam_time: i.examTime === null ? null : Math.floor(i.examTime / 1000),
    class_time: classTimeEntries(i.classTime),
    lecturer: i.lecturer,
    sex_lock: v.sexLock,
    closed: v.closed,
    state: v.state,
    for_department: i.forDepartment,
    notes: i.notes,
  };
}

/** One entry of `GET /student/course`: the position is present only while the student is queued. */
export function toHeldCourse(h: HeldSection): { course: CourseDataT; reserve_queue_position?: number } {
  const course = toCourseData(h.section);
  return h.status === 'queued' && h.queuePosition !== undefined
    ? { course, reserve_queue_position: h.queuePosition }
    : { course };
}

/** A transition record in the API's snake_case, for the admin view and the transitions route. */
export function toTransition(t: TransitionRecord) {
  return {
    seq: t.seq,
    type: t.type,
    student_id: t.studentId,
    request_id: t.requestId,
    actor: t.actor,
    at: t.at,
    payload: t.payload,
  };
}

/** Stable order for lists: by course, then group. */
export function bySection(a: SectionView, b: SectionView): number {
  return a.info.courseId - b.info.courseId || a.info.groupId - b.info.groupId;
}
