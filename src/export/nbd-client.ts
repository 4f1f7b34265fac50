/**
 * An NBD client: opens an export of an NBD server (Basalt's own, or any
 * server speaking fixed newstyle) as a {@link VolumeHandle}, so a volume
 * service can read and write a volume that another process serves — the way
 * across processes for moves and replicas, shipping blocks over the export.
 *
 * - Negotiation: fixed newstyle without zeroes; STARTTLS with TLS-PSK when
 *   given a key (TLS 1.2, the server's PSK ciphers); structured replies and the
 *   `base:allocation` metadata context when the server has them (block status
 *   then skips holes); NBD_OPT_GO naming the export. A refusal is an error
 *   carrying the server's message.
 * - Transmission: requests are pipelined, each with its own cookie; one loop
 *   reads the replies (simple or structured) and settles each request. A
 *   request the server fails rejects with a `DriverError` naming the NBD
 *   error (`code` set to its errno name, so an export relaying it answers the
 *   same); a connection lost fails every pending request, retryably.
 * - Payloads larger than the server's maximum block size are split.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Extent, VolumeHandle } from '../drivers/index.ts';
import { DriverError } from '../errors/index.ts';
import {
  BASE_ALLOCATION, CMD, CMD_FLAG, ERR, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, IHAVEOPT, INFO, MAX_PAYLOAD, NBD_MAGIC, OPT,
  OPTION_REPLY_MAGIC, PSK_CIPHERS, REP, REPLY_FLAG_DONE, REPLY_TYPE, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STATE_HOLE, STATE_ZERO, STRUCTURED_REPLY_MAGIC, TF,
} from './nbd-protocol.ts';
import { detachDescriptor } from './data-plane.ts';
import { SocketReader } from './socket-reader.ts';

/** A negotiated plain connection whose reading the caller takes over (see {@link NbdClient.connectPlain}). */
export interface PlainConnection {
  /** Node no longer reads it; destroy it once its descriptor is no longer needed (a native reader dup()s it). */
  socket: net.Socket;
  /** The socket's descriptor, positioned at the transmission phase. */
  fd: number;
  sizeBytes: number;
  /** The export's transmission flags. */
  flags: number;
}

/** Where and how to connect. */
export interface NbdClientOptions {
  host: string;
  port: number;
  /** A Unix domain socket to connect to instead of `host`:`port` (a server on this machine). */
  socketPath?: string;
  exportName: string;
  /** TLS-PSK credentials; the connection is plain TCP without them. */
  psk?: { identity: string; key: Buffer };
  /** Milliseconds the connection and negotiation may take. Default 10 s. */
  timeoutMs?: number;
}

/** The errno names of NBD errors, for the `code` of a failed request. */
const ERRNO_NAME: ReadonlyMap<number, string> = new Map(Object.entries(ERR).map(([name, value]) => [value, name]));

/** A request waiting for its reply. */
interface Pending {
  readonly type: number;
  readonly offset: number;
  readonly length: number;
  resolve(value: Buffer | Extent[] | undefined): void;
  reject(err: Error): void;
  /** READ with structured replies: the buffer the chunks fill. */
  data?: Buffer;
  extents?: Extent[];
  error?: number;
  message?: string;
}

/** An open export of an NBD server. */
export class NbdClient implements VolumeHandle {
  readonly sizeBytes: number;
  /** The export's transmission flags. */
  readonly flags: number;
  /** Largest payload sent in one request. */
  readonly maxPayload: number;
  private readonly pending = new Map<bigint, Pending>();
  /** Every request not yet settled, for {@link close}. */
  private readonly inflight = new Set<Promise<unknown>>();
  private nextCookie = 1n;
  private lost: Error | undefined;
  private closing = false;

  private constructor(
    private readonly socket: net.Socket,
    private readonly reader: SocketReader,
    /** What the client connected to (`NBD export on <socket path>` or `<host>:<port>`), for messages and logs. */
    readonly label: string,
    info: { size: number; flags: number; maxPayload: number },
    private readonly structured: boolean,
    private readonly allocationContext: number | undefined,
  ) {
    this.sizeBytes = info.size;
    this.flags = info.flags;
    this.maxPayload = info.maxPayload;
    void this.readReplies();
  }

  /**
   * Connects and negotiates.
   * @throws DriverError (retryable) when the server cannot be reached, refuses the export or TLS, or breaks the protocol.
   */
  static async connect(o: NbdClientOptions): Promise<NbdClient> {
    const n = await negotiate(o, true);
    return new NbdClient(n.socket, n.reader, n.label, n.info, n.structured, n.allocationContext);
  }

  /**
   * Connects and negotiates a plain connection (never TLS: `o.psk` is
   * ignored) with simple replies only, and hands its socket over with
   * nothing of the transmission phase read, for another reader of it (the
   * native data plane's mirror channels). The caller destroys the socket.
   * @throws DriverError (retryable) as {@link connect}.
   */
  static async connectPlain(o: NbdClientOptions): Promise<PlainConnection> {
    const { psk: _psk, ...plain } = o;
    const n = await negotiate(plain, false);
    const unasked = n.reader.detach().length > 0;
    const fd = unasked ? undefined : detachDescriptor(n.socket);
    if (fd === undefined) {
      n.socket.destroy();
      throw new DriverError(`${n.label}: the connection cannot be handed over (${unasked ? 'the server sent bytes nobody asked for' : 'it has no descriptor'})`, { retryable: true });
    }
    return { socket: n.socket, fd, sizeBytes: n.info.size, flags: n.info.flags };
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.split(offset, length, (at, len) => this.request(CMD.READ, at, len) as Promise<Buffer>).then((parts) => parts.length === 1 ? parts[0]! : Buffer.concat(parts));
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.refuseIfReadOnly();
    await this.split(offset, data.length, (at, len) => this.request(CMD.WRITE, at, len, data.subarray(at - offset, at - offset + len)));
  }

  async flush(): Promise<void> {
    if (this.flags & TF.SEND_FLUSH) await this.request(CMD.FLUSH, 0, 0);
  }

  get trim(): VolumeHandle['trim'] {
    return this.flags & TF.SEND_TRIM ? async (offset, length) => { await this.split(offset, length, (at, len) => this.request(CMD.TRIM, at, len)); } : undefined;
  }

  get writeZeroes(): VolumeHandle['writeZeroes'] {
    return this.flags & TF.SEND_WRITE_ZEROES
      ? async (offset, length, mayPunch) => { await this.split(offset, length, (at, len) => this.request(CMD.WRITE_ZEROES, at, len, undefined, mayPunch ? 0 : CMD_FLAG.NO_HOLE)); }
      : undefined;
  }

  get blockStatus(): VolumeHandle['blockStatus'] {
    if (this.allocationContext === undefined) return undefined;
    return async (offset, length) => {
      const extents = await this.request(CMD.BLOCK_STATUS, offset, Math.min(length, 0xffffffff)) as Extent[];
      // The server may describe less than asked (never nothing); clip what runs past the range.
      const out: Extent[] = [];
      let at = offset;
      for (const e of extents) {
        const len = Math.min(e.length, offset + length - at);
        if (len <= 0) break;
        out.push({ ...e, length: len });
        at += len;
      }
      return out;
    };
  }

  /** Sends NBD_CMD_DISC once the requests in flight are answered, then closes. Never rejects. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    await Promise.allSettled([...this.inflight]);
    if (!this.lost) this.socket.write(header(CMD.DISC, 0, 0n, 0, 0));
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private refuseIfReadOnly(): void {
    if (this.flags & TF.READ_ONLY) throw new DriverError(`${this.label} is read-only`, { cause: errno('EPERM') });
  }

  /** Runs `fn` over `length` bytes from `offset` in pieces of at most {@link maxPayload}. */
  private async split<T>(offset: number, length: number, fn: (at: number, len: number) => Promise<T>): Promise<T[]> {
    const parts: Promise<T>[] = [];
    for (let at = offset; at < offset + length || parts.length === 0; at += this.maxPayload) parts.push(fn(at, Math.min(this.maxPayload, offset + length - at)));
    return Promise.all(parts);
  }

  private request(type: number, offset: number, length: number, payload?: Buffer, flags = 0): Promise<Buffer | Extent[] | undefined> {
    if (this.lost) return Promise.reject(this.lost);
    if (this.closing) return Promise.reject(new DriverError(`${this.label} is closed`));
    const cookie = this.nextCookie++;
    const answered = new Promise<Buffer | Extent[] | undefined>((resolve, reject) => {
      this.pending.set(cookie, { type, offset, length, resolve, reject });
      const head = header(type, flags, cookie, offset, length);
      if (payload) {
        // Corked: the header and the payload leave in one writev, the payload not copied first.
        this.socket.cork();
        this.socket.write(head);
        this.socket.write(payload);
        this.socket.uncork();
      } else {
        this.socket.write(head);
      }
    });
    this.inflight.add(answered);
    void answered.finally(() => this.inflight.delete(answered)).catch(() => undefined);
    return answered;
  }

  /** Reads replies until the connection ends, settling each request. */
  private async readReplies(): Promise<void> {
    try {
      for (;;) {
        const head = await this.reader.read(4);
        const magic = head.readUInt32BE(0);
        if (magic === SIMPLE_REPLY_MAGIC) await this.simpleReply();
        else if (magic === STRUCTURED_REPLY_MAGIC && this.structured) await this.structuredChunk();
        else throw new Error(`bad reply magic 0x${magic.toString(16)}`);
      }
    } catch (err) {
      const lost = new DriverError(`${this.label}: connection lost (${(err as Error).message})`, { retryable: true, cause: err });
      this.lost = lost;
      for (const p of this.pending.values()) p.reject(lost);
      this.pending.clear();
      this.socket.destroy();
    }
  }

  private take(cookie: bigint): Pending {
    const p = this.pending.get(cookie);
    if (!p) throw new Error(`a reply for unknown cookie ${cookie}`);
    return p;
  }

  private async simpleReply(): Promise<void> {
    const rest = await this.reader.read(12);
    const error = rest.readUInt32BE(0);
    const cookie = rest.readBigUInt64BE(4);
    const p = this.take(cookie);
    this.pending.delete(cookie);
    if (error !== 0) return p.reject(this.failure(p, error));
    p.resolve(p.type === CMD.READ ? await this.reader.read(p.length) : undefined);
  }

  private async structuredChunk(): Promise<void> {
    const rest = await this.reader.read(16);
    const flags = rest.readUInt16BE(0);
    const type = rest.readUInt16BE(2);
    const cookie = rest.readBigUInt64BE(4);
    const length = rest.readUInt32BE(12);
    const p = this.take(cookie);
    const body = length > 0 ? await this.reader.read(length) : Buffer.alloc(0);
    if (type === REPLY_TYPE.OFFSET_DATA) {
      const at = Number(body.readBigUInt64BE(0)) - p.offset;
      p.data ??= Buffer.alloc(p.length);
      body.copy(p.data, at, 8);
    } else if (type === REPLY_TYPE.OFFSET_HOLE) {
      p.data ??= Buffer.alloc(p.length); // zeros already
    } else if (type === REPLY_TYPE.BLOCK_STATUS) {
      const extents: Extent[] = [];
      for (let i = 4; i + 8 <= body.length; i += 8) {
        const state = body.readUInt32BE(i + 4);
        extents.push({ length: body.readUInt32BE(i), hole: (state & STATE_HOLE) !== 0, zero: (state & STATE_ZERO) !== 0 });
      }
      p.extents = extents;
    } else if (type === REPLY_TYPE.ERROR || type === REPLY_TYPE.ERROR_OFFSET) {
      p.error = body.readUInt32BE(0);
      p.message = body.subarray(6, 6 + body.readUInt16BE(4)).toString();
    } else if (type !== REPLY_TYPE.NONE) {
      throw new Error(`unknown structured reply type ${type}`);
    }
    if ((flags & REPLY_FLAG_DONE) === 0) return;
    this.pending.delete(cookie);
    if (p.error !== undefined) return p.reject(this.failure(p, p.error, p.message));
    if (p.type === CMD.READ) p.resolve(p.data ?? Buffer.alloc(p.length));
    else if (p.type === CMD.BLOCK_STATUS) p.resolve(p.extents ?? [{ length: p.length, hole: false, zero: false }]);
    else p.resolve(undefined);
  }

  private failure(p: Pending, error: number, message?: string): DriverError {
    const name = ERRNO_NAME.get(error) ?? 'EIO';
    return new DriverError(`${this.label}: ${commandName(p.type)} of ${p.length} bytes at ${p.offset} failed with ${name}${message ? `: ${message}` : ''}`, {
      cause: errno(name), retryable: error === ERR.ESHUTDOWN,
    });
  }
}

/** A reply to an option. */
interface OptionReply { type: number; data: Buffer; message: string }

/** What a negotiation leaves: the socket (TLS when a key was given), its reader, the export's size and flags, the replies agreed. */
interface Negotiated {
  socket: net.Socket;
  reader: SocketReader;
  label: string;
  info: { size: number; flags: number; maxPayload: number };
  structured: boolean;
  allocationContext: number | undefined;
}

/** Connects and negotiates the export; `askStructured`: ask for structured replies (and base:allocation). */
async function negotiate(o: NbdClientOptions, askStructured: boolean): Promise<Negotiated> {
  const label = `NBD export on ${o.socketPath ?? `${o.host}:${o.port}`}`;
  const raw = o.socketPath ? net.connect({ path: o.socketPath }) : net.connect({ host: o.host, port: o.port });
  raw.setNoDelay(true);
  const timeoutMs = o.timeoutMs ?? 10_000;
  let socket: net.Socket = raw;
  const timer = setTimeout(() => socket.destroy(new Error(`negotiation took longer than ${timeoutMs} ms`)), timeoutMs);
  try {
    let reader = new SocketReader(raw);
    await new Promise<void>((resolve, reject) => { raw.once('connect', resolve); raw.once('error', reject); });
    const greeting = await reader.read(18);
    if (greeting.readBigUInt64BE(0) !== NBD_MAGIC || greeting.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('not an NBD server (no newstyle greeting)');
    if ((greeting.readUInt16BE(16) & FLAG_FIXED_NEWSTYLE) === 0) throw new Error('the server does not speak fixed newstyle');
    raw.write(u32(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES));
    const session = { socket, reader };
    if (o.psk) {
      const ack = await option(session, OPT.STARTTLS, Buffer.alloc(0));
      if (ack.type !== REP.ACK) throw new Error(`STARTTLS refused${ack.message}`);
      raw.removeAllListeners('data');
      const secure = tls.connect({
        socket: raw, ciphers: PSK_CIPHERS, maxVersion: 'TLSv1.2', checkServerIdentity: () => undefined,
        pskCallback: () => ({ identity: o.psk!.identity, psk: o.psk!.key }),
      });
      await new Promise<void>((resolve, reject) => {
        secure.once('secureConnect', resolve);
        secure.once('error', reject);
        secure.once('close', () => reject(new Error('TLS handshake failed')));
      });
      socket = secure;
      reader = new SocketReader(secure);
      Object.assign(session, { socket, reader });
    }
    const structured = askStructured && (await option(session, OPT.STRUCTURED_REPLY, Buffer.alloc(0))).type === REP.ACK;
    let allocationContext: number | undefined;
    if (structured) {
      const name = Buffer.from(o.exportName);
      const query = Buffer.from(BASE_ALLOCATION);
      const body = Buffer.concat([u32(name.length), name, u32(1), u32(query.length), query]);
      for (let r = await option(session, OPT.SET_META_CONTEXT, body); r.type !== REP.ACK; r = await nextReply(session, OPT.SET_META_CONTEXT)) {
        if (r.type === REP.META_CONTEXT && r.data.subarray(4).toString() === BASE_ALLOCATION) allocationContext = r.data.readUInt32BE(0);
        else if (r.type >= 0x80000000) break;
      }
    }
    const name = Buffer.from(o.exportName);
    const go = Buffer.concat([u32(name.length), name, u16(1), u16(INFO.BLOCK_SIZE)]);
    const info = { size: -1, flags: 0, maxPayload: MAX_PAYLOAD };
    for (let r = await option(session, OPT.GO, go); r.type !== REP.ACK; r = await nextReply(session, OPT.GO)) {
      if (r.type >= 0x80000000) throw new Error(`export refused (NBD reply 0x${r.type.toString(16)})${r.message}`);
      if (r.type === REP.INFO && r.data.readUInt16BE(0) === INFO.EXPORT) {
        info.size = Number(r.data.readBigUInt64BE(2));
        info.flags = r.data.readUInt16BE(10);
      } else if (r.type === REP.INFO && r.data.readUInt16BE(0) === INFO.BLOCK_SIZE) {
        info.maxPayload = Math.min(MAX_PAYLOAD, r.data.readUInt32BE(10));
      }
    }
    if (info.size < 0) throw new Error('the server sent no export size');
    clearTimeout(timer);
    return { socket, reader, label, info, structured, allocationContext };
  } catch (err) {
    clearTimeout(timer);
    socket.destroy();
    raw.destroy();
    throw new DriverError(`${label}: ${(err as Error).message}`, { retryable: true, cause: err });
  }
}

/** Sends an option and reads its first reply. */
async function option(s: { socket: net.Socket; reader: SocketReader }, opt: number, data: Buffer): Promise<OptionReply> {
  const head = Buffer.alloc(16);
  head.writeBigUInt64BE(IHAVEOPT, 0);
  head.writeUInt32BE(opt, 8);
  head.writeUInt32BE(data.length, 12);
  s.socket.write(Buffer.concat([head, data]));
  return nextReply(s, opt);
}

/** Reads the next reply to option `opt`. */
async function nextReply(s: { reader: SocketReader }, opt: number): Promise<OptionReply> {
  const head = await s.reader.read(20);
  if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error('bad option reply magic');
  if (head.readUInt32BE(8) !== opt) throw new Error(`a reply to option ${head.readUInt32BE(8)} where ${opt} was asked`);
  const type = head.readUInt32BE(12);
  const length = head.readUInt32BE(16);
  if (length > 64 * 1024) throw new Error(`an option reply of ${length} bytes`);
  const data = length > 0 ? await s.reader.read(length) : Buffer.alloc(0);
  return { type, data, message: type >= 0x80000000 && data.length > 0 ? `: ${data.toString()}` : '' };
}

function header(type: number, flags: number, cookie: bigint, offset: number, length: number): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}

function commandName(type: number): string {
  return Object.entries(CMD).find(([, v]) => v === type)?.[0] ?? `command ${type}`;
}

/** An error carrying an errno name as `code`, as the export's error mapping reads it along a cause chain. */
const errno = (name: string): Error => Object.assign(new Error(name), { code: name });
const u32 = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const u16 = (n: number): Buffer => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; };
