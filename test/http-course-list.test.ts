import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Type } from '@fastify/type-provider-typebox';
import Fastify from 'fastify';
import { bySection, toCourseData } from '../src/http/course-data.js';
import { createCourseListRenderer } from '../src/http/course-list.js';
import { CourseData, type CourseDataT } from '../src/http/schemas.js';
import { C, createHttpFixture, expectStatus, S, type HttpFixture } from './support/http-fixture.js';

/**
 * The catalog (`GET /student/courses`, `GET /sections`) is written from JSON kept per unchanged
 * section and, while nothing changed, as the same bytes (src/http/course-list.ts). What a client
 * receives must be exactly what the schema's serializer made before, and every change must show
 * in the next list.
 */

let fx: HttpFixture;
beforeEach(async () => {
  fx = await createHttpFixture();
});
afterEach(async () => {
  await fx.close();
});

/** The list as Fastify's own serializer writes it from the route's response schema. */
async function serializedByFastify(member: string, department?: number): Promise<string> {
  const app = Fastify();
  app.get('/', { schema: { response: { 200: Type.Object({ [member]: Type.Array(CourseData) }) } } }, async () => ({
    [member]: fx.engine.listSections({ department }).sort(bySection).map(toCourseData),
  }));
  try {
    return (await app.inject({ method: 'GET', url: '/' })).payload;
  } finally {
    await app.close();
  }
}

const courses = (url = '/student/courses') => fx.request('GET', url, { token: fx.studentToken(S.bea) });
const sections = (url = '/sections') => fx.request('GET', url, { token: fx.staffToken() });
function find(list: CourseDataT[], [c, g]: readonly [number, number]): CourseDataT {
  const found = list.find((x) => x.course_id === c && x.group_id === g);
  assert.ok(found, `${c}/${g} is listed`);
  return found;
}

describe('the catalog', () => {
  it("is byte for byte what the response schema's serializer writes, with Fastify's JSON content type", async () => {
    expectStatus(await fx.request('PUT', '/student/course', { token: fx.studentToken(S.alice), body: { course_id: C.algo1[0], group_id: C.algo1[1] } }), 204);
    for (const [r, member, department] of [
      [await courses(), 'courses', undefined],
      [await courses(), 'courses', undefined], // the kept body
      [await courses('/student/courses?department=1'), 'courses', 1],
      [await sections(), 'sections', undefined],
      [await sections('/sections?department=2'), 'sections', 2],
    ] as const) {
      expectStatus(r, 200);
      assert.equal(r.raw, await serializedByFastify(member, department));
      assert.equal(r.headers['content-type'], 'application/json; charset=utf-8');
    }
  });

  it('shows every change in the next list: enroll, queue, drop, a staff edit, closing; also filtered and searched', async () => {
    const before = (await courses()).body.courses;
    assert.equal(find(before, C.algo1).registered_count, 0);
    const enroll = (student: number) => fx.request('PUT', '/student/course', { token: fx.studentToken(student), body: { course_id: C.algo1[0], group_id: C.algo1[1] } });
    for (const s of [S.f1, S.f2, S.alice]) expectStatus(await enroll(s), 204);
    let now = (await courses()).body.courses;
    assert.equal(find(now, C.algo1).registered_count, 2);
    assert.equal(find(now, C.algo1).reserved_count, 1);
    assert.equal(find((await courses('/student/courses?department=1')).body.courses, C.algo1).registered_count, 2);
    assert.equal(find((await sections()).body.sections, C.algo1).reserved_count, 1);

    expectStatus(await fx.request('DELETE', `/student/course?course_id=${C.algo1[0]}`, { token: fx.studentToken(S.f1) }), 204);
    now = (await courses()).body.courses;
    assert.equal(find(now, C.algo1).registered_count, 2, 'the queued student was promoted');
    assert.equal(find(now, C.algo1).reserved_count, 0);

    expectStatus(await fx.request('PATCH', `/sections/${C.physics[0]}/${C.physics[1]}`, { token: fx.staffToken(), body: { name: 'Physics II' } }), 200);
    expectStatus(await fx.request('POST', `/sections/${C.algo2[0]}/${C.algo2[1]}/close`, { token: fx.staffToken() }), 200);
    now = (await courses()).body.courses;
    assert.equal(find(now, C.physics).name, 'Physics II');
    assert.equal(find(now, C.algo2).closed, true);
    assert.equal(find((await sections()).body.sections, C.physics).name, 'Physics II');
    assert.deepEqual(
      (await sections('/sections?q=physics%20ii')).body.sections.map((x: { name: string }) => x.name),
      ['Physics II'],
    );
    assert.equal((await courses()).raw, await serializedByFastify('courses'));
  });
});

describe('createCourseListRenderer', () => {
  it('gives the same bytes while the same sections are unchanged, and new ones once one changes', async () => {
    const render = createCourseListRenderer();
    const first = render.render('courses', fx.engine.listSections(), 'all');
    assert.equal(render.render('courses', fx.engine.listSections(), 'all'), first, 'the very same buffer');
    assert.notEqual(render.render('courses', fx.engine.listSections(), null), first, 'a one-off list is made anew');
    expectStatus(await fx.request('PUT', '/student/course', { token: fx.studentToken(S.alice), body: { course_id: C.algo1[0], group_id: C.algo1[1] } }), 204);
    const after = render.render('courses', fx.engine.listSections(), 'all');
    assert.notEqual(after, first);
    assert.equal(find(JSON.parse(after.toString()).courses, C.algo1).registered_count, 1);
  });

  it("rests on the engine's views: the same frozen object for an unchanged section, a new one after a change", async () => {
    const key = (v: { info: { courseId: number; groupId: number } }) => `${v.info.courseId}/${v.info.groupId}`;
    const a = new Map(fx.engine.listSections().map((v) => [key(v), v]));
    expectStatus(await fx.request('PUT', '/student/course', { token: fx.studentToken(S.alice), body: { course_id: C.algo1[0], group_id: C.algo1[1] } }), 204);
    const b = new Map(fx.engine.listSections().map((v) => [key(v), v]));
    assert.equal(b.get('102/1'), a.get('102/1'));
    assert.ok(Object.isFrozen(b.get('102/1')));
    assert.notEqual(b.get('101/1'), a.get('101/1'));
    assert.equal(b.get('101/1')?.registeredCount, 1);
  });
});
