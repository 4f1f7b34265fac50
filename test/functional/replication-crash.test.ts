/**
 * Failover is a durable job (issue 16 part 5): `kill -9` of `basalt server`
 * right after a failover was accepted, then a restart. The backend ends
 * failed over, every replicated volume on the target with the data its last
 * point held, none left in between, and no replication job left running.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { bytesOf, fileOf, REPLICATING_BACKENDS, writePattern } from '../helpers/backends.ts';
import { kill9, spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, tempStateDir, testDatabase, waitFor, type TestDatabase } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;
const VOLUMES = 6;
/** The two backends of the migration tests; alpha names beta as its replication target. */
const CONFIG = REPLICATING_BACKENDS;


/** The MiB a sparse file has allocated. */
const allocatedMiB = (file: string): number => Math.round(fs.statSync(file).blocks * 512 / MiB);

/** Starts `basalt server` as a child; `kill` is SIGKILL, waiting for the exit (once: an exited child is not waited for again). */
async function spawnServer(stateDir: string, db: TestDatabase): Promise<{ kill: () => Promise<void>; url: string }> {
  const { child, url } = await spawnBasalt({ ...FAST_TIMINGS, BASALT_CONFIG: path.join(stateDir, 'basalt.conf'), BASALT_STATE_DIR: stateDir, BASALT_PORT: '0', BASALT_LOG_LEVEL: 'info', ...db.env });
  return { kill: () => kill9(child), url: url! };
}

test('kill -9 right after a failover is accepted, restart: the failover completes, nothing stuck', { timeout: 180_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  fs.writeFileSync(path.join(stateDir, 'basalt.conf'), CONFIG);
  const database = await testDatabase(stateDir);
  const first = await spawnServer(stateDir, database);
  t.after(() => first.kill());
  const api = (url: string) => (method: string, p: string, body?: unknown) => request(url, method, p, body);
  let call = api(first.url);

  assert.equal((await call('POST', `${V}/types`, { volume_type: { name: 'repl', extra_specs: { replication_enabled: '<is> True', 'basalt:replication_rpo_seconds': '1' } } })).status, 200);
  const ids: string[] = [];
  for (let i = 0; i < VOLUMES; i++) ids.push((await call('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'repl' } })).body.volume.id);
  await waitFor('volumes available', async () => {
    const vs = (await call('GET', `${V}/volumes/detail`)).body.volumes as Array<{ status: string }>;
    return vs.every((v) => v.status === 'available');
  });
  for (const [i, id] of ids.entries()) writePattern(fileOf(stateDir, 'alpha', id), [i * 64 * MiB], MiB);
  const written = Date.now();
  await waitFor('every volume shipped after the writes', async () => {
    for (const id of ids) {
      const r = (await call('GET', `${V}/volumes/${id}/replication`)).body.replication;
      if (r.state !== 'enabled' || !r.last_point_at || Date.parse(`${r.last_point_at}Z`) <= written) return false;
    }
    return true;
  });
  const alpha = ((await call('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string }>).find((s) => s.host.endsWith('@alpha'))!;

  assert.equal((await call('PUT', `${V}/os-services/failover_host`, { host: alpha.host, backend_id: 'beta' })).status, 202);
  await first.kill();
  const [state] = await database.query<{ s: string | null }>("select replication_status as s from services where host = ?", [alpha.host]);
  t.diagnostic(`killed with alpha ${state?.s}`);

  const second = await spawnServer(stateDir, database);
  t.after(() => second.kill());
  call = api(second.url);
  await waitFor('alpha failed over after the restart', async () => {
    const s = ((await call('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string; replication_status: string }>).find((x) => x.host === alpha.host);
    return s?.replication_status === 'failed-over';
  }, 60_000);
  for (const [i, id] of ids.entries()) {
    const v = (await call('GET', `${V}/volumes/${id}`)).body.volume;
    assert.match(v['os-vol-host-attr:host'], /@beta#/, `volume ${id} moved`);
    assert.equal(v.replication_status, 'failed-over');
    assert.equal(v.status, 'available');
    // What each volume held at its last point, and nothing else (the copies are sparse: the rest is holes).
    assert.ok(bytesOf(fileOf(stateDir, 'beta', id), i * 64 * MiB, MiB).equals(Buffer.alloc(MiB, (i * 64) % 251 + 1)), `volume ${id} on beta has its data`);
    assert.equal(allocatedMiB(fileOf(stateDir, 'beta', id)), 1, `volume ${id} on beta holds its 1 MiB only`);
  }
  const [running] = await database.query<{ n: number }>("select cast(count(*) as integer) as n from jobs where kind like 'replication.failover' and state in ('queued', 'running')");
  assert.equal(running!.n, 0, 'no failover job left');
});
