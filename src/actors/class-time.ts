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
  if (!Number.isSafeInteger(packed) || packed < 0 || packed >= 2 ** (SLOT_BITS + 7)) return false;
  const s = decodeClassTime(packed);
  return s.days !== 0 && s.startMinute < s.endMinute && s.endMinute <= MINUTES_PER_DAY;
}

/** One `{day, start_minute, end_minute}` entry per weekday, as the Go API's CourseData lists them. */
export function classTimeEntries(packed: number | null): { day: number; start_minute: number; end_minute: number }[] {
  if (packed === null) return [];
  const s = decodeClassTime(packed);
  const out: { day: number; start_minute: number; end_minute: number }[] = [];
  for (let d = 0; d < 7; d++) {
    if (s.days & (1 << d)) out.push({ day: d, start_minute: s.startMinute, end_minute: s.endMinute });
  }
  return out;
}

/** Two slots clash when they share a weekday and their minutes overlap (touching ends do not). */
export function classTimesOverlap(a: number | null, b: number | null): boolean {
  if (a === null || b === null) return false;
  const x = decodeClassTime(a);
  const y = decodeClassTime(b);
  return (x.days & y.days) !== 0 && x.startMinute < y.endMinute && y.startMinute < x.endMinute;
}
