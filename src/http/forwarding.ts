import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify';
import { EngineError, outcomeUnknown } from '../errors.js';
import { homeShardOf, shardOfCourse, type ClusterMembership } from '../persistence/types.js';
import { clientAddress } from './auth.js';
import { REQUEST_ID_HEADER } from './request-id.js';

/**
 * Any instance answers any request (docs/scale-out.md, section 4): a write for a shard another
 * instance owns is sent, as it came (method, path, body, Authorization, request id), over HTTP to
 * the owner's address recorded with its lease, and the owner's reply is relayed unchanged. Then
 * this instance waits until its read copy has consumed the log past the owner's reply, so the
 * client's next read here shows its change.
 *
 * A forward is retried only when nothing can have been done: the connection was refused, or the
 * target said NOT_OWNER (it refuses before deciding). A forward that broke after it was sent is
 * answered 503 (outcome unknown), as a lost broker confirm is.
 */

/** Marks a request forwarded once; an instance that does not own the shard then refuses it instead of forwarding again. */
export const FORWARDED_HEADER = 'x-engine-forwarded';
/**
 * Marks a student's write sent by the student's home to the section's owner: the owner brings its
 * read copy up to the log's end before deciding, so it sees the student's previous changes.
 */
export const HOME_HEADER = 'x-engine-home';
/**
 * Marks a write sent on by a home that holds it while that home's shard drains: the section's
 * owner takes it even if its own shard is draining too (both drains would otherwise wait on each
 * other's writes until the forwards gave up).
 */
export const DRAINING_HOME_HEADER = 'x-engine-home-draining';
/**
 * Carries the address of the client that sent a forwarded request (signed like the marks), so the
 * instance that serves it throttles password checks under that client, not under the instance that
 * forwarded it (which would share one failure budget among every client it forwards for).
 */
export const CLIENT_HEADER = 'x-engine-client';

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * True when another instance forwarded this request here (its signed `x-engine-forwarded` mark
     * checked, taken once); false for a client's request, also one carrying a forged mark. The
     * request metrics skip such a request: the instance the client talked to records it already,
     * and dashboards sum over instances (src/http/request-metrics.ts).
     */
    arrivedByForward: boolean;
  }
}

/**
 * The shortest time an owner is given to answer a forwarded write, past the retry window: its
 * decision may wait for a broker confirm (BROKER_CONFIRM_TIMEOUT_MS, 5 s by default) or a late lease
 * renewal, so a short or zero FORWARD_RETRY_MS must not cut the answer off.
 */
export const MIN_FORWARD_ANSWER_MS = 10_000;

export interface ForwardingOptions {
  cluster: ClusterMembership;
  /** How long a forward keeps retrying while the owner cannot be reached or changes (ms). */
  retryMs: number;
  /** Shortest answer window past the retry window (ms; default {@link MIN_FORWARD_ANSWER_MS}). */
  minAnswerMs?: number;
  /** Longest wait for the read copy after a forwarded write (ms). */
  syncTimeoutMs?: number;
  /**
   * Shared by every instance (JWT_SECRET): the marks that change how an instance decides a write
   * (`x-engine-home`, `x-engine-home-draining`) carry an HMAC made with it, so a client cannot set
   * them itself (a forged home mark would skip the one-write-at-a-time order of its student).
   */
  secret: string;
}

/**
 * How long a mark is good for, either side of its sender's clock (ms). A mark is checked when its
 * request arrives, moments after it was made; the window only has to cover the instances' clock
 * skew. Within it, each mark is taken once (a captured forwarded request sent again is a client's).
 */
export const MARK_MAX_AGE_MS = 30_000;

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/**
 * Writes that change no shard, served where they arrive: token issue, refresh and revocation (a
 * revocation must hold on the instance that answered it at once, whether or not Redis carries it
 * to the others; forwarded, it held only at the owner until Redis came back), and the admin feed's
 * one-use ticket.
 */
const LOCAL_PATHS = new Set(['/login', '/refresh', '/logout', '/admin/feed-ticket']);
const LOCAL_PATH_PATTERNS = [/^\/students\/\d+\/revoke-tokens$/, /^\/staff\/\d+\/revoke-tokens$/];

interface Relayed {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Whether `p` settles within `ms` (its outcome is not looked at). */
function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    const done = () => {
      clearTimeout(t);
      resolve(true);
    };
    p.then(done, done);
  });
}

/** Who a request is from, for {@link createForwarder}'s read-your-writes bookkeeping (null: anonymous). */
function principalKey(request: FastifyRequest): string | null {
  const p = request.principal;
  return p ? `${p.role}:${p.id}` : null;
}

function courseOf(request: FastifyRequest): number | null {
  for (const src of [request.params, request.body, request.query] as unknown[]) {
    if (typeof src !== 'object' || src === null) continue;
    const o = src as Record<string, unknown>;
    // A swap is routed by the section it enrolls in (docs/swap.md: decided first, by that owner).
    const nested = [o.info, o.enroll].find((v): v is Record<string, unknown> => typeof v === 'object' && v !== null);
    const raw = o.courseId ?? o.course_id ?? nested?.course_id;
    const n = typeof raw === 'string' ? Number(raw) : raw;
    if (typeof n === 'number' && Number.isSafeInteger(n)) return n;
  }
  return null;
}

const STUDENT_RECORD_PATH = /^\/students\/(\d{1,15})$/;

/**
 * The student a write acts for (their schedule is what the student-level rules read): the token's
 * subject on the student routes and on a student's change of password, `std_id` on a staff
 * force-enroll or force-drop, the id of a student record staff correct (`PATCH /students/{id}`);
 * null otherwise.
 */
function studentOf(request: FastifyRequest, path: string): number | null {
  // A student's own change of password is a step of the student's stream too (the record's).
  if (path === '/student/course' || path === '/student/swap' || path === '/me/password') {
    const p = request.principal;
    return p !== null && p.role === 'student' ? p.id : null;
  }
  // A registrar's correction of a student's record is decided between the student's own writes.
  const record = STUDENT_RECORD_PATH.exec(path);
  if (record !== null && request.method === 'PATCH') return Number(record[1]);
  if (path === '/staff/force-std') {
    for (const src of [request.body, request.query] as unknown[]) {
      if (typeof src !== 'object' || src === null) continue;
      const raw = (src as Record<string, unknown>).std_id;
      const n = typeof raw === 'string' ? Number(raw) : raw;
      if (typeof n === 'number' && Number.isSafeInteger(n)) return n;
    }
  }
  return null;
}

class Refused extends Error {}
/** The owner did not answer a forward before its deadline: the outcome is unknown. */
class SendTimedOut extends Error {}

/**
 * How a write was dealt with: served by this instance (the hook lets it through) or relayed from
 * another (the reply is sent). A string, not the reply: a Fastify reply is a thenable, and
 * returning it from an async function would resolve to undefined once sent.
 */
type Served = 'here' | 'relayed';

/**
 * How long a pooled connection to an owner may sit idle before this instance closes it (ms). An
 * owner closes an idle connection after its keep-alive timeout; a forward written on it at that
 * moment is cut off ("socket hang up") with its outcome unknown, a 503 for the student. The pool
 * must therefore let go first, and by a margin a busy event loop cannot eat. Node 20's Agent only
 * heeds the owner's `Keep-Alive: timeout` hint (less a second) when it has an idle timeout of its
 * own, so this one also switches that on: the shorter of the two applies.
 */
export const FORWARD_IDLE_MS = 2_000;

/**
 * Returns the preValidation hook that forwards writes this instance does not own, with
 * `recognizeForwarded`, the onRequest hook that marks a request another instance forwarded here
 * (`request.arrivedByForward`), so that one client request is counted once across instances.
 */
export function createForwarder(opts: ForwardingOptions) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256, timeout: FORWARD_IDLE_MS });
  const syncTimeoutMs = opts.syncTimeoutMs ?? 2000;
  const cluster = opts.cluster;
  const markKey = createHmac('sha256', opts.secret).update('engine-forwarding-marks').digest();

  /**
   * The value of a mark: `<ms>.<nonce>.<HMAC>`, the HMAC over the mark's name, the method, the URL,
   * the request id sent with it, the time and the nonce. Time and nonce let a receiver take each
   * mark once: a forwarded request captured on the network and sent again is not a home's write.
   */
  function markFor(name: string, method: string, url: string, requestId: string, stamp: string): string {
    return `${stamp}.${markMac(name, method, url, requestId, stamp)}`;
  }

  function markMac(name: string, method: string, url: string, requestId: string, stamp: string): string {
    return createHmac('sha256', markKey).update(`${name}\n${method}\n${url}\n${requestId}\n${stamp}`).digest('base64url');
  }

  /** Marks already taken, with when they may be forgotten: once their own time is out of the window, which then refuses them. */
  const takenMarks = new Map<string, number>();

  function take(key: string, sentAt: number, now: number): boolean {
    // Roughly in time order (senders' clocks differ a little): forget from the oldest while they
    // are due; one due later only delays the rest, it never makes a mark forgotten too early.
    for (const [k, forgetAt] of takenMarks) {
      if (forgetAt > now) break;
      takenMarks.delete(k);
    }
    if (takenMarks.has(key)) return false;
    takenMarks.set(key, sentAt + MARK_MAX_AGE_MS + 1);
    return true;
  }

  /** Whether the request carries the mark, made by an instance for this request and not seen before (a client's own value, or a replay, is ignored). */
  function marked(request: FastifyRequest, name: string): boolean {
    const v = request.headers[name];
    const id = request.headers[REQUEST_ID_HEADER];
    if (typeof v !== 'string' || typeof id !== 'string') return false;
    const dot = v.lastIndexOf('.');
    if (dot <= 0) return false;
    const stamp = v.slice(0, dot);
    const sentAt = Number(stamp.slice(0, stamp.indexOf('.')));
    const now = Date.now();
    if (!Number.isSafeInteger(sentAt) || Math.abs(now - sentAt) > MARK_MAX_AGE_MS) return false;
    const want = Buffer.from(markMac(name, request.method, request.url, id, stamp));
    const got = Buffer.from(v.slice(dot + 1));
    if (got.length !== want.length || !timingSafeEqual(got, want)) return false;
    return take(`${name}\n${stamp}`, sentAt, now);
  }

  /** The client address a forwarding instance signed into the request, if the mark holds (taken once). */
  function forwardedClient(request: FastifyRequest): string | null {
    if (request.headers[CLIENT_HEADER] === undefined || !marked(request, CLIENT_HEADER)) return null;
    const v = request.headers[CLIENT_HEADER] as string;
    const stamp = v.slice(0, v.lastIndexOf('.'));
    const encoded = stamp.slice(stamp.lastIndexOf('.') + 1);
    const address = Buffer.from(encoded, 'base64url').toString('utf8');
    return address === '' ? null : address;
  }

  /** Requests whose forwarded mark was checked, with the outcome: a mark is taken once, and both hooks ask. */
  const forwardedChecked = new WeakMap<FastifyRequest, boolean>();

  /** Whether another instance forwarded the request here (its signed mark holds); checked once per request. */
  function forwardedHere(request: FastifyRequest): boolean {
    if (request.headers[FORWARDED_HEADER] === undefined) return false;
    let v = forwardedChecked.get(request);
    if (v === undefined) {
      v = marked(request, FORWARDED_HEADER);
      forwardedChecked.set(request, v);
    }
    return v;
  }

  /** Students whose home is here: the tail of each one's chain of writes (they run one at a time). */
  const studentChains = new Map<number, Promise<void>>();
  /** Students whose last write was decided by another owner: the read copy is brought up to date before their next one. */
  const staleStudents = new Set<number>();
  /**
   * Clients (by principal) that were answered a relayed 2xx this instance's read copy had not
   * caught up with, and since when: their reads here wait for the copy (refused 503 if it still
   * cannot catch up) instead of showing the state before their own change (SPEC: a client sees
   * its own acknowledged change in its next read from the same instance).
   */
  const behind = new Map<string, number>();

  /**
   * Sends the write to `address` and resolves with the owner's whole answer, or rejects once
   * `deadline` (a performance.now() instant) passes without it. The deadline bounds the whole
   * exchange, not just a silent socket: an owner that is stopped (SIGSTOP, a frozen VM, a host cut
   * off without a reset) accepts the connection in its kernel and never answers, and a socket
   * timeout alone held the write (and, behind it, the student's chain of writes) for 30 s.
   */
  function send(
    address: string,
    request: FastifyRequest,
    payload: Buffer | undefined,
    home: boolean,
    homeDraining: boolean,
    deadline: number,
  ): Promise<Relayed> {
    const url = new URL(request.url, address);
    // A new stamp per send: a retry (after a refused connection or NOT_OWNER) is a new mark.
    const stamp = `${Date.now()}.${randomBytes(12).toString('base64url')}`;
    const headers: http.OutgoingHttpHeaders = {
      [FORWARDED_HEADER]: markFor(FORWARDED_HEADER, request.method, request.url, request.id, stamp),
      [REQUEST_ID_HEADER]: request.id,
    };
    if (home) headers[HOME_HEADER] = markFor(HOME_HEADER, request.method, request.url, request.id, stamp);
    if (home && homeDraining) headers[DRAINING_HOME_HEADER] = markFor(DRAINING_HOME_HEADER, request.method, request.url, request.id, stamp);
    // The address inside the signed stamp (base64url: no dots), as the first instance saw it.
    headers[CLIENT_HEADER] = markFor(CLIENT_HEADER, request.method, request.url, request.id, `${stamp}.${Buffer.from(clientAddress(request)).toString('base64url')}`);
    if (request.headers.authorization) headers.authorization = request.headers.authorization;
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    return new Promise<Relayed>((resolve, reject) => {
      const req = http.request(url, { method: request.method, headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', (err) => reject(err));
        // Cut off mid-answer (the deadline, the owner killed): not an answer.
        res.on('close', () => {
          if (!res.complete) reject(new Error('the answer of the owner was cut off'));
        });
      });
      const timer = setTimeout(
        () => req.destroy(new SendTimedOut('the owner did not answer within the forward time (FORWARD_RETRY_MS plus the larger of FORWARD_RETRY_MS and 10 s)')),
        Math.max(1, deadline - performance.now()),
      );
      timer.unref();
      req.once('close', () => clearTimeout(timer));
      req.on('error', (err: NodeJS.ErrnoException) => {
        // Only a refused connection proves the request never reached the owner. A reset on a
        // kept-alive socket does not: an owner killed (-9) after reading the request, and perhaps
        // after publishing its change, resets it too, and a retry would then be answered on the
        // new owner's state (SAME_COURSE for a change that did happen). It is in doubt (503).
        clearTimeout(timer);
        if (err.code === 'ECONNREFUSED') reject(new Refused(err.code));
        else reject(err);
      });
      req.end(payload);
    });
  }

  function notOwnerReply(r: Relayed): boolean {
    if (r.status !== 503) return false;
    try {
      const b = JSON.parse(r.body.toString('utf8')) as { code?: unknown };
      return b.code === 'NOT_OWNER';
    } catch {
      return false;
    }
  }

  /** Whether the home's shard, whose admission a student's write holds, is being given up (it routes elsewhere now). */
  function homeDrains(homeShard: number): boolean {
    return !cluster.routeWrite(homeShard).self;
  }

  /** Serves the write here if this instance takes it for the shard; counted until it is answered. */
  function admit(reply: FastifyReply, shard: number, forDrainingHome = false): boolean {
    const answered = cluster.admitWrite(shard, forDrainingHome ? { forDrainingHome } : undefined);
    if (!answered) return false;
    // A connection already gone emits neither event again: the count would never drop, and the
    // shard's drain would wait its whole bound for a write nobody is waiting for.
    if (reply.raw.destroyed) {
      answered();
      return true;
    }
    reply.raw.once('finish', answered);
    reply.raw.once('close', answered);
    return true;
  }

  /**
   * The slow path: this instance does not own the shard. `home`: sent by the student's home (this
   * instance) to the section's owner; the request may then carry the first hop's forwarded mark.
   * `homeShard`: the home's shard, whose admission this write holds (marked when it drains).
   */
  async function forward(request: FastifyRequest, reply: FastifyReply, shard: number, home = false, homeShard: number | null = null): Promise<Served> {
    let route = cluster.routeWrite(shard);
    if (route.self && admit(reply, shard)) return 'here';
    if (!home && forwardedHere(request)) {
      // Sent here by an instance whose view of the leases is older: it retries with a fresh one.
      // (Signed: a client's own header is ignored, its write forwarded like any other, not refused.)
      throw new EngineError('NOT_OWNER', 'this instance does not own the shard of this request; nothing was changed');
    }
    const payload = request.body === undefined ? undefined : Buffer.from(JSON.stringify(request.body));
    const until = performance.now() + opts.retryMs;
    let pause = 50;
    /** The instance the routes name answered NOT_OWNER: its lease lapsed, or it gave the shard up. */
    let refusedByRoute = false;
    for (;;) {
      if (route.self && admit(reply, shard)) return 'here'; // this instance took the shard over meanwhile: serve it here
      if (!route.self && route.address) {
        try {
          // The answer may take one more retry window past the last try: a send made late in the
          // window still gets its owner's full time (which may itself forward, e.g. a home to a
          // section's owner, with a window of its own). So a forward settles within twice
          // FORWARD_RETRY_MS at most, answered 503 in doubt when its owner stayed silent.
          // The answer window is never under MIN_FORWARD_ANSWER_MS: FORWARD_RETRY_MS=0 means "do not
          // retry", not "do not wait for the owner's answer" (probe R: every forward was 503 with 0).
          const r = await send(route.address, request, payload, home, homeShard !== null && homeDrains(homeShard), until + Math.max(opts.retryMs, opts.minAnswerMs ?? MIN_FORWARD_ANSWER_MS));
          if (!notOwnerReply(r) || performance.now() >= until) {
            const syncFrom = performance.now();
            if (r.status >= 200 && r.status < 300 && !(await cluster.syncReads(syncTimeoutMs))) {
              // Durable at the owner, so still a 2xx; but this instance's next read would not show
              // it yet: the client's reads here are refused until the copy has caught up (behind),
              // and this answer asks the client to leave the connection (a load balancer then
              // sends its next request to another instance).
              const key = principalKey(request);
              if (key !== null) behind.set(key, syncFrom);
              void reply.header('connection', 'close');
              request.log.warn({ owner: route.address, waitedMs: Math.round(performance.now() - syncFrom) }, "a relayed change is durable, but this instance's read copy has not caught up with it (broker unreachable or slow); this client's reads here wait for it");
            }
            void reply.code(r.status);
            for (const h of ['content-type', 'retry-after'] as const) if (r.headers[h] !== undefined) void reply.header(h, r.headers[h]);
            void reply.send(r.body);
            return 'relayed';
          }
          refusedByRoute = true;
        } catch (err) {
          if (!(err instanceof Refused)) {
            request.log.warn({ err, owner: route.address }, err instanceof SendTimedOut ? 'a forwarded write got no answer in time' : 'a forwarded write broke after it was sent');
            throw outcomeUnknown('the instance owning this section did not answer');
          }
        }
      }
      if (!route.self && (route.address === null || refusedByRoute) && cluster.storageUnreachable) {
        // Nobody can take the shard over while the lease table is out of reach: waiting for a
        // takeover would only hold the client for the whole retry time (8 s) to say the same.
        // Also when the routes still name an owner that refuses (its lease lapsed with the database
        // away; these routes cannot be read again): a probe saw every forwarded write held 8 s then.
        // Unreachable from this instance, which is all it knows: another instance may still reach it
        // and take the shard over (probe Q: 379 such answers while only this instance's link stalled).
        throw new EngineError('UNAVAILABLE', 'the database is unreachable from this instance, so it cannot tell which instance takes writes for this section now; nothing was changed, try again (another instance may answer)', undefined, {
          retryAfterSeconds: 2,
        });
      }
      if (performance.now() >= until) {
        throw new EngineError('UNAVAILABLE', 'no instance owns this section right now (takeover in progress); nothing was changed, try again', undefined, {
          retryAfterSeconds: 1,
        });
      }
      await sleep(pause);
      pause = Math.min(pause * 2, 400);
      await cluster.refreshRoutes().catch(() => undefined);
      route = cluster.routeWrite(shard);
    }
  }

  /**
   * A read by a client whose acknowledged change this instance's copy has not shown yet: brought
   * up to the log's end first, or refused (503, nothing to retry elsewhere but the read itself).
   */
  async function readAfterLaggingAck(key: string): Promise<void> {
    const since = performance.now();
    if (!(await cluster.syncReads(syncTimeoutMs))) {
      throw new EngineError('UNAVAILABLE', "this instance's copy of the log has not caught up with your last change yet; try again (or ask another instance)", undefined, {
        retryAfterSeconds: 1,
      });
    }
    // Everything acknowledged before `since` is in the copy now: every client waiting on an older change is current.
    for (const [k, at] of behind) if (at <= since) behind.delete(k);
    behind.delete(key);
  }

  /** Reads are brought up to the log's end before a decision that needs the student's whole schedule; refused (nothing changed) if they cannot be. */
  async function syncBeforeDeciding(): Promise<void> {
    if (!(await cluster.syncReads(syncTimeoutMs))) {
      throw new EngineError('UNAVAILABLE', "this instance's copy of the log is behind; nothing was changed, try again", undefined, { retryAfterSeconds: 1 });
    }
  }

  /**
   * Several owners: a student's write runs at the student's home (the owner of the student's home
   * shard), one at a time per student. The home decides it itself when it also owns the section,
   * or sends it on to the section's owner (which reads the log to its end first) and, after the
   * answer, counts its own read copy as stale for that student until it has caught up. So every
   * decision sees all of the student's earlier changes (docs/scale-out.md, section 4).
   */
  async function atHome(request: FastifyRequest, reply: FastifyReply, student: number, sectionShard: number, homeShard: number): Promise<Served> {
    const previous = studentChains.get(student) ?? Promise.resolve();
    let finished!: () => void;
    const mine = new Promise<void>((resolve) => (finished = resolve));
    const tail = previous.then(() => mine);
    studentChains.set(student, tail);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      finished();
      if (studentChains.get(student) === tail) studentChains.delete(student);
    };
    // The client (or the instance that forwarded the write here) may go away while the write
    // waits its turn. A response whose connection is gone never emits 'finish' or 'close' again,
    // so listeners attached only once the write is served were never called and the student's
    // chain stayed blocked for good (every later write of the student waited for ever, with no
    // answer and no log line: the probe's p31-7058 behind p31-6481, whose forwarding instance was
    // killed while it waited). So: listen from the start; a write whose client left before its
    // turn is dropped (nothing decided) and gives its turn up at once.
    let waiting = true;
    const leftEarly = () => {
      if (waiting) release();
    };
    reply.raw.once('close', leftEarly);
    const gone = () => reply.raw.destroyed;
    /** Holds the chain until this write is answered (or its connection ends); one already gone releases it now. */
    const holdUntilAnswered = () => {
      waiting = false;
      if (gone()) {
        release();
        return;
      }
      reply.raw.once('finish', release);
      reply.raw.once('close', release);
    };
    try {
      // Bounded: a write still undecided after the forward time (its owner stopped, say) must not
      // hold the student's later writes past it; this one is refused then, nothing changed.
      if (!(await settlesWithin(previous, opts.retryMs))) {
        throw new EngineError('UNAVAILABLE', "this student's previous change is still in progress; nothing was changed, try again", undefined, {
          retryAfterSeconds: 1,
        });
      }
      if (gone()) throw new EngineError('UNAVAILABLE', 'the client went away before its turn; nothing was changed');
      if (staleStudents.has(student)) {
        await syncBeforeDeciding();
        staleStudents.delete(student);
      }
      if (gone()) throw new EngineError('UNAVAILABLE', 'the client went away before its turn; nothing was changed');
      // While the home's shard drains, this write (admitted before) is one the drain waits for: a
      // section this instance still decides takes it, also in a shard that drains too (the home's
      // own one, where sending it on would wait for a next owner that only comes after the drain).
      if (admit(reply, sectionShard, homeDrains(homeShard))) {
        holdUntilAnswered();
        return 'here';
      }
      // Sent on: the chain is held until the forward settles (bounded), even if the client leaves.
      waiting = false;
      staleStudents.add(student);
      const served = await forward(request, reply, sectionShard, true, homeShard);
      if (served === 'here') {
        // This instance took the section's shard over meanwhile and serves it itself.
        holdUntilAnswered();
        return 'here';
      }
      // Relayed: a 2xx was followed by a sync of the read copy (read-your-writes), which is all a
      // later decision here needs; whatever else came back may hide a change still on its way.
      if (reply.statusCode >= 200 && reply.statusCode < 300) staleStudents.delete(student);
      release();
      return 'relayed';
    } catch (err) {
      release();
      throw err;
    }
  }

  async function routeStudentWrite(request: FastifyRequest, reply: FastifyReply, student: number, sectionShard: number): Promise<Served> {
    if (marked(request, HOME_HEADER)) {
      // From the student's home: decide here (the section's owner) on a read copy at the log's end.
      if (!admit(reply, sectionShard, marked(request, DRAINING_HOME_HEADER))) {
        throw new EngineError('NOT_OWNER', 'this instance does not own the shard of this request; nothing was changed');
      }
      await syncBeforeDeciding();
      return 'here';
    }
    const homeShard = homeShardOf(student, cluster.shards);
    if (!admit(reply, homeShard)) {
      // 'here': this instance became the home meanwhile (and counted the write in).
      if ((await forward(request, reply, homeShard)) === 'relayed') return 'relayed';
    }
    return atHome(request, reply, student, sectionShard, homeShard);
  }

  /**
   * The onRequest hook that recognises a request forwarded by another instance before anything
   * else can answer it (a token check, a 404), so that whatever this instance answers, the request
   * is not counted again here: the instance the client talked to counts it.
   */
  function recognizeForwarded(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
    if (forwardedHere(request)) request.arrivedByForward = true;
    done();
  }

  // A callback hook: a request this instance serves itself (every request with one instance)
  // costs a lookup, not a promise.
  function forwardHook(request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
    if (!WRITE_METHODS.has(request.method)) {
      const key = behind.size === 0 ? null : principalKey(request);
      if (key === null || !behind.has(key)) return done();
      readAfterLaggingAck(key).then(
        () => done(),
        (err: unknown) => done(err as Error),
      );
      return;
    }
    const path = request.url.split('?', 1)[0] as string;
    if (LOCAL_PATHS.has(path) || LOCAL_PATH_PATTERNS.some((p) => p.test(path))) return done();
    if (request.headers[CLIENT_HEADER] !== undefined) request.forwardedClient = forwardedClient(request);
    const course = courseOf(request);
    const shard = course === null ? 0 : shardOfCourse(course, cluster.shards);
    const student = cluster.shards > 1 ? studentOf(request, path) : null;
    if (student === null && admit(reply, shard)) return done();
    (student === null ? forward(request, reply, shard) : routeStudentWrite(request, reply, student, shard)).then(
      (served) => {
        if (served === 'here') done();
      },
      (err: unknown) => done(err as Error),
    );
  }

  return Object.assign(forwardHook, { recognizeForwarded });
}
