/**
 * A backup repository: the backups of volumes kept on one {@link BackupTarget}
 * as content-addressed chunks and one manifest per backup.
 *
 * - A volume is cut into chunks of `chunkBytes` (the last may be shorter). A
 *   chunk that reads as zeros is not stored: the manifest leaves it out.
 * - A chunk is stored under the SHA-256 of its bytes, compressed when that
 *   makes it smaller, so identical chunks are stored once across the backups
 *   of a volume; reading one back checks the hash, so a lost, truncated or
 *   altered chunk is found and named.
 * - A manifest lists, by chunk index, the hash of every chunk of the volume
 *   at the time of the backup. An incremental backup reads only the chunks
 *   that meet the changed ranges and takes the others from its parent's
 *   manifest, so each manifest is whole: a restore reads one manifest only.
 * - A manifest is stored after all its chunks: a backup cut short leaves only
 *   chunks, which the next try finds stored and the next collection removes
 *   if nothing names them. Deleting a backup removes its manifest first, then
 *   the chunks no other manifest of the volume names.
 *
 * Writers of one volume's backups (create, delete, collect) must not run at
 * once — a collection could remove a chunk a create just found stored: the
 * caller holds the volume's backup lock (`backup-volume-<volume id>`).
 *
 * Layout on the target: `volumes/<volume id>/manifests/<backup id>.json`,
 * `volumes/<volume id>/chunks/<first 2 hex>/<sha-256 hex>`.
 */
import { webcrypto } from 'node:crypto';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import type { Extent } from '../drivers/index.ts';
import { BackupCorruptError, InvalidInputError } from '../errors/index.ts';
import { isValidObjectKey, type BackupTarget } from './backup-target.ts';

const deflateRaw = promisify(zlib.deflateRaw);
const inflateRaw = promisify(zlib.inflateRaw);

/** Chunk size when the repository's options do not say: small enough that a few scattered writes dirty little, large enough to keep the object count down. */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;

/** Chunks read, hashed, compressed and stored at once. */
const DEFAULT_CONCURRENCY = 4;

/** First byte of a stored chunk: how the rest is encoded. */
const STORED_RAW = 0;
const STORED_DEFLATE = 1;

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
  /** When present, used for the zero chunks of a restore onto a volume that was not empty. */
  writeZeroes?(offset: number, length: number, mayPunch: boolean): Promise<void>;
  flush(): Promise<void>;
}

/** A byte range of a volume. */
export interface ByteRange { offset: number; length: number }

/** The record of one backup, stored as JSON after all its chunks. */
export interface Manifest {
  format: 'basalt-backup';
  version: 1;
  backupId: string;
  volumeId: string;
  sizeBytes: number;
  chunkBytes: number;
  /** The backup this one is an increment of (its unchanged chunks came from there), or null. */
  parentId: string | null;
  createdAt: string;
  /** `[chunk index, SHA-256 hex]` of every chunk that does not read as zeros, by index. */
  chunks: Array<[number, string]>;
}

/** How far a backup or restore is. */
export interface BackupProgress { doneBytes: number; totalBytes: number }

/** What a backup did. */
export interface BackupStats {
  manifest: Manifest;
  /** Bytes read from the source (zero ranges skipped by block status and inherited chunks are not read). */
  bytesRead: number;
  /** Chunks stored by this backup (new content). */
  chunksStored: number;
  /** Bytes those took on the target. */
  bytesStored: number;
  /** Chunks whose content was already stored (by this or another backup of the volume). */
  chunksReused: number;
}

/** What a backup is asked to do. */
export interface CreateBackupInput {
  volumeId: string;
  backupId: string;
  source: BackupSource;
  /** The parent's manifest for an incremental backup; its chunk size is kept. */
  parent?: Manifest;
  /**
   * With a parent: the ranges written since the parent was taken (the rest
   * is the parent's). Absent: everything may have changed, and every chunk
   * that is not zero is read.
   */
  changed?: readonly ByteRange[];
  createdAt: string;
  onProgress?: (p: BackupProgress) => void;
}

/** Settings of a repository. */
export interface BackupRepositoryOptions {
  /** Chunk size of new full backups (incremental ones keep their parent's). Default {@link DEFAULT_CHUNK_BYTES}. */
  chunkBytes?: number;
  /** Chunks in flight at once. Default 4. */
  concurrency?: number;
}

/** The backups kept on one target. */
export class BackupRepository {
  private readonly chunkBytes: number;
  private readonly concurrency: number;

  constructor(readonly target: BackupTarget, options: BackupRepositoryOptions = {}) {
    this.chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
    if (!Number.isInteger(this.chunkBytes) || this.chunkBytes < 4096 || this.chunkBytes % 4096 !== 0) {
      throw new InvalidInputError(`Invalid input received: backup chunk size ${this.chunkBytes} must be a positive multiple of 4096 bytes.`);
    }
  }

  /**
   * Backs `source` up: stores the chunks the target lacks, then the manifest.
   * @throws InvalidInputError for an id that cannot name an object, or a
   *   parent of another volume or of a larger size; DriverError from the target
   *   or the source (retryable ones leave stored chunks for the next try).
   */
  async create(input: CreateBackupInput): Promise<BackupStats> {
    const { volumeId, backupId, source, parent } = input;
    const manifestKey = this.manifestKey(volumeId, backupId);
    if (parent && (parent.volumeId !== volumeId || parent.sizeBytes > source.sizeBytes)) {
      throw new InvalidInputError(`Invalid input received: backup ${parent.backupId} is not a backup of volume ${volumeId} at this size: it cannot be the parent of an incremental backup.`);
    }
    const chunkBytes = parent?.chunkBytes ?? this.chunkBytes;
    const count = Math.ceil(source.sizeBytes / chunkBytes);
    const inherited = new Map(parent?.chunks ?? []);
    const toRead = parent && input.changed ? chunksMeeting(input.changed, chunkBytes, count) : undefined;
    const data = await dataChunks(source, chunkBytes, count);
    const stats = { bytesRead: 0, chunksStored: 0, bytesStored: 0, chunksReused: 0 };
    const chunks = new Map<number, string>();
    const zero = Buffer.alloc(chunkBytes);
    const seen = new Map<string, Promise<void>>();
    let done = 0;
    await inParallel(range(count), this.concurrency, async (index) => {
      const offset = index * chunkBytes;
      const length = Math.min(chunkBytes, source.sizeBytes - offset);
      // Unchanged since the parent, and the same chunk there (not the parent's short last one): the parent's.
      if (toRead && !toRead.has(index) && Math.min(chunkBytes, parent!.sizeBytes - offset) === length) {
        const hash = inherited.get(index);
        if (hash) chunks.set(index, hash);
      } else if (data.has(index)) {
        const bytes = await source.read(offset, length);
        stats.bytesRead += bytes.length;
        if (!bytes.equals(length === chunkBytes ? zero : zero.subarray(0, length))) {
          const hash = await sha256(bytes);
          chunks.set(index, hash);
          const key = this.chunkKey(volumeId, hash);
          // The same content twice in this backup is stored by the first, even while it is being stored.
          const storing = seen.get(hash);
          if (storing) {
            await storing;
            stats.chunksReused++;
          } else {
            const store = (async () => {
              if (await this.target.has(key)) return void stats.chunksReused++;
              const stored = await encodeChunk(bytes);
              await this.target.put(key, stored);
              stats.chunksStored++;
              stats.bytesStored += stored.length;
            })();
            seen.set(hash, store);
            await store;
          }
        }
      }
      done += length;
      input.onProgress?.({ doneBytes: done, totalBytes: source.sizeBytes });
    });
    const manifest: Manifest = {
      format: 'basalt-backup', version: 1, backupId, volumeId, sizeBytes: source.sizeBytes, chunkBytes,
      parentId: parent?.backupId ?? null, createdAt: input.createdAt,
      chunks: [...chunks].sort((a, b) => a[0] - b[0]),
    };
    const body = Buffer.from(JSON.stringify(manifest));
    await this.target.put(manifestKey, body);
    stats.bytesStored += body.length;
    return { manifest, ...stats };
  }

  /**
   * A backup's manifest, or undefined when it has none (never finished, or deleted).
   * @throws BackupCorruptError when the stored manifest is not one.
   */
  async manifest(volumeId: string, backupId: string): Promise<Manifest | undefined> {
    const key = this.manifestKey(volumeId, backupId);
    const body = await this.target.get(key);
    if (!body) return undefined;
    let m: Manifest;
    try {
      m = JSON.parse(body.toString('utf8')) as Manifest;
    } catch (err) {
      throw new BackupCorruptError(`Backup ${backupId} of volume ${volumeId}: its manifest ${key} on ${this.target.location} is not valid JSON`, { cause: err });
    }
    if (m?.format !== 'basalt-backup' || m.version !== 1 || m.backupId !== backupId || m.volumeId !== volumeId || !Array.isArray(m.chunks)) {
      throw new BackupCorruptError(`Backup ${backupId} of volume ${volumeId}: its manifest ${key} on ${this.target.location} is not a manifest of this backup`);
    }
    return m;
  }

  /**
   * Writes a backup onto `destination`, checking every chunk it reads.
   * `zeroed`: the destination reads as zeros already (a new volume), so zero
   * chunks are skipped; otherwise they are written as zeros.
   * @throws InvalidInputError when the destination is smaller than the backup;
   *   BackupCorruptError naming the first chunk that is missing or fails its
   *   check; DriverError from the target or the destination.
   */
  async restore(manifest: Manifest, destination: RestoreDestination, options: { zeroed: boolean; onProgress?: (p: BackupProgress) => void }): Promise<{ bytesWritten: number }> {
    if (destination.sizeBytes < manifest.sizeBytes) {
      throw new InvalidInputError(`Invalid input received: the volume (${destination.sizeBytes} bytes) is smaller than backup ${manifest.backupId} (${manifest.sizeBytes} bytes).`);
    }
    const { chunkBytes, sizeBytes } = manifest;
    const hashes = new Map(manifest.chunks);
    let bytesWritten = 0;
    let done = 0;
    await inParallel(range(Math.ceil(sizeBytes / chunkBytes)), this.concurrency, async (index) => {
      const offset = index * chunkBytes;
      const length = Math.min(chunkBytes, sizeBytes - offset);
      const hash = hashes.get(index);
      if (hash) {
        const bytes = await this.readChunk(manifest, hash);
        if (bytes.length !== length) throw new BackupCorruptError(`Backup ${manifest.backupId}: chunk ${hash} holds ${bytes.length} bytes where chunk ${index} needs ${length}`);
        await destination.write(offset, bytes);
        bytesWritten += length;
      } else if (!options.zeroed) {
        if (destination.writeZeroes) await destination.writeZeroes(offset, length, true);
        else await destination.write(offset, Buffer.alloc(length));
      }
      done += length;
      options.onProgress?.({ doneBytes: done, totalBytes: sizeBytes });
    });
    await destination.flush();
    return { bytesWritten };
  }

  /**
   * Reads every chunk a backup names back and checks it.
   * Returns the chunks that are missing or fail their check (none: the backup is whole).
   * @throws DriverError from the target (a chunk that cannot be read for now is not a bad chunk).
   */
  async verify(manifest: Manifest): Promise<{ chunks: number; bad: string[] }> {
    const unique = [...new Set(manifest.chunks.map(([, h]) => h))];
    const bad: string[] = [];
    await inParallel(unique, this.concurrency, async (hash) => {
      try {
        await this.readChunk(manifest, hash);
      } catch (err) {
        if (!(err instanceof BackupCorruptError)) throw err;
        bad.push(hash);
      }
    });
    return { chunks: unique.length, bad: bad.sort() };
  }

  /**
   * Deletes a backup: its manifest, then every chunk of the volume no
   * remaining manifest names. Idempotent (a backup without a manifest
   * only has its leftovers collected).
   * Returns how many chunks went.
   */
  async delete(volumeId: string, backupId: string): Promise<{ chunksRemoved: number }> {
    await this.target.delete(this.manifestKey(volumeId, backupId));
    return this.collect(volumeId);
  }

  /**
   * Removes the chunks of a volume that no manifest names: what backups cut
   * short and deleted backups left. The caller holds the volume's backup lock.
   * @throws BackupCorruptError when a manifest cannot be read (then nothing is removed: a chunk it names could go).
   */
  async collect(volumeId: string): Promise<{ chunksRemoved: number }> {
    const prefix = `volumes/${volumeId}/`;
    const keys = await this.target.list(prefix);
    const named = new Set<string>();
    for (const key of keys) {
      const m = /^volumes\/[^/]+\/manifests\/([^/]+)\.json$/.exec(key);
      if (!m) continue;
      const manifest = await this.manifest(volumeId, m[1]!);
      for (const [, hash] of manifest?.chunks ?? []) named.add(hash);
    }
    const orphans = keys.filter((k) => k.startsWith(`${prefix}chunks/`) && !named.has(k.slice(k.lastIndexOf('/') + 1)));
    await inParallel(orphans, this.concurrency, (k) => this.target.delete(k));
    return { chunksRemoved: orphans.length };
  }

  /** A chunk's bytes, checked against its hash. */
  private async readChunk(manifest: Manifest, hash: string): Promise<Buffer> {
    const key = this.chunkKey(manifest.volumeId, hash);
    const stored = await this.target.get(key);
    if (!stored) throw new BackupCorruptError(`Backup ${manifest.backupId}: chunk ${hash} is missing from ${this.target.location}`);
    let bytes: Buffer;
    try {
      bytes = await decodeChunk(stored);
    } catch (err) {
      throw new BackupCorruptError(`Backup ${manifest.backupId}: chunk ${hash} on ${this.target.location} cannot be decoded`, { cause: err });
    }
    if (await sha256(bytes) !== hash) throw new BackupCorruptError(`Backup ${manifest.backupId}: chunk ${hash} on ${this.target.location} fails its checksum`);
    return bytes;
  }

  private manifestKey(volumeId: string, backupId: string): string {
    return checkedKey(`volumes/${volumeId}/manifests/${backupId}.json`);
  }

  private chunkKey(volumeId: string, hash: string): string {
    return checkedKey(`volumes/${volumeId}/chunks/${hash.slice(0, 2)}/${hash}`);
  }
}

/** `key`, if a target must accept it. @throws InvalidInputError otherwise (an id that cannot name an object). */
function checkedKey(key: string): string {
  if (!isValidObjectKey(key)) throw new InvalidInputError(`Invalid input received: ${key} cannot name a backup object.`);
  return key;
}

async function sha256(bytes: Buffer): Promise<string> {
  // WebCrypto digests off the event loop (libuv's pool): hashing a volume does not stall the API.
  return Buffer.from(await webcrypto.subtle.digest('SHA-256', bytes)).toString('hex');
}

/** A chunk as stored: one byte saying how, then the bytes raw or deflated (whichever is smaller). */
async function encodeChunk(bytes: Buffer): Promise<Buffer> {
  const packed = await deflateRaw(bytes, { level: 1 });
  return packed.length < bytes.length
    ? Buffer.concat([Buffer.of(STORED_DEFLATE), packed])
    : Buffer.concat([Buffer.of(STORED_RAW), bytes]);
}

async function decodeChunk(stored: Buffer): Promise<Buffer> {
  const how = stored[0];
  if (how === STORED_RAW) return stored.subarray(1);
  if (how === STORED_DEFLATE) return inflateRaw(stored.subarray(1));
  throw new Error(`unknown chunk encoding ${String(how)}`);
}

/** Indexes of the chunks that meet any of `ranges`. */
function chunksMeeting(ranges: readonly ByteRange[], chunkBytes: number, count: number): Set<number> {
  const out = new Set<number>();
  for (const r of ranges) {
    if (r.length <= 0) continue;
    const last = Math.min(count - 1, Math.floor((r.offset + r.length - 1) / chunkBytes));
    for (let i = Math.floor(r.offset / chunkBytes); i <= last; i++) out.add(i);
  }
  return out;
}

/** Indexes of the chunks that hold data by the source's block status (every chunk without it). */
async function dataChunks(source: BackupSource, chunkBytes: number, count: number): Promise<Set<number>> {
  if (!source.blockStatus) return new Set(range(count));
  const out = new Set<number>();
  let offset = 0;
  while (offset < source.sizeBytes) {
    const extents = await source.blockStatus(offset, source.sizeBytes - offset);
    for (const e of extents) {
      const end = Math.min(offset + e.length, source.sizeBytes);
      if (!e.zero && end > offset) for (const i of chunksMeeting([{ offset, length: end - offset }], chunkBytes, count)) out.add(i);
      offset = end;
      if (offset >= source.sizeBytes) break;
    }
  }
  return out;
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
