/** The sweeper moves a volume stuck in a transitional status (no live job) to its error status with a message. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROJECT, startTestServer, waitForStatus } from '../helpers/server.ts';

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
