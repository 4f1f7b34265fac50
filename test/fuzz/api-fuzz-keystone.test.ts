/**
 * The API fuzzer behind Keystone (issue 13): a short run of the same
 * sequences with Keystone tokens (a project admin, a member and a reader of
 * one project, a member of another), and now and then a token that must never
 * be accepted in place of the caller's — none, forged, a real one cut short or
 * altered, a noauth `user:project` token, one far too long. Same invariants as
 * api-fuzz.test.ts, plus: a bad token never gets past authentication. Kept
 * short (token validation is a round trip to a real Keystone); `bench/fuzz-api.ts`
 * runs the noauth fuzzer longer.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { basaltKeystoneEnv, startKeystone, type Cloud, type Keystone } from '../helpers/keystone.ts';
import { startTestServer } from '../helpers/server.ts';
import { makeFixtures, runApiFuzz, type Cast } from './api-fuzzer.ts';

/** The seed (BASALT_FUZZ_SEED overrides it): a failure names it, and a rerun with it repeats the same requests. */
const SEED = Number(process.env.BASALT_FUZZ_SEED ?? 1_313_013);

let keystone: Keystone;
let cloud: Cloud;

before(async () => {
  keystone = await startKeystone();
  // No client here goes through the catalog: Basalt's endpoint in it is never used.
  cloud = await keystone.cloud('http://127.0.0.1:8776');
});
after(() => keystone.stop());

test('issue 13 API fuzzer behind Keystone: tokens good and bad on every route, never a 5xx, an accepted bad token, a leak or a half-made object', { timeout: 240_000 }, async (t) => {
  const s = await startTestServer(t, {
    env: {
      ...basaltKeystoneEnv(cloud, keystone.url),
    },
  });
  const persona = async (name: Cast[number]['name'], user: string, project: { id: string; name: string }): Promise<Cast[number]> =>
    ({ name, project: project.id, headers: { 'X-Auth-Token': await cloud.token(user, project.name) }, isAdmin: name === 'admin' });
  const cast: Cast = [
    await persona('admin', 'admin', { id: cloud.adminProject.id, name: 'admin' }),
    await persona('member', 'alice', cloud.demo),
    await persona('reader', 'rita', cloud.demo),
    await persona('foreign', 'mallory', cloud.rival),
  ];
  const real = cast[1].headers['X-Auth-Token']!;
  const altered = `${real.slice(0, -5)}${real.slice(-5) === 'AAAAA' ? 'BBBBB' : 'AAAAA'}`;
  const badTokens = ['', 'gAAAAAB-not-a-token', real.slice(0, real.length >> 1), real.slice(0, -1), altered, `${real}x`, `Bearer ${real}`,
    `alice:${cloud.demo.id}`, 'admin:admin', 'null', 'undefined', '%00', '../../v3/auth/tokens', 'a'.repeat(8000)];

  const target = { url: s.url, stateDir: s.stateDir };
  const fixtures = await makeFixtures(target, cast);
  const started = Date.now();
  const stats = await runApiFuzz(target, fixtures, { seed: SEED, numRuns: Number(process.env.BASALT_FUZZ_KEYSTONE_RUNS ?? 200), cast, badTokens });
  t.diagnostic(`seed ${SEED}: ${stats.sequences} sequences, ${stats.requests} requests in ${Date.now() - started} ms; answers by status ${JSON.stringify(stats.byStatus)}; ${stats.stateChecks} state comparisons; ${stats.routes.size} routes`);
  assert.ok((stats.byStatus[401] ?? 0) > stats.requests / 12, 'bad tokens were sent, and refused');
  const accepted = Object.entries(stats.byStatus).reduce((sum, [status, n]) => sum + (Number(status) < 300 ? n : 0), 0);
  assert.ok(accepted > stats.requests / 20, `good tokens got through (${accepted} answers 2xx)`);
  assert.ok(stats.stateChecks > stats.sequences / 4, 'most sequences are compared');
});
