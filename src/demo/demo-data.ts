import { encodeClassTime } from '../actors/class-time.js';
import type { Department, StaffRecord, StudentRecord } from '../actors/student-rules.js';
import type { Sex } from '../actors/types.js';
import type { NewSection } from '../engine/engine.js';
import { createSeededRandom } from '../seeded-random.js';

/**
 * A realistic, deterministic demo data set: what `npm start` loads into an empty store so that a
 * first-time user can log in and enroll at once, and what tests and benchmarks can rebuild
 * bit-for-bit from a seed. Everything random comes from a seeded PRNG (never `Math.random`), and
 * everything time-related is derived from the `now` passed in, so the same options always give
 * the same data.
 */

/**
 * First demo student. Their enrollment window opened five minutes before `now`, so with the
 * default 60-minute window they can enroll right away; printed at start so nobody has to look it up.
 */
export const DEMO_STUDENT_ID = 40000001;
/** Shared by every demo student. Only its bcrypt hash (`passwordHash`) goes into the data set. */
export const DEMO_STUDENT_PASSWORD = 'student-pass';
/** First demo staff member, for the staff routes and the admin pages. */
export const DEMO_STAFF_ID = 1;
/** Shared by every demo staff member. Only its bcrypt hash (`staffPasswordHash`) goes into the data set. */
export const DEMO_STAFF_PASSWORD = 'staff-pass';
/** Seed used when none is given, so every fresh install gets the same catalogue. */
export const DEFAULT_DEMO_SEED = 0x5eed_2024;

export interface DemoDataOptions {
  /** PRNG seed; the same seed (and `now`) gives deep-equal output. */
  seed?: number;
  /** Number of sections (course groups); default 1,500, at most 7,920 (20 departments x 99 courses x 4 groups). */
  sections?: number;
  /** Number of students; default 1,000. */
  students?: number;
  /** The clock the data is built around (unix ms): enrollment windows and the exam period. Default `Date.now()`. */
  now?: number;
  /**
   * The enrollment window the engine runs with, in minutes (default 60). Only used to place the
   * handful of late students in the windows that follow the first one.
   */
  windowMinutes?: number;
  /**
   * bcrypt hash shared by every student. The caller hashes DEMO_STUDENT_PASSWORD once: hashing a
   * thousand passwords at a realistic cost would delay the first start by about a minute.
   */
  passwordHash: string;
  /** bcrypt hash shared by every staff member (of DEMO_STAFF_PASSWORD). */
  staffPasswordHash: string;
}

export interface DemoData {
  departments: Department[];
  staff: StaffRecord[];
  students: StudentRecord[];
  sections: NewSection[];
  /**
   * The first minutes of registration, so the first screen shows a term in progress: enrollment
   * requests (in time order, inside each student's window) that the sections decide with their own
   * rules when the data is loaded, and a few sections staff closed afterwards.
   */
  enrollments: { studentId: number; courseId: number; groupId: number; at: number }[];
  closures: { courseId: number; groupId: number; at: number }[];
}

/** Students 40000001 up to this one start with an empty schedule (the README's examples use them). */
export const DEMO_FRESH_STUDENTS = 100;
/** The README's example section; never filled or closed by the demo activity. */
export const DEMO_EXAMPLE_COURSE = 40101;
/** Sections most students want (small ones, so they fill and queue), and sections staff closed. */
const HOT_SECTIONS = 25;
const HOT_MAX_CAPACITY = 40;
const CLOSED_SECTIONS = 8;
/** Share of the students with an open window who have already sent requests. */
const ACTIVE_SHARE = 0.85;

/**
 * Builds the demo activity from its own PRNG stream (derived from the seed), so the catalogue and
 * the students stay exactly what they were without it.
 */
function demoActivity(
  seed: number,
  sections: NewSection[],
  students: StudentRecord[],
  now: number,
  windowMs: number,
): Pick<DemoData, 'enrollments' | 'closures'> {
  const rng = createRng((seed ^ 0x16_16_16) >>> 0);
  const candidates = sections.filter((s) => s.info.courseId !== DEMO_EXAMPLE_COURSE);
  const small = candidates.filter((s) => s.capacity <= HOT_MAX_CAPACITY);
  const pickDistinct = (from: NewSection[], n: number, avoid: Set<NewSection>): NewSection[] => {
    const out: NewSection[] = [];
    const pool = from.filter((s) => !avoid.has(s));
    while (out.length < n && pool.length > 0) out.push(...pool.splice(rng.int(0, pool.length - 1), 1));
    return out;
  };
  const hot = pickDistinct(small, HOT_SECTIONS, new Set());
  const closed = pickDistinct(candidates, CLOSED_SECTIONS, new Set(hot));
  const enrollments: DemoData['enrollments'] = [];
  const active = students.slice(DEMO_FRESH_STUDENTS).filter((s) => s.enrollmentStart <= now && now < s.enrollmentStart + windowMs);
  // Requests arrive between the window's opening and a minute before `now`; staff close after them.
  for (const st of active) {
    if (!rng.chance(ACTIVE_SHARE)) continue;
    const from = st.enrollmentStart;
    const span = Math.max(1, now - 60_000 - from);
    const wanted = [...pickDistinct(hot, rng.int(1, 2), new Set()), ...pickDistinct(candidates, rng.int(1, 3), new Set(hot))];
    for (const s of wanted) {
      enrollments.push({ studentId: st.id, courseId: s.info.courseId, groupId: s.info.groupId, at: from + rng.int(0, span - 1) });
    }
  }
  enrollments.sort((a, b) => a.at - b.at || a.studentId - b.studentId);
  const closures = closed.map((s) => ({ courseId: s.info.courseId, groupId: s.info.groupId, at: now - 30_000 }));
  return { enrollments, closures };
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const FIRST_STUDENT_ID = DEMO_STUDENT_ID;
const COURSE_ID_BASE = 40000;
const MAX_COURSES_PER_DEPARTMENT = 99;
const MAX_GROUPS = 4;

/** Real-sounding departments with the core topics their courses are named after. */
const DEPARTMENTS: { name: string; topics: string[] }[] = [
  { name: 'Computer Engineering', topics: ['Fundamentals of Programming', 'Data Structures', 'Algorithm Design', 'Computer Architecture', 'Operating Systems', 'Computer Networks', 'Database Systems', 'Compiler Design', 'Artificial Intelligence', 'Software Engineering', 'Digital Logic Design', 'Theory of Computation'] },
  { name: 'Electrical Engineering', topics: ['Electric Circuits', 'Electronics', 'Signals and Systems', 'Electromagnetics', 'Control Systems', 'Power Systems', 'Communication Systems', 'Digital Signal Processing', 'Electric Machines', 'Microprocessors', 'Power Electronics', 'Linear Control'] },
  { name: 'Mechanical Engineering', topics: ['Statics', 'Dynamics', 'Thermodynamics', 'Fluid Mechanics', 'Heat Transfer', 'Strength of Materials', 'Machine Design', 'Manufacturing Processes', 'Vibrations', 'Engineering Drawing', 'Internal Combustion Engines', 'Mechatronics'] },
  { name: 'Civil Engineering', topics: ['Structural Analysis', 'Soil Mechanics', 'Reinforced Concrete', 'Steel Structures', 'Hydraulics', 'Surveying', 'Transportation Engineering', 'Foundation Engineering', 'Construction Management', 'Water Resources', 'Earthquake Engineering', 'Pavement Design'] },
  { name: 'Chemical and Petroleum Engineering', topics: ['Mass Transfer', 'Chemical Reaction Engineering', 'Process Control', 'Unit Operations', 'Reservoir Engineering', 'Transport Phenomena', 'Process Design', 'Petroleum Refining', 'Polymer Engineering', 'Drilling Engineering', 'Separation Processes', 'Biochemical Engineering'] },
  { name: 'Aerospace Engineering', topics: ['Aerodynamics', 'Flight Mechanics', 'Aircraft Structures', 'Propulsion', 'Orbital Mechanics', 'Aircraft Design', 'Gas Dynamics', 'Spacecraft Attitude Control', 'Aeroelasticity', 'Avionics', 'Composite Structures', 'Rocket Propulsion'] },
  { name: 'Industrial Engineering', topics: ['Operations Research', 'Engineering Economics', 'Production Planning', 'Quality Control', 'Facility Layout', 'Systems Simulation', 'Supply Chain Management', 'Project Management', 'Work Study and Ergonomics', 'Inventory Systems', 'Stochastic Processes', 'Decision Analysis'] },
  { name: 'Materials Science and Engineering', topics: ['Physical Metallurgy', 'Ceramic Materials', 'Phase Transformations', 'Mechanical Behavior of Materials', 'Corrosion', 'Crystallography', 'Materials Characterization', 'Welding Metallurgy', 'Nanomaterials', 'Heat Treatment', 'Extractive Metallurgy', 'Electronic Materials'] },
  { name: 'Physics', topics: ['General Physics', 'Classical Mechanics', 'Electromagnetism', 'Quantum Mechanics', 'Statistical Mechanics', 'Optics', 'Solid State Physics', 'Nuclear Physics', 'Mathematical Physics', 'Modern Physics', 'Astrophysics', 'Particle Physics'] },
  { name: 'Mathematical Sciences', topics: ['Calculus', 'Linear Algebra', 'Differential Equations', 'Real Analysis', 'Abstract Algebra', 'Probability Theory', 'Numerical Analysis', 'Complex Analysis', 'Discrete Mathematics', 'Mathematical Statistics', 'Topology', 'Graph Theory'] },
  { name: 'Chemistry', topics: ['General Chemistry', 'Organic Chemistry', 'Inorganic Chemistry', 'Physical Chemistry', 'Analytical Chemistry', 'Biochemistry', 'Polymer Chemistry', 'Spectroscopy', 'Quantum Chemistry', 'Electrochemistry', 'Medicinal Chemistry', 'Instrumental Analysis'] },
  { name: 'Energy Engineering', topics: ['Renewable Energy Systems', 'Energy Conversion', 'Solar Energy', 'Wind Energy', 'Energy Economics', 'Nuclear Reactor Engineering', 'Energy Storage', 'Building Energy Systems', 'Hydrogen Technologies', 'Energy Policy', 'Combustion', 'Power Plant Engineering'] },
  { name: 'Management and Economics', topics: ['Microeconomics', 'Macroeconomics', 'Principles of Management', 'Financial Accounting', 'Corporate Finance', 'Marketing Management', 'Econometrics', 'Organizational Behavior', 'Strategic Management', 'Game Theory', 'Human Resource Management', 'International Trade'] },
  { name: 'Philosophy of Science', topics: ['Introduction to Philosophy', 'Logic', 'Philosophy of Science', 'Epistemology', 'Philosophy of Mind', 'History of Science', 'Ethics', 'Philosophy of Mathematics', 'Philosophy of Physics', 'Philosophy of Technology', 'Metaphysics', 'Philosophy of Language'] },
  { name: 'Languages and Linguistics', topics: ['Academic English', 'Technical Writing', 'General Linguistics', 'Phonetics', 'Syntax', 'Semantics', 'Sociolinguistics', 'Translation Studies', 'German Language', 'French Language', 'Second Language Acquisition', 'Discourse Analysis'] },
  { name: 'Biological Sciences', topics: ['General Biology', 'Cell Biology', 'Genetics', 'Molecular Biology', 'Microbiology', 'Ecology', 'Physiology', 'Bioinformatics', 'Immunology', 'Evolutionary Biology', 'Developmental Biology', 'Neurobiology'] },
  { name: 'Architecture', topics: ['Architectural Design', 'History of Architecture', 'Building Construction', 'Urban Design', 'Architectural Drawing', 'Building Services', 'Landscape Architecture', 'Structures for Architects', 'Environmental Design', 'Architectural Theory', 'Digital Fabrication', 'Interior Design'] },
  { name: 'Earth Sciences', topics: ['Physical Geology', 'Mineralogy', 'Petrology', 'Structural Geology', 'Geophysics', 'Hydrogeology', 'Sedimentology', 'Geochemistry', 'Seismology', 'Remote Sensing', 'Economic Geology', 'Engineering Geology'] },
  { name: 'History and Humanities', topics: ['World History', 'History of Civilizations', 'Art History', 'Modern History', 'Cultural Studies', 'Political Science', 'Sociology', 'Psychology', 'Comparative Religion', 'Classical Literature', 'Archaeology', 'Media Studies'] },
  { name: 'Physical Education', topics: ['Physical Education', 'Swimming', 'Volleyball', 'Basketball', 'Football', 'Fitness Training', 'Table Tennis', 'Martial Arts', 'Sports Physiology', 'Athletics', 'Badminton', 'Yoga and Flexibility'] },
];

/** How the n-th course of a department is named once its core topics are used up. */
const VARIANTS: ((topic: string) => string)[] = [
  (t) => t,
  (t) => `Advanced ${t}`,
  (t) => `${t} Laboratory`,
  (t) => `Topics in ${t}`,
  (t) => `Seminar in ${t}`,
  (t) => `Applied ${t}`,
  (t) => `Special Topics in ${t}`,
  (t) => `Research Methods in ${t}`,
  (t) => `Graduate ${t}`,
];
const LAB_VARIANT = 2;

const FIRST_NAMES = [
  'Ali', 'Sara', 'Reza', 'Maryam', 'John', 'Emily', 'Wei', 'Mei', 'Hassan', 'Fatemeh', 'Carlos', 'Lucia',
  'Ahmed', 'Layla', 'David', 'Anna', 'Kenji', 'Yuki', 'Omar', 'Nadia', 'Pierre', 'Claire', 'Ivan', 'Olga',
  'Raj', 'Priya', 'Mohammad', 'Zahra', 'Thomas', 'Sofia',
];
const LAST_NAMES = [
  'Ahmadi', 'Karimi', 'Hosseini', 'Rezaei', 'Moradi', 'Tehrani', 'Smith', 'Johnson', 'Chen', 'Wang', 'Garcia',
  'Martinez', 'Nakamura', 'Tanaka', 'Khan', 'Haddad', 'Dubois', 'Laurent', 'Petrov', 'Ivanova', 'Sharma',
  'Patel', 'Schmidt', 'Weber', 'Rossi', 'Bianchi', 'Novak', 'Kowalski', 'Fischer', 'Jafari', 'Sadeghi',
  'Mousavi', 'Nguyen', 'Kim', 'Park', 'Silva', 'Costa', 'Ozturk', 'Yilmaz', 'Andersson',
];

/** Weekday sets (0 = Sunday): the usual Mon/Wed and Tue/Thu pairs, plus single-day slots. */
const DAY_SETS: number[][] = [[1, 3], [2, 4], [1, 4], [3, 5], [1], [2], [3], [4], [5]];
const DAY_SET_WEIGHTS = [30, 30, 8, 8, 5, 5, 5, 5, 4];
const UNIT_WEIGHTS = [10, 20, 55, 15]; // 1..4 units
const EXAM_HOURS = [9, 13, 16];
const EXAM_DAYS = 10; // the weekdays of two weeks
const EXAM_SHARE = 0.9;
const SEX_LOCK_SHARE = 0.05;
const CLASS_MINUTES = 90;
const FIRST_START = 8 * 60;
const LAST_START = 18 * 60;

interface Rng {
  /** Integer in [min, max], both inclusive. */
  int(min: number, max: number): number;
  chance(p: number): boolean;
  pick<T>(items: readonly T[]): T;
  /** Index drawn with the given relative weights. */
  weighted(weights: readonly number[]): number;
}

function createRng(seed: number): Rng {
  const next = createSeededRandom(seed);
  const int = (min: number, max: number): number => min + Math.floor(next() * (max - min + 1));
  return {
    int,
    chance: (p) => next() < p,
    pick: <T>(items: readonly T[]): T => items[int(0, items.length - 1)] as T,
    weighted: (weights) => {
      let total = 0;
      for (const w of weights) total += w;
      let r = next() * total;
      for (let i = 0; i < weights.length; i++) {
        r -= weights[i] as number;
        if (r < 0) return i;
      }
      return weights.length - 1;
    },
  };
}

function wholeNumber(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be a whole number from ${min} to ${max} (got ${value})`);
  }
  return value;
}

/** Midnight UTC of the first Monday at least 15 weeks after `now`: the end-of-term exam period. */
function examPeriodStart(now: number): number {
  const day = Math.floor((now + 15 * 7 * DAY) / DAY) * DAY;
  const weekday = new Date(day).getUTCDay();
  return day + ((8 - weekday) % 7) * DAY;
}

/** Exam start (unix ms, UTC) of exam day `d` (0..9, weekdays only) at `hour`. */
function examTime(periodStart: number, d: number, hour: number): number {
  const week = Math.floor(d / 5);
  return periodStart + (week * 7 + (d % 5)) * DAY + hour * HOUR;
}

/**
 * Builds the demo data set: 20 departments, `sections` course groups (courses of 1-4 groups,
 * course ids 40101.., spread evenly over the departments), `students` students and 3 staff.
 *
 * - Every section has a 90-minute class on one or two weekdays starting 8:00-18:00 on the half
 *   hour; about 90% of courses have an exam (UTC, 9:00/13:00/16:00 on a weekday of a two-week
 *   period starting 15 weeks after `now`), shared by all groups of the course; about 5% of
 *   sections are open to one sex only.
 * - Students have 20 max units and 5 remaining actions. Their enrollment window opens five
 *   minutes before `now`, so the demo works as soon as the server is up; the last handful (one in
 *   fifty) open in the following windows instead, so the window rule can be seen at work.
 * - All students share `passwordHash` and all staff `staffPasswordHash`, hashed once by the caller.
 *
 * Deterministic: the same options (including `now`) give deep-equal output.
 */
export function generateDemoData(options: DemoDataOptions): DemoData {
  const seed = options.seed ?? DEFAULT_DEMO_SEED;
  const sectionCount = wholeNumber(
    'sections',
    options.sections ?? 1500,
    0,
    DEPARTMENTS.length * MAX_COURSES_PER_DEPARTMENT * MAX_GROUPS,
  );
  const studentCount = wholeNumber('students', options.students ?? 1000, 0, 9_999_999);
  const windowMs = wholeNumber('windowMinutes', options.windowMinutes ?? 60, 1, 60 * 24 * 365) * MINUTE;
  const now = options.now ?? Date.now();
  if (!Number.isSafeInteger(now)) throw new RangeError(`now must be unix milliseconds (got ${now})`);
  const rng = createRng(seed);

  const departments: Department[] = DEPARTMENTS.map((d, i) => ({ id: i + 1, name: d.name }));

  const staff: StaffRecord[] = [
    { id: DEMO_STAFF_ID, passwordHash: options.staffPasswordHash, departmentId: null },
    { id: 2, passwordHash: options.staffPasswordHash, departmentId: 1 },
    { id: 3, passwordHash: options.staffPasswordHash, departmentId: 9 },
  ];

  // Sections: courses go round-robin over the departments, so the n-th course of department d is
  // 40000 + 100 d + n (40101, 40201, ..., 42001, 40102, ...).
  const sections: NewSection[] = [];
  const periodStart = examPeriodStart(now);
  const maxCourses = DEPARTMENTS.length * MAX_COURSES_PER_DEPARTMENT;
  for (let course = 0; sections.length < sectionCount; course++) {
    const deptIndex = course % DEPARTMENTS.length;
    const n = Math.floor(course / DEPARTMENTS.length) + 1;
    const dept = DEPARTMENTS[deptIndex] as (typeof DEPARTMENTS)[number];
    const courseId = COURSE_ID_BASE + (deptIndex + 1) * 100 + n;
    const variant = Math.floor((n - 1) / dept.topics.length);
    const topic = dept.topics[(n - 1) % dept.topics.length] as string;
    const name = variant < VARIANTS.length
      ? (VARIANTS[variant] as (t: string) => string)(topic)
      : `${topic} ${variant - VARIANTS.length + 2}`;
    const units = variant === LAB_VARIANT ? 1 : rng.weighted(UNIT_WEIGHTS) + 1;
    const exam = rng.chance(EXAM_SHARE)
      ? examTime(periodStart, rng.int(0, EXAM_DAYS - 1), rng.pick(EXAM_HOURS))
      : null;

    // More groups than drawn only when the remaining course ids could not hold the rest.
    const remaining = sectionCount - sections.length;
    const needed = Math.ceil(remaining / (maxCourses - course));
    const groups = Math.min(remaining, Math.max(rng.int(1, MAX_GROUPS), needed));

    for (let groupId = 1; groupId <= groups; groupId++) {
      const days = DAY_SETS[rng.weighted(DAY_SET_WEIGHTS)] as number[];
      const startMinute = FIRST_START + 30 * rng.int(0, (LAST_START - FIRST_START) / 30);
      const mask = days.reduce((m, d) => m | (1 << d), 0);
      const sexLock: Sex | null = rng.chance(SEX_LOCK_SHARE) ? (rng.chance(0.5) ? 'male' : 'female') : null;
      sections.push({
        info: {
          courseId,
          groupId,
          forDepartment: deptIndex + 1,
          name,
          lecturer: `Dr. ${rng.pick(FIRST_NAMES)} ${rng.pick(LAST_NAMES)}`,
          units,
          examTime: exam,
          classTime: encodeClassTime({ days: mask, startMinute, endMinute: startMinute + CLASS_MINUTES }),
          notes: sexLock === null ? '' : `${sexLock === 'male' ? 'Male' : 'Female'} students only`,
        },
        capacity: 5 * rng.int(4, 24),
        reserveCapacity: rng.int(0, 20),
        sexLock,
      });
    }
  }

  // Students: one in fifty, at the end of the id range, gets one of the next three windows.
  const lead = Math.min(5 * MINUTE, Math.floor(windowMs / 2));
  const late = Math.floor(studentCount / 50);
  const year = new Date(now).getUTCFullYear();
  const students: StudentRecord[] = [];
  for (let i = 0; i < studentCount; i++) {
    const lateIndex = i - (studentCount - late);
    const window = lateIndex >= 0 ? 1 + (lateIndex % 3) : 0;
    students.push({
      id: FIRST_STUDENT_ID + i,
      passwordHash: options.passwordHash,
      enrollmentStart: now - lead + window * windowMs,
      maxUnits: 20,
      remainingActions: 5,
      departmentId: rng.int(1, departments.length),
      entryYear: year - rng.int(0, 4),
      gender: rng.chance(0.5) ? 'male' : 'female',
    });
  }

  return { departments, staff, students, sections, ...demoActivity(seed, sections, students, now, windowMs) };
}
