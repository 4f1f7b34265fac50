/**
 * The NBD fuzzer in the suite (issue 13, "Fuzzing in the suite"): a fixed
 * seed and a bounded number of generated cases on each plane — native
 * threads, the event loop and TLS. The invariants are test/fuzz/nbd-fuzzer.ts's:
 * no crash, nothing outside the written range changes, memory within the
 * configured bounds, every connection gone with its client.
 * `bench/fuzz-nbd.ts` runs it longer.
 */
import { describe, test } from 'node:test';
import { PLANES } from '../helpers/nbd-export.ts';
import { runNbdFuzz } from './nbd-fuzzer.ts';

/** The suite's seed (BASALT_FUZZ_SEED overrides it): a failure names it, and a rerun with it repeats the same cases. */
const SEED = Number(process.env.BASALT_FUZZ_SEED ?? 1_313_013);
const RUNS = Number(process.env.BASALT_NBD_FUZZ_RUNS ?? 100);

describe('issue 13 NBD fuzzer', () => {
  for (const plane of PLANES) {
    test(`${plane} plane: malformed handshakes and requests never crash the server, change data outside their range or exceed the bounds`, { timeout: Math.max(120_000, RUNS * 1000) }, async (t) => {
      const started = Date.now();
      const stats = await runNbdFuzz(t, plane, { seed: SEED, numRuns: RUNS });
      t.diagnostic(`seed ${SEED}: ${stats.cases} cases ${JSON.stringify(stats.byKind)}, ${stats.requests} requests, ${stats.connections} connections in ${Date.now() - started} ms; `
        + `replies by error ${JSON.stringify(stats.replies)}; ${stats.endedByServer} ended by the server; `
        + `high-water: buffers +${(stats.bufferHighWaterBytes / 2 ** 20).toFixed(0)} MiB, RSS +${(stats.rssHighWaterBytes / 2 ** 20).toFixed(0)} MiB`);
    });
  }
});
