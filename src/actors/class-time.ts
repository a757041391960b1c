/**
 * The Go service packs one weekly class slot into an integer: `start_minute + 1440 * end_minute`
 * in the low 22 bits and a weekday bitmask from bit 22 up (bit 22 + d for weekday d, 0 = Sunday).
 * Kept bit-for-bit so its rows and clients keep working.
 */
const SLOT_BITS = 22;
const SLOT_MASK = (1 << SLOT_BITS) - 1;
const MINUTES_PER_DAY = 1440;

export interface ClassSlot {
  /** Bitmask of weekdays, bit d for weekday d (0 = Sunday). */
  days: number;
  startMinute: number;
  endMinute: number;
}

export function decodeClassTime(packed: number): ClassSlot {
  const slot = packed & SLOT_MASK;
  return {
    days: Math.floor(packed / 2 ** SLOT_BITS) & 0x7f,
    startMinute: slot % MINUTES_PER_DAY,
    endMinute: Math.floor(slot / MINUTES_PER_DAY),
  };
}

export function encodeClassTime(slot: ClassSlot): number {
  return (slot.startMinute + MINUTES_PER_DAY * slot.endMinute) + slot.days * 2 ** SLOT_BITS;
}

/** Checks a packed value decodes to a sane slot (some day, start before end, within a day). */
export function isValidClassTime(packed: number): boolean {
  return classSlot(packed) !== null;
}

/**
 * The slot a section's stored class time stands for, or null for none: no class time, or a value
 * that does not decode to a valid slot ({@link isValidClassTime}). The API refuses such values, but
 * rows written straight into PostgreSQL (an operator, the Go service's data) can hold them: -1
 * decoded to seven slots ending at minute 2912, and an inverted slot (start after end) never
 * overlapped anything, so it was listed against the API's own schema and escaped the clash rule
 * (probe L, finding 2). Every reader (the listing, the clash rule, the registrar's views) goes
 * through this, so such a section is consistently one without class time; the stored value itself
 * is kept (the engine warns about it at start).
 */
export function classSlot(packed: number | null): ClassSlot | null {
  // Decoded once: the clash rule calls this for every held section on each enroll.
  if (packed === null || !Number.isSafeInteger(packed) || packed < 0 || packed >= 2 ** (SLOT_BITS + 7)) return null;
  const s = decodeClassTime(packed);
  return s.days !== 0 && s.startMinute < s.endMinute && s.endMinute <= MINUTES_PER_DAY ? s : null;
}

/** A stored class time that is not "none" yet does not decode (see {@link classSlot}). */
export function isUndecodableClassTime(packed: number | null): boolean {
  return packed !== null && !isValidClassTime(packed);
}

/**
 * One `{day, start_minute, end_minute}` entry per weekday, as the Go API's CourseData lists them;
 * none for no class time or one that does not decode ({@link classSlot}).
 */
export function classTimeEntries(packed: number | null): { day: number; start_minute: number; end_minute: number }[] {
  const s = classSlot(packed);
  if (s === null) return [];
  const out: { day: number; start_minute: number; end_minute: number }[] = [];
  for (let d = 0; d < 7; d++) {
    if (s.days & (1 << d)) out.push({ day: d, start_minute: s.startMinute, end_minute: s.endMinute });
  }
  return out;
}

/**
 * Two slots clash when they share a weekday and their minutes overlap (touching ends do not). No
 * class time, or one that does not decode ({@link classSlot}), clashes with nothing.
 */
export function classTimesOverlap(a: number | null, b: number | null): boolean {
  const x = classSlot(a);
  const y = classSlot(b);
  if (x === null || y === null) return false;
  return (x.days & y.days) !== 0 && x.startMinute < y.endMinute && y.startMinute < x.endMinute;
}
