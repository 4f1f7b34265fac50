/**
 * Blobs and packs: how a backup repository stores blocks (restic's layout).
 *
 * - A **blob** is one block's bytes as stored: as they are, or deflated. It
 *   is named by the SHA-256 of the block's bytes (not of what is stored), so
 *   identical blocks are one blob.
 * - A **pack** is one object holding many blobs: the blobs one after
 *   another, then the pack's index (per blob: its hash, offset and stored
 *   length, 40 bytes; the length's top bit set when the blob is deflated),
 *   then the index's length (u32 LE) and the magic `BPK1`. Blobs stored as
 *   they are lie back to back, so a restore writes a run of them straight
 *   from the pack, without copying. A pack is named by the SHA-256 of its index, which is cheap
 *   (the blobs are already hashed) and makes the name check the index; each
 *   blob is then checked against its own hash when it is read.
 * - A copy of each pack's index is stored as an object of its own, so a
 *   backup learns which blobs the volume's packs hold without reading them.
 *   A pack is read whole (a target has no ranged reads), and its own index
 *   is what a restore trusts: a lost or damaged index object costs only
 *   deduplication (the blobs are stored again), never a restore.
 */
import crypto from 'node:crypto';
import { promisify } from 'node:util';
import zlib from 'node:zlib';

const deflateRaw = promisify(zlib.deflateRaw);
const inflateRaw = promisify(zlib.inflateRaw);

/** First byte of a version-1 chunk object: how the rest is encoded. */
const CHUNK_RAW = 0;
const CHUNK_DEFLATE = 1;

/** The bit of an index entry's length that says the blob is deflated. */
const DEFLATED = 0x8000_0000;

const PACK_MAGIC = Buffer.from('BPK1');
/** Bytes of one index entry: hash, offset, stored length. */
const ENTRY_BYTES = 40;

/**
 * SHA-256 of `bytes`: node:crypto's one-shot hash (OpenSSL with the CPU's SHA
 * instructions, ~1.5 GB/s on 16 KiB blocks here), on the calling thread: a
 * slice of one read (4 MiB) holds the event loop ~3 ms. `crypto.hash` came
 * with Node 20.12; on an older Node 20 the same digest comes from createHash.
 */
export const sha256: (bytes: Uint8Array) => Buffer = typeof crypto.hash === 'function'
  ? (bytes) => crypto.hash('sha256', bytes, 'buffer')
  : (bytes) => crypto.createHash('sha256').update(bytes).digest();

/** Where a blob lies in a pack (or in a version-1 chunk object), and whether it is deflated. */
export interface BlobEntry { offset: number; length: number; deflated: boolean }

/** A blob as stored. */
export interface EncodedBlob { deflated: boolean; payload: Buffer }

/**
 * Decides, per blob, whether to try deflate (level 1: fastest), so
 * incompressible data costs little: while blobs shrink every one is
 * compressed; after one does not, only one in `sampleEvery` is tried,
 * until one shrinks again. (A try costs more than its bytes: each call
 * sets up a deflate stream, ~0.3 ms of the event loop here.) A blob is stored deflated only when that saves
 * at least an eighth of it (inflating the rest would cost more than it saves).
 */
export class BlobEncoder {
  private paying = true;
  private skipped = 0;

  constructor(private readonly sampleEvery: number) {}

  /** Whether the next blob is to be tried (then call `encode`), else it is stored as it is. */
  wantsTry(): boolean {
    return this.paying || ++this.skipped >= this.sampleEvery;
  }

  /** Deflates a blob `wantsTry` chose, keeping the result only if it pays. */
  async encode(bytes: Buffer): Promise<EncodedBlob> {
    this.skipped = 0;
    const packed = await deflateRaw(bytes, { level: zlib.constants.Z_BEST_SPEED });
    this.paying = packed.length <= bytes.length - (bytes.length >> 3);
    return this.paying ? { deflated: true, payload: packed } : { deflated: false, payload: bytes };
  }
}

/** The bytes of a stored blob (`stored` is what its entry covers). @throws Error when it cannot be inflated. */
export async function decodeBlob(entry: BlobEntry, stored: Buffer): Promise<Buffer> {
  return entry.deflated ? inflateRaw(stored) : stored;
}

/** The entry of the one blob of a version-1 chunk object (one byte saying how, then the bytes). @throws Error for an unknown encoding. */
export function chunkEntry(chunk: Buffer): BlobEntry {
  const how = chunk[0];
  if (how !== CHUNK_RAW && how !== CHUNK_DEFLATE) throw new Error(`unknown chunk encoding ${String(how)}`);
  return { offset: 1, length: chunk.length - 1, deflated: how === CHUNK_DEFLATE };
}

/** A pack being filled: blobs appended until it is sealed. */
export class PackBuilder {
  private readonly parts: Buffer[] = [];
  private readonly entries: Array<{ hash: Buffer; offset: number; length: number; deflated: boolean }> = [];
  /** Bytes of blobs so far. */
  sizeBytes = 0;

  get blobCount(): number {
    return this.entries.length;
  }

  add(hash: Buffer, blob: EncodedBlob): void {
    const length = blob.payload.length;
    this.entries.push({ hash, offset: this.sizeBytes, length, deflated: blob.deflated });
    this.parts.push(blob.payload);
    this.sizeBytes += length;
  }

  /** The pack's bytes, its index and its id (the SHA-256 of the index, hex); the hashes of its blobs. */
  seal(): { id: string; body: Buffer; index: Buffer; hashes: Buffer[] } {
    const index = Buffer.allocUnsafe(this.entries.length * ENTRY_BYTES);
    this.entries.forEach((e, i) => {
      e.hash.copy(index, i * ENTRY_BYTES);
      index.writeUInt32LE(e.offset, i * ENTRY_BYTES + 32);
      index.writeUInt32LE((e.length | (e.deflated ? DEFLATED : 0)) >>> 0, i * ENTRY_BYTES + 36);
    });
    const trailer = Buffer.allocUnsafe(8);
    trailer.writeUInt32LE(index.length, 0);
    PACK_MAGIC.copy(trailer, 4);
    const body = Buffer.concat([...this.parts, index, trailer]);
    return { id: sha256(index).toString('hex'), body, index, hashes: this.entries.map((e) => e.hash) };
  }
}

/**
 * Checks a pack's index (or an index object): a whole number of entries,
 * hashing to `packId`, each blob within `within` bytes (the pack's blob area).
 * Returns how many entries it has (entry k's blob hash is at `40k`).
 * @throws Error when the index does not hash to `packId` or is malformed.
 */
function checkIndex(index: Buffer, packId: string, within: number): number {
  if (index.length % ENTRY_BYTES !== 0) throw new Error('index length is not a whole number of entries');
  if (sha256(index).toString('hex') !== packId) throw new Error('index fails its checksum');
  for (let at = 0; at < index.length; at += ENTRY_BYTES) {
    const length = (index.readUInt32LE(at + 36) & ~DEFLATED) >>> 0;
    if (length < 1 || index.readUInt32LE(at + 32) + length > within) throw new Error('index entry outside the pack');
  }
  return index.length / ENTRY_BYTES;
}

/**
 * The entries of a pack's index, by blob hash (hex).
 * `within`: the bytes the blobs must lie in (the pack's blob area).
 * @throws Error when the index does not hash to `packId` or is malformed.
 */
export function parseIndex(index: Buffer, packId: string, within: number): Map<string, BlobEntry> {
  checkIndex(index, packId, within);
  const out = new Map<string, BlobEntry>();
  for (let at = 0; at < index.length; at += ENTRY_BYTES) {
    const word = index.readUInt32LE(at + 36);
    out.set(index.toString('hex', at, at + 32), { offset: index.readUInt32LE(at + 32), length: (word & ~DEFLATED) >>> 0, deflated: (word & DEFLATED) !== 0 });
  }
  return out;
}

/**
 * Where the blob hashes an index object lists lie in it (offsets of 32
 * bytes each); none when it is damaged (it only serves deduplication).
 */
export function indexedHashOffsets(index: Buffer, packId: string): number[] {
  try {
    return Array.from({ length: checkIndex(index, packId, Number.MAX_SAFE_INTEGER) }, (_, k) => k * ENTRY_BYTES);
  } catch {
    return [];
  }
}

/**
 * The entries of a pack, from its own index.
 * @throws Error saying what is wrong when the pack is truncated or its index damaged.
 */
export function packEntries(pack: Buffer, packId: string): Map<string, BlobEntry> {
  if (pack.length < 8 || !pack.subarray(pack.length - 4).equals(PACK_MAGIC)) throw new Error('no pack trailer');
  const indexBytes = pack.readUInt32LE(pack.length - 8);
  const start = pack.length - 8 - indexBytes;
  if (start < 0) throw new Error('index longer than the pack');
  return parseIndex(pack.subarray(start, pack.length - 8), packId, start);
}
