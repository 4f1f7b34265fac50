/**
 * The API fuzzer in the suite (issue 13, "Fuzzing in the suite"): a fixed seed
 * and a bounded number of request sequences against one server, as an admin,
 * a member, a reader and another project's member. The invariants are
 * test/fuzz/api-fuzzer.ts's: no 5xx, every error a Cinder fault, nothing of
 * another project named, nothing half-created. `bench/fuzz-api.ts` runs it longer.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { POLICY } from '../../src/api/policy.ts';
import { startTestServer } from '../helpers/server.ts';
import { makeFixtures, OWN_PROJECT, runApiFuzz, stateOf } from './api-fuzzer.ts';
import { runRawHttpFuzz } from './http-fuzzer.ts';
import { PROJECT } from '../helpers/server.ts';

/** The suite's seed (BASALT_FUZZ_SEED overrides it): a failure names it, and a rerun with it repeats the same requests. */
const SEED = Number(process.env.BASALT_FUZZ_SEED ?? 1_313_013);

test('issue 13 API fuzzer: malformed requests on every route get Cinder faults, never a 5xx, a leak or a half-made object', { timeout: 240_000 }, async (t) => {
  assert.equal(OWN_PROJECT, PROJECT);
  const s = await startTestServer(t);
  const target = { url: s.url, stateDir: s.stateDir };
  const fixtures = await makeFixtures(target);
  const started = Date.now();
  const stats = await runApiFuzz(target, fixtures, { seed: SEED, numRuns: Number(process.env.BASALT_FUZZ_RUNS ?? 1500), concurrent: process.env.BASALT_FUZZ_CONCURRENT === '1' });
  t.diagnostic(`seed ${SEED}: ${stats.sequences} sequences, ${stats.requests} requests in ${Date.now() - started} ms; answers by status ${JSON.stringify(stats.byStatus)}; `
    + `${stats.stateChecks} state comparisons; ${stats.routes.size} of ${new Set(POLICY.map((p) => `${p.method} ${p.path}${p.action ? ` ${p.action}` : ''}`)).size} policy routes`);
  assert.ok(stats.stateChecks > stats.sequences / 4, 'most sequences are compared');
  // The comparison sees a change when there is one.
  const before = stateOf(target);
  assert.equal((await s.request('POST', `/v3/${PROJECT}/types`, { volume_type: { name: `after-fuzz-${SEED}` } })).status, 200);
  assert.notEqual(stateOf(target), before, 'a new volume type changes the compared state');
  assert.ok(stats.routes.size > POLICY.length * 0.8, `the run reaches most routes (${stats.routes.size})`);
});

test('issue 13 API fuzzer, raw HTTP: malformed requests get Cinder faults and keep-alive clients are never cut off unwarned', { timeout: 240_000 }, async (t) => {
  const s = await startTestServer(t);
  const created = await s.request('POST', `/v3/${PROJECT}/volumes`, { volume: { size: 1 } });
  assert.equal(created.status, 202);
  const started = Date.now();
  const stats = await runRawHttpFuzz(Number(new URL(s.url).port), PROJECT, created.body.volume.id, { seed: SEED, numRuns: Number(process.env.BASALT_FUZZ_RAW_RUNS ?? 300) });
  t.diagnostic(`seed ${SEED}: ${stats.exchanges} raw exchanges in ${Date.now() - started} ms; answers by status ${JSON.stringify(stats.byStatus)}; ${stats.closed} connections closed with Connection: close, ${stats.keptAlive} kept alive and reused`);
  assert.ok(stats.closed > 0 && stats.keptAlive > 0);
});
