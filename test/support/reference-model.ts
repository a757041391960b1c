/**
 * A reference model of the enrollment rules (SPEC section 4), written from the spec alone and kept
 * deliberately plain: arrays, loops and the rules in the order the spec lists them. It shares no
 * code with src/ (not the section logic, not the class-time decoder), so a mistake there cannot
 * hide behind the same mistake here.
 */

export type Gender = 'male' | 'female';

export interface RefStudent {
  id: number;
  gender: Gender;
  enrollmentStart: number;
  maxUnits: number;
  remainingActions: number;
}

export interface RefSection {
  courseId: number;
  groupId: number;
  units: number;
  examTime: number | null;
  classTime: number | null;
  capacity: number;
  reserveCapacity: number;
  sexLock: Gender | null;
  closed: boolean;
  /** In the order the seats were taken. */
  registered: number[];
  /** The reserve queue, head first. */
  queue: number[];
}

/** `registered`, `queued` or `ok` when accepted; the error code when refused. */
export type RefOutcome = string;

export class ReferenceModel {
  students: RefStudent[];
  sections: RefSection[];
  now: number;
  readonly windowMs: number;

  constructor(students: RefStudent[], sections: RefSection[], now: number, windowMs: number) {
    this.students = students.map((s) => ({ ...s }));
    this.sections = sections.map((s) => ({ ...s, registered: [...s.registered], queue: [...s.queue] }));
    this.now = now;
    this.windowMs = windowMs;
  }

  clone(): ReferenceModel {
    return new ReferenceModel(this.students, this.sections, this.now, this.windowMs);
  }

  // ---------------------------------------------------------------------------------------------
  // Helpers

  private student(id: number): RefStudent | undefined {
    return this.students.find((s) => s.id === id);
  }

  private section(courseId: number, groupId: number): RefSection | undefined {
    return this.sections.find((s) => s.courseId === courseId && s.groupId === groupId);
  }

  /** Every section the student is registered in or queued for. */
  private held(studentId: number): RefSection[] {
    return this.sections.filter((s) => s.registered.includes(studentId) || s.queue.includes(studentId));
  }

  private windowOpen(st: RefStudent): boolean {
    return st.enrollmentStart <= this.now && this.now < st.enrollmentStart + this.windowMs;
  }

  /** Moves queue heads into free seats, one at a time, head first. */
  private fillSeats(sec: RefSection): void {
    while (sec.registered.length < sec.capacity && sec.queue.length > 0) {
      const head = sec.queue.shift() as number;
      sec.registered.push(head);
    }
  }

  /** Takes the student out of the section; a freed seat goes to the queue head. */
  private remove(sec: RefSection, studentId: number): void {
    if (sec.registered.includes(studentId)) {
      sec.registered = sec.registered.filter((id) => id !== studentId);
      this.fillSeats(sec);
    } else {
      sec.queue = sec.queue.filter((id) => id !== studentId);
    }
  }

  /** Rules 2 (open) to 6, in order, against the sections in `others`. */
  private ruleViolation(st: RefStudent, target: RefSection, others: RefSection[], checkSameCourse: boolean): string | null {
    if (target.closed) return 'SECTION_CLOSED';
    if (target.sexLock !== null && target.sexLock !== st.gender) return 'SEX_LOCK';
    let units = 0;
    for (const s of others) units += s.units;
    if (units + target.units > st.maxUnits) return 'UNITS_EXCEEDED';
    if (checkSameCourse) {
      for (const s of others) if (s.courseId === target.courseId) return 'SAME_COURSE';
    }
    for (const s of others) {
      if (target.examTime !== null && s.examTime === target.examTime) return 'EXAM_CONFLICT';
    }
    for (const s of others) {
      if (classesClash(s.classTime, target.classTime)) return 'CLASS_CONFLICT';
    }
    return null;
  }

  /** Rule 7: a seat, else a queue place, else full. */
  private takePlace(sec: RefSection, studentId: number): RefOutcome {
    if (sec.registered.length < sec.capacity) {
      sec.registered.push(studentId);
      return 'registered';
    }
    if (sec.queue.length < sec.reserveCapacity) {
      sec.queue.push(studentId);
      return 'queued';
    }
    return 'SECTION_FULL';
  }

  // ---------------------------------------------------------------------------------------------
  // Student requests

  enroll(studentId: number, courseId: number, groupId: number): RefOutcome {
    const st = this.student(studentId);
    if (!st) return 'STUDENT_NOT_FOUND';
    if (!this.windowOpen(st)) return 'ENROLLMENT_WINDOW_CLOSED';
    const sec = this.section(courseId, groupId);
    if (!sec) return 'SECTION_NOT_FOUND';
    const v = this.ruleViolation(st, sec, this.held(studentId), true);
    if (v) return v;
    return this.takePlace(sec, studentId);
  }

  drop(studentId: number, courseId: number): RefOutcome {
    const st = this.student(studentId);
    if (!st) return 'STUDENT_NOT_FOUND';
    if (!this.windowOpen(st)) return 'ENROLLMENT_WINDOW_CLOSED';
    if (st.remainingActions <= 0) return 'NO_ACTIONS_LEFT';
    const sec = this.held(studentId).find((s) => s.courseId === courseId);
    if (!sec) return 'NOT_ENROLLED';
    this.remove(sec, studentId);
    st.remainingActions -= 1;
    return 'ok';
  }

  changeGroup(studentId: number, courseId: number, groupId: number): RefOutcome {
    const st = this.student(studentId);
    if (!st) return 'STUDENT_NOT_FOUND';
    if (!this.windowOpen(st)) return 'ENROLLMENT_WINDOW_CLOSED';
    if (st.remainingActions <= 0) return 'NO_ACTIONS_LEFT';
    const old = this.held(studentId).find((s) => s.courseId === courseId);
    if (!old) return 'NOT_ENROLLED';
    if (old.groupId === groupId) return 'SAME_GROUP';
    const target = this.section(courseId, groupId);
    if (!target) return 'SECTION_NOT_FOUND';
    const others = this.held(studentId).filter((s) => s.courseId !== courseId);
    const v = this.ruleViolation(st, target, others, false);
    if (v) return v;
    // The target place is taken first; only then is the old group left.
    const placed = this.takePlace(target, studentId);
    if (placed === 'SECTION_FULL') return placed;
    this.remove(old, studentId);
    st.remainingActions -= 1;
    return placed;
  }

  // ---------------------------------------------------------------------------------------------
  // Staff requests

  forceEnroll(studentId: number, courseId: number, groupId: number): RefOutcome {
    if (!this.student(studentId)) return 'STUDENT_NOT_FOUND';
    const sec = this.section(courseId, groupId);
    if (!sec) return 'SECTION_NOT_FOUND';
    const sameCourse = this.held(studentId).find((s) => s.courseId === courseId);
    if (sameCourse && sameCourse.groupId !== groupId) return 'SAME_COURSE';
    if (sec.registered.includes(studentId)) return 'ALREADY_IN_SECTION';
    if (sec.registered.length >= sec.capacity) sec.capacity = sec.registered.length + 1;
    sec.queue = sec.queue.filter((id) => id !== studentId);
    sec.registered.push(studentId);
    return 'ok';
  }

  forceDrop(studentId: number, courseId: number, groupId: number): RefOutcome {
    if (!this.student(studentId)) return 'STUDENT_NOT_FOUND';
    const sec = this.section(courseId, groupId);
    if (!sec) return 'SECTION_NOT_FOUND';
    if (!sec.registered.includes(studentId) && !sec.queue.includes(studentId)) return 'NOT_ENROLLED';
    this.remove(sec, studentId);
    return 'ok';
  }

  changeCapacity(courseId: number, groupId: number, capacity: number): RefOutcome {
    const sec = this.section(courseId, groupId);
    if (!sec) return 'SECTION_NOT_FOUND';
    if (!Number.isInteger(capacity) || capacity < 0) return 'BAD_REQUEST';
    if (capacity < sec.registered.length) return 'CAPACITY_BELOW_REGISTERED';
    sec.capacity = capacity;
    this.fillSeats(sec);
    return 'ok';
  }

  changeReserveCapacity(courseId: number, groupId: number, reserveCapacity: number): RefOutcome {
    const sec = this.section(courseId, groupId);
    if (!sec) return 'SECTION_NOT_FOUND';
    if (!Number.isInteger(reserveCapacity) || reserveCapacity < 0) return 'BAD_REQUEST';
    if (reserveCapacity < sec.queue.length) return 'RESERVE_BELOW_QUEUED';
    sec.reserveCapacity = reserveCapacity;
    return 'ok';
  }

  changeSexLock(courseId: number, groupId: number, sexLock: Gender | null): RefOutcome {
    const sec = this.section(courseId, groupId);
    if (!sec) return 'SECTION_NOT_FOUND';
    // The lock the section has already is not new: restating it is never a conflict (a member staff forced in stays).
    if (sexLock !== null && sexLock !== sec.sexLock) {
      for (const id of [...sec.registered, ...sec.queue]) {
        if (this.student(id)?.gender !== sexLock) return 'SEX_LOCK_CONFLICT';
      }
    }
    sec.sexLock = sexLock;
    return 'ok';
  }

  setClosed(courseId: number, groupId: number, closed: boolean): RefOutcome {
    const sec = this.section(courseId, groupId);
    if (!sec) return 'SECTION_NOT_FOUND';
    sec.closed = closed;
    return 'ok';
  }
}

/**
 * The Go service's packing, decoded by hand: weekday bits from bit 22 up, and
 * `start + 1440 * end` below. Two slots clash on a shared weekday when the minutes overlap.
 */
export function classesClash(a: number | null, b: number | null): boolean {
  if (a === null || b === null) return false;
  const daysA = Math.floor(a / 4194304);
  const daysB = Math.floor(b / 4194304);
  let sharedDay = false;
  for (let d = 0; d < 7; d++) {
    if (Math.floor(daysA / 2 ** d) % 2 === 1 && Math.floor(daysB / 2 ** d) % 2 === 1) sharedDay = true;
  }
  if (!sharedDay) return false;
  const startA = (a % 4194304) % 1440;
  const endA = Math.floor((a % 4194304) / 1440);
  const startB = (b % 4194304) % 1440;
  const endB = Math.floor((b % 4194304) / 1440);
  return startA < endB && startB < endA;
}
