/**
 * Basalt's own Node-API addon (`native/`, built from source by `npm ci`
 * through node-gyp): the file driver's system calls that Node's fs lacks
 * (`native/basalt_io.c`) and the NBD data plane (`native/nbd_dataplane.c`).
 * Loaded once; each user wraps the calls it needs in typed functions.
 */
import { createRequire } from 'node:module';
import { rootPath } from './root.ts';

/** Options of {@link Addon.nbdServe}; see `native/nbd_dataplane.c`. */
export interface NbdServeOptions {
  /** The connected socket (dup()ed: the caller may close its own). */
  socket: number;
  /** The open volume file (dup()ed too); or, instead, `backend`. */
  file?: number;
  /**
   * An asynchronous backend to serve instead of a file (`native/nbd_backend.h`:
   * the RBD addon's open images); held until the connection ends.
   */
  backend?: DataPlaneBackend;
  sizeBytes: number;
  readOnly: boolean;
  /** Structured replies were negotiated. */
  structured: boolean;
  /** The id of `base:allocation` when it was set for this export, else 0. */
  metaContextId: number;
  /** Worker threads of the connection (1–64). */
  threads: number;
  /** How long at most a worker polls for the next request before it blocks, µs, while the client is busy; 0 never polls. */
  pollMicros: number;
  /**
   * READs at least this large (and no larger than a pipe holds, 1 MiB) are
   * served with splice(2): the file's page-cache pages go to the socket
   * through a pipe, without the two copies of pread + send. 0 (the default)
   * copies every READ.
   */
  spliceMinBytes?: number;
  /**
   * Plain WRITEs (no FUA) at least this large (and no larger than a pipe
   * holds) have their payload spliced from the socket into the file through
   * a pipe: one copy instead of two. 0 (the default) copies every WRITE.
   */
  spliceWriteMinBytes?: number;
  /**
   * The volume's QoS lanes (src/export/qos.ts QosLimiter): their theoretical
   * arrival times, shared with the event loop and the volume's other
   * connections, and their parameters. Absent: no limits.
   */
  qosTat?: BigInt64Array;
  qosParams?: Float64Array;
  /** IOPS accounting size in bytes (0: every I/O is one operation). */
  qosSizeIops?: number;
  /** The most payload bytes (WRITE data read, READ data not yet sent) the workers hold at once; one request alone always runs. Default 64 MiB. */
  maxBufferBytes?: number;
  /**
   * The most requests in flight at once (read, not yet answered); at the bound
   * no worker reads the socket until a reply goes out, as on the event loop
   * (`nbd_max_requests_per_connection`). Default 64.
   */
  maxRequests?: number;
  /** Start with writes held back (the export is being quiesced). */
  paused: boolean;
  /**
   * The volume's changed-block bits (`src/export/changed-blocks.ts`): each
   * WRITE, WRITE_ZEROES and TRIM sets the bits of its blocks (atomic ORs)
   * before the file is touched. The addon holds a reference until the
   * connection ends. Absent: nothing is recorded.
   */
  changedBits?: Uint32Array;
  /** log2 of the bytes one changed bit stands for (with `changedBits`). */
  changedBlockShift?: number;
  /** Bytes the event loop read past the negotiation: the first requests. */
  buffered?: Buffer;
  /**
   * A synchronous mirror's connection (`native/nbd_mirror.c`, files only):
   * the volume's group, whose range locks its writes take, and negotiated
   * plain connections to the copy's export (1–16, simple replies, dup()ed)
   * on which every WRITE, TRIM, WRITE_ZEROES and FLUSH is also done.
   */
  mirror?: NbdMirrorGroup;
  mirrorSockets?: number[];
}

/** An opaque synchronous mirror's group (`native/nbd_mirror.c`): its writers' byte-range locks and failure callback. */
export type NbdMirrorGroup = { readonly __nbdMirrorGroup: unique symbol };

/** Why a data-plane connection ended. */
export type NbdCloseReason = 'disconnect' | 'fenced' | 'protocol';

/**
 * An opaque asynchronous block backend the data plane can serve from its own
 * threads (`native/nbd_backend.h`), made by another addon (the RBD addon's
 * `dataPlaneBackend`). The addon that made it keeps what it points into
 * valid while a connection holds it.
 */
export type DataPlaneBackend = { readonly __nbdBackend: unique symbol };

/** An opaque data-plane connection. */
export type NbdConnectionRef = { readonly __nbdConnection: unique symbol };

/** The addon's functions. */
export interface Addon {
  preadNowait(fd: number, buf: Buffer, offset: number): number;
  pwriteNowait(fd: number, bufs: Buffer | readonly Buffer[], offset: number): number;
  /** lseek(SEEK_DATA): the next data offset, or the negated errno (-ENXIO: no data past offset). */
  seekData(fd: number, offset: number): number;
  /** lseek(SEEK_HOLE): the next hole offset, or the negated errno. */
  seekHole(fd: number, offset: number): number;
  fallocate(fd: number, mode: number, offset: number, length: number): number;
  /** FS_IOC_FIEMAP over `[offset, offset + length)`: `[logical, physical, length, flags]` per extent, or -errno. */
  fiemap(fd: number, offset: number, length: number): Float64Array | number;
  /** posix_fadvise(2): 0 or the error number. */
  fadvise(fd: number, offset: number, length: number, advice: number): number;
  /** flock(LOCK_EX | LOCK_NB): 0, or the error number (EWOULDBLOCK while another open file holds the lock). */
  tryLockExclusive(fd: number): number;
  nbdServe(options: NbdServeOptions, onClose: (reason: NbdCloseReason) => void): NbdConnectionRef;
  /** Shuts the connection down and drops writes not yet started; resolves once no write is in flight. */
  nbdFence(conn: NbdConnectionRef): Promise<void>;
  nbdPause(conn: NbdConnectionRef): Promise<void>;
  nbdResume(conn: NbdConnectionRef): void;
  /** Requests answered so far: `[count, bytes, nanoseconds]` for each of read, write, flush, trim, zero, other (src/export/nbd-stats.ts). */
  nbdStats(conn: NbdConnectionRef): number[];
  /** A mirror's group; `onFailure(errno)` is called once, the first time the copy (or the file) refuses a mirrored request. */
  nbdMirrorGroup(onFailure: (errno: number) => void): NbdMirrorGroup;
  /** Holds `[start, end)` in the group without waiting: an id for {@link nbdMirrorRelease}, or 0 when a holder overlaps it. */
  nbdMirrorHold(group: NbdMirrorGroup, start: number, end: number): number;
  nbdMirrorRelease(group: NbdMirrorGroup, id: number): void;
}

/**
 * The loaded addon: `build/Release/basalt_io.node`, or the file
 * `BASALT_ADDON_PATH` names (scripts/sanitize-native.sh loads a build with
 * AddressSanitizer or ThreadSanitizer that way, leaving the normal build alone).
 */
export const addon = createRequire(import.meta.url)(process.env.BASALT_ADDON_PATH || rootPath('build', 'Release', 'basalt_io.node')) as Addon;
