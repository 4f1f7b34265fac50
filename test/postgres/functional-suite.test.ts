/**
 * The functional suite again, on a real PostgreSQL (Debian's, started here
 * on loopback in a temporary folder): same migrations, same queries, each
 * test server (and each spawned one) on a fresh database.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startPostgres } from '../helpers/postgres.ts';
import { startTestServer } from '../helpers/server.ts';

const postgres = await startPostgres();
process.env.TEST_BASALT_PG_URL = postgres.url;
after(() => postgres.stop());

await import('../functional/volume-lifecycle.test.ts');
await import('../functional/volume-api.test.ts');
await import('../functional/volume-types.test.ts');
await import('../functional/quotas.test.ts');
await import('../functional/snapshots.test.ts');
await import('../functional/attachments.test.ts');
await import('../functional/sweeper.test.ts');
await import('../functional/clusters.test.ts');
await import('../functional/cinderclient.test.ts');
await import('../functional/local-attach.test.ts');
await import('../functional/transfers.test.ts');
await import('../functional/policy.test.ts');
await import('../functional/admin-api.test.ts');
await import('../functional/crash-recovery.test.ts');
await import('../functional/cli.test.ts');
await import('../functional/groups.test.ts');
await import('../functional/group-crash-recovery.test.ts');
await import('../functional/type-encryption.test.ts');
await import('../functional/encryption.test.ts');
await import('../functional/destroy-data-last.test.ts');
await import('../functional/manage.test.ts');
await import('../functional/migration.test.ts');

test('these runs really use PostgreSQL', async (t) => {
  const s = await startTestServer(t);
  assert.equal(s.server.db.dialect, 'postgres');
});
