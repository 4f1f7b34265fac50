/**
 * The API fuzzer of the suite (test/fuzz/api-fuzzer.ts), run longer: starts
 * Basalt (all roles, temporary state dir, free port), makes the fixtures, runs
 * `--runs` request sequences from `--seed` (random by default) and prints the
 * counts: sequences, requests generated, answers by status, state comparisons,
 * policy routes reached. A broken invariant prints fast-check's report (its
 * seed and counterexample: rerun with that seed) and exits 1.
 *
 *   node --import tsx bench/fuzz-api.ts [--runs 5000] [--seed N] [--max-requests 6] [--concurrent]
 *
 * `--concurrent` sends each sequence's requests at once (races) instead of in turn.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { POLICY } from '../src/api/policy.ts';
import { loadConfig } from '../src/config/index.ts';
import { startServer } from '../src/server/index.ts';
import { makeFixtures, runApiFuzz, type FuzzStats } from '../test/fuzz/api-fuzzer.ts';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '5000' },
    seed: { type: 'string' },
    'max-requests': { type: 'string', default: '6' },
    concurrent: { type: 'boolean', default: false },
  },
});
const seed = args.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(args.seed);

const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-fuzz-api-'));
const config = loadConfig({
  env: {
    BASALT_PORT: '0', BASALT_STATE_DIR: stateDir, BASALT_NBD_PORT: '0', BASALT_REPORT_INTERVAL: '0.2',
    BASALT_JOB_POLL_INTERVAL_SECONDS: '0.05', BASALT_JOB_LEASE_SECONDS: '2', BASALT_JOB_RETRY_DELAY_SECONDS: '0.05',
  },
});
const server = await startServer({ config, logger: pino({ level: process.env.BASALT_LOG_LEVEL ?? 'silent' }) });
const target = { url: server.url!, stateDir };
const started = Date.now();
let stats: FuzzStats | undefined;
let failure: unknown;
try {
  const fixtures = await makeFixtures(target);
  stats = await runApiFuzz(target, fixtures, { seed, numRuns: Number(args.runs), maxRequests: Number(args['max-requests']), concurrent: args.concurrent });
} catch (err) {
  failure = err;
} finally {
  await server.close();
  fs.rmSync(stateDir, { recursive: true, force: true });
}
const routes = new Set(POLICY.map((p) => `${p.method} ${p.path}${p.action ? ` ${p.action}` : ''}`)).size;
if (stats) {
  console.log(`seed ${seed}: ${stats.sequences} sequences, ${stats.requests} requests in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  console.log(`answers by status: ${Object.entries(stats.byStatus).map(([s, n]) => `${s}: ${n}`).join(', ')}`);
  console.log(`state comparisons: ${stats.stateChecks}; policy routes reached: ${stats.routes.size} of ${routes}`);
  console.log('findings: 0');
} else {
  console.log(`seed ${seed}: FINDING`);
  console.log(failure instanceof Error ? failure.message : String(failure));
  process.exitCode = 1;
}
