/**
 * The s3 backup target on a real S3 store — Ceph's radosgw on the run's Ceph
 * cluster — passes the backup target conformance suite, and a backup
 * repository on it backs up, restores and deletes as on a directory.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { BackupRepository, s3Target, type S3Target } from '../../src/backup/index.ts';
import { fileRegistration } from '../../src/drivers/index.ts';
import { startCeph } from '../helpers/ceph.ts';
import { freePort } from '../helpers/net.ts';
import { writeOverNbd } from '../helpers/nbd-write.ts';
import { startRadosgw } from '../helpers/radosgw.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus } from '../helpers/server.ts';
import { backupTargetConformance } from './backup-target-conformance.ts';

const ceph = await startCeph();
const rgw = await startRadosgw(ceph);
after(async () => { await rgw.stop(); await ceph.stop(); });

/** A fresh bucket (and a prefix, so keys are proven to stay under it). */
async function newTarget(): Promise<S3Target> {
  const bucket = `basalt-${randomBytes(6).toString('hex')}`;
  const admin = new S3Client({ endpoint: rgw.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } });
  await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  admin.destroy();
  return await s3Target({ endpoint: rgw.endpoint, bucket, prefix: 'backups', accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });
}

backupTargetConformance('s3', async (t) => {
  const target = await newTarget();
  t.after(() => target.close());
  return target;
}, {
  unreachable: async (t) => {
    const target = await s3Target({ endpoint: `http://127.0.0.1:${await freePort()}`, bucket: 'nowhere', accessKeyId: 'x', secretAccessKey: 'y', requestTimeoutMs: 2000 });
    t.after(() => target.close());
    return target;
  },
});

test('s3: wrong credentials fail with a driver error that is not retried', async (t) => {
  const good = await newTarget();
  t.after(() => good.close());
  const bucket = good.location.slice('s3://'.length).split('/')[0]!;
  const bad = await s3Target({ endpoint: rgw.endpoint, bucket, accessKeyId: rgw.accessKeyId, secretAccessKey: 'wrong' });
  t.after(() => bad.close());
  await assert.rejects(bad.put('k', Buffer.from('x')), (err: Error & { retryable?: boolean }) => err.retryable === false && /SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId/.test(err.message));
});

test('s3: a backup repository on radosgw backs a volume up, incrementally too, restores it byte for byte and deletes without leftovers', async (t) => {
  const target = await newTarget();
  t.after(() => target.close());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-s3-backup-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const driver = fileRegistration.create({ backendName: 'file', options: { file_volume_dir: dir, total_capacity_gb: 0 } });
  await driver.init?.();
  const PART = 256 * 1024;
  const BLOCK = 16 * 1024;
  const repo = new BackupRepository(target, { packBytes: PART });
  await driver.createVolume({ id: 'v1', sizeGiB: 1 });
  const vol = await driver.openVolume({ id: 'v1', sizeGiB: 1 });
  t.after(() => vol.close());
  for (let i = 0; i < 16; i++) await vol.write(i * PART, randomBytes(PART));
  const full = await repo.create({ volumeId: 'v1', backupId: 'full', source: vol, createdAt: '2026-12-02T00:00:00Z' });
  assert.deepEqual([full.blobsStored, full.packsStored], [256, 16], '16 KiB blobs in 256 KiB packs');
  await vol.write(3 * PART, randomBytes(100));
  const inc = await repo.create({ volumeId: 'v1', backupId: 'inc', source: vol, parent: full.manifest, changed: [{ offset: 3 * PART, length: 100 }], createdAt: '2026-12-02T01:00:00Z' });
  assert.deepEqual([inc.blobsStored, inc.packsStored], [1, 1]);
  assert.equal(inc.bytesRead, BLOCK);

  await driver.createVolume({ id: 'r1', sizeGiB: 1 });
  const copy = await driver.openVolume({ id: 'r1', sizeGiB: 1 });
  t.after(() => copy.close());
  await repo.restore((await repo.manifest('v1', 'inc'))!, copy, { zeroed: true });
  assert.ok((await copy.read(0, 16 * PART)).equals(await vol.read(0, 16 * PART)));
  assert.deepEqual((await repo.verify(inc.manifest)).bad, []);

  assert.equal((await repo.delete('v1', 'full')).packsRemoved, 0, 'the pack whose one block changed is still named by the rest of it');
  assert.equal((await repo.delete('v1', 'inc')).packsRemoved, 17);
  assert.deepEqual(await target.list('volumes/'), []);
});

test('s3: Basalt with backup_driver = s3 backs up, restores and deletes through Cinder\'s backup API, the bucket holding the backups', async (t) => {
  const target = await newTarget();
  t.after(() => target.close());
  const bucket = target.location.slice('s3://'.length).split('/')[0]!;
  // The server keeps its repository at the bucket's root (no prefix): look there.
  const root = await s3Target({ endpoint: rgw.endpoint, bucket, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });
  t.after(() => root.close());
  const s = await startTestServer(t, {
    env: {
      BASALT_BACKUP_DRIVER: 's3', BASALT_BACKUP_S3_ENDPOINT_URL: rgw.endpoint, BASALT_BACKUP_S3_STORE_BUCKET: bucket,
      BASALT_BACKUP_S3_STORE_ACCESS_KEY: rgw.accessKeyId, BASALT_BACKUP_S3_STORE_SECRET_KEY: rgw.secretAccessKey,
    },
  });
  const V = `/v3/${PROJECT}`;
  const newVolume = async (): Promise<string> => {
    const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
    await waitForStatus(s, r.body.volume.id, 'available');
    return r.body.volume.id;
  };
  const fileOf = (id: string) => path.join(s.stateDir, 'volumes', 'file', `volume-${id}`);
  const backedUp = async (body: Record<string, unknown>): Promise<string> => {
    const r = await s.request('POST', `${V}/backups`, { backup: body });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    await waitFor('backup available', async () => {
      const b = (await s.request('GET', `${V}/backups/${r.body.backup.id}`)).body.backup;
      if (b.status === 'error') throw new Error(`backup failed: ${b.fail_reason}`);
      return b.status === 'available';
    });
    return r.body.backup.id;
  };
  const vol = await newVolume();
  const data = randomBytes(3 * 1024 * 1024);
  const fd = fs.openSync(fileOf(vol), 'r+');
  fs.writeSync(fd, data, 0, data.length, 5 * 1024 * 1024);
  fs.closeSync(fd);
  const full = await backedUp({ volume_id: vol });
  // Through the export, which records the change for the incremental backup (a write to the file itself would not be seen).
  await writeOverNbd(s, vol, 'write -P 0x63 0 4k');
  const inc = await backedUp({ volume_id: vol, incremental: true });
  assert.ok((await root.list('volumes/')).some((k) => k.endsWith(`/manifests/${inc}.bin`)), 'the manifest is in the bucket');

  const restored = await newVolume();
  const r = await s.request('POST', `${V}/backups/${inc}/restore`, { restore: { volume_id: restored } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitForStatus(s, restored, 'available');
  const read = (id: string) => fs.readFileSync(fileOf(id)).subarray(0, 16 * 1024 * 1024);
  assert.ok(read(restored).equals(read(vol)), 'restored byte for byte from the bucket');

  for (const id of [inc, full]) {
    assert.equal((await s.request('DELETE', `${V}/backups/${id}`)).status, 202);
    await waitFor(`backup ${id} gone`, async () => (await s.request('GET', `${V}/backups/${id}`)).status === 404);
  }
  assert.deepEqual(await root.list('volumes/'), [], 'nothing left in the bucket');
});
