/**
 * What the export takes from the driver's capabilities: it advertises
 * multi-conn (NBD_FLAG_CAN_MULTI_CONN) from `canMultiConn`, never by itself,
 * and a driver whose calls may not overlap (a serial driver, or handle I/O
 * that may not overlap) still serves real clients that keep many requests in
 * flight, on the event loop, one call at a time.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import { GuardedDriver, MemoryDriver, type DeclaredCapabilities } from '../../src/drivers/index.ts';
import { NbdServer } from '../../src/export/index.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;

async function exportOf(t: TestContext, declare: Partial<DeclaredCapabilities>): Promise<{ uri: string; driver: GuardedDriver }> {
  const driver = new GuardedDriver(new MemoryDriver({ poolName: 'p', declare }), 60_000);
  const vol = { id: randomUUID(), sizeGiB: 1 };
  await driver.createVolume(vol);
  const server = new NbdServer({
    provider: {
      find: async (name) => (name === 'v'
        ? { name, key: vol.id, readOnly: false, canMultiConn: driver.capabilities.canMultiConn, open: () => driver.openVolume(vol) }
        : undefined),
      list: async () => [],
    },
    log: pino({ level: 'silent' }),
  });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(() => server.close());
  return { uri: `nbd://127.0.0.1:${port}/v`, driver };
}

test('multi-conn is advertised exactly when the driver declares canMultiConn', async (t) => {
  const coherent = JSON.parse((await run('nbdinfo', ['--json', (await exportOf(t, {})).uri])).stdout).exports[0];
  assert.equal(coherent['can_multi_conn'], true);
  const incoherent = JSON.parse((await run('nbdinfo', ['--json', (await exportOf(t, { canMultiConn: false })).uri])).stdout).exports[0];
  assert.equal(incoherent['can_multi_conn'], false, 'a driver that does not declare it gets no multi-conn');
  assert.equal(incoherent['can_flush'], true);
});

for (const [title, declare] of [
  ['a serial driver', { canRunInParallel: false }],
  ['a driver whose handle I/O may not overlap', { canRunIoInParallel: false }],
] as const) {
  test(`${title} serves a client with many requests in flight`, async (t) => {
    const { uri } = await exportOf(t, declare);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-nbd-caps-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const src = path.join(dir, 'src.img');
    fs.writeFileSync(src, Buffer.alloc(0));
    fs.truncateSync(src, 1024 * MiB);
    const fd = fs.openSync(src, 'r+');
    for (const at of [0, 3, 100, 777, 1023]) fs.writeSync(fd, randomBytes(MiB), 0, MiB, at * MiB);
    fs.closeSync(fd);
    // nbdcopy keeps 64 requests in flight over 4 connections by default.
    await run('nbdcopy', ['--request-size=65536', src, uri]);
    await run('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', src, uri]);
  });
}
