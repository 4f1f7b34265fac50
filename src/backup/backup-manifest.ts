/**
 * The manifest of a backup: which blob each block of the volume is, and
 * which pack holds each blob. Stored after every pack it names.
 *
 * Version 2 (written now) is binary, so that a big volume's stays compact
 * (a 4 GiB volume of 16 KiB blocks has 262,144 blocks): the magic
 * `BSLTMAN2`; a u32 LE length and a JSON header (ids, sizes, parent, date,
 * counts); a u32 LE length and the pack ids and the blobs' SHA-256s (32
 * bytes each); a u32 LE length and the deflated tables (each blob's pack
 * number, u32 LE; each block's blob number plus one, 0 for zeros, as i32 LE
 * differences from the block before, which deflate to almost nothing for
 * runs of new blocks);
 * then the SHA-256 of everything before it. About 36 bytes per distinct
 * blob, whatever the volume's size.
 *
 * Version 1 (JSON, one object per 1 MiB chunk under `chunks/`) is still
 * read: it becomes the same shape, each chunk a blob alone in its own
 * "pack", so its backups restore, verify and delete as before.
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { BackupCorruptError } from '../errors/index.ts';
import { sha256 } from './backup-pack.ts';
import { BlobTable, copyHash } from './blob-table.ts';

/** The record of one backup. */
export interface Manifest {
  format: 'basalt-backup';
  /** 2: blocks as blobs in packs. 1: whole chunks as objects of their own (read, never written). */
  version: 1 | 2;
  backupId: string;
  volumeId: string;
  sizeBytes: number;
  /** Bytes of a block (the last one may be shorter). */
  blockBytes: number;
  /** The backup this one is an increment of (its unchanged blocks came from there), or null. */
  parentId: string | null;
  createdAt: string;
  /** The objects holding its blobs: pack ids (version 2) or chunk hashes (version 1), SHA-256 hex. */
  packs: string[];
  /** The SHA-256 of each blob, 32 bytes apiece: blob n at `[32n, 32n + 32)`. */
  blobHashes: Buffer;
  /** The pack of each blob, as an index into `packs`. */
  blobPacks: Uint32Array;
  /** Per block: 0 when it reads as zeros, else its blob's number plus one. */
  blocks: Uint32Array;
}

const MAGIC = Buffer.from('BSLTMAN2');

/**
 * Builds a backup's manifest as its blocks are met: a block read gets the
 * blob of its hash (one number per distinct hash read), a block inherited
 * from the parent gets the parent's blob (one number per parent blob, its
 * hash and pack copied without a look-up). A read block whose content is
 * also an inherited blob is therefore listed twice in the blob table, which
 * costs 36 bytes and nothing else. Memory: 4 bytes a block, 36 a blob.
 */
export class ManifestBuilder {
  /** Per block: 0 for zeros, else its blob's number plus one. */
  readonly blocks: Uint32Array;
  private hashes = Buffer.allocUnsafe(32 * 1024);
  private blobCount = 0;
  /** The pack of each blob; '' for a blob read until `finish`. */
  private readonly packOf: string[] = [];
  /** The number of each blob read, by its hash. */
  private readonly numberOf = new BlobTable();
  private readonly fromParent: Int32Array;

  constructor(blockCount: number, private readonly parent?: Manifest) {
    this.blocks = new Uint32Array(blockCount);
    this.fromParent = new Int32Array(parent?.blobPacks.length ?? 0).fill(-1);
  }

  /** Block `i` is what it is in the parent. */
  inherit(i: number): void {
    const p = this.parent!;
    const b = p.blocks[i]!;
    if (!b) return;
    let n = this.fromParent[b - 1]!;
    if (n < 0) this.fromParent[b - 1] = n = this.push(p.blobHashes, p.packs[p.blobPacks[b - 1]!]!, (b - 1) * 32);
    this.blocks[i] = n + 1;
  }

  /** Block `i` was read and hashes to `hash`. */
  read(i: number, hash: Buffer): void {
    let n = this.numberOf.get(hash);
    if (n < 0) this.numberOf.set(hash, 0, n = this.push(hash, ''));
    this.blocks[i] = n + 1;
  }

  /**
   * The manifest, once `where` names the pack of every blob read (given
   * the bytes its hash lies in and where in them).
   */
  finish(head: Pick<Manifest, 'backupId' | 'volumeId' | 'sizeBytes' | 'blockBytes' | 'parentId' | 'createdAt'>, where: (hashes: Buffer, at: number) => string | undefined): Manifest {
    for (let n = 0; n < this.blobCount; n++) {
      if (this.packOf[n] !== '') continue;
      const id = where(this.hashes, n * 32);
      if (!id) throw new Error(`blob ${this.hashes.toString('hex', n * 32, n * 32 + 32)} is in no pack`); // a bug, not a bad target
      this.packOf[n] = id;
    }
    const packs: string[] = [];
    const packNumber = new Map<string, number>();
    const blobPacks = Uint32Array.from(this.packOf, (id) => {
      let p = packNumber.get(id);
      if (p === undefined) { packNumber.set(id, p = packs.length); packs.push(id); }
      return p;
    });
    return { format: 'basalt-backup', version: 2, ...head, packs, blobHashes: this.hashes.subarray(0, this.blobCount * 32), blobPacks, blocks: this.blocks };
  }

  /** Adds a blob: the hash at `hash[at, at + 32)`, in `pack` ('' until `finish`). */
  private push(hash: Buffer, pack: string, at = 0): number {
    if ((this.blobCount + 1) * 32 > this.hashes.length) {
      const grown = Buffer.allocUnsafe(this.hashes.length * 2);
      this.hashes.copy(grown, 0, 0, this.blobCount * 32);
      this.hashes = grown;
    }
    copyHash(hash, at, this.hashes, this.blobCount * 32);
    this.packOf.push(pack);
    return this.blobCount++;
  }
}

/** The hash of blob `n` of a manifest, hex. */
export function blobHash(m: Manifest, n: number): string {
  return m.blobHashes.toString('hex', n * 32, n * 32 + 32);
}

/** A version-2 manifest's bytes. */
export function encodeManifest(m: Manifest): Buffer {
  const header = Buffer.from(JSON.stringify({
    format: m.format, version: 2, backupId: m.backupId, volumeId: m.volumeId, sizeBytes: m.sizeBytes, blockBytes: m.blockBytes,
    parentId: m.parentId, createdAt: m.createdAt, packCount: m.packs.length, blobCount: m.blobPacks.length, blockCount: m.blocks.length,
  }));
  const tables = Buffer.allocUnsafe(m.blobPacks.length * 4 + m.blocks.length * 4);
  let at = 0;
  for (const p of m.blobPacks) at = tables.writeUInt32LE(p, at);
  let prev = 0;
  for (const b of m.blocks) { at = tables.writeInt32LE(b - prev, at); prev = b; }
  // Hashes do not compress: only the tables are deflated.
  const packed = deflateRawSync(tables, { level: 1 });
  const body = Buffer.concat([Buffer.from(m.packs.join(''), 'hex'), m.blobHashes]);
  const all = Buffer.concat([MAGIC, u32(header.length), header, u32(body.length), body, u32(packed.length), packed]);
  return Buffer.concat([all, sha256(all)]);
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(n);
  return b;
}

/**
 * A manifest from its stored bytes (either version).
 * @throws BackupCorruptError (`what` names it) when the bytes are not a whole manifest.
 */
export function decodeManifest(bytes: Buffer, what: string): Manifest {
  try {
    return bytes.subarray(0, 8).equals(MAGIC) ? decodeV2(bytes) : decodeV1(bytes);
  } catch (err) {
    throw new BackupCorruptError(`${what} is not a whole manifest (${(err as Error).message})`, { cause: err });
  }
}

function decodeV2(bytes: Buffer): Manifest {
  const all = bytes.subarray(0, bytes.length - 32);
  if (bytes.length < 48 || !sha256(all).equals(bytes.subarray(bytes.length - 32))) throw new Error('it fails its checksum');
  const headerBytes = all.readUInt32LE(8);
  const h = JSON.parse(all.toString('utf8', 12, 12 + headerBytes)) as Omit<Manifest, 'packs' | 'blobHashes' | 'blobPacks' | 'blocks'> & { packCount: number; blobCount: number; blockCount: number };
  const bodyAt = 12 + headerBytes;
  const body = all.subarray(bodyAt + 4, bodyAt + 4 + all.readUInt32LE(bodyAt));
  const tablesAt = bodyAt + 4 + body.length;
  const tables = inflateRawSync(all.subarray(tablesAt + 4, tablesAt + 4 + all.readUInt32LE(tablesAt)));
  const { packCount, blobCount, blockCount } = h;
  if (body.length !== packCount * 32 + blobCount * 32 || tables.length !== blobCount * 4 + blockCount * 4 || blockCount !== Math.ceil(h.sizeBytes / h.blockBytes)) throw new Error('its tables do not match its header');
  const packs = Array.from({ length: packCount }, (_, p) => body.toString('hex', p * 32, p * 32 + 32));
  const hashesAt = packCount * 32;
  const blobPacks = new Uint32Array(blobCount);
  let at = 0;
  for (let i = 0; i < blobCount; i++, at += 4) {
    blobPacks[i] = tables.readUInt32LE(at);
    if (blobPacks[i]! >= packCount) throw new Error('a blob names no pack');
  }
  const blocks = new Uint32Array(blockCount);
  let prev = 0;
  for (let i = 0; i < blockCount; i++, at += 4) {
    prev += tables.readInt32LE(at);
    if (prev < 0 || prev > blobCount) throw new Error('a block names no blob');
    blocks[i] = prev;
  }
  return {
    format: 'basalt-backup', version: 2, backupId: h.backupId, volumeId: h.volumeId, sizeBytes: h.sizeBytes, blockBytes: h.blockBytes,
    parentId: h.parentId, createdAt: h.createdAt, packs, blobHashes: body.subarray(hashesAt, hashesAt + blobCount * 32), blobPacks, blocks,
  };
}

/** A version-1 manifest (JSON; `chunks: [index, hash]`, one object per chunk) in version 2's shape. */
function decodeV1(bytes: Buffer): Manifest {
  const v1 = JSON.parse(bytes.toString('utf8')) as { format: string; version: number; backupId: string; volumeId: string; sizeBytes: number; chunkBytes: number; parentId: string | null; createdAt: string; chunks: Array<[number, string]> };
  if (v1?.format !== 'basalt-backup' || v1.version !== 1 || !Array.isArray(v1.chunks)) throw new Error('it is not a Basalt backup manifest');
  const packs: string[] = [];
  const numbers = new Map<string, number>();
  const blocks = new Uint32Array(Math.ceil(v1.sizeBytes / v1.chunkBytes));
  for (const [index, hash] of v1.chunks) {
    if (!/^[0-9a-f]{64}$/.test(hash) || !(index >= 0 && index < blocks.length)) throw new Error('a chunk entry is malformed');
    let n = numbers.get(hash);
    if (n === undefined) { n = packs.length; numbers.set(hash, n); packs.push(hash); }
    blocks[index] = n + 1;
  }
  return {
    format: 'basalt-backup', version: 1, backupId: v1.backupId, volumeId: v1.volumeId, sizeBytes: v1.sizeBytes, blockBytes: v1.chunkBytes,
    parentId: v1.parentId, createdAt: v1.createdAt, packs, blobHashes: Buffer.from(packs.join(''), 'hex'),
    blobPacks: Uint32Array.from(packs, (_, i) => i), blocks,
  };
}
