/**
 * The OpenAPI 3.1 document of the API, served at `GET /openapi.json` (no
 * authentication, like the version documents) and printed by `basalt openapi`.
 *
 * It is generated from what the app registers, never written by hand: every
 * route Fastify registers (collected by an `onRoute` hook) is an operation; its
 * path parameters come from the route's pattern; its request body is the
 * schema the route validates with (its {@link BodyDeclaration}: one schema per
 * microversion range, or one per action key of an `…/action` route); the
 * microversion it appears at and Cinder's policy name come from the policy
 * table. Responses are described loosely (a success, or a Cinder fault body).
 *
 * Microversion ranges are stated as OpenStack's own generated API documents
 * state them: an `x-openstack` object with `min-ver` and `max-ver` (inclusive),
 * on the operation and on each body variant or action.
 *
 * Why not @fastify/swagger: it documents a route's `schema` option, which
 * Fastify also compiles and validates with before the handler runs — one
 * schema per route, chosen neither by microversion nor by action key, checked
 * before the handler's own checks (its 404 below the route's microversion),
 * and refused in Fastify's words rather than Cinder's. The declarations live in the route's `config` instead,
 * so a small generator over the same `onRoute` hook reads them.
 */
import type { FastifyInstance, RouteOptions } from 'fastify';
import { POLICY, type PolicyEntry } from './policy.ts';
import { EXPERIMENTAL_HEADER } from './experimental.ts';
import { versionBefore, type BodyDeclaration, type VersionRange } from './body-declaration.ts';
import { MAX_VERSION, MIN_VERSION } from './microversion.ts';

/** What the document needs of a registered route. */
export type DocumentedRoute = Pick<RouteOptions, 'method' | 'url' | 'config'>;

/** The media types a JSON request body may be sent as (see the content type parser in app.ts). */
const BODY_MEDIA_TYPES = ['application/json', 'application/vnd.openstack.volume+json'];

/** The methods an OpenAPI path item has. */
const OPENAPI_METHODS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']);

/** Cinder's fault body: `{"badRequest": {"code": 400, "message": "…"}}`. */
const FAULT_SCHEMA = {
  type: 'object', minProperties: 1, maxProperties: 1,
  additionalProperties: {
    type: 'object', required: ['code', 'message'],
    properties: { code: { type: 'integer' }, message: { type: 'string' } },
  },
};

/** `x-openstack` of a version range, in inclusive bounds; undefined for an open range. */
function versions(range: VersionRange, more: Record<string, unknown> = {}): Record<string, unknown> | undefined {
  const x: Record<string, unknown> = { ...more };
  if (range.since !== undefined) x['min-ver'] = range.since;
  if (range.before !== undefined) x['max-ver'] = versionBefore(range.before);
  return Object.keys(x).length > 0 ? x : undefined;
}

/** A schema with `x-openstack` added when there is something to say. */
function annotated(schema: object, x: Record<string, unknown> | undefined): object {
  return x ? { ...schema, 'x-openstack': x } : schema;
}

/** The route's pattern as an OpenAPI path, and its parameter names (`:id` → `{id}`, a wildcard → `{path}`). */
export function openapiPath(url: string): { path: string; params: string[] } {
  const params: string[] = [];
  const path = url.split('/').map((segment) => {
    if (segment === '*') { params.push('path'); return '{path}'; }
    return segment.replace(/:([A-Za-z0-9_]+)/g, (_m, name: string) => { params.push(name); return `{${name}}`; });
  }).join('/');
  return { path, params };
}

/** The JSON Schema of a declared request body, as the document shows it. */
export function bodySchema(d: BodyDeclaration, policy: readonly PolicyEntry[] = []): object {
  if ('variants' in d) {
    if (d.variants.length === 1 && !versions(d.variants[0]!)) return d.variants[0]!.schema;
    return { anyOf: d.variants.map((v) => annotated(v.schema, versions(v))) };
  }
  // One key per body names the action: exactly one of these matches.
  return {
    oneOf: Object.entries(d.actions).map(([name, a]) => {
      const arg = a.schema ?? {};
      const rule = policy.find((p) => p.action === name);
      return annotated({
        title: name,
        ...(rule ? { description: `Policy ${rule.name} (${rule.rule}).` } : {}),
        type: 'object', required: [name], additionalProperties: false,
        properties: { [name]: a.nullIsEmpty ? { anyOf: [{ type: 'null' }, arg] } : arg },
      }, versions(a, { 'action-name': name }));
    }),
  };
}

/** The resource a route belongs to, as a tag: the first fixed segment below `/v3[/{project_id}]`. */
function tagOf(url: string): string {
  const below = url.replace(/^\/v3(\/:project_id)?/, '');
  if (below === url) return url.split('/')[1] || 'versions';
  return below.split('/').find((s) => s !== '' && !s.startsWith(':')) ?? 'versions';
}

/** Builds the document from the registered routes. */
export function buildDocument(routes: readonly DocumentedRoute[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const { path, params } = openapiPath(route.url);
    const underV3 = route.url.startsWith('/v3/');
    const below = route.url.replace(/^\/v3(\/:project_id)?/, '');
    for (const method of [route.method].flat()) {
      const m = method.toLowerCase();
      if (!OPENAPI_METHODS.has(m)) continue;
      const policyMethod = method === 'HEAD' ? 'GET' : method;
      const entries = underV3 ? POLICY.filter((p) => p.method === policyMethod && p.path === below) : [];
      const plain = entries.find((p) => p.action === undefined && p.flag === undefined) ?? entries[0];
      const experimental = route.config?.experimental === true;
      const parameters: object[] = params.map((name) => ({ name, in: 'path', required: true, schema: { type: 'string' } }));
      if (underV3) parameters.push({ $ref: '#/components/parameters/microversion' });
      if (experimental) parameters.push({ $ref: '#/components/parameters/experimental' });
      const operation: Record<string, unknown> = {
        tags: [tagOf(route.url)],
        ...(plain ? { summary: plain.name, description: `Policy ${entries.filter((p) => !p.action).map((p) => `${p.name} (${p.rule}${p.flag ? `, with ${p.flag}` : ''})`).join(', ')}.` } : {}),
        parameters,
        responses: {
          '2XX': { description: 'Cinder\'s view for this call (or no body).' },
          default: { description: 'A Cinder fault.', content: { 'application/json': { schema: FAULT_SCHEMA } } },
        },
        ...(underV3 ? { security: [{ token: [] }] } : {}),
      };
      const body = route.config?.body;
      if (body && m !== 'get' && m !== 'head') {
        const schema = bodySchema(body, entries);
        operation.requestBody = { required: true, content: Object.fromEntries(BODY_MEDIA_TYPES.map((t) => [t, { schema }])) };
      }
      const x = versions({ since: plain?.since }, experimental ? { experimental: true } : {});
      if (x) operation['x-openstack'] = x;
      (paths[path] ??= {})[m] = operation;
    }
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Basalt block storage API',
      version: MAX_VERSION,
      description: `OpenStack Cinder's v3 API as Basalt serves it, microversions ${MIN_VERSION} to ${MAX_VERSION} (OpenStack-API-Version: volume 3.N). ` +
        'Request bodies are the schemas Basalt validates with; x-openstack min-ver/max-ver give the microversions an operation, body variant or action exists at.',
    },
    paths: Object.fromEntries(Object.entries(paths).sort(([a], [b]) => a.localeCompare(b))),
    components: {
      parameters: {
        microversion: {
          name: 'OpenStack-API-Version', in: 'header', required: false, schema: { type: 'string' }, example: `volume ${MAX_VERSION}`,
          description: `The microversion asked for: volume 3.N (${MIN_VERSION} to ${MAX_VERSION}) or volume latest. Absent: ${MIN_VERSION}.`,
        },
        experimental: {
          name: EXPERIMENTAL_HEADER, in: 'header', required: true, schema: { const: 'true' },
          description: 'An experimental API answers only requests that say they know it may change or vanish.',
        },
      },
      securitySchemes: {
        token: { type: 'apiKey', in: 'header', name: 'X-Auth-Token', description: 'A Keystone token (auth_strategy keystone), or user:project (noauth).' },
      },
    },
  };
}

/**
 * The document of one app: the routes collected as they are registered, the
 * document built once on first use (after the app is ready, nothing is added).
 */
export class OpenApiRoutes {
  private readonly routes: DocumentedRoute[] = [];
  private document?: Record<string, unknown>;

  /** Registers the collector on `app` (the root instance, before any route) and serves `GET /openapi.json`. */
  install(app: FastifyInstance): void {
    app.addHook('onRoute', (route: RouteOptions) => { this.routes.push({ method: route.method, url: route.url, config: route.config }); });
    app.register(async (scope) => {
      scope.get('/openapi.json', async () => this.get());
    });
  }

  /** The document. */
  get(): Record<string, unknown> {
    return this.document ??= buildDocument(this.routes);
  }
}
