import { createHash, timingSafeEqual } from 'node:crypto';
import { Router, type RequestHandler } from 'express';
import { ServiceError } from '../errors.js';

export interface BearerAuthOptions {
  /** The shared secret clients send as `Authorization: Bearer <token>`. */
  token?: string;
  /** Lets routes run without a token; only for local use, and only when asked for by name. */
  allowUnauthenticated?: boolean;
}

/**
 * Bearer-token check. Refuses to be built without a token unless `allowUnauthenticated` says so,
 * so a deployment that forgot its token fails at startup instead of serving writes to anyone.
 */
export function bearerAuth({ token, allowUnauthenticated = false }: BearerAuthOptions): RequestHandler {
  if (token === undefined || token === '') {
    if (!allowUnauthenticated) {
      throw new ServiceError(
        'bad_request',
        'these routes need a bearer token; configure one, or disable authentication explicitly for local use',
      );
    }
    return (_req, _res, next) => next();
  }
  const expected = digest(token);
  return (req, res, next) => {
    const presented = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.get('authorization') ?? '')?.[1];
    // Digests have one length, so the comparison's time says nothing about the token or its length.
    if (presented === undefined || !timingSafeEqual(digest(presented), expected)) {
      res.setHeader('WWW-Authenticate', 'Bearer');
      throw new ServiceError('unauthorized', presented === undefined ? 'missing bearer token' : 'invalid bearer token');
    }
    next();
  };
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

/**
 * A router whose every route checks the bearer token as its first handler. Inside the route
 * rather than in front of the router, so a refused request has matched its route and metrics
 * count it under the route's template instead of as "unmatched"; a route added later cannot
 * forget the check. A path no route matches is a 404 with or without a token.
 */
export function authenticatedRouter(options: BearerAuthOptions): Router {
  const auth = bearerAuth(options);
  const router = Router();
  const route = router.route.bind(router);
  // router.get, .post, ... each make their route through router.route.
  router.route = ((path: string) => route(path).all(auth)) as Router['route'];
  return router;
}
