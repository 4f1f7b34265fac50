/**
 * Starting on a state directory that is already full (issue 13): SQLite cannot
 * even open its database in WAL mode there (its shared-memory file cannot be
 * made), so `basalt server` (and `basalt db migrate`) exits non-zero with one
 * line on standard error naming the full directory and what to do — no stack
 * trace — and starts normally, with its data, once space is freed. Needs root
 * (mounts a small filesystem).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { kill9, spawnBasalt } from '../helpers/process.ts';
import { fill, smallFilesystem, unmountAfter, type FilesystemType } from '../helpers/small-filesystem.ts';
import { FAST_TIMINGS, PROJECT, request, startTestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const BIN = path.resolve(import.meta.dirname, '../../bin/basalt.js');
const isRoot = process.getuid?.() === 0;

/** Runs `basalt ARGS` to its exit (bounded by the test's timeout) and returns its exit code and standard error. */
async function runToExit(t: TestContext, args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  const child: ChildProcess = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
  let exited = false;
  t.after(async () => { if (!exited) await kill9(child); });
  const [code] = await new Promise<[number | null]>((resolve) => child.once('exit', (c) => { exited = true; resolve([c]); }));
  return { code, stderr };
}

/** Asserts the one-line refusal naming `dir`. */
function assertRefusal(r: { code: number | null; stderr: string }, dir: string): void {
  assert.equal(r.code, 1, `a failed start exits non-zero (stderr: ${r.stderr})`);
  assert.equal(r.stderr, `basalt: Basalt's state directory ${dir} is full (0 KiB free): free space there, then start Basalt again.\n`, 'one line naming the directory, no stack trace');
}

for (const type of ['tmpfs', 'ext4'] as const) {
  test(`a start on a full state directory (${type}) exits with one line naming it, and starts with its data once space is freed (issue 13)`, { skip: !isRoot && 'needs root to mount a filesystem', timeout: 300_000 }, (t) => fullAtStart(t, type));
}

async function fullAtStart(t: TestContext, type: FilesystemType): Promise<void> {
  const stateDir = smallFilesystem(32 * 1024, type);
  const volumeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-volumes-'));
  t.after(() => fs.rmSync(volumeDir, { recursive: true, force: true }));
  const env = { ...FAST_TIMINGS, BASALT_PORT: '0', BASALT_STATE_DIR: stateDir, BASALT_FILE__FILE_VOLUME_DIR: volumeDir };

  // A first run leaves a database with a volume type of its own, and stops cleanly (its WAL files go).
  const first = await startTestServer(t, { stateDir, env: { BASALT_FILE__FILE_VOLUME_DIR: volumeDir } });
  unmountAfter(t, stateDir);
  const created = await first.request('POST', `${V}/types`, { volume_type: { name: 'kept' } });
  assert.equal(created.status, 200);
  await first.close();

  const filler = fill(stateDir);
  assertRefusal(await runToExit(t, ['server'], env), stateDir);
  assertRefusal(await runToExit(t, ['db', 'migrate'], env), stateDir);

  fs.rmSync(filler);
  const { child, url } = await spawnBasalt(env);
  t.after(() => kill9(child));
  const list = await request(url!, 'GET', `${V}/types`);
  assert.equal(list.status, 200);
  assert.ok(list.body.volume_types.some((v: { name: string }) => v.name === 'kept'), 'the database is the one from before');
}

test('a first start on a full, empty state directory exits with one line naming it (issue 13)', { skip: !isRoot && 'needs root to mount a filesystem', timeout: 300_000 }, async (t) => {
  const stateDir = smallFilesystem(4 * 1024, 'ext4');
  unmountAfter(t, stateDir);
  fill(stateDir);
  assertRefusal(await runToExit(t, ['server'], { ...FAST_TIMINGS, BASALT_PORT: '0', BASALT_STATE_DIR: stateDir }), stateDir);
});
