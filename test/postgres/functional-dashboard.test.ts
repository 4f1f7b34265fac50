/**
 * The web dashboard's test again on a real PostgreSQL: the pool history's
 * sampling of the services' rows and the newest events through the same
 * queries on the other dialect, seen through the browser.
 */
import { runFunctionalOnPostgres } from '../helpers/postgres.ts';

await runFunctionalOnPostgres();
await import('../functional/dashboard.test.ts');
