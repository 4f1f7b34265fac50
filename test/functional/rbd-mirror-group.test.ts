/**
 * Group replication (issue 16 part 3, Cinder's 3.38 group actions) on an rbd
 * backend that replicates through Ceph's rbd-mirror (part 4), on two real
 * clusters with an rbd-mirror daemon each (test/helpers/ceph-pair.ts).
 *
 * A group of a type with `consistent_group_replication_enabled`: enabling
 * mirrors every member's image and takes group points (the members' mirror
 * snapshots together); the data reaches the secondary; the group fails over
 * alone (its members' images promoted on the secondary, a volume of the
 * same type outside the group staying on the primary, and new connection
 * info naming the secondary for members only, an attachment made before
 * rewritten to it); writes made there come home with failback (and the
 * attachment names the primary again). Bad input gets Cinder's 400s.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startCephPair } from '../helpers/ceph-pair.ts';
import { action, attach, group, imageDigest, mirroredServer, mirroring, MV, post, scribble, V, volume } from '../helpers/rbd-mirror-groups.ts';
import { waitFor, waitForStatus } from '../helpers/server.ts';

const pair = await startCephPair();
after(() => pair.stop());
const { primary: a, secondary: b } = pair;


test('a replication group on rbd: enabled as one, data on the secondary, failed over alone, writes there brought home by failback', async (t) => {
  const pool = await pair.newPool();
  const s = await mirroredServer(t, pair, pool);
  await post(s, '/types', { volume_type: { name: 'mirrored', extra_specs: { replication_enabled: '<is> True', 'basalt:replication_rpo_seconds': '2' } } }, 200, {});
  await post(s, '/group_types', { group_type: { name: 'replicated', group_specs: { consistent_group_replication_enabled: '<is> True' } } }, 202);
  await post(s, '/group_types', { group_type: { name: 'unreplicated' } }, 202);
  const newGroup = async (groupType: string) => (await post(s, '/groups', { group: { name: groupType, group_type: groupType, volume_types: ['mirrored'] } }, 202)).group.id as string;
  const g = await newGroup('replicated');
  const other = await newGroup('unreplicated');
  const create = async (extra: Record<string, string>) => (await post(s, '/volumes', { volume: { size: 1, volume_type: 'mirrored', ...extra } }, 202)).volume.id as string;
  const members = [await create({ group_id: g }), await create({ group_id: g })];
  const outsider = await create({ group_id: other });
  const loner = await create({});
  for (const id of [...members, outsider, loner]) await waitForStatus(s, id, 'available');
  const images = members.map((id) => `volume-${id}`);

  // Cinder's 400s before anything changes: a group type without the spec, nothing to fail over yet.
  assert.match((await action(s, other, { enable_replication: {} }, 400)).badRequest.message, /not a replication group type/);
  assert.match((await action(s, g, { failover_replication: {} }, 400)).badRequest.message, /replication status must be enabled or failed-over/);
  // The backend's replication_device, as Cinder lists a group's targets.
  assert.deepEqual(await action(s, g, { list_replication_targets: {} }, 200), { replication_targets: [{ backend_id: 'site-b' }] });

  // Enabling mirrors every member's image (snapshot mode, primary here) and takes group points from then on.
  await action(s, g, { enable_replication: {} }, 202);
  await waitFor('group replication enabled', async () => (await group(s, g)).replication_status === 'enabled', 120_000);
  for (const image of images) assert.deepEqual(await mirroring(a, pool, image), { ...(await mirroring(a, pool, image)), state: 'enabled', mode: 'snapshot', primary: true });

  // Writes on the primary reach the secondary with the next group points (each second).
  for (const image of images) await scribble(a, pool, image);
  const written = await Promise.all(images.map((image) => imageDigest(a, pool, image)));
  for (const [i, image] of images.entries()) {
    await waitFor(`${image} equal on the secondary`, async () => (await imageDigest(b, pool, image).catch(() => '')) === written[i], 120_000);
  }
  await waitFor('members enabled', async () => (await Promise.all(members.map((id) => volume(s, id)))).every((v) => v.replication_status === 'enabled'), 120_000);

  // An attached member needs allow_attached_volume; an unknown target is refused by name.
  const first = await attach(s, members[0]!);
  assert.equal(first.cluster_name, 'ceph');
  const attachedCluster = async (id: string) => (await s.request('GET', `${V}/attachments/${id}`, undefined, MV)).body.attachment.connection_info.data.cluster_name;
  assert.match((await action(s, g, { failover_replication: { secondary_backend_id: 'site-b' } }, 400)).badRequest.message, /attached but allow_attached_volume flag is False/);
  assert.match((await action(s, g, { failover_replication: { allow_attached_volume: true, secondary_backend_id: 'site-c' } }, 400)).badRequest.message, /site-c is not a replication target/);
  assert.match((await action(s, g, { failover_replication: { allow_attached_volume: true, secondary_backend_id: 'default' } }, 400)).badRequest.message, /not failed over: there is nothing to fail back/);

  // Failover of the group alone: its members' images promoted on site-b with every write of the last point.
  await action(s, g, { failover_replication: { allow_attached_volume: true, secondary_backend_id: 'site-b' } }, 202);
  await waitFor('group failed over', async () => (await group(s, g)).replication_status === 'failed-over', 240_000);
  for (const [i, image] of images.entries()) {
    assert.equal((await volume(s, members[i]!)).replication_status, 'failed-over');
    assert.equal((await mirroring(b, pool, image))?.primary, true);
    assert.equal((await mirroring(a, pool, image))?.primary, false);
    assert.equal(await imageDigest(b, pool, image), written[i], 'the promoted copy holds every write of the last group point');
  }
  // The rest of the backend stays home: a volume of the same type outside the group is still the primary's.
  assert.equal((await mirroring(a, pool, `volume-${loner}`))?.primary, true);
  assert.notEqual((await volume(s, loner)).replication_status, 'failed-over');
  // The member attached before now names site-b; hosts attaching now are sent to the cluster serving each volume.
  assert.equal(await attachedCluster(first.attachment), 'site-b');
  const second = await attach(s, members[1]!);
  assert.equal(second.cluster_name, 'site-b');
  assert.equal((await attach(s, loner)).cluster_name, 'ceph');
  assert.match((await action(s, g, { failover_replication: { allow_attached_volume: true, secondary_backend_id: 'site-b' } }, 400)).badRequest.message, /failed over already/);

  // Written while failed over (as the hosts with site-b's connection info would), then failback brings it home.
  for (const image of images) await scribble(b, pool, image, '64K');
  const later = await Promise.all(images.map((image) => imageDigest(b, pool, image)));
  assert.notDeepEqual(later, written);
  await action(s, g, { failover_replication: { allow_attached_volume: true, secondary_backend_id: 'default' } }, 202);
  await waitFor('group failed back', async () => (await group(s, g)).replication_status === 'enabled', 240_000);
  for (const [i, image] of images.entries()) {
    assert.equal((await mirroring(a, pool, image))?.primary, true);
    assert.equal((await mirroring(b, pool, image))?.primary, false);
    assert.equal(await imageDigest(a, pool, image), later[i], 'the primary holds every write made while failed over');
  }
  // And once it is home, to the primary's cluster again, the attachment made before the failover too.
  assert.equal(await attachedCluster(first.attachment), 'ceph');
  assert.equal((await s.request('DELETE', `${V}/attachments/${second.attachment}`, undefined, MV)).status, 200);
  assert.equal((await attach(s, members[1]!)).cluster_name, 'ceph');
});

