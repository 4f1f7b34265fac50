/**
 * The writer of a replication drill (issue 16 part 6): a block client that
 * writes numbered blocks through an attachment's NBD export, one at a time
 * with FUA, and records each write when it is acknowledged. Every block
 * carries its sequence number and its offset, so a block read back from any
 * copy says which write it is; {@link checkCopy} holds a copy to the
 * acknowledged writes.
 */
import fs from 'node:fs';
import { openExport, simpleRequest, type PskCredentials } from './nbd-raw.ts';

/** Bytes of one drill block. */
export const DRILL_BLOCK_BYTES = 64 * 1024;
const MAGIC = 'BASALT-DRILL';
const NBD_CMD_WRITE = 1;
const NBD_CMD_DISC = 2;
const NBD_CMD_FLAG_FUA = 1;

/** One acknowledged write: its number, where it went, and when its reply came (ms since the epoch). */
export interface AckedWrite { seq: number; offset: number; ackedAtMs: number }

/** Where a drill writes: `slots` blocks from `baseBytes`, round after round. */
export interface DrillRegion { baseBytes: number; slots: number }

/** An attachment's NBD connection info (`connection_info.data`), as far as the writer reads it. */
export interface NbdConnectionData { host: string; port: number; export_name: string; tls?: { psk_identity: string; psk_key: string } }

/** The block of write `seq` at `offset`: a header naming both, then a fill derived from them. */
export function drillBlock(seq: number, offset: number): Buffer {
  const b = Buffer.alloc(DRILL_BLOCK_BYTES, seq % 251);
  b.write(MAGIC, 0);
  b.writeBigUInt64BE(BigInt(seq), 16);
  b.writeBigUInt64BE(BigInt(offset), 24);
  return b;
}

/** What a block read back says: the write it is, `null` for a block never written (zeros), or an error for anything else. */
export function readDrillBlock(b: Buffer, offset: number): { seq: number } | null {
  if (b.every((x) => x === 0)) return null;
  if (b.toString('latin1', 0, MAGIC.length) !== MAGIC) throw new Error(`the block at ${offset} is no drill block`);
  const seq = Number(b.readBigUInt64BE(16));
  const at = Number(b.readBigUInt64BE(24));
  if (at !== offset) throw new Error(`the block at ${offset} is write ${seq}'s, made for offset ${at}`);
  if (!b.equals(drillBlock(seq, offset))) throw new Error(`the block at ${offset} (write ${seq}) is torn`);
  return { seq };
}

/**
 * Writes numbered blocks through one export until {@link stop} or the first
 * error (the connection dropped: the primary died). Sequence numbers go on
 * across {@link run}s, so a second phase's writes are later than the first's.
 */
export class DrillWriter {
  /** Every acknowledged write, in order. */
  readonly acked: AckedWrite[] = [];
  /** The highest sequence number sent (acknowledged or not). */
  sent = 0;
  private stopping = false;

  /** Stops the running phase after its write in flight. */
  stop(): void { this.stopping = true; }

  /**
   * Connects to `c` and writes into `region` until stopped, `maxWrites` are
   * acknowledged, or a write fails; resolves with the error that ended it, if any.
   */
  async run(c: NbdConnectionData, region: DrillRegion, maxWrites = Infinity): Promise<Error | undefined> {
    this.stopping = false;
    const psk: PskCredentials | undefined = c.tls ? { identity: c.tls.psk_identity, key: Buffer.from(c.tls.psk_key, 'hex') } : undefined;
    let conn: Awaited<ReturnType<typeof openExport>>;
    try {
      conn = await openExport(c.host, c.port, c.export_name, psk);
    } catch (err) {
      return err as Error;
    }
    try {
      for (let n = 0; !this.stopping && n < maxWrites; n++) {
        const seq = ++this.sent;
        const offset = region.baseBytes + (seq % region.slots) * DRILL_BLOCK_BYTES;
        const r = await simpleRequest(conn, NBD_CMD_WRITE, BigInt(offset), DRILL_BLOCK_BYTES, drillBlock(seq, offset), NBD_CMD_FLAG_FUA);
        if (r.error !== 0) return new Error(`write ${seq} failed with NBD error ${r.error}`);
        this.acked.push({ seq, offset, ackedAtMs: Date.now() });
      }
      return undefined;
    } catch (err) {
      return err as Error;
    } finally {
      if (!conn.sock.destroyed) conn.sock.end(requestDisc());
    }
  }
}

function requestDisc(): Buffer {
  const r = Buffer.alloc(28);
  r.writeUInt32BE(0x25609513, 0);
  r.writeUInt16BE(NBD_CMD_DISC, 6);
  return r;
}

/**
 * Holds the copy in `file` to the acknowledged writes `acked` (those that
 * count: all of them in synchronous mode, those acknowledged before the last
 * point in asynchronous mode): see {@link checkBlocks}.
 */
export function checkCopy(file: string, acked: readonly AckedWrite[], sentMax: number): string[] {
  const fd = fs.openSync(file, 'r');
  try {
    return checkBlocks((offset) => {
      const b = Buffer.alloc(DRILL_BLOCK_BYTES);
      fs.readSync(fd, b, 0, b.length, offset);
      return b;
    }, acked, sentMax);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Holds a copy, whose block at an offset `blockAt` reads, to the acknowledged
 * writes `acked`: for every block, the block read back is its last
 * acknowledged write or a later write to the same block (sent, perhaps not
 * acknowledged, up to `sentMax`). Returns the offsets that fail, with why.
 */
export function checkBlocks(blockAt: (offset: number) => Buffer, acked: readonly AckedWrite[], sentMax: number): string[] {
  const last = new Map<number, number>();
  for (const w of acked) last.set(w.offset, Math.max(last.get(w.offset) ?? 0, w.seq));
  const bad: string[] = [];
  for (const [offset, seq] of last) {
    try {
      const got = readDrillBlock(blockAt(offset), offset);
      if (!got) bad.push(`${offset}: zeros, write ${seq} was acknowledged`);
      else if (got.seq < seq) bad.push(`${offset}: write ${got.seq}, write ${seq} was acknowledged`);
      else if (got.seq > sentMax) bad.push(`${offset}: write ${got.seq}, never sent`);
    } catch (err) {
      bad.push((err as Error).message);
    }
  }
  return bad;
}
