/**
 * A group's failover is a durable job (issue 16 parts 3 and 5): `kill -9` of
 * `basalt server` right after a group's `failover_replication` was accepted,
 * then a restart. The group ends failed over, every member on the target
 * with exactly the data of the one group point, none left in between, and no
 * group failover job left running.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { bytesOf, fileOf, REPLICATING_BACKENDS } from '../helpers/backends.ts';
import { kill9, spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, tempStateDir, testDatabase, waitFor, type TestDatabase } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;
const MEMBERS = 4;
const MV = { 'OpenStack-API-Version': 'volume 3.38' };

/** Starts `basalt server` as a child; `kill` is SIGKILL, waiting for the exit (once). */
async function spawnServer(stateDir: string, db: TestDatabase): Promise<{ kill: () => Promise<void>; url: string }> {
  const { child, url } = await spawnBasalt({ ...FAST_TIMINGS, BASALT_CONFIG: path.join(stateDir, 'basalt.conf'), BASALT_STATE_DIR: stateDir, BASALT_PORT: '0', BASALT_LOG_LEVEL: 'info', ...db.env });
  return { kill: () => kill9(child), url: url! };
}

/** Fills a MiB of a volume's file at `offset` with `byte`. */
function fill(file: string, offset: number, byte: number): void {
  const fd = fs.openSync(file, 'r+');
  try { fs.writeSync(fd, Buffer.alloc(MiB, byte), 0, MiB, offset); } finally { fs.closeSync(fd); }
}

test('kill -9 right after a group failover is accepted, restart: every member ends on the target at the one group point', { timeout: 290_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  fs.writeFileSync(path.join(stateDir, 'basalt.conf'), REPLICATING_BACKENDS);
  const database = await testDatabase(stateDir);
  const first = await spawnServer(stateDir, database);
  t.after(() => first.kill());
  const api = (url: string) => async (method: string, p: string, body?: unknown, status?: number) => {
    const r = await request(url, method, `${V}${p}`, body, MV);
    if (status !== undefined) assert.equal(r.status, status, `${method} ${p}: ${JSON.stringify(r.body)}`);
    return r.body;
  };
  let call = api(first.url);

  await call('POST', '/types', { volume_type: { name: 'repl', extra_specs: { replication_enabled: '<is> True', 'basalt:replication_rpo_seconds': '3600' } } }, 200);
  await call('POST', '/group_types', { group_type: { name: 'replicated', group_specs: { consistent_group_replication_enabled: '<is> True' } } }, 202);
  const g = (await call('POST', '/groups', { group: { name: 'g', group_type: 'replicated', volume_types: ['repl'] } }, 202)).group.id as string;
  const ids: string[] = [];
  for (let i = 0; i < MEMBERS; i++) ids.push((await call('POST', '/volumes', { volume: { size: 1, volume_type: 'repl', group_id: g } }, 202)).volume.id);
  await waitFor('members available', async () => {
    for (const id of ids) if ((await call('GET', `/volumes/${id}`)).volume.status !== 'available') return false;
    return true;
  });
  // Each member's own data, then the group point; then more, which the copies must not have.
  for (const [i, id] of ids.entries()) fill(fileOf(stateDir, 'alpha', id), i * 8 * MiB, 0x10 + i);
  await call('POST', `/groups/${g}/action`, { enable_replication: {} }, 202);
  // Enabling makes each member's first copy: on a loaded machine that can take more than a minute.
  await waitFor('group replication enabled', async () => {
    const status = (await call('GET', `/groups/${g}`)).group.replication_status;
    assert.notEqual(status, 'error', 'enabling the group\'s replication failed');
    return status === 'enabled';
  }, 180_000);
  for (const [i, id] of ids.entries()) fill(fileOf(stateDir, 'alpha', id), i * 8 * MiB, 0x80 + i);

  await call('POST', `/groups/${g}/action`, { failover_replication: { secondary_backend_id: 'beta' } }, 202);
  await first.kill();
  const [state] = await database.query<{ s: string | null }>('select replication_status as s from groups where id = ?', [g]);
  t.diagnostic(`killed with the group ${state?.s}`);

  const second = await spawnServer(stateDir, database);
  t.after(() => second.kill());
  call = api(second.url);
  await waitFor('the group failed over after the restart', async () => (await call('GET', `/groups/${g}`)).group.replication_status === 'failed-over', 60_000);
  for (const [i, id] of ids.entries()) {
    const v = (await call('GET', `/volumes/${id}`)).volume;
    assert.match(v['os-vol-host-attr:host'], /@beta#/, `volume ${id} moved`);
    assert.deepEqual([v.status, v.replication_status], ['available', 'failed-over']);
    assert.ok(bytesOf(fileOf(stateDir, 'beta', id), i * 8 * MiB, MiB).equals(Buffer.alloc(MiB, 0x10 + i)), `volume ${id} on beta holds the group point`);
  }
  const [running] = await database.query<{ n: number }>("select cast(count(*) as integer) as n from jobs where kind = 'group.replication_failover' and state in ('queued', 'running')");
  assert.equal(running!.n, 0, 'no group failover job left');
});
