/**
 * The backup repository over the posix target, backing up real volumes of the
 * file driver: chunks stored once, incremental backups reading only changed
 * chunks, restores checked chunk by chunk, deletes that keep what others need.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { BackupRepository, PosixTarget, type BackupSource } from '../../../src/backup/index.ts';
import { fileRegistration, type VolumeDriver, type VolumeHandle } from '../../../src/drivers/index.ts';
import { BackupCorruptError } from '../../../src/errors/index.ts';

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;

interface Setup { driver: VolumeDriver; repo: BackupRepository; targetDir: string; open(id: string, sizeGiB?: number): Promise<VolumeHandle> }

async function setup(t: TestContext): Promise<Setup> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-backup-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const driver = fileRegistration.create({ backendName: 'file', options: { file_volume_dir: path.join(dir, 'volumes'), total_capacity_gb: 0 } });
  fs.mkdirSync(path.join(dir, 'volumes'));
  await driver.init?.();
  const targetDir = path.join(dir, 'backups');
  const handles: VolumeHandle[] = [];
  t.after(async () => { for (const h of handles) await h.close(); });
  return {
    driver, targetDir, repo: new BackupRepository(new PosixTarget(targetDir), { chunkBytes: CHUNK }),
    async open(id, sizeGiB = 1) {
      await driver.createVolume({ id, sizeGiB });
      const h = await driver.openVolume({ id, sizeGiB });
      handles.push(h);
      return h;
    },
  };
}

/** The source as the repository sees it, counting the bytes read. */
function counted(h: VolumeHandle): BackupSource & { bytesRead: number } {
  const s = {
    bytesRead: 0, sizeBytes: h.sizeBytes,
    read: async (offset: number, length: number) => { s.bytesRead += length; return h.read(offset, length); },
    ...(h.blockStatus ? { blockStatus: (offset: number, length: number) => h.blockStatus!(offset, length) } : {}),
  };
  return s;
}

async function sameBytes(a: VolumeHandle, b: VolumeHandle, length: number): Promise<void> {
  for (let at = 0; at < length; at += 8 * MiB) {
    const n = Math.min(8 * MiB, length - at);
    assert.ok((await a.read(at, n)).equals(await b.read(at, n)), `bytes differ in [${at}, ${at + n})`);
  }
}

test('a full backup skips holes, stores each distinct chunk once, and restores byte for byte', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  const block = randomBytes(CHUNK);
  await vol.write(0, block);
  await vol.write(10 * CHUNK, block); // the same content again: one stored chunk
  await vol.write(100 * MiB + 123, randomBytes(5000)); // across a chunk boundary? no: inside one, not aligned
  await vol.flush();
  const src = counted(vol);
  const b = await s.repo.create({ volumeId: 'v1', backupId: 'b1', source: src, createdAt: '2026-12-02T00:00:00Z' });
  assert.equal(b.manifest.chunks.length, 3);
  assert.equal(b.chunksStored, 2);
  assert.equal(b.chunksReused, 1);
  assert.ok(src.bytesRead <= 3 * CHUNK, `read ${src.bytesRead} bytes of a 1 GiB volume holding 3 chunks of data`);

  const copy = await s.open('r1');
  const r = await s.repo.restore((await s.repo.manifest('v1', 'b1'))!, copy, { zeroed: true });
  assert.equal(r.bytesWritten, 3 * CHUNK);
  await sameBytes(vol, copy, 101 * MiB);
});

test('an incremental backup reads only the chunks that changed and restores the volume as it is now', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  for (let i = 0; i < 64; i++) await vol.write(i * CHUNK, randomBytes(CHUNK));
  const full = await s.repo.create({ volumeId: 'v1', backupId: 'full', source: counted(vol), createdAt: '2026-12-02T00:00:00Z' });
  const changed = [{ offset: 5 * CHUNK + 10, length: 100 }, { offset: 40 * CHUNK, length: 2 * CHUNK }, { offset: 512 * MiB, length: 4096 }];
  for (const c of changed) await vol.write(c.offset, randomBytes(c.length));
  const src = counted(vol);
  const inc = await s.repo.create({ volumeId: 'v1', backupId: 'inc', source: src, parent: full.manifest, changed, createdAt: '2026-12-02T01:00:00Z' });
  assert.equal(src.bytesRead, 4 * CHUNK, 'chunks 5, 40, 41 and the one at 512 MiB');
  assert.equal(inc.chunksStored, 4);
  assert.equal(inc.manifest.parentId, 'full');
  assert.equal(inc.manifest.chunks.length, 65);

  const copy = await s.open('r1');
  await s.repo.restore(inc.manifest, copy, { zeroed: true });
  await sameBytes(vol, copy, 513 * MiB);
});

test('a restore onto a volume that was not empty writes the zero chunks too', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  await vol.write(0, randomBytes(CHUNK));
  const b = await s.repo.create({ volumeId: 'v1', backupId: 'b1', source: vol, createdAt: '2026-12-02T00:00:00Z' });
  const old = await s.open('old');
  await old.write(3 * CHUNK, randomBytes(CHUNK));
  await s.repo.restore(b.manifest, old, { zeroed: false });
  await sameBytes(vol, old, 8 * CHUNK);
});

test('a corrupted or missing chunk fails verify and restore, naming the chunk', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  await vol.write(0, randomBytes(CHUNK));
  await vol.write(CHUNK, Buffer.alloc(CHUNK, 7)); // compresses: stored deflated
  const b = await s.repo.create({ volumeId: 'v1', backupId: 'b1', source: vol, createdAt: '2026-12-02T00:00:00Z' });
  assert.deepEqual((await s.repo.verify(b.manifest)).bad, []);
  const [[, first], [, second]] = b.manifest.chunks as [[number, string], [number, string]];
  const file = (h: string) => path.join(s.targetDir, 'volumes', 'v1', 'chunks', h.slice(0, 2), h);
  const bytes = fs.readFileSync(file(first));
  bytes[bytes.length - 1]! ^= 0xff;
  fs.writeFileSync(file(first), bytes);
  fs.rmSync(file(second));
  const report = await s.repo.verify(b.manifest);
  assert.deepEqual(report.bad, [first, second].sort());
  const copy = await s.open('r1');
  await assert.rejects(s.repo.restore(b.manifest, copy, { zeroed: true }), (err: unknown) => err instanceof BackupCorruptError && (err.message.includes(first) || err.message.includes(second)));
});

test('deleting a backup keeps the chunks another backup names and removes the rest; leftovers of a backup cut short are collected', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  const shared = randomBytes(CHUNK);
  await vol.write(0, shared);
  await vol.write(CHUNK, randomBytes(CHUNK));
  const b1 = await s.repo.create({ volumeId: 'v1', backupId: 'b1', source: vol, createdAt: '2026-12-02T00:00:00Z' });
  await vol.write(CHUNK, randomBytes(CHUNK));
  const b2 = await s.repo.create({ volumeId: 'v1', backupId: 'b2', source: vol, createdAt: '2026-12-02T01:00:00Z' });
  const sharedHash = b1.manifest.chunks[0]![1];
  assert.equal(b2.manifest.chunks[0]![1], sharedHash);

  assert.deepEqual(await s.repo.delete('v1', 'b1'), { chunksRemoved: 1 });
  assert.equal(await s.repo.manifest('v1', 'b1'), undefined);
  assert.deepEqual((await s.repo.verify(b2.manifest)).bad, [], 'b2 still whole');

  // A backup that stored a chunk and died before its manifest: the chunk is reused by the next
  // try, and collected when nothing names it.
  await vol.write(2 * CHUNK, randomBytes(CHUNK));
  const target = new PosixTarget(s.targetDir);
  let puts = 0;
  const dying = new BackupRepository({ ...target, kind: target.kind, location: target.location, get: (k) => target.get(k), has: (k) => target.has(k), delete: (k) => target.delete(k), list: (p) => target.list(p),
    put: async (k, d) => { if (k.includes('/manifests/')) throw new Error('killed'); puts++; await target.put(k, d); } }, { chunkBytes: CHUNK });
  await assert.rejects(dying.create({ volumeId: 'v1', backupId: 'b3', source: vol, createdAt: '2026-12-02T02:00:00Z' }), /killed/);
  assert.equal(puts, 1);
  const retry = await s.repo.create({ volumeId: 'v1', backupId: 'b3', source: vol, createdAt: '2026-12-02T02:00:00Z' });
  assert.equal(retry.chunksStored, 0, 'the chunk stored before the cut is reused');
  assert.deepEqual(await s.repo.delete('v1', 'b3'), { chunksRemoved: 1 });
  assert.deepEqual(await s.repo.delete('v1', 'b2'), { chunksRemoved: 2 });
  assert.deepEqual(await s.repo.delete('v1', 'b2'), { chunksRemoved: 0 }, 'idempotent');
  assert.deepEqual(await target.list('volumes/v1/'), []);
});

test('ids that cannot name an object and mismatched parents are refused', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  await assert.rejects(s.repo.create({ volumeId: '../etc', backupId: 'b', source: vol, createdAt: 'x' }), /cannot name a backup object/);
  const b = await s.repo.create({ volumeId: 'v1', backupId: 'b', source: vol, createdAt: 'x' });
  const other = await s.open('v2');
  await assert.rejects(s.repo.create({ volumeId: 'v2', backupId: 'c', source: other, parent: b.manifest, changed: [], createdAt: 'x' }), /not a backup of volume v2/);
});
