/**
 * Judges one response of a Basalt API route against tempest's schema for it
 * (route-schemas.ts picks the schema, tempest-schemas.ts reads and applies it).
 * Called by the functional tests' request helper for every response, so a
 * route whose answer drifts from Cinder's shape fails the test that used it.
 *
 * - A 2xx/3xx answer of a route the table lacks fails (a new route needs a row).
 * - A 2xx/3xx answer must pass its schema: status code and body, as tempest's
 *   rest client checks them.
 * - A 4xx/5xx answer (a test that sends a malformed or refused request on
 *   purpose) must be a Cinder fault body, `{"<name>": {"code": N, "message": "…"}}`.
 * - Paths outside the API (`/metrics`, `/openapi.json`) are not judged.
 */
import fs from 'node:fs';
import { ROUTE_SCHEMAS, VERSION_SCHEMAS, type RouteSchema } from './route-schemas.ts';
import { judge, resolveSchema } from './tempest-schemas.ts';

/** One request and its response, as the helper saw them. */
export interface Exchange {
  method: string;
  /** Path and query, e.g. `/v3/<project>/volumes/detail?limit=1`. */
  url: string;
  /** The request's JSON body (parsed), if any. */
  requestBody?: unknown;
  /** The `OpenStack-API-Version` the request sent, if any. */
  requestVersion?: string;
  status: number;
  /** The response's `OpenStack-API-Version` header, if any. */
  responseVersion?: string | null;
  body: unknown;
}

/**
 * With `TEST_SCHEMA_TRACE=FILE`, each judged 2xx/3xx answer appends one line
 * (`METHOD /route[ action] <version> <schema or none>`) to FILE: which rows the
 * functional suite exercises, and at which microversions.
 */
const TRACE = process.env.TEST_SCHEMA_TRACE;

/** A response that does not match its tempest schema (or has none). */
export class SchemaViolation extends Error {
  override readonly name = 'SchemaViolation';
}

/** A compiled route pattern. */
interface Pattern {
  method: string;
  path: string;
  segments: string[];
}

const patterns: Pattern[] = [...new Set(ROUTE_SCHEMAS.map((r) => r.route))].map((route) => {
  const [method, path] = route.split(' ') as [string, string];
  return { method, path, segments: path.split('/').slice(1) };
});

/** First segments of the routes (`volumes`, `types`, …): tells `/v3/volumes` from `/v3/<project>/volumes`. */
const firstSegments = new Set(patterns.map((p) => p.segments[0]));

/**
 * The route pattern (`/volumes/:id`) a path below `/v3[/{project_id}]` matches,
 * as Fastify's router picks it: a static segment wins over a parameter.
 */
export function matchRoute(method: string, path: string): string | undefined {
  const segments = path.replace(/\/+$/, '').split('/').slice(1);
  let best: Pattern | undefined;
  for (const p of patterns) {
    if (p.method !== method || p.segments.length !== segments.length) continue;
    if (!p.segments.every((s, i) => s.startsWith(':') ? segments[i] !== '' : s === segments[i])) continue;
    if (!best || morePrecise(p, best)) best = p;
  }
  return best?.path;
}

function morePrecise(a: Pattern, b: Pattern): boolean {
  for (let i = 0; i < a.segments.length; i++) {
    const as = !a.segments[i]!.startsWith(':');
    const bs = !b.segments[i]!.startsWith(':');
    if (as !== bs) return as;
  }
  return false;
}

/** The path below `/v3[/{project_id}]`, or undefined for a path outside `/v3/`. */
export function belowV3(path: string): string | undefined {
  if (!path.startsWith('/v3/')) return undefined;
  const segments = path.slice('/v3'.length).split('/').slice(1);
  const rest = firstSegments.has(segments[0]) ? segments : segments.slice(1);
  return '/' + rest.join('/');
}

/** Cinder's truthy query values (oslo's `bool_from_string`). */
const truthy = (v: string | null): boolean => v !== null && ['1', 't', 'true', 'on', 'y', 'yes'].includes(v.toLowerCase());

/** The row that judges a request of `route` (`METHOD /pattern`), or undefined. */
export function rowFor(route: string, requestBody: unknown, query: URLSearchParams): RouteSchema | undefined {
  const rows = ROUTE_SCHEMAS.filter((r) => r.route === route);
  const keys = requestBody && typeof requestBody === 'object' && !Array.isArray(requestBody) ? Object.keys(requestBody) : [];
  const action = keys.length === 1 ? keys[0] : undefined;
  return rows.find((r) => r.action !== undefined && r.action === action)
    ?? rows.find((r) => r.flag !== undefined && truthy(query.get(r.flag)))
    ?? rows.find((r) => r.action === undefined && r.flag === undefined);
}

/** The `3.N` of an `OpenStack-API-Version` header (`volume 3.N`), if any. */
function volumeVersion(header: string | null | undefined): string | undefined {
  for (const part of (header ?? '').split(',')) {
    const [service, version] = part.trim().split(/\s+/, 2);
    if (service?.toLowerCase() === 'volume' && version && /^\d+\.\d+$/.test(version)) return version;
  }
  return undefined;
}

/** Why a 4xx/5xx body is not a Cinder fault, or undefined when it is one. */
export function faultProblem(status: number, body: unknown): string | undefined {
  if (!body || typeof body !== 'object' || Array.isArray(body)) return `the body is not a fault object: ${JSON.stringify(body)?.slice(0, 200)}`;
  const names = Object.keys(body);
  if (names.length !== 1) return `a fault body has exactly one key, got ${JSON.stringify(names)}`;
  const fault = (body as Record<string, unknown>)[names[0]!] as Record<string, unknown> | null;
  if (!fault || typeof fault !== 'object') return `/${names[0]} is not an object`;
  if (fault.code !== status) return `/${names[0]}/code is ${JSON.stringify(fault.code)}, not the status ${status}`;
  if (typeof fault.message !== 'string') return `/${names[0]}/message is not a string`;
  const extra = Object.keys(fault).filter((k) => k !== 'code' && k !== 'message');
  return extra.length ? `/${names[0]} has keys a Cinder fault lacks: ${extra.join(', ')}` : undefined;
}

/**
 * Judges one exchange.
 * @throws SchemaViolation naming the route, the microversion and the problem.
 */
export function checkResponse(x: Exchange): void {
  const url = new URL(x.url, 'http://basalt.invalid');
  const method = x.method.toUpperCase();
  if (method === 'HEAD' || method === 'OPTIONS') return;
  const version = volumeVersion(x.responseVersion) ?? volumeVersion(x.requestVersion) ?? '3.0';
  const fail = (what: string, problem: string): never => {
    throw new SchemaViolation(`${method} ${url.pathname} answered ${x.status} at ${version}: ${what}: ${problem}`);
  };

  const path = url.pathname;
  const isVersionDoc = path === '/' || path === '/v3' || path === '/v3/';
  const below = isVersionDoc ? undefined : belowV3(path);
  if (!isVersionDoc && below === undefined) return; // not an API route (/metrics, /openapi.json)

  if (x.status >= 400) {
    const problem = faultProblem(x.status, x.body);
    if (problem) fail('not a Cinder fault', problem);
    return;
  }

  let ref: string;
  let what: string;
  if (isVersionDoc) {
    what = `GET ${path === '/' ? '/' : '/v3'}`;
    const r = method === 'GET' ? VERSION_SCHEMAS[what] : undefined;
    if (!r) fail(what, 'no row in test/schemas/route-schemas.ts');
    ref = r!;
  } else {
    const route = matchRoute(method, below!);
    if (!route) fail(`${method} ${below}`, 'no route in test/schemas/route-schemas.ts matches it');
    what = `${method} ${route}`;
    const row = rowFor(what, x.requestBody, url.searchParams);
    if (!row) {
      const keys = x.requestBody && typeof x.requestBody === 'object' ? Object.keys(x.requestBody) : [];
      fail(what, `no row in test/schemas/route-schemas.ts for it${route!.endsWith('/action') && keys.length === 1 ? ` with action ${keys[0]}` : ''}`);
    }
    if (row!.action) what += ` ${row!.action}`;
    if (row!.flag) what += ` ?${row!.flag}`;
    if (row!.none !== undefined) { // tempest has no schema for it (the row says why)
      if (TRACE) fs.appendFileSync(TRACE, `${what} ${version} none\n`);
      return;
    }
    ref = row!.schema!;
  }
  const key = resolveSchema(ref, version);
  if (TRACE) fs.appendFileSync(TRACE, `${what} ${version} ${key}\n`);
  const problem = judge(key, x.status, x.body, version);
  if (problem) fail(`${what} (tempest ${key})`, problem);
}
