/**
 * A group replication job that fails for good (issue 16 part 3, issue 17
 * part 2): the group and each member still in the job's status go to
 * `error`, and each member gets a user message and a
 * `volume.replication_degraded` event that says why, as a single volume's
 * failed replication does.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { sql } from 'kysely';
import { eventDetail, migrateToLatest, openDatabase, type JobRow, type VolumeRow } from '../../../src/db/index.ts';
import { DriverError } from '../../../src/errors/index.ts';
import { groupReplicationJobKinds } from '../../../src/volume/index.ts';

test('a group replication job failing for good sets the group and its members to error, each member saying why', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-group-repl-'));
  const db = openDatabase(`sqlite://${path.join(dir, 'db.sqlite')}`);
  t.after(async () => {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await migrateToLatest(db);
  const k = db.kysely;
  // Rows only (their types are beside the point here).
  await sql`pragma foreign_keys = off`.execute(k);
  const at = '2026-12-03T10:00:00.000000';
  await k.insertInto('groups').values({
    id: 'g1', project_id: 'p1', user_id: 'u1', name: null, description: null, status: 'available', availability_zone: 'nova',
    group_type_id: 'gt', host: 'h@alpha#alpha', cluster_name: 'h@alpha', group_snapshot_id: null, source_group_id: null, replication_status: 'enabling', created_at: at, updated_at: null,
  }).execute();
  const volume = (id: string, replication: string): VolumeRow => ({
    id, project_id: 'p1', user_id: 'u1', name: null, description: null, size: 1, status: 'available', attach_status: 'detached', availability_zone: 'nova',
    host: 'h@alpha#alpha', cluster_name: 'h@alpha', volume_type_id: 'vt', snapshot_id: null, source_volid: null, bootable: 0, multiattach: 0,
    provider_location: null, readonly: null, created_at: at, updated_at: null, launched_at: null, encryption_key_id: null, group_id: 'g1',
    migration_status: null, migration_host: null, replication_status: replication,
  });
  await k.insertInto('volumes').values([volume('v1', 'enabling'), volume('v2', 'enabling'), volume('v3', 'enabled')]).execute();

  const kinds = groupReplicationJobKinds({ clock: { now: () => Date.parse('2026-12-03T10:00:00Z') }, messageTtlSeconds: 3600 });
  const job = { request_id: 'req-1' } as JobRow;
  await db.kysely.transaction().execute((tx) => kinds.groupEnable.onFailure(tx, { groupId: 'g1' }, job, new DriverError('the secondary refused the copy')));

  assert.equal((await k.selectFrom('groups').select('replication_status').where('id', '=', 'g1').executeTakeFirstOrThrow()).replication_status, 'error');
  const statuses = await k.selectFrom('volumes').select(['id', 'replication_status']).orderBy('id').execute();
  assert.deepEqual(statuses.map((v) => [v.id, v.replication_status]), [['v1', 'error'], ['v2', 'error'], ['v3', 'enabled']], 'only members in the job\'s status');
  const events = await k.selectFrom('events').selectAll().where('event', '=', 'volume.replication_degraded').orderBy('resource_id').execute();
  assert.deepEqual(events.map((e) => e.resource_id), ['v1', 'v2']);
  for (const e of events) {
    const detail = eventDetail(e)!;
    assert.equal(detail.replication_status, 'error');
    assert.equal(detail.group_id, 'g1');
    assert.match(String(detail.reason), /\S/, 'a reason');
    assert.match(String(detail.message_event_id), /^VOLUME_/);
    assert.equal(e.request_id, 'req-1');
  }
  const messages = await k.selectFrom('messages').select('resource_uuid').orderBy('resource_uuid').execute();
  assert.deepEqual(messages.map((m) => m.resource_uuid), ['v1', 'v2']);
});
