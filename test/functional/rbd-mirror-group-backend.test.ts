/**
 * A whole backend's failover and failback (`os-services/failover_host`) on
 * an rbd backend that replicates through rbd-mirror (issue 16 parts 3-5),
 * while one of its replication groups is failed over alone: the backend's
 * groups follow their members as a file backend's do. The failover leaves
 * the group failed over; the failback brings its members home with the rest
 * of the backend, and the group is enabled again (it stayed `failed-over`
 * before, with its members enabled and served at home). While the group
 * is away, its member can be cloned and snapshotted from: the new volumes
 * are full copies of the target's image on the backend's own cluster (a
 * copy-on-write clone cannot reach across clusters).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startCephPair } from '../helpers/ceph-pair.ts';
import { action, group, imageDigest, mirroredServer, mirroring, post, scribble, V, volume, volumeService } from '../helpers/rbd-mirror-groups.ts';
import { waitFor, waitForStatus } from '../helpers/server.ts';

const pair = await startCephPair();
after(() => pair.stop());
const { primary: a, secondary: b } = pair;

test('a group failed over alone, then the whole backend failed over and back: the group comes home with its members, enabled', async (t) => {
  const pool = await pair.newPool();
  const s = await mirroredServer(t, pair, pool);
  await post(s, '/types', { volume_type: { name: 'mirrored', extra_specs: { replication_enabled: '<is> True', 'basalt:replication_rpo_seconds': '2' } } }, 200, {});
  await post(s, '/group_types', { group_type: { name: 'replicated', group_specs: { consistent_group_replication_enabled: '<is> True' } } }, 202);
  const g = (await post(s, '/groups', { group: { name: 'g', group_type: 'replicated', volume_types: ['mirrored'] } }, 202)).group.id as string;
  const member = (await post(s, '/volumes', { volume: { size: 1, volume_type: 'mirrored', group_id: g } }, 202)).volume.id as string;
  const loner = (await post(s, '/volumes', { volume: { size: 1, volume_type: 'mirrored' } }, 202)).volume.id as string;
  for (const id of [member, loner]) await waitForStatus(s, id, 'available');
  await action(s, g, { enable_replication: {} }, 202);
  await waitFor('group replication enabled', async () => (await group(s, g)).replication_status === 'enabled', 120_000);
  await waitFor('both volumes enabled', async () => (await volume(s, member)).replication_status === 'enabled' && (await volume(s, loner)).replication_status === 'enabled', 180_000);

  // The group alone first.
  await action(s, g, { failover_replication: { allow_attached_volume: true, secondary_backend_id: 'site-b' } }, 202);
  await waitFor('group failed over', async () => (await group(s, g)).replication_status === 'failed-over', 240_000);
  assert.equal((await mirroring(b, pool, `volume-${member}`))?.primary, true);

  // Written there, the member is cloned and snapshotted: the new volumes, on the backend's own cluster, are copies of site-b's image.
  await scribble(b, pool, `volume-${member}`);
  const there = await imageDigest(b, pool, `volume-${member}`);
  const clone = (await post(s, '/volumes', { volume: { size: 1, source_volid: member } }, 202)).volume.id as string;
  const snap = (await post(s, '/snapshots', { snapshot: { volume_id: member, force: true } }, 202)).snapshot.id as string;
  await waitFor('snapshot available', async () => (await s.request('GET', `${V}/snapshots/${snap}`)).body.snapshot.status === 'available', 60_000);
  const fromSnap = (await post(s, '/volumes', { volume: { size: 1, snapshot_id: snap } }, 202)).volume.id as string;
  for (const id of [clone, fromSnap]) {
    await waitForStatus(s, id, 'available');
    assert.equal(await imageDigest(a, pool, `volume-${id}`), there, `volume ${id} holds the member's data as site-b has it`);
  }
  const snaps = JSON.parse(await b.rbd('snap', 'ls', '--format', 'json', `${pool}/volume-${member}`)) as Array<{ name: string }>;
  assert.deepEqual(snaps.map((x) => x.name).filter((n) => n.endsWith('.clone_snap')), [], 'the clone\'s snapshot on site-b is gone');
  for (const id of [clone, fromSnap]) assert.equal((await s.request('DELETE', `${V}/volumes/${id}`)).status, 202);
  assert.equal((await s.request('DELETE', `${V}/snapshots/${snap}`)).status, 202);
  await waitFor('the copies deleted', async () => (await Promise.all([clone, fromSnap].map((id) => s.request('GET', `${V}/volumes/${id}`)))).every((r) => r.status === 404), 60_000);

  // Then the whole backend: the loner follows; the group stays failed over.
  const put = (body: unknown) => s.request('PUT', `${V}/os-services/failover_host`, body);
  const svc = await volumeService(s);
  assert.equal((await put({ host: svc.host, backend_id: 'site-b' })).status, 202);
  await waitFor('backend failed over', async () => (await volumeService(s)).replication_status === 'failed-over', 180_000);
  assert.deepEqual([(await volume(s, member)).replication_status, (await volume(s, loner)).replication_status, (await group(s, g)).replication_status],
    ['failed-over', 'failed-over', 'failed-over']);
  assert.equal((await mirroring(b, pool, `volume-${loner}`))?.primary, true);

  // The backend's failback brings every volume home, the group's member too, and the group with it.
  assert.equal((await put({ host: svc.host, backend_id: 'default' })).status, 202);
  await waitFor('backend failed back', async () => (await volumeService(s)).replication_status === 'enabled', 240_000);
  for (const id of [member, loner]) {
    assert.equal((await volume(s, id)).replication_status, 'enabled');
    assert.equal((await mirroring(a, pool, `volume-${id}`))?.primary, true, `volume-${id} primary at home`);
  }
  assert.equal((await group(s, g)).replication_status, 'enabled', 'the group came home with its member');
  // And it can fail over alone again, as any enabled group, once its member's copy at site-b is in step
  // again (rbd-mirror resyncs the demoted image after the failback: the member reports copying meanwhile).
  await waitFor('the member in step again', async () => (await volume(s, member)).replication_status === 'enabled' && (await group(s, g)).replication_status === 'enabled', 180_000);
  await action(s, g, { failover_replication: { allow_attached_volume: true, secondary_backend_id: 'site-b' } }, 202);
  await waitFor('group failed over again', async () => (await group(s, g)).replication_status === 'failed-over', 240_000);
});
