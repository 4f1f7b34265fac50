/** TLS-PSK on the NBD server with libnbd's nbdinfo: STARTTLS, per-export identities, FORCEDTLS. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import pino from 'pino';
import { FileDriver, GuardedDriver } from '../../src/drivers/index.ts';
import { NbdServer, type NbdExport } from '../../src/export/index.ts';

const run = promisify(execFile);

async function setup(t: TestContext, requireTls: boolean) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-nbd-tls-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const driver = new GuardedDriver(new FileDriver({ poolName: 'p', directory: dir, totalCapacityGiB: 0 }), 60_000);
  await driver.init();
  const keys = new Map<string, Buffer>();
  const exports = new Map<string, NbdExport>();
  for (const name of ['one', 'two']) {
    const id = randomUUID();
    await driver.createVolume({ id, sizeGiB: 1 });
    keys.set(`id-${name}`, randomBytes(32));
    exports.set(name, { name, pskIdentity: `id-${name}`, readOnly: false, open: () => driver.openVolume({ id, sizeGiB: 1 }) });
  }
  const server = new NbdServer({
    provider: { find: async (n) => exports.get(n), list: async () => [], refreshKeys: async () => undefined, pskKey: (i) => keys.get(i) },
    log: pino({ level: 'silent' }),
    requireTls,
  });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(() => server.close());
  const pskFile = (identity: string, key = keys.get(identity)!) => {
    const f = path.join(dir, `${identity}.psk`);
    fs.writeFileSync(f, `${identity}:${key.toString('hex')}\n`);
    return f;
  };
  return { port, pskFile, keys };
}

test('TLS-PSK: the right identity opens its export; another export, a wrong key or plain text do not', async (t) => {
  const s = await setup(t, true);
  const uri = (identity: string, name: string, file: string) => `nbds://${identity}@127.0.0.1:${s.port}/${name}?tls-psk-file=${file}`;
  const info = JSON.parse((await run('nbdinfo', ['--json', uri('id-one', 'one', s.pskFile('id-one'))])).stdout);
  assert.equal(info.exports[0]['export-size'], 1024 ** 3);
  assert.equal(info.TLS, true);
  await run('nbdinfo', [uri('id-two', 'two', s.pskFile('id-two'))]);
  await assert.rejects(run('nbdinfo', [uri('id-one', 'two', s.pskFile('id-one'))]), 'one attachment\'s key opens no other export');
  const wrong = path.join(os.tmpdir(), `wrong-${randomUUID()}.psk`);
  fs.writeFileSync(wrong, `id-one:${randomBytes(32).toString('hex')}\n`);
  t.after(() => fs.rmSync(wrong, { force: true }));
  await assert.rejects(run('nbdinfo', [uri('id-one', 'one', wrong)]), 'a wrong key fails the handshake');
  await assert.rejects(run('nbdinfo', [`nbd://127.0.0.1:${s.port}/one`]), 'require_tls refuses clients that skip STARTTLS');
});

test('TLS is optional when not required: plain and TLS clients both work', async (t) => {
  const s = await setup(t, false);
  await run('nbdinfo', [`nbd://127.0.0.1:${s.port}/one`]);
  await run('nbdinfo', [`nbds://id-one@127.0.0.1:${s.port}/one?tls-psk-file=${s.pskFile('id-one')}`]);
  const out = (await run('qemu-io', ['-f', 'raw', '-c', 'write -P 3 0 4096', '-c', 'read -P 3 0 4096', `nbd://127.0.0.1:${s.port}/two`])).stdout;
  assert.doesNotMatch(out, /verification failed/);
});
