/**
 * Experimental APIs: routes that answer only when the request carries
 * `OpenStack-API-Experimental: true`, as Cinder's experimental API methods
 * did. Such a route may change or vanish without a new microversion, so a
 * client must say that it knows; without the header the route is absent (404
 * with Cinder's fault body, before authentication, exactly as a path that
 * names nothing). Its answers carry the header back, and the version document
 * lists every experimental route ({@link ExperimentalRoutes.list}).
 *
 * A route is marked with `config: { experimental: true }` in its options.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import { faultBody } from './fault.ts';

/** The request and response header naming an experimental API. */
export const EXPERIMENTAL_HEADER = 'OpenStack-API-Experimental';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Whether the route is experimental (answers only with `OpenStack-API-Experimental: true`). Default false. */
    experimental?: boolean;
    /** Whether the route's answer stays open for long (a stream): its requests do not count as in flight for the job workers. Default false. */
    longLived?: boolean;
  }
}

/** The route options that mark a route experimental. */
export const EXPERIMENTAL = { config: { experimental: true } } as const;

/** Whether a request asks for experimental APIs: the header is `true` (any case). */
export function wantsExperimental(req: FastifyRequest): boolean {
  const raw = req.headers[EXPERIMENTAL_HEADER.toLowerCase()];
  const value = Array.isArray(raw) ? raw[0] : raw;
  return value?.trim().toLowerCase() === 'true';
}

/**
 * The experimental routes of one app: collected as they are registered, and
 * the gate every request passes.
 */
export class ExperimentalRoutes {
  private readonly routes = new Set<string>();

  /** Registers the collector and the gate on `app` (the root instance, before any route). */
  install(app: FastifyInstance): void {
    app.addHook('onRoute', (route: RouteOptions) => {
      if (!route.config?.experimental) return;
      // Listed once, below /v3/{project_id} (the same route is also served below /v3).
      if (route.url.startsWith('/v3/:project_id/')) {
        const path = route.url.replace(/^\/v3\/:project_id/, '/v3/{project_id}').replace(/:([a-z_]+)/g, '{$1}');
        for (const method of [route.method].flat()) if (method !== 'HEAD') this.routes.add(`${method} ${path}`);
      }
    });
    app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
      if (!req.routeOptions.config?.experimental) return;
      if (!wantsExperimental(req)) return reply.code(404).send(faultBody(404, 'The resource could not be found.'));
      reply.header(EXPERIMENTAL_HEADER, 'true');
    });
  }

  /** `METHOD /v3/{project_id}/…` of every experimental route, sorted. */
  list(): string[] {
    return [...this.routes].sort();
  }
}
