/**
 * The functional tests of volumes, types, quotas, snapshots, attachments, clusters,
 * transfers and policy, again on a real PostgreSQL (Debian's, started here on loopback
 * in a temporary folder): same migrations, same queries, each test server (and each
 * spawned one) on a fresh database. The PostgreSQL functional suite is split over
 * `functional-*.test.ts` so that each file stays well inside the runner's per-file bound
 * on a busy machine (the largest, cinderclient, takes as long as its SQLite run).
 */
import { runFunctionalOnPostgres } from '../helpers/postgres.ts';

await runFunctionalOnPostgres();
await import('../functional/volume-lifecycle.test.ts');
await import('../functional/volume-api.test.ts');
await import('../functional/volume-types.test.ts');
await import('../functional/quotas.test.ts');
await import('../functional/snapshots.test.ts');
await import('../functional/attachments.test.ts');
await import('../functional/sweeper.test.ts');
await import('../functional/clusters.test.ts');
await import('../functional/transfers.test.ts');
await import('../functional/policy.test.ts');
