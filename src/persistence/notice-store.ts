import { EngineError } from '../errors.js';
import type {
  OutboxNotice,
  AttemptResult,
  AttemptRow,
  DeliveryRow,
  DeliveryStatus,
  NoticeStore,
  TransitionRow,
  WatchRow,
  WebhookRow,
} from './notice-types.js';
import { databaseUnavailable, type SqlClient, type SqlExecutor } from './sql-client.js';

/**
 * The notices' SQL, shared by both stores (PGlite in embedded mode, PostgreSQL in full mode). Driver
 * errors become EngineError('UNAVAILABLE') here, except a repeated active watch (ALREADY_WATCHING).
 */

type Row = Record<string, unknown>;

const iso = (v: unknown): string => (v instanceof Date ? v : new Date(v as string)).toISOString();
const msOf = (v: unknown): number => (v instanceof Date ? v : new Date(v as string)).getTime();
const json = (v: unknown): Record<string, unknown> => (typeof v === 'string' ? JSON.parse(v) : v) as Record<string, unknown>;

function watch(r: Row): WatchRow {
  return {
    id: Number(r.id),
    studentId: Number(r.student_id),
    courseId: Number(r.course_id),
    groupId: Number(r.group_id),
    createdAt: iso(r.created_at),
    firedSeq: r.fired_seq === null || r.fired_seq === undefined ? null : Number(r.fired_seq),
  };
}

function transition(r: Row): TransitionRow {
  return {
    id: Number(r.id),
    courseId: Number(r.course_id),
    groupId: Number(r.group_id),
    seq: Number(r.seq),
    type: r.type as string,
    studentId: r.student_id === null ? null : Number(r.student_id),
    at: msOf(r.at),
    payload: json(r.payload),
  };
}

function webhook(r: Row): WebhookRow {
  return {
    id: Number(r.id),
    url: r.url as string,
    secret: r.secret as string,
    kinds: (r.kinds as string[] | null) ?? null,
    createdBy: Number(r.created_by),
    createdAt: iso(r.created_at),
    active: Boolean(r.active),
  };
}

function delivery(r: Row): DeliveryRow {
  return {
    id: Number(r.id),
    webhookId: Number(r.webhook_id),
    noticeKey: r.notice_key as string,
    kind: r.kind as string,
    studentId: Number(r.student_id),
    body: r.body as string,
    status: r.status as DeliveryStatus,
    attempts: Number(r.attempts),
    nextAttemptAt: iso(r.next_attempt_at),
    createdAt: iso(r.created_at),
    finishedAt: r.finished_at === null || r.finished_at === undefined ? null : iso(r.finished_at),
  };
}

const SECTION_NOTICE_TYPES = [
  'studentPromoted',
  'studentDropped',
  'capacityChanged',
  'reserveCapacityChanged',
  'sexLockChanged',
  'infoUpdated',
  'sectionClosed',
  'sectionReopened',
];


/** Wraps every method so a driver error surfaces as the project's own code. */
function guarded<T extends object>(impl: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, fn] of Object.entries(impl)) {
    out[k] = async (...args: unknown[]) => {
      try {
        return await (fn as (...a: unknown[]) => Promise<unknown>)(...args);
      } catch (err) {
        if (err instanceof EngineError) throw err;
        throw databaseUnavailable(err);
      }
    };
  }
  return out as T;
}

/** First key of the seat watches' advisory locks (transaction-scoped; the second is a hash of the section or student). */
const WATCH_LOCK = 727275;

/**
 * Serialises, cluster-wide, the watch changes of one section: the firing of an opening (so two
 * instances evaluating the same opening mark it once) and the bounds check of a new watch.
 */
async function lockSection(tx: SqlExecutor, courseId: number, groupId: number): Promise<void> {
  await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [WATCH_LOCK, `section:${courseId}:${groupId}`]);
}

export function createSqlNoticeStore(db: SqlClient): NoticeStore {
  const store: NoticeStore = {
    async activeWatches() {
      const r = await db.query<Row>('SELECT * FROM seat_watches WHERE fired_seq IS NULL ORDER BY id');
      return r.rows.map(watch);
    },
    async watchersOfStudentSections(studentId) {
      const r = await db.query<Row>(
        `SELECT w.* FROM seat_watches w
         WHERE w.fired_seq IS NULL AND (w.course_id, w.group_id) IN
           (SELECT m.course_id, m.group_id FROM seat_watches m WHERE m.student_id = $1 AND m.fired_seq IS NULL)
         ORDER BY w.id`,
        [studentId],
      );
      return r.rows.map(watch);
    },
    async addWatch(studentId, courseId, groupId, check) {
      try {
        return await db.transaction(async (tx) => {
          // Section first, then student, in every transaction that takes both: no lock cycle.
          await lockSection(tx, courseId, groupId);
          await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [WATCH_LOCK, `student:${studentId}`]);
          if (check) {
            const mine = await tx.query<Row>('SELECT * FROM seat_watches WHERE student_id = $1 AND fired_seq IS NULL ORDER BY id', [studentId]);
            const section = await tx.query<Row>('SELECT * FROM seat_watches WHERE course_id = $1 AND group_id = $2 AND fired_seq IS NULL ORDER BY id', [
              courseId,
              groupId,
            ]);
            const { end } = check(mine.rows.map(watch), section.rows.map(watch));
            if (end.length > 0) await tx.query('DELETE FROM seat_watches WHERE id = ANY($1::bigint[]) AND fired_seq IS NULL', [end]);
          }
          const r = await tx.query<Row>('INSERT INTO seat_watches (student_id, course_id, group_id) VALUES ($1, $2, $3) RETURNING *', [
            studentId,
            courseId,
            groupId,
          ]);
          return watch(r.rows[0] as Row);
        });
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === '23505') throw new EngineError('ALREADY_WATCHING', 'you are already watching this section');
        throw err;
      }
    },
    async removeWatch(studentId, courseId, groupId) {
      const r = await db.query(
        'DELETE FROM seat_watches WHERE student_id = $1 AND course_id = $2 AND group_id = $3 AND fired_seq IS NULL',
        [studentId, courseId, groupId],
      );
      return r.rowCount > 0;
    },
    async endWatches(ids) {
      if (ids.length === 0) return;
      await db.query('DELETE FROM seat_watches WHERE id = ANY($1::bigint[]) AND fired_seq IS NULL', [ids]);
    },
    async fireWatches(courseId, groupId, seq, at, choose) {
      // Most openings are of sections nobody watches: one read, no transaction, for those.
      const any = await db.query('SELECT 1 FROM seat_watches WHERE course_id = $1 AND group_id = $2 AND (fired_seq IS NULL OR fired_seq = $3) LIMIT 1', [
        courseId,
        groupId,
        seq,
      ]);
      if (any.rows.length === 0) return { told: [], recorded: false };
      return db.transaction(async (tx) => {
        await lockSection(tx, courseId, groupId);
        const done = await tx.query<Row>('SELECT student_id FROM seat_watches WHERE course_id = $1 AND group_id = $2 AND fired_seq = $3 ORDER BY id', [
          courseId,
          groupId,
          seq,
        ]);
        if (done.rows.length > 0) return { told: done.rows.map((x) => Number(x.student_id)), recorded: false };
        const active = await tx.query<Row>('SELECT * FROM seat_watches WHERE course_id = $1 AND group_id = $2 AND fired_seq IS NULL ORDER BY id', [
          courseId,
          groupId,
        ]);
        const rows = active.rows.map(watch);
        if (rows.length === 0) return { told: [], recorded: false };
        const c = choose(rows);
        if (c.end.length > 0) await tx.query('DELETE FROM seat_watches WHERE id = ANY($1::bigint[]) AND fired_seq IS NULL', [c.end]);
        if (c.fire.length === 0) return { told: [], recorded: c.end.length > 0 };
        await tx.query('UPDATE seat_watches SET fired_seq = $2, fired_at = $3 WHERE id = ANY($1::bigint[]) AND fired_seq IS NULL', [c.fire, seq, new Date(at)]);
        await insertOutboxDeliveries(tx, c.notices);
        const byId = new Map(rows.map((w) => [w.id, w.studentId]));
        return { told: c.fire.map((id) => byId.get(id) as number), recorded: true };
      });
    },
    async watchedSectionHeads() {
      const r = await db.query<Row>(
        `SELECT course_id, group_id, COALESCE(max(fired_seq), 0) AS seq FROM seat_watches
         WHERE (course_id, group_id) IN (SELECT course_id, group_id FROM seat_watches WHERE fired_seq IS NULL)
         GROUP BY course_id, group_id`,
      );
      return new Map(r.rows.map((x) => [`${Number(x.course_id)}:${Number(x.group_id)}`, Number(x.seq)]));
    },
    async transitionId(courseId, groupId, seq) {
      const r = await db.query<Row>('SELECT id FROM transitions WHERE stream = $1 AND seq = $2', [`section:${courseId}:${groupId}`, seq]);
      return r.rows[0] ? Number(r.rows[0].id) : null;
    },
    async sectionHeads(keys) {
      const r = keys
        ? await db.query<Row>('SELECT stream, seq FROM stream_heads WHERE stream = ANY($1::text[])', [keys.map((k) => `section:${k}`)])
        : await db.query<Row>("SELECT stream, seq FROM stream_heads WHERE stream LIKE 'section:%'");
      return new Map(r.rows.map((x) => [(x.stream as string).slice('section:'.length), Number(x.seq)]));
    },
    async studentTransitionsAfter(studentId, afterId, limit) {
      const r = await db.query<Row>(
        `SELECT id, course_id, group_id, seq, type, student_id, at, payload FROM transitions
         WHERE student_id = $1 AND id > $2 AND course_id IS NOT NULL ORDER BY id LIMIT $3`,
        [studentId, afterId, limit],
      );
      return r.rows.map(transition);
    },
    async sectionTransitionsAfter(studentId, sections, afterId, limit) {
      if (sections.length === 0) return [];
      const r = await db.query<Row>(
        `WITH held AS (SELECT c, g FROM unnest($1::bigint[], $2::bigint[]) AS h(c, g)),
              since AS (
                SELECT h.c, h.g, COALESCE((SELECT max(x.seq) FROM transitions x
                   WHERE x.course_id = h.c AND x.group_id = h.g AND x.student_id = $3
                     AND x.type IN ('studentEnrolled', 'studentQueued')), 0) AS s
                FROM held h)
         SELECT t.id, t.course_id, t.group_id, t.seq, t.type, t.student_id, t.at, t.payload
         FROM transitions t JOIN since ON t.course_id = since.c AND t.group_id = since.g
         WHERE t.id > $4 AND t.seq > since.s AND t.student_id IS DISTINCT FROM $3 AND t.type = ANY($5::text[])
         ORDER BY t.id LIMIT $6`,
        [sections.map((s) => s.courseId), sections.map((s) => s.groupId), studentId, afterId, SECTION_NOTICE_TYPES, limit],
      );
      return r.rows.map(transition);
    },
    async firedWatchesAfter(studentId, afterId) {
      const r = await db.query<Row>(
        `SELECT w.*, t.id AS transition_id, t.at AS transition_at FROM seat_watches w
         JOIN transitions t ON t.stream = 'section:' || w.course_id || ':' || w.group_id AND t.seq = w.fired_seq
         WHERE w.student_id = $1 AND w.fired_seq IS NOT NULL AND t.id > $2 ORDER BY t.id`,
        [studentId, afterId],
      );
      return r.rows.map((x) => ({ ...watch(x), transitionId: Number(x.transition_id), at: msOf(x.transition_at) }));
    },
    async createWebhook({ url, secret, kinds, createdBy }, maxActive) {
      return db.transaction(async (tx) => {
        if (maxActive !== undefined) {
          // Serializes registrations (of every instance) until commit; readers of webhooks are not blocked.
          await tx.query('LOCK TABLE webhooks IN SHARE ROW EXCLUSIVE MODE');
          const c = await tx.query<{ n: number | string }>('SELECT count(*) AS n FROM webhooks WHERE active');
          const active = Number(c.rows[0]?.n ?? 0);
          if (active >= maxActive) {
            throw new EngineError(
              'TOO_MANY_WEBHOOKS',
              `there are ${active} active webhooks, the most allowed (WEBHOOK_MAX_ACTIVE=${maxActive}); delete one (DELETE /webhooks/{id}) before registering another`,
              { active, max: maxActive },
            );
          }
        }
        const r = await tx.query<Row>('INSERT INTO webhooks (url, secret, kinds, created_by) VALUES ($1, $2, $3, $4) RETURNING *', [
          url,
          secret,
          kinds,
          createdBy,
        ]);
        return webhook(r.rows[0] as Row);
      });
    },
    async listWebhooks() {
      return (await db.query<Row>('SELECT * FROM webhooks ORDER BY id')).rows.map(webhook);
    },
    async getWebhook(id) {
      const r = await db.query<Row>('SELECT * FROM webhooks WHERE id = $1', [id]);
      return r.rows[0] ? webhook(r.rows[0]) : null;
    },
    async deactivateWebhook(id) {
      return db.transaction(async (tx) => {
        const r = await tx.query('UPDATE webhooks SET active = false WHERE id = $1 AND active', [id]);
        // What was waiting for its (next) attempt is not sent any more; an attempt running now finds
        // the webhook inactive before its next one.
        await tx.query(
          `UPDATE webhook_deliveries SET status = 'cancelled', finished_at = now() WHERE webhook_id = $1 AND status IN ('pending', 'retrying')`,
          [id],
        );
        return r.rowCount > 0;
      });
    },
    async cancelDelivery(id) {
      await db.query(`UPDATE webhook_deliveries SET status = 'cancelled', finished_at = now() WHERE id = $1 AND status IN ('pending', 'retrying')`, [id]);
    },
    async insertDeliveries(rows) {
      if (rows.length === 0) return [];
      const r = await db.query<Row>(
        `INSERT INTO webhook_deliveries (webhook_id, notice_key, kind, student_id, body)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[])
         ON CONFLICT (webhook_id, notice_key) DO NOTHING RETURNING id`,
        [rows.map((x) => x.webhookId), rows.map((x) => x.noticeKey), rows.map((x) => x.kind), rows.map((x) => x.studentId), rows.map((x) => x.body)],
      );
      return r.rows.map((x) => Number(x.id));
    },
    async getDelivery(id) {
      const r = await db.query<Row>(
        'SELECT d.*, w.url, w.secret, w.active AS webhook_active FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = $1',
        [id],
      );
      const x = r.rows[0];
      return x ? { ...delivery(x), url: x.url as string, secret: x.secret as string, webhookActive: Boolean(x.webhook_active) } : null;
    },
    async recordAttempt(a: AttemptResult) {
      await db.transaction(async (tx) => {
        const ins = await tx.query(
          `INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (delivery_id, attempt) DO NOTHING`,
          [a.deliveryId, a.attempt, a.statusCode, a.error, a.durationMs],
        );
        if (ins.rowCount === 0) return;
        await tx.query(
          `UPDATE webhook_deliveries SET status = $2, attempts = GREATEST(attempts, $3),
             next_attempt_at = COALESCE($4, next_attempt_at),
             finished_at = CASE WHEN $2 IN ('delivered', 'dead') THEN now() ELSE NULL END
           WHERE id = $1 AND status <> 'cancelled'`,
          [a.deliveryId, a.status, a.attempt, a.nextAttemptAt === null ? null : new Date(a.nextAttemptAt)],
        );
      });
    },
    async claimNewDeliveries(limit) {
      const r = await db.query<Row>(
        `UPDATE webhook_deliveries SET queued = true
         WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND NOT queued ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING id`,
        [limit],
      );
      return r.rows.map((x) => Number(x.id)).sort((a, b) => a - b);
    },
    async dueDeliveries(now, limit) {
      const r = await db.query<Row>(
        `SELECT id FROM webhook_deliveries WHERE status IN ('pending', 'retrying') AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2`,
        [new Date(now), limit],
      );
      return r.rows.map((x) => Number(x.id));
    },
    async deferDelivery(id, at) {
      await db.query(`UPDATE webhook_deliveries SET next_attempt_at = $2 WHERE id = $1 AND status IN ('pending', 'retrying')`, [id, new Date(at)]);
    },
    async listDeliveries(webhookId, limit, filter = {}) {
      const ds = (
        await db.query<Row>(
          `SELECT * FROM webhook_deliveries WHERE webhook_id = $1 AND ($3::bigint IS NULL OR id < $3) AND ($4::text IS NULL OR status = $4)
            ORDER BY id DESC LIMIT $2`,
          [webhookId, limit, filter.before ?? null, filter.status ?? null],
        )
      ).rows.map(delivery);
      if (ds.length === 0) return [];
      const attempts = await db.query<Row>(
        'SELECT delivery_id, attempt, at, status_code, error, duration_ms FROM webhook_attempts WHERE delivery_id = ANY($1::bigint[]) ORDER BY delivery_id, attempt',
        [ds.map((d) => d.id)],
      );
      const by = new Map<number, AttemptRow[]>();
      for (const x of attempts.rows) {
        const list = by.get(Number(x.delivery_id)) ?? [];
        list.push({
          attempt: Number(x.attempt),
          at: iso(x.at),
          statusCode: x.status_code === null ? null : Number(x.status_code),
          error: (x.error as string | null) ?? null,
          durationMs: Number(x.duration_ms),
        });
        by.set(Number(x.delivery_id), list);
      }
      return ds.map((d) => ({ ...d, attemptLog: by.get(d.id) ?? [] }));
    },
  };
  return guarded(store);
}

/**
 * One webhook delivery per notice and matching active webhook (a repeated `(webhook, notice)` is
 * skipped); returns how many were recorded. Used by the outbox and for fired seat watches, each
 * inside the transaction that records what the notices come from.
 */
export async function insertOutboxDeliveries(tx: SqlExecutor, notices: OutboxNotice[]): Promise<number> {
  if (notices.length === 0) return 0;
  const r = await tx.query(
    `INSERT INTO webhook_deliveries (webhook_id, notice_key, kind, student_id, body)
     SELECT w.id, n.key, n.kind, n.student, n.body
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) WITH ORDINALITY AS n(key, kind, student, body, i)
     JOIN webhooks w ON w.active AND (w.kinds IS NULL OR n.kind = ANY (w.kinds))
     ORDER BY n.i, w.id
     ON CONFLICT (webhook_id, notice_key) DO NOTHING`,
    [notices.map((n) => n.noticeKey), notices.map((n) => n.kind), notices.map((n) => n.studentId), notices.map((n) => n.body)],
  );
  return r.rowCount;
}
