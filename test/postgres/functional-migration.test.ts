/**
 * The functional tests of moving volumes between backends (attached ones too), again on a real PostgreSQL
 * (Debian's, started here on loopback in a temporary folder): same migrations, same
 * queries, each test server (and each spawned one) on a fresh database. The PostgreSQL
 * functional suite is split over `functional-*.test.ts` so that each file stays well
 * inside the runner's per-file bound on a busy machine (the largest, cinderclient, takes
 * as long as its SQLite run).
 */
import { runFunctionalOnPostgres } from '../helpers/postgres.ts';

await runFunctionalOnPostgres();
await import('../functional/migration.test.ts');
await import('../functional/live-migration.test.ts');
