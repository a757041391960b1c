import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { unstorableTextPath } from '../src/http/validation.js';
import type { LoadedState } from '../src/persistence/types.js';
import { C, expectError, expectStatus, MINUTE, S, STAFF, T0 } from './support/http-fixture.js';
import { normalize } from './support/scenario.js';
import { embeddedMode, fullMode, seededStore, type ModeFactory } from './support/store-harness.js';

/**
 * Text PostgreSQL cannot store (a NUL character, an unpaired UTF-16 surrogate) passes every
 * schema. Found first by the database it failed the whole group commit it was written in: 503 for
 * the staff member and for every student whose change shared the batch, and the engine reloaded
 * its state. It is a malformed request: 400 with the field named, nothing changed, nobody else
 * touched. Run on the stores that write to a real database (PGlite, PostgreSQL).
 */

describe('unstorableTextPath', () => {
  it('finds NUL characters and unpaired surrogates in values and member names, and passes the rest', () => {
    assert.equal(unstorableTextPath({ name: 'Algebra 😀 é', n: 1, list: ['a', null] }), null);
    assert.equal(unstorableTextPath({ name: 'a\u0000b' }), '/name');
    assert.equal(unstorableTextPath({ info: { notes: 'x\udc00' } }), '/info/notes');
    assert.equal(unstorableTextPath({ notes: 'x\ud800' }), '/notes');
    assert.equal(unstorableTextPath({ list: ['ok', 'x\ud83dy'] }), '/list/1');
    assert.equal(unstorableTextPath({ ['k\u0000']: 1 }), '/k\u0000');
    assert.equal(unstorableTextPath('\u0000'), '');
  });
});

const NOW = T0 + 5 * MINUTE;
const NEW_SECTION = { course_id: 901, group_id: 1, units: 3, capacity: 2, reserve_capacity: 2 };

for (const mode of [embeddedMode, fullMode] as ModeFactory[]) {
  describe(`text a database cannot store is a 400 (${mode.name} store)`, async () => {
    const { skip, harness } = await seededStore(mode, NOW);

    it('refuses it with the field named, changes nothing, and fails no one else', { skip, timeout: 120_000 }, async () => {
      const h = harness();
      const staff = h.token(STAFF, 'staff');
      const before = h.engine.dumpState();
      const cases: { method: string; url: string; body: Record<string, unknown>; field: string }[] = [
        { method: 'POST', url: '/sections', body: { ...NEW_SECTION, name: 'a\u0000b' }, field: 'name' },
        { method: 'POST', url: '/sections', body: { ...NEW_SECTION, name: 'ok', lecturer: 'x\udc00' }, field: 'lecturer' },
        { method: 'PATCH', url: `/sections/${C.algo1[0]}/${C.algo1[1]}`, body: { notes: 'x\ud800' }, field: 'notes' },
      ];
      for (const c of cases) {
        // An innocent enroll sent at the same moment shares the group commit the bad text would have.
        const [bad, innocent] = await Promise.all([
          h.request(c.method, c.url, { token: staff, body: c.body }),
          h.request('PUT', '/student/course', { token: h.token(S.alice, 'student'), body: { course_id: C.physics[0], group_id: C.physics[1] } }),
        ]);
        expectError(bad, 400, 'BAD_REQUEST');
        assert.match(String((bad.body as { reason: string }).reason), new RegExp(`^${c.field} must not contain NUL`), c.field);
        expectStatus(innocent, 204);
        // Drop again, so the next case starts from the same state.
        expectStatus(
          await h.request('DELETE', `/student/course?course_id=${C.physics[0]}`, { token: h.token(S.alice, 'student') }),
          204,
        );
      }
      // The sections are as before but for their sequence numbers (the enroll and drop above); the
      // database agrees.
      const sections = (state: LoadedState) =>
        (normalize(state) as { sections: { seq: number }[] }).sections.map(({ seq: _seq, ...rest }) => rest);
      const after = sections(h.engine.dumpState());
      assert.deepEqual(after, sections(before));
      assert.deepEqual(sections(await h.databaseState()), after);
      // Well-formed text of the same shape is taken.
      expectStatus(await h.request('POST', '/sections', { token: staff, body: { ...NEW_SECTION, name: 'Algebra 😀' } }), 201);
    });

    it('department ids outside the Go schema\'s SMALLINT are refused 400; the largest one is stored', { skip, timeout: 120_000 }, async () => {
      const h = harness();
      const staff = h.token(STAFF, 'staff');
      for (const id of [32_768, 40_000, 2_147_483_647]) {
        const [bad, innocent] = await Promise.all([
          h.request('POST', '/departments', { token: staff, body: { id, name: 'Overflow' } }),
          h.request('PATCH', `/students/${S.bea}`, { token: staff, body: { max_units: 17 + (id % 3) } }),
        ]);
        expectError(bad, 400, 'BAD_REQUEST');
        expectStatus(innocent, 200);
      }
      expectStatus(await h.request('POST', '/departments', { token: staff, body: { id: 32_767, name: 'Largest' } }), 201);
      expectStatus(await h.request('PATCH', `/students/${S.bea}`, { token: staff, body: { department_id: 32_767 } }), 200);
      const db = await h.databaseState();
      assert.ok(db.departments.some((d) => d.id === 32_767), 'the largest id reached the database');
      assert.equal(db.students.find((st) => st.id === S.bea)?.departmentId, 32_767);
    });
  });
}
