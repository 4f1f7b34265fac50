/**
 * The functional tests of backups (issue 15) again on a real PostgreSQL: the
 * backup rows, their jobs, quotas and the sweeper's rules through the same
 * queries on the other dialect, and a crash half way through a backup.
 */
import { runFunctionalOnPostgres } from '../helpers/postgres.ts';

await runFunctionalOnPostgres();
await import('../functional/backups.test.ts');
await import('../functional/backup-crash.test.ts');
