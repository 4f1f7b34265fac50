/**
 * Online extend that clients can follow (issue 17 part 5): after an in-use
 * extend, a new NBD negotiation sees the new size while a connection made
 * before keeps the size it negotiated — a write past its old end is an error
 * the client sees, never a silent success (qemu-io refuses it itself; a raw
 * client that sends it gets NBD_ENOSPC with a message saying to reconnect,
 * on either data plane) —
 * and `basalt resize` makes the host's loop device take the new size.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { pastTheEnd } from '../../src/export/index.ts';
import { optionFrame, openSession, requestFrame, type ByteReader } from '../helpers/nbd-raw.ts';
import { loopAttached } from '../helpers/loop-attach.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };
const CONNECTOR = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' };
const GiB = 1024 ** 3;

/** An available 1 GiB volume attached over NBD; its connection data. */
async function attachedOverNbd(s: TestServer): Promise<{ vol: string; data: { uri: string; host: string; port: number; export_name: string } }> {
  const vol = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, vol, 'available');
  const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector: CONNECTOR } }, MV);
  assert.equal(a.status, 200, JSON.stringify(a.body));
  await s.request('POST', `${V}/attachments/${a.body.attachment.id}/action`, { 'os-complete': null }, MV);
  return { vol, data: a.body.attachment.connection_info.data };
}

async function extendTo(s: TestServer, vol: string, size: number): Promise<void> {
  assert.equal((await s.request('POST', `${V}/volumes/${vol}/action`, { 'os-extend': { new_size: size } }, { 'OpenStack-API-Version': 'volume 3.42' })).status, 202);
  await waitFor('extended in use', async () => {
    const v = (await s.request('GET', `${V}/volumes/${vol}`)).body.volume;
    return v.status === 'in-use' && v.size === size;
  });
}

/** A qemu-io kept running on one connection, fed commands one at a time. */
function qemuIoSession(uri: string): { command(line: string, until: RegExp): Promise<string>; close(): Promise<void> } {
  const child = spawn('qemu-io', ['-f', 'raw', uri], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    async command(line, until) {
      const from = out.length;
      child.stdin.write(`${line}\n`);
      return waitFor(`qemu-io: ${line}`, async () => (until.test(out.slice(from)) ? out.slice(from) : undefined));
    },
    async close() {
      child.stdin.end('quit\n');
      await exited;
    },
  };
}

test('a connection made before an in-use extend keeps its size and is refused past it; a new one sees the new size', async (t) => {
  const s = await startTestServer(t);
  const { vol, data } = await attachedOverNbd(s);
  const old = qemuIoSession(data.uri);
  t.after(() => old.close());
  assert.match(await old.command('write -P 0x5a 0 64k', /wrote|failed/), /wrote 65536\/65536/);

  await extendTo(s, vol, 2);

  // The old connection: still 1 GiB, and a write past it fails where the client can see it.
  assert.match(await old.command('length', /GiB/), /\b1 GiB/);
  assert.match(await old.command(`write -P 0x6b ${GiB} 64k`, /wrote|failed/), /write failed: Input\/output error/);
  // A new negotiation: the new size, and the new space is writable.
  assert.equal(JSON.parse((await run('nbdinfo', ['--json', data.uri])).stdout).exports[0]['export-size'], 2 * GiB);
  const fresh = await run('qemu-io', ['-f', 'raw', '-c', `write -P 0x6b ${GiB} 64k`, '-c', `read -P 0x6b ${GiB} 64k`, '-c', 'read -P 0x5a 0 64k', data.uri]);
  assert.doesNotMatch(fresh.stdout, /failed/);
  // The old connection still works within its size.
  assert.match(await old.command('read -P 0x5a 0 64k', /read|failed/), /read 65536\/65536/);
});

/** Negotiates structured replies and NBD_OPT_GO for `name`; resolves in transmission with the size given. */
async function openStructured(host: string, port: number, name: string): Promise<{ sock: import('node:net').Socket; reader: ByteReader; sizeBytes: bigint }> {
  const c = await openSession(host, port);
  const reply = async (): Promise<{ type: number; data: Buffer }> => {
    const h = await c.reader.read(20);
    const length = h.readUInt32BE(16);
    return { type: h.readUInt32BE(12), data: length > 0 ? await c.reader.read(length) : Buffer.alloc(0) };
  };
  c.sock.write(optionFrame(8, Buffer.alloc(0))); // NBD_OPT_STRUCTURED_REPLY
  assert.equal((await reply()).type, 1, 'structured replies accepted');
  const n = Buffer.from(name);
  const go = Buffer.alloc(4 + n.length + 2);
  go.writeUInt32BE(n.length, 0);
  n.copy(go, 4);
  c.sock.write(optionFrame(7, go)); // NBD_OPT_GO, no information requested
  let sizeBytes = -1n;
  for (;;) {
    const r = await reply();
    if (r.type === 3 && r.data.readUInt16BE(0) === 0) sizeBytes = r.data.readBigUInt64BE(2); // NBD_INFO_EXPORT
    if (r.type === 1) break;
    assert.ok(r.type === 3, `NBD_OPT_GO answered 0x${r.type.toString(16)}`);
  }
  return { ...c, sizeBytes };
}

for (const plane of ['event-loop', 'native']) {
  // Both data planes answer alike: the native one (threads of the addon) sent a bare error code before.
  test(`a raw client that writes past the size its connection negotiated gets NBD_ENOSPC saying to reconnect (${plane} plane)`, async (t) => {
    const s = await startTestServer(t, { env: { BASALT_NBD_DATA_PLANE: plane } });
    const { vol, data } = await attachedOverNbd(s);
    const old = await openStructured(data.host, data.port, data.export_name);
    t.after(() => old.sock.destroy());
    assert.equal(old.sizeBytes, BigInt(GiB));
    await extendTo(s, vol, 2);

    old.sock.write(requestFrame(1, 7n, BigInt(GiB), 4096, Buffer.alloc(4096, 0x6b))); // NBD_CMD_WRITE
    const h = await old.reader.read(20);
    assert.equal(h.readUInt32BE(0), 0x668e33ef, 'a structured reply, which can carry a message');
    assert.equal(h.readUInt16BE(6), 0x8001, 'NBD_REPLY_TYPE_ERROR');
    const payload = await old.reader.read(h.readUInt32BE(16));
    assert.equal(payload.readUInt32BE(0), 28, 'NBD_ENOSPC, as the protocol asks for a write past the end');
    const message = payload.subarray(6, 6 + payload.readUInt16BE(4)).toString();
    assert.match(message, new RegExp(`past the end of the export \\(${GiB} bytes when this connection was negotiated\\).*connect again to see its new size`));
    assert.equal(message, pastTheEnd(GiB), 'the same words on both planes');
    // A read past the end: NBD_EINVAL with the same message.
    old.sock.write(requestFrame(0, 8n, BigInt(GiB), 4096)); // NBD_CMD_READ
    const rh = await old.reader.read(20);
    assert.deepEqual([rh.readUInt32BE(0), rh.readUInt16BE(6)], [0x668e33ef, 0x8001]);
    const rp = await old.reader.read(rh.readUInt32BE(16));
    assert.equal(rp.readUInt32BE(0), 22, 'NBD_EINVAL');
    assert.equal(rp.subarray(6, 6 + rp.readUInt16BE(4)).toString(), message);
    // Nothing was written: a new connection reads zeroes there.
    const check = await run('qemu-io', ['-f', 'raw', '-c', `read -P 0 ${GiB} 4k`, data.uri]);
    assert.doesNotMatch(check.stdout, /failed/);
    const fresh = await openStructured(data.host, data.port, data.export_name);
    t.after(() => fresh.sock.destroy());
    assert.equal(fresh.sizeBytes, BigInt(2 * GiB));
  });
}

test('basalt resize makes the host\'s loop device take the new size', async (t) => {
  const s = await startTestServer(t);
  const { vol, device, cli } = await loopAttached(t, s);
  const size = async () => Number((await run('blockdev', ['--getsize64', device])).stdout.trim());
  assert.equal(await size(), GiB);

  await extendTo(s, vol, 2);
  assert.equal(await size(), GiB, 'the device keeps its size until told');
  assert.equal((await cli('resize', vol)).stdout.trim(), `${device} ${2 * GiB}`);
  assert.equal(await size(), 2 * GiB);
  // The new space is usable through the device.
  await run('dd', ['if=/dev/zero', `of=${device}`, 'bs=4096', 'count=1', `seek=${(GiB + 4096) / 4096}`, 'conv=fsync', 'status=none']);

  // A volume with no loop device here says so, and fails.
  const other = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, other, 'available');
  await assert.rejects(cli('resize', other), (err: { code: number; stderr: string }) => err.code !== 0 && /no loop device on this host/.test(err.stderr));
});
