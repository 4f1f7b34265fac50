/**
 * Changed-block tracking: which blocks of each volume were written since its
 * last backup, so that an incremental backup reads only those.
 *
 * - **Granularity**: one bit per {@link CHANGED_BLOCK_BYTES} (16 KiB) block:
 *   8 MiB of bits for a 1 TiB volume, and a scattered 4 KiB write dirties
 *   at most two blocks.
 * - **Who records**: every writer of the NBD export — the event-loop and TLS
 *   connections (`nbd-server.ts`) and the native threads
 *   (`native/nbd_dataplane.c`) — sets the bits of each WRITE, WRITE_ZEROES and
 *   TRIM before the volume is touched, in one bit array per volume that all
 *   its connections share ({@link ChangeWriter.bits}; the native threads
 *   set bits with atomic ORs in the same memory, and the event loop with
 *   `Atomics.or`). A connection of a larger volume (after an online extend)
 *   gets a larger array; the arrays are ORed whenever they are read.
 * - **Where it lives**: one file per volume under the state directory
 *   (`<state_dir>/changed-blocks/<volume id>`), written aside, flushed and
 *   renamed. The state directory, not the volume's backend: the bits are the
 *   export's knowledge, the same for every driver (file, memory, rbd), and
 *   the backend keeps no file a manage listing or a pool's capacity would
 *   count. The process that exports a volume is the one that backs it up
 *   (`backup-member:` jobs), so the file is where its backups look; where a
 *   volume's cluster has members in other processes, whose writes this
 *   tracker never sees, backups read everything (`backup-service.ts`). A
 *   volume's bits are in memory only while it has writers or a backup in
 *   flight.
 * - **The safe fallback**: before the first write of a volume after its
 *   writers open is acknowledged, its file says `open` (flushed). A clean end
 *   (the last writer closes, the server stops) saves the bits and clears it.
 *   A file read `open` (only a process that died with writers open leaves
 *   one) may miss acknowledged writes, so the volume counts as wholly
 *   changed. So does a volume with no file, one whose file cannot be read,
 *   and one a write path that cannot track has marked
 *   ({@link ChangedBlockTracker.markAllChanged}: restores, reverts, copies of
 *   a migration, loop-device attachments).
 * - **Generations**: the bits count from a **base**, the backup whose point
 *   in time started them. A backup fixes its point in time
 *   ({@link ChangedBlockTracker.cut}: under the export's quiesce, or when
 *   nothing writes the volume) and takes the bits gathered so far as its
 *   {@link ChangedBlocksCut}; writes after that instant go to a fresh
 *   generation whose base is this backup. The cut tells the backup what
 *   changed since its parent (only when its parent is the base it started
 *   from: otherwise everything changed); a backup that fails ORs its cut
 *   back ({@link ChangedBlocksCut.abort}) so no dirty bit is ever lost.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';

/** Bytes one bit stands for. */
export const CHANGED_BLOCK_BYTES = 16 * 1024;

/** A byte range of a volume. */
export interface ChangedRange { offset: number; length: number }

/** Settings of a {@link ChangedBlockTracker}. */
export interface ChangedBlockTrackerOptions {
  /** Folder of the per-volume files (`<state_dir>/changed-blocks`); created by {@link ChangedBlockTracker.open}. */
  directory: string;
  log: Logger;
  /** Bytes per bit; a power of two, at least 4096. Default {@link CHANGED_BLOCK_BYTES}. Files of another granularity count as wholly changed. */
  blockBytes?: number;
}

/**
 * One writer of a volume (an NBD connection that may write): the bits it sets
 * and its end. Obtained from {@link ChangedBlockTracker.writer}.
 */
export interface ChangeWriter {
  /** The volume's bit array for this writer's size: bit `i` of word `i >> 5` is block `i`. Native threads OR into it. */
  readonly bits: Uint32Array;
  /** log2 of the block size, for the native threads. */
  readonly blockShift: number;
  /** Records a write, trim or zeroing of `[offset, offset + length)`: call before the volume is touched. */
  mark(offset: number, length: number): void;
  /** The writer has ended (its handle is closed, no write of it can still land). Idempotent. */
  close(): void;
}

/**
 * The changes a backup took at its point in time (see
 * {@link ChangedBlockTracker.cut}). Exactly one of `commit` and `abort`
 * must follow.
 */
export interface ChangedBlocksCut {
  /**
   * The ranges written between the backup `parentId` and this cut, or
   * undefined when they are not known (the bits do not start at that backup,
   * or the volume was marked wholly changed): then everything may have changed.
   */
  changedSince(parentId: string): ChangedRange[] | undefined;
  /** The backup succeeded: later backups count from it. */
  commit(): Promise<void>;
  /** The backup failed: its bits go back into the volume's, as if it never ran. */
  abort(): Promise<void>;
}

/** A shared bit array and how many writers use it. */
interface Segment { bits: Uint32Array; users: number }

/** What the tracker knows of one volume. */
interface Track {
  /** The backup the bits count from; null: unknown, so everything changed. */
  base: string | null;
  /** Bits of writers that ended (and what was loaded). */
  saved: Uint32Array;
  /** Arrays in use by open writers; the newest (largest) is handed to new ones. */
  segments: Segment[];
  writers: number;
  /** The file says writers are open (a crash then means: everything changed). */
  open: boolean;
  /** A cut whose backup has not ended. */
  pending: { backupId: string; base: string | null; bits: Uint32Array } | undefined;
  /** File writes, one at a time, in order. */
  saving: Promise<void>;
  /** Saves queued or running. */
  queued: number;
}

/** The file's first line. */
interface Header {
  format: 'basalt-changed-blocks';
  version: 1;
  blockBytes: number;
  base: string | null;
  open: boolean;
  words: number;
  pending: { backupId: string; base: string | null; words: number } | null;
}

/** Changed-block tracking of one process's exports. */
export class ChangedBlockTracker {
  readonly blockBytes: number;
  readonly blockShift: number;
  /** Volumes in use (writers, a backup in flight) or being saved. */
  private readonly tracks = new Map<string, Track>();
  private readonly loading = new Map<string, Promise<Track>>();
  private closed = false;

  private constructor(private readonly o: ChangedBlockTrackerOptions) {
    this.blockBytes = o.blockBytes ?? CHANGED_BLOCK_BYTES;
    this.blockShift = Math.log2(this.blockBytes);
    if (!Number.isInteger(this.blockShift) || this.blockBytes < 4096) throw new Error(`changed-block size ${this.blockBytes} must be a power of two of at least 4096`);
  }

  /**
   * Opens the tracker over its folder (what writes aside left is removed).
   * A volume's file is read when the volume is first used, and its bits are
   * held in memory only while it has writers or a backup in flight. A file
   * read `open` can only be a dead process's (this process never lets a
   * volume with writers go): the volume counts as wholly changed. A cut whose
   * backup never ended goes back into its volume's bits.
   */
  static async open(o: ChangedBlockTrackerOptions): Promise<ChangedBlockTracker> {
    const t = new ChangedBlockTracker(o);
    await fs.mkdir(o.directory, { recursive: true });
    for (const name of await fs.readdir(o.directory)) {
      if (name.endsWith('.tmp')) await fs.rm(path.join(o.directory, name), { force: true });
    }
    return t;
  }

  /**
   * A new writer of `volumeId` whose handle is `sizeBytes` long. Resolves once
   * the volume's file says `open` (flushed), so no write it records can be
   * acknowledged before a crash would count the volume wholly changed.
   */
  async writer(volumeId: string, sizeBytes: number): Promise<ChangeWriter> {
    const track = await this.held(volumeId);
    const words = wordsFor(sizeBytes, this.blockShift);
    let seg = track.segments[track.segments.length - 1];
    if (!seg || seg.bits.length < words) {
      seg = { bits: new Uint32Array(words), users: 0 };
      track.segments.push(seg);
    }
    seg.users++;
    track.writers++;
    if (!track.open) {
      track.open = true;
      try {
        await this.save(volumeId, track);
      } catch (err) {
        // No room to say `open`: no file at all says as much (wholly changed), and removing needs no room.
        this.o.log.warn({ err, volume_id: volumeId }, 'saving changed blocks failed: the volume counts as wholly changed');
        track.base = null;
        try {
          await fs.rm(path.join(this.o.directory, volumeId), { force: true });
        } catch (rmErr) {
          this.release(volumeId, track, seg);
          throw rmErr;
        }
      }
    }
    const shift = this.blockShift;
    const bits = seg.bits;
    const blocks = bits.length * 32;
    let closed = false;
    return {
      bits,
      blockShift: shift,
      mark(offset, length) {
        if (length <= 0) return;
        const first = Math.floor(offset / 2 ** shift);
        const last = Math.min(blocks - 1, Math.floor((offset + length - 1) / 2 ** shift));
        for (let b = first; b <= last; b++) Atomics.or(bits, b >>> 5, 1 << (b & 31));
      },
      close: () => {
        if (closed) return;
        closed = true;
        this.release(volumeId, track, seg);
      },
    };
  }

  /**
   * Marks a volume wholly changed: a write path that does not record its
   * writes (a restore, a revert, a migration's copy, a loop device) has
   * written it or may write it. Resolves once that is on disk.
   */
  async markAllChanged(volumeId: string, reason: string): Promise<void> {
    const track = await this.held(volumeId);
    if (track.base !== null) this.o.log.info({ volume_id: volumeId, reason }, 'volume marked wholly changed: its next incremental backup reads it all');
    track.base = null;
    await this.save(volumeId, track).catch(async (err: unknown) => {
      // No file says as much, and removing needs no room.
      this.o.log.warn({ err, volume_id: volumeId }, 'saving changed blocks failed: the file goes instead');
      await fs.rm(path.join(this.o.directory, volumeId), { force: true });
    });
  }

  /** Forgets a deleted volume (its file goes). Writers must have ended. */
  async forget(volumeId: string): Promise<void> {
    const track = await this.held(volumeId);
    this.tracks.delete(volumeId);
    await track.saving;
    await fs.rm(path.join(this.o.directory, volumeId), { force: true });
  }

  /**
   * Fixes the point in time of backup `backupId` of `volumeId`: takes the bits
   * gathered so far, and starts a new generation whose base is this backup.
   * Call it when no write of the volume is in flight — under the export's
   * quiesce, or while nothing writes the volume. A cut not yet ended (a
   * backup that died in this process) is given back first.
   *
   * Under a quiesce it costs no disk wait (the bits of a volume with writers
   * are in memory), so writes are held no longer for it: the cut and its end
   * are saved in the background. A save that never lands is safe: the file
   * then still counts from an earlier base (a backup whose parent is this
   * one reads everything), or says `open` (the volume wholly changed).
   */
  async cut(volumeId: string, backupId: string): Promise<ChangedBlocksCut> {
    const track = await this.held(volumeId);
    if (track.pending) this.giveBack(track, track.pending.backupId);
    const bits = this.gather(track, true);
    const cut = { backupId, base: track.base, bits };
    track.pending = cut;
    track.base = backupId;
    this.saveQuietly(volumeId, track);
    const blockBytes = this.blockBytes;
    let ended = false;
    const end = async (ok: boolean): Promise<void> => {
      if (ended) return;
      ended = true;
      if (track.pending !== cut) return; // given back already by a later cut
      if (ok) track.pending = undefined;
      else this.giveBack(track, backupId);
      this.saveQuietly(volumeId, track);
      await track.saving;
    };
    return {
      changedSince: (parentId) => (cut.base !== null && cut.base === parentId ? rangesOf(cut.bits, blockBytes) : undefined),
      commit: () => end(true),
      abort: () => end(false),
    };
  }

  /** Saves every volume (bits, and `open` only where writers are still open); later calls change nothing on disk. */
  async close(): Promise<void> {
    if (this.closed) return;
    for (const [id, track] of this.tracks) await this.save(id, track).catch((err: unknown) => this.o.log.warn({ err, volume_id: id }, 'saving changed blocks failed'));
    this.closed = true;
  }

  /**
   * The volume's track, still held in memory when the caller resumes: the
   * caller changes it before its next await (a writer, a pending cut), so the
   * eviction in {@link save} cannot drop a track in use.
   */
  private async held(volumeId: string): Promise<Track> {
    for (;;) {
      const track = await this.track(volumeId);
      if (this.tracks.get(volumeId) === track) return track;
    }
  }

  /** The volume's track, read from its file when it is not in memory. */
  private async track(volumeId: string): Promise<Track> {
    if (!/^[A-Za-z0-9_-]+$/.test(volumeId)) throw new Error(`volume id ${volumeId} cannot name a changed-block file`);
    for (;;) {
      const held = this.tracks.get(volumeId);
      if (held) return held;
      let loading = this.loading.get(volumeId);
      if (!loading) {
        loading = this.load(volumeId).finally(() => this.loading.delete(volumeId));
        this.loading.set(volumeId, loading);
        const track = await loading;
        if (!this.tracks.has(volumeId)) this.tracks.set(volumeId, track);
      } else {
        await loading;
      }
    }
  }

  /** Saves in the background; a failure is logged (see {@link cut} for why that is safe). */
  private saveQuietly(volumeId: string, track: Track): void {
    void this.save(volumeId, track).catch((err: unknown) => this.o.log.warn({ err, volume_id: volumeId }, 'saving changed blocks failed'));
  }

  private release(volumeId: string, track: Track, seg: Segment): void {
    track.writers--;
    if (--seg.users === 0 && (seg !== track.segments[track.segments.length - 1] || track.writers === 0)) {
      track.saved = or(track.saved, seg.bits);
      track.segments.splice(track.segments.indexOf(seg), 1);
    }
    if (track.writers === 0) {
      track.open = false;
      this.saveQuietly(volumeId, track); // a file left `open`: the volume counts as wholly changed
    }
  }

  /** The bits of every generation since the base (saved and live), ORed; with `clear` the live ones start again. */
  private gather(track: Track, clear: boolean): Uint32Array {
    let out = track.saved;
    for (const s of track.segments) out = or(out, s.bits);
    if (clear) {
      track.saved = new Uint32Array(0);
      for (const s of track.segments) s.bits.fill(0);
    } else if (out === track.saved) out = out.slice();
    return out;
  }

  /** Undoes the pending cut of `backupId`: its bits rejoin the volume's, and its base too unless the volume was marked since. */
  private giveBack(track: Track, backupId: string): void {
    const p = track.pending!;
    track.saved = or(track.saved, p.bits);
    if (track.base === backupId) track.base = p.base;
    track.pending = undefined;
  }

  private async load(volumeId: string): Promise<Track> {
    const track: Track = { base: null, saved: new Uint32Array(0), segments: [], writers: 0, open: false, pending: undefined, saving: Promise.resolve(), queued: 0 };
    try {
      const body = await fs.readFile(path.join(this.o.directory, volumeId));
      const nl = body.indexOf(10);
      const h = JSON.parse(body.subarray(0, nl).toString('utf8')) as Header;
      const pendingWords = h.pending?.words ?? 0;
      if (h.format !== 'basalt-changed-blocks' || h.version !== 1 || body.length !== nl + 1 + 4 * (h.words + pendingWords)) throw new Error('not a changed-block file');
      if (h.blockBytes !== this.blockBytes) {
        this.o.log.info({ volume_id: volumeId }, 'changed blocks of another granularity: the volume counts as wholly changed');
        return track;
      }
      if (h.open) {
        this.o.log.warn({ volume_id: volumeId }, 'the volume had writers open when the process ended: it counts as wholly changed');
        return track;
      }
      const words = new Uint32Array(body.buffer.slice(body.byteOffset + nl + 1, body.byteOffset + body.length));
      track.saved = words.slice(0, h.words);
      track.base = h.base;
      if (h.pending) {
        // A backup cut that never ended: give it back, as its failure would.
        track.pending = { backupId: h.pending.backupId, base: h.pending.base, bits: words.slice(h.words) };
        this.giveBack(track, h.pending.backupId);
      }
    } catch (err) {
      // No file: nothing known of the volume, its bits count from no backup.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.o.log.warn({ err, volume_id: volumeId }, 'changed blocks unreadable: the volume counts as wholly changed');
    }
    return track;
  }

  /**
   * Writes a volume's file (aside, flushed, renamed), after the writes queued
   * before; then lets the track go from memory when nothing holds it (no
   * writer, no backup in flight, no other save queued).
   */
  private save(volumeId: string, track: Track): Promise<void> {
    track.queued++;
    const run = async (): Promise<void> => {
      if (this.closed || this.tracks.get(volumeId) !== track) return;
      const bits = this.gather(track, false);
      const pending = track.pending;
      const header: Header = {
        format: 'basalt-changed-blocks', version: 1, blockBytes: this.blockBytes, base: track.base, open: track.open, words: bits.length,
        pending: pending ? { backupId: pending.backupId, base: pending.base, words: pending.bits.length } : null,
      };
      const file = path.join(this.o.directory, volumeId);
      const tmp = `${file}.tmp`;
      const fh = await fs.open(tmp, 'w');
      try {
        await fh.writev([Buffer.from(`${JSON.stringify(header)}\n`), bytesOf(bits), ...(pending ? [bytesOf(pending.bits)] : [])]);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, file);
      const dir = await fs.open(this.o.directory, 'r');
      try {
        await dir.datasync();
      } finally {
        await dir.close();
      }
    };
    const next = track.saving.then(run, run).finally(() => {
      if (--track.queued === 0 && track.writers === 0 && !track.open && !track.pending && this.tracks.get(volumeId) === track) this.tracks.delete(volumeId);
    });
    track.saving = next.catch(() => undefined);
    return next;
  }
}

function wordsFor(sizeBytes: number, shift: number): number {
  return Math.ceil(Math.ceil(sizeBytes / 2 ** shift) / 32);
}

/** `a | b` as a new array as long as the longer (or `a` itself when `b` is empty). */
function or(a: Uint32Array, b: Uint32Array): Uint32Array {
  if (b.length === 0) return a;
  const out = new Uint32Array(Math.max(a.length, b.length));
  out.set(a);
  for (let i = 0; i < b.length; i++) out[i]! |= b[i]!;
  return out;
}

function bytesOf(a: Uint32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** The ranges of set bits, each run of blocks as one range. */
export function rangesOf(bits: Uint32Array, blockBytes: number): ChangedRange[] {
  const out: ChangedRange[] = [];
  let start = -1;
  for (let w = 0; w <= bits.length; w++) {
    const word = w < bits.length ? bits[w]! : 0;
    if ((word === 0 && start < 0) || (word === 0xffffffff && start >= 0)) continue;
    for (let b = 0; b < 32; b++) {
      const set = (word >>> b) & 1;
      const block = w * 32 + b;
      if (set && start < 0) start = block;
      else if (!set && start >= 0) {
        out.push({ offset: start * blockBytes, length: (block - start) * blockBytes });
        start = -1;
      }
    }
  }
  return out;
}
