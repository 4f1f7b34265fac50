/**
 * Issue 13, defect 8: the event-loop, TLS and native planes bound what one
 * connection may hold (requests in flight, reply bytes not yet taken by the
 * client: the server stops reading the socket at the bound), how many connections an
 * export and the process hold, and how long negotiation may take.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import { startNbd } from '../helpers/nbd-export.ts';
import { ByteReader, optionFrame, requestFrame } from '../helpers/nbd-raw.ts';

const MiB = 1024 * 1024;

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** Buffer memory of this process now, after a collection. */
function bufferBytes(): number {
  gc();
  return process.memoryUsage().arrayBuffers;
}

for (const plane of ['tls', 'event-loop'] as const) describe(`${plane} plane`, () => {
  test('issue 13: a client that sends many 32 MiB reads and never reads the replies holds at most the bound, released at close', async (t) => {
    const boundBytes = 64 * MiB;
    const s = await startNbd(t, { plane, volumes: [{ name: 'm', sizeGiB: 2 }], options: { maxBufferBytesPerConnection: boundBytes } });
    const before = bufferBytes();
    const rssBefore = process.memoryUsage().rss;
    const c = await s.connect('m');
    c.sock.removeAllListeners('data');
    c.sock.pause(); // never reads a reply
    for (let i = 0; i < 48; i++) c.sock.write(requestFrame(0, BigInt(i + 1), BigInt(i * 32 * MiB), 32 * MiB));
    let high = 0;
    let rssHigh = 0;
    for (let i = 0; i < 40; i++) {
      await sleep(50);
      high = Math.max(high, process.memoryUsage().arrayBuffers - before);
      rssHigh = Math.max(rssHigh, process.memoryUsage().rss - rssBefore);
    }
    t.diagnostic(`buffer high-water ${(high / MiB).toFixed(0)} MiB, RSS growth ${(rssHigh / MiB).toFixed(0)} MiB (bound ${boundBytes / MiB} MiB)`);
    // Slack: one 32 MiB read in the TLS layer's encrypted copy, and sockets' own buffers.
    assert.ok(high <= boundBytes + 48 * MiB, `buffers grew by ${(high / MiB).toFixed(0)} MiB`);
    assert.ok(rssHigh <= boundBytes + 160 * MiB, `RSS grew by ${(rssHigh / MiB).toFixed(0)} MiB`);
    const closed = new Promise((r) => c.sock.once('close', r));
    c.sock.destroy();
    await closed;
    // Reads the driver had started finish, then their buffers go.
    let after = bufferBytes() - before;
    for (let i = 0; i < 50 && after > 8 * MiB; i++) {
      await sleep(100);
      after = bufferBytes() - before;
    }
    t.diagnostic(`buffers after close: ${(after / MiB).toFixed(0)} MiB over the start`);
    assert.ok(after <= 8 * MiB, `buffers were not released: ${(after / MiB).toFixed(0)} MiB`);
  });
});

for (const plane of ['tls', 'event-loop', 'native'] as const) {
  test(`${plane} plane: the bounds do not lose requests: many reads and writes in flight all get their answers when the client reads`, async (t) => {
    // Sixteen native workers: the request bound (4), not the workers, limits what is in flight.
    const s = await startNbd(t, { plane, volumes: [{ name: 'r', sizeGiB: 1 }], options: { maxRequestsPerConnection: 4, maxBufferBytesPerConnection: 4 * MiB, threadsPerConnection: 16 } });
    const c = await s.connect('r');
    t.after(() => c.sock.destroy());
    for (let i = 0; i < 64; i++) c.sock.write(requestFrame(1, BigInt(i + 1), BigInt(i * MiB), MiB, Buffer.alloc(MiB, i + 1)));
    for (let i = 0; i < 64; i++) c.sock.write(requestFrame(0, BigInt(1000 + i), BigInt(i * MiB), MiB));
    const cookies = new Set<bigint>();
    for (let n = 0; n < 128; n++) {
      const head = await c.reader.read(16);
      assert.equal(head.readUInt32BE(4), 0);
      const cookie = head.readBigUInt64BE(8);
      cookies.add(cookie);
      if (cookie >= 1000n) {
        const data = await c.reader.read(MiB);
        assert.equal(data[0], Number(cookie - 1000n) + 1, 'a read sees the write before it');
      }
    }
    assert.equal(cookies.size, 128);
  });
}

/**
 * Sends 48 reads of 32 MiB on `sock` and never reads a reply; returns how much
 * this process's RSS grew at most over the next 1.5 s (the native workers
 * hold what they read in the process's memory, outside the JS heap).
 */
async function rssGrowthOfUnreadReads(sock: net.Socket): Promise<number> {
  const rssBefore = process.memoryUsage().rss;
  sock.removeAllListeners('data');
  sock.pause();
  for (let i = 0; i < 48; i++) sock.write(requestFrame(0, BigInt(i + 1), BigInt(i * 32 * MiB), 32 * MiB));
  let rssHigh = 0;
  for (let i = 0; i < 30; i++) {
    await sleep(50);
    rssHigh = Math.max(rssHigh, process.memoryUsage().rss - rssBefore);
  }
  return rssHigh;
}

describe('native plane', () => {
  test('issue 13: a client that sends many 32 MiB reads and never reads the replies makes the workers hold at most the bound', async (t) => {
    const boundBytes = 64 * MiB;
    // Sixteen workers would hold 512 MiB unbounded (one 32 MiB read each, blocked in send).
    const s = await startNbd(t, { plane: 'native', volumes: [{ name: 'm', sizeGiB: 2 }], options: { maxBufferBytesPerConnection: boundBytes, threadsPerConnection: 16 } });
    const c = await s.connect('m');
    const rssHigh = await rssGrowthOfUnreadReads(c.sock);
    t.diagnostic(`RSS growth ${(rssHigh / MiB).toFixed(0)} MiB (bound ${boundBytes / MiB} MiB)`);
    assert.ok(rssHigh <= boundBytes + 128 * MiB, `RSS grew by ${(rssHigh / MiB).toFixed(0)} MiB`);
    c.sock.destroy();
    // The workers let go once their sends fail: a well-behaved client is served again at once.
    const d = await s.connect('m');
    d.sock.write(requestFrame(0, 1n, 0n, 4096));
    assert.equal((await d.reader.read(16)).readUInt32BE(4), 0);
    d.sock.destroy();
  });

  test('issue 13: the request bound holds on the native plane too: a client that never reads the replies has at most that many requests served', async (t) => {
    // Sixteen workers and no byte bound to speak of: only the request bound (2) keeps them from
    // holding sixteen 32 MiB reads (512 MiB) for a client that reads nothing.
    const maxRequests = 2;
    const s = await startNbd(t, { plane: 'native', volumes: [{ name: 'q', sizeGiB: 2 }], options: { maxRequestsPerConnection: maxRequests, maxBufferBytesPerConnection: 1024 * MiB, threadsPerConnection: 16 } });
    const c = await s.connect('q');
    const rssHigh = await rssGrowthOfUnreadReads(c.sock);
    t.diagnostic(`RSS growth ${(rssHigh / MiB).toFixed(0)} MiB (bound ${maxRequests} requests of 32 MiB)`);
    assert.ok(rssHigh <= maxRequests * 32 * MiB + 128 * MiB, `RSS grew by ${(rssHigh / MiB).toFixed(0)} MiB`);
    // The client reads again: every request is answered, in the bound's turns.
    c.sock.destroy();
    const d = await s.connect('q');
    t.after(() => d.sock.destroy());
    for (let i = 0; i < 8; i++) d.sock.write(requestFrame(0, BigInt(i + 1), BigInt(i * MiB), MiB));
    const cookies = new Set<bigint>();
    for (let i = 0; i < 8; i++) {
      const head = await d.reader.read(16);
      assert.equal(head.readUInt32BE(4), 0);
      cookies.add(head.readBigUInt64BE(8));
      await d.reader.read(MiB);
    }
    assert.equal(cookies.size, 8);
  });
});

describe('connection bounds', () => {
  test('issue 13: one connection more than an export allows is refused at NBD_OPT_GO with NBD_REP_ERR_POLICY', async (t) => {
    const s = await startNbd(t, { plane: 'native', volumes: [{ name: 'e', sizeGiB: 1 }], options: { maxConnectionsPerExport: 2 } });
    const a = await s.connect('e');
    const b = await s.connect('e');
    t.after(() => { a.sock.destroy(); b.sock.destroy(); });
    const sock = net.connect(s.port, '127.0.0.1');
    t.after(() => sock.destroy());
    const reader = new ByteReader(sock);
    await reader.read(18);
    sock.write(Buffer.from([0, 0, 0, 3]));
    const name = Buffer.from('e');
    const go = Buffer.alloc(4 + name.length + 2);
    go.writeUInt32BE(name.length, 0);
    name.copy(go, 4);
    sock.write(optionFrame(7, go));
    const reply = await reader.read(20);
    assert.equal(reply.readUInt32BE(12), 0x80000002, 'NBD_REP_ERR_POLICY');
    assert.match((await reader.read(reply.readUInt32BE(16))).toString(), /most connections \(2\)/);
    a.sock.destroy();
    await sleep(100);
    await (await s.connect('e')).sock.destroy();
  });

  for (const plane of ['native', 'event-loop', 'tls'] as const) {
    test(`${plane} plane: clients gone at once after negotiating do not stay counted against the export's bound`, async (t) => {
      // Each look-up takes a while: the clients below go away during it.
      const s = await startNbd(t, { plane, volumes: [{ name: 'g', sizeGiB: 1 }], options: { maxConnectionsPerExport: 2 }, holdFind: () => sleep(30) });
      for (let i = 0; i < 8; i++) {
        const sock = net.connect(s.port, '127.0.0.1');
        sock.on('error', () => undefined);
        sock.on('data', () => undefined);
        sock.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), optionFrame(1, Buffer.from('g'))]));
        await sleep(10);
        sock.destroy();
        const c = await s.connect('g');
        c.sock.destroy();
      }
      await sleep(200);
      assert.equal(s.server.exportConnections('g'), 0);
      const c = await s.connect('g');
      c.sock.destroy();
    });
  }

  test('issue 13: one connection more than the process allows gets NBD_REP_ERR_SHUTDOWN with the reason', async (t) => {
    const s = await startNbd(t, { plane: 'native', volumes: [{ name: 'p', sizeGiB: 1 }], options: { maxConnections: 2 } });
    const a = await s.connect('p');
    const b = net.connect(s.port, '127.0.0.1'); // negotiating: counts too
    t.after(() => { a.sock.destroy(); b.destroy(); });
    await new Promise((r) => b.once('data', r));
    const sock = net.connect(s.port, '127.0.0.1');
    t.after(() => sock.destroy());
    const reader = new ByteReader(sock);
    await reader.read(18);
    sock.write(Buffer.from([0, 0, 0, 3]));
    sock.write(optionFrame(8, Buffer.alloc(0)));
    const reply = await reader.read(20);
    assert.equal(reply.readUInt32BE(12), 0x80000007, 'NBD_REP_ERR_SHUTDOWN');
    assert.match((await reader.read(reply.readUInt32BE(16))).toString(), /most connections \(2\)/);
    await new Promise((r) => sock.once('close', r));
    b.destroy();
    await sleep(100);
    (await s.connect('p')).sock.destroy();
  });

  test('issue 13: a negotiation that does not finish in time is dropped', async (t) => {
    const s = await startNbd(t, { plane: 'native', volumes: [{ name: 'n', sizeGiB: 1 }], options: { negotiationTimeoutMs: 300 } });
    const sock = net.connect(s.port, '127.0.0.1');
    t.after(() => sock.destroy());
    sock.on('data', () => undefined);
    sock.write(Buffer.from([0, 0, 0, 3])); // then nothing
    const started = Date.now();
    await new Promise((r) => sock.once('close', r));
    assert.ok(Date.now() - started < 3000);
    for (let i = 0; i < 20 && s.server.connectionCount > 0; i++) await sleep(50);
    assert.equal(s.server.connectionCount, 0);
    // A TLS handshake that stalls counts too.
    const tlsClient = net.connect(s.port, '127.0.0.1');
    t.after(() => tlsClient.destroy());
    tlsClient.on('data', () => undefined);
    tlsClient.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), optionFrame(5, Buffer.alloc(0))]));
    await new Promise((r) => tlsClient.once('close', r));
  });
});
