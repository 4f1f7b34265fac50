/**
 * The functional tests of local attachments, the admin API, crash recovery, destroying
 * data last, manage and Basalt's CLI, again on a real PostgreSQL (Debian's, started here
 * on loopback in a temporary folder): same migrations, same queries, each test server
 * (and each spawned one) on a fresh database. The PostgreSQL functional suite is split
 * over `functional-*.test.ts` so that each file stays well inside the runner's per-file
 * bound on a busy machine (the largest, cinderclient, takes as long as its SQLite run).
 */
import { runFunctionalOnPostgres } from '../helpers/postgres.ts';

await runFunctionalOnPostgres();
await import('../functional/local-attach.test.ts');
await import('../functional/admin-api.test.ts');
await import('../functional/crash-recovery.test.ts');
await import('../functional/destroy-data-last.test.ts');
await import('../functional/manage.test.ts');
await import('../functional/cli.test.ts');
