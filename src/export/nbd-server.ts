/**
 * Basalt's NBD server: fixed newstyle negotiation, structured replies,
 * `base:allocation` block status, and the transmission commands READ, WRITE
 * (+FUA), FLUSH, TRIM, WRITE_ZEROES (+NO_HOLE, FAST_ZERO), CACHE, BLOCK_STATUS
 * and DISC. Every offset and length is checked here before the volume handle
 * is touched; read-only exports refuse writes with EPERM.
 *
 * Exports come from an {@link ExportProvider}: the attachments decide which
 * names exist and who may see them; the server only speaks the protocol.
 *
 * Two data planes serve the transmission phase. A plain TCP connection to an
 * export whose handle is a file (`VolumeHandle.fd`) or an addon's
 * asynchronous backend (`VolumeHandle.dataPlaneBackend`: RBD images) is
 * handed to native threads once negotiated ({@link DataPlaneConnection});
 * TLS connections and other drivers are served here, on the event loop. Both answer alike, and
 * both record the blocks every WRITE, WRITE_ZEROES and TRIM touches in the
 * volume's changed-block bits before the volume is touched
 * (`changed-blocks.ts`: what incremental backups read).
 */
import fs from 'node:fs';
import nodePath from 'node:path';
import net, { type AddressInfo, type Socket } from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { VolumeHandle } from '../drivers/index.ts';
import { BasaltError } from '../errors/index.ts';
import {
  BASE_ALLOCATION, CMD, CMD_FLAG, ERR, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES,
  IHAVEOPT, INFO, MAX_OPTION_LENGTH, MAX_PAYLOAD, MIN_BLOCK, NBD_MAGIC, nbdErrorOf, OPT, OPTION_REPLY_MAGIC, PREFERRED_BLOCK,
  REP, REPLY_FLAG_DONE, REPLY_TYPE, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STATE_HOLE, STATE_ZERO, STRUCTURED_REPLY_MAGIC, TF, PSK_CIPHERS } from './nbd-protocol.ts';
import type { ChangedBlockTracker, ChangeWriter } from './changed-blocks.ts';
import { DataPlaneConnection, type DataPlaneSource, type MirroredHandle } from './data-plane.ts';
import { NbdStats, opOf } from './nbd-stats.ts';
import { QosLimiters, type QosLimits } from './qos.ts';
import { ConnectionClosed, SocketReader } from './socket-reader.ts';

/** One export as the server sees it. */
export interface NbdExport {
  readonly name: string;
  /** The TLS-PSK identity that may open this export; required when TLS is in use. */
  readonly pskIdentity?: string;
  /** What the export serves (the volume id): the unit of {@link NbdServer.quiesce}. */
  readonly key?: string;
  readonly description?: string;
  readonly readOnly: boolean;
  /**
   * Whether the volume's handles are coherent (the driver's `canMultiConn`):
   * then, and only then, the export advertises multi-conn, telling clients
   * they may open several connections and flush through any one of them.
   * Default false.
   */
  readonly canMultiConn?: boolean;
  /** The limits of the volume's QoS specs (src/export/qos.ts), shared by all connections to the same key. Absent: none. */
  readonly qos?: QosLimits;
  /** How long its natively served connections' workers poll for the next request (µs); absent: the server's `pollMicros`. */
  readonly pollMicros?: number;
  /** Opens block I/O for one connection (the handle checks ranges too). */
  open(): Promise<VolumeHandle>;
}

/** Where exports come from. */
export interface ExportProvider {
  /** The export of this name, if it exists (checked at every negotiation). */
  find(name: string): Promise<NbdExport | undefined>;
  /** Names NBD_OPT_LIST may show: none by default, since export names are credentials. */
  list(): Promise<string[]>;
  /**
   * Makes the TLS-PSK keys current before a STARTTLS handshake (the TLS
   * library asks for keys synchronously). Optional: no TLS without it.
   */
  refreshKeys?(): Promise<void>;
  /** The key of a PSK identity, from the keys made current by `refreshKeys`. */
  pskKey?(identity: string): Buffer | undefined;
}

/** Cipher suites offered for TLS-PSK (TLS 1.2: Node's PSK support stops there). */

/** Most block status descriptors sent in one reply. */
const MAX_EXTENTS = 1024;
/** Context id of `base:allocation` on every connection. */
const BASE_ALLOCATION_ID = 1;
/**
 * The smallest READ the native data plane splices by default over a Unix
 * socket (the largest is 256 KiB, SPLICE_READ_MAX in the addon: larger
 * replies are copied). History, bench/nbd.ts on this 2-vCPU VM, kernel 6.18:
 * on 6 December every spliced READ waited (1M reads 1901 MB/s spliced against
 * 4170 copied, 64k randrw 70/30 QD16 1818 against 2204), so none was; on 8
 * December, after the changes since, 64 KiB READs spliced beat copied ones
 * (64k randrw 3516 against 3006 MB/s unpinned, 3935 against 3670 split, nbdkit
 * 2976 and 3283) while 1M READs still did not (4092 against 4328).
 * {@link NbdServerOptions.spliceMinBytes} changes it (0: copy every READ).
 */
export const SPLICE_MIN_BYTES = 64 * 1024;

/** The smallest WRITE payload the native data plane splices by default (see {@link NbdServerOptions.spliceWriteMinBytes}). */
export const SPLICE_WRITE_MIN_BYTES = 256 * 1024;

/** How long a quiesce waits at most for the writes in flight to finish (see {@link NbdServer.quiesce}). */
export const QUIESCE_DRAIN_MS = 30_000;

/** How often a quiesce that holds writes for long says so in the log. */
export const QUIESCE_SLOW_MS = 10_000;

/** Settings of an {@link NbdServer}. */
export interface NbdServerOptions {
  provider: ExportProvider;
  log: Logger;
  /** Longest a quiesce waits for the writes in flight to finish. Default {@link QUIESCE_DRAIN_MS}. */
  quiesceDrainMs?: number;
  /** Refuse clients that do not start TLS (FORCEDTLS mode). Default false. */
  requireTls?: boolean;
  /**
   * Where plain connections to file-backed exports are served: `native`
   * threads (default: the event loop's one thread cannot keep up with a C
   * server's per-request cost) or the `event-loop`.
   */
  dataPlane?: 'native' | 'event-loop';
  /** Native worker threads per connection. Default 8 (they take turns reading requests; deeper queues spread over them). */
  threadsPerConnection?: number;
  /**
   * How long at most a native worker polls for the next request before it
   * blocks, in µs, while the client is busy (an idle client stops the
   * polling). Default 50: a blocked worker's wake-up across vCPUs costs more
   * than a 4k read. 0 never polls.
   */
  pollMicros?: number;
  /**
   * READs of at least this many bytes on the native data plane's Unix-socket
   * connections are served with splice(2) (zero-copy from the page cache),
   * smaller ones (and those over 256 KiB) by copying. Default
   * {@link SPLICE_MIN_BYTES} (64 KiB; 0: every READ is copied). On TCP over
   * loopback splicing saved CPU but lost throughput (1M reads 2002 MB/s vs
   * 2170), so TCP connections copy unless {@link spliceOverTcp}.
   */
  spliceMinBytes?: number;
  /** Splice READs and WRITEs on TCP connections too (for measuring it). Default false. */
  spliceOverTcp?: boolean;
  /**
   * Plain WRITEs of at least this many bytes on the native data plane's
   * Unix-socket connections have their payload spliced from the socket into
   * the volume file: one copy of the payload instead of two. Default
   * {@link SPLICE_WRITE_MIN_BYTES}; 0 copies every WRITE.
   * Measured (bench/nbd.ts, 1M sequential writes QD8, 3 and 5 alternating
   * rounds): Unix socket 3012–3078 MB/s spliced vs 2926 copied (nbdkit
   * 2321–2343); TCP 3196–3465 spliced vs 3418 copied at 10–13 points less
   * CPU, but below nbdkit (3464–3567) in one run of two: TCP copies unless
   * {@link spliceOverTcp}.
   */
  spliceWriteMinBytes?: number;
  /**
   * Most connections the server holds at once, negotiating ones included.
   * One more is answered NBD_REP_ERR_SHUTDOWN (with a message saying why) to
   * its first option and closed. Default 512.
   */
  maxConnections?: number;
  /**
   * Most connections in their transmission phase per export. One more is
   * refused at NBD_OPT_GO with NBD_REP_ERR_POLICY and a message (closed at
   * NBD_OPT_EXPORT_NAME, which has no error reply). Default 16: QEMU opens
   * one, nbdcopy four.
   */
  maxConnectionsPerExport?: number;
  /**
   * Requests one connection served on the event loop (TLS, other drivers)
   * may have in flight, replies not yet handed to the socket included; at the
   * bound the server stops reading the socket. Default 64. Native threads
   * are bounded by their number instead (each serves one request at a time).
   */
  maxRequestsPerConnection?: number;
  /**
   * Bytes one connection may hold: payloads of writes in flight and data of
   * reads not yet handed to the socket, on either plane. At the bound the
   * server stops reading the socket until replies drain (a single request
   * larger than it still runs, alone). Default 64 MiB: two of the largest
   * reads.
   */
  maxBufferBytesPerConnection?: number;
  /**
   * How long a client may take from connecting to its transmission phase
   * (TLS handshake included) before it is dropped, in ms. Default 10000, as
   * qemu-nbd's handshake limit.
   */
  negotiationTimeoutMs?: number;
  /**
   * Where the writes of exports with a `key` (a volume) are recorded for
   * incremental backups (`changed-blocks.ts`): every WRITE, WRITE_ZEROES and
   * TRIM of either plane sets its blocks before the volume is touched.
   * Default none: nothing is recorded.
   */
  changedBlocks?: ChangedBlockTracker;
}

/** The defaults of the bounds in {@link NbdServerOptions}. */
export const NBD_BOUNDS = {
  maxConnections: 512,
  maxConnectionsPerExport: 16,
  maxRequestsPerConnection: 64,
  maxBufferBytesPerConnection: 64 * 1024 * 1024,
  negotiationTimeoutMs: 10_000,
} as const;

/** Something the server can drop at once: a socket or a native connection. */
/** How long a connection ended for a malformed request may take to deliver the replies queued before it. */
const PROTOCOL_ERROR_LINGER_MS = 5_000;

interface Droppable { destroy(): void }

/**
 * A connection in its transmission phase, as fencing sees it: `fence` drops
 * it and resolves once none of its writes can still reach the volume.
 */
interface Fenceable { fence(): Promise<void> }

/** Thrown to end a connection on a protocol violation. */
class ProtocolError extends Error {}

/** A reply handed to the socket: `flushed` resolves once the socket has taken its bytes. */
interface Sent { flushed: Promise<void> }

/** Thrown when a client did not reach its transmission phase in time. */
class NegotiationTimeout extends Error {}

/** The NBD server. */
export class NbdServer {
  private readonly server: net.Server;
  /** What each volume's export has served, on both data planes (the metrics read it). */
  readonly stats = new NbdStats();
  /** Each exported volume's QoS limiter, shared by its connections on both planes. */
  readonly qos = new QosLimiters();
  /** The Unix domain socket listener ({@link listenUnix}), if any. */
  private unix: net.Server | undefined;
  private unixPath: string | undefined;
  /** Connections in their transmission phase by export name (for fencing). */
  private readonly connections = new Map<string, Set<Fenceable>>();
  /**
   * How many fences have run. A connection reads it before it looks its
   * export up and again once it is bound: when a fence ran in between, the
   * export is looked up again, since the fence may have missed it.
   */
  private fenceCount = 0;
  /** Native connections by key, for quiescing. */
  private readonly natives = new Map<string, Set<DataPlaneConnection>>();
  /** Writes in flight per key, for quiescing. */
  private readonly writes = new Map<string, Set<Promise<void>>>();
  /** Keys whose writes are paused, with the promise that releases them. */
  private readonly gates = new Map<string, Promise<void>>();
  /** Everything open, for close(); native connections with their end. */
  private readonly open = new Set<Droppable>();
  private readonly ending = new Set<Promise<unknown>>();
  /** Connections from accept to their end (native ones included). */
  private clients = 0;
  /** Who holds the server suspended (see {@link suspend}): while any does, no export resolves. */
  private readonly suspenders = new Set<string>();

  constructor(private readonly o: NbdServerOptions) {
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => this.accept(socket, o));
  }

  /** Serves one accepted socket with options `o` (the Unix socket's ask no TLS). */
  private accept(socket: Socket, o: NbdServerOptions): void {
    const maxConnections = o.maxConnections ?? NBD_BOUNDS.maxConnections;
    // Half-open: a client that shuts its sending side down after its last
    // request still gets the answers of the requests in flight, as the
    // native plane gives them (every path ends or destroys the socket itself).
    this.open.add(socket);
    socket.once('close', () => this.open.delete(socket));
    socket.setNoDelay(true); // a no-op on a Unix socket
    const refusal = this.suspended ? 'the volume service cannot reach its database (self-fenced); try again later'
      : this.clients >= maxConnections ? `the server holds its most connections (${maxConnections})` : undefined;
    this.clients++;
    const conn = new Connection(socket, this, o);
    const ended: Promise<void> = (refusal !== undefined ? conn.refuse(refusal) : conn.run())
      .catch((err: unknown) => {
        if (err instanceof NegotiationTimeout) o.log.info({ remote: socket.remoteAddress }, err.message);
        else if (!(err instanceof ConnectionClosed)) o.log.warn({ err }, 'NBD connection ended with an error');
        if (err instanceof ProtocolError && !socket.destroyed) {
          // The replies of the requests before the malformed one are already queued on the
          // socket: end it after them (a reply cut mid-way is garbage to the client), and
          // drop it if the client does not take them in time.
          socket.end();
          setTimeout(() => socket.destroy(), PROTOCOL_ERROR_LINGER_MS).unref();
        } else socket.destroy();
      })
      .finally(() => {
        this.clients--;
        this.ending.delete(ended);
      });
    // close() waits for it: its handle closed and its writes recorded as ended (changed blocks saved clean).
    this.ending.add(ended);
  }

  /** The changed-block tracker of the exports, if writes are recorded. */
  get changedBlocks(): ChangedBlockTracker | undefined {
    return this.o.changedBlocks;
  }

  /** Connections open now, negotiating ones included. */
  get connectionCount(): number {
    return this.clients;
  }

  /** Connections of an export in their transmission phase. */
  exportConnections(name: string): number {
    return this.connections.get(name)?.size ?? 0;
  }

  /** Starts listening; resolves with the bound address. */
  listen(port: number, host: string): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => resolve(this.server.address() as AddressInfo));
    });
  }

  /**
   * Also listens on a Unix domain socket at `path` (a stale socket file there
   * is replaced), accessible to its owner only (`mode`, default 0600), in a
   * folder made private (0700) when it does not exist yet — so no other user
   * can connect before the mode is set: hosts on this machine reach the same
   * exports without TCP, under the same export names, fences and quiesces. No
   * TLS is asked there: the permissions keep other local users out.
   */
  async listenUnix(path: string, mode = 0o600): Promise<void> {
    if (this.unix) throw new Error('the NBD server already listens on a Unix socket');
    fs.mkdirSync(nodePath.dirname(path), { recursive: true, mode: 0o700 });
    fs.rmSync(path, { force: true });
    const unix = net.createServer({ allowHalfOpen: true }, (socket) => this.accept(socket, { ...this.o, requireTls: false }));
    await new Promise<void>((resolve, reject) => {
      unix.once('error', reject);
      unix.listen(path, () => resolve());
    });
    fs.chmodSync(path, mode);
    this.unix = unix;
    this.unixPath = path;
  }

  /** The Unix socket listened on, if any. */
  get socketPath(): string | undefined {
    return this.unixPath;
  }

  /** Closes the listeners and every connection; resolves once every connection has ended and closed its volume handle. */
  async close(): Promise<void> {
    for (const c of this.open) c.destroy();
    await Promise.all([this.server, ...this.unix ? [this.unix] : []].map((l) => new Promise<void>((resolve) => l.close(() => resolve()))));
    if (this.unixPath) fs.rmSync(this.unixPath, { force: true });
    await Promise.allSettled([...this.ending]);
  }

  /**
   * Fences an export (on detach): drops every connection of it at once and
   * resolves once no write of those connections can reach the volume any
   * more — writes not yet started are dropped, writes already in the driver
   * or in a native thread's system call are waited for. A connection still
   * negotiating looks its export up again before its first request. Never
   * rejects.
   */
  async closeExport(name: string): Promise<void> {
    this.fenceCount++;
    const conns = [...this.connections.get(name) ?? []];
    this.connections.delete(name);
    await Promise.allSettled(conns.map((c) => c.fence()));
  }

  /**
   * Fences every export at once and refuses new connections until every
   * holder has called {@link resume}: self-fencing, when this process can no
   * longer prove to its cluster that it is alive (its service heartbeat). Its
   * peers count it dead after `service_down_time` and stop waiting for it to
   * fence anything, so by then it must hold no connection. Resolves, as
   * {@link closeExport} does, once no write of the dropped connections can
   * reach a volume. Idempotent per holder; never rejects.
   */
  async suspend(holder: string): Promise<void> {
    this.suspenders.add(holder);
    this.fenceCount++;
    const conns = [...this.connections.values()].flatMap((set) => [...set]);
    this.connections.clear();
    await Promise.allSettled(conns.map((c) => c.fence()));
  }

  /** Ends `holder`'s suspension; exports resolve again once no holder is left. */
  resume(holder: string): void {
    this.suspenders.delete(holder);
  }

  /** Whether the server is suspended (self-fenced): no export resolves, new connections are refused. */
  get suspended(): boolean {
    return this.suspenders.size > 0;
  }

  /** How many fences have run (see {@link closeExport}). */
  get fences(): number {
    return this.fenceCount;
  }

  /**
   * Runs `fn` while no write reaches the exports of `key` (a volume): new
   * writes wait, writes in flight finish first. A snapshot taken inside is
   * crash-consistent: it holds every acknowledged write and no half of one.
   *
   * Writes in flight that do not finish within {@link NbdServerOptions.quiesceDrainMs}
   * (one stuck in its backend) end the quiesce: what it paused goes on and
   * `fn` does not run, so that neither the volume's writes nor the
   * quiesces queued behind this one wait for good. An `fn` that holds the
   * writes for long is logged, every {@link QUIESCE_SLOW_MS}.
   * @throws BasaltError BACKEND_UNAVAILABLE (retryable) when the writes in flight did not finish.
   */
  async quiesce<T>(key: string, fn: () => Promise<T>): Promise<T> {
    while (this.gates.has(key)) await this.gates.get(key);
    let release!: () => void;
    this.gates.set(key, new Promise<void>((r) => { release = r; }));
    let timer: NodeJS.Timeout | undefined;
    let slow: NodeJS.Timeout | undefined;
    try {
      const drained = Promise.all([
        Promise.allSettled([...(this.writes.get(key) ?? [])]),
        ...[...(this.natives.get(key) ?? [])].map((c) => c.pause()),
      ]);
      const drainMs = this.o.quiesceDrainMs ?? QUIESCE_DRAIN_MS;
      const late = new Promise<'late'>((r) => { timer = setTimeout(() => r('late'), drainMs); });
      if (await Promise.race([drained, late]) === 'late') {
        drained.catch(() => undefined);
        this.o.log.warn({ volume_id: key, ms: drainMs }, 'writes in flight did not finish for a quiesce: it gives up, and the writes go on');
        throw new BasaltError('BACKEND_UNAVAILABLE', `Writes in flight to volume ${key} did not finish within ${drainMs / 1000} s: it could not be quiesced`, { retryable: true });
      }
      clearTimeout(timer);
      const started = Date.now();
      slow = setInterval(() => this.o.log.warn({ volume_id: key, ms: Date.now() - started }, 'a quiesce holds the volume\'s writes: the step under it is slow'), QUIESCE_SLOW_MS);
      return await fn();
    } finally {
      clearTimeout(timer);
      clearInterval(slow);
      this.gates.delete(key);
      // Native connections that started during the quiesce started paused: resume them too.
      for (const c of this.natives.get(key) ?? []) c.resume();
      release();
    }
  }

  /** Waits while `key` is quiesced (called before a write starts). */
  async gate(key: string | undefined): Promise<void> {
    if (key === undefined) return;
    for (let g = this.gates.get(key); g; g = this.gates.get(key)) await g;
  }

  /**
   * Starts `write` once `key` is not quiesced, and counts it among the writes
   * in flight from then on: a write waiting at the gate is not in flight, or
   * the next quiesce of the volume (one right after another) would wait for
   * writes that wait for it. The last look at the gate and the start happen
   * in one step, so no quiesce begins between them.
   */
  async startWrite<T>(key: string | undefined, write: () => Promise<T>): Promise<T> {
    if (key !== undefined) for (let g = this.gates.get(key); g; g = this.gates.get(key)) await g;
    const started = write();
    this.trackWrite(key, started.then(() => undefined, () => undefined));
    return started;
  }

  /** Tracks a write in flight on `key`. */
  trackWrite(key: string | undefined, write: Promise<void>): void {
    if (key === undefined) return;
    let set = this.writes.get(key);
    if (!set) this.writes.set(key, (set = new Set()));
    set.add(write);
    void write.finally(() => set!.delete(write)).catch(() => undefined);
  }

  /** Records a connection's export; returns the function that forgets it. */
  bind(name: string, conn: Fenceable): () => void {
    let set = this.connections.get(name);
    if (!set) this.connections.set(name, (set = new Set()));
    set.add(conn);
    return () => {
      set!.delete(conn);
      if (set!.size === 0 && this.connections.get(name) === set) this.connections.delete(name);
    };
  }

  /**
   * Serves a negotiated connection from native threads (see
   * {@link DataPlaneConnection.take}); resolves once it has ended. Started
   * paused when its key is being quiesced. Undefined when the socket cannot
   * be handed over.
   */
  serveNatively(exp: NbdExport, take: (paused: boolean) => DataPlaneConnection | undefined): Promise<unknown> | undefined {
    const conn = take(exp.key !== undefined && this.gates.has(exp.key));
    if (!conn) return undefined;
    const counters = (): number[] => conn.stats();
    if (exp.key !== undefined) this.stats.watch(exp.key, counters);
    const forget = this.bind(exp.name, { fence: () => conn.fence() });
    this.open.add(conn);
    let byKey: Set<DataPlaneConnection> | undefined;
    if (exp.key !== undefined) {
      byKey = this.natives.get(exp.key);
      if (!byKey) this.natives.set(exp.key, (byKey = new Set()));
      byKey.add(conn);
    }
    const ended = conn.closed.then((reason) => {
      this.stats.retire(counters);
      forget();
      this.open.delete(conn);
      byKey?.delete(conn);
      if (byKey?.size === 0 && this.natives.get(exp.key!) === byKey) this.natives.delete(exp.key!);
      this.ending.delete(ended);
      return reason;
    });
    this.ending.add(ended);
    return ended;
  }
}

/** One client connection: negotiation, then transmission. */
class Connection implements Fenceable {
  private reader: SocketReader;
  /** The PSK identity of an upgraded connection, else undefined. */
  private tlsIdentity: string | undefined;
  private structured = false;
  /** Export name the meta context was set for, if any. */
  private metaFor: string | undefined;
  private noZeroes = false;

  /** Whether replies written this tick are being held for one writev. */
  private corked = false;

  /** Set by {@link fence}: no write starts any more. */
  private fenced = false;
  /** Resolves at the fence: writes held at a quiesce's gate stop waiting then (and are dropped). */
  private readonly whenFenced: Promise<void>;
  private readonly onFence: () => void;
  /** The server's fence count when the export was last looked up. */
  private fencesAtFind = 0;
  /** Writes (WRITE, TRIM, WRITE_ZEROES) between their request and their end, gated ones included. */
  private readonly writes = new Set<Promise<void>>();
  /** Resolves once the transmission phase has ended and the volume handle is closed. */
  private transmitted: Promise<void> = Promise.resolve();
  /** Where this connection's writes are recorded (a writable export of a volume, with a tracker). */
  private changes: ChangeWriter | undefined;

  constructor(private socket: Socket, private readonly server: NbdServer, private readonly o: NbdServerOptions) {
    this.reader = new SocketReader(socket);
    let onFence!: () => void;
    this.whenFenced = new Promise<void>((resolve) => { onFence = resolve; });
    this.onFence = onFence;
  }

  /**
   * Queues reply bytes; resolves once the socket has taken them (written to
   * the kernel, or the connection is gone), which is when their memory stops
   * counting against the connection's bound. Replies finished in the same
   * tick leave in one writev (cork until the next tick): at queue depth 32
   * this saves most system calls of the reply path.
   */
  private send(...buffers: Buffer[]): Promise<void> {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    const last = buffers.length - 1;
    for (let i = 0; i < last; i++) this.socket.write(buffers[i]!);
    return new Promise((resolve) => { this.socket.write(buffers[last]!, () => resolve()); });
  }

  /**
   * Answers a connection over the server's bound: NBD_REP_ERR_SHUTDOWN with
   * the reason to its first option (an ACK to NBD_OPT_ABORT), then closes.
   */
  async refuse(reason: string): Promise<void> {
    const timer = setTimeout(() => this.socket.destroy(), this.o.negotiationTimeoutMs ?? NBD_BOUNDS.negotiationTimeoutMs);
    try {
      this.hello();
      await this.reader.read(4);
      const head = await this.reader.read(16);
      const option = head.readUInt32BE(8);
      this.reply(option, option === OPT.ABORT ? REP.ACK : REP.ERR_SHUTDOWN, option === OPT.ABORT ? undefined : Buffer.from(`Refused: ${reason}`));
      this.socket.end();
    } finally {
      clearTimeout(timer);
    }
  }

  private hello(): void {
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(NBD_MAGIC, 0);
    hello.writeBigUInt64BE(IHAVEOPT, 8);
    hello.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
    this.socket.write(hello);
  }

  async run(): Promise<void> {
    // A client that never finishes negotiating would hold its socket (and a
    // place under maxConnections) for ever: drop it after the timeout.
    let timedOut = false;
    const timeoutMs = this.o.negotiationTimeoutMs ?? NBD_BOUNDS.negotiationTimeoutMs;
    const timer = setTimeout(() => { timedOut = true; this.socket.destroy(); }, timeoutMs);
    let chosen: NbdExport | undefined;
    try {
      this.hello();
      const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
      if ((clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) throw new ProtocolError('unknown client flags');
      this.noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;
      chosen = await this.negotiate();
    } catch (err) {
      if (timedOut) throw new NegotiationTimeout(`NBD negotiation did not finish within ${timeoutMs} ms`);
      throw err;
    } finally {
      clearTimeout(timer);
    }
    if (chosen) await this.transmit(chosen);
  }

  /** Whether the export has room for one more connection (see maxConnectionsPerExport). */
  private hasRoom(exp: NbdExport): boolean {
    return this.server.exportConnections(exp.name) < (this.o.maxConnectionsPerExport ?? NBD_BOUNDS.maxConnectionsPerExport);
  }

  private reply(option: number, type: number, data: Buffer = Buffer.alloc(0)): void {
    if (this.socket.destroyed) return;
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(type, 12);
    h.writeUInt32BE(data.length, 16);
    this.socket.write(data.length ? Buffer.concat([h, data]) : h);
  }

  /** Option haggling; returns the export to serve, or undefined when the client aborted. */
  private async negotiate(): Promise<NbdExport | undefined> {
    for (;;) {
      const head = await this.reader.read(16);
      if (head.readBigUInt64BE(0) !== IHAVEOPT) throw new ProtocolError('bad option magic');
      const option = head.readUInt32BE(8);
      const length = head.readUInt32BE(12);
      if (length > MAX_OPTION_LENGTH) throw new ProtocolError(`option of ${length} bytes`);
      const data = await this.reader.read(length);
      if (this.o.requireTls && this.tlsIdentity === undefined && option !== OPT.STARTTLS && option !== OPT.ABORT) {
        if (option === OPT.EXPORT_NAME) throw new ProtocolError('TLS required');
        this.reply(option, REP.ERR_TLS_REQD);
        continue;
      }
      switch (option) {
        case OPT.STARTTLS: {
          if (length !== 0) { this.reply(option, REP.ERR_INVALID); break; }
          if (this.tlsIdentity !== undefined) { this.reply(option, REP.ERR_INVALID); break; }
          if (!this.o.provider.refreshKeys || !this.o.provider.pskKey) { this.reply(option, REP.ERR_POLICY); break; }
          await this.o.provider.refreshKeys();
          this.reply(option, REP.ACK);
          await this.startTls();
          break;
        }
        case OPT.EXPORT_NAME: {
          const exp = await this.find(data.toString('utf8'));
          if (!exp) throw new ProtocolError('unknown export'); // the protocol allows no error reply here
          if (!this.hasRoom(exp)) throw new ProtocolError('too many connections to the export');
          const out = Buffer.alloc(this.noZeroes ? 10 : 134);
          out.writeBigUInt64BE(BigInt((await this.sizeOf(exp))), 0);
          out.writeUInt16BE(this.flags(exp), 8);
          this.socket.write(out);
          return exp;
        }
        case OPT.ABORT:
          this.reply(option, REP.ACK);
          this.socket.end();
          return undefined;
        case OPT.LIST: {
          if (length !== 0) { this.reply(option, REP.ERR_INVALID); break; }
          for (const name of await this.o.provider.list()) {
            const n = Buffer.from(name, 'utf8');
            const d = Buffer.alloc(4 + n.length);
            d.writeUInt32BE(n.length, 0);
            n.copy(d, 4);
            this.reply(option, REP.SERVER, d);
          }
          this.reply(option, REP.ACK);
          break;
        }
        case OPT.INFO:
        case OPT.GO: {
          const parsed = parseInfoRequest(data);
          if (!parsed) { this.reply(option, REP.ERR_INVALID); break; }
          const exp = await this.find(parsed.name);
          if (!exp) { this.reply(option, REP.ERR_UNKNOWN); break; }
          if (option === OPT.GO && !this.hasRoom(exp)) {
            const most = this.o.maxConnectionsPerExport ?? NBD_BOUNDS.maxConnectionsPerExport;
            this.reply(option, REP.ERR_POLICY, Buffer.from(`Refused: the export has its most connections (${most})`));
            break;
          }
          const size = await this.sizeOf(exp);
          const info = Buffer.alloc(12);
          info.writeUInt16BE(INFO.EXPORT, 0);
          info.writeBigUInt64BE(BigInt(size), 2);
          info.writeUInt16BE(this.flags(exp), 10);
          this.reply(option, REP.INFO, info);
          const block = Buffer.alloc(14);
          block.writeUInt16BE(INFO.BLOCK_SIZE, 0);
          block.writeUInt32BE(MIN_BLOCK, 2);
          block.writeUInt32BE(PREFERRED_BLOCK, 6);
          block.writeUInt32BE(MAX_PAYLOAD, 10);
          this.reply(option, REP.INFO, block);
          if (parsed.infos.includes(INFO.NAME)) this.reply(option, REP.INFO, infoString(INFO.NAME, exp.name));
          if (parsed.infos.includes(INFO.DESCRIPTION) && exp.description) this.reply(option, REP.INFO, infoString(INFO.DESCRIPTION, exp.description));
          this.reply(option, REP.ACK);
          if (option === OPT.GO) return exp;
          break;
        }
        case OPT.STRUCTURED_REPLY:
          if (length !== 0) { this.reply(option, REP.ERR_INVALID); break; }
          this.structured = true;
          this.reply(option, REP.ACK);
          break;
        case OPT.LIST_META_CONTEXT:
        case OPT.SET_META_CONTEXT: {
          if (option === OPT.SET_META_CONTEXT) this.metaFor = undefined; // replaced even on failure
          if (!this.structured) { this.reply(option, REP.ERR_INVALID); break; }
          const parsed = parseMetaRequest(data);
          if (!parsed) { this.reply(option, REP.ERR_INVALID); break; }
          if (!(await this.find(parsed.name))) { this.reply(option, REP.ERR_UNKNOWN); break; }
          const listing = option === OPT.LIST_META_CONTEXT;
          const wanted = parsed.queries.some((q) => q === BASE_ALLOCATION || (listing && q === 'base:')) || (listing && parsed.queries.length === 0);
          if (wanted) {
            const n = Buffer.from(BASE_ALLOCATION);
            const d = Buffer.alloc(4 + n.length);
            d.writeUInt32BE(listing ? 0 : BASE_ALLOCATION_ID, 0);
            n.copy(d, 4);
            this.reply(option, REP.META_CONTEXT, d);
            if (!listing) this.metaFor = parsed.name;
          }
          this.reply(option, REP.ACK);
          break;
        }
        default:
          this.reply(option, REP.ERR_UNSUP);
      }
    }
  }

  /**
   * The export, if this connection may open it: over TLS only with the
   * export's own PSK identity (one attachment's key opens no other export).
   */
  private async find(name: string): Promise<NbdExport | undefined> {
    this.fencesAtFind = this.server.fences;
    // A suspension counts as a fence: one that begins during the look-up makes the connection look again.
    if (this.server.suspended) return undefined;
    const exp = await this.o.provider.find(name);
    if (this.server.suspended) return undefined;
    if (!exp) return undefined;
    if (this.tlsIdentity !== undefined && exp.pskIdentity !== this.tlsIdentity) return undefined;
    if (this.o.requireTls && this.tlsIdentity === undefined) return undefined;
    return exp;
  }

  /** Upgrades the connection to TLS-PSK; negotiation state starts afresh, as the protocol requires. */
  private async startTls(): Promise<void> {
    const raw = this.socket;
    raw.removeAllListeners('data');
    let identity: string | undefined;
    // pskCallback works on a server TLSSocket, though Node 20's types list it only for tls.createServer.
    const options = {
      isServer: true,
      ciphers: PSK_CIPHERS,
      maxVersion: 'TLSv1.2',
      pskCallback: (_socket: tls.TLSSocket, id: string): Buffer | null => {
        const key = this.o.provider.pskKey!(id);
        if (key) identity = id;
        return key ?? null;
      },
    } as tls.TLSSocketOptions;
    const secure = new tls.TLSSocket(raw, options);
    await new Promise<void>((resolve, reject) => {
      secure.once('secure', resolve);
      secure.once('error', reject);
      secure.once('close', () => reject(new ConnectionClosed()));
    });
    this.socket = secure;
    this.reader = new SocketReader(secure);
    this.tlsIdentity = identity;
    this.structured = false;
    this.metaFor = undefined;
  }

  private async sizeOf(exp: NbdExport): Promise<number> {
    const h = await exp.open();
    try {
      return h.sizeBytes;
    } finally {
      await h.close();
    }
  }

  private flags(exp: NbdExport): number {
    let f = TF.HAS_FLAGS | TF.SEND_FLUSH | TF.SEND_FUA | TF.SEND_CACHE;
    if (exp.canMultiConn === true) f |= TF.CAN_MULTI_CONN;
    if (exp.readOnly) f |= TF.READ_ONLY;
    else f |= TF.SEND_TRIM | TF.SEND_WRITE_ZEROES | TF.SEND_FAST_ZERO;
    return f;
  }

  /**
   * Drops the connection; resolves once none of its writes can reach the
   * volume: writes still gated or queued behind the socket are dropped (they
   * check {@link fenced} before they start), started ones are waited for.
   */
  async fence(): Promise<void> {
    this.fenced = true;
    this.onFence();
    this.socket.destroy();
    await Promise.allSettled([...this.writes]);
    // And the handle closed: a write the driver guard gave up on (its
    // timeout) may still run in the driver, and closing waits for it.
    await this.transmitted;
  }

  /** The transmission phase: requests are served concurrently, replies go out as each completes. */
  private async transmit(exp: NbdExport): Promise<void> {
    // Bound for as long as this runs (a client gone before a 'close' listener
    // could be added must not stay counted against the export's bound).
    const unbind = this.server.bind(exp.name, this);
    let done!: () => void;
    this.transmitted = new Promise<void>((resolve) => { done = resolve; });
    try {
      await this.transmitBound(exp, unbind);
    } finally {
      unbind();
      done();
    }
  }

  private async transmitBound(exp: NbdExport, unbind: () => void): Promise<void> {
    // A fence that ran while the export was being looked up may have missed
    // this connection: look again, now that the next fence will find it.
    if (this.server.fences !== this.fencesAtFind && !(await this.find(exp.name))) this.fenced = true;
    if (this.fenced) {
      this.socket.destroy();
      return;
    }
    const handle = await exp.open();
    if (this.fenced) return handle.close();
    const tracker = this.o.changedBlocks;
    if (tracker && !exp.readOnly && exp.key !== undefined) {
      try {
        // Before the first write is served: the volume's file says writers are open.
        this.changes = await tracker.writer(exp.key, handle.sizeBytes);
      } catch (err) {
        await handle.close();
        throw err;
      }
    }
    try {
      await this.serveOpened(exp, handle, unbind);
    } finally {
      // The handle is closed by now: no write of this connection can land any more.
      this.changes?.close();
    }
  }

  private async serveOpened(exp: NbdExport, handle: VolumeHandle, unbind: () => void): Promise<void> {
    const native = this.o.dataPlane !== 'event-loop' && !(this.socket instanceof tls.TLSSocket);
    // A synchronous mirror's handle has no fd of its own: it may lend the threads its file and channels to the copy.
    const mirror = native ? await (handle as MirroredHandle).dataPlaneMirror?.() : undefined;
    const source: DataPlaneSource | undefined = mirror ? { file: mirror.file, mirror }
      : handle.fd !== undefined ? { file: handle.fd } : handle.dataPlaneBackend ? { backend: handle.dataPlaneBackend } : undefined;
    if (source && native) {
      try {
        if (await this.handOff(exp, handle, source, unbind)) return;
      } finally {
        mirror?.close();
      }
    }
    // Requests served (the driver's work done) but maybe not yet answered.
    const inflight = new Set<Promise<void>>();
    const writes = this.writes;
    // The bounds: requests until their reply is handed to the socket, and the
    // bytes they hold meanwhile (a write's payload, a read's data). At either
    // bound the loop stops reading requests, and the reader stops reading the
    // socket: the client's own TCP window then holds what it sends.
    const maxRequests = this.o.maxRequestsPerConnection ?? NBD_BOUNDS.maxRequestsPerConnection;
    const maxBytes = this.o.maxBufferBytesPerConnection ?? NBD_BOUNDS.maxBufferBytesPerConnection;
    const unanswered = new Set<Promise<void>>();
    let heldBytes = 0;
    let wake: (() => void) | undefined;
    const limiter = exp.key !== undefined ? this.server.qos.for(exp.key, exp.qos) : undefined;
    try {
      for (;;) {
        let h: Buffer;
        try {
          h = await this.reader.read(28);
        } catch (err) {
          // The client sent its last request: answer those in flight, then close.
          if (err instanceof ConnectionClosed && !this.socket.destroyed && !this.fenced) {
            await Promise.allSettled([...inflight]);
            this.socket.end();
            return;
          }
          throw err;
        }
        if (this.fenced) break;
        if (h.readUInt32BE(0) !== REQUEST_MAGIC) throw new ProtocolError('bad request magic');
        const flags = h.readUInt16BE(4);
        const type = h.readUInt16BE(6);
        const cookie = h.subarray(8, 16);
        const offset = Number(h.readBigUInt64BE(16));
        const length = h.readUInt32BE(24);
        if (type === CMD.WRITE && length > MAX_PAYLOAD) {
          // Too large to buffer: the stream cannot be resynchronised cheaply, so end it.
          throw new ProtocolError(`write of ${length} bytes`);
        }
        if (type === CMD.DISC) break;
        const cost = type === CMD.WRITE || (type === CMD.READ && length <= MAX_PAYLOAD) ? length : 0;
        // One request alone always runs, however large: the bound cannot starve it.
        while (unanswered.size >= maxRequests || (unanswered.size > 0 && heldBytes + cost > maxBytes)) {
          await new Promise<void>((resolve) => { wake = resolve; });
        }
        if (this.fenced) break;
        heldBytes += cost;
        const payload = type === CMD.WRITE ? await this.reader.read(length) : undefined;
        const isWrite = type === CMD.WRITE || type === CMD.WRITE_ZEROES || type === CMD.TRIM;
        const started = performance.now();
        const run = (): Promise<Sent | undefined> => (isWrite
          ? Promise.race([this.server.gate(exp.key), this.whenFenced]).then(() => (this.fenced
            ? this.command(handle, exp, type, flags, cookie, offset, length, payload, writes)
            : this.server.startWrite(exp.key, () => this.command(handle, exp, type, flags, cookie, offset, length, payload, writes))))
          : this.command(handle, exp, type, flags, cookie, offset, length, payload, writes));
        // Over the volume's QoS limits: the request waits its turn (the others read meanwhile are not held up).
        const wait = limiter && (isWrite || type === CMD.READ) ? limiter.admit(isWrite, type === CMD.READ || type === CMD.WRITE ? length : 0) : 0;
        const work = wait > 0 ? new Promise<void>((resolve) => setTimeout(resolve, wait)).then(run) : run();
        // Done for the connection (fencing and FLUSH wait for this; a quiesce waits only from the gate on, see startWrite) ...
        const tracked: Promise<void> = work.then(() => undefined, () => undefined).finally(() => { inflight.delete(tracked); writes.delete(tracked); });
        inflight.add(tracked);
        if (isWrite) writes.add(tracked);
        // ... and answered (the bounds wait for this).
        const answered: Promise<void> = work.then((sent) => sent?.flushed, () => undefined).finally(() => {
          if (exp.key !== undefined) this.server.stats.record(exp.key, opOf(type), type === CMD.READ || type === CMD.WRITE ? length : 0, (performance.now() - started) / 1000);
          unanswered.delete(answered);
          heldBytes -= cost;
          const w = wake;
          wake = undefined;
          w?.();
        });
        unanswered.add(answered);
      }
      await Promise.allSettled([...inflight]);
      // The client said goodbye; a flush failure cannot be reported to it any
      // more, but an operator must hear that acknowledged writes may not be durable.
      await handle.flush().catch((err: unknown) => {
        this.o.log.warn({ err, export: exp.name }, 'NBD flush on disconnect failed');
      });
      this.socket.end();
    } finally {
      await Promise.allSettled([...inflight]);
      await handle.close();
    }
  }

  /**
   * Serves the rest of the connection from native threads and waits for its
   * end; false (nothing changed) when the socket cannot be handed over.
   * @throws ProtocolError when the client sent a malformed request.
   */
  private async handOff(exp: NbdExport, handle: VolumeHandle, source: DataPlaneSource, unbind: () => void): Promise<boolean> {
    const socket = this.socket;
    // The negotiation's replies must be on the wire before the threads write theirs.
    await new Promise<void>((resolve) => socket.write(Buffer.alloc(0), () => resolve()));
    const limiter = exp.key !== undefined ? this.server.qos.for(exp.key, exp.qos) : undefined;
    const ended = socket.destroyed || this.fenced ? Promise.resolve('fenced') : this.server.serveNatively(exp, (paused) => DataPlaneConnection.take(socket, source, () => this.reader.detach(), {
      sizeBytes: handle.sizeBytes,
      readOnly: exp.readOnly,
      structured: this.structured,
      metaContextId: this.structured && this.metaFor === exp.name ? BASE_ALLOCATION_ID : 0,
      threads: this.o.threadsPerConnection ?? 8,
      pollMicros: exp.pollMicros ?? this.o.pollMicros ?? 50,
      // A Unix socket's connection has no remote address.
      spliceMinBytes: socket.remoteAddress === undefined || this.o.spliceOverTcp ? this.o.spliceMinBytes ?? SPLICE_MIN_BYTES : 0,
      spliceWriteMinBytes: socket.remoteAddress === undefined || this.o.spliceOverTcp ? this.o.spliceWriteMinBytes ?? SPLICE_WRITE_MIN_BYTES : 0,
      ...(limiter ? { qosTat: limiter.tat, qosParams: limiter.params, qosSizeIops: limiter.limits.sizeIops } : {}),
      maxBufferBytes: this.o.maxBufferBytesPerConnection ?? NBD_BOUNDS.maxBufferBytesPerConnection,
      maxRequests: this.o.maxRequestsPerConnection ?? NBD_BOUNDS.maxRequestsPerConnection,
      paused,
      ...(this.changes ? { changedBits: this.changes.bits, changedBlockShift: this.changes.blockShift } : {}),
    }));
    if (!ended) return false;
    unbind(); // the native connection is bound in its place
    let reason: unknown;
    try {
      reason = await ended;
    } finally {
      await handle.close();
    }
    if (reason === 'protocol') throw new ProtocolError('malformed request');
    return true;
  }

  /** Serves one request; resolves once the volume's work is done, with its reply's hand-over (undefined when dropped). */
  private async command(
    handle: VolumeHandle, exp: NbdExport, type: number, flags: number, cookie: Buffer,
    offset: number, length: number, payload: Buffer | undefined, writes: Set<Promise<void>>,
  ): Promise<Sent | undefined> {
    const size = handle.sizeBytes;
    const outside = offset + length > size || !Number.isSafeInteger(offset + length);
    const isWrite = type === CMD.WRITE || type === CMD.TRIM || type === CMD.WRITE_ZEROES;
    // Past the size this connection was given (a volume extended since then is larger for new connections only).
    const beyond = (code: number): Sent => this.error(cookie, type, code, pastTheEnd(size));
    // Fenced while it waited at the gate or behind the socket: dropped unanswered.
    if (isWrite && this.fenced) return;
    try {
      if (isWrite && exp.readOnly) return this.error(cookie, type, ERR.EPERM);
      switch (type) {
        case CMD.READ: {
          if (outside) return beyond(ERR.EINVAL);
          if (length > MAX_PAYLOAD) return this.error(cookie, type, ERR.EINVAL);
          const data = await handle.read(offset, length);
          return this.readReply(cookie, offset, data);
        }
        case CMD.WRITE:
          if (outside) return beyond(ERR.ENOSPC);
          this.changes?.mark(offset, length);
          await handle.write(offset, payload!);
          if (flags & CMD_FLAG.FUA) await handle.flush();
          return this.ok(cookie);
        case CMD.FLUSH:
          // Flush covers every write completed before it: wait for those in flight.
          await Promise.allSettled([...writes]);
          await handle.flush();
          return this.ok(cookie);
        case CMD.TRIM:
          if (outside) return beyond(ERR.EINVAL);
          this.changes?.mark(offset, length);
          await handle.trim!(offset, length);
          if (flags & CMD_FLAG.FUA) await handle.flush();
          return this.ok(cookie);
        case CMD.WRITE_ZEROES:
          if (outside) return beyond(ERR.ENOSPC);
          this.changes?.mark(offset, length);
          await handle.writeZeroes!(offset, length, (flags & CMD_FLAG.NO_HOLE) === 0);
          if (flags & CMD_FLAG.FUA) await handle.flush();
          return this.ok(cookie);
        case CMD.CACHE:
          if (outside) return beyond(ERR.EINVAL);
          return this.ok(cookie);
        case CMD.BLOCK_STATUS: {
          if (outside) return beyond(ERR.EINVAL);
          if (length === 0) return this.error(cookie, type, ERR.EINVAL);
          if (!this.structured || this.metaFor !== exp.name) return this.error(cookie, type, ERR.EINVAL);
          const extents = await handle.blockStatus!(offset, length);
          return this.blockStatusReply(cookie, extents, (flags & CMD_FLAG.REQ_ONE) !== 0);
        }
        default:
          return this.error(cookie, type, ERR.EINVAL);
      }
    } catch (err) {
      this.o.log.warn({ err, export: exp.name, type }, 'NBD command failed');
      return this.error(cookie, type, nbdErrorOf(err));
    }
  }

  private ok(cookie: Buffer): Sent {
    const r = Buffer.alloc(16);
    r.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    r.writeUInt32BE(0, 4);
    cookie.copy(r, 8);
    return { flushed: this.send(r) };
  }

  /**
   * An error: structured for READ and BLOCK_STATUS once negotiated, and for
   * any request when there is a `message` for a human (the protocol prefers
   * structured errors for that reason); simple otherwise.
   */
  private error(cookie: Buffer, type: number, code: number, message?: string): Sent {
    if (this.structured && (message !== undefined || type === CMD.READ || type === CMD.BLOCK_STATUS)) {
      const text = Buffer.from(message ?? '');
      const b = Buffer.alloc(6);
      b.writeUInt32BE(code, 0);
      b.writeUInt16BE(text.length, 4);
      return this.chunk(cookie, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, b, text.length > 0 ? text : undefined);
    }
    const r = Buffer.alloc(16);
    r.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
    r.writeUInt32BE(code, 4);
    cookie.copy(r, 8);
    return { flushed: this.send(r) };
  }

  private chunk(cookie: Buffer, flags: number, type: number, payload: Buffer, extra?: Buffer): Sent {
    const h = Buffer.alloc(20);
    h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    cookie.copy(h, 8);
    h.writeUInt32BE(payload.length + (extra?.length ?? 0), 16);
    // Header and payload are queued together: replies never interleave.
    return { flushed: extra ? this.send(h, payload, extra) : this.send(h, payload) };
  }

  private readReply(cookie: Buffer, offset: number, data: Buffer): Sent {
    if (!this.structured) {
      const r = Buffer.alloc(16);
      r.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
      cookie.copy(r, 8);
      return { flushed: data.length ? this.send(r, data) : this.send(r) };
    }
    const off = Buffer.alloc(8);
    off.writeBigUInt64BE(BigInt(offset), 0);
    return this.chunk(cookie, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, off, data);
  }

  private blockStatusReply(cookie: Buffer, extents: Array<{ length: number; hole: boolean; zero: boolean }>, one: boolean): Sent {
    const list = (one ? extents.slice(0, 1) : extents.slice(0, MAX_EXTENTS)).filter((e) => e.length > 0);
    const b = Buffer.alloc(4 + 8 * list.length);
    b.writeUInt32BE(BASE_ALLOCATION_ID, 0);
    list.forEach((e, i) => {
      b.writeUInt32BE(Math.min(e.length, 0xffffffff), 4 + 8 * i);
      b.writeUInt32BE((e.hole ? STATE_HOLE : 0) | (e.zero ? STATE_ZERO : 0), 8 + 8 * i);
    });
    return this.chunk(cookie, REPLY_FLAG_DONE, REPLY_TYPE.BLOCK_STATUS, b);
  }
}

/** Parses NBD_OPT_INFO/GO data; undefined when malformed. */
function parseInfoRequest(d: Buffer): { name: string; infos: number[] } | undefined {
  if (d.length < 6) return undefined;
  const nameLen = d.readUInt32BE(0);
  if (nameLen > d.length - 6) return undefined;
  const name = d.subarray(4, 4 + nameLen).toString('utf8');
  const n = d.readUInt16BE(4 + nameLen);
  if (d.length !== 6 + nameLen + 2 * n) return undefined;
  const infos: number[] = [];
  for (let i = 0; i < n; i++) infos.push(d.readUInt16BE(6 + nameLen + 2 * i));
  return { name, infos };
}

/** Parses NBD_OPT_{LIST,SET}_META_CONTEXT data; undefined when malformed. */
function parseMetaRequest(d: Buffer): { name: string; queries: string[] } | undefined {
  if (d.length < 8) return undefined;
  const nameLen = d.readUInt32BE(0);
  if (nameLen > d.length - 8) return undefined;
  const name = d.subarray(4, 4 + nameLen).toString('utf8');
  let pos = 4 + nameLen;
  const count = d.readUInt32BE(pos);
  pos += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (pos + 4 > d.length) return undefined;
    const len = d.readUInt32BE(pos);
    pos += 4;
    if (pos + len > d.length) return undefined;
    queries.push(d.subarray(pos, pos + len).toString('utf8'));
    pos += len;
  }
  return pos === d.length ? { name, queries } : undefined;
}

function infoString(type: number, text: string): Buffer {
  const s = Buffer.from(text, 'utf8');
  const b = Buffer.alloc(2 + s.length);
  b.writeUInt16BE(type, 0);
  s.copy(b, 2);
  return b;
}

/**
 * The message of a request past the end of a connection's export: the size
 * is the one the connection negotiated, fixed for its life; an online extend
 * shows only to new negotiations (docs/online-extend.md). The native data
 * plane sends the same words (`beyond_reply` in native/nbd_dataplane.c; the
 * online-extend test holds both to this text).
 */
export function pastTheEnd(sizeBytes: number): string {
  return `Request past the end of the export (${sizeBytes} bytes when this connection was negotiated). If the volume was extended, connect again to see its new size.`;
}
