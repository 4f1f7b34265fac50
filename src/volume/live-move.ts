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
 */
import type { VolumeHandle } from '../drivers/index.ts';
import { DriverError } from '../errors/index.ts';

/** A byte range held by a write or by the copier. */
interface Held { start: number; end: number; done: Promise<void> }

/** Exclusive locks on byte ranges: a holder waits for every overlapping one. */
class RangeLocks {
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

/** Bytes the copier reads and writes at once. */
const COPY_CHUNK_BYTES = 4 * 1024 * 1024;

/** How far a move's copy is. */
export interface MoveProgress { doneBytes: number; totalBytes: number }

/** The source and destination of one attached volume's move, and the copy between them. */
export class LiveMove {
  private readonly locks = new RangeLocks();
  private readonly views = new Set<VolumeHandle>();
  private closed = false;

  /**
   * `onDestFailure`: called (once per failed call) when the destination
   * refuses a write, zero, trim or flush that the source took; the call then
   * fails. Default: nothing more than the failure.
   */
  constructor(private readonly source: VolumeHandle, private readonly dest: VolumeHandle, private readonly onDestFailure?: (err: unknown) => void) {}

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
    };
    this.views.add(view);
    return view;
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
