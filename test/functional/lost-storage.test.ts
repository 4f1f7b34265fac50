/**
 * A volume whose storage is removed behind Basalt's back (issue 14, bad input
 * and faults: an image deleted outside Basalt) is found by the volume
 * service's listings: an available one becomes `error` with a user message;
 * an attached one keeps its status (it can still be detached) with the same
 * message and a `volume.storage_missing` event, and becomes `error` once
 * detached. Volumes whose storage is there are left alone. The RBD case is in
 * rbd-backend.test.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';
import { streamedEvents } from '../helpers/webhook-receiver.ts';

const V = `/v3/${PROJECT}`;
const MESSAGE = 'check volume storage: The volume\'s data is no longer on the storage backend (it was removed outside Basalt); the volume can only be deleted.';

const file = (s: TestServer, id: string): string => path.join(s.stateDir, 'volumes', 'file', `volume-${id}`);

async function created(s: TestServer, name: string): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1, name } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitForStatus(s, r.body.volume.id, 'available');
  return r.body.volume.id as string;
}

async function messages(s: TestServer, id: string): Promise<string[]> {
  const r = await s.request('GET', `${V}/messages?resource_uuid=${id}`, undefined, { 'OpenStack-API-Version': 'volume 3.5' });
  return (r.body.messages as Array<{ user_message: string }>).map((m) => m.user_message);
}

test('a volume file removed outside Basalt: available becomes error with a message, attached keeps in-use until detached, the others are untouched', { timeout: 120_000 }, async (t) => {
  const events: string[] = [];
  const s = await startTestServer(t, { logLines: { push: (l: string) => { if (l.includes('storage was removed outside Basalt')) events.push(l); return 0; } } as unknown as string[] });
  const [gone, attached, kept] = [await created(s, 'gone'), await created(s, 'attached'), await created(s, 'kept')];
  const act = (id: string, body: unknown) => s.request('POST', `${V}/volumes/${id}/action`, body);
  assert.equal((await act(attached, { 'os-reserve': {} })).status, 202);
  assert.equal((await act(attached, { 'os-attach': { instance_uuid: '11111111-2222-3333-4444-555555555555', mountpoint: '/dev/vdb' } })).status, 202);
  await waitForStatus(s, attached, 'in-use');

  fs.rmSync(file(s, gone));
  fs.rmSync(file(s, attached));

  const lost = await waitForStatus(s, gone, 'error', 60_000);
  assert.equal(lost.status, 'error');
  assert.deepEqual(await messages(s, gone), [MESSAGE]);
  await waitFor('the attached volume\'s message', async () => (await messages(s, attached)).length === 1);
  assert.deepEqual(await messages(s, attached), [MESSAGE]);
  assert.equal((await s.request('GET', `${V}/volumes/${attached}`)).body.volume.status, 'in-use', 'still attached: it can be detached');
  const streamed = await streamedEvents(s, PROJECT);
  const storageMissing = streamed.filter((e) => e.data.resource_id === attached && e.event === 'volume.storage_missing');
  assert.equal(storageMissing.length, 1, 'one event, not one per listing');
  assert.equal(storageMissing[0]!.data.detail?.reason, MESSAGE);
  const toError = streamed.find((e) => e.data.resource_id === gone && e.event === 'volume.status' && e.data.detail?.reason === MESSAGE);
  assert.ok(toError, 'the status event says why');
  assert.ok(events.length >= 1, 'the service logs what it found');

  // Detached, it is marked error too; a volume whose file is there never is.
  assert.equal((await act(attached, { 'os-detach': {} })).status, 202);
  await waitForStatus(s, attached, 'error', 60_000);
  assert.equal((await s.request('GET', `${V}/volumes/${kept}`)).body.volume.status, 'available');
  assert.deepEqual(await messages(s, kept), []);
  assert.ok(fs.existsSync(file(s, kept)));

  // The lost volumes can be deleted (nothing left to remove), without a 5xx anywhere.
  for (const id of [gone, attached]) {
    assert.equal((await s.request('DELETE', `${V}/volumes/${id}`)).status, 202);
    await waitFor(`volume ${id} gone`, async () => (await s.request('GET', `${V}/volumes/${id}`)).status === 404);
  }
});
