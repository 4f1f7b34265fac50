/**
 * The web dashboard behind a real Keystone (Debian's, test/helpers/keystone.ts),
 * with `auth_strategy = keystone`: the dashboard signs in with a Keystone token
 * (its design: a token, sent as X-Auth-Token, kept in the tab), shows only the
 * token's project's volumes, and a bad token — one Keystone never issued, or
 * one revoked while the tab is open — is told in words on the sign-in form,
 * never a blank page. Screenshots as in dashboard.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { browser, cellIs, open, rowIds, screenshots } from '../helpers/dashboard-page.ts';
import { basaltKeystoneEnv, keystoneForFile } from '../helpers/keystone.ts';
import { startTestServer, waitFor, type TestServer } from '../helpers/server.ts';

const MV = { 'OpenStack-API-Version': 'volume 3.70' };

const ks = keystoneForFile();

/** Creates a volume in the token's project and waits until it is available. */
async function volume(s: TestServer, token: string, project: string, name: string): Promise<string> {
  const r = await s.request('POST', `/v3/${project}/volumes`, { volume: { size: 1, name } }, { ...MV, 'X-Auth-Token': token });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const id = r.body.volume.id as string;
  await waitFor(`${name} available`, async () => (await s.request('GET', `/v3/${project}/volumes/${id}`, undefined, { 'X-Auth-Token': token })).body.volume?.status === 'available');
  return id;
}

test('the dashboard with Keystone tokens: the project\'s volumes only, and a bad or revoked token said in words', async (t) => {
  const s = await startTestServer(t, {
    env: {
      BASALT_PORT: String(ks.port), BASALT_DASHBOARD_ENABLED: 'true', ...basaltKeystoneEnv(ks.cloud),
      // A revoked token is refused within a second (validations are cached that long).
      BASALT_KEYSTONE_AUTHTOKEN__TOKEN_CACHE_TIME: '1',
    },
  });
  const alice = await ks.cloud.token('alice', ks.cloud.demo.name);
  const mallory = await ks.cloud.token('mallory', ks.cloud.rival.name);
  const ours = [await volume(s, alice, ks.cloud.demo.id, 'demo-one'), await volume(s, alice, ks.cloud.demo.id, 'demo-two')];
  const theirs = await volume(s, mallory, ks.cloud.rival.id, 'rival-one');

  const shoot = screenshots(t);
  const page = await (await browser(t)).newPage();
  const failedRequests: string[] = [];
  page.on('response', (r) => { if (r.status() >= 400) failedRequests.push(`${r.status()} ${new URL(r.url()).pathname}`); });
  const response = await page.goto(`${s.url}/dashboard/#/volumes`);
  assert.equal(response?.status(), 200, 'the dashboard\'s files need no token');

  // A token Keystone never issued: the form says so in the API's words, and stays.
  const bogus = 'gAAAAABnot-a-keystone-token';
  const refused = await s.request('GET', '/v3/volumes?limit=1', undefined, { ...MV, 'X-Auth-Token': bogus });
  assert.equal(refused.status, 401);
  await page.fill('[data-testid="token"]', bogus);
  await page.click('[data-testid="sign-in"]');
  await waitFor('the sign-in error', async () => (await page.locator('[data-testid="sign-in-error"]').count()) > 0, 30_000);
  assert.equal((await page.locator('[data-testid="sign-in-error"]').textContent())?.trim(), `Not signed in: ${refused.body.unauthorized.message}`);
  assert.equal(await page.locator('nav').count(), 0, 'not signed in');
  await shoot(page, 'keystone-bad-token');

  // Alice's Keystone token: her project's volumes, as the API lists them for her, and not the rival project's.
  await page.fill('[data-testid="token"]', alice);
  await page.click('[data-testid="sign-in"]');
  await page.locator('main[data-page="volumes"] [data-testid="loaded-at"]').filter({ hasNotText: 'loading' }).waitFor();
  const listed = (await s.request('GET', `/v3/${ks.cloud.demo.id}/volumes/detail?all_tenants=1`, undefined, { ...MV, 'X-Auth-Token': alice })).body.volumes as Array<{ id: string; name: string; status: string }>;
  assert.deepEqual(new Set(listed.map((v) => v.id)), new Set(ours));
  for (const v of listed) {
    await cellIs(page, 'volumes', v.id, 'name', v.name);
    await cellIs(page, 'volumes', v.id, 'status', v.status);
  }
  assert.deepEqual(new Set(await rowIds(page, 'volumes')), new Set(ours));
  assert.ok(!(await rowIds(page, 'volumes')).includes(theirs), 'the rival project\'s volume is not shown');
  await shoot(page, 'keystone-volumes');
  // A page the member may not see says why, in the API's words (the services are the admin's).
  await open(page, 'services');
  const forbidden = await s.request('GET', '/v3/os-services', undefined, { ...MV, 'X-Auth-Token': alice });
  assert.equal(forbidden.status, 403);
  assert.equal((await page.locator('[data-testid="page-error"]').first().textContent())?.trim(), forbidden.body.forbidden.message);
  await open(page, 'volumes');

  // The token is revoked while the tab is open: the next refresh signs the tab out, saying why.
  const revoke = await fetch(`${ks.cloud.authUrl}/auth/tokens`, { method: 'DELETE', headers: { 'X-Auth-Token': alice, 'X-Subject-Token': alice } });
  assert.equal(revoke.status, 204);
  await waitFor('signed out', async () => (await page.locator('[data-testid="sign-in-error"]').count()) > 0, 60_000);
  const said = (await page.locator('[data-testid="sign-in-error"]').textContent())?.trim() ?? '';
  assert.match(said, /^Signed out: the API no longer accepts this token \(.+\)\. Sign in again with a new token\.$/);
  assert.ok(said.includes(refused.body.unauthorized.message), said);
  assert.equal(await page.locator('nav').count(), 0, 'the pages are gone with the token');
  await shoot(page, 'keystone-token-revoked');

  // Signed in again with a fresh token: the same volumes.
  await page.fill('[data-testid="token"]', await ks.cloud.token('alice', ks.cloud.demo.name));
  await page.click('[data-testid="sign-in"]');
  await cellIs(page, 'volumes', ours[0]!, 'name', 'demo-one');

  // What failed was the bogus and the revoked token (401) and the member's look at the services (403), nothing else.
  assert.deepEqual(failedRequests.filter((r) => !r.startsWith('401 ') && !r.startsWith('403 ')), []);
});
