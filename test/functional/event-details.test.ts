/**
 * What events say beyond a status change (issue 17 part 2), delivered to a
 * real webhook receiver and read back from the project's event stream: an
 * error status with its reason, an extend with its sizes, an attach and a
 * detach with their attachment, a backup's and a restore's progress (percent,
 * bytes, rate, throttled by `backup_timer_interval`) and their done events;
 * and `/metrics` scraped while the backup runs shows its bytes and rate
 * (issue 18 part 3).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { writeRandom } from '../helpers/backends.ts';
import { scrape } from '../helpers/metrics.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';
import { startReceiver, streamedEvents, WEBHOOK_SECRET, type Received } from '../helpers/webhook-receiver.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const EXPERIMENTAL = { 'OpenStack-API-Experimental': 'true' };
const MV = { 'OpenStack-API-Version': 'volume 3.54' };
const MiB = 1024 ** 2;
const GiB = 1024 * MiB;
const INSTANCE = '11111111-2222-3333-4444-555555555555';

/** Attaches `vol` for an instance (connector, then Nova's complete), writes `command` through the export with qemu-io, and detaches. */
async function attachWriteDetach(s: TestServer, vol: string, command: string): Promise<string> {
  const connector = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' };
  const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, instance_uuid: INSTANCE, connector } }, MV);
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.equal((await s.request('POST', `${V}/attachments/${a.body.attachment.id}/action`, { 'os-complete': null }, MV)).status, 204);
  await run('qemu-io', ['-f', 'raw', '-c', command, a.body.attachment.connection_info.data.uri as string]);
  assert.equal((await s.request('DELETE', `${V}/attachments/${a.body.attachment.id}`, undefined, MV)).status, 200);
  await waitForStatus(s, vol, 'available');
  return a.body.attachment.id as string;
}

/** The deliveries of `resource`'s events named `event`, in stream order, each once (delivery is at least once: a retry has the same delivery id). */
function deliveries(received: Received[], resource: string, event: string): Received[] {
  const unique = new Map(received.filter((r) => r.body.resource_id === resource && r.event === event).map((r) => [r.delivery, r]));
  return [...unique.values()].sort((a, b) => a.body.id - b.body.id);
}

test('events carry their reason, sizes, attachment and progress, to webhooks and the stream; /metrics shows a running backup', { timeout: 240_000 }, async (t) => {
  const s = await startTestServer(t, {
    env: {
      // A 50 GiB volume fits nowhere; progress events as often as every 50 ms, so a short backup has some.
      BASALT_BACKEND_DEFAULTS__TOTAL_CAPACITY_GB: '10', BASALT_BACKEND_DEFAULTS__MAX_OVER_SUBSCRIPTION_RATIO: '1', BASALT_BACKUP_TIMER_INTERVAL: '0.05',
    },
  });
  const receiver = await startReceiver(t);
  const hook = await s.request('POST', `${V}/webhooks`, { webhook: { url: receiver.url, secret: WEBHOOK_SECRET, events: ['volume.*', 'backup.*'], project_id: PROJECT } }, EXPERIMENTAL);
  assert.equal(hook.status, 201, JSON.stringify(hook.body));

  // An error says why: the user message's text and its id.
  const doomed = (await s.request('POST', `${V}/volumes`, { volume: { size: 50 } })).body.volume.id as string;
  await waitForStatus(s, doomed, 'error');
  const [failed] = await waitFor('the error delivered', async () => {
    const d = deliveries(receiver.received, doomed, 'volume.status').filter((r) => r.body.to_status === 'error');
    return d.length > 0 && d;
  });
  assert.match(failed!.body.detail?.reason, /^schedule allocate volume: Could not find any available weighted backend\. Rejected: .*CapacityFilter/);
  assert.equal(failed!.body.detail?.message_event_id, 'VOLUME_VOLUME_001_003');
  const message = (await s.request('GET', `${V}/messages?resource_uuid=${doomed}`, undefined, { 'OpenStack-API-Version': 'volume 3.5' })).body.messages[0];
  assert.equal(failed!.body.detail?.reason, message.user_message, 'the reason is the user message');
  // Other events carry no detail.
  const [created] = deliveries(receiver.received, doomed, 'volume.create');
  assert.equal(created?.body.detail, null);

  // Attach and detach name the attachment; extend names the sizes.
  const vol = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, vol, 'available');
  const attachment = await attachWriteDetach(s, vol, 'write -P 0x5a 0 4k');
  // 512 MiB that neither compress nor repeat, so that the backup and the restore take a while.
  writeRandom(path.join(s.stateDir, 'volumes', 'file', `volume-${vol}`), 512 * MiB);
  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-extend': { new_size: 2 } })).status, 202);
  await waitFor('extended', async () => (await s.request('GET', `${V}/volumes/${vol}`)).body.volume.size === 2);

  // A backup: its progress as it runs, in events and in /metrics.
  const b = await s.request('POST', `${V}/backups`, { backup: { volume_id: vol } });
  assert.equal(b.status, 202, JSON.stringify(b.body));
  const backup = b.body.backup.id as string;
  const running = await waitFor('a scrape while the backup runs', async () => {
    const m = await scrape(s);
    const done = m.value('basalt_backup_progress_bytes', { backup, operation: 'backup', kind: 'done' });
    if (done !== undefined) return { m, done };
    assert.equal((await s.request('GET', `${V}/backups/${backup}`)).body.backup.status, 'creating', 'the backup ended before a scrape saw it');
    return undefined;
  }, 60_000);
  const total = running.m.value('basalt_backup_progress_bytes', { backup, operation: 'backup', kind: 'total' })!;
  assert.ok(total >= 512 * MiB && running.done <= total, `done ${running.done} of ${total}`);
  assert.ok(running.m.value('basalt_backup_bytes_per_second', { backup, operation: 'backup' })! >= 0);
  await waitFor('backup available', async () => (await s.request('GET', `${V}/backups/${backup}`)).body.backup.status === 'available');
  assert.equal((await scrape(s)).value('basalt_backup_progress_bytes', { backup, operation: 'backup', kind: 'done' }), undefined, 'no series once it is done');

  // A restore to a new volume.
  const r = await s.request('POST', `${V}/backups/${backup}/restore`, { restore: {} });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const copy = r.body.restore.volume_id as string;
  await waitForStatus(s, copy, 'available');

  await waitFor('the restore done delivered', async () => deliveries(receiver.received, backup, 'backup.restore_done').length === 1);
  assert.deepEqual(receiver.refused, []);

  const [attached] = deliveries(receiver.received, vol, 'volume.attached');
  assert.deepEqual(attached?.body.detail, { attachment_id: attachment, instance_uuid: INSTANCE, attached_host: 'compute-1', attach_mode: 'rw' });
  const [detached] = deliveries(receiver.received, vol, 'volume.detached');
  assert.deepEqual(detached?.body.detail, attached?.body.detail);
  assert.ok(attached!.body.id < detached!.body.id);
  const [extended] = deliveries(receiver.received, vol, 'volume.extended');
  assert.deepEqual(extended?.body.detail, { size: 2, previous_size: 1, attached: false });

  // Progress: each 5% at most every 50 ms, percent and bytes rising, never 100% (that is the done event's).
  for (const [event, done] of [['backup.progress', 'backup.done'], ['backup.restore_progress', 'backup.restore_done']] as const) {
    const operation = event === 'backup.progress' ? 'backup' : 'restore';
    const steps = deliveries(receiver.received, backup, event).map((d) => d.body.detail!);
    assert.ok(steps.length >= 1 && steps.length <= 20, `${steps.length} ${event} events`);
    for (const [i, p] of steps.entries()) {
      assert.equal(p.operation, operation);
      assert.ok(p.percent >= 5 && p.percent < 100 && p.done_bytes <= p.total_bytes && p.bytes_per_second >= 0, JSON.stringify(p));
      assert.equal(p.percent, Math.floor((p.done_bytes * 100) / p.total_bytes));
      if (i > 0) assert.ok(p.percent >= Math.floor(steps[i - 1]!.percent / 5) * 5 + 5 && p.done_bytes > steps[i - 1]!.done_bytes, JSON.stringify(steps));
    }
    const [end] = deliveries(receiver.received, backup, done);
    assert.equal(end?.body.detail?.operation, operation);
    assert.equal(end?.body.detail?.percent, 100);
    assert.equal(end?.body.detail?.done_bytes, end?.body.detail?.total_bytes);
    assert.ok(end!.body.detail!.bytes_per_second > 0 && end!.body.detail!.elapsed_ms > 0);
    assert.ok(steps.every((p) => p.total_bytes === end!.body.detail!.total_bytes));
  }
  const backupDone = deliveries(receiver.received, backup, 'backup.done')[0]!.body.detail!;
  assert.deepEqual([backupDone.volume_id, backupDone.incremental, backupDone.bytes_read >= 512 * MiB], [vol, false, true]);
  const restoreDone = deliveries(receiver.received, backup, 'backup.restore_done')[0]!.body.detail!;
  assert.deepEqual([restoreDone.volume_id, restoreDone.total_bytes], [copy, 2 * GiB]);

  // The stream says the same as the webhook, place for place.
  const streamed = await streamedEvents(s, PROJECT);
  for (const d of receiver.received) {
    const same = streamed.find((e) => e.id === d.body.id);
    assert.deepEqual({ ...same?.data, project_id: PROJECT }, d.body, `place ${d.body.id}`);
    assert.equal(same?.event, d.event);
  }
});
