/**
 * A full state directory (issue 13, defect 4): with the SQLite database on a
 * filesystem that fills up while the server runs, writes are refused with a
 * clear `serviceUnavailable` fault naming the state directory (never a bare
 * 500 hidden behind "cannot rollback - no transaction is active"), reads keep
 * working, nothing is half-created, and everything recovers by itself when
 * space returns. A volume folder on a full filesystem fails its create with the
 * volume in `error` and a user message, and a log file on a full filesystem
 * neither crashes nor stalls the server. Needs root (mounts a small tmpfs).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { kill9 } from '../helpers/process.ts';
import { fill, smallFilesystem, unmountAfter, type FilesystemType } from '../helpers/small-filesystem.ts';
import { FAST_TIMINGS, PROJECT, request, startTestServer, tempStateDir, testDatabase, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const isRoot = process.getuid?.() === 0;

/** Rows of the tables a create writes, and the project's quota usage. */
async function footprint(s: TestServer): Promise<unknown> {
  const db = await testDatabase(s.stateDir);
  const [volumes] = await db.query<{ n: number }>('select count(*) as n from volumes');
  const [jobs] = await db.query<{ n: number }>('select count(*) as n from jobs');
  const usage = await db.query('select resource, in_use from quota_usages where project_id = ? order by resource', [PROJECT]);
  return { volumes: volumes!.n, jobs: jobs!.n, usage };
}

for (const type of ['tmpfs', 'ext4'] as const) {
  test(`a full state directory (${type}) refuses writes clearly, keeps reads, and recovers by itself (issue 13, defect 4)`, { skip: !isRoot && 'needs root to mount a filesystem', timeout: 300_000 }, (t) => fullStateDirectory(t, type));
}

async function fullStateDirectory(t: TestContext, type: FilesystemType): Promise<void> {
  const stateDir = smallFilesystem(32 * 1024, type);
  const logLines: string[] = [];
  // The volume files elsewhere: only the database (and the locks) live on the small filesystem.
  const volumeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-volumes-'));
  t.after(() => fs.rmSync(volumeDir, { recursive: true, force: true }));
  const s = await startTestServer(t, { stateDir, logLines, ini: `[file]\nfile_volume_dir = ${volumeDir}\n` });
  unmountAfter(t, stateDir);

  const first = await s.request('POST', `${V}/volumes`, { volume: { size: 1, name: 'before' } });
  assert.equal(first.status, 202);
  await waitForStatus(s, first.body.volume.id, 'available');
  // A create whose job is still to run when the disk fills: its job waits, and completes after.
  const inFlight = await s.request('POST', `${V}/volumes`, { volume: { size: 1, name: 'in-flight' } });
  assert.equal(inFlight.status, 202);

  // (The server runs in this process: nothing of it runs while the filesystem is being filled.
  // Every commit appends to SQLite's write-ahead log, which is still growing this early.)
  const filler = fill(stateDir);
  const before = await footprint(s);
  const refused = await s.request('POST', `${V}/volumes`, { volume: { size: 1, name: 'refused' } });
  assert.equal(refused.status, 413, JSON.stringify(refused.body));
  assert.match(refused.body.overLimit.message, /state directory is full/);
  assert.ok(refused.headers.get('retry-after'), 'a client is told when to try again');
  const vid = first.body.volume.id;
  for (const [method, p, body] of [['PUT', `/volumes/${vid}`, { volume: { name: 'renamed' } }], ['POST', `/volumes/${vid}/metadata`, { metadata: { a: '1' } }], ['POST', `/volumes/${vid}/action`, { 'os-extend': { new_size: 2 } }], ['DELETE', `/volumes/${vid}`, undefined]] as const) {
    const r = await s.request(method, `${V}${p}`, body);
    assert.equal(r.status, 413, `${method} ${p}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.overLimit.message, /state directory is full/);
  }
  assert.deepEqual(await footprint(s), before, 'nothing half-created: no row, no job, usage unchanged');
  const unchanged = (await s.request('GET', `${V}/volumes/${vid}`)).body.volume;
  assert.deepEqual([unchanged.name, unchanged.size, unchanged.status, unchanged.metadata], ['before', 1, 'available', {}]);

  const list = await s.request('GET', `${V}/volumes`);
  assert.equal(list.status, 200);
  assert.deepEqual(list.body.volumes.map((v: { name: string }) => v.name).sort(), ['before', 'in-flight']);
  assert.equal((await s.request('GET', `${V}/volumes/${first.body.volume.id}`)).status, 200);
  for (const read of ['/volumes/detail', '/types', `/os-quota-sets/${PROJECT}?usage=True`, '/limits', '/snapshots/detail', '/os-services', '/scheduler-stats/get_pools?detail=True']) {
    assert.equal((await s.request('GET', `${V}${read}`)).status, 200, `GET ${read} works on a full disk`);
  }

  // Heartbeats and job claims are refused meanwhile (several a second): logged once for the episode, not once a beat.
  await new Promise((r) => setTimeout(r, 1500));

  fs.rmSync(filler);
  const after = await waitFor('a create to be accepted again', async () => {
    const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1, name: 'after' } });
    if (r.status !== 202) assert.equal(r.status, 413);
    return r.status === 202 ? r : undefined;
  });
  await waitForStatus(s, after.body.volume.id, 'available');
  await waitForStatus(s, inFlight.body.volume.id, 'available');

  const entries = logLines.map((l) => JSON.parse(l) as { level: number; msg: string; err?: { code?: string; message?: string } });
  // (A job interrupted by the episode may be taken over when its lease expires: a warning, not an error.)
  const problems = entries.filter((e) => e.level >= 50);
  assert.equal(problems.length, 1, `one line for the episode, no flood: ${JSON.stringify(problems.map((e) => e.msg))}`);
  assert.match(problems[0]!.msg, /state directory full: database writes are refused/);
  assert.equal(problems[0]!.err?.code, 'SQLITE_FULL', 'the real error is kept, not "cannot rollback - no transaction is active"');
  assert.equal(entries.filter((e) => /state directory writable again/.test(e.msg)).length, 1, 'the end of the episode is logged');
  // A checkpoint that failed meanwhile (when the log had reached its threshold) is tried again at once, and its recovery said.
  if (entries.some((e) => /SQLite checkpoint failed/.test(e.msg))) {
    await waitFor('the checkpoints to be said to work again', async () => logLines.some((l) => /SQLite checkpoints work again/.test(l)) || undefined);
  }
}

test('a volume folder on a full filesystem fails a create with the volume in error and a user message, never a 500 (issue 13, defect 4)', { skip: !isRoot && 'needs root to mount a filesystem', timeout: 300_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  const volumeDir = smallFilesystem(16 * 1024);
  const s = await startTestServer(t, { stateDir, ini: `[file]\nfile_volume_dir = ${volumeDir}\n` });
  unmountAfter(t, volumeDir);
  fill(volumeDir);
  // Wait for the capacity report that says the pool has no room (not a guessed time: a busy machine reports late).
  await waitFor('the pool to report it is full', async () => {
    const pools = (await s.request('GET', `${V}/scheduler-stats/get_pools?detail=true`)).body.pools as Array<{ capabilities: { free_capacity_gb?: number } }>;
    return pools.length > 0 && pools.every((p) => (p.capabilities.free_capacity_gb ?? 1) < 1) ? true : undefined;
  });

  const created = await s.request('POST', `${V}/volumes`, { volume: { size: 1, name: 'no-room' } });
  assert.equal(created.status, 202);
  const failed = await waitForStatus(s, created.body.volume.id, 'error');
  assert.equal(failed.name, 'no-room');
  const msgs = await s.request('GET', `${V}/messages?resource_uuid=${created.body.volume.id}`, undefined, { 'OpenStack-API-Version': 'volume 3.5' });
  assert.equal(msgs.status, 200);
  assert.equal(msgs.body.messages.length, 1);
  assert.match(msgs.body.messages[0].user_message, /^schedule allocate volume: Could not find any available weighted backend\. Rejected: .*CapacityFilter/);
  assert.deepEqual(fs.readdirSync(volumeDir).filter((f) => f !== 'filler'), [], 'no volume file');

  // The API itself is unaffected: the state directory has room.
  assert.equal((await s.request('GET', `${V}/volumes`)).status, 200);
  assert.equal((await s.request('DELETE', `${V}/volumes/${created.body.volume.id}`)).status, 202);
});

test('a log file on a full filesystem does not crash the server; logging resumes when space returns (issue 13, defect 4)', { skip: !isRoot && 'needs root to mount a filesystem', timeout: 300_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  const logDir = smallFilesystem(1024);
  const logFile = path.join(logDir, 'basalt.log');
  const out = fs.openSync(logFile, 'w');
  const bin = path.resolve(import.meta.dirname, '../../bin/basalt.js');
  const child = spawn(process.execPath, [bin, 'server'], {
    env: { ...process.env, ...FAST_TIMINGS, BASALT_PORT: '0', BASALT_STATE_DIR: stateDir }, stdio: ['ignore', out, 'pipe'],
  });
  fs.closeSync(out);
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
  let exited: number | null | undefined;
  child.on('exit', (code) => { exited = code; });
  t.after(async () => { if (exited === undefined) await kill9(child); });
  unmountAfter(t, logDir);

  const url = await waitFor('the API to listen', async () => /"msg":"API listening"/.test(fs.readFileSync(logFile, 'utf8'))
    ? (JSON.parse(fs.readFileSync(logFile, 'utf8').split('\n').find((l) => l.includes('"API listening"'))!) as { url: string }).url
    : undefined);
  const filler = fill(logDir);
  // Each request writes a log line; none of them can be written now. (Before the fix the
  // server stopped answering after a few: the bounded wait makes that a failure, not a hang.)
  for (let i = 0; i < 50; i++) {
    const r = await fetch(`${url}${V}/volumes`, { headers: { 'X-Auth-Token': `admin:${PROJECT}` }, signal: AbortSignal.timeout(10_000) });
    assert.equal(r.status, 200);
    await r.arrayBuffer();
  }
  const created = await request(url, 'POST', `${V}/volumes`, { volume: { size: 1 } });
  assert.equal(created.status, 202);
  assert.equal(exited, undefined, `the server is alive (stderr: ${stderr})`);
  assert.match(stderr, /log lines cannot be written \(ENOSPC\)/);
  assert.equal(stderr.match(/log lines cannot be written/g)!.length, 1, 'said once');

  fs.rmSync(filler);
  await waitFor('log lines to be written again', async () => {
    await request(url, 'GET', `${V}/volumes`);
    return /log lines can be written again/.test(fs.readFileSync(logFile, 'utf8'));
  });
  assert.match(fs.readFileSync(logFile, 'utf8'), /"method":"POST",[^\n]*"status":202/, 'the lines held meanwhile are written');
});
