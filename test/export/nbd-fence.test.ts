/**
 * Issue 13, defect 10: once a fence (closeExport) has completed, no write of
 * that export's connections reaches the volume — neither one already in a
 * system call or the driver when the fence came, nor one held at a quiesce's
 * gate, nor one still behind the socket. On every plane.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { NbdServer } from '../../src/export/index.ts';
import { PLANES, startNbd, type NbdFixture } from '../helpers/nbd-export.ts';
import { openExport, optionFrame, requestFrame, simpleRequest } from '../helpers/nbd-raw.ts';

const MiB = 1024 * 1024;
const CMD_WRITE = 1;
const FLAG_FUA = 1;

/** A digest of the first `bytes` of an export's volume file. */
function digest(s: NbdFixture, name: string, bytes: number): string {
  const fd = fs.openSync(s.file(name), 'r');
  try {
    const buf = Buffer.alloc(bytes);
    fs.readSync(fd, buf, 0, bytes, 0);
    return createHash('sha256').update(buf).digest('hex');
  } finally {
    fs.closeSync(fd);
  }
}

/** Sends `count` writes of `size` bytes (FUA: each waits for the disk) without waiting for replies; resolves at the first reply. */
async function writeMany(sock: import('node:net').Socket, count: number, size: number, flags: number): Promise<void> {
  const first = new Promise((r) => sock.once('data', r));
  for (let i = 0; i < count; i++) {
    const frame = requestFrame(CMD_WRITE, BigInt(i + 1), BigInt(i * size), size, Buffer.alloc(size, (i % 250) + 1));
    frame.writeUInt16BE(flags, 4);
    sock.write(frame);
  }
  await first;
}

for (const plane of PLANES) describe(`${plane} plane`, () => {
  test('issue 13: no write lands after a fence completes, with writes in flight', async (t) => {
    const s = await startNbd(t, { plane, volumes: [{ name: 'f', sizeGiB: 1 }] });
    const size = 2 * MiB;
    const count = 24;
    for (let round = 0; round < 3; round++) {
      const c = await s.connect('f');
      t.after(() => c.sock.destroy());
      await writeMany(c.sock, count, size, FLAG_FUA);
      await s.server.closeExport('f');
      const atFence = digest(s, 'f', count * size);
      await sleep(300);
      assert.equal(digest(s, 'f', count * size), atFence, `round ${round}: the volume changed after the fence completed`);
    }
  });

  test('issue 13 defect 10: a suspended (self-fenced) server drops every connection, lands no write after, and refuses new ones until resumed', async (t) => {
    const s = await startNbd(t, { plane, volumes: [{ name: 'a', sizeGiB: 1 }, { name: 'b', sizeGiB: 1 }] });
    const size = 2 * MiB;
    const count = 24;
    const conns = [await s.connect('a'), await s.connect('b')];
    const closed = conns.map((c) => new Promise((r) => c.sock.once('close', r)));
    for (const c of conns) { t.after(() => c.sock.destroy()); await writeMany(c.sock, count, size, FLAG_FUA); }
    await s.server.suspend('service-1');
    await s.server.suspend('service-2');
    const atFence = ['a', 'b'].map((n) => digest(s, n, count * size));
    await Promise.all(closed); // nothing more can come from these hosts
    assert.deepEqual(['a', 'b'].map((n) => digest(s, n, count * size)), atFence, 'no write landed after the suspension completed');

    /** Whether a new client is refused: NBD_REP_ERR_SHUTDOWN to its first option (STARTTLS on the TLS plane). */
    const refused = async (): Promise<boolean> => {
      const c = await s.session('a').catch(() => undefined);
      if (!c) return true;
      c.sock.write(optionFrame(3, Buffer.alloc(0))); // NBD_OPT_LIST
      const type = (await c.reader.read(20)).readUInt32BE(12);
      c.sock.destroy();
      return type === 0x80000007;
    };
    assert.ok(await refused(), 'refused while suspended');
    s.server.resume('service-1');
    assert.ok(await refused(), 'refused while any holder keeps it suspended');
    s.server.resume('service-2');
    assert.equal(await refused(), false, 'served again once every holder resumed');
    const c = await s.connect('a');
    t.after(() => c.sock.destroy());
    assert.equal((await simpleRequest(c, CMD_WRITE, 0n, 4096, Buffer.alloc(4096, 0xab))).error, 0);
  });

  test('issue 13: writes held by a quiesce when the fence comes never land', async (t) => {
    const s = await startNbd(t, { plane, volumes: [{ name: 'q', sizeGiB: 1 }] });
    const c = await s.connect('q');
    t.after(() => c.sock.destroy());
    let release!: () => void;
    const quiesced = s.server.quiesce(s.ids.get('q')!, () => new Promise<void>((r) => { release = r; }));
    await sleep(20);
    for (let i = 0; i < 8; i++) c.sock.write(requestFrame(CMD_WRITE, BigInt(i + 1), BigInt(i * MiB), MiB, Buffer.alloc(MiB, 0xee)));
    await sleep(200); // read by the server and held at the gate
    const before = digest(s, 'q', 8 * MiB);
    await s.server.closeExport('q');
    release();
    await quiesced;
    await sleep(200);
    assert.equal(digest(s, 'q', 8 * MiB), before, 'a write held at the gate landed after the fence');
  });

  test('issue 13: a connection that looked its export up before a fence is dropped before its first request', async (t) => {
    let resume!: () => void;
    const held = new Promise<void>((r) => { resume = r; });
    const s = await startNbd(t, { plane, volumes: [{ name: 'n', sizeGiB: 1 }], holdFind: () => held });
    const connecting = s.connect('n');
    await sleep(100); // the connection's look-up is under way
    s.removed.add('n'); // the attachment is deleted, then fenced
    await s.server.closeExport('n');
    resume();
    const c = await connecting.catch(() => undefined);
    if (c) {
      const closed = new Promise((r) => c.sock.once('close', r));
      c.sock.write(requestFrame(CMD_WRITE, 1n, 0n, MiB, Buffer.alloc(MiB, 0x77)));
      await closed;
    }
    await sleep(100);
    assert.equal(digest(s, 'n', MiB), createHash('sha256').update(Buffer.alloc(MiB)).digest('hex'), 'the write never landed');
  });
});

test('issue 13: a write the driver guard gave up on (timed out) still delays the fence until the handle is closed', async (t) => {
  // A handle as the guard makes it for a slow driver: the call fails at its
  // timeout while the driver's write goes on, and close waits for that write
  // (as a file handle's close waits for its pending operations).
  let landedAt = 0;
  let pending: Promise<void> = Promise.resolve();
  const handle = {
    sizeBytes: 1 << 30,
    read: async (_offset: number, n: number) => Buffer.alloc(n),
    write: () => {
      pending = sleep(400).then(() => { landedAt = Date.now(); });
      return sleep(50).then(() => { throw Object.assign(new Error('Driver call write timed out'), { code: 'BACKEND_UNAVAILABLE' }); });
    },
    flush: async () => undefined,
    close: () => pending,
  };
  const server = new NbdServer({ provider: { find: async (n) => (n === 's' ? { name: 's', key: 'v', readOnly: false, open: async () => handle } : undefined), list: async () => [] }, log: pino({ level: 'silent' }) });
  const { port } = await server.listen(0, '127.0.0.1');
  t.after(() => server.close());
  const c = await openExport('127.0.0.1', port, 's');
  t.after(() => c.sock.destroy());
  c.sock.write(requestFrame(CMD_WRITE, 1n, 0n, 4096, Buffer.alloc(4096, 1)));
  assert.equal((await c.reader.read(16)).readUInt32BE(4), 5, 'the timed-out write answered EIO');
  await server.closeExport('s');
  assert.ok(landedAt > 0, 'the fence completed before the abandoned write had landed');
});
