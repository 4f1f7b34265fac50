/**
 * The tests of issue 17 again on a real PostgreSQL: the delivery jobs,
 * their per-kind attempts, the delivery history and its metrics through the
 * same queries on the other dialect, the experimental header, block metadata,
 * the event stream and webhooks, and what events say (their detail).
 */
import { runFunctionalOnPostgres } from '../helpers/postgres.ts';

await runFunctionalOnPostgres();
await import('../functional/nova-events.test.ts');
await import('../functional/experimental-api.test.ts');
await import('../functional/block-metadata.test.ts');
await import('../functional/event-stream.test.ts');
await import('../functional/webhooks.test.ts');
await import('../functional/event-details.test.ts');
