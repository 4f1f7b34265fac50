/**
 * The route table (route-schemas.ts) covers every route Basalt registers and
 * every action its policy names, names only schemas tempest has, and the
 * checker judges as tempest does — so a new route cannot go unjudged.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { buildApi, type ApiDeps } from '../../src/api/index.ts';
import { POLICY } from '../../src/api/policy.ts';
import { loadConfig } from '../../src/config/index.ts';
import { ROUTE_SCHEMAS, VERSION_SCHEMAS } from './route-schemas.ts';
import { belowV3, checkResponse, matchRoute, SchemaViolation } from './response-check.ts';
import { resolveSchema, tempestDump } from './tempest-schemas.ts';

/** Every `METHOD /path` the API registers (HEAD aside: Fastify adds it to each GET), as Fastify's patterns. */
async function registeredRoutes(): Promise<Set<string>> {
  const config = loadConfig({ env: { BASALT_STATE_DIR: '/nonexistent' } });
  // Route plugins keep their deps for the handlers: registering needs the config, and of the rest only names.
  const deps = new Proxy({ config }, { get: (t, k) => (k in t ? t[k as keyof typeof t] : {}) }) as unknown as ApiDeps;
  const app = buildApi(deps, pino({ level: 'silent' }));
  const routes = new Set<string>();
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) if (method !== 'HEAD') routes.add(`${method} ${route.url}`);
  });
  await app.ready();
  await app.close();
  return routes;
}

const rowKey = (route: string, action?: string): string => `${route}${action ? ` {${action}}` : ''}`;
const tableKeys = new Set(ROUTE_SCHEMAS.map((r) => rowKey(r.route, r.action)));

test('every route Basalt registers below /v3/{project_id} and /v3 has a row in the schema table', async () => {
  const routes = await registeredRoutes();
  const below = [...routes].filter((r) => r.includes(' /v3/:project_id/')).map((r) => r.replace(' /v3/:project_id/', ' /'));
  assert.ok(below.length > 50, `only ${below.length} routes seen`);
  const missing = below.filter((r) => !tableKeys.has(r) && !ROUTE_SCHEMAS.some((row) => row.route === r && row.action));
  assert.deepEqual(missing, [], 'routes without a row in test/schemas/route-schemas.ts');
  // The same resources are routed without the project id: nothing else lives there.
  const bare = [...routes].filter((r) => / \/v3\/(?!:project_id\/)/.test(r)).map((r) => r.replace(' /v3/', ' /'));
  assert.deepEqual(bare.filter((r) => !below.includes(r)), []);
  // And the version documents.
  for (const doc of Object.keys(VERSION_SCHEMAS)) assert.ok(routes.has(doc), `${doc} is registered`);
});

test('every action the policy names has its own row, and every row is a route the policy knows', () => {
  const policyKeys = new Set(POLICY.map((p) => rowKey(`${p.method} ${p.path}`, p.action)));
  const actions = POLICY.filter((p) => p.action).map((p) => rowKey(`${p.method} ${p.path}`, p.action));
  assert.deepEqual(actions.filter((k) => !tableKeys.has(k)), [], 'actions without a row in test/schemas/route-schemas.ts');
  // An action row may also stand under the route's catch-all entry (attachments' os-complete, groups' create-from-src).
  const stale = ROUTE_SCHEMAS.filter((r) => !policyKeys.has(rowKey(r.route, r.action)) && !(r.action && policyKeys.has(r.route)))
    .map((r) => rowKey(r.route, r.action));
  assert.deepEqual(stale, [], 'rows for routes or actions the policy table does not list');
});

test('each row names a tempest schema (at every microversion) or says why there is none', () => {
  assert.ok(Object.keys(tempestDump().schemas).length > 200);
  for (const row of [...ROUTE_SCHEMAS, ...Object.values(VERSION_SCHEMAS).map((schema) => ({ route: 'GET /', schema, none: undefined }))]) {
    assert.ok((row.schema === undefined) !== (row.none === undefined), `${row.route}: a schema or a reason, not both`);
    if (row.none !== undefined) { assert.ok(row.none.length > 10, `${row.route}: say why tempest has no schema`); continue; }
    for (const v of ['3.0', '3.55', '3.57', '3.61', '3.63', '3.64', '3.65', '3.69', '3.70']) resolveSchema(row.schema!, v);
  }
  assert.equal(resolveSchema('volumes/show_volume', '3.60'), 'volumes.show_volume');
  assert.equal(resolveSchema('volumes/show_volume', '3.62'), 'v3_61.volumes.show_volume');
  assert.equal(resolveSchema('volumes/extend_volume', '3.70'), 'v3_69.volumes.extend_volume');
  assert.equal(resolveSchema('transfers/accept_volume_transfer', '3.54'), 'transfers.accept_volume_transfer');
  assert.equal(resolveSchema('transfers/accept_volume_transfer', '3.57'), 'v3_57.transfers.accept_volume_transfer');
});

test('routes match as Fastify matches them: a static segment wins', () => {
  assert.equal(matchRoute('GET', '/volumes/detail'), '/volumes/detail');
  assert.equal(matchRoute('GET', '/volumes/0d0c2d9e-7b5b-4c0a-9b87-1f2b1f1e2e3a'), '/volumes/:id');
  assert.equal(matchRoute('GET', '/qos-specs/x/disassociate_all'), '/qos-specs/:id/disassociate_all');
  assert.equal(matchRoute('GET', '/nothing'), undefined);
  assert.equal(belowV3('/v3/0123/volumes/detail'), '/volumes/detail');
  assert.equal(belowV3('/v3/volumes/detail'), '/volumes/detail');
  assert.equal(belowV3('/metrics'), undefined);
});

const volume = {
  id: '0d0c2d9e-7b5b-4c0a-9b87-1f2b1f1e2e3a', size: 1, status: 'creating', name: null, description: null,
  availability_zone: 'nova', bootable: 'false', encrypted: false, multiattach: false, attachments: [],
  metadata: {}, links: [], created_at: '2026-12-02T08:00:00.000000', updated_at: null, volume_type: 'default',
  snapshot_id: null, source_volid: null, user_id: 'u', consistencygroup_id: null, replication_status: null,
};

test('the checker judges as tempest: status, extra keys, formats, faults, unknown routes', () => {
  const url = '/v3/0123456789abcdef0123456789abcdef/volumes';
  const ok = { method: 'POST', url, requestBody: { volume: { size: 1 } }, status: 202, responseVersion: 'volume 3.0', body: { volume } };
  checkResponse(ok);
  assert.throws(() => checkResponse({ ...ok, status: 200 }), /status 200 is not one of \[202\]/);
  assert.throws(() => checkResponse({ ...ok, body: { volume: { ...volume, 'os-vol-host-attr:host': 'h' } } }),
    (err: Error) => err instanceof SchemaViolation && /at 3\.0: POST \/volumes \(tempest volumes\.create_volume\).*os-vol-host-attr:host/.test(err.message));
  assert.throws(() => checkResponse({ ...ok, body: { volume: { ...volume, created_at: 'yesterday' } } }), /created_at must match format "iso8601-date-time"/);
  // Tempest leaves uuid unchecked (its draft-4 format checker has none).
  checkResponse({ ...ok, body: { volume: { ...volume, id: 'not-a-uuid' } } });
  // From 3.61 the versioned schema applies.
  checkResponse({ ...ok, responseVersion: 'volume 3.62', body: { volume: { ...volume, cluster_name: null } } });
  assert.throws(() => checkResponse({ ...ok, responseVersion: 'volume 3.60', body: { volume: { ...volume, cluster_name: null } } }), /cluster_name/);
  // Faults.
  checkResponse({ ...ok, status: 400, body: { badRequest: { code: 400, message: 'no' } } });
  assert.throws(() => checkResponse({ ...ok, status: 400, body: { badRequest: { code: 404, message: 'no' } } }), /not a Cinder fault/);
  assert.throws(() => checkResponse({ ...ok, status: 400, body: { error: 'x', statusCode: 400 } }), /not a Cinder fault/);
  // Actions and unknown routes.
  checkResponse({ method: 'POST', url: `${url}/${volume.id}/action`, requestBody: { 'os-extend': { new_size: 2 } }, status: 202, body: undefined });
  assert.throws(() => checkResponse({ method: 'POST', url: `${url}/${volume.id}/action`, requestBody: { 'os-extend': { new_size: 2 } }, status: 202, body: { extended: true } }), /should|no body/);
  assert.throws(() => checkResponse({ method: 'POST', url: `${url}/${volume.id}/action`, requestBody: { 'os-new': {} }, status: 202, body: undefined }), /no row .* with action os-new/);
  assert.throws(() => checkResponse({ method: 'GET', url: '/v3/p/brand-new', status: 200, body: {} }), /no route in test\/schemas\/route-schemas.ts/);
  checkResponse({ method: 'GET', url: '/metrics', status: 200, body: 'text' });
  // Query flags pick tempest's other schema.
  assert.throws(() => checkResponse({ method: 'GET', url: '/v3/p/os-quota-sets/p?usage=true', status: 200, body: { quota_set: { id: 'p', volumes: 10 } } }), /show_quota_set_usage/);
});

test('keys Cinder adds past what tempest describes pass only from their microversion', () => {
  const snapshot = {
    id: volume.id, volume_id: volume.id, status: 'available', size: 1, name: null, description: null, metadata: {}, created_at: volume.created_at, updated_at: null,
    'os-extended-snapshot-attributes:progress': '100%', 'os-extended-snapshot-attributes:project_id': 'p',
  };
  const url = `/v3/p/snapshots/${volume.id}`;
  checkResponse({ method: 'GET', url, status: 200, responseVersion: 'volume 3.41', body: { snapshot: { ...snapshot, group_snapshot_id: null, user_id: 'u' } } });
  assert.throws(() => checkResponse({ method: 'GET', url, status: 200, responseVersion: 'volume 3.40', body: { snapshot: { ...snapshot, user_id: 'u' } } }), /user_id/);
  assert.throws(() => checkResponse({ method: 'GET', url, status: 200, responseVersion: 'volume 3.41', body: { snapshot: { ...snapshot, user_id: 7 } } }), /user_id/);
  checkResponse({ method: 'GET', url: '/v3/p/volumes?with_count=true', status: 200, responseVersion: 'volume 3.45', body: { volumes: [], count: 0 } });
  assert.throws(() => checkResponse({ method: 'GET', url: '/v3/p/volumes?with_count=true', status: 200, responseVersion: 'volume 3.44', body: { volumes: [], count: 0 } }), /count/);
});
