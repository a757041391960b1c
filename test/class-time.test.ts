import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  classSlot,
  classTimeEntries,
  classTimesOverlap,
  decodeClassTime,
  encodeClassTime,
  isUndecodableClassTime,
  isValidClassTime,
} from '../src/actors/class-time.js';

const SUN = 0;
const MON = 1;
const TUE = 2;
const SAT = 6;
const day = (d: number): number => 1 << d;
const slot = (days: number, startMinute: number, endMinute: number): number => encodeClassTime({ days, startMinute, endMinute });

describe('class time packing (bit 22 + d, start + 1440 * end)', () => {
  test('encodes the Go layout bit for bit', () => {
    // Monday 10:00-11:30: 600 + 1440 * 690 in the low bits, bit 22 + 1 for Monday.
    assert.equal(slot(day(MON), 600, 690), 600 + 1440 * 690 + 2 ** 23);
    // Sunday is bit 22.
    assert.equal(slot(day(SUN), 0, 60), 0 + 1440 * 60 + 2 ** 22);
    // Saturday is bit 28, the highest.
    assert.equal(slot(day(SAT), 480, 540), 480 + 1440 * 540 + 2 ** 28);
    // Several days set several bits.
    assert.equal(slot(day(SUN) | day(TUE), 480, 540), 480 + 1440 * 540 + 2 ** 22 + 2 ** 24);
  });

  test('decode inverts encode for every day mask and a spread of minutes', () => {
    for (let days = 1; days < 128; days++) {
      for (const [startMinute, endMinute] of [[0, 1], [0, 1440], [479, 480], [600, 690], [1380, 1439], [1439, 1440]] as const) {
        const packed = encodeClassTime({ days, startMinute, endMinute });
        assert.deepEqual(decodeClassTime(packed), { days, startMinute, endMinute });
        assert.ok(isValidClassTime(packed), `valid: ${days} ${startMinute}-${endMinute}`);
      }
    }
  });

  test('decodes a hand-packed value', () => {
    assert.deepEqual(decodeClassTime(2 ** 22 * 0b0100010 + 900 + 1440 * 990), { days: 0b0100010, startMinute: 900, endMinute: 990 });
  });

  test('lists one entry per weekday, in day order', () => {
    assert.deepEqual(classTimeEntries(slot(day(SUN) | day(TUE) | day(SAT), 600, 690)), [
      { day: 0, start_minute: 600, end_minute: 690 },
      { day: 2, start_minute: 600, end_minute: 690 },
      { day: 6, start_minute: 600, end_minute: 690 },
    ]);
    assert.deepEqual(classTimeEntries(null), []);
  });

  test('rejects nonsense', () => {
    assert.equal(isValidClassTime(600 + 1440 * 690), false, 'no day');
    assert.equal(isValidClassTime(slot(day(MON), 690, 600)), false, 'end before start');
    assert.equal(isValidClassTime(slot(day(MON), 600, 600)), false, 'empty');
    assert.equal(isValidClassTime(-1), false);
    assert.equal(isValidClassTime(1.5), false);
    assert.equal(isValidClassTime(2 ** 29), false, 'beyond Saturday');
  });
});

describe('class time overlap', () => {
  const mon10to12 = slot(day(MON), 600, 720);

  test('overlapping minutes on a shared weekday clash', () => {
    assert.equal(classTimesOverlap(mon10to12, slot(day(MON), 660, 780)), true);
    assert.equal(classTimesOverlap(mon10to12, slot(day(MON), 540, 601)), true);
    assert.equal(classTimesOverlap(mon10to12, slot(day(MON), 630, 660)), true, 'contained');
    assert.equal(classTimesOverlap(mon10to12, mon10to12), true, 'identical');
    assert.equal(classTimesOverlap(mon10to12, slot(day(MON) | day(TUE), 719, 800)), true, 'one shared day of several');
  });

  test('touching intervals do not overlap', () => {
    assert.equal(classTimesOverlap(mon10to12, slot(day(MON), 720, 810)), false);
    assert.equal(classTimesOverlap(mon10to12, slot(day(MON), 480, 600)), false);
    assert.equal(classTimesOverlap(slot(day(MON), 720, 810), mon10to12), false);
  });

  test('different weekdays never clash, whatever the minutes', () => {
    assert.equal(classTimesOverlap(mon10to12, slot(day(TUE), 600, 720)), false);
    assert.equal(classTimesOverlap(mon10to12, slot(day(SUN) | day(SAT), 0, 1440)), false);
  });

  test('a missing class time never clashes', () => {
    assert.equal(classTimesOverlap(null, mon10to12), false);
    assert.equal(classTimesOverlap(mon10to12, null), false);
    assert.equal(classTimesOverlap(null, null), false);
  });

  test('agrees with a brute-force minute-by-minute check', () => {
    const samples: number[] = [];
    for (const days of [day(MON), day(TUE), day(MON) | day(TUE), day(SAT)]) {
      for (const [s, e] of [[0, 30], [30, 60], [45, 90], [60, 120], [0, 1440], [1400, 1440]] as const) samples.push(slot(days, s, e));
    }
    const brute = (a: number, b: number): boolean => {
      const x = decodeClassTime(a);
      const y = decodeClassTime(b);
      for (let d = 0; d < 7; d++) {
        if (!(x.days & y.days & (1 << d))) continue;
        for (let m = 0; m < 1440; m++) {
          if (m >= x.startMinute && m < x.endMinute && m >= y.startMinute && m < y.endMinute) return true;
        }
      }
      return false;
    };
    for (const a of samples) {
      for (const b of samples) {
        assert.equal(classTimesOverlap(a, b), brute(a, b), `${JSON.stringify(decodeClassTime(a))} vs ${JSON.stringify(decodeClassTime(b))}`);
        assert.equal(classTimesOverlap(a, b), classTimesOverlap(b, a), 'symmetric');
      }
    }
  });
});

describe('a stored class time that does not decode (rows written straight into the database)', () => {
  const minusOne = -1;
  const inverted = slot(day(MON), 700, 600);
  const pastMidnight = 100 + 1440 * 1500 + 2 ** 23;
  const noDay = 600 + 1440 * 690;

  test('is no class time: no slot, no entries', () => {
    for (const v of [minusOne, inverted, pastMidnight, noDay, 2 ** 29 + slot(day(MON), 600, 690)]) {
      assert.equal(classSlot(v), null, String(v));
      assert.deepEqual(classTimeEntries(v), [], String(v));
      assert.equal(isUndecodableClassTime(v), true, String(v));
    }
    assert.equal(classSlot(null), null);
    assert.equal(isUndecodableClassTime(null), false, 'none is not undecodable');
    assert.deepEqual(classSlot(slot(day(MON), 600, 690)), { days: day(MON), startMinute: 600, endMinute: 690 });
  });

  test('clashes with nothing, whatever the other slot', () => {
    // -1 once decoded to every weekday 1023-2912 and clashed with any late class.
    assert.equal(classTimesOverlap(minusOne, slot(day(MON), 1100, 1200)), false);
    assert.equal(classTimesOverlap(slot(day(TUE), 1100, 1200), minusOne), false);
    assert.equal(classTimesOverlap(pastMidnight, slot(day(MON), 1400, 1440)), false);
    assert.equal(classTimesOverlap(inverted, inverted), false);
  });
});
