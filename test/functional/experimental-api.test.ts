/**
 * Experimental APIs (issue 17 part 3): a route marked experimental answers
 * only to a request carrying `OpenStack-API-Experimental: true`; otherwise it
 * is a 404 with Cinder's fault body, exactly as a path that names nothing
 * (even before authentication). Its answers carry the header back, and the
 * version documents list it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROJECT, startTestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MISSING = '00000000-0000-0000-0000-000000000000';

test('an experimental route is absent without OpenStack-API-Experimental: true, and answers with it', async (t) => {
  const s = await startTestServer(t);
  const vol = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  assert.equal(vol.status, 202);

  // The version documents name it, below /v3/{project_id}.
  for (const p of ['/', '/v3/']) {
    const doc = await s.request('GET', p);
    assert.ok(doc.body.versions[0].experimental_routes.includes('GET /v3/{project_id}/backups/{id}/progress'), JSON.stringify(doc.body));
  }

  // Without the header (or with anything but true): the same 404 as a path that names nothing.
  const absent = await s.request('GET', `${V}/no-such-route/${MISSING}`);
  const refused: Record<string, string>[] = [{}, { 'OpenStack-API-Experimental': 'false' }, { 'OpenStack-API-Experimental': 'yes please' }];
  for (const headers of refused) {
    for (const prefix of [V, '/v3']) {
      const r = await s.request('GET', `${prefix}/backups/${MISSING}/progress`, undefined, { 'OpenStack-API-Version': 'volume 3.67', ...headers });
      assert.equal(r.status, 404, `${prefix} ${JSON.stringify(headers)}`);
      assert.deepEqual(r.body, absent.body);
      assert.equal(r.headers.get('openstack-api-experimental'), null);
      assert.equal(r.headers.get('openstack-api-version'), 'volume 3.67', 'the 404 names its microversion as any answer does');
    }
  }
  // Unauthenticated: still absent, not a 401 (the route does not exist for this request).
  const anonymous = await s.request('GET', `${V}/backups/${MISSING}/progress`, undefined, { 'X-Auth-Token': '' });
  assert.equal(anonymous.status, 404);

  // With it: the route runs (here: the backup does not exist, Cinder's 404 naming it) and the answer carries the header.
  for (const value of ['true', 'True', ' TRUE ']) {
    const r = await s.request('GET', `${V}/backups/${MISSING}/progress`, undefined, { 'OpenStack-API-Experimental': value });
    assert.equal(r.status, 404);
    assert.match(r.body.itemNotFound.message, new RegExp(`Backup ${MISSING} could not be found`));
    assert.equal(r.headers.get('openstack-api-experimental'), 'true');
  }
  // An authenticated request still needs its credentials once the route exists for it.
  const unauthenticated = await s.request('GET', `${V}/backups/${MISSING}/progress`, undefined, { 'X-Auth-Token': '', 'OpenStack-API-Experimental': 'true' });
  assert.equal(unauthenticated.status, 401);
  assert.equal(unauthenticated.headers.get('openstack-api-experimental'), 'true');

  // A route that is not experimental ignores the header and does not echo it.
  const plain = await s.request('GET', `${V}/volumes`, undefined, { 'OpenStack-API-Experimental': 'true' });
  assert.equal(plain.status, 200);
  assert.equal(plain.headers.get('openstack-api-experimental'), null);
});
