/** A hand-driven NBD client for protocol tests: handshake to the transmission phase, raw requests. */
import net from 'node:net';
import tls from 'node:tls';

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

/** A TCP connection to `host`:`port`, or a Unix socket's when `host` is a path (starts with `/`). */
export function dial(host: string, port: number): net.Socket {
  return host.startsWith('/') ? net.connect(host) : net.connect(port, host);
}

/** Connects, negotiates with NBD_OPT_EXPORT_NAME, and resolves in the transmission phase. */
export async function connectExport(host: string, port: number, name: string): Promise<net.Socket> {
  const sock = dial(host, port);
  await new Promise((r) => sock.once('connect', r));
  await new Promise((r) => sock.once('data', r)); // greeting
  sock.write(Buffer.from([0, 0, 0, 3])); // fixed newstyle, no zeroes
  sock.write(optionFrame(1, Buffer.from(name)));
  await new Promise((r) => sock.once('data', r)); // size and flags
  return sock;
}

/** Exact-length reads from a socket, for clients that parse replies. */
export class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private ended = false;

  constructor(sock: net.Socket) {
    sock.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.buffered += c.length;
      this.pump();
    });
    const end = (): void => {
      this.ended = true;
      this.waiter?.reject(new Error('connection closed'));
      this.waiter = undefined;
    };
    sock.on('close', end);
    sock.on('error', end);
  }

  /** Bytes received and not read yet. */
  get length(): number { return this.buffered; }

  /** The next `n` bytes; rejects when the connection ends first. */
  read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.pump();
      if (this.waiter && this.ended) { this.waiter = undefined; reject(new Error('connection closed')); }
    });
  }

  private pump(): void {
    if (!this.waiter || this.buffered < this.waiter.n) return;
    const all = Buffer.concat(this.chunks);
    const { n, resolve } = this.waiter;
    this.waiter = undefined;
    this.chunks = [all.subarray(n)];
    this.buffered -= n;
    resolve(all.subarray(0, n));
  }
}

/** A TLS-PSK identity and key. */
export interface PskCredentials { identity: string; key: Buffer }

/** Cipher suites the server offers for TLS-PSK. */
const PSK_CIPHERS = 'ECDHE-PSK-AES256-CBC-SHA384:DHE-PSK-AES256-GCM-SHA384:PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256';

/**
 * Connects and negotiates with NBD_OPT_EXPORT_NAME (after NBD_OPT_STARTTLS
 * with `psk` when given); resolves in the transmission phase with a reader
 * positioned after the export's size and flags.
 */
export async function openExport(host: string, port: number, name: string, psk?: PskCredentials): Promise<{ sock: net.Socket; reader: ByteReader; sizeBytes: bigint }> {
  const { sock, reader } = await openSession(host, port, psk);
  sock.write(optionFrame(1, Buffer.from(name)));
  const info = await reader.read(10);
  return { sock, reader, sizeBytes: info.readBigUInt64BE(0) };
}

/**
 * Connects, reads the greeting and sends the client flags (then
 * NBD_OPT_STARTTLS and the TLS-PSK handshake with `psk` when given):
 * resolves in option haggling, ready for the next option.
 */
export async function openSession(host: string, port: number, psk?: PskCredentials): Promise<{ sock: net.Socket; reader: ByteReader }> {
  const raw = dial(host, port);
  raw.on('error', () => undefined);
  let sock: net.Socket = raw;
  let reader = new ByteReader(raw);
  await reader.read(18); // greeting
  raw.write(Buffer.from([0, 0, 0, 3])); // fixed newstyle, no zeroes
  if (psk) {
    raw.write(optionFrame(5, Buffer.alloc(0)));
    const ack = await reader.read(20);
    if (ack.readUInt32BE(12) !== 1) throw new Error(`STARTTLS refused: 0x${ack.readUInt32BE(12).toString(16)}`);
    raw.removeAllListeners('data');
    const secure = tls.connect({
      socket: raw, ciphers: PSK_CIPHERS, maxVersion: 'TLSv1.2', checkServerIdentity: () => undefined,
      pskCallback: () => ({ identity: psk.identity, psk: psk.key }),
    });
    secure.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => { secure.once('secureConnect', resolve); secure.once('error', reject); secure.once('close', () => reject(new Error('TLS handshake failed'))); });
    sock = secure;
    reader = new ByteReader(secure);
  }
  return { sock, reader };
}

/** Sends one request and reads its simple reply: the error, and the data of a READ. */
export async function simpleRequest(c: { sock: net.Socket; reader: ByteReader }, type: number, offset: bigint, length: number, payload?: Buffer, flags = 0): Promise<{ error: number; data?: Buffer }> {
  const frame = requestFrame(type, 1n, offset, length, payload);
  frame.writeUInt16BE(flags, 4);
  c.sock.write(frame);
  const head = await c.reader.read(16);
  const error = head.readUInt32BE(4);
  if (type === 0 && error === 0) return { error, data: await c.reader.read(length) };
  return { error };
}
