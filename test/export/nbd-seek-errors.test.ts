/**
 * Issue 13, defect 9, on the native data plane: BLOCK_STATUS on a file whose
 * lseek(SEEK_DATA) fails with anything but ENXIO (here a FIFO: ESPIPE)
 * reports data, never a hole a client such as qemu-img would skip as zeros.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { DataPlaneConnection } from '../../src/export/data-plane.ts';
import { ByteReader, requestFrame } from '../helpers/nbd-raw.ts';

const STATE_HOLE = 1;

test('issue 13: native block status on a file whose lseek fails with ESPIPE reports data', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-seek-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = path.join(dir, 'fifo');
  execFileSync('mkfifo', [f]);
  const file = fs.openSync(f, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  t.after(() => fs.closeSync(file));

  const accepted = new Promise<net.Socket>((resolve) => {
    const server = net.createServer(resolve).listen(0, '127.0.0.1', () => {
      const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      t.after(() => { client.destroy(); server.close(); });
      clientReady(client);
    });
  });
  let clientReady!: (c: net.Socket) => void;
  const client = new Promise<net.Socket>((r) => { clientReady = r; });
  const conn = DataPlaneConnection.take(await accepted, { file }, () => Buffer.alloc(0), {
    sizeBytes: 1 << 20, readOnly: true, structured: true, metaContextId: 1, threads: 1, pollMicros: 0, paused: false,
  });
  assert.ok(conn);
  const sock = await client;
  const reader = new ByteReader(sock);
  sock.write(requestFrame(7, 1n, 0n, 1 << 20));
  const head = await reader.read(20);
  assert.equal(head.readUInt16BE(6), 5, 'a block status chunk');
  const body = await reader.read(head.readUInt32BE(16));
  const states: number[] = [];
  let covered = 0;
  for (let at = 4; at < body.length; at += 8) {
    covered += body.readUInt32BE(at);
    states.push(body.readUInt32BE(at + 4));
  }
  assert.equal(covered, 1 << 20);
  assert.ok(states.every((s) => (s & STATE_HOLE) === 0), `no hole reported: ${states.join(', ')}`);
  sock.end(requestFrame(2, 2n, 0n, 0));
  assert.equal(await conn.closed, 'disconnect');
});
