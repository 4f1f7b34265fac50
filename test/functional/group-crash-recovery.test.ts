/**
 * Crash safety of group work: `kill -9` of `basalt server` while group
 * snapshots, groups from sources and group deletes run, then a restart. Every
 * group, group snapshot, volume and snapshot must end in a settled status (an
 * error one with its members failed alike), no job may stay leased, no file
 * may be orphaned, and a group snapshot that completed holds every member's data.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { kill9, spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, tempStateDir, testDatabase, waitFor, type TestDatabase } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MV = { 'OpenStack-API-Version': 'volume 3.57' };
const TRANSITIONAL = ['creating', 'deleting', 'extending'];

async function spawnServer(stateDir: string, db: TestDatabase): Promise<{ child: ChildProcess; url: string }> {
  const { child, url } = await spawnBasalt({
    ...FAST_TIMINGS, BASALT_QUOTA_VOLUMES: '-1', BASALT_QUOTA_GIGABYTES: '-1', BASALT_QUOTA_SNAPSHOTS: '-1', BASALT_QUOTA_GROUPS: '-1',
    BASALT_STATE_DIR: stateDir, BASALT_PORT: '0', BASALT_LOG_LEVEL: 'info', ...db.env,
  });
  return { child, url: url! };
}

test('kill -9 during group snapshots, groups from sources and group deletes, restart: nothing stuck, lost or orphaned', { timeout: 180_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  const database = await testDatabase(stateDir);
  const first = await spawnServer(stateDir, database);
  t.after(() => { first.child.kill('SIGKILL'); });
  const api = (url: string, method: string, p: string, body?: unknown) => request(url, method, `${V}${p}`, body, MV);

  const type = (await api(first.url, 'POST', '/types', { volume_type: { name: 'gold' } })).body.volume_type.id;
  const groupType = (await api(first.url, 'POST', '/group_types', { group_type: { name: 'gt' } })).body.group_type.id;
  const groups: string[] = [];
  for (let g = 0; g < 6; g++) {
    const group = (await api(first.url, 'POST', '/groups', { group: { name: `g${g}`, group_type: groupType, volume_types: [type] } })).body.group.id;
    groups.push(group);
    for (let i = 0; i < 3; i++) await api(first.url, 'POST', '/volumes', { volume: { size: 1, volume_type: type, group_id: group, name: `g${g}-v${i}` } });
  }
  await waitFor('members available', async () => (await api(first.url, 'GET', '/volumes/detail?status=available')).body.volumes.length === 18, 60_000);
  // Each member holds its own name, so a snapshot's data says which volume it came from.
  for (const v of (await api(first.url, 'GET', '/volumes/detail')).body.volumes as Array<{ id: string; name: string }>) {
    const fd = fs.openSync(path.join(stateDir, 'volumes', 'file', `volume-${v.id}`), 'r+');
    fs.writeSync(fd, Buffer.from(v.name.padEnd(16)), 0, 16, 0);
    fs.closeSync(fd);
  }
  // Two earlier group snapshots to build groups from.
  const sources: string[] = [];
  for (const group of groups.slice(0, 2)) sources.push((await api(first.url, 'POST', '/group_snapshots', { group_snapshot: { group_id: group, name: 'src' } })).body.group_snapshot.id);
  await waitFor('source group snapshots', async () => (await api(first.url, 'GET', '/group_snapshots/detail?status=available')).body.group_snapshots.length === 2);

  const burst: Promise<unknown>[] = [];
  for (const group of groups.slice(2, 4)) burst.push(api(first.url, 'POST', '/group_snapshots', { group_snapshot: { group_id: group, name: 'burst' } }));
  for (const gs of sources) burst.push(api(first.url, 'POST', '/groups/action', { 'create-from-src': { group_snapshot_id: gs, name: 'copy' } }));
  for (const group of groups.slice(4)) burst.push(api(first.url, 'POST', `/groups/${group}/action`, { delete: { 'delete-volumes': true } }));
  await Promise.allSettled(burst);
  await kill9(first.child);
  const [inFlight] = await database.query<{ n: number }>(
    "select cast(count(*) as integer) as n from (select status from groups union all select status from group_snapshots) x where status in ('creating','deleting')");
  assert.ok(inFlight!.n > 0, 'the kill hit group work in flight (otherwise this test proves nothing)');

  const second = await spawnServer(stateDir, database);
  t.after(() => { second.child.kill('SIGKILL'); });
  const settled = await waitFor('no transitional status left', async () => {
    const gs = (await api(second.url, 'GET', '/groups/detail')).body.groups as Array<{ id: string; status: string }>;
    const gss = (await api(second.url, 'GET', '/group_snapshots/detail')).body.group_snapshots as Array<{ id: string; status: string }>;
    const vs = (await api(second.url, 'GET', '/volumes/detail')).body.volumes as Array<{ id: string; status: string; group_id: string | null }>;
    const all = [...gs, ...gss, ...vs];
    return all.every((x) => !TRANSITIONAL.includes(x.status)) ? { gs, gss, vs } : undefined;
  }, 90_000);

  // Every snapshot row belongs to a group snapshot here; a completed group snapshot has every member, with its data.
  const snaps = await database.query<{ id: string; volume_id: string; status: string; group_snapshot_id: string }>('select id, volume_id, status, group_snapshot_id from snapshots');
  for (const gs of settled.gss) {
    const members = snaps.filter((s) => s.group_snapshot_id === gs.id);
    if (gs.status !== 'available') {
      assert.match(gs.status, /^error/);
      continue;
    }
    assert.equal(members.length, 3, `group snapshot ${gs.id} has its three members`);
    for (const s of members) {
      assert.equal(s.status, 'available');
      const b = Buffer.alloc(16);
      const fd = fs.openSync(path.join(stateDir, 'volumes', 'file', `snapshot-${s.id}`), 'r');
      fs.readSync(fd, b, 0, 16, 0);
      fs.closeSync(fd);
      const [vol] = await database.query<{ name: string }>('select name from volumes where id = ?', [s.volume_id]);
      assert.equal(b.toString().trim(), vol!.name, `snapshot ${s.id} holds its volume's data`);
    }
  }
  for (const g of settled.gs) {
    if (g.status === 'available') {
      for (const v of settled.vs.filter((x) => x.group_id === g.id)) assert.equal(v.status, 'available', `member ${v.id} of available group ${g.id}`);
    } else {
      assert.match(g.status, /^error/, `group ${g.id} is ${g.status}`);
    }
  }
  const files = fs.readdirSync(path.join(stateDir, 'volumes', 'file'));
  const ids = new Set([...settled.vs.map((v) => `volume-${v.id}`), ...snaps.map((s) => `snapshot-${s.id}`)]);
  for (const f of files) assert.ok(ids.has(f), `file ${f} belongs to a row`);
  const [leased] = await database.query<{ n: number }>("select cast(count(*) as integer) as n from jobs where state in ('queued','running')");
  assert.equal(leased!.n, 0, 'no job is left queued or leased');
  t.diagnostic(`in flight at kill: ${inFlight!.n}; groups: ${JSON.stringify(settled.gs.map((g) => g.status))}; group snapshots: ${JSON.stringify(settled.gss.map((g) => g.status))}`);
  await kill9(second.child);
});
