/** Cinder API behaviour: versions, microversions, auth scope, lists, bad input. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/index.ts';
import { startServer } from '../../src/server/index.ts';
import pino from 'pino';
import { PROJECT, startTestServer, tempStateDir, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;

async function createAvailable(s: TestServer, volume: Record<string, unknown>, headers?: Record<string, string>): Promise<string> {
  const r = await s.request('POST', `/v3/${headers ? headers['X-Project-Id'] : PROJECT}/volumes`, { volume }, headers);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.volume.id;
}

test('version documents and microversion negotiation', async (t) => {
  const s = await startTestServer(t);
  const root = await s.request('GET', '/');
  assert.equal(root.status, 300);
  assert.equal(root.body.versions[0].id, 'v3.0');
  assert.equal(root.body.versions[0].min_version, '3.0');
  assert.equal(root.body.versions[0].version, '3.70');
  const v3 = await s.request('GET', '/v3/');
  assert.equal(v3.status, 200);
  assert.equal(v3.body.versions[0].status, 'CURRENT');

  const none = await s.request('GET', `${V}/volumes`);
  assert.equal(none.headers.get('openstack-api-version'), 'volume 3.0');
  assert.match(none.headers.get('vary')!, /OpenStack-API-Version/);
  const latest = await s.request('GET', `${V}/volumes`, undefined, { 'OpenStack-API-Version': 'volume latest' });
  assert.equal(latest.headers.get('openstack-api-version'), 'volume 3.70');
  const mid = await s.request('GET', `${V}/volumes`, undefined, { 'OpenStack-API-Version': 'volume 3.44' });
  assert.equal(mid.headers.get('openstack-api-version'), 'volume 3.44');
  const high = await s.request('GET', `${V}/volumes`, undefined, { 'OpenStack-API-Version': 'volume 3.99' });
  assert.equal(high.status, 406);
  assert.equal(high.body.computeFault.message, 'Version 3.99 is not supported by the API. Minimum is 3.0 and maximum is 3.70.');
  const old = await s.request('GET', `${V}/volumes`, undefined, { 'OpenStack-API-Version': 'volume 2.0' });
  assert.equal(old.status, 406);
  const bad = await s.request('GET', `${V}/volumes`, undefined, { 'OpenStack-API-Version': 'volume 3.x' });
  assert.equal(bad.status, 400);
  assert.match(bad.body.badRequest.message, /API Version String 3\.x is of invalid format/);
  const otherService = await s.request('GET', `${V}/volumes`, undefined, { 'OpenStack-API-Version': 'compute 2.1' });
  assert.equal(otherService.headers.get('openstack-api-version'), 'volume 3.0');

  // Without a project id in the path.
  const noProject = await s.request('GET', '/v3/volumes', undefined, { 'OpenStack-API-Version': 'volume 3.67' });
  assert.equal(noProject.status, 200);
  assert.deepEqual(noProject.body, { volumes: [] });
});

test('auth: noauth headers, project isolation, admin all_tenants, URL project mismatch', async (t) => {
  const s = await startTestServer(t);
  const a = { 'X-Auth-Token': 'alice:proj-a', 'X-Project-Id': 'proj-a' };
  const b = { 'X-User-Id': 'bob', 'X-Project-Id': 'proj-b', 'X-Auth-Token': '' };
  const idA = await createAvailable(s, { size: 1, name: 'a' }, a);
  const idB = await createAvailable(s, { size: 1, name: 'b' }, b);
  await waitForStatus(s, idA, 'available');

  assert.equal((await s.request('GET', '/v3/proj-a/volumes/' + idB, undefined, a)).status, 404, 'another project\'s volume is invisible');
  assert.deepEqual((await s.request('GET', '/v3/proj-a/volumes', undefined, a)).body.volumes.map((v: { id: string }) => v.id), [idA]);
  assert.equal((await s.request('GET', '/v3/proj-a/volumes?all_tenants=1', undefined, a)).body.volumes.length, 1, 'all_tenants is ignored for non-admins');
  assert.equal((await s.request('DELETE', '/v3/proj-a/volumes/' + idB, undefined, a)).status, 404);

  const admin = { 'X-Auth-Token': 'root:ops', 'X-Roles': 'admin,member' };
  const all = await s.request('GET', '/v3/ops/volumes/detail?all_tenants=1', undefined, admin);
  assert.deepEqual(all.body.volumes.map((v: { id: string }) => v.id).sort(), [idA, idB].sort());
  const onlyB = await s.request('GET', '/v3/ops/volumes?all_tenants=1&project_id=proj-b', undefined, admin);
  assert.deepEqual(onlyB.body.volumes.map((v: { id: string }) => v.id), [idB]);
  assert.equal((await s.request('GET', '/v3/ops/volumes', undefined, admin)).body.volumes.length, 0, 'without all_tenants an admin sees its own project');

  const mismatch = await s.request('GET', '/v3/proj-b/volumes', undefined, a);
  assert.equal(mismatch.status, 400);
  assert.match(mismatch.body.badRequest.message, /doesn't match Context's project_id/);
  const anonymous = await s.request('GET', '/v3/proj-a/volumes', undefined, { 'X-Auth-Token': '' });
  assert.equal(anonymous.status, 401);
  assert.ok(anonymous.body.unauthorized);

  const services = await s.request('GET', '/v3/proj-a/os-services', undefined, a);
  assert.equal(services.status, 403);
  assert.ok(services.body.forbidden);
  const adminServices = await s.request('GET', '/v3/ops/os-services', undefined, { ...admin, 'OpenStack-API-Version': 'volume 3.49' });
  assert.equal(adminServices.status, 200);
  const vol = adminServices.body.services.find((x: { binary: string }) => x.binary === 'cinder-volume');
  assert.equal(vol.state, 'up');
  assert.equal(vol.backend_state, 'up');
  assert.match(vol.host, /@file$/);
  assert.ok(adminServices.body.services.some((x: { binary: string }) => x.binary === 'cinder-scheduler'));
  const memberView = await s.request('GET', `/v3/proj-a/volumes/${idA}`, undefined, a);
  assert.equal(memberView.body.volume['os-vol-host-attr:host'], undefined, 'host is admin-only');
});

test('lists: detail, filters, sort, limit/marker pagination, with_count', async (t) => {
  const s = await startTestServer(t);
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push(await createAvailable(s, { size: i + 1, name: `v${i}`, metadata: { parity: i % 2 ? 'odd' : 'even' } }));
  for (const id of ids) await waitForStatus(s, id, 'available');

  const summary = await s.request('GET', `${V}/volumes`);
  assert.deepEqual(Object.keys(summary.body.volumes[0]).sort(), ['id', 'links', 'name']);
  assert.deepEqual(summary.body.volumes.map((v: { id: string }) => v.id), [...ids].reverse(), 'newest first by default');

  const byName = await s.request('GET', `${V}/volumes/detail?name=v3`);
  assert.deepEqual(byName.body.volumes.map((v: { name: string }) => v.name), ['v3']);
  const odd = await s.request('GET', `${V}/volumes/detail?metadata=${encodeURIComponent("{'parity': 'odd'}")}`);
  assert.deepEqual(odd.body.volumes.map((v: { name: string }) => v.name).sort(), ['v1', 'v3']);
  const oddJson = await s.request('GET', `${V}/volumes/detail?metadata=${encodeURIComponent('{"parity":"odd"}')}`);
  assert.equal(oddJson.body.volumes.length, 2);
  assert.equal((await s.request('GET', `${V}/volumes?status=error`)).body.volumes.length, 0);

  const bySize = await s.request('GET', `${V}/volumes/detail?sort=size:asc`);
  assert.deepEqual(bySize.body.volumes.map((v: { size: number }) => v.size), [1, 2, 3, 4, 5]);
  const legacySort = await s.request('GET', `${V}/volumes/detail?sort_key=name&sort_dir=desc`);
  assert.deepEqual(legacySort.body.volumes.map((v: { name: string }) => v.name), ['v4', 'v3', 'v2', 'v1', 'v0']);

  // Walk pages of two by following next links.
  const seen: string[] = [];
  let next: string | undefined = `${V}/volumes?sort=name:asc&limit=2`;
  let pages = 0;
  while (next) {
    const page = await s.request('GET', next);
    assert.equal(page.status, 200);
    seen.push(...page.body.volumes.map((v: { name: string }) => v.name));
    const link = page.body.volumes_links?.find((l: { rel: string }) => l.rel === 'next')?.href as string | undefined;
    next = link ? new URL(link).pathname + new URL(link).search : undefined;
    pages++;
  }
  assert.deepEqual(seen, ['v0', 'v1', 'v2', 'v3', 'v4']);
  assert.ok(pages >= 3);

  const counted = await s.request('GET', `${V}/volumes?with_count=true&limit=1`, undefined, { 'OpenStack-API-Version': 'volume 3.45' });
  assert.equal(counted.body.count, 5);
  assert.equal(counted.body.volumes.length, 1);

  assert.equal((await s.request('GET', `${V}/volumes?sort=bogus:asc`)).status, 400);
  assert.equal((await s.request('GET', `${V}/volumes?sort=name:sideways`)).status, 400);
  assert.equal((await s.request('GET', `${V}/volumes?limit=-1`)).status, 400);
  assert.equal((await s.request('GET', `${V}/volumes?limit=abc`)).status, 400);
  assert.equal((await s.request('GET', `${V}/volumes?marker=00000000-0000-0000-0000-000000000000`)).status, 404);

  const limits = await s.request('GET', `${V}/limits`);
  assert.equal(limits.body.limits.absolute.totalVolumesUsed, 5);
  assert.equal(limits.body.limits.absolute.totalGigabytesUsed, 15);
  assert.equal(limits.body.limits.absolute.maxTotalVolumes, 10);
  const zones = await s.request('GET', `${V}/os-availability-zone`);
  assert.deepEqual(zones.body, { availabilityZoneInfo: [{ zoneName: 'nova', zoneState: { available: true } }] });
});

test('bad input is a 400 naming the field, and nothing is created', async (t) => {
  const s = await startTestServer(t);
  const cases: Array<[unknown, RegExp, string?]> = [
    [{ volume: { size: 0 } }, /size\. Value: 0\. 0 is less than the minimum of 1/],
    [{ volume: { size: -3 } }, /attribute size/],
    [{ volume: { size: 1.5 } }, /attribute size/],
    [{ volume: { size: 'abc' } }, /attribute size/],
    [{ volume: { size: 99999999999 } }, /attribute size/],
    [{ volume: { size: '99999999999' } }, /greater than the maximum/],
    [{ volume: {} }, /'size' is a required property/],
    [{ volume: { size: 1, name: 'x'.repeat(256) } }, /attribute name/],
    [{ volume: { size: 1, description: 'x'.repeat(256) } }, /attribute description/],
    [{ volume: { size: 1, snapshot_id: 'not-a-uuid' } }, /attribute snapshot_id/],
    [{ volume: { size: 1, metadata: { k: 5 } } }, /attribute k/],
    [{ volume: { size: 1, availability_zone: 'atlantis' } }, /Availability zone 'atlantis' is invalid/],
    [{ nothing: true }, /'volume' is a required property/],
    ['{"volume": {"size": 1', /Malformed request body/],
    [{ volume: { size: 1, bogus: 1 } }, /Additional properties are not allowed \('bogus' was unexpected\)/, '3.53'],
  ];
  for (const [body, message, version] of cases) {
    const headers = version ? { 'OpenStack-API-Version': `volume ${version}` } : undefined;
    const r = await s.request('POST', `${V}/volumes`, body, headers);
    assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.status} ${JSON.stringify(r.body)}`);
    assert.match(r.body.badRequest.message, message, JSON.stringify(body));
  }
  // Below 3.53 unknown fields are ignored, as in Cinder.
  const lenient = await s.request('POST', `${V}/volumes`, { volume: { size: 1, bogus: 1 } });
  assert.equal(lenient.status, 202);
  const all = await s.request('GET', `${V}/volumes`);
  assert.equal(all.body.volumes.length, 1, 'only the lenient create made a volume');

  assert.equal((await s.request('GET', `${V}/volumes/not-a-uuid`)).status, 404);
  const missing = await s.request('GET', `${V}/volumes/00000000-0000-0000-0000-000000000000`);
  assert.equal(missing.status, 404);
  assert.equal(missing.body.itemNotFound.message, 'Volume 00000000-0000-0000-0000-000000000000 could not be found.');
  assert.equal((await s.request('POST', `${V}/volumes/not-a-uuid/action`, { 'os-extend': { new_size: 2 } })).status, 404);
  const extendBad = await s.request('POST', `${V}/volumes/${lenient.body.volume.id}/action`, { 'os-extend': { new_size: 'big' } });
  assert.equal(extendBad.status, 400);
  assert.match(extendBad.body.badRequest.message, /new_size/);
  assert.equal((await s.request('PUT', `${V}/volumes/${lenient.body.volume.id}`, { volume: { name: 'y'.repeat(300) } })).status, 400);
  assert.equal((await s.request('GET', '/v3/nowhere/nothing')).status, 404);
});

test('noauth on a non-loopback address is refused unless forced', async (t) => {
  const stateDir = tempStateDir(t);
  const config = loadConfig({ env: { BASALT_STATE_DIR: stateDir, BASALT_PORT: '0', BASALT_OSAPI_VOLUME_LISTEN: '0.0.0.0' } });
  await assert.rejects(startServer({ config, logger: pino({ level: 'silent' }) }), /Refusing to serve auth_strategy = noauth on 0\.0\.0\.0/);
});

test('every response carries x-openstack-request-id, and the same id is in its JSON log line', async (t) => {
  const logLines: string[] = [];
  const s = await startTestServer(t, { logLines });
  const r = await s.request('GET', `${V}/volumes/00000000-0000-0000-0000-000000000000`);
  assert.equal(r.status, 404);
  const id = r.headers.get('x-openstack-request-id')!;
  assert.match(id, /^req-/);
  const entry = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e.request_id === id);
  assert.ok(entry, 'a log line names the request id');
  assert.equal(entry.status, 404);
  assert.equal(entry.method, 'GET');
  const other = await s.request('GET', '/');
  assert.notEqual(other.headers.get('x-openstack-request-id'), id);
});

test('pagination by a column that may be empty (unnamed volumes) visits every volume once', async (t) => {
  const s = await startTestServer(t);
  const ids = [
    await createAvailable(s, { size: 1 }),
    await createAvailable(s, { size: 1, name: 'b' }),
    await createAvailable(s, { size: 1 }),
    await createAvailable(s, { size: 1, name: 'a' }),
    await createAvailable(s, { size: 1 }),
  ];
  for (const dir of ['asc', 'desc']) {
    const seen: string[] = [];
    let marker = '';
    for (let page = 0; page < 10; page++) {
      const r = await s.request('GET', `${V}/volumes?sort=name:${dir}&limit=2${marker}`);
      seen.push(...r.body.volumes.map((v: { id: string }) => v.id));
      if (!r.body.volumes_links) break;
      marker = `&marker=${r.body.volumes.at(-1).id}`;
    }
    assert.deepEqual([...seen].sort(), [...ids].sort(), `sort=name:${dir}`);
  }
});

test('force delete is for admins only', async (t) => {
  const s = await startTestServer(t);
  const member = { 'X-Auth-Token': 'alice:proj-a', 'X-Project-Id': 'proj-a' };
  const id = await createAvailable(s, { size: 1 }, member);
  const r = await s.request('DELETE', `/v3/proj-a/volumes/${id}?force=true`, undefined, member);
  assert.equal(r.status, 403);
  assert.ok(r.body.forbidden);
});
