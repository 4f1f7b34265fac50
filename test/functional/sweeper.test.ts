/**
 * The sweeper moves a volume stuck in a transitional status (no live job) to its error status with a
 * message, and leaves alone what a live job works on.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { volumeTarget } from '../../src/services/index.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;

test('a volume left extending with no job ends error_extending with a user message', async (t) => {
  const s = await startTestServer(t);
  const { body } = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  const id = body.volume.id as string;
  await waitForStatus(s, id, 'available');
  // Simulate a lost job: the row says extending, nothing will ever finish it.
  await s.server.db.kysely.updateTable('volumes').set({ status: 'extending', updated_at: '2000-01-01T00:00:00.000Z' }).where('id', '=', id).execute();
  await s.server.sweeper.sweepOnce();
  const v = await waitForStatus(s, id, 'error_extending');
  assert.equal(v.size, 1);
  const msgs = await s.request('GET', `${V}/messages?resource_uuid=${id}`, undefined, { 'OpenStack-API-Version': 'volume 3.3' });
  assert.equal(msgs.body.messages.length, 1);
  assert.match(msgs.body.messages[0].user_message, /^extend volume: The operation was interrupted/);
  // An error_extending volume can still be deleted.
  assert.equal((await s.request('DELETE', `${V}/volumes/${id}`)).status, 202);
});

test('a cascaded delete whose job waits keeps its snapshots deleting past the grace, then removes volume and snapshots', async (t) => {
  const s = await startTestServer(t);
  const k = s.server.db.kysely;
  const id = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, id, 'available');
  const snap = (await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: id } })).body.snapshot.id as string;
  await waitFor('the snapshot', async () => (await s.request('GET', `${V}/snapshots/${snap}`)).body.snapshot.status === 'available');
  // The delete as its request left it, its job not due yet (a member died with it leased), both rows
  // in deleting for longer than the sweeper's grace. The job's resource is the volume, not the snapshot.
  const old = '2000-01-01T00:00:00.000Z';
  await k.updateTable('volumes').set({ status: 'deleting', updated_at: old }).where('id', '=', id).execute();
  await k.updateTable('snapshots').set({ status: 'deleting', updated_at: old }).where('id', '=', snap).execute();
  const { cluster_name: cluster } = await k.selectFrom('volumes').select('cluster_name').where('id', '=', id).executeTakeFirstOrThrow();
  const job = randomUUID();
  const at = new Date().toISOString();
  await k.insertInto('jobs').values({
    id: job, kind: 'volume.delete', payload_version: 2, payload: JSON.stringify({ volumeId: id, snapshotIds: [snap] }), target: volumeTarget(cluster!),
    resource_type: 'volume', resource_id: id, state: 'queued', attempts: 0, max_attempts: 5, lease_owner: null, lease_expires_at: null,
    not_before: Date.now() + 3600_000, last_error: null, request_id: null, created_at: at, updated_at: at,
  }).execute();
  await s.server.sweeper.sweepOnce();
  assert.equal((await s.request('GET', `${V}/snapshots/${snap}`)).body.snapshot.status, 'deleting', 'the snapshot is the volume job\'s work: not stuck');
  assert.equal((await s.request('GET', `${V}/volumes/${id}`)).body.volume.status, 'deleting');
  // The job comes due: it removes the snapshot, then the volume (a snapshot swept to error_deleting made the volume's row delete fail).
  await k.updateTable('jobs').set({ not_before: 0 }).where('id', '=', job).execute();
  await waitFor('the volume gone', async () => (await s.request('GET', `${V}/volumes/${id}`)).status === 404);
  assert.equal((await s.request('GET', `${V}/snapshots/${snap}`)).status, 404);
});
