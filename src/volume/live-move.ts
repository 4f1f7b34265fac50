/**
 * Moving an attached volume (issue 12): while its copy is made on the
 * destination backend, the volume's NBD export serves a mirror of the two —
 * reads from the source, every write, zero and trim to both — so the copy
 * never falls behind the host's writes and the attachment keeps working.
 *
 * - {@link LiveMove} holds one handle on each side and gives each NBD
 *   connection a view of the pair. Writes and the copier take a lock on the
 *   byte range they touch: a write waits while the copier reads and writes
 *   its chunk, and the copier waits for the writes in flight on its chunk, so
 *   a chunk copied before a write is rewritten by the write's mirror, and a
 *   write before the chunk is read is in what the copier reads. Overlapping
 *   writes are ordered alike on both sides.
 * - A view has no `fd`, so connections to a moving volume are served on the
 *   event loop (the native plane writes straight to the source's file).
 * - {@link LiveMoves} is the process's registry, read by the export provider
 *   (`src/server/attachment-exports.ts`) when a connection opens the export.
 *   Beginning a move fences the volume's exports so every connection
 *   reconnects onto the mirror; ending it fences them again, so they
 *   reconnect to whatever the volume's row names (the destination once the
 *   move committed, the source when it failed).
 *
 * Until the row names the destination the source is the volume and the
 * destination a copy: a crash loses only the mirror, the volume's data stays
 * whole on the source, and the move starts over.
 *
 * Synchronous replication (`replicator.ts`) serves a volume through the same
 * mirror for as long as it is replicated, its destination the secondary copy
 * over the secondary's NBD export: a write is acknowledged once both sides
 * have it, and a write the secondary refuses fails (the export answers its
 * errno, e.g. ENOSPC or EIO) and is reported through `onDestFailure`.
 *
 * A mirror whose source has a file (`fd`) and whose destination can be
 * reached by plain connections ({@link NativeDest}: the copy's export on this
 * machine's Unix socket) serves its connections from the native data plane
 * instead (`native/nbd_mirror.c`): each view lends the threads the file and
 * channels to the copy, and the range locks are the native group's, which the
 * threads, the copier and the event loop's views all take.
 */
import { constants } from 'node:os';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { addon, type NbdMirrorGroup } from '../common/index.ts';
import type { VolumeHandle } from '../drivers/index.ts';
import { DriverError } from '../errors/index.ts';
import type { DataPlaneMirror, MirroredHandle } from '../export/data-plane.ts';
import type { PlainConnection } from '../export/nbd-client.ts';
import { TF } from '../export/nbd-protocol.ts';

/** A byte range held by a write or by the copier. */
interface Held { start: number; end: number; done: Promise<void> }

/** Exclusive locks on byte ranges: a holder waits for every overlapping one. */
interface RangeLocks {
  hold<T>(start: number, end: number, fn: () => Promise<T>): Promise<T>;
}

/** Range locks of the event loop alone. */
class LocalRangeLocks implements RangeLocks {
  private readonly held = new Set<Held>();

  async hold<T>(start: number, end: number, fn: () => Promise<T>): Promise<T> {
    for (;;) {
      const clash = [...this.held].find((h) => h.start < end && start < h.end);
      if (!clash) break;
      await clash.done;
    }
    let release!: () => void;
    const h: Held = { start, end, done: new Promise<void>((r) => { release = r; }) };
    this.held.add(h);
    try {
      return await fn();
    } finally {
      this.held.delete(h);
      release();
    }
  }
}

/**
 * Range locks shared with the native threads (a native mirror's group): a
 * holder that finds its range taken tries again on the next turns of the
 * event loop, then every millisecond (a native write holds its range for
 * one round trip to the copy).
 */
class GroupRangeLocks implements RangeLocks {
  constructor(private readonly group: NbdMirrorGroup) {}

  async hold<T>(start: number, end: number, fn: () => Promise<T>): Promise<T> {
    let id = addon.nbdMirrorHold(this.group, start, end);
    for (let tries = 0; id === 0; tries++) {
      await (tries < 2 ? nextTurn() : sleep(1));
      id = addon.nbdMirrorHold(this.group, start, end);
    }
    try {
      return await fn();
    } finally {
      addon.nbdMirrorRelease(this.group, id);
    }
  }
}

/** How the native threads reach a mirror's destination: a plain connection to its export, or undefined when there is none to make (then connections are served on the event loop). */
export interface NativeDest {
  connect(): Promise<PlainConnection | undefined>;
}

/** Channels (plain connections to the destination) each natively served connection of a mirror has: writes in flight to the copy at once. */
const NATIVE_CHANNELS = 2;

/** Bytes the copier reads and writes at once. */
const COPY_CHUNK_BYTES = 4 * 1024 * 1024;

/** How far a move's copy is. */
export interface MoveProgress { doneBytes: number; totalBytes: number }

/** The source and destination of one attached volume's move, and the copy between them. */
export class LiveMove {
  private readonly locks: RangeLocks;
  private readonly views = new Set<VolumeHandle>();
  private readonly group: NbdMirrorGroup | undefined;
  private closed = false;

  /**
   * `onDestFailure`: called (once per failed call) when the destination
   * refuses a write, zero, trim or flush that the source took; the call then
   * fails. Default: nothing more than the failure. From the native threads
   * it is called once for the mirror, for a request either side refused.
   * `native`: see {@link NativeDest}; without it (or without a source file)
   * every connection is served on the event loop.
   */
  constructor(private readonly source: VolumeHandle, private readonly dest: VolumeHandle, private readonly onDestFailure?: (err: unknown) => void, private readonly native?: NativeDest) {
    this.group = native && source.fd !== undefined ? addon.nbdMirrorGroup((e) => this.onDestFailure?.(nativeFailure(e))) : undefined;
    this.locks = this.group ? new GroupRangeLocks(this.group) : new LocalRangeLocks();
  }

  /** Runs a call on the destination, reporting its failure. */
  private async onDest<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      this.onDestFailure?.(err);
      throw err;
    }
  }

  /** Size the views show: the source's (the destination is made at the volume's size). */
  get sizeBytes(): number {
    return Math.min(this.source.sizeBytes, this.dest.sizeBytes);
  }

  /** A handle for one connection: reads from the source, writes to both. Closing it leaves the pair open. */
  view(): VolumeHandle {
    const { source, dest, locks } = this;
    const both = (offset: number, length: number, onSource: () => Promise<void>, onDest: () => Promise<void>) =>
      locks.hold(offset, offset + length, async () => {
        // Source first: it is the volume until the move commits, and a write it refused must not reach the copy.
        await onSource();
        await this.onDest(onDest);
      });
    const view: VolumeHandle = {
      sizeBytes: this.sizeBytes,
      read: (offset, length) => source.read(offset, length),
      write: (offset, data) => both(offset, data.length, () => source.write(offset, data), () => dest.write(offset, data)),
      flush: async () => { await Promise.all([source.flush(), this.onDest(() => dest.flush())]); },
      ...(source.trim ? { trim: (offset: number, length: number) => both(offset, length, () => source.trim!(offset, length), async () => { await dest.trim?.(offset, length); }) } : {}),
      ...(source.writeZeroes ? { writeZeroes: (offset: number, length: number, mayPunch: boolean) => both(offset, length, () => source.writeZeroes!(offset, length, mayPunch), () => zeroOn(dest, offset, length, mayPunch)) } : {}),
      ...(source.blockStatus ? { blockStatus: (offset: number, length: number) => source.blockStatus!(offset, length) } : {}),
      close: async () => { this.views.delete(view); },
      ...(this.group ? { dataPlaneMirror: () => this.lendNative() } : {}),
    } satisfies VolumeHandle & MirroredHandle;
    this.views.add(view);
    return view;
  }

  /**
   * What a natively served connection of the mirror needs: the source's file,
   * the group, and {@link NATIVE_CHANNELS} plain connections to the
   * destination; undefined (served on the event loop) when the mirror has
   * ended or they cannot all be made, or the destination's export cannot
   * take every change the threads send it.
   */
  private async lendNative(): Promise<DataPlaneMirror | undefined> {
    if (this.closed || !this.group || !this.native || this.source.fd === undefined) return undefined;
    const made = await Promise.allSettled(Array.from({ length: NATIVE_CHANNELS }, () => this.native!.connect()));
    const conns = made.flatMap((m) => m.status === 'fulfilled' && m.value ? [m.value] : []);
    const close = () => { for (const c of conns) c.socket.destroy(); };
    const needs = TF.SEND_FLUSH | TF.SEND_TRIM | TF.SEND_WRITE_ZEROES;
    if (this.closed || conns.length < NATIVE_CHANNELS || conns.some((c) => (c.flags & needs) !== needs || (c.flags & TF.READ_ONLY) !== 0)) {
      close();
      return undefined;
    }
    return { file: this.source.fd, group: this.group, sockets: conns.map((c) => c.fd), close };
  }

  /**
   * Copies the source onto the destination, chunk by chunk under the range
   * lock, skipping what the source reports as zeros (the destination is new:
   * they read as zeros there, and the mirror wrote both sides of every change
   * since) — or, with `zeroHoles` (a destination that held data before: a
   * replica's old primary), zeroing them there without reading them; flushes
   * the destination at the end. With `ranges` (sorted, not overlapping) only
   * those are copied: the destination holds the source elsewhere already (a
   * replica's copy resynchronised from its changed extents). The views keep
   * mirroring after it returns, until the move ends. Returns the bytes of
   * data written (zeroed ranges not counted).
   */
  async copy(onProgress?: (p: MoveProgress) => void, o: { zeroHoles?: boolean; ranges?: readonly { offset: number; length: number }[] } = {}): Promise<number> {
    const size = this.sizeBytes;
    const ranges = (o.ranges ?? [{ offset: 0, length: size }]).map((r) => ({ offset: r.offset, length: Math.min(r.length, size - r.offset) })).filter((r) => r.length > 0);
    const totalBytes = ranges.reduce((n, r) => n + r.length, 0);
    let doneBytes = 0;
    let written = 0;
    for (const r of ranges) {
      for (let offset = r.offset; offset < r.offset + r.length; offset += COPY_CHUNK_BYTES) {
        const length = Math.min(COPY_CHUNK_BYTES, r.offset + r.length - offset);
        written += await this.copyChunk(offset, length, o.zeroHoles ?? false);
        doneBytes += length;
        onProgress?.({ doneBytes, totalBytes });
      }
    }
    await this.dest.flush();
    return written;
  }

  /** Copies one chunk under its range lock (see {@link copy}); returns the data bytes written. */
  private copyChunk(offset: number, length: number, zeroHoles: boolean): Promise<number> {
    return this.locks.hold(offset, offset + length, async () => {
      let written = 0;
      // Block status may describe less than it is asked: ask again from where it stopped.
      for (let at = offset; at < offset + length;) {
        const rest = offset + length - at;
        const extents = this.source.blockStatus ? await this.source.blockStatus(at, rest) : [{ length: rest, hole: false, zero: false }];
        const from = at;
        for (const e of extents) {
          const len = Math.min(e.length, offset + length - at);
          if (len <= 0) break;
          if (!e.zero) {
            await this.dest.write(at, await this.source.read(at, len));
            written += len;
          } else if (zeroHoles) {
            await zeroOn(this.dest, at, len, true);
          }
          at += len;
        }
        if (at === from) throw new DriverError(`The source's block status of ${rest} bytes at ${at} described nothing: the move cannot tell what to copy.`);
      }
      return written;
    });
  }

  /** Closes both handles (once every view's connection has been fenced). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.views.clear();
    await Promise.allSettled([this.source.close(), this.dest.close()]);
  }
}

/** What the native threads' failure report (an errno) becomes for `onDestFailure`. */
function nativeFailure(e: number): DriverError {
  const name = Object.entries(constants.errno).find(([, v]) => v === e)?.[0] ?? `errno ${e}`;
  return new DriverError(`A mirrored write failed with ${name}: the copies may differ there until the mirror is rebuilt.`, { cause: Object.assign(new Error(name), { code: name }) });
}

/** Zeros a range of `h` by the cheapest call it has. */
async function zeroOn(h: VolumeHandle, offset: number, length: number, mayPunch: boolean): Promise<void> {
  if (h.writeZeroes) return h.writeZeroes(offset, length, mayPunch);
  for (let at = offset; at < offset + length; at += COPY_CHUNK_BYTES) {
    await h.write(at, Buffer.alloc(Math.min(COPY_CHUNK_BYTES, offset + length - at)));
  }
}

/** What ending or beginning a move needs of the export server: fencing the volume's exports. */
export interface MoveFence {
  /** Drops every connection of the volume's exports; resolves once none of their writes can land. */
  fenceVolume(volumeId: string): Promise<void>;
}

/** The attached volumes moving in this process, by volume id. */
export class LiveMoves {
  private readonly moves = new Map<string, LiveMove>();

  /** `fence`: the export server's, for the volume's exports. */
  constructor(private readonly fence: MoveFence) {}

  /** The mirror of a moving volume, for a connection opening its export. */
  open(volumeId: string): VolumeHandle | undefined {
    return this.moves.get(volumeId)?.view();
  }

  /** Whether `volumeId` is moving here now. */
  has(volumeId: string): boolean {
    return this.moves.has(volumeId);
  }

  /**
   * Starts serving `volumeId` through `move`: every connection of its
   * exports is dropped, to reconnect onto the mirror. Ends an earlier move of
   * the volume first (a retried job).
   */
  async begin(volumeId: string, move: LiveMove): Promise<void> {
    await this.end(volumeId);
    this.moves.set(volumeId, move);
    await this.fence.fenceVolume(volumeId);
  }

  /**
   * Stops mirroring `volumeId`: new connections open what the row names, the
   * mirror's connections are dropped to reconnect there, then the pair is
   * closed. Nothing to do when it is not moving here. Never rejects on a
   * handle's close.
   */
  async end(volumeId: string): Promise<void> {
    const move = this.moves.get(volumeId);
    if (!move) return;
    this.moves.delete(volumeId);
    await this.fence.fenceVolume(volumeId);
    await move.close();
  }
}
