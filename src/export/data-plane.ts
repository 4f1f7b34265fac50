/**
 * The native data plane: hands a negotiated connection's socket to native
 * threads (`native/nbd_dataplane.c`) that serve its transmission phase
 * straight on the volume file, or through an asynchronous backend another
 * addon implements (`native/nbd_backend.h`: librbd's aio calls), so no
 * request crosses the event loop.
 *
 * Used for plain (non-TLS) connections to exports whose handle has an `fd`
 * (the file driver) or a `dataPlaneBackend` (the rbd driver). TLS connections
 * and other drivers stay on the event loop.
 * The TypeScript server keeps negotiation, fencing ({@link DataPlaneConnection.destroy})
 * and quiescing ({@link DataPlaneConnection.pause}), and hands the threads the
 * volume's changed-block bits (`changedBits`), which they set for every write.
 */
import type { Socket } from 'node:net';
import { addon, type DataPlaneBackend, type NbdCloseReason, type NbdConnectionRef, type NbdMirrorGroup, type NbdServeOptions } from '../common/index.ts';

/** What the data plane needs to know of a negotiated connection (sizes, flags, threads). */
export type DataPlaneSettings = Omit<NbdServeOptions, 'socket' | 'file' | 'backend' | 'buffered' | 'mirror' | 'mirrorSockets'>;

/**
 * What the threads serve: a volume file's descriptor (with `mirror`, a
 * synchronous mirror's file: see {@link DataPlaneMirror}), or an addon's
 * asynchronous backend.
 */
export type DataPlaneSource = { file: number; mirror?: { group: NbdMirrorGroup; sockets: number[] } } | { backend: DataPlaneBackend };

/**
 * What a synchronous mirror's handle (`src/volume/live-move.ts`) lends a
 * connection served by the native threads: the volume's file, the mirror's
 * range-lock group and plain connections to the copy's export
 * (`native/nbd_mirror.c`). `close` drops the caller's sockets once the
 * threads have their own (or were not started).
 */
export interface DataPlaneMirror {
  file: number;
  group: NbdMirrorGroup;
  sockets: number[];
  close(): void;
}

/** An export's handle that may lend the native threads a mirror; undefined from it: serve the connection on the event loop. */
export interface MirroredHandle { dataPlaneMirror?: () => Promise<DataPlaneMirror | undefined> }

/** libuv's stream handle behind a net.Socket (Node's internal, stable since Node 0.x). */
interface StreamHandle { fd?: number; reading?: boolean; readStop(): number }

function handleOf(socket: Socket): StreamHandle | undefined {
  const handle = (socket as unknown as { _handle?: StreamHandle })._handle;
  return handle && typeof handle.fd === 'number' && handle.fd >= 0 ? handle : undefined;
}

/**
 * Stops the event loop reading `socket` for good (nothing it holds unread
 * may be pending: the caller checked) and returns its descriptor, for a
 * native reader to dup(); undefined when it has none.
 */
export function detachDescriptor(socket: Socket): number | undefined {
  const handle = handleOf(socket);
  if (!handle) return undefined;
  socket.removeAllListeners('data');
  socket.pause();
  handle.reading = false;
  handle.readStop();
  return handle.fd;
}

/** One connection served by native threads. */
export class DataPlaneConnection {
  /** Resolves with why the connection ended, once every thread has gone. */
  readonly closed: Promise<NbdCloseReason>;
  private readonly ref: NbdConnectionRef;

  private constructor(start: (onClose: (reason: NbdCloseReason) => void) => NbdConnectionRef) {
    let ref!: NbdConnectionRef;
    this.closed = new Promise((resolve) => { ref = start(resolve); });
    this.ref = ref;
  }

  /**
   * Stops the event loop reading `socket`, then hands it to native threads
   * serving `source`, with `buffered` (requests the event loop already read) and the bytes the
   * socket holds unread. Destroys the Node socket: the threads own a
   * duplicate of its descriptor. Undefined when the socket has no
   * descriptor (nothing was changed then).
   */
  static take(socket: Socket, source: DataPlaneSource, buffered: () => Buffer, settings: DataPlaneSettings): DataPlaneConnection | undefined {
    const handle = handleOf(socket);
    if (!handle) return undefined;
    socket.pause();
    handle.reading = false;
    handle.readStop();
    // What the reader holds comes first, and it must stop listening before
    // the stream is read: read() emits 'data' too, which would hand the
    // same bytes to the reader a second time.
    const first = buffered();
    // Bytes the stream itself buffered (the reader pauses the socket when it
    // holds enough): read() may re-arm reading, so stop again before anything arrives.
    const rest = socket.readableLength > 0 ? (socket.read() as Buffer | null) : null;
    handle.reading = false;
    handle.readStop();
    const served = 'backend' in source ? { backend: source.backend }
      : { file: source.file, ...(source.mirror ? { mirror: source.mirror.group, mirrorSockets: source.mirror.sockets } : {}) };
    const conn = new DataPlaneConnection((onClose) => addon.nbdServe({
      ...settings, ...served, socket: handle.fd!, buffered: rest ? Buffer.concat([first, rest]) : first,
    }, onClose));
    socket.destroy();
    return conn;
  }

  /**
   * Fences: shuts the socket down and drops writes not yet started; resolves
   * once no write is in a thread's system call any more, so none of this
   * connection's writes can reach the volume after it.
   */
  fence(): Promise<void> {
    return addon.nbdFence(this.ref);
  }

  /** Fences without waiting (closing the server). */
  destroy(): void {
    void this.fence();
  }

  /** Holds new writes back; resolves once no write is in flight. */
  pause(): Promise<void> {
    return addon.nbdPause(this.ref);
  }

  /** Lets writes go on after {@link pause}. */
  resume(): void {
    addon.nbdResume(this.ref);
  }

  /** What the threads have answered so far: `[count, bytes, nanoseconds]` per operation, in NBD_OPS order. */
  stats(): number[] {
    return addon.nbdStats(this.ref);
  }
}
