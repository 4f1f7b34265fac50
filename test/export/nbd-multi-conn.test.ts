/**
 * The export advertises multi-conn (NBD_FLAG_CAN_MULTI_CONN) from the
 * driver's `canMultiConn`, never by itself: a client that sees it may open
 * several connections and flush through one of them only.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import { GuardedDriver, MemoryDriver } from '../../src/drivers/index.ts';
import { NbdServer } from '../../src/export/index.ts';

const run = promisify(execFile);

async function exportOf(t: TestContext, canMultiConn: boolean): Promise<string> {
  const driver = new GuardedDriver(new MemoryDriver({ poolName: 'p', canMultiConn }), 60_000);
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
  return `nbd://127.0.0.1:${port}/v`;
}

test('multi-conn is advertised exactly when the driver declares canMultiConn', async (t) => {
  const coherent = JSON.parse((await run('nbdinfo', ['--json', await exportOf(t, true)])).stdout).exports[0];
  assert.equal(coherent['can_multi_conn'], true);
  const incoherent = JSON.parse((await run('nbdinfo', ['--json', await exportOf(t, false)])).stdout).exports[0];
  assert.equal(incoherent['can_multi_conn'], false, 'a driver that does not declare it gets no multi-conn');
  assert.equal(incoherent['can_flush'], true);
});
