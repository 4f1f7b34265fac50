/**
 * A client that shuts its sending side down after its last request still gets
 * the answers of the requests in flight, on every plane alike (the event loop
 * and TLS used to drop them; found by the issue 13 NBD fuzzer). So does one
 * that sends more after NBD_CMD_DISC: the native plane closed with those bytes
 * unread, and the kernel's reset dropped the tail of a large READ reply still
 * queued (found by bench/fuzz-nbd.ts).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PLANES, startNbd } from '../helpers/nbd-export.ts';
import { requestFrame } from '../helpers/nbd-raw.ts';

for (const plane of PLANES) describe(`${plane} plane`, () => {
  test('requests sent before the client half-closes are all answered', async (t) => {
    const s = await startNbd(t, { plane, volumes: [{ name: 'h', sizeGiB: 1 }] });
    const c = await s.connect('h');
    t.after(() => c.sock.destroy());
    const chunks: Buffer[] = [];
    c.sock.removeAllListeners('data').on('data', (b: Buffer) => chunks.push(b));
    for (let i = 0; i < 8; i++) c.sock.write(requestFrame(1, BigInt(i + 1), BigInt(i * 65536), 65536, Buffer.alloc(65536, i + 1)));
    for (let i = 0; i < 8; i++) c.sock.write(requestFrame(0, BigInt(100 + i), BigInt(i * 65536), 65536));
    c.sock.end();
    await new Promise((r) => c.sock.once('close', r));
    const all = Buffer.concat(chunks);
    assert.equal(all.length, 16 * 16 + 8 * 65536, 'sixteen replies, eight with data');
  });

  test('a client that sends more after NBD_CMD_DISC gets every reply before it whole, large READs included', async (t) => {
    const s = await startNbd(t, { plane, volumes: [{ name: 'd', sizeGiB: 1 }] });
    const data = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32BE(i, i);
    const setup = await s.connect('d');
    setup.sock.removeAllListeners('data').on('data', () => undefined);
    setup.sock.write(requestFrame(1, 1n, 0n, data.length, data));
    setup.sock.write(requestFrame(2, 2n, 0n, 0)); // NBD_CMD_DISC: flushed, then closed
    await new Promise((r) => setup.sock.once('close', r));
    // Repeated: the reply was cut only when the close came before the kernel had sent it all.
    for (let round = 0; round < 10; round++) {
      const c = await s.connect('d');
      t.after(() => c.sock.destroy());
      const chunks: Buffer[] = [];
      c.sock.removeAllListeners('data').on('data', (b: Buffer) => chunks.push(b));
      c.sock.write(Buffer.concat([
        requestFrame(0, 10n, 0n, data.length),
        requestFrame(2, 11n, 0n, 0),
        // After DISC, never read nor answered: more than the server's read buffer holds, so bytes are still unread when it closes.
        requestFrame(1, 12n, 0n, 512 * 1024, Buffer.alloc(512 * 1024, 0xee)),
        requestFrame(0, 13n, 0n, 4096),
      ]));
      c.sock.end();
      await new Promise((r) => c.sock.once('close', r));
      const all = Buffer.concat(chunks);
      assert.equal(all.length, 16 + data.length, `round ${round}: the READ's reply whole, and nothing after DISC`);
      assert.equal(all.readBigUInt64BE(8), 10n);
      assert.ok(all.subarray(16).equals(data), `round ${round}: the data as written, not what the WRITE after DISC carried`);
    }
  });
});
