/** A hand-driven NBD client for protocol tests: handshake to the transmission phase, raw requests. */
import net from 'node:net';

/** Bytes of an option request (`IHAVEOPT`, option, length, data). */
export function optionFrame(option: number, data: Buffer): Buffer {
  const b = Buffer.alloc(16);
  b.write('IHAVEOPT', 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  return Buffer.concat([b, data]);
}

/** Bytes of a transmission request, with an optional payload. */
export function requestFrame(type: number, cookie: bigint, offset: bigint, length: number, payload?: Buffer, magic = 0x25609513): Buffer {
  const r = Buffer.alloc(28);
  r.writeUInt32BE(magic, 0);
  r.writeUInt16BE(type, 6);
  r.writeBigUInt64BE(cookie, 8);
  r.writeBigUInt64BE(offset, 16);
  r.writeUInt32BE(length, 24);
  return payload ? Buffer.concat([r, payload]) : r;
}

/** Connects, negotiates with NBD_OPT_EXPORT_NAME, and resolves in the transmission phase. */
export async function connectExport(host: string, port: number, name: string): Promise<net.Socket> {
  const sock = net.connect(port, host);
  await new Promise((r) => sock.once('connect', r));
  await new Promise((r) => sock.once('data', r)); // greeting
  sock.write(Buffer.from([0, 0, 0, 3])); // fixed newstyle, no zeroes
  sock.write(optionFrame(1, Buffer.from(name)));
  await new Promise((r) => sock.once('data', r)); // size and flags
  return sock;
}
