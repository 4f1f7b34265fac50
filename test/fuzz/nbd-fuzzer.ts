/**
 * The NBD fuzzer (issue 13, "Fuzzing in the suite"): fast-check generates
 * malformed handshakes, malformed and out-of-range requests (offsets past the
 * end and wrapping past 2^64, huge lengths, unknown commands and flags,
 * requests after NBD_CMD_DISC), clients that send byte by byte or never read
 * their replies, and bursts of connections, against one server on one plane.
 *
 * Invariants, checked after every case:
 * - the server is alive and serves a well-behaved client;
 * - every reply names a request of its connection, once, and none answers a
 *   request sent after NBD_CMD_DISC; every request before the client's end
 *   (or DISC) is answered unless the stream broke; a request outside the
 *   volume never succeeds, an unknown command never succeeds;
 * - nothing outside the ranges the case's in-range writes named changes: the
 *   two windows writes may touch are compared byte for byte, the rest of the
 *   volume reads as zeros, and the file keeps its size;
 * - the process's memory stays within the configured bounds (the
 *   per-connection bound times the connections a case holds at once), with
 *   slack;
 * - every connection is gone shortly after its client.
 *
 * `test/fuzz/nbd-fuzz.test.ts` runs it with a fixed seed; `bench/fuzz-nbd.ts` longer.
 */
import fs from 'node:fs';
import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { dataExtentsOf } from '../../src/drivers/file/native-io.ts';
import { startNbd, type NbdFixture, type Plane } from '../helpers/nbd-export.ts';
import { ByteReader, optionFrame, requestFrame } from '../helpers/nbd-raw.ts';
import net2 from 'node:net';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
/** The volume's size. */
const SIZE = GiB;
/** In-range writes stay in the first and the last WINDOW bytes: the middle must stay a hole. */
const WINDOW = 4 * MiB;
/** Largest payload the fuzzer sends with a WRITE it expects the server to read. */
const MAX_SENT_PAYLOAD = 128 * KiB;
const MAX_PAYLOAD = 32 * MiB;
/** The per-connection bound the fuzzer configures on the event loop and TLS. */
export const FUZZ_BUFFER_BYTES = 16 * MiB;
/** Native threads per connection in the fuzzer's server. */
const THREADS = 4;

const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;

/** One generated request. */
interface FuzzRequest { type: number; flags: number; offset: bigint; length: number; magic?: number }
/** How a client's bytes reach the server. */
type Delivery = { kind: 'whole' } | { kind: 'bytewise'; prefix: number } | { kind: 'chunks'; sizes: number[] };
/** One generated case. */
type FuzzCase =
  | { kind: 'requests'; requests: FuzzRequest[]; delivery: Delivery; readsReplies: boolean }
  | { kind: 'handshake'; clientFlags: number; options: Buffer[]; delivery: Delivery; tls: boolean }
  | { kind: 'burst'; clients: Array<{ bytes: number; abrupt: boolean }> };

/** What a run counted. */
export interface NbdFuzzStats {
  cases: number;
  byKind: Record<string, number>;
  requests: number;
  /** Replies by NBD error value (0: success). */
  replies: Record<number, number>;
  /** Connections the server ended before the client did (protocol errors, huge writes). */
  endedByServer: number;
  connections: number;
  /** Highest buffer memory (arrayBuffers) over the start seen after a case, and RSS. */
  bufferHighWaterBytes: number;
  rssHighWaterBytes: number;
}

const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const u32 = fc.integer({ min: 0, max: 0xffffffff });

/** Offsets and lengths: in the windows, straddling or past the end, wrapping, or anything. */
const range = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.integer({ min: 0, max: WINDOW - 1 }), fc.integer({ min: 0, max: 256 * KiB })).map(([o, l]) => ({ offset: BigInt(o), length: Math.min(l, WINDOW - o) })) },
  { weight: 4, arbitrary: fc.tuple(fc.integer({ min: 0, max: WINDOW }), fc.integer({ min: 0, max: 256 * KiB })).map(([back, l]) => ({ offset: BigInt(SIZE - back), length: Math.min(l, back) })) },
  { weight: 2, arbitrary: fc.tuple(fc.integer({ min: 0, max: 64 * KiB }), fc.integer({ min: 1, max: 128 * KiB })).map(([back, extra]) => ({ offset: BigInt(SIZE - back), length: back + extra })) },
  { weight: 2, arbitrary: fc.tuple(fc.bigInt({ min: BigInt(SIZE), max: BigInt(SIZE) + 2n ** 40n }), fc.integer({ min: 0, max: 64 * KiB })).map(([offset, length]) => ({ offset, length })) },
  { weight: 2, arbitrary: fc.tuple(fc.bigInt({ min: 1n, max: 2n ** 20n }), fc.integer({ min: 1, max: 4 * MiB })).map(([back, length]) => ({ offset: 2n ** 64n - back, length })) },
  { weight: 1, arbitrary: fc.tuple(fc.bigInt({ min: 2n ** 53n - 4096n, max: 2n ** 53n + 4096n }), fc.integer({ min: 0, max: 8192 })).map(([offset, length]) => ({ offset, length })) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 0, max: WINDOW }), fc.integer({ min: MAX_PAYLOAD + 1, max: 0xffffffff })).map(([o, length]) => ({ offset: BigInt(o), length })) },
  { weight: 1, arbitrary: fc.tuple(u64, u32).map(([offset, length]) => ({ offset, length })) },
);

const request: fc.Arbitrary<FuzzRequest> = fc.record({
  type: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(0, 1, 1, 3, 4, 5, 6, 7) }, { weight: 1, arbitrary: fc.constant(2) }, { weight: 1, arbitrary: fc.integer({ min: 8, max: 0xffff }) }),
  flags: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 3, arbitrary: fc.constantFrom(1, 2, 4, 8, 16, 3, 17) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) }),
  range,
  badMagic: fc.oneof({ weight: 40, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) }),
}).map(({ type, flags, range: r, badMagic }) => ({ type, flags, offset: r.offset, length: r.length, ...(badMagic !== undefined ? { magic: badMagic } : {}) }));

const delivery: fc.Arbitrary<Delivery> = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ kind: 'whole' as const }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 400 }).map((prefix) => ({ kind: 'bytewise' as const, prefix })) },
  { weight: 2, arbitrary: fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 20 }).map((sizes) => ({ kind: 'chunks' as const, sizes })) },
);

/** Option frames: well-formed ones with odd contents, wrong lengths, unknown options, bad magic. */
const option: fc.Arbitrary<Buffer> = fc.oneof(
  fc.tuple(fc.integer({ min: 0, max: 12 }), fc.uint8Array({ maxLength: 64 })).map(([o, d]) => optionFrame(o, Buffer.from(d))),
  fc.tuple(fc.constantFrom(6, 7), fc.constantFrom('f', 'nope', ''), fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 6 }), fc.integer({ min: -3, max: 3 })).map(([o, name, infos, skew]) => {
    const n = Buffer.from(name);
    const d = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
    d.writeUInt32BE(Math.max(0, n.length + skew), 0);
    n.copy(d, 4);
    d.writeUInt16BE(infos.length, 4 + n.length);
    infos.forEach((x, i) => d.writeUInt16BE(x, 6 + n.length + 2 * i));
    return optionFrame(o, d);
  }),
  fc.tuple(fc.constantFrom(9, 10), fc.constantFrom('f', 'x'), fc.array(fc.constantFrom('base:allocation', 'base:', 'qemu:dirty-bitmap:x', ''), { maxLength: 4 }), fc.integer({ min: 0, max: 1000 })).map(([o, name, queries, count]) => {
    const parts = [Buffer.alloc(4), Buffer.from(name), Buffer.alloc(4)];
    parts[0]!.writeUInt32BE(Buffer.byteLength(name), 0);
    parts[2]!.writeUInt32BE(count % 3 === 0 ? count : queries.length, 0);
    for (const q of queries) {
      const l = Buffer.alloc(4);
      l.writeUInt32BE(Buffer.byteLength(q), 0);
      parts.push(l, Buffer.from(q));
    }
    return optionFrame(o, Buffer.concat(parts));
  }),
  fc.tuple(fc.integer({ min: 0, max: 0xffffffff }), u32).map(([o, length]) => {
    const b = optionFrame(o, Buffer.alloc(0));
    b.writeUInt32BE(length, 12); // a length the data does not follow
    return b;
  }),
  fc.uint8Array({ minLength: 1, maxLength: 40 }).map((b) => Buffer.from(b)),
);

const fuzzCase: fc.Arbitrary<FuzzCase> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('requests' as const), requests: fc.array(request, { minLength: 1, maxLength: 24 }), delivery, readsReplies: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('handshake' as const), clientFlags: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(1, 3) }, { weight: 1, arbitrary: u32 }), options: fc.array(option, { maxLength: 8 }), delivery, tls: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('burst' as const), clients: fc.array(fc.record({ bytes: fc.integer({ min: 0, max: 40 }), abrupt: fc.boolean() }), { minLength: 1, maxLength: 40 }) }) },
);

/** Sends `bytes` as the delivery says. */
async function deliver(sock: net.Socket, bytes: Buffer, how: Delivery): Promise<void> {
  let at = 0;
  if (how.kind === 'bytewise') {
    for (; at < Math.min(how.prefix, bytes.length); at++) {
      sock.write(bytes.subarray(at, at + 1));
      if (at % 16 === 0) await sleep(0);
    }
  } else if (how.kind === 'chunks') {
    for (const n of how.sizes) {
      if (at >= bytes.length) break;
      sock.write(bytes.subarray(at, at + n));
      at += n;
      await sleep(0);
    }
  }
  if (at < bytes.length) sock.write(bytes.subarray(at));
}

/** Resolves when the socket closes, or destroys it after `ms`; true when the server ended it first. */
function settle(sock: net.Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (sock.destroyed) return resolve(true);
    const timer = setTimeout(() => { sock.destroy(); resolve(false); }, ms);
    sock.once('close', () => { clearTimeout(timer); resolve(true); });
  });
}

/** Whether a request's range lies inside the volume. */
function inside(r: FuzzRequest): boolean {
  return r.offset + BigInt(r.length) <= BigInt(SIZE);
}

/** The fuzzer over one server: each call of {@link check} runs one case and checks the invariants. */
class NbdFuzzer {
  readonly stats: NbdFuzzStats = { cases: 0, byKind: {}, requests: 0, replies: {}, endedByServer: 0, connections: 0, bufferHighWaterBytes: 0, rssHighWaterBytes: 0 };
  private constructor(private readonly s: NbdFixture, private readonly plane: Plane, private readonly baseBuffers: number, private readonly baseRss: number) {}

  static async start(t: { after(fn: () => unknown): unknown }, plane: Plane): Promise<NbdFuzzer> {
    const s = await startNbd(t as Parameters<typeof startNbd>[0], {
      plane, volumes: [{ name: 'f', sizeGiB: SIZE / GiB }],
      options: { maxBufferBytesPerConnection: FUZZ_BUFFER_BYTES, maxRequestsPerConnection: 16, threadsPerConnection: THREADS, negotiationTimeoutMs: 2000 },
    });
    return new NbdFuzzer(s, plane, process.memoryUsage().arrayBuffers, process.memoryUsage().rss);
  }

  /** Runs one case; throws naming the broken invariant. */
  async check(c: FuzzCase): Promise<void> {
    this.stats.cases++;
    this.stats.byKind[c.kind] = (this.stats.byKind[c.kind] ?? 0) + 1;
    const before = this.windows();
    let allowed: Array<[number, number]> = [];
    if (c.kind === 'requests') allowed = await this.requests(c);
    else if (c.kind === 'handshake') await this.handshake(c);
    else await this.burst(c);
    await this.healthy();
    this.unchangedOutside(before, allowed);
    await this.connectionsGone();
    this.memoryWithinBounds(c.kind === 'burst' ? c.clients.length : 1);
  }

  private async requests(c: Extract<FuzzCase, { kind: 'requests' }>): Promise<Array<[number, number]>> {
    const conn = await this.s.connect('f');
    this.stats.connections++;
    const sent = new Map<bigint, FuzzRequest>();
    const afterDisc = new Set<bigint>();
    const allowed: Array<[number, number]> = [];
    const frames: Buffer[] = [];
    let ended = false; // the server will end the stream here (bad magic, oversized write)
    let disc = false;
    let cookie = 0n;
    for (const r of c.requests) {
      cookie++;
      this.stats.requests++;
      const sendsPayload = r.type === CMD.WRITE && r.length <= MAX_SENT_PAYLOAD;
      if (r.type === CMD.WRITE && !sendsPayload && r.length <= MAX_PAYLOAD) continue; // would need a payload too large to send here
      const frame = requestFrame(r.type, cookie, r.offset, r.length, sendsPayload ? Buffer.alloc(r.length, Number(cookie % 251n) + 1) : undefined, r.magic ?? 0x25609513);
      frame.writeUInt16BE(r.flags, 4);
      frames.push(frame);
      if (disc || ended) afterDisc.add(cookie);
      else sent.set(cookie, r);
      if (r.magic !== undefined && r.magic !== 0x25609513) ended = true;
      if (r.type === CMD.WRITE && r.length > MAX_PAYLOAD) ended = true;
      if (r.type === CMD.DISC) disc = true;
      const writes = r.type === CMD.WRITE || r.type === CMD.TRIM || r.type === CMD.WRITE_ZEROES;
      if (writes && !disc && !ended && inside(r)) allowed.push([Number(r.offset), Number(r.offset) + r.length]);
    }
    const received: Buffer[] = [];
    if (c.readsReplies) conn.sock.removeAllListeners('data').on('data', (b: Buffer) => received.push(b));
    else conn.sock.removeAllListeners('data').pause();
    await deliver(conn.sock, Buffer.concat(frames), c.delivery);
    if (c.readsReplies) {
      conn.sock.end();
      if (await settle(conn.sock, 3000)) this.stats.endedByServer += disc || ended ? 1 : 0;
    } else {
      await sleep(50);
      conn.sock.destroy();
    }
    // Unless the stream broke (bad magic, an oversized write), every request before the client's end or DISC is answered.
    if (c.readsReplies) this.checkReplies(Buffer.concat(received), sent, afterDisc, !ended);
    return allowed;
  }

  /** Parses simple replies (the connection negotiated none structured) and checks each against its request. */
  private checkReplies(bytes: Buffer, sent: Map<bigint, FuzzRequest>, afterDisc: Set<bigint>, expectAll: boolean): void {
    const answered = new Set<bigint>();
    let at = 0;
    while (at + 16 <= bytes.length) {
      if (bytes.readUInt32BE(at) !== 0x67446698) throw new Error(`reply at byte ${at} has magic 0x${bytes.readUInt32BE(at).toString(16)}`);
      const error = bytes.readUInt32BE(at + 4);
      const cookie = bytes.readBigUInt64BE(at + 8);
      at += 16;
      if (afterDisc.has(cookie)) throw new Error(`request ${cookie}, sent after NBD_CMD_DISC or a fatal request, was answered`);
      const r = sent.get(cookie);
      if (!r) throw new Error(`reply for unknown cookie ${cookie}`);
      if (answered.has(cookie)) throw new Error(`request ${cookie} answered twice`);
      answered.add(cookie);
      this.stats.replies[error] = (this.stats.replies[error] ?? 0) + 1;
      const known = r.type <= 7 && r.type !== CMD.DISC;
      if (!known && error === 0) throw new Error(`unknown command ${r.type} succeeded`);
      const ranged = r.type !== CMD.FLUSH;
      if (known && ranged && !inside(r) && error === 0) throw new Error(`command ${r.type} at ${r.offset}+${r.length}, outside the volume, succeeded`);
      if (r.type === CMD.READ && error === 0) at += r.length;
    }
    if (at > bytes.length) throw new Error('a read reply was cut short');
    if (expectAll) {
      const missing = [...sent].filter(([cookie, r]) => r.type !== CMD.DISC && !answered.has(cookie)).map(([cookie, r]) => `${cookie} (command ${r.type})`);
      if (missing.length) throw new Error(`requests never answered: ${missing.join(', ')}`);
    }
  }

  private async handshake(c: Extract<FuzzCase, { kind: 'handshake' }>): Promise<void> {
    this.stats.connections++;
    let sock: net.Socket;
    if (c.tls && this.plane === 'tls') {
      sock = (await this.s.session('f')).sock;
    } else {
      sock = net2.connect(this.s.port, '127.0.0.1');
      sock.on('error', () => undefined);
      const reader = new ByteReader(sock);
      await reader.read(18);
      const flags = Buffer.alloc(4);
      flags.writeUInt32BE(c.clientFlags, 0);
      sock.write(flags);
    }
    sock.on('data', () => undefined);
    await deliver(sock, Buffer.concat(c.options), c.delivery);
    sock.end();
    if (await settle(sock, 3000)) this.stats.endedByServer++;
  }

  private async burst(c: Extract<FuzzCase, { kind: 'burst' }>): Promise<void> {
    const socks = c.clients.map(() => {
      const sock = net2.connect(this.s.port, '127.0.0.1');
      sock.on('error', () => undefined);
      sock.on('data', () => undefined);
      this.stats.connections++;
      return sock;
    });
    const hello = Buffer.concat([Buffer.from([0, 0, 0, 3]), optionFrame(1, Buffer.from('f'))]);
    await Promise.all(socks.map((s) => new Promise((r) => s.once('connect', r))));
    c.clients.forEach((cl, i) => socks[i]!.write(hello.subarray(0, cl.bytes)));
    await sleep(20);
    c.clients.forEach((cl, i) => (cl.abrupt ? socks[i]!.destroy() : socks[i]!.end()));
    await Promise.all(socks.map((s) => settle(s, 3000)));
  }

  /** A well-behaved client is still served. */
  private async healthy(): Promise<void> {
    const c = await this.s.connect('f');
    try {
      c.sock.write(requestFrame(CMD.READ, 1n, 0n, 4096));
      const head = await c.reader.read(16);
      if (head.readUInt32BE(4) !== 0) throw new Error(`a well-formed read failed: ${head.readUInt32BE(4)}`);
      await c.reader.read(4096);
    } finally {
      c.sock.destroy();
    }
  }

  /** The windows writes may touch, read from the volume file. */
  private windows(): Buffer {
    const fd = fs.openSync(this.s.file('f'), 'r');
    try {
      const b = Buffer.alloc(2 * WINDOW);
      fs.readSync(fd, b, 0, WINDOW, 0);
      fs.readSync(fd, b, WINDOW, WINDOW, SIZE - WINDOW);
      return b;
    } finally {
      fs.closeSync(fd);
    }
  }

  private unchangedOutside(before: Buffer, allowed: Array<[number, number]>): void {
    const after = this.windows();
    const fileOffset = (i: number): number => (i < WINDOW ? i : SIZE - WINDOW + (i - WINDOW));
    for (let i = 0; i < after.length; i += 4096) {
      const end = Math.min(after.length, i + 4096);
      if (before.compare(after, i, end, i, end) === 0) continue;
      for (let j = i; j < end; j++) {
        if (before[j] === after[j]) continue;
        const at = fileOffset(j);
        if (!allowed.some(([a, b]) => at >= a && at < b)) throw new Error(`byte ${at} of the volume changed outside every in-range write of the case`);
      }
    }
    const fd = fs.openSync(this.s.file('f'), 'r');
    try {
      if (fs.fstatSync(fd).size !== SIZE) throw new Error(`the volume file is ${fs.fstatSync(fd).size} bytes`);
      // The middle reads as zeros. A filesystem may allocate past a range
      // (ext4 zeroes out neighbouring blocks when it splits an extent), so
      // whatever it calls data there is read and must be zeros.
      let at = WINDOW;
      for (const e of dataExtentsOf(fd, SIZE, WINDOW, SIZE - 2 * WINDOW)) {
        for (let done = 0; !e.hole && done < e.length; done += MiB) {
          const n = Math.min(MiB, e.length - done);
          const b = Buffer.alloc(n);
          fs.readSync(fd, b, 0, n, at + done);
          if (!b.equals(Buffer.alloc(n))) throw new Error(`data appeared between the windows, where no in-range request pointed: in ${e.length} bytes at ${at}`);
        }
        at += e.length;
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  private async connectionsGone(): Promise<void> {
    for (let i = 0; i < 100 && this.s.server.connectionCount > 0; i++) await sleep(20);
    if (this.s.server.connectionCount > 0) throw new Error(`${this.s.server.connectionCount} connections outlived their clients`);
  }

  private memoryWithinBounds(connections: number): void {
    const buffers = process.memoryUsage().arrayBuffers - this.baseBuffers;
    const rss = process.memoryUsage().rss - this.baseRss;
    this.stats.bufferHighWaterBytes = Math.max(this.stats.bufferHighWaterBytes, buffers);
    this.stats.rssHighWaterBytes = Math.max(this.stats.rssHighWaterBytes, rss);
    // Per connection: the bound, plus on native threads the 4 MiB buffer each worker keeps between requests.
    const perConnection = FUZZ_BUFFER_BYTES + (this.plane === 'native' ? THREADS * 4 * MiB : 0);
    const slack = 96 * MiB;
    if (buffers > connections * FUZZ_BUFFER_BYTES + slack) throw new Error(`buffers grew by ${(buffers / MiB).toFixed(0)} MiB`);
    if (rss > connections * perConnection + 2 * slack + 256 * MiB) throw new Error(`RSS grew by ${(rss / MiB).toFixed(0)} MiB`);
  }
}

/**
 * Runs `numRuns` generated cases against a server on `plane` started for the
 * run; throws fast-check's report (seed, path, shrunk case) on a finding.
 */
export async function runNbdFuzz(t: { after(fn: () => unknown): unknown }, plane: Plane, o: { seed: number; numRuns: number; path?: string }): Promise<NbdFuzzStats> {
  const fuzzer = await NbdFuzzer.start(t, plane);
  // `path` (from a report) replays that one case of the seed.
  await fc.assert(fc.asyncProperty(fuzzCase, (c) => fuzzer.check(c)), { seed: o.seed, numRuns: o.numRuns, endOnFailure: true, ...(o.path ? { path: o.path } : {}) });
  return fuzzer.stats;
}
