/**
 * Crash safety (issue 2, part 8): `kill -9` of `basalt server` while volumes
 * are being created, extended and deleted, then a restart. Every volume must
 * end available, deleted or in an error status with a user message; no file
 * may be orphaned or missing; no job may stay leased.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { kill9, spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, tempStateDir, testDatabase, waitFor, type TestDatabase } from '../helpers/server.ts';

const GiB = 1024 ** 3;
const V = `/v3/${PROJECT}`;

/** Starts `basalt server` as a child process and resolves with its API URL. */
async function spawnServer(stateDir: string, db: TestDatabase): Promise<{ child: ChildProcess; url: string }> {
  const { child, url } = await spawnBasalt({ ...FAST_TIMINGS, BASALT_QUOTA_VOLUMES: '-1', BASALT_QUOTA_GIGABYTES: '-1', BASALT_STATE_DIR: stateDir, BASALT_PORT: '0', BASALT_LOG_LEVEL: 'info', ...db.env });
  return { child, url: url! };
}

test('kill -9 mid-operation, restart: nothing stuck, lost or orphaned', { timeout: 120_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  const database = await testDatabase(stateDir);
  const first = await spawnServer(stateDir, database);
  t.after(() => { first.child.kill('SIGKILL'); });

  // Volumes to extend and delete during the crash.
  const base: string[] = [];
  for (let i = 0; i < 20; i++) base.push((await request(first.url, 'POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id);
  await waitFor('base volumes available', async () => {
    const r = await request(first.url, 'GET', `${V}/volumes/detail?status=available`);
    return r.body.volumes.length === base.length;
  }, 30_000);

  // A burst of work, then SIGKILL as soon as the API has accepted it.
  const burst: Promise<unknown>[] = [];
  for (let i = 0; i < 60; i++) burst.push(request(first.url, 'POST', `${V}/volumes`, { volume: { size: 1 + (i % 3) } }));
  for (const id of base.slice(0, 10)) burst.push(request(first.url, 'POST', `${V}/volumes/${id}/action`, { 'os-extend': { new_size: 4 } }));
  for (const id of base.slice(10)) burst.push(request(first.url, 'DELETE', `${V}/volumes/${id}`));
  await Promise.allSettled(burst);
  await kill9(first.child);

  const [inFlight] = await database.query<{ n: number }>("select cast(count(*) as integer) as n from volumes where status in ('creating','extending','deleting')");
  assert.ok(inFlight!.n > 0, 'the kill hit volumes in a transitional status (otherwise this test proves nothing)');

  const second = await spawnServer(stateDir, database);
  t.after(() => { second.child.kill('SIGKILL'); });
  const volumes = await waitFor('no transitional status left', async () => {
    const r = await request(second.url, 'GET', `${V}/volumes/detail`);
    const vs = r.body.volumes as Array<{ id: string; status: string; size: number }>;
    return vs.every((v) => !['creating', 'extending', 'deleting'].includes(v.status)) ? vs : undefined;
  }, 60_000);

  const messages = (await request(second.url, 'GET', `${V}/messages`, undefined, { 'OpenStack-API-Version': 'volume 3.3' })).body.messages as Array<{ resource_uuid: string }>;
  const dir = path.join(stateDir, 'volumes', 'file');
  const files = new Set(fs.readdirSync(dir));
  const counts: Record<string, number> = {};
  for (const v of volumes) {
    counts[v.status] = (counts[v.status] ?? 0) + 1;
    if (v.status === 'available') {
      const file = path.join(dir, `volume-${v.id}`);
      assert.ok(fs.existsSync(file), `available volume ${v.id} has its file`);
      assert.equal(fs.statSync(file).size, v.size * GiB, `file of ${v.id} has the volume's size`);
    } else {
      assert.match(v.status, /^error/, `volume ${v.id} is ${v.status}`);
      assert.ok(messages.some((m) => m.resource_uuid === v.id), `error volume ${v.id} has a user message`);
    }
  }
  const ids = new Set(volumes.map((v) => v.id));
  for (const f of files) assert.ok(ids.has(f.replace(/^volume-/, '')), `file ${f} belongs to a volume`);
  for (const id of base.slice(10)) {
    const v = volumes.find((x) => x.id === id);
    assert.ok(!v || v.status === 'error_deleting', `deleted volume ${id} is gone (or error_deleting with a message)`);
  }
  for (const id of base.slice(0, 10)) {
    const v = volumes.find((x) => x.id === id)!;
    assert.ok(v.status === 'available' || v.status === 'error_extending');
    if (v.status === 'available') assert.ok(v.size === 1 || v.size === 4);
  }
  const [leased] = await database.query<{ n: number }>("select cast(count(*) as integer) as n from jobs where state in ('queued','running')");
  assert.equal(leased!.n, 0, 'no job is left queued or leased');
  t.diagnostic(`in flight at kill: ${inFlight!.n}; after restart: ${JSON.stringify(counts)}; files: ${files.size}`);
  await kill9(second.child);
});
