/**
 * The web dashboard (issue 18): the built single-page app (`dashboard/`, built
 * to `dashboard/dist` by `npm ci`) served at `/dashboard/` on the API port, and
 * the two Basalt-only routes it reads besides Cinder's: pool capacity over time
 * and the newest status events. Everything exists only with
 * `dashboard_enabled`; off, `/dashboard` is the API's plain 404.
 *
 * The files carry no data and need no credentials; the page asks for a token
 * and sends it as `X-Auth-Token` to the API, so it sees exactly what the API
 * lets that token see (authentication and policy are the API's own).
 */
import fs from 'node:fs';
import path from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { cinderTime } from '../common/index.ts';
import { rootPath } from '../common/root.ts';
import { eventDetail, recentEvents } from '../db/index.ts';
import { InvalidInputError } from '../errors/index.ts';
import { scopeOf } from '../volume/index.ts';
import type { ApiDeps } from './context.ts';
import { EXPERIMENTAL } from './experimental.ts';
import { queryValue, truthy } from './pagination.ts';
import type { PoolHistory } from './pool-history.ts';

/** Where `npm ci` (scripts/build-dashboard.mjs) leaves the built app. */
export const DASHBOARD_DIST = `${rootPath('dashboard', 'dist')}/`;

/**
 * What the browser may load for the dashboard's pages: only Basalt's own files,
 * no framing. The app has no inline script, so nothing else is needed.
 */
const CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/** Events one request returns by default, and at most. */
const EVENTS_DEFAULT_LIMIT = 50;
const EVENTS_MAX_LIMIT = 500;

/**
 * Serves the built app below `/dashboard/` (registered on the root app, outside
 * `/v3`). Without a build (installed with `--ignore-scripts`, say) the page
 * answers 503 naming the command that builds it, instead of a bare 404 that
 * would look like the option is off.
 */
export function dashboardFiles(distDir: string = DASHBOARD_DIST) {
  return async (app: FastifyInstance): Promise<void> => {
    // This plugin's own scope: the hook sees only the routes below.
    app.addHook('onSend', async (_req, reply, payload) => {
      reply.header('Content-Security-Policy', CONTENT_SECURITY_POLICY);
      reply.header('X-Content-Type-Options', 'nosniff');
      reply.header('Referrer-Policy', 'no-referrer');
      return payload;
    });
    if (!fs.existsSync(path.join(distDir, 'index.html'))) {
      const missing = (_req: FastifyRequest, reply: FastifyReply) => reply.code(503).type('text/plain')
        .send('The dashboard is enabled but not built: run `npm run build:dashboard` (npm ci builds it) and restart.\n');
      app.get('/dashboard', missing);
      app.get('/dashboard/*', missing);
      return;
    }
    await app.register(fastifyStatic, {
      root: distDir, prefix: '/dashboard/', index: false, wildcard: true, cacheControl: false,
      // Assets are named by their content hash: kept for good. The page names the current ones: asked again each time.
      setHeaders: (res, file) => res.setHeader('Cache-Control', file.includes(`${path.sep}assets${path.sep}`) ? 'public, max-age=31536000, immutable' : 'no-cache'),
    });
    // The page itself: the router ignores a trailing slash, so `/dashboard/` arrives as `/dashboard`, which the
    // wildcard above does not match. The app's assets have absolute paths, so both addresses load it.
    app.get('/dashboard', (_req, reply) => reply.sendFile('index.html'));
  };
}

/**
 * The routes the dashboard reads besides Cinder's, below `/v3[/{project_id}]`:
 * both experimental (Basalt's own, their shape may change).
 * - `GET /dashboard/pool-history` (admin, as `get_pools`): each pool's sampled
 *   capacity, oldest sample first; `since` (ISO-8601) keeps the newer ones.
 * - `GET /dashboard/events` (reader): the newest status events of the caller's
 *   project (an admin's `all_tenants` for every project), newest first;
 *   `after` (the `created_at` of the newest one the client has) returns only
 *   those at or after it (the client drops the ones it has by id), `limit` (default 50, at most 500) how many.
 */
export function dashboardRoutes(deps: ApiDeps, history: PoolHistory) {
  const { db } = deps;
  return async (app: FastifyInstance): Promise<void> => {
    app.get('/dashboard/pool-history', EXPERIMENTAL, async (req) => {
      const since = queryValue(req.query as Record<string, unknown>, 'since');
      if (since !== undefined && Number.isNaN(Date.parse(since))) throw new InvalidInputError(`Invalid since: '${since}' is not an ISO-8601 time.`);
      const pools = history.list(since === undefined ? undefined : new Date(since).toISOString());
      return { pools: pools.map((p) => ({ ...p, samples: p.samples.map((s) => ({ ...s, at: cinderTime(s.at) })) })) };
    });

    app.get('/dashboard/events', EXPERIMENTAL, async (req) => {
      const q = req.query as Record<string, unknown>;
      const rawLimit = queryValue(q, 'limit');
      const limit = rawLimit === undefined ? EVENTS_DEFAULT_LIMIT : Number(rawLimit);
      if (!Number.isInteger(limit) || limit < 1) throw new InvalidInputError(`Invalid limit: '${rawLimit}' is not a positive integer.`);
      const after = queryValue(q, 'after');
      // Cinder's times have no zone and are UTC.
      const afterMs = after === undefined ? undefined : Date.parse(/(Z|[+-]\d\d:\d\d)$/.test(after) ? after : `${after}Z`);
      if (afterMs !== undefined && Number.isNaN(afterMs)) throw new InvalidInputError(`Invalid after: '${after}' is not an ISO-8601 time.`);
      const rows = await recentEvents(db.kysely, {
        scope: scopeOf(req.caller, truthy(queryValue(q, 'all_tenants'))),
        ...(afterMs !== undefined ? { afterIso: new Date(afterMs).toISOString() } : {}),
        limit: Math.min(limit, EVENTS_MAX_LIMIT),
      });
      return {
        events: rows.map((e) => ({
          id: e.id, project_id: e.project_id, resource_type: e.resource_type, resource_id: e.resource_id, event: e.event,
          from_status: e.from_status, to_status: e.to_status, request_id: e.request_id, created_at: cinderTime(e.created_at), detail: eventDetail(e),
        })),
      };
    });
  };
}
