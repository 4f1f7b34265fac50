/**
 * The replication tests of issue 16 again on a real PostgreSQL: the replica
 * rows, the replication exports, the failover's compare-and-swap of the
 * services and its job through the same queries on the other dialect.
 */
import { runFunctionalOnPostgres } from '../helpers/postgres.ts';

await runFunctionalOnPostgres();
await import('../functional/replication.test.ts');
await import('../functional/replication-crash.test.ts');
await import('../functional/group-replication.test.ts');
await import('../functional/group-replication-crash.test.ts');
