/**
 * Reads exact byte counts from a stream socket: `read(n)` resolves with the
 * next n bytes, or rejects once the socket ends before they arrive.
 *
 * Backpressure: the reader holds at most {@link HIGH_WATER_BYTES} (or the
 * pending read's length, if larger) that nobody asked for; past that it
 * pauses the socket until the next `read` wants more, so a client that sends
 * faster than the server serves fills its own TCP window, not our memory.
 */
import type { Socket } from 'node:net';

/** Thrown when the peer went away mid-message. */
export class ConnectionClosed extends Error {
  constructor() {
    super('connection closed');
  }
}

/** Unrequested bytes buffered before the socket is paused. */
export const HIGH_WATER_BYTES = 256 * 1024;

/** One pending `read`. */
interface Waiter { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void }

/** Buffered exact reads over a socket. */
export class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: Waiter | undefined;
  private ended = false;

  private paused = false;

  private readonly onData = (chunk: Buffer): void => {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.pump();
    if (!this.paused && this.buffered >= Math.max(HIGH_WATER_BYTES, this.waiter?.n ?? 0)) {
      this.paused = true;
      this.socket.pause();
    }
  };

  constructor(private readonly socket: Socket) {
    socket.on('data', this.onData);
    const end = (): void => {
      this.ended = true;
      this.waiter?.reject(new ConnectionClosed());
      this.waiter = undefined;
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  /** The next `n` bytes. Only one read may be pending at a time. */
  read(n: number): Promise<Buffer> {
    if (this.buffered >= n) return Promise.resolve(this.take(n));
    if (this.ended) return Promise.reject(new ConnectionClosed());
    if (this.paused) {
      this.paused = false;
      this.socket.resume();
    }
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  /**
   * Stops taking the socket's data and returns what was buffered but not
   * read, for whoever reads the socket next.
   */
  detach(): Buffer {
    this.socket.off('data', this.onData);
    const rest = Buffer.concat(this.chunks);
    this.chunks = [];
    this.buffered = 0;
    return rest;
  }

  private pump(): void {
    if (this.waiter && this.buffered >= this.waiter.n) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(this.take(w.n));
    }
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      // Fast path: the bytes sit in one chunk; no copy.
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let done = 0;
      while (done < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length, n - done);
        c.copy(out, done, 0, k);
        done += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.buffered -= n;
    return out;
  }
}
