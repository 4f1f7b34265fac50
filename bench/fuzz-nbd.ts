/**
 * The NBD fuzzer of the suite (test/fuzz/nbd-fuzzer.ts), run longer: starts an
 * NBD server over a file-driver volume on each plane asked for (native
 * threads, event loop, TLS), runs `--runs` generated cases from `--seed`
 * (random by default) and prints the counts: cases by kind, requests and
 * connections generated, replies by NBD error, connections the server ended,
 * and the memory high-water marks. A broken invariant prints fast-check's
 * report (its seed and counterexample: rerun with that seed) and exits 1.
 *
 *   node --import tsx bench/fuzz-nbd.ts [--runs 2000] [--seed N [--path P]] [--plane native,event-loop,tls]
 *
 * `--seed` and `--path` from a report replay the case that failed.
 */
import { parseArgs } from 'node:util';
import { PLANES, type Plane } from '../test/helpers/nbd-export.ts';
import { runNbdFuzz } from '../test/fuzz/nbd-fuzzer.ts';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '2000' },
    seed: { type: 'string' },
    path: { type: 'string' },
    plane: { type: 'string', default: PLANES.join(',') },
  },
});
const seed = args.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(args.seed);
const planes = args.plane.split(',') as Plane[];
let failed = false;
for (const plane of planes) {
  const cleanups: Array<() => unknown> = [];
  const started = Date.now();
  try {
    const stats = await runNbdFuzz({ after: (fn) => cleanups.push(fn) }, plane, { seed, numRuns: Number(args.runs), ...(args.path ? { path: args.path } : {}) });
    console.log(JSON.stringify({
      plane, seed, ms: Date.now() - started, cases: stats.cases, byKind: stats.byKind, requests: stats.requests, connections: stats.connections,
      repliesByError: stats.replies, endedByServer: stats.endedByServer,
      bufferHighWaterMiB: Math.round(stats.bufferHighWaterBytes / 2 ** 20), rssHighWaterMiB: Math.round(stats.rssHighWaterBytes / 2 ** 20),
    }));
  } catch (err) {
    failed = true;
    // fast-check's message names the counterexample; what the case broke is its cause.
    console.error(`${plane} plane, seed ${seed}:`, err instanceof Error ? err.message : err);
    if (err instanceof Error && err.cause) console.error('broken invariant:', err.cause instanceof Error ? err.cause.stack : err.cause);
  } finally {
    for (const fn of cleanups.reverse()) await fn();
  }
}
process.exit(failed ? 1 : 0);
