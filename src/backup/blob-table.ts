/**
 * A table of blobs by their SHA-256, each filed with a number: what a backup
 * looks blobs up in (which pack of the volume holds a blob; which number
 * its manifest gave a blob it read).
 *
 * It lives in typed arrays (the 32-byte hashes side by side, open addressing
 * on their first four bytes, mixed with a random seed), not in a Map keyed by
 * hex strings: filing 65,536 blobs (1 GiB of 16 KiB blocks) took a Map
 * 150–200 ms here under load, 3 ms in the table, and a backup filed every blob of
 * the volume's index and every blob it read. Memory: 44 bytes a blob, and the
 * slots (4 to 8 bytes a blob).
 */
import { randomInt } from 'node:crypto';

/** Bytes of a hash. */
const HASH_BYTES = 32;

/**
 * Copies the hash at `from[at, at + 32)` to `to[into, into + 32)`. A loop: Node 20's
 * Buffer.copy costs microseconds a call (argument checks), several times the loop.
 */
export function copyHash(from: Uint8Array, at: number, to: Uint8Array, into: number): void {
  for (let k = 0; k < HASH_BYTES; k++) to[into + k] = from[at + k]!;
}

/** Whether `a[at, at + 32)` and `b[bt, bt + 32)` hold the same hash (a loop, as {@link copyHash}). */
function sameHash(a: Uint8Array, at: number, b: Uint8Array, bt: number): boolean {
  for (let k = 0; k < HASH_BYTES; k++) if (a[at + k] !== b[bt + k]) return false;
  return true;
}

/** A table of 32-byte hashes, each with a number. */
export class BlobTable {
  private hashes: Buffer;
  private values: Int32Array;
  /** Per slot: the entry's number plus one; 0 for an empty slot. */
  private slots: Int32Array;
  private shift: number;
  private count = 0;
  /** Mixed into the slot of a hash: which hashes share a slot cannot be chosen by whoever writes the blocks. */
  private readonly seed = randomInt(2 ** 31);

  /** @param expected how many hashes it will likely hold (it grows past that). */
  constructor(expected = 1024) {
    const capacity = Math.max(16, expected);
    this.hashes = Buffer.allocUnsafe(capacity * HASH_BYTES);
    this.values = new Int32Array(capacity);
    const bits = 32 - Math.clz32(2 * capacity - 1);
    this.slots = new Int32Array(2 ** bits);
    this.shift = 32 - bits;
  }

  /** How many hashes it holds. */
  get size(): number {
    return this.count;
  }

  /** The number filed under the hash at `hash[at, at + 32)`, or -1 when it holds none. */
  get(hash: Buffer, at = 0): number {
    const e = this.find(hash, at);
    return e < 0 ? -1 : this.values[e]!;
  }

  /** Files `value` under the hash at `hash[at, at + 32)`, in place of any number it had. */
  set(hash: Buffer, at: number, value: number): void {
    const e = this.find(hash, at);
    if (e >= 0) {
      this.values[e] = value;
      return;
    }
    if (this.count === this.values.length) this.grow();
    const n = this.count++;
    copyHash(hash, at, this.hashes, n * HASH_BYTES);
    this.values[n] = value;
    this.place(n);
  }

  /** The entry of a hash, or -1. */
  private find(hash: Buffer, at: number): number {
    const mask = this.slots.length - 1;
    const head = hash.readUInt32LE(at);
    for (let s = this.slotOf(head); ; s = (s + 1) & mask) {
      const e = this.slots[s]! - 1;
      if (e < 0) return -1;
      if (sameHash(hash, at, this.hashes, e * HASH_BYTES)) return e;
    }
  }

  private slotOf(head: number): number {
    return Math.imul(head ^ this.seed, 0x9e3779b1) >>> this.shift;
  }

  /** Puts entry `n` in the first free slot from its own. */
  private place(n: number): void {
    const mask = this.slots.length - 1;
    let s = this.slotOf(this.hashes.readUInt32LE(n * HASH_BYTES));
    while (this.slots[s] !== 0) s = (s + 1) & mask;
    this.slots[s] = n + 1;
  }

  /** Doubles the room for entries and the slots (at most half full), and files every entry again. */
  private grow(): void {
    const capacity = this.values.length * 2;
    const hashes = Buffer.allocUnsafe(capacity * HASH_BYTES);
    this.hashes.copy(hashes, 0, 0, this.count * HASH_BYTES);
    this.hashes = hashes;
    const values = new Int32Array(capacity);
    values.set(this.values);
    this.values = values;
    this.slots = new Int32Array(this.slots.length * 2);
    this.shift--;
    for (let n = 0; n < this.count; n++) this.place(n);
  }
}
