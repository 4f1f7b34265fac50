/** The file reference driver passes the conformance suite (on the test machine's filesystem). */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { test } from 'node:test';
import os from 'node:os';
import path from 'node:path';
import { FileDriver } from '../../src/drivers/index.ts';
import { driverConformance } from './driver-conformance.ts';
import { fileDriverFactory } from './file-factory.ts';

driverConformance('file', fileDriverFactory(() => fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-file-driver-'))));

test('file: snapshots and clones stay sparse, and the pool says how it copies', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-file-driver-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const driver = new FileDriver({ poolName: 'file', directory: dir, totalCapacityGiB: 0 });
  await driver.init();
  const id = randomUUID();
  await driver.createVolume({ id, sizeGiB: 2 });
  const h = await driver.openVolume({ id, sizeGiB: 2 });
  await h.write(1024 ** 3 + 4096, Buffer.alloc(1024 * 1024, 7));
  await h.close();
  const snap = { id: randomUUID(), volumeId: id, sizeGiB: 2 };
  await driver.createSnapshot(snap);
  const st = fs.statSync(driver.snapshotPath(snap.id));
  assert.equal(st.size, 2 * 1024 ** 3);
  assert.ok(st.blocks * 512 < 8 * 1024 * 1024, `the snapshot holds only the data (${st.blocks * 512} bytes allocated)`);
  const method = (await driver.getStats()).pools[0]!.copyMethod;
  assert.ok(method === 'copy' || method === 'reflink');
});

test('file (issue 13): a copy that fails leaves no half-written file, and a copy interrupted earlier is replaced', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-file-driver-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const driver = new FileDriver({ poolName: 'file', directory: dir, totalCapacityGiB: 0 });
  await driver.init();
  const source = { id: randomUUID(), sizeGiB: 1 };
  const clone = { id: randomUUID(), sizeGiB: 1 };
  fs.writeFileSync(`${driver.volumePath(clone.id)}.partial`, 'left by a killed attempt');
  await assert.rejects(driver.cloneVolume(clone, source), 'the source has no file');
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.partial')), [], 'nothing half-written is left');
  await driver.createVolume(source);
  fs.writeFileSync(`${driver.volumePath(clone.id)}.partial`, 'left by a killed attempt');
  await driver.cloneVolume(clone, source);
  assert.equal(fs.statSync(driver.volumePath(clone.id)).size, 1024 ** 3);
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.partial')), []);
});
