import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { EngineError } from '../../errors.js';
import { hashPassword } from '../../password.js';
import { checkPassword, clientAddress, principalOf, requestMeta } from '../auth.js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { RouteContext } from '../context.js';
import { markGoCompatible } from '../error-handler.js';
import { bearer, errorResponses, GoBody, Id, MAX_ID, NoContent, Token } from '../schemas.js';
import { checkNewPassword } from '../../password-rules.js';
import { BCRYPT_COST, Password } from './people.js';

/**
 * `POST /login` and `POST /refresh`, as the Go service had them, plus `POST /logout`, staff's
 * `POST /students/{id}/revoke-tokens` and admin staff's `POST /staff/{id}/revoke-tokens`. A wrong id and a wrong password get the same 401 after the
 * same amount of bcrypt work, so neither the reply nor its timing says which ids exist: a failed
 * login always checks the password a second time, against the other kind of account with the same
 * id (or a dummy hash), and only a password right for that other account changes the answer
 * (401 WRONG_ROLE, saying which `staff` value to send). Failed logins are throttled (throttle.ts).
 */
export const authRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { engine, tokens, passwordGate, throttle, accounts }) => {
  await app.register(goRoutes, { engine, tokens, passwordGate, throttle } as RouteContext);
  await app.register(sessionRoutes, { engine, tokens, accounts, passwordGate, throttle } as RouteContext);
};

const goRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { engine, tokens, passwordGate, throttle }) => {
  markGoCompatible(app);
  app.post(
    '/login',
    {
      schema: {
        tags: ['auth'],
        summary: 'Exchange an id and password for a token',
        body: GoBody(
          {
            user: Type.Union([Id(), Type.String({ pattern: '^[0-9]{1,10}$' })], {
              description: 'Student or staff id, as a number or a numeric string',
            }),
            password: Type.String({ maxLength: 1024 }),
            staff: Type.Optional(Type.Boolean({ description: 'Log in as staff (default false)' })),
          },
        ),
        response: { 200: Token, ...errorResponses },
      },
    },
    async (request) => {
      const { user, password } = request.body;
      const staff = request.body.staff ?? false;
      const id = Number(user);
      // One failure budget per id, whatever the staff flag: every attempt checks the password against
      // both accounts with that id (the WRONG_ROLE answer below), so a budget per flag let a locked
      // student's password be tried again, and confirmed, with staff: true.
      const account = `id:${id}`;
      // The client's address: the TCP peer, or what a trusted proxy forwarded (TRUST_PROXY); never a
      // header an untrusted client sent. Failures count per id at this address, per id from every
      // address, and per address (throttle.ts).
      const address = request.ip;
      // Throttled before any bcrypt work (429 LOGIN_THROTTLED, Retry-After).
      const attempt = await throttle.beforeLogin(account, address);
      const record = id <= MAX_ID ? (staff ? engine.getStaff(id) : engine.getStudent(id)) : undefined;
      // Over the cap the login waits for a slot; refused before any bcrypt work when none comes free
      // within LOGIN_QUEUE_MS or the queue is full (503 LOGIN_BUSY, Retry-After); one whose client
      // left meanwhile is not checked. Logins from each address queue apart and take turns, so one
      // address flooding the queue delays its own logins, not everyone's.
      const gone = () => request.socket.destroyed;
      let ok: boolean;
      try {
        ok = await passwordGate.run(() => checkPassword(password, record?.passwordHash), gone, address);
      } catch (err) {
        attempt.release(); // never checked (LOGIN_BUSY): not a failure
        throw err;
      }
      if (ok) {
        await attempt.succeeded();
        // The check took a bcrypt time: a password reset meanwhile (and its revocation, made before
        // this token would be issued) must not let the old password in.
        const now = staff ? engine.getStaff(id) : engine.getStudent(id);
        if (now?.passwordHash !== record?.passwordHash) throw new EngineError('BAD_CREDENTIALS', 'the password was changed while it was checked; log in with the new one');
        return { token: tokens.issue({ id, role: staff ? 'staff' : 'student' }) };
      }
      await attempt.failed();
      const other = id <= MAX_ID ? (staff ? engine.getStudent(id) : engine.getStaff(id)) : undefined;
      const otherOk = await passwordGate.run(() => checkPassword(password, other?.passwordHash), gone, address);
      if (otherOk) {
        throw new EngineError(
          'WRONG_ROLE',
          staff
            ? 'this account is a student: students cannot use the admin page or staff routes; log in with staff: false'
            : 'this account is staff: log in with staff: true',
        );
      }
      throw new EngineError('BAD_CREDENTIALS', 'wrong user id or password');
    },
  );

  app.post(
    '/refresh',
    {
      onRequest: tokens.requireRole('any'),
      schema: {
        tags: ['auth'],
        summary: 'Exchange a valid token for a fresh one (same user, role and session; never past the session maximum age)',
        security: bearer,
        response: { 200: Token, ...errorResponses },
      },
    },
    async (request) => {
      const p = principalOf(request);
      const exists = p.role === 'staff' ? engine.getStaff(p.id) : engine.getStudent(p.id);
      if (!exists) throw new EngineError('UNAUTHENTICATED', 'the token belongs to a user that no longer exists');
      // The session (and its login time) carries over: refreshing cannot extend it past its maximum age.
      const session = request.tokenSession;
      if (session === null) throw new EngineError('UNAUTHENTICATED', 'a bearer token is required');
      return { token: tokens.issue(p, session) };
    },
  );
};

/**
 * Ending sessions: the caller's own (`POST /logout`), for staff every session of a student, and for
 * admin staff every session of a staff member (a leaked staff token or password could otherwise
 * only be stopped by rotating JWT_SECRET, which logs everyone out).
 */
const sessionRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { engine, tokens, accounts, passwordGate, throttle }) => {
  const staffOnly = tokens.requireRole('staff');
  /**
   * Cutting off staff is for the same people who may create staff (ADMIN_STAFF_IDS): any staff
   * member could otherwise lock out the admins, or each other, during registration.
   */
  const adminOnly = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    staffOnly(request, reply);
    if (!accounts.adminStaffIds.has(principalOf(request).id)) {
      throw new EngineError('ADMIN_REQUIRED', "only admin staff may revoke a staff member's tokens");
    }
  };

  app.post(
    '/me/password',
    {
      onRequest: tokens.requireRole('any'),
      schema: {
        tags: ['auth'],
        summary: 'Change your own password (students and staff); every other session of yours ends, the reply carries a fresh token',
        description:
          'The current password is required: a token alone (a shared computer left logged in) does not let anyone change it. ' +
          'A wrong one is 403 WRONG_PASSWORD and counts against the same failure budget as a failed login (429 LOGIN_THROTTLED ' +
          'after too many). Once the new password holds (durable, on every instance), every token of yours issued before it is ' +
          'refused 401 TOKEN_REVOKED, this one too: use the token in the reply.',
        security: bearer,
        body: Type.Object(
          { current_password: Type.String({ maxLength: 1024 }), new_password: Password },
          { additionalProperties: false },
        ),
        response: { 200: Token, ...errorResponses },
      },
    },
    async (request) => {
      const p = principalOf(request);
      const { current_password: current, new_password: next } = request.body;
      const record = p.role === 'staff' ? engine.getStaff(p.id) : engine.getStudent(p.id);
      if (!record) throw new EngineError('UNAUTHENTICATED', 'the token belongs to a user that no longer exists');
      checkNewPassword(next, accounts);
      if (next === current) throw new EngineError('BAD_REQUEST', 'the new password must differ from the current one');
      // The same failure budget as the login (per id, per address): a stolen token must not become a
      // way to try passwords without limit.
      const account = `id:${p.id}`;
      // The client's address, also when another instance forwarded the change here (to the student's home).
      const address = clientAddress(request);
      const attempt = await throttle.beforeLogin(account, address);
      const gone = () => request.socket.destroyed;
      let ok: boolean;
      try {
        ok = await passwordGate.run(() => checkPassword(current, record.passwordHash), gone, address);
      } catch (err) {
        attempt.release();
        throw err;
      }
      if (!ok) {
        await attempt.failed();
        throw new EngineError('WRONG_PASSWORD', 'the current password is wrong; nothing was changed');
      }
      await attempt.succeeded();
      const passwordHash = await hashPassword(next, BCRYPT_COST);
      const meta = requestMeta(request);
      // The checks above took a bcrypt time or two: decided in turn with the account's other changes,
      // the password proved must still be the current one and the token not revoked meanwhile (a
      // registrar's reset, another change of the same account). Otherwise nothing changes.
      const proved = record.passwordHash;
      const session = request.tokenSession;
      const stillCurrent = (now: { passwordHash: string }) => {
        if (session !== null && tokens.revocations.isRevoked(session)) throw new EngineError('TOKEN_REVOKED', 'the token has been revoked; log in again');
        if (now.passwordHash !== proved) throw new EngineError('WRONG_PASSWORD', 'the password was changed meanwhile; nothing was changed');
      };
      if (p.role === 'staff') await engine.updateStaff(p.id, { passwordHash }, meta, stillCurrent);
      else await engine.updateStudent(p.id, { passwordHash }, meta, stillCurrent);
      request.log.info({ role: p.role, id: p.id }, 'password changed by its owner');
      // Every earlier token ends (the other sessions, where the old password may have been used); the
      // reply's token starts after that instant, so it stays valid.
      await tokens.revokeSessionsOf(`${p.role}:${p.id}`, tokens.now() - 1);
      return { token: tokens.issue({ id: p.id, role: p.role }) };
    },
  );

  app.post(
    '/logout',
    {
      onRequest: tokens.requireRole('any'),
      schema: {
        tags: ['auth'],
        summary: 'Revoke the presented token and its session (every instance refuses it within a second)',
        security: bearer,
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const session = request.tokenSession;
      if (session === null) throw new EngineError('UNAUTHENTICATED', 'a bearer token is required');
      // The session too: tokens refreshed earlier in it end with it. Kept until the session could end.
      // A user who logs out more often than the policy keeps (a script) ends all their sessions
      // instead: one entry per user, so the revocation list every instance holds stays bounded.
      if (await throttle.keepLogout(session.subject, tokens.maxSessionSeconds * 1000)) {
        await tokens.revocations.revoke({ jti: session.jti, sid: session.sid, until: tokens.sessionEnd(session) });
      } else {
        await tokens.revokeSessionsOf(session.subject);
      }
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/students/:id/revoke-tokens',
    {
      onRequest: tokens.requireRole('staff'),
      schema: {
        tags: ['auth'],
        summary: "Revoke every token of a student issued until now (staff); the student's next login works",
        security: bearer,
        params: Type.Object({ id: Id('Student id') }),
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const id = request.params.id;
      if (!engine.getStudent(id)) throw new EngineError('STUDENT_NOT_FOUND', `no student ${id}`);
      await tokens.revokeSessionsOf(`student:${id}`);
      request.log.info({ student: id, by: principalOf(request).id }, 'every token of a student revoked');
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/staff/:id/revoke-tokens',
    {
      onRequest: adminOnly,
      schema: {
        tags: ['auth'],
        summary: 'Revoke every token of a staff member issued until now (admin staff only); their next login works',
        description:
          'For a leaked staff token or password: every token of that staff member issued before this call is refused 401 TOKEN_REVOKED ' +
          'on every instance (shared through Redis when configured, or saved to the database while Redis is away; written to the data directory in embedded mode; before the 204). ' +
          'A new login still works: if the password leaked too, reset it with `PATCH /staff/{id}` (which revokes the tokens as well).',
        security: bearer,
        params: Type.Object({ id: Id('Staff id') }),
        response: { 204: NoContent, ...errorResponses },
      },
    },
    async (request, reply) => {
      const id = request.params.id;
      if (!engine.getStaff(id)) throw new EngineError('STAFF_NOT_FOUND', `no staff member ${id}`);
      // The same entry as for a student, under the staff subject (`staff:<id>`, what staff tokens carry):
      // the same durability (the promise settles once journalled, in Redis, or saved to the backup) and reach.
      await tokens.revokeSessionsOf(`staff:${id}`);
      request.log.info({ staff: id, by: principalOf(request).id }, 'every token of a staff member revoked');
      return reply.code(204).send(null);
    },
  );
};
