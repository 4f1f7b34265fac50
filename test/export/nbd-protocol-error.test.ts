/**
 * A malformed request ends the connection, but only after the replies of the
 * requests sent before it: a read's reply cut mid-way is garbage to the client
 * (the event loop and TLS used to destroy the socket with it queued; found by
 * the issue 13 NBD fuzzer, seed 719219364).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PLANES, startNbd } from '../helpers/nbd-export.ts';
import { requestFrame } from '../helpers/nbd-raw.ts';

for (const plane of PLANES) describe(`${plane} plane`, () => {
  test('reads before a write too large to take are answered whole, then the connection ends', async (t) => {
    const s = await startNbd(t, { plane, volumes: [{ name: 'p', sizeGiB: 1 }] });
    const c = await s.connect('p');
    t.after(() => c.sock.destroy());
    const chunks: Buffer[] = [];
    c.sock.removeAllListeners('data').on('data', (b: Buffer) => chunks.push(b));
    const reads = 4;
    const length = 1024 * 1024;
    const frames = Array.from({ length: reads }, (_, i) => requestFrame(0, BigInt(i + 1), BigInt(i * length), length));
    // A WRITE that claims 3.5 GB of payload: no server buffers that; it ends the connection.
    const huge = requestFrame(1, 99n, 0n, 0);
    huge.writeUInt32BE(3_520_670_555, 24);
    c.sock.write(Buffer.concat([...frames, huge, Buffer.alloc(1626)]));
    await new Promise((r) => c.sock.once('close', r));
    const all = Buffer.concat(chunks);
    assert.equal(all.length, reads * (16 + length), `${reads} whole read replies and nothing else (got ${all.length} bytes)`);
    for (let i = 0; i < reads; i++) assert.equal(all.readUInt32BE(i * (16 + length) + 4), 0, `read ${i + 1} succeeded`);
  });
});
