/**
 * Issue 14: a member whose RBD client Ceph blocklisted recovers. Member A
 * serves a volume's export and holds its exclusive lock; A stops answering
 * (SIGSTOP), member B serves the same volume and writes, so B's librbd breaks
 * A's lock and Ceph blocklists A's client. When A runs again it notices
 * (its driver looks at the blocklist), drops its export's connections,
 * connects a fresh client, and serves the volume again: hosts reconnect to
 * either member and read every byte written through both, and the lock
 * moves back and forth between them.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { GuardedDriver } from '../../src/drivers/index.ts';
import { rbdFixture } from '../conformance/rbd-fixture.ts';
import { openExport, simpleRequest } from '../helpers/nbd-raw.ts';
import { exited } from '../helpers/process.ts';

const run = promisify(execFile);
const CMD_WRITE = 1;
const CMD_FLUSH = 3;
const fixture = await rbdFixture();

interface Member { child: ChildProcess; port: number; lines: AsyncIterator<string> }

/** Starts a member process (test/conformance/rbd-member-child.ts) exporting `vol` as `v`. */
async function member(options: Record<string, unknown>, vol: { id: string; sizeGiB: number }, stateDirectory?: string): Promise<Member> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, '../conformance/rbd-member-child.ts'), JSON.stringify({ options, vol, stateDirectory })], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = (await lines.next()).value as string;
  assert.match(first, /^listening \d+$/);
  return { child, port: Number(first.split(' ')[1]), lines };
}

/** qemu-io commands on member `m`'s export; fails on a pattern that does not verify. */
async function io(m: Member, ...commands: string[]): Promise<void> {
  const { stdout } = await run('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), `nbd://127.0.0.1:${m.port}/v`], { timeout: 120_000 });
  assert.doesNotMatch(stdout, /verification failed|error/i, stdout);
}

test('a blocklisted member notices, drops its exports, reconnects with a fresh client and serves the volume again, data intact', { timeout: 240_000 }, async (t) => {
  const { driver: raw, options: base } = await fixture.rbdBackend();
  const driver = new GuardedDriver(raw, 120_000);
  await driver.init();
  const vol = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(vol);
  t.after(() => driver.deleteVolume(vol));
  const options = { ...base, rbd_blocklist_check_interval: 1 };
  const a = await member(options, vol);
  t.after(() => { a.child.kill('SIGKILL'); });
  const b = await member(options, vol);
  t.after(() => { b.child.kill('SIGKILL'); });

  // A host connected to A writes: A's client holds the image's exclusive lock while the host stays.
  const held = await openExport('127.0.0.1', a.port, 'v');
  const dropped = new Promise<void>((resolve) => held.sock.once('close', () => resolve()));
  t.after(() => held.sock.destroy());
  assert.equal((await simpleRequest(held, CMD_WRITE, 0n, 65536, Buffer.alloc(65536, 0x11))).error, 0);
  assert.equal((await simpleRequest(held, CMD_FLUSH, 0n, 0)).error, 0);

  // A stops answering; B takes the volume: its librbd breaks A's lock once A's watch expires, and Ceph blocklists A.
  a.child.kill('SIGSTOP');
  await io(b, 'read -P 0x11 0 64k', 'write -P 0x22 64k 64k', 'flush');
  const blocklist = await fixture.ceph.ceph('osd', 'blocklist', 'ls');
  a.child.kill('SIGCONT');

  // A notices, drops the host's connection and says which volume it lost.
  const lost = await Promise.race([a.lines.next().then((l) => l.value as string), sleep(60_000, undefined, { ref: false }).then(() => 'nothing within 60 s')]);
  assert.equal(lost, `lost ${vol.id}`);
  await dropped;
  // Hosts reconnect: through A (its fresh client takes the lock from B) and through B again.
  await io(a, 'read -P 0x11 0 64k', 'read -P 0x22 64k 64k', 'write -P 0x33 128k 64k', 'flush');
  await io(b, 'read -P 0x11 0 64k', 'read -P 0x22 64k 64k', 'read -P 0x33 128k 64k', 'write -P 0x44 192k 64k', 'flush');
  await io(a, 'read -P 0x44 192k 64k');
  t.diagnostic(`blocklist after the takeover: ${blocklist.trim().split('\n').length} entries`);
});

test('a member restarted after a SIGKILL fences its dead predecessor: the old client\'s watch and lock go at once, not after the watch timeout', { timeout: 240_000 }, async (t) => {
  const { driver: raw, options, pool } = await fixture.rbdBackend();
  const driver = new GuardedDriver(raw, 120_000);
  await driver.init();
  const vol = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(vol);
  t.after(() => driver.deleteVolume(vol));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-rbd-member-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));

  // A host writes through the member and stays: its client holds the image's exclusive lock and watches its header.
  const first = await member(options, vol, dir);
  t.after(() => { first.child.kill('SIGKILL'); });
  const held = await openExport('127.0.0.1', first.port, 'v');
  t.after(() => held.sock.destroy());
  assert.equal((await simpleRequest(held, CMD_WRITE, 0n, 65536, Buffer.alloc(65536, 0x11))).error, 0);
  assert.equal((await simpleRequest(held, CMD_FLUSH, 0n, 0)).error, 0);
  const dead = fs.readFileSync(path.join(dir, 'rados-client'), 'utf8').trim();
  const watchers = async (): Promise<string[]> => (JSON.parse(await fixture.ceph.rbd('status', `${pool}/volume-${vol.id}`, '--format', 'json')) as { watchers: Array<{ address: string }> }).watchers.map((w) => w.address);
  assert.ok((await watchers()).includes(dead), `the member's client ${dead} watches the image: ${(await watchers()).join(', ')}`);
  first.child.kill('SIGKILL');
  await exited(first.child);

  // The same member comes back: its new client blocklists the old one, whose watch the OSD then drops
  // (left alone, it would stay until osd_client_watch_timeout, 30 s by default, 5 s on the test cluster, and hold the lock as long).
  const again = await member(options, vol, dir);
  t.after(() => { again.child.kill('SIGKILL'); });
  assert.match(await fixture.ceph.ceph('osd', 'blocklist', 'ls'), new RegExp(dead.replace(/[.]/g, '\\.')));
  for (let i = 0; (await watchers()).includes(dead); i++) {
    assert.ok(i < 50, `the dead client ${dead} still watches the image 10 s after its successor started`);
    await sleep(200);
  }
  assert.notEqual(fs.readFileSync(path.join(dir, 'rados-client'), 'utf8').trim(), dead, 'the successor keeps its own address for the next restart');
  await io(again, 'read -P 0x11 0 64k', 'write -P 0x22 64k 64k', 'flush', 'read -P 0x22 64k 64k');
});
