/**
 * A backup repository: the backups of volumes kept on one {@link BackupTarget}
 * as content-addressed blobs packed into packs, and one manifest per backup.
 *
 * - A volume is cut into blocks of `blockBytes` (16 KiB by default; the last
 *   may be shorter), small so that scattered writes dirty little. A block
 *   that reads as zeros is not stored: its manifest entry says zeros.
 * - Every other block is a blob named by the SHA-256 of its bytes, deflated
 *   when that pays (`backup-pack.ts`), stored once per volume whatever the
 *   number of backups that name it, and packed with others into packs of a
 *   few MiB (`packBytes`), so that an object store holds a few large objects
 *   rather than millions of tiny ones. Each pack ends with its own index
 *   (blob hash → offset, length) and is named by the index's SHA-256; a copy
 *   of the index is stored beside it, so a backup learns what the volume's
 *   packs hold without reading them. Reading a blob back checks its hash, so
 *   a lost, truncated or altered pack or blob is found and the blob named.
 * - A manifest (`backup-manifest.ts`, binary) gives each block's blob and each
 *   blob's pack. An incremental backup reads only the blocks that meet the
 *   changed ranges and takes the others from its parent's manifest, so each
 *   manifest is whole: a restore reads one manifest and the packs it names.
 * - Objects are stored in this order: a pack, its index, and after all of
 *   them the manifest. A backup cut short leaves only packs: those whose index
 *   was stored are found by the next try, which stores none of their blobs
 *   again; the next collection removes them if no manifest names them.
 * - Deleting a backup removes its manifest first, then every pack no
 *   remaining manifest names (its index object first, then the pack). A pack
 *   some manifest still names is kept whole, even when only some of its blobs
 *   are still named: packs are not rewritten (repacked), so a volume's
 *   repository may hold blobs no backup needs until their pack's last backup
 *   goes.
 *
 * Manifests of version 1 (whole 1 MiB chunks as objects of their own, before
 * packs) still restore, verify and delete; a new incremental backup whose
 * parent is one reads the whole volume (its blocks do not line up).
 *
 * Memory: a backup holds 4 bytes per block and 36 per blob of its manifest
 * (and ~50 more per blob read, to number them), and the volume's index (each
 * stored blob's hash → its pack) in a {@link BlobTable}, ~50 bytes a blob.
 *
 * Writers of one volume's backups (create, delete, collect) must not run at
 * once — a collection could remove a pack a create just found stored: the
 * caller holds the volume's backup lock (`backup-volume-<volume id>`).
 *
 * Layout on the target, under `volumes/<volume id>/`: `manifests/<backup id>.bin`
 * (version 1: `.json`), `packs/<first 2 hex>/<pack id>`, `index/<pack id>`,
 * and for version 1 `chunks/<first 2 hex>/<sha-256 hex>`.
 */
import type { Extent } from '../drivers/index.ts';
import { BackupCorruptError, InvalidInputError } from '../errors/index.ts';
import { blobHash, decodeManifest, encodeManifest, ManifestBuilder, type Manifest } from './backup-manifest.ts';
import { BlobEncoder, chunkEntry, decodeBlob, indexedHashOffsets, PackBuilder, packEntries, sha256, type BlobEntry, type EncodedBlob } from './backup-pack.ts';
import { BlobTable } from './blob-table.ts';
import { isValidObjectKey, type BackupTarget } from './backup-target.ts';

export type { Manifest } from './backup-manifest.ts';

const MiB = 1024 * 1024;

/**
 * Block size when the repository's options do not say: 16 KiB, so that 1% of a
 * volume's data rewritten in scattered 4 KiB writes makes an incremental backup
 * read about 1% of the volume (64 KiB blocks: 4%), while hashing (~1.4 GB/s on
 * 16 KiB here) and the manifest (36 bytes a block) stay cheap.
 */
export const DEFAULT_BLOCK_BYTES = 16 * 1024;

/** Pack size when the options do not say: large enough that an object store sees few objects, small enough that a restore holds a few in memory. */
export const DEFAULT_PACK_BYTES = 8 * MiB;

/** Bytes one read of a backup asks the source for at most (then cut into blocks). */
const READ_BYTES = 4 * MiB;

/** Reads (or packs, for a restore or verify) in flight at once. */
const DEFAULT_CONCURRENCY = 3;

/**
 * Bytes one write of a restore hands the destination at most (a run of
 * blocks is cut into writes of this size). Measured on the 2-vCPU VM
 * (kernel 6.18, ext4): writing 1 GiB into a new sparse file's page cache
 * took 4–7 s of CPU in 8 MiB writes (nearly all of it in the kernel's copy
 * into newly allocated page-cache folios) and 0.3 s in 1 MiB writes; 2 MiB
 * writes were sometimes as slow. Smaller writes cost only more system calls.
 */
const WRITE_BYTES = MiB;

/** Bytes a restore writes between the flushes it starts in the background. */
const FLUSH_EVERY_BYTES = 64 * MiB;

/** Packs being stored at once while a backup goes on reading. */
const UPLOADS_IN_FLIGHT = 2;

/** What a backup reads: an open volume or snapshot (a driver's volume handle fits). */
export interface BackupSource {
  readonly sizeBytes: number;
  read(offset: number, length: number): Promise<Buffer>;
  /** When present, ranges that read as zeros are skipped without reading them. */
  blockStatus?(offset: number, length: number): Promise<Extent[]>;
}

/** What a restore writes: an open volume (a driver's volume handle fits). */
export interface RestoreDestination {
  readonly sizeBytes: number;
  write(offset: number, data: Buffer): Promise<void>;
  /** When present, used for the zero blocks of a restore onto a volume that was not empty. */
  writeZeroes?(offset: number, length: number, mayPunch: boolean): Promise<void>;
  flush(): Promise<void>;
  /** When present, told after each background flush that what it covered will not be read soon (see the driver contract's `evict`). */
  evict?(offset: number, length: number): Promise<void>;
}

/** A byte range of a volume. */
export interface ByteRange { offset: number; length: number }

/** How far a backup or restore is: bytes read (backup) or written (restore) of those it has to. */
export interface BackupProgress { doneBytes: number; totalBytes: number }

/** What a backup did. */
export interface BackupStats {
  manifest: Manifest;
  /** Bytes read from the source (zero ranges skipped by block status and inherited blocks are not read). */
  bytesRead: number;
  /** Blobs stored by this backup (new content). */
  blobsStored: number;
  /** Blocks read whose content was already stored (by this or another backup of the volume). */
  blobsReused: number;
  /** Packs this backup stored. */
  packsStored: number;
  /** Objects it stored: each pack, its index, and the manifest. */
  objectsStored: number;
  /** Bytes those took on the target. */
  bytesStored: number;
}

/** What a backup is asked to do. */
export interface CreateBackupInput {
  volumeId: string;
  backupId: string;
  source: BackupSource;
  /** The parent's manifest for an incremental backup. */
  parent?: Manifest;
  /**
   * With a parent: the ranges written since the parent was taken (the rest
   * is the parent's). Absent: everything may have changed, and every block
   * that holds data is read (and only new content stored).
   */
  changed?: readonly ByteRange[];
  createdAt: string;
  onProgress?: (p: BackupProgress) => void;
}

/** What a delete or collection removed. */
export interface RemovedObjects {
  /** Packs removed (a version-1 chunk object counts as one). */
  packsRemoved: number;
}

/** Settings of a repository. */
export interface BackupRepositoryOptions {
  /** Block size of new backups. Default {@link DEFAULT_BLOCK_BYTES}. */
  blockBytes?: number;
  /** Stored bytes at which a pack is closed. Default {@link DEFAULT_PACK_BYTES}. */
  packBytes?: number;
  /** Reads, or packs of a restore or verify, in flight at once. Default 3. */
  concurrency?: number;
}

/** The backups kept on one target. */
export class BackupRepository {
  private readonly blockBytes: number;
  private readonly packBytes: number;
  private readonly concurrency: number;

  constructor(readonly target: BackupTarget, options: BackupRepositoryOptions = {}) {
    this.blockBytes = options.blockBytes ?? DEFAULT_BLOCK_BYTES;
    this.packBytes = options.packBytes ?? DEFAULT_PACK_BYTES;
    this.concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
    if (!Number.isInteger(this.blockBytes) || this.blockBytes < 4096 || this.blockBytes % 4096 !== 0 || READ_BYTES % this.blockBytes !== 0) {
      throw new InvalidInputError(`Invalid input received: backup block size ${this.blockBytes} must be a multiple of 4096 bytes that divides 4 MiB.`);
    }
  }

  /**
   * Backs `source` up: stores the blobs the volume's packs lack, in new
   * packs, then the manifest.
   * @throws InvalidInputError for an id that cannot name an object, or a
   *   parent of another volume or of a larger size; DriverError from the target
   *   or the source (retryable ones leave stored packs for the next try).
   */
  async create(input: CreateBackupInput): Promise<BackupStats> {
    const { volumeId, backupId, source, parent } = input;
    const manifestKey = this.manifestKey(volumeId, backupId);
    if (parent && (parent.volumeId !== volumeId || parent.sizeBytes > source.sizeBytes)) {
      throw new InvalidInputError(`Invalid input received: backup ${parent.backupId} is not a backup of volume ${volumeId} at this size: it cannot be the parent of an incremental backup.`);
    }
    const { blockBytes } = this;
    const sizeBytes = source.sizeBytes;
    const count = Math.ceil(sizeBytes / blockBytes);
    const lengthOf = (i: number, size = sizeBytes) => Math.min(blockBytes, size - i * blockBytes);
    // A parent whose blocks line up with ours lends the blocks outside the changed ranges.
    const base = parent?.version === 2 && parent.blockBytes === blockBytes && input.changed ? parent : undefined;
    const changed = base ? blocksMeeting(input.changed!, blockBytes, count) : undefined;
    const data = await dataBlocks(source, blockBytes, count);

    // Where each blob of the volume is: the parent's, those of the packs stored by any other backup or a try cut short, then this run's.
    const where = await this.loadIndex(volumeId, parent);

    // What each block is; the blocks to read, as runs of at most READ_BYTES.
    const manifest = new ManifestBuilder(count, base);
    const reads: Array<{ first: number; n: number }> = [];
    const perRead = READ_BYTES / blockBytes;
    let toRead = 0;
    for (let i = 0; i < count; i++) {
      if (data && !data[i]) continue;
      if (base && !changed![i] && i < base.blocks.length && lengthOf(i, base.sizeBytes) === lengthOf(i)) {
        manifest.inherit(i);
        continue;
      }
      const last = reads[reads.length - 1];
      if (last && last.first + last.n === i && last.n < perRead) last.n++;
      else reads.push({ first: i, n: 1 });
      toRead += lengthOf(i);
    }

    const stats = { bytesRead: 0, blobsStored: 0, blobsReused: 0, packsStored: 0, bytesStored: 0 };
    const packs = new PackWriter(this.packBytes, Math.max(1, 4 * Math.floor(this.packBytes / blockBytes)), async (pack) => {
      for (const h of pack.hashes) where.set(h, 0, pack.id);
      await this.target.put(this.packKey(volumeId, pack.id), pack.body);
      await this.target.put(this.indexKey(volumeId, pack.id), pack.index);
      stats.packsStored++;
      stats.bytesStored += pack.body.length + pack.index.length;
    });
    // Sampling for compression: a long read on its own, trying its first new block and, when that
    // did not pay, one in 256 after it (neighbouring blocks tend to be alike, and reads run side by
    // side); short scattered reads through one sampler for the whole backup, trying one in 64.
    const scattered = new BlobEncoder(64);
    const zero = Buffer.alloc(blockBytes);
    input.onProgress?.({ doneBytes: 0, totalBytes: toRead });
    const reading = inParallel(reads, this.concurrency, async ({ first, n }) => {
      const offset = first * blockBytes;
      const length = Math.min(n * blockBytes, sizeBytes - offset);
      const bytes = await source.read(offset, length);
      stats.bytesRead += length;
      const encoder = length >= MiB ? new BlobEncoder(256) : scattered;
      for (let k = 0; k < n; k++) {
        const block = bytes.subarray(k * blockBytes, Math.min((k + 1) * blockBytes, length));
        if (block.equals(block.length === blockBytes ? zero : zero.subarray(0, block.length))) continue;
        const hash = sha256(block);
        manifest.read(first + k, hash);
        if (where.packOf(hash, 0) !== undefined) {
          stats.blobsReused++;
          continue;
        }
        // Claimed before the first await: the same content met again meanwhile is this blob.
        where.set(hash, 0, '');
        stats.blobsStored++;
        const sealed = packs.add(hash, encoder.wantsTry() ? await encoder.encode(block) : { deflated: false, payload: block });
        if (sealed) await sealed;
      }
      input.onProgress?.({ doneBytes: stats.bytesRead, totalBytes: toRead });
    });
    // Whatever happens, nothing is still being stored once this returns (the caller's lock covers every write).
    await reading.catch(async (err: unknown) => { await packs.settle(); throw err; });
    await packs.finish();

    const made = manifest.finish({ backupId, volumeId, sizeBytes, blockBytes, parentId: parent?.backupId ?? null, createdAt: input.createdAt }, (hashes, at) => where.packOf(hashes, at));
    const body = encodeManifest(made);
    await this.target.put(manifestKey, body);
    stats.bytesStored += body.length;
    return { manifest: made, ...stats, objectsStored: 2 * stats.packsStored + 1 };
  }

  /**
   * A backup's manifest, or undefined when it has none (never finished, or deleted).
   * @throws BackupCorruptError when the stored manifest is not a whole one of this backup.
   */
  async manifest(volumeId: string, backupId: string): Promise<Manifest | undefined> {
    for (const key of [this.manifestKey(volumeId, backupId), this.v1ManifestKey(volumeId, backupId)]) {
      const body = await this.target.get(key);
      if (!body) continue;
      const what = `Backup ${backupId} of volume ${volumeId}: its manifest ${key} on ${this.target.location}`;
      const m = decodeManifest(body, what);
      if (m.backupId !== backupId || m.volumeId !== volumeId) throw new BackupCorruptError(`${what} is not a manifest of this backup`);
      return m;
    }
    return undefined;
  }

  /**
   * Writes a backup onto `destination`, checking every blob it reads.
   * `zeroed`: the destination reads as zeros already (a new volume), so zero
   * blocks are skipped; otherwise they are written as zeros.
   * @throws InvalidInputError when the destination is smaller than the backup;
   *   BackupCorruptError naming the first blob that is missing or fails its
   *   check (and its pack); DriverError from the target or the destination.
   */
  async restore(manifest: Manifest, destination: RestoreDestination, options: { zeroed: boolean; onProgress?: (p: BackupProgress) => void }): Promise<{ bytesWritten: number }> {
    const { blockBytes, sizeBytes, blocks, blobPacks } = manifest;
    if (destination.sizeBytes < sizeBytes) {
      throw new InvalidInputError(`Invalid input received: the volume (${destination.sizeBytes} bytes) is smaller than backup ${manifest.backupId} (${sizeBytes} bytes).`);
    }
    const offsetOf = (i: number) => i * blockBytes;
    const endOf = (i: number) => Math.min((i + 1) * blockBytes, sizeBytes);
    // The blocks each pack fills, in order.
    const byPack: number[][] = manifest.packs.map(() => []);
    for (let i = 0; i < blocks.length; i++) if (blocks[i]) byPack[blobPacks[blocks[i]! - 1]!]!.push(i);
    let done = 0;
    let bytesWritten = 0;
    const progress = (n: number) => { done += n; options.onProgress?.({ doneBytes: done, totalBytes: sizeBytes }); };
    const flusher = new Flusher(destination);
    for (const [first, last] of runs(zeros(blocks))) {
      const length = endOf(last) - offsetOf(first);
      if (!options.zeroed) await writeZeroes(destination, offsetOf(first), length);
      progress(length);
    }
    await inParallel(range(manifest.packs.length).filter((p) => byPack[p]!.length), this.concurrency, async (p) => {
      const take = await this.openPack(manifest, p);
      const mine = byPack[p]!;
      for (const [first, last] of runs(mine)) {
        const parts: Buffer[] = [];
        for (let i = first; i <= last; i++) {
          const n = blocks[i]! - 1;
          const bytes = await take(n);
          if (bytes.length !== endOf(i) - offsetOf(i)) throw new BackupCorruptError(`Backup ${manifest.backupId}: blob ${blobHash(manifest, n)} holds ${bytes.length} bytes where block ${i} needs ${endOf(i) - offsetOf(i)}`);
          parts.push(bytes);
        }
        // Blobs stored as they are lie back to back in their pack: a run of them is written straight from it.
        const run = parts.length === 1 ? parts[0]! : adjacent(parts) ?? Buffer.concat(parts);
        for (let at = 0; at < run.length; at += WRITE_BYTES) await destination.write(offsetOf(first) + at, run.subarray(at, at + WRITE_BYTES));
        bytesWritten += run.length;
        progress(run.length);
        flusher.wrote(run.length);
      }
    });
    await flusher.settle();
    await destination.flush();
    return { bytesWritten };
  }

  /**
   * Reads every blob a backup names back and checks it, telling `onProgress`
   * after each pack. Returns how many distinct blobs it names and the hashes of those that are
   * missing or fail their check, with their pack's (none: the backup is whole).
   * @throws DriverError from the target (a pack that cannot be read for now is not a bad one).
   */
  async verify(manifest: Manifest, onProgress?: (p: { doneBlobs: number; totalBlobs: number }) => void): Promise<{ blobs: number; bad: string[] }> {
    const byPack: number[][] = manifest.packs.map(() => []);
    manifest.blobPacks.forEach((p, n) => byPack[p]!.push(n));
    const bad: string[] = [];
    let done = 0;
    await inParallel(range(manifest.packs.length), this.concurrency, async (p) => {
      const take = await this.openPack(manifest, p);
      for (const n of byPack[p]!) {
        try {
          await take(n);
        } catch (err) {
          if (!(err instanceof BackupCorruptError)) throw err;
          bad.push(blobHash(manifest, n));
        }
      }
      done += byPack[p]!.length;
      onProgress?.({ doneBlobs: done, totalBlobs: manifest.blobPacks.length });
    });
    return { blobs: manifest.blobPacks.length, bad: bad.sort() };
  }

  /**
   * Deletes a backup: its manifest, then every pack of the volume no
   * remaining manifest names. Idempotent (a backup without a manifest
   * only has its leftovers collected).
   * Returns how many packs went (a version-1 chunk object counts as one).
   */
  async delete(volumeId: string, backupId: string): Promise<RemovedObjects> {
    await this.target.delete(this.manifestKey(volumeId, backupId));
    await this.target.delete(this.v1ManifestKey(volumeId, backupId));
    return this.collect(volumeId);
  }

  /**
   * Removes the packs of a volume that no manifest names, with their index
   * objects: what backups cut short and deleted backups left. The caller
   * holds the volume's backup lock.
   * @throws BackupCorruptError when a manifest cannot be read (then nothing is removed: a pack it names could go).
   */
  async collect(volumeId: string): Promise<RemovedObjects> {
    const prefix = `volumes/${volumeId}/`;
    const keys = await this.target.list(prefix);
    const named = new Set<string>();
    for (const key of keys) {
      const m = /^volumes\/[^/]+\/manifests\/([^/]+)\.(bin|json)$/.exec(key);
      const body = m ? await this.target.get(key) : undefined;
      if (!body) continue;
      const manifest = decodeManifest(body, `Backup ${m![1]} of volume ${volumeId}: its manifest ${key} on ${this.target.location}`);
      for (const id of manifest.packs) named.add(manifest.version === 1 ? this.chunkKey(volumeId, id) : this.packKey(volumeId, id));
    }
    const unnamed = (k: string) => !named.has(k);
    const indexes = keys.filter((k) => k.startsWith(`${prefix}index/`) && unnamed(this.packKey(volumeId, k.slice(k.lastIndexOf('/') + 1))));
    const orphans = keys.filter((k) => (k.startsWith(`${prefix}packs/`) || k.startsWith(`${prefix}chunks/`)) && unnamed(k));
    // Index objects first: an index found means its pack is there.
    await inParallel(indexes, 8, (k) => this.target.delete(k));
    await inParallel(orphans, 8, (k) => this.target.delete(k));
    return { packsRemoved: orphans.length };
  }

  /**
   * Where the blobs of the volume's stored packs are. A parent's manifest
   * (version 2) already says where each of its blobs is, so only the index
   * objects of the packs it does not name are read (packs of other backups,
   * of tries cut short): an incremental backup whose parent names every pack
   * reads none, where it read one per pack (128 for 1 GiB of data). A blob
   * the parent does not name that lies in a pack it names is then not found,
   * which costs only its deduplication.
   */
  private async loadIndex(volumeId: string, parent?: Manifest): Promise<BlobPlaces> {
    const where = new BlobPlaces(parent?.blobPacks.length);
    const named = new Set(parent?.version === 2 ? parent.packs : []);
    if (named.size) {
      const packs = parent!.packs.map((id) => where.number(id));
      parent!.blobPacks.forEach((p, n) => where.table.set(parent!.blobHashes, n * 32, packs[p]!));
    }
    const keys = (await this.target.list(`volumes/${volumeId}/index/`)).filter((key) => !named.has(key.slice(key.lastIndexOf('/') + 1)));
    await inParallel(keys, 8, async (key) => {
      const id = key.slice(key.lastIndexOf('/') + 1);
      const index = await this.target.get(key);
      if (index) for (const at of indexedHashOffsets(index, id)) where.set(index, at, id);
    });
    return where;
  }

  /**
   * Reads pack `p` of a manifest. Returns a function giving blob `n` of it,
   * decoded and checked against its hash (each once).
   * @throws DriverError when the target fails; the function throws BackupCorruptError naming the blob.
   */
  private async openPack(m: Manifest, p: number): Promise<(n: number) => Promise<Buffer>> {
    const id = m.packs[p]!;
    const key = m.version === 1 ? this.chunkKey(m.volumeId, id) : this.packKey(m.volumeId, id);
    const at = `${key} on ${this.target.location}`;
    const stored = await this.target.get(key);
    let entries: Map<string, BlobEntry> | undefined;
    let problem: { why: string; cause?: unknown } | undefined;
    if (!stored) problem = { why: `is missing: ${at} is not there` };
    else {
      try {
        entries = m.version === 1 ? new Map([[id, chunkEntry(stored)]]) : packEntries(stored, id);
      } catch (err) {
        problem = { why: `cannot be read: ${at} is damaged (${(err as Error).message})`, cause: err };
      }
    }
    const take = async (n: number): Promise<Buffer> => {
      const hash = blobHash(m, n);
      const blob = `Backup ${m.backupId}: blob ${hash}`;
      if (problem) throw new BackupCorruptError(`${blob} ${problem.why}`, { cause: problem.cause });
      const e = entries!.get(hash);
      if (!e) throw new BackupCorruptError(`${blob} is not in its pack ${at}`);
      let bytes: Buffer;
      try {
        bytes = await decodeBlob(e, stored!.subarray(e.offset, e.offset + e.length));
      } catch (err) {
        throw new BackupCorruptError(`${blob} in ${at} cannot be decoded`, { cause: err });
      }
      if (sha256(bytes).toString('hex') !== hash) throw new BackupCorruptError(`${blob} in ${at} fails its checksum`);
      return bytes;
    };
    const taken = new Map<number, Promise<Buffer>>();
    return (n) => {
      let got = taken.get(n);
      if (!got) taken.set(n, got = take(n));
      return got;
    };
  }

  private manifestKey(volumeId: string, backupId: string): string {
    return checkedKey(`volumes/${volumeId}/manifests/${backupId}.bin`);
  }

  private v1ManifestKey(volumeId: string, backupId: string): string {
    return checkedKey(`volumes/${volumeId}/manifests/${backupId}.json`);
  }

  private packKey(volumeId: string, id: string): string {
    return checkedKey(`volumes/${volumeId}/packs/${id.slice(0, 2)}/${id}`);
  }

  private indexKey(volumeId: string, id: string): string {
    return checkedKey(`volumes/${volumeId}/index/${id}`);
  }

  private chunkKey(volumeId: string, hash: string): string {
    return checkedKey(`volumes/${volumeId}/chunks/${hash.slice(0, 2)}/${hash}`);
  }
}

/**
 * Which pack of the volume holds each blob (by its hash), as a backup learns
 * it: '' for a blob this backup claimed whose pack is not stored yet.
 */
class BlobPlaces {
  /** Each blob's pack, as a number into `packs`. */
  readonly table: BlobTable;
  private readonly packs: string[] = [''];
  private readonly numbers = new Map<string, number>([['', 0]]);

  constructor(expected?: number) {
    this.table = new BlobTable(expected);
  }

  /** The number of pack `id`. */
  number(id: string): number {
    let n = this.numbers.get(id);
    if (n === undefined) {
      this.numbers.set(id, n = this.packs.length);
      this.packs.push(id);
    }
    return n;
  }

  /** The pack of the blob whose hash is at `hash[at, at + 32)`: '' when claimed, undefined when unknown. */
  packOf(hash: Buffer, at: number): string | undefined {
    const n = this.table.get(hash, at);
    return n < 0 ? undefined : this.packs[n];
  }

  set(hash: Buffer, at: number, pack: string): void {
    this.table.set(hash, at, this.number(pack));
  }
}

/** A sealed pack on its way to the target. */
interface SealedPack { id: string; body: Buffer; index: Buffer; hashes: Buffer[] }

/**
 * Fills packs with blobs and stores each once full (`packBytes` stored, or
 * `maxBlobs` blobs, which bounds what a restore decodes from one pack), with
 * up to {@link UPLOADS_IN_FLIGHT} stores going on while more blobs come.
 */
class PackWriter {
  private current = new PackBuilder();
  private readonly uploads = new Set<Promise<void>>();
  private failure: { err: unknown } | undefined;

  constructor(private readonly packBytes: number, private readonly maxBlobs: number, private readonly store: (pack: SealedPack) => Promise<void>) {}

  /**
   * Adds a blob. Returns a promise, to be awaited, when that filled a pack
   * (it resolves once the pack's store has begun: later when the stores fall behind).
   * @throws (through the promise) what a store threw.
   */
  add(hash: Buffer, blob: EncodedBlob): Promise<void> | undefined {
    this.current.add(hash, blob);
    return this.current.sizeBytes >= this.packBytes || this.current.blobCount >= this.maxBlobs ? this.seal() : undefined;
  }

  /** Stores the last pack and waits for every store. @throws what a store threw. */
  async finish(): Promise<void> {
    await this.seal();
    await this.settle();
    if (this.failure) throw this.failure.err;
  }

  /** Waits for the stores under way (they never reject: a failure is kept for `add` and `finish`). */
  async settle(): Promise<void> {
    await Promise.all(this.uploads);
  }

  private async seal(): Promise<void> {
    const full = this.current;
    this.current = new PackBuilder();
    if (full.blobCount) {
      const pack = full.seal();
      while (this.uploads.size >= UPLOADS_IN_FLIGHT) await Promise.race(this.uploads);
      const upload: Promise<void> = this.store(pack)
        .catch((err: unknown) => { this.failure ??= { err }; })
        .finally(() => this.uploads.delete(upload));
      this.uploads.add(upload);
    }
    if (this.failure) throw this.failure.err;
  }
}

/**
 * Flushes a restore's destination every {@link FLUSH_EVERY_BYTES} written, in
 * the background, so that writing back to disk overlaps reading and checking
 * packs instead of all waiting for the final flush; after each flush the
 * destination may drop what is now on disk from its caches (`evict`). A
 * restore never reads back what it wrote, and keeping it cached cost the most
 * of all here: on the 2-vCPU VM (a Firecracker guest whose free memory goes
 * back to the host), writing 1 GiB into pages the page cache takes fresh cost
 * 3–6 s of kernel CPU (`copy_folio_from_iter_atomic`, 47% of a restore's
 * profile), and 0.3 s into pages it had just dropped.
 */
class Flusher {
  private since = 0;
  private running: Promise<void> | undefined;
  private failure: { err: unknown } | undefined;

  constructor(private readonly destination: RestoreDestination) {}

  /** Counts bytes written; starts a flush when enough were and none is running. @throws what an earlier flush threw. */
  wrote(bytes: number): void {
    if (this.failure) throw this.failure.err;
    this.since += bytes;
    this.startIfDue();
  }

  /**
   * Starts a flush when {@link FLUSH_EVERY_BYTES} were written since the last
   * one began and none is running. A flush slower than the writes starts the
   * next one as it ends, so a restore that outruns its disk still drops its
   * pages every flush and not only at the end.
   */
  private startIfDue(): void {
    if (this.since < FLUSH_EVERY_BYTES || this.running || this.failure) return;
    this.since = 0;
    this.running = this.destination.flush()
      .then(() => this.destination.evict?.(0, this.destination.sizeBytes))
      .catch((err: unknown) => { this.failure ??= { err }; })
      .finally(() => { this.running = undefined; this.startIfDue(); });
  }

  /** Waits for the flushes under way, the one a finishing flush starts included. @throws what a flush threw. */
  async settle(): Promise<void> {
    while (this.running) await this.running;
    if (this.failure) throw this.failure.err;
  }
}

/** `parts` as one buffer when they lie back to back in one allocation (a view, no copy); else undefined. */
function adjacent(parts: readonly Buffer[]): Buffer | undefined {
  const first = parts[0]!;
  let end = first.byteOffset + first.length;
  for (let k = 1; k < parts.length; k++) {
    if (parts[k]!.buffer !== first.buffer || parts[k]!.byteOffset !== end) return undefined;
    end += parts[k]!.length;
  }
  return Buffer.from(first.buffer, first.byteOffset, end - first.byteOffset);
}

/** `key`, if a target must accept it. @throws InvalidInputError otherwise (an id that cannot name an object). */
function checkedKey(key: string): string {
  if (!isValidObjectKey(key)) throw new InvalidInputError(`Invalid input received: ${key} cannot name a backup object.`);
  return key;
}

/** Writes zeros over a range, with write-zeroes when the destination has it, else in writes of at most 4 MiB. */
async function writeZeroes(destination: RestoreDestination, offset: number, length: number): Promise<void> {
  if (destination.writeZeroes) return destination.writeZeroes(offset, length, true);
  const zero = Buffer.alloc(Math.min(length, READ_BYTES));
  for (let at = 0; at < length; at += zero.length) await destination.write(offset + at, zero.subarray(0, Math.min(zero.length, length - at)));
}

/** Flags (1) for the blocks that meet any of `ranges`. */
function blocksMeeting(ranges: readonly ByteRange[], blockBytes: number, count: number, into = new Uint8Array(count)): Uint8Array {
  for (const r of ranges) {
    if (r.length <= 0) continue;
    const last = Math.min(count - 1, Math.floor((r.offset + r.length - 1) / blockBytes));
    into.fill(1, Math.floor(r.offset / blockBytes), last + 1);
  }
  return into;
}

/** Flags (1) for the blocks that hold data by the source's block status; undefined (all may) without it. */
async function dataBlocks(source: BackupSource, blockBytes: number, count: number): Promise<Uint8Array | undefined> {
  if (!source.blockStatus) return undefined;
  const out = new Uint8Array(count);
  let offset = 0;
  while (offset < source.sizeBytes) {
    const extents = await source.blockStatus(offset, source.sizeBytes - offset);
    for (const e of extents) {
      const end = Math.min(offset + e.length, source.sizeBytes);
      if (!e.zero && end > offset) blocksMeeting([{ offset, length: end - offset }], blockBytes, count, out);
      offset = end;
      if (offset >= source.sizeBytes) break;
    }
  }
  return out;
}

/** `[first, last]` of each run of consecutive numbers in ascending `xs`. */
function runs(xs: Iterable<number>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const x of xs) {
    const r = out[out.length - 1];
    if (r && r[1] + 1 === x) r[1] = x;
    else out.push([x, x]);
  }
  return out;
}

/** The indexes of the zero entries of `xs`, in order. */
function* zeros(xs: Uint32Array): Generator<number> {
  for (let i = 0; i < xs.length; i++) if (xs[i] === 0) yield i;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** Runs `fn` over `items` with at most `limit` running at once; the first failure stops new starts and is thrown once the running ones settle. */
async function inParallel<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (!failure && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.err;
}
