import type { Engine } from '../engine/engine.js';
import type { ReadinessReport } from '../persistence/types.js';
import type { TokenService } from './auth.js';

/**
 * What every route plugin is registered with. Passed as plugin options rather than decorated onto
 * the instance, so each route file states what it uses and tests can see the whole surface here.
 */
export interface RouteContext {
  engine: Engine;
  tokens: TokenService;
  readiness: () => Promise<ReadinessReport>;
}
