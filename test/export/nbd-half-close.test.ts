/**
 * A client that shuts its sending side down after its last request still gets
 * the answers of the requests in flight, on every plane alike (the event loop
 * and TLS used to drop them; found by the issue 13 NBD fuzzer).
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
});
