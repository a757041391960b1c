import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { EngineError } from '../../errors.js';
import { checkPassword, principalOf } from '../auth.js';
import type { RouteContext } from '../context.js';
import { markGoCompatible } from '../error-handler.js';
import { bearer, errorResponses, Id, MAX_ID, Token } from '../schemas.js';

/**
 * `POST /login` and `POST /refresh`, as the Go service had them. A wrong id and a wrong password
 * get the same 401 after the same amount of bcrypt work, so neither the reply nor its timing says
 * which ids exist.
 */
export const authRoutes: FastifyPluginAsyncTypebox<RouteContext> = async (app, { engine, tokens, passwordGate }) => {
  markGoCompatible(app);
  app.post(
    '/login',
    {
      schema: {
        tags: ['auth'],
        summary: 'Exchange an id and password for a token',
        body: Type.Object(
          {
            user: Type.Union([Id(), Type.String({ pattern: '^[0-9]{1,10}$' })], {
              description: 'Student or staff id, as a number or a numeric string',
            }),
            password: Type.String({ maxLength: 1024 }),
            staff: Type.Optional(Type.Boolean({ description: 'Log in as staff (default false)' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Token, ...errorResponses },
      },
    },
    async (request) => {
      const { user, password } = request.body;
      const staff = request.body.staff ?? false;
      const id = Number(user);
      const record = id <= MAX_ID ? (staff ? engine.getStaff(id) : engine.getStudent(id)) : undefined;
      // Over the cap the login is refused before any bcrypt work (503 LOGIN_BUSY, Retry-After).
      const ok = await passwordGate.run(() => checkPassword(password, record?.passwordHash));
      if (!ok) throw new EngineError('BAD_CREDENTIALS', 'wrong user id or password');
      return { token: tokens.issue({ id, role: staff ? 'staff' : 'student' }) };
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
