/**
 * The OpenAPI document (issue 18 part 3): valid OpenAPI 3.1, listing every
 * route Fastify registers, with request bodies that are the schemas the routes
 * validate with — a body the route refuses with 400 the document's schema
 * refuses too, and one it takes the document takes.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
import { test } from 'node:test';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { Validator } from '@seriousme/openapi-schema-validator';
import pino from 'pino';
import { buildApi, type ApiDeps } from '../../src/api/index.ts';
import { openapiPath } from '../../src/api/openapi.ts';
import { ApiVersion, MAX_VERSION } from '../../src/api/microversion.ts';
import { POLICY } from '../../src/api/policy.ts';
import { loadConfig } from '../../src/config/index.ts';
import { isUuid } from '../../src/common/index.ts';
import { PROJECT, startTestServer } from '../helpers/server.ts';

/* eslint-disable @typescript-eslint/no-explicit-any */
type Doc = any;

/** The routes the app registers (every method, HEAD included) and its document, without a database. */
async function registered(): Promise<{ routes: { method: string; url: string }[]; doc: Doc }> {
  const config = loadConfig({ env: { BASALT_STATE_DIR: '/nonexistent' } });
  // Route plugins keep their deps for the handlers: registering needs the config, and of the rest only names.
  // The request count, which every request uses, is absent (it is optional).
  const absent = new Set<PropertyKey>(['foreground']);
  const deps = new Proxy({ config }, { get: (t, k) => (k in t ? t[k as keyof typeof t] : absent.has(k) ? undefined : {}) }) as unknown as ApiDeps;
  const app = buildApi(deps, pino({ level: 'silent' }));
  const routes: { method: string; url: string }[] = [];
  app.addHook('onRoute', (route) => { for (const method of [route.method].flat()) routes.push({ method, url: route.url }); });
  await app.ready();
  const r = await app.inject({ method: 'GET', url: '/openapi.json' });
  await app.close();
  assert.equal(r.statusCode, 200);
  return { routes, doc: r.json() };
}

const ajv = new Ajv2020({ strict: false, allErrors: false });
ajv.addFormat('uuid', { type: 'string', validate: (s: string) => isUuid(s) });

/** The document's body schema of an operation at a microversion: the variant whose x-openstack range holds it. */
function bodySchema(doc: Doc, method: string, path: string, version = '3.0'): object {
  const schema = doc.paths[path]?.[method]?.requestBody?.content?.['application/json']?.schema;
  assert.ok(schema, `${method} ${path} has a request body in the document`);
  if (!schema.anyOf || !schema.anyOf.every((v: Doc) => v['x-openstack'])) return schema;
  const v = ApiVersion.parse(version);
  const held = schema.anyOf.filter((s: Doc) => {
    const x = s['x-openstack'];
    return (!x['min-ver'] || v.atLeast(x['min-ver'])) && (!x['max-ver'] || ApiVersion.parse(x['max-ver']).atLeast(version));
  });
  assert.equal(held.length, 1, `${method} ${path} has one body variant at ${version}`);
  return held[0];
}

const versions = Array.from({ length: Number(MAX_VERSION.split('.')[1]) + 1 }, (_, i) => `3.${i}`);

test('the document is valid OpenAPI 3.1 and lists every route Fastify registered', async () => {
  const { routes, doc } = await registered();
  const result = await new Validator().validate(structuredClone(doc));
  assert.equal(result.valid, true, JSON.stringify(result.errors, null, 1)?.slice(0, 3000));
  assert.equal(doc.openapi, '3.1.0');
  assert.ok(routes.length > 200, `only ${routes.length} routes seen`);
  for (const r of routes) {
    const { path, params } = openapiPath(r.url);
    const op = doc.paths[path]?.[r.method.toLowerCase()];
    assert.ok(op, `${r.method} ${r.url} is in the document as ${path}`);
    assert.deepEqual(op.parameters.filter((p: Doc) => p.in === 'path').map((p: Doc) => p.name), params, `${r.method} ${path}: its path parameters`);
  }
  const count = Object.values(doc.paths).reduce((n: number, item: Doc) => n + Object.keys(item).length, 0);
  assert.equal(count, new Set(routes.map((r) => `${r.method} ${r.url}`)).size, 'nothing in the document that is not routed');
  // Microversion ranges of the routes that have one (the policy table's `since`).
  assert.equal(doc.paths['/v3/{project_id}/volumes/summary'].get['x-openstack']['min-ver'], '3.12');
  assert.equal(doc.paths['/v3/{project_id}/attachments'].post['x-openstack']['min-ver'], '3.27');
  // The version documents and /openapi.json itself need no token; the API does.
  assert.equal(doc.paths['/openapi.json'].get.security, undefined);
  assert.deepEqual(doc.paths['/v3/{project_id}/volumes'].get.security, [{ token: [] }]);
});

test('every body schema in the document is JSON Schema 2020-12, versioned bodies cover each microversion once, and every action the policy names is declared', async () => {
  const { doc } = await registered();
  let bodies = 0;
  for (const [path, item] of Object.entries<Doc>(doc.paths)) {
    for (const [method, op] of Object.entries<Doc>(item)) {
      const schema = op.requestBody?.content?.['application/json']?.schema;
      if (!schema) continue;
      bodies++;
      assert.ok(ajv.validateSchema(schema), `${method} ${path}: ${ajv.errorsText(ajv.errors)}`);
      ajv.compile(schema);
      if (schema.anyOf?.every((v: Doc) => v['x-openstack'])) for (const v of versions) bodySchema(doc, method, path, v);
    }
  }
  assert.ok(bodies > 60, `only ${bodies} bodies`);
  for (const p of POLICY.filter((e) => e.action)) {
    const { path } = openapiPath(`/v3/:project_id${p.path}`);
    const actions = bodySchema(doc, p.method.toLowerCase(), path) as Doc;
    assert.ok(actions.oneOf.some((a: Doc) => a.title === p.action), `${p.method} ${p.path} declares ${p.action}`);
  }
});

test('for a sample of routes, the document refuses the bodies the route refuses with 400, and takes the ones it takes', async (t) => {
  const s = await startTestServer(t);
  // Served without a token, like the version documents.
  const served = await fetch(`${s.url}/openapi.json`);
  assert.equal(served.status, 200);
  const doc = await served.json() as Doc;
  const V = `/v3/${PROJECT}`;
  const id = randomUUID();
  const latest = { 'OpenStack-API-Version': `volume ${MAX_VERSION}` };
  const cases: { method: string; route: string; url: string; version?: string; bad: unknown[]; good?: unknown[] }[] = [
    {
      method: 'POST', route: '/v3/{project_id}/volumes', url: `${V}/volumes`,
      bad: [{}, { volume: {} }, { volume: { size: 0 } }, { volume: { size: 'x' } }, { volume: { size: 1, name: 'n'.repeat(256) } }, { volume: { size: 1, metadata: { k: 1 } } }, [1]],
      good: [{ volume: { size: 1, name: 'openapi', extra_key_before_353: true } }],
    },
    {
      method: 'POST', route: '/v3/{project_id}/volumes', url: `${V}/volumes`, version: MAX_VERSION,
      bad: [{ volume: { size: 1, bogus: true } }, { volume: { size: 1 }, bogus: 1 }],
      good: [{ volume: { size: 1, name: 'strict' } }],
    },
    {
      method: 'POST', route: '/v3/{project_id}/volumes/{id}/action', url: `${V}/volumes/${id}/action`, version: MAX_VERSION,
      bad: [{ 'os-extend': {} }, { 'os-extend': { new_size: 'x' } }, { 'os-extend': { new_size: 2, more: 1 } }, { 'os-reset_status': { status: 'bogus' } },
        { 'os-retype': {} }, { revert: { snapshot_id: 'nope' } }, { 'os-bogus': {} }, { 'os-extend': {}, 'os-retype': {} }, { 'os-attach': { mode: 'rx' } }],
    },
    {
      method: 'PUT', route: '/v3/{project_id}/volumes/{id}', url: `${V}/volumes/${id}`,
      bad: [{}, { volume: { name: 5 } }, { volume: { metadata: [] } }],
    },
    {
      method: 'POST', route: '/v3/{project_id}/snapshots/{id}/action', url: `${V}/snapshots/${id}/action`,
      bad: [{ 'os-reset_status': {} }, { 'os-reset_status': { status: 'bogus' } }, { 'os-update_snapshot_status': {} }],
    },
    {
      method: 'POST', route: '/v3/{project_id}/backups/{id}/action', url: `${V}/backups/${id}/action`,
      bad: [{ 'os-reset_status': { status: 'bogus' } }, { 'os-reset_status': null }],
    },
    {
      method: 'PUT', route: '/v3/{project_id}/os-services/disable-log-reason', url: `${V}/os-services/disable-log-reason`,
      bad: [{}, { host: 5, binary: 'cinder-volume', disabled_reason: 'x' }],
    },
    {
      method: 'POST', route: '/v3/{project_id}/types', url: `${V}/types`,
      bad: [{}, { volume_type: {} }, { volume_type: { name: '' } }, { volume_type: { name: 'x', extra_specs: { 'bad key!': 'v' } } }],
      good: [{ volume_type: { name: `openapi-${id}` } }],
    },
    {
      // Refused in this API's own words (Missing required element 'quota_set' in request body.), from the same schema.
      method: 'PUT', route: '/v3/{project_id}/os-quota-sets/{target}', url: `${V}/os-quota-sets/${PROJECT}`,
      bad: [{}, { quota_set: [] }, { quota_set: null }, { quota_set: 'x' }],
      good: [{ quota_set: { volumes: 20 } }],
    },
    {
      method: 'POST', route: '/v3/{project_id}/workers/cleanup', url: `${V}/workers/cleanup`, version: '3.24',
      bad: [{ bogus: 1 }, { cluster_name: '' }],
    },
  ];
  for (const c of cases) {
    const headers: Record<string, string> = c.version ? { 'OpenStack-API-Version': `volume ${c.version}` } : {};
    const validateBody: ValidateFunction = ajv.compile(bodySchema(doc, c.method.toLowerCase(), c.route, c.version));
    for (const body of c.bad) {
      const r = await s.request(c.method, c.url, body, headers);
      assert.equal(r.status, 400, `${c.method} ${c.url} ${JSON.stringify(body)} at ${c.version ?? '3.0'}: ${JSON.stringify(r.body)}`);
      assert.ok(r.body.badRequest?.message, JSON.stringify(r.body));
      assert.equal(validateBody(body), false, `the document refuses ${c.method} ${c.route} ${JSON.stringify(body)}`);
    }
    for (const body of c.good ?? []) {
      const r = await s.request(c.method, c.url, body, headers);
      assert.ok(r.status < 300, `${c.method} ${c.url} ${JSON.stringify(body)}: ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(validateBody(body), true, `the document takes ${c.method} ${c.route} ${JSON.stringify(body)}: ${ajv.errorsText(validateBody.errors)}`);
    }
  }
  // A route with wording of its own keeps it while its schema decides.
  const quota = await s.request('PUT', `${V}/os-quota-sets/${PROJECT}`, { quota_set: [] });
  assert.equal(quota.body.badRequest.message, 'Missing required element \'quota_set\' in request body.');

  // The document's own wording for the microversion header and the server's agree on the newest version.
  const r = await s.request('GET', '/v3/', undefined, latest);
  assert.equal(r.body.versions[0].version, doc.info.version);

  // `basalt openapi` prints the same document.
  const bin = path.resolve(import.meta.dirname, '../../bin/basalt.js');
  const { stdout } = await promisify(execFile)(process.execPath, [bin, 'openapi', '--url', s.url], { maxBuffer: 64 * 1024 * 1024 });
  assert.deepEqual(JSON.parse(stdout), doc);
});
