/**
 * A group failback on an rbd backend that replicates through rbd-mirror
 * (issue 16 parts 3 and 4) waits for its copies to be in step before it
 * holds the members' writes: while it waits (the primary's rbd-mirror
 * stopped), hosts on the members' NBD exports write all along. A member is
 * never enabled before the secondary holds its copy. A file of its own: its
 * waits on rbd-mirror (whose status lags on a fresh daemon) need the whole
 * time a test file gets.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCephPair } from '../helpers/ceph-pair.ts';
import { openExport, simpleRequest } from '../helpers/nbd-raw.ts';
import { action, attach, group, mirroredServer, mirroring, MV, post, V, volume } from '../helpers/rbd-mirror-groups.ts';
import { waitFor, waitForStatus } from '../helpers/server.ts';

const pair = await startCephPair();
after(() => pair.stop());
const { secondary: b } = pair;
const CMD_READ = 0;
const CMD_WRITE = 1;
const FLAG_FUA = 1;

/** `p`, or a failure naming `what` after `ms`: a host's call on an export must not hold the test for good. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const r = await Promise.race([p.then((v) => ({ v })), sleep(ms, undefined, { ref: false })]);
  assert.ok(r, `${what} within ${ms} ms`);
  return r.v;
}

test('a group failback waiting for its copies to be in step holds no host write: hosts write through the exports all along', async (t) => {
  const pool = await pair.newPool();
  const s = await mirroredServer(t, pair, pool, ['rbd_connection = nbd']);
  await post(s, '/types', { volume_type: { name: 'mirrored', extra_specs: { replication_enabled: '<is> True', 'basalt:replication_rpo_seconds': '2' } } }, 200, {});
  await post(s, '/group_types', { group_type: { name: 'replicated', group_specs: { consistent_group_replication_enabled: '<is> True' } } }, 202);
  const g = (await post(s, '/groups', { group: { name: 'g', group_type: 'replicated', volume_types: ['mirrored'] } }, 202)).group.id as string;
  const member = (await post(s, '/volumes', { volume: { size: 1, volume_type: 'mirrored', group_id: g } }, 202)).volume.id as string;
  await waitForStatus(s, member, 'available');
  await action(s, g, { enable_replication: {} }, 202);
  await waitFor('group replication enabled', async () => (await group(s, g)).replication_status === 'enabled', 120_000);
  // The member is copying, not enabled (which would let the group fail over), until site-b holds its copy.
  await waitFor('the member\'s copy on site-b', async () => {
    const status = (await volume(s, member)).replication_status;
    const copy = await mirroring(b, pool, `volume-${member}`).catch(() => undefined);
    assert.ok(status !== 'enabled' || copy, 'the member is enabled before site-b has its copy');
    return copy?.primary === false;
  }, 120_000);
  await waitFor('member enabled', async () => (await volume(s, member)).replication_status === 'enabled', 120_000);
  const { attachment } = await attach(s, member);
  await action(s, g, { failover_replication: { allow_attached_volume: true, secondary_backend_id: 'site-b' } }, 202);
  await waitFor('group failed over', async () => (await group(s, g)).replication_status === 'failed-over', 240_000);

  /** A host on the attachment's export as its connection info says now; each write with FUA must be answered within 10 s. */
  const connect = async () => {
    const info = (await s.request('GET', `${V}/attachments/${attachment}`, undefined, MV)).body.attachment.connection_info;
    assert.equal(info.driver_volume_type, 'nbd');
    const c = await within(openExport(info.data.host, info.data.port, info.data.export_name), 30_000, 'the export opened');
    t.after(() => c.sock.destroy());
    return c;
  };
  const write = async (c: Awaited<ReturnType<typeof connect>>, block: number) => {
    const r = await within(simpleRequest(c, CMD_WRITE, BigInt(block * 4096), 4096, Buffer.alloc(4096, block), FLAG_FUA), 10_000, `write of block ${block} answered`);
    assert.equal(r.error, 0, `write of block ${block}: NBD error ${r.error}`);
  };
  const host = await connect();
  await write(host, 1);

  // The primary's rbd-mirror stops: the own image receives nothing from site-b, so the failback's prepare step waits for it.
  const primaryMirror = pair.mirrorPids[1]!;
  process.kill(primaryMirror, 'SIGSTOP');
  t.after(() => { try { process.kill(primaryMirror, 'SIGCONT'); } catch { /* gone */ } });
  await action(s, g, { failover_replication: { allow_attached_volume: true, secondary_backend_id: 'default' } }, 202);
  for (let block = 2; block <= 6; block++) {
    await write(host, block);
    await sleep(1000);
  }
  assert.equal((await group(s, g)).replication_status, 'failing-over', 'the writes were made while the failback waited');
  process.kill(primaryMirror, 'SIGCONT');
  await waitFor('group failed back', async () => (await group(s, g)).replication_status === 'enabled', 240_000);

  // Home again: every block written while failed over and while the failback waited is there.
  const home = await connect();
  for (let block = 1; block <= 6; block++) {
    const r = await within(simpleRequest(home, CMD_READ, BigInt(block * 4096), 4096), 30_000, `read of block ${block}`);
    assert.ok(r.data?.equals(Buffer.alloc(4096, block)), `block ${block} came home`);
  }
});
