/**
 * The backup repository over the posix target, backing up real volumes of the
 * file driver: blocks stored once as blobs packed into packs, incremental
 * backups reading only changed blocks, restores and verification checking
 * every blob, deletes that keep what others need, backups cut short resumed
 * without storing anything twice.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { BackupRepository, blobHash, PosixTarget, type BackupSource, type BackupTarget } from '../../../src/backup/index.ts';
import { fileRegistration, type VolumeDriver, type VolumeHandle } from '../../../src/drivers/index.ts';
import { BackupCorruptError } from '../../../src/errors/index.ts';

const MiB = 1024 * 1024;
const BLOCK = 16 * 1024;
const PACK = 256 * 1024;

interface Setup { driver: VolumeDriver; target: PosixTarget; repo: BackupRepository; targetDir: string; open(id: string, sizeGiB?: number): Promise<VolumeHandle> }

async function setup(t: TestContext): Promise<Setup> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-backup-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const driver = fileRegistration.create({ backendName: 'file', options: { file_volume_dir: path.join(dir, 'volumes'), total_capacity_gb: 0 } });
  fs.mkdirSync(path.join(dir, 'volumes'));
  await driver.init?.();
  const targetDir = path.join(dir, 'backups');
  const target = new PosixTarget(targetDir);
  const handles: VolumeHandle[] = [];
  t.after(async () => { for (const h of handles) await h.close(); });
  return {
    driver, target, targetDir, repo: new BackupRepository(target, { packBytes: PACK }),
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

/** The target, with `put` failing once `failAt(key, keys stored so far)` says so (a backup cut short). */
function dyingTarget(target: BackupTarget, failAt: (key: string, puts: readonly string[]) => boolean): BackupTarget & { puts: string[] } {
  const puts: string[] = [];
  return {
    kind: target.kind, location: target.location, puts,
    get: (k) => target.get(k), has: (k) => target.has(k), delete: (k) => target.delete(k), list: (p) => target.list(p),
    put: async (k, d) => { if (failAt(k, puts)) throw new Error('killed'); puts.push(k); await target.put(k, d); },
  };
}

async function sameBytes(a: VolumeHandle, b: VolumeHandle, length: number): Promise<void> {
  for (let at = 0; at < length; at += 8 * MiB) {
    const n = Math.min(8 * MiB, length - at);
    assert.ok((await a.read(at, n)).equals(await b.read(at, n)), `bytes differ in [${at}, ${at + n})`);
  }
}

const packFiles = (s: Setup, vol: string): string[] => {
  const dir = path.join(s.targetDir, 'volumes', vol, 'packs');
  return fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => /[0-9a-f]{64}$/.test(f)).map((f) => path.join(dir, f)) : [];
};

test('a full backup skips holes, stores each distinct block once, packed into a few packs, and restores byte for byte', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  const block = randomBytes(BLOCK);
  await vol.write(0, randomBytes(MiB));
  await vol.write(2 * MiB, block);
  await vol.write(2 * MiB + 10 * BLOCK, block); // the same content again: one blob
  await vol.write(100 * MiB + 123, randomBytes(5000)); // inside one block, not aligned
  await vol.flush();
  const src = counted(vol);
  const b = await s.repo.create({ volumeId: 'v1', backupId: 'b1', source: src, createdAt: '2026-12-02T00:00:00Z' });
  const blocks = MiB / BLOCK + 3;
  assert.equal(b.manifest.blocks.filter((x) => x).length, blocks);
  assert.equal(b.manifest.blobPacks.length, blocks - 1);
  assert.equal(b.blobsStored, blocks - 1);
  assert.equal(b.blobsReused, 1);
  assert.ok(src.bytesRead <= MiB + 3 * 64 * 1024, `read ${src.bytesRead} bytes of a 1 GiB volume holding about 1 MiB of data`);
  // 66 blobs of 16 KiB in packs closed at 256 KiB: 5 packs, each with its index object, and a manifest.
  assert.equal(b.packsStored, 5);
  assert.equal(packFiles(s, 'v1').length, 5);
  assert.equal(b.objectsStored, 11);
  assert.equal(fs.readdirSync(path.join(s.targetDir, 'volumes', 'v1', 'index')).length, 5);

  const copy = await s.open('r1');
  const r = await s.repo.restore((await s.repo.manifest('v1', 'b1'))!, copy, { zeroed: true });
  assert.equal(r.bytesWritten, blocks * BLOCK);
  await sameBytes(vol, copy, 101 * MiB);
});

test('an incremental backup reads only the blocks that meet the changed ranges, and restores the volume as it is now', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  await vol.write(0, randomBytes(4 * MiB));
  const full = await s.repo.create({ volumeId: 'v1', backupId: 'full', source: counted(vol), createdAt: '2026-12-02T00:00:00Z' });
  // Scattered 4 KiB writes, one across a block boundary, one in a hole.
  const changed = [{ offset: 5 * BLOCK + 4096, length: 4096 }, { offset: 40 * BLOCK - 2048, length: 4096 }, { offset: 200 * BLOCK, length: 100 }, { offset: 512 * MiB, length: 4096 }];
  for (const c of changed) await vol.write(c.offset, randomBytes(c.length));
  const src = counted(vol);
  // The parent's manifest says where each of its blobs is: no index object of a pack it names is read.
  const gets: string[] = [];
  const watched = new BackupRepository({ ...dyingTarget(s.target, () => false), get: (k) => { gets.push(k); return s.target.get(k); } }, { packBytes: PACK });
  const inc = await watched.create({ volumeId: 'v1', backupId: 'inc', source: src, parent: full.manifest, changed, createdAt: '2026-12-02T01:00:00Z' });
  assert.deepEqual(gets.filter((k) => k.includes('/index/')), []);
  assert.equal(src.bytesRead, 5 * BLOCK, 'blocks 5, 39, 40, 200 and the one at 512 MiB');
  assert.equal(inc.blobsStored, 5);
  assert.equal(inc.packsStored, 1, 'the new blobs in one pack');
  assert.equal(inc.manifest.parentId, 'full');
  assert.equal(inc.manifest.blocks.filter((x) => x).length, 4 * MiB / BLOCK + 1);

  const copy = await s.open('r1');
  await s.repo.restore(inc.manifest, copy, { zeroed: true });
  await sameBytes(vol, copy, 513 * MiB);
  // The parent still restores as it was.
  const old = await s.open('r2');
  await s.repo.restore(full.manifest, old, { zeroed: true });
  assert.ok(!(await old.read(0, 4 * MiB)).equals(await vol.read(0, 4 * MiB)));
  assert.deepEqual((await s.repo.verify(full.manifest)).bad, []);
});

test('a block trimmed since the parent is zeros in the incremental backup, read or not', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  await vol.write(0, randomBytes(MiB));
  const full = await s.repo.create({ volumeId: 'v1', backupId: 'full', source: vol, createdAt: 'x' });
  await vol.writeZeroes!(2 * BLOCK, 2 * BLOCK, true); // a discard: block status says zero
  const src = counted(vol);
  const inc = await s.repo.create({ volumeId: 'v1', backupId: 'inc', source: src, parent: full.manifest, changed: [{ offset: 2 * BLOCK, length: BLOCK }], createdAt: 'y' });
  assert.equal(src.bytesRead, 0, 'a hole is not read');
  assert.deepEqual([inc.manifest.blocks[2], inc.manifest.blocks[3]], [0, 0], 'block 3 was not in the ranges, but block status says zeros');
  const old = await s.open('r1');
  await old.write(0, randomBytes(MiB));
  await s.repo.restore(inc.manifest, old, { zeroed: false });
  await sameBytes(vol, old, MiB);
});

test('compressible blocks are stored deflated, incompressible ones as they are', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  const text = Buffer.alloc(4 * MiB);
  for (let at = 0; at < text.length; at += 64) text.write(`block storage line ${at} `.padEnd(64, '.'), at);
  await vol.write(0, text);
  await vol.write(8 * MiB, randomBytes(4 * MiB));
  const b = await s.repo.create({ volumeId: 'v1', backupId: 'b1', source: vol, createdAt: 'x' });
  assert.ok(b.bytesStored < 4 * MiB + MiB, `stored ${b.bytesStored} bytes for 4 MiB of text and 4 MiB of noise`);
  assert.ok(b.bytesStored > 4 * MiB, 'the noise is stored whole');
  const copy = await s.open('r1');
  await s.repo.restore(b.manifest, copy, { zeroed: true });
  await sameBytes(vol, copy, 12 * MiB);
});

test('a restore onto a volume that was not empty writes the zero blocks too', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  await vol.write(0, randomBytes(BLOCK));
  const b = await s.repo.create({ volumeId: 'v1', backupId: 'b1', source: vol, createdAt: '2026-12-02T00:00:00Z' });
  const old = await s.open('old');
  await old.write(3 * BLOCK, randomBytes(5 * MiB));
  await s.repo.restore(b.manifest, old, { zeroed: false });
  await sameBytes(vol, old, 8 * MiB);
});

test('a restore drops what it wrote from the page cache only after a flush made it durable, each 64 MiB even when the disk is slower, and the volume reads back whole', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  await vol.write(0, randomBytes(160 * MiB)); // past two of the restore's 64 MiB background flushes
  const b = await s.repo.create({ volumeId: 'v1', backupId: 'b1', source: vol, createdAt: '2026-12-02T00:00:00Z' });
  const copy = await s.open('r1');
  const calls: string[] = [];
  let flushing = 0;
  // The first flush ends only when everything was written: a disk slower than the restore, which must not cost it the evictions.
  let written = 0;
  let allWritten!: () => void;
  const whole = new Promise<void>((resolve) => { allWritten = resolve; });
  const dest = {
    sizeBytes: copy.sizeBytes,
    write: async (o: number, d: Buffer) => { await copy.write(o, d); if ((written += d.length) >= 160 * MiB) allWritten(); },
    flush: async () => {
      flushing++; calls.push('flush');
      if (calls.length === 1) await whole;
      await copy.flush(); flushing--; calls.push('flushed');
    },
    evict: async (o: number, n: number) => { calls.push(flushing ? 'evict during a flush' : 'evict'); await copy.evict!(o, n); },
  };
  await s.repo.restore(b.manifest, dest, { zeroed: true });
  assert.ok(calls.filter((c) => c === 'evict').length >= 2, `evicted after the background flushes: ${calls.join(', ')}`);
  assert.ok(!calls.includes('evict during a flush'));
  assert.equal(calls.at(-1), 'flushed', 'the restore ends with a flush');
  assert.equal(calls.indexOf('evict') > calls.indexOf('flushed'), true, 'the first eviction follows a completed flush');
  await sameBytes(vol, copy, 160 * MiB);
});

test('one byte corrupted in a pack fails verify and restore naming the blob; a damaged index or a lost pack names every blob in it', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  await vol.write(0, randomBytes(MiB)); // 4 packs of 16 blobs
  await vol.write(MiB, Buffer.alloc(BLOCK, 7)); // compresses: stored deflated
  const b = await s.repo.create({ volumeId: 'v1', backupId: 'b1', source: vol, createdAt: '2026-12-02T00:00:00Z' });
  assert.deepEqual((await s.repo.verify(b.manifest)).bad, []);
  const m = b.manifest;
  const packOf = (blob: number) => packFiles(s, 'v1').find((f) => f.endsWith(m.packs[m.blobPacks[blob]!]!))!;

  // Block 3's blob: stored as it is, 3 blocks into its pack (blobs are stored in order). Flip one byte of it.
  const victim = m.blocks[3]! - 1;
  const file = packOf(victim);
  const bytes = fs.readFileSync(file);
  bytes[3 * BLOCK + 100]! ^= 0x01;
  fs.writeFileSync(file, bytes);
  assert.deepEqual((await s.repo.verify(m)).bad, [blobHash(m, victim)]);
  const copy = await s.open('r1');
  await assert.rejects(s.repo.restore(m, copy, { zeroed: true }), (err: unknown) => err instanceof BackupCorruptError && err.message.includes(blobHash(m, victim)) && /fails its checksum/.test(err.message));

  // The pack of block 20 loses its last byte (its trailer): all 16 of its blobs are bad.
  const cut = packOf(m.blocks[20]! - 1);
  fs.truncateSync(cut, fs.statSync(cut).size - 1);
  // The deflated block's pack is removed.
  const zipped = m.blocks[MiB / BLOCK]! - 1;
  fs.rmSync(packOf(zipped));
  const report = await s.repo.verify(m);
  const inPack = (p: number) => [...m.blobPacks.keys()].filter((n) => m.blobPacks[n] === p).map((n) => blobHash(m, n));
  assert.deepEqual(report.bad, [blobHash(m, victim), ...inPack(m.blobPacks[m.blocks[20]! - 1]!), ...inPack(m.blobPacks[zipped]!)].sort());
  assert.ok(report.bad.includes(blobHash(m, zipped)));
  assert.equal(report.blobs, m.blobPacks.length);
  await assert.rejects(s.repo.restore(m, copy, { zeroed: true }), BackupCorruptError);
});

test('deleting a backup keeps every pack another backup names and removes the rest', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  await vol.write(0, randomBytes(MiB));
  const b1 = await s.repo.create({ volumeId: 'v1', backupId: 'b1', source: vol, createdAt: '2026-12-02T00:00:00Z' });
  await vol.write(MiB, randomBytes(MiB)); // new packs; the first MiB's are shared
  await vol.write(0, randomBytes(BLOCK)); // one block of the first pack changes: that pack is still partly named
  const b2 = await s.repo.create({ volumeId: 'v1', backupId: 'b2', source: vol, parent: b1.manifest, changed: [{ offset: 0, length: BLOCK }, { offset: MiB, length: MiB }], createdAt: '2026-12-02T01:00:00Z' });
  assert.equal(b2.blobsStored, 1 + MiB / BLOCK);
  assert.equal(packFiles(s, 'v1').length, 4 + 5);

  assert.equal((await s.repo.delete('v1', 'b1')).packsRemoved, 0, 'every pack of b1 is still named by b2, the first one partly');
  assert.equal(await s.repo.manifest('v1', 'b1'), undefined);
  assert.deepEqual((await s.repo.verify(b2.manifest)).bad, [], 'b2 still whole');
  const copy = await s.open('r1');
  await s.repo.restore(b2.manifest, copy, { zeroed: true });
  await sameBytes(vol, copy, 2 * MiB);

  assert.equal((await s.repo.delete('v1', 'b2')).packsRemoved, 9);
  assert.equal((await s.repo.delete('v1', 'b2')).packsRemoved, 0, 'idempotent');
  assert.deepEqual(await s.target.list('volumes/v1/'), []);
});

test('a backup cut short leaves packs the retry reuses, storing nothing twice; a collection removes them when no backup follows', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  await vol.write(0, randomBytes(4 * MiB)); // 16 packs
  // Killed when storing the 4th pack's index (3 packs whole, a 4th and maybe a 5th without index): the retry stores 13 packs.
  const indexes = (puts: readonly string[]) => puts.filter((k) => k.includes('/index/')).length;
  const dying = dyingTarget(s.target, (k, puts) => k.includes('/index/') && indexes(puts) >= 3);
  await assert.rejects(new BackupRepository(dying, { packBytes: PACK }).create({ volumeId: 'v1', backupId: 'b1', source: vol, createdAt: 'x' }), /killed/);
  assert.equal(indexes(dying.puts), 3);
  const retry = await s.repo.create({ volumeId: 'v1', backupId: 'b1', source: vol, createdAt: 'x' });
  assert.equal(retry.blobsReused, 3 * PACK / BLOCK);
  assert.equal(retry.blobsStored, 4 * MiB / BLOCK - 3 * PACK / BLOCK);
  // A pack stored without its index holds the same blobs in the same order as the retry's: the same name, stored over.
  assert.equal(packFiles(s, 'v1').length, 16, 'no blob stored twice');
  // Killed at the manifest: everything but the manifest is stored, and reused whole.
  await vol.write(8 * MiB, randomBytes(MiB));
  await assert.rejects(new BackupRepository(dyingTarget(s.target, (k) => k.includes('/manifests/')), { packBytes: PACK }).create({ volumeId: 'v1', backupId: 'b2', source: vol, createdAt: 'y' }), /killed/);
  const again = await s.repo.create({ volumeId: 'v1', backupId: 'b2', source: vol, createdAt: 'y' });
  assert.deepEqual([again.blobsStored, again.packsStored], [0, 0]);
  // A third backup cut short, then nothing: its packs go with the next collection.
  await vol.write(16 * MiB, randomBytes(MiB));
  await assert.rejects(new BackupRepository(dyingTarget(s.target, (k) => k.includes('/manifests/')), { packBytes: PACK }).create({ volumeId: 'v1', backupId: 'b3', source: vol, createdAt: 'z' }), /killed/);
  assert.equal((await s.repo.collect('v1')).packsRemoved, 4);
  assert.deepEqual((await s.repo.verify(again.manifest)).bad, []);
});

test('a big sparse volume\'s manifest stays compact: about 36 bytes a distinct block', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1', 4);
  for (let at = 0; at < 4 * 1024 * MiB; at += 256 * MiB) await vol.write(at, randomBytes(4 * MiB));
  const b = await s.repo.create({ volumeId: 'v1', backupId: 'b1', source: vol, createdAt: 'x' });
  assert.equal(b.manifest.blocks.length, 4 * 1024 * MiB / BLOCK);
  const stored = fs.statSync(path.join(s.targetDir, 'volumes', 'v1', 'manifests', 'b1.bin')).size;
  const blobs = b.manifest.blobPacks.length;
  assert.equal(blobs, 16 * 4 * MiB / BLOCK);
  assert.ok(stored < 36 * blobs + 32 * b.manifest.packs.length + 8192, `manifest of ${blobs} blobs in 262,144 blocks: ${stored} bytes`);
  const back = (await s.repo.manifest('v1', 'b1'))!;
  assert.deepEqual([...back.blocks], [...b.manifest.blocks]);
  assert.ok(back.blobHashes.equals(b.manifest.blobHashes));
});

test('a version-1 backup (whole chunks as objects) still restores, verifies and deletes', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  const chunk = 64 * 1024;
  const data = [randomBytes(chunk), randomBytes(chunk)];
  await vol.write(0, data[0]!);
  await vol.write(5 * chunk, data[1]!);
  const { createHash } = await import('node:crypto');
  const hashes = data.map((d) => createHash('sha256').update(d).digest('hex'));
  for (const [i, d] of data.entries()) await s.target.put(`volumes/v1/chunks/${hashes[i]!.slice(0, 2)}/${hashes[i]}`, Buffer.concat([Buffer.of(0), d]));
  await s.target.put('volumes/v1/chunks/00/00orphan', Buffer.of(0));
  await s.target.put('volumes/v1/manifests/old.json', Buffer.from(JSON.stringify({
    format: 'basalt-backup', version: 1, backupId: 'old', volumeId: 'v1', sizeBytes: vol.sizeBytes, chunkBytes: chunk, parentId: null, createdAt: 'x',
    chunks: [[0, hashes[0]], [5, hashes[1]]],
  })));
  const m = (await s.repo.manifest('v1', 'old'))!;
  assert.equal(m.version, 1);
  assert.deepEqual((await s.repo.verify(m)).bad, []);
  const copy = await s.open('r1');
  await s.repo.restore(m, copy, { zeroed: true });
  await sameBytes(vol, copy, 8 * chunk);
  // A new backup beside it is of version 2; deleting the old one removes its chunks and the orphan, not the new packs.
  const b = await s.repo.create({ volumeId: 'v1', backupId: 'new', source: vol, parent: m, changed: [], createdAt: 'y' });
  assert.equal(b.manifest.version, 2);
  assert.equal(b.bytesRead, 2 * chunk, 'a version-1 parent\'s blocks do not line up: the data is read again');
  assert.equal((await s.repo.delete('v1', 'old')).packsRemoved, 3);
  assert.deepEqual((await s.repo.verify(b.manifest)).bad, []);
});

test('ids that cannot name an object and mismatched parents are refused', async (t) => {
  const s = await setup(t);
  const vol = await s.open('v1');
  await assert.rejects(s.repo.create({ volumeId: '../etc', backupId: 'b', source: vol, createdAt: 'x' }), /cannot name a backup object/);
  const b = await s.repo.create({ volumeId: 'v1', backupId: 'b', source: vol, createdAt: 'x' });
  const other = await s.open('v2');
  await assert.rejects(s.repo.create({ volumeId: 'v2', backupId: 'c', source: other, parent: b.manifest, changed: [], createdAt: 'x' }), /not a backup of volume v2/);
  assert.throws(() => new BackupRepository(s.target, { blockBytes: 12345 }), /block size/);
});
