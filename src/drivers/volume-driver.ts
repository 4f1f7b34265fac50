/**
 * The volume driver contract: the one small interface every storage backend
 * implements ({@link VolumeDriver}), the handle it gives for block I/O
 * ({@link VolumeHandle}) and the capabilities it declares
 * ({@link DeclaredCapabilities}). It is written the way nbdkit's plugin
 * manual is: every method under the same headings.
 *
 * - **When** the core calls it.
 * - **Preconditions**: what the core checked before the call; a driver need
 *   not check these again.
 * - **Postconditions**: what is true when the returned promise resolves.
 * - **Idempotency**: what a second call with the same arguments does. The
 *   core calls again after a crash, a lost lease or a timeout, so every
 *   method that changes something completes the step instead of failing or
 *   duplicating it.
 * - **Errors**: what to throw. A driver throws `DriverError` (from
 *   `src/errors`) for failures it understands, with `retryable: true` when
 *   trying again later may succeed (the job is then retried with back-off);
 *   anything else it throws becomes a non-retryable `DriverError` in the
 *   guard, which keeps it as `cause` so backend text reaches the log only.
 * - **Default** if the method is optional and omitted.
 *
 * The core never probes a driver's methods or class to learn what it can do:
 * it reads the capabilities, resolved with their defaults by
 * {@link resolveCapabilities}. It never calls a driver directly either: the
 * guard (`driver-guard.ts`) sits between them, runs `init` once, checks
 * ranges, applies timeouts, enforces the thread model and refuses what the
 * capabilities do not declare.
 *
 * ## Lifecycle
 *
 * ```text
 *   registration.create(options) ──► driver ──init (once, before anything else)──┐
 *                                                                                 │
 *   ┌── getStats (at every heartbeat, all along) ◄────────────────────────────────┘
 *   │
 *   │   createVolume ─────────────┐
 *   │   cloneVolume(source) ──────┼──► VOLUME ──extendVolume──► VOLUME (larger; data kept)
 *   │   createVolumeFromSnapshot ─┘     │ ▲ │
 *   │                                   │ │ ├── openVolume ──► HANDLE: read, write, flush, trim,
 *   │                    createSnapshot │ │ │                  writeZeroes, blockStatus … close
 *   │                                   ▼ │ ├── localPath (optional): the volume as a local file
 *   │                                     │ │ └── nativeConnection (optional, at every heartbeat): how a
 *   │                                     │ │     host opens volumes itself, without the NBD export
 *   │                            SNAPSHOT │
 *   │                              │  └───┘ revertToSnapshot (optional; into its own volume)
 *   │                              ├──► createVolumeFromSnapshot (a new, independent VOLUME)
 *   │                              └──► deleteSnapshot ──► gone
 *   │   deleteVolume ──► gone (after the core deleted its snapshots and its handles closed)
 *   │
 *   └── close (at shutdown, once every other call has ended)
 * ```
 *
 * ## Thread model
 *
 * `capabilities.canRunInParallel` says whether calls may overlap at all:
 * when false (a serial driver) the guard runs one call at a time across the
 * whole driver — management calls and the I/O of every handle alike — and a
 * call that timed out still holds the driver until it really ends, so the next
 * one never starts beside it. When true, management calls on different
 * volumes overlap freely (the core's `volume-<id>` locks keep two changes of
 * one volume apart), different handles run in parallel, and
 * `canRunIoInParallel` says whether the calls of *one* handle may overlap
 * (nbdkit's `PARALLEL` versus `SERIALIZE_REQUESTS`); when false the guard
 * queues them per handle. `canMultiConn` says whether handles of one volume
 * are coherent: a write completed through one is read back through any other,
 * and a `flush` through any covers it. The NBD export advertises multi-conn
 * (NBD_FLAG_CAN_MULTI_CONN) exactly then, so clients such as qemu and nbdcopy
 * open several connections only to a backend that keeps them coherent.
 *
 * ## Versions
 *
 * A driver's registration (`driver-registration.ts`) names the contract
 * version it was written against. This is version {@link DRIVER_CONTRACT_VERSION}.
 * The loader refuses a driver of another major version; a minor version only
 * adds optional members with defaults, so a driver written for 1.0 runs
 * unchanged. History: 1.1 added `VolumeHandle.fd`; 1.2 made every capability
 * flag optional (defaults in {@link CAPABILITY_DEFAULTS}) and added
 * `canRunIoInParallel`, `canMultiConn`, `supportsLocalPath` with `localPath`,
 * and registration records; 1.3 added `supportsManageExisting` with
 * `manageExistingGetSize`, `manageExisting`, `unmanage`,
 * `manageExistingSnapshot`, `unmanageSnapshot` and the `listManageable…` pair;
 * 1.4 added `supportsNativeConnection` with `nativeConnection`; 1.5 added
 * `supportsChangedExtents` with `changedExtents`; 1.6 added
 * `supportsAllocatedExtents` with `allocatedExtents`; 1.7 added
 * `VolumeHandle.dataPlaneBackend`; 1.8 added `canLoseVolumes` with
 * `watchLostVolumes`; 1.9 added `supportsBackendReplication` with
 * `enableReplication`, `replicationPoint`, `replicationState` and `failOver`;
 * 1.10 added `failOverVolumes` (a group's failover on such a backend),
 * `nativeConnection`'s `site` and `VolumeHandle.evict`.
 */
import type { DataPlaneBackend } from '../common/index.ts';

/** The contract version this core implements (`major.minor`). */
export const DRIVER_CONTRACT_VERSION = '1.10';

/**
 * What a driver may declare it can do. Every flag is optional: an absent flag
 * takes its default from {@link CAPABILITY_DEFAULTS}, which is always the safe
 * answer (serialise, refuse, advertise nothing). A driver declares only what
 * is true of it; declaring less than it could is always allowed. A flag that
 * comes with an optional method (`supportsRevertToSnapshot` with
 * `revertToSnapshot`, `supportsLocalPath` with `localPath`) is declared
 * exactly when the method exists.
 */
export interface DeclaredCapabilities {
  /**
   * Whether the core may call the driver while another call is running: two
   * management calls, or I/O on two handles. Default false: the guard runs
   * one call at a time, for the whole driver.
   */
  readonly canRunInParallel?: boolean;
  /**
   * Whether the calls of one {@link VolumeHandle} may overlap (a read while a
   * write runs, several writes at once). Only matters when `canRunInParallel`.
   * Default false: the guard queues a handle's calls, and the export does not
   * use `VolumeHandle.fd` (its native threads would overlap them).
   */
  readonly canRunIoInParallel?: boolean;
  /**
   * Whether the handles of one volume are coherent: a write completed through
   * one handle reads back through every other handle open at the time, and a
   * `flush` through any handle makes every write completed before it (through
   * any handle) durable. The NBD export advertises multi-conn exactly then.
   * Default false.
   */
  readonly canMultiConn?: boolean;
  /** Whether volumes are thin (space used only when written). Default false. */
  readonly supportsThinProvisioning?: boolean;
  /**
   * Whether `extendVolume` may be called while handles of the volume are open
   * (an attached volume, 3.42). Default false: the core refuses extending an
   * in-use volume, and the guard refuses extending a volume with open handles.
   */
  readonly supportsOnlineExtend?: boolean;
  /**
   * Whether a volume may be attached to several hosts at once (Cinder's
   * `multiattach`): handles opened for different attachments may be used
   * together. Default false: volume types asking for multiattach are not
   * placed here.
   */
  readonly supportsMultiattach?: boolean;
  /** Whether `revertToSnapshot` exists. Default false: the core refuses reverts (3.40). */
  readonly supportsRevertToSnapshot?: boolean;
  /**
   * Whether `localPath` exists: each volume is a file or block device on the
   * volume service's host that a host on that machine may attach directly
   * (a loop device) instead of over NBD. Default false: every attachment
   * goes through the NBD export.
   */
  readonly supportsLocalPath?: boolean;
  /**
   * Whether the manage methods exist (`manageExistingGetSize`,
   * `manageExisting`, `unmanage`, `manageExistingSnapshot`,
   * `unmanageSnapshot`, `listManageableVolumes`, `listManageableSnapshots`):
   * the backend can adopt storage it holds but Basalt does not know
   * (`os-volume-manage`, `os-snapshot-manage`) and forget a volume or snapshot
   * while keeping its data (`os-unmanage`). Default false: the core refuses
   * manage and unmanage requests for this backend.
   */
  readonly supportsManageExisting?: boolean;
  /**
   * Whether `nativeConnection` exists: hosts may open volumes through the
   * backend's own protocol (Cinder's connection info of that protocol, such
   * as `rbd` for a hypervisor with librbd) instead of through the NBD export.
   * Default false: every attachment goes through the NBD export (or a local
   * path).
   */
  readonly supportsNativeConnection?: boolean;
  /**
   * Whether `changedExtents` exists: the backend can tell which extents of a
   * volume differ between one of its snapshots and a later snapshot (or the
   * volume itself), from its own metadata (RBD's diff, reflink extents
   * shared with the snapshot). Default false: the core relies on its own
   * changed-block tracking at the export, and where that does not know
   * (a crash, a write path that cannot track), everything changed.
   */
  readonly supportsChangedExtents?: boolean;
  /**
   * Whether `allocatedExtents` exists: the backend can tell which extents of
   * a snapshot hold data (a sparse file's data extents, RBD's allocation).
   * Default false: the core answers that the whole snapshot may hold data.
   */
  readonly supportsAllocatedExtents?: boolean;
  /**
   * Whether `watchLostVolumes` exists: on shared storage another host may
   * take this driver's volumes from it (RBD: a member that stopped answering
   * has its exclusive lock broken and its client blocklisted), and the driver
   * notices. Default false: a driver's volumes are its own.
   */
  readonly canLoseVolumes?: boolean;
  /**
   * Whether the backend replicates its volumes to its `replication_device`
   * targets itself (RBD: Ceph's rbd-mirror to a second cluster), with
   * `enableReplication`, `replicationPoint`, `replicationState` and
   * `failOver`: a failover then keeps each volume on the same backend, whose
   * driver serves it from the target. Default false: replication is the
   * core's, to another Basalt backend (`replicator.ts`).
   */
  readonly supportsBackendReplication?: boolean;
  /**
   * Whether the driver's data lives only in its process's memory and is gone
   * when the process stops (the `memory` test driver). Default false. A
   * volume service of such a driver says at start how many volumes recorded
   * on its backend it does not hold.
   */
  readonly volatile?: boolean;
  /** Protocol named in pool stats (`storage_protocol`). Default `nbd`: the core exports every backend over NBD. */
  readonly storageProtocol?: string;
  /** Vendor shown in pool stats (`vendor_name`). */
  readonly vendorName: string;
  /** The driver's own version shown in pool stats (`driver_version`). */
  readonly driverVersion: string;
}

/** Capabilities with every default applied: what the core reads. */
export type DriverCapabilities = Required<DeclaredCapabilities>;

/**
 * The default of every optional capability flag, in one place (as Kysely's
 * dialect adapter base does for its `supports*` flags). Each is the safe
 * answer for a driver that says nothing.
 */
export const CAPABILITY_DEFAULTS: Readonly<Omit<DriverCapabilities, 'vendorName' | 'driverVersion'>> = Object.freeze({
  canRunInParallel: false,
  canRunIoInParallel: false,
  canMultiConn: false,
  supportsThinProvisioning: false,
  supportsOnlineExtend: false,
  supportsMultiattach: false,
  supportsRevertToSnapshot: false,
  supportsLocalPath: false,
  supportsManageExisting: false,
  supportsNativeConnection: false,
  supportsChangedExtents: false,
  supportsAllocatedExtents: false,
  canLoseVolumes: false,
  supportsBackendReplication: false,
  volatile: false,
  storageProtocol: 'nbd',
});

/**
 * A driver's declared capabilities with the defaults applied. The guard
 * calls this once; everything else reads the guard's result. An explicit
 * `undefined` counts as not declared.
 */
export function resolveCapabilities(declared: DeclaredCapabilities): DriverCapabilities {
  const out: Record<string, unknown> = { ...CAPABILITY_DEFAULTS };
  for (const [k, v] of Object.entries(declared)) if (v !== undefined) out[k] = v;
  return Object.freeze(out) as unknown as DriverCapabilities;
}

/** The part of a volume a driver needs. */
export interface VolumeRef {
  /** The volume's UUID; drivers name their objects after it. */
  readonly id: string;
  /** Size in GiB, as the core records it. */
  readonly sizeGiB: number;
}

/** What a failover of volumes (`failOver`, `failOverVolumes`) could not do: the volumes whose copy was not promoted, and why, by volume id, when known. */
export interface FailoverResult {
  failed: string[];
  reasons?: Readonly<Record<string, string>>;
}

/** The part of a snapshot a driver needs. */
export interface SnapshotRef {
  /** The snapshot's UUID; drivers name their objects after it. */
  readonly id: string;
  /** The volume it was (or is being) taken of. */
  readonly volumeId: string;
  /** Size in GiB of the volume when the snapshot was taken. */
  readonly sizeGiB: number;
}

/**
 * Block I/O on an open volume: what the NBD export, backups and image
 * transfers use. Offsets and lengths are in bytes.
 *
 * Common to every method. Preconditions: the guard has checked that the range
 * lies inside `sizeBytes` (safe integers, not negative) and that the handle is
 * not closed; calls overlap only as the capabilities allow (see the thread
 * model above). Errors: a `DriverError` (retryable when the backend may
 * recover), which the export answers with EIO; a call that outlives the
 * backend's `driver_timeout_seconds` fails with a retryable one.
 */
export interface VolumeHandle {
  /** Size of the volume when it was opened; a handle does not grow with an online extend (reopen to see it). */
  readonly sizeBytes: number;
  /**
   * Reads bytes.
   * - When: an NBD READ; a backup or copy reading the volume.
   * - Preconditions: common (above).
   * - Postconditions: `length` bytes, the data last written there; never
   *   written ranges read as zeros.
   * - Idempotency: read-only.
   * - Errors: common (above).
   * - Default: required.
   */
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * Writes bytes.
   * - When: an NBD WRITE (with FUA, followed by `flush`); a restore.
   * - Preconditions: common (above); the export is not read-only; `data`
   *   stays unchanged until the call settles (a handle may write it out as
   *   it is, uncopied, as an `fs` write or a socket write does).
   * - Postconditions: reads through this handle (and, with `canMultiConn`,
   *   through every handle) return `data`; durable only after `flush`.
   * - Idempotency: writing the same data again changes nothing.
   * - Errors: common (above); the export answers ENOSPC only for ranges
   *   past the end, which never reach the driver.
   * - Default: required.
   */
  write(offset: number, data: Buffer): Promise<void>;
  /**
   * Makes every write completed before the call durable (it survives a power
   * cut). With `canMultiConn` that covers writes made through other handles.
   * - When: NBD FLUSH and FUA; the end of a connection; before a snapshot of
   *   an in-use volume.
   * - Preconditions: common (above); the export waits for the writes in
   *   flight on this connection first.
   * - Postconditions: those writes are on stable storage.
   * - Idempotency: yes.
   * - Errors: common (above); a failed flush means writes may be lost, so it
   *   must never be reported as success.
   * - Default: required.
   */
  flush(): Promise<void>;
  /**
   * Discards a range.
   * - When: NBD TRIM (discard from the host).
   * - Preconditions: common (above).
   * - Postconditions: the range may read as zeros or as its old data, and its
   *   space may be freed.
   * - Idempotency: yes.
   * - Errors: common (above).
   * - Default if omitted: nothing happens (discard is advisory).
   */
  trim?(offset: number, length: number): Promise<void>;
  /**
   * Makes a range read as zeros.
   * - When: NBD WRITE_ZEROES.
   * - Preconditions: common (above).
   * - Postconditions: the range reads as zeros; with `mayPunch` its space may
   *   be freed (a hole), without it the space stays allocated.
   * - Idempotency: yes.
   * - Errors: common (above).
   * - Default if omitted: the guard writes zero buffers through `write`.
   */
  writeZeroes?(offset: number, length: number, mayPunch: boolean): Promise<void>;
  /**
   * Describes the allocation of a range.
   * - When: NBD BLOCK_STATUS (`base:allocation`); sparse-aware copies.
   * - Preconditions: common (above); `length` > 0.
   * - Postconditions: consecutive extents starting at `offset`; they may stop
   *   short of `length` but cover at least one byte. `zero` must be true only
   *   where the bytes do read as zeros.
   * - Idempotency: read-only.
   * - Errors: common (above).
   * - Default if omitted: the whole range is one data extent.
   */
  blockStatus?(offset: number, length: number): Promise<Extent[]>;
  /**
   * Advice that a range was written for good and will not be read soon: the
   * driver may drop it from its caches once it is on stable storage.
   * - When: a restore, after each background flush of what it wrote, so that
   *   it does not fill the page cache with a whole volume it never reads
   *   (each page it keeps is memory taken fresh from the system; the same
   *   few pages written over and over cost a fraction of that).
   * - Preconditions: common (above).
   * - Postconditions: none visible: reads return the same bytes; dirty pages
   *   may be written back sooner.
   * - Idempotency: yes.
   * - Errors: none (advice that cannot be followed is ignored).
   * - Default if omitted: nothing happens.
   */
  evict?(offset: number, length: number): Promise<void>;
  /**
   * The open file that holds the volume byte for byte (volume offset = file
   * offset, holes read as zeros, file size = `sizeBytes`), when the volume is
   * such a file.
   * - When: the NBD export reads it right after `openVolume`; with it, plain
   *   (non-TLS) connections are served from native threads that pread,
   *   pwrite, fallocate, lseek and fdatasync this file directly, several at
   *   once. The handle's methods, and the guard's checks and timeouts, are
   *   then bypassed (the export checks ranges itself).
   * - Preconditions: used only when the driver declares `canRunInParallel`
   *   and `canRunIoInParallel` (the guard hides it otherwise).
   * - Postconditions: the fd stays valid until `close`; the export duplicates
   *   it while serving, and fdatasync on it is the same as `flush`.
   * - Default if omitted: every request goes through the handle's methods.
   */
  readonly fd?: number;
  /**
   * The volume as an asynchronous backend the NBD data plane serves from its
   * own threads (`native/nbd_backend.h`; the rbd driver's open image, through
   * librbd's aio calls), for volumes that are not a local file.
   * - When: the NBD export reads it right after `openVolume` when there is no
   *   `fd`; plain (non-TLS) connections are then served without the event
   *   loop, and the handle's methods, the guard's checks and its timeouts
   *   are bypassed as with `fd`.
   * - Preconditions: used only when the driver declares `canRunInParallel`
   *   and `canRunIoInParallel` (the guard hides it otherwise).
   * - Postconditions: valid until `close`, which the export calls only once
   *   the connection's threads have released it; a flush through the backend
   *   is the same as `flush`.
   * - Default if omitted: every request goes through the handle's methods.
   */
  readonly dataPlaneBackend?: DataPlaneBackend;
  /**
   * Releases the handle.
   * - When: the end of a connection or of a copy.
   * - Preconditions: no call on the handle runs (the guard queues `close`
   *   behind them).
   * - Postconditions: the handle is unusable; the volume is unchanged (an
   *   unflushed write may or may not be durable).
   * - Idempotency: closing again succeeds.
   * - Errors: `DriverError`; the core logs it and forgets the handle.
   * - Default: required.
   */
  close(): Promise<void>;
}

/** One run of equally allocated bytes, as block status reports it. */
export interface Extent {
  length: number;
  /** Unallocated: no space is used. */
  hole: boolean;
  /** Reads as zeros. */
  zero: boolean;
}

/** How a pool makes snapshots and clones. */
export type CopyMethod = 'reflink' | 'copy' | 'cow';

/** Live capacity of one pool. */
export interface PoolStats {
  readonly name: string;
  readonly totalCapacityGiB: number;
  readonly freeCapacityGiB: number;
  /** Sum of the sizes of the volumes the backend holds (thin: promised, not used). */
  readonly provisionedCapacityGiB: number;
  /**
   * How snapshots and clones are made here: `reflink` (shared extents,
   * instant), `copy` (a sparse-aware copy of the data), `cow` (copy on write
   * in the driver). Default `copy`.
   */
  readonly copyMethod?: CopyMethod;
}

/**
 * Names storage on a backend that Basalt does not manage (Cinder's manage
 * `ref`): `{ "source-name": "…" }` or `{ "source-id": "…" }`. Which keys a
 * backend understands is its own; the core checks only that every value is a
 * string.
 */
export type ManageReference = Readonly<Record<string, string>>;

/** One volume or snapshot a backend holds, as {@link VolumeDriver.listManageableVolumes} reports it. */
export interface ManageableResource {
  /** What a manage request names it by. */
  readonly reference: ManageReference;
  /** Its size, rounded up to a whole GiB. */
  readonly sizeGiB: number;
  /** The Basalt id of the volume or snapshot it is, when Basalt already manages it; else null. */
  readonly basaltId: string | null;
  /** Whether a manage request naming it may succeed. */
  readonly safeToManage: boolean;
  /** Why not, when not safe (plain text of the driver's own, never backend output). */
  readonly reasonNotSafe: string | null;
  /** Anything else worth showing; null when nothing. */
  readonly extraInfo: string | null;
  /** For a snapshot: the reference of the volume it was taken from. */
  readonly sourceReference?: ManageReference;
}

/** The answer of {@link VolumeDriver.getStats}. */
export interface BackendStats {
  readonly pools: readonly PoolStats[];
}

/**
 * One storage backend, made by its registration's factory. Methods are
 * required unless marked optional. Every method may be called again with the
 * same arguments after a crash, a timeout or a lost lease (see each one's
 * idempotency); the core never calls two methods that change the same volume
 * at once.
 */
export interface VolumeDriver {
  /** What the driver can do; read once, through {@link resolveCapabilities}. */
  readonly capabilities: DeclaredCapabilities;

  /**
   * Prepares the backend (creates folders, connects, probes features).
   * - When: once, before any other call; the guard makes sure of it, and
   *   calls it again before the next call if it failed.
   * - Preconditions: none.
   * - Postconditions: every other method may be called.
   * - Idempotency: calling it again (another process of the cluster, a retry
   *   after a failure) succeeds.
   * - Errors: `DriverError`, retryable when the backend is not reachable yet.
   * - Default if omitted: nothing to prepare.
   */
  init?(): Promise<void>;

  /**
   * Reports capacity per pool.
   * - When: at every heartbeat of the volume service (`report_interval`).
   * - Preconditions: `init` succeeded.
   * - Postconditions: at least one pool; numbers in GiB, not negative; pool
   *   names stay the same between calls (volumes are placed by them).
   * - Idempotency: read-only.
   * - Errors: `DriverError`; the heartbeat then reports the last stats.
   * - Default: required.
   */
  getStats(): Promise<BackendStats>;

  /**
   * Creates an empty volume.
   * - When: for a volume in status `creating` without a source.
   * - Preconditions: `vol.sizeGiB` ≥ 1; the scheduler placed it here.
   * - Postconditions: the volume exists with exactly `vol.sizeGiB` GiB and
   *   reads as zeros.
   * - Idempotency: whatever an earlier, interrupted attempt left (nothing, a
   *   part, all of it), the call completes the volume to the right size and
   *   succeeds.
   * - Errors: `DriverError` (retryable when the backend is temporarily unable).
   * - Default: required.
   */
  createVolume(vol: VolumeRef): Promise<void>;

  /**
   * Deletes a volume and frees its space.
   * - When: for a volume in status `deleting`, after its snapshots are
   *   deleted and its handles closed.
   * - Preconditions: no handle of the volume is open.
   * - Postconditions: nothing of the volume remains on the backend (no
   *   leftover of an interrupted create either).
   * - Idempotency: deleting a missing volume succeeds.
   * - Errors: `DriverError`.
   * - Default: required.
   */
  deleteVolume(vol: Pick<VolumeRef, 'id'>): Promise<void>;

  /**
   * Grows a volume, keeping its data.
   * - When: for a volume in status `extending`.
   * - Preconditions: `newSizeGiB` > `vol.sizeGiB` (the size the core
   *   recorded); no handle is open unless `supportsOnlineExtend` (the guard
   *   checks both).
   * - Postconditions: the volume has exactly `newSizeGiB` GiB; old data
   *   intact; the new part reads as zeros; handles opened from now on have
   *   the new size, handles already open keep working at their old size.
   * - Idempotency: a volume already at `newSizeGiB` (or larger) succeeds.
   * - Errors: non-retryable `DriverError` if the volume does not exist.
   * - Default: required.
   */
  extendVolume(vol: VolumeRef, newSizeGiB: number): Promise<void>;

  /**
   * Takes a point-in-time copy of a volume.
   * - When: for a snapshot in status `creating`.
   * - Preconditions: the volume exists; no extend, revert or delete of it
   *   runs meanwhile, and (for an in-use volume) writes are quiesced at the
   *   export and flushed.
   * - Postconditions: the snapshot holds the volume's data as of the call;
   *   later writes to the volume do not change it.
   * - Idempotency: an existing, complete snapshot of that id succeeds; a
   *   partial one left by an interrupted attempt is replaced.
   * - Errors: `DriverError` (non-retryable when the volume is missing).
   * - Default: required.
   */
  createSnapshot(snap: SnapshotRef): Promise<void>;

  /**
   * Deletes a snapshot.
   * - When: for a snapshot in status `deleting`.
   * - Preconditions: no volume is being created from it.
   * - Postconditions: nothing of the snapshot remains; volumes made from it
   *   and the volume it was taken of are untouched.
   * - Idempotency: deleting a missing snapshot succeeds.
   * - Errors: `DriverError`.
   * - Default: required.
   * - `snap.volumeId`, when the caller gives it, names the volume the snapshot
   *   was taken of: a driver that finds snapshots through their volume looks
   *   there first (the rbd driver otherwise looks through every image).
   */
  deleteSnapshot(snap: Pick<SnapshotRef, 'id'> & Partial<Pick<SnapshotRef, 'volumeId'>>): Promise<void>;

  /**
   * Creates a new volume holding a snapshot's data.
   * - When: for a volume in status `creating` with a `snapshot_id`.
   * - Preconditions: `vol.sizeGiB` ≥ `snap.sizeGiB` (the guard checks); the
   *   snapshot exists on this backend and is not deleted meanwhile.
   * - Postconditions: the volume has `vol.sizeGiB` GiB; its first
   *   `snap.sizeGiB` GiB equal the snapshot, the rest reads as zeros; it is
   *   independent of the snapshot (either may be written or deleted).
   * - Idempotency: like `createVolume`: an interrupted attempt is completed.
   * - Errors: `DriverError` (non-retryable when the snapshot is missing).
   * - Default: required.
   */
  createVolumeFromSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void>;

  /**
   * Creates a new volume holding a copy of another volume (a clone).
   * - When: for a volume in status `creating` with a `source_volid`.
   * - Preconditions: `vol.sizeGiB` ≥ `source.sizeGiB` (the guard checks); no
   *   write reaches the source meanwhile (the core keeps it detached or
   *   quiesced, and busy).
   * - Postconditions: like `createVolumeFromSnapshot`, from the source volume.
   * - Idempotency: like `createVolume`: an interrupted attempt is completed.
   * - Errors: `DriverError` (non-retryable when the source is missing).
   * - Default: required.
   */
  cloneVolume(vol: VolumeRef, source: VolumeRef): Promise<void>;

  /**
   * Puts a snapshot's data back into its volume. Optional: present exactly
   * when `capabilities.supportsRevertToSnapshot`.
   * - When: for a volume in status `reverting` (3.40).
   * - Preconditions: the snapshot is the volume's latest; `vol.sizeGiB` ≥
   *   `snap.sizeGiB`; the volume is detached.
   * - Postconditions: the volume keeps `vol.sizeGiB`; its first `snap.sizeGiB`
   *   GiB equal the snapshot and the rest reads as zeros; the snapshot is
   *   unchanged. An interrupted revert leaves the old or the reverted data,
   *   never a mix.
   * - Idempotency: reverting again gives the same result.
   * - Errors: `DriverError`.
   * - Default if omitted: the guard refuses with `NOT_IMPLEMENTED` and the
   *   API refuses reverts on this backend.
   */
  revertToSnapshot?(vol: VolumeRef, snap: SnapshotRef): Promise<void>;

  /**
   * Opens a volume for block I/O.
   * - When: for each NBD connection to an attachment's export (and briefly
   *   during its negotiation), and for backups and copies.
   * - Preconditions: the volume exists (status available, in-use or busy).
   * - Postconditions: a handle of the volume's current size; it stays usable
   *   until closed, whatever management calls run meanwhile (except delete,
   *   which the core never calls with handles open).
   * - Idempotency: each call gives a new, independent handle; several may be
   *   open at once (several connections of one attachment, or attachments
   *   with `supportsMultiattach`).
   * - Errors: non-retryable `DriverError` when the volume does not exist.
   * - Default: required.
   */
  openVolume(vol: VolumeRef): Promise<VolumeHandle>;

  /**
   * Where a volume lives on the volume service's host. Optional: present
   * exactly when `capabilities.supportsLocalPath`.
   * - When: the volume service publishes `localPath({ id: '{volume_id}' })`
   *   in its service report as a template, and connection info for a host on
   *   the same machine substitutes the volume's id into it; so the path must
   *   be a pure function of the id that contains the id verbatim.
   * - Preconditions: none (synchronous, touches nothing).
   * - Postconditions: an absolute path of a file or block device holding
   *   the volume byte for byte while it exists, that a loop device may be
   *   set up on; writes through it are as durable as through a handle once
   *   the host flushes.
   * - Idempotency: pure.
   * - Errors: none.
   * - Default if omitted: volumes are attached over NBD only.
   */
  localPath?(vol: Pick<VolumeRef, 'id'>): string;

  /**
   * How a host that speaks the backend's own protocol opens a volume: Cinder's
   * connection info of that protocol (`driver_volume_type` and the driver's
   * part of `data`, in Cinder's key names), or undefined when hosts are to
   * use the NBD export (a driver whose operator chose NBD). Optional: present
   * exactly when `capabilities.supportsNativeConnection`.
   * - When: at every heartbeat, with `{ id: '{volume_id}' }`; the volume
   *   service publishes the answer in its service report as a template, and
   *   connection info for an attachment substitutes the volume's id into every
   *   string of it. So it must be a function of the id (and of the backend's
   *   state, such as its monitors, which the next heartbeat refreshes) that
   *   contains the id verbatim where it names the volume. The core adds
   *   `access_mode` and `encrypted` to `data`, as Cinder's volume manager does.
   * - Preconditions: `init` has succeeded.
   * - Postconditions: none (reads only). What is returned is readable by every
   *   user who attaches a volume of this backend: a secret belongs in it only
   *   where Cinder puts it there too.
   * - Idempotency: pure, as long as the backend does not change.
   * - Errors: `DriverError`; the volume service logs it and keeps publishing
   *   the last answer it had (so a passing failure does not switch hosts to NBD).
   * - Default if omitted: none; every attachment goes through the NBD export
   *   (or a local path).
   *
   * With `o.site` (contract 1.10, a driver with `supportsBackendReplication`):
   * the connection info as the replication target `o.site` serves the
   * volume, for the members of a group failed over alone (`failOverVolumes`);
   * asked at every heartbeat for each target.
   */
  nativeConnection?(vol: Pick<VolumeRef, 'id'>, o?: { site?: string }): Promise<NativeConnection | undefined>;

  /**
   * The extents of a volume that may differ between snapshot `from` and `to`
   * (a later snapshot of the same volume), or the volume as it is now when
   * `to` is omitted. Optional: present exactly when
   * `capabilities.supportsChangedExtents`.
   * - When: an incremental backup whose parent was taken from `from` (a
   *   backup of a snapshot whose snapshot still exists), reading `to` (the
   *   snapshot it backs up, or the temporary snapshot of an attached volume)
   *   or the detached volume itself; later, asynchronous replication.
   * - Preconditions: both snapshots exist on this backend and are snapshots of
   *   `vol`, `from` taken before `to`; nothing deletes them meanwhile; without
   *   `to`, nothing writes the volume meanwhile.
   * - Postconditions: none (reads only). Every byte that differs between the
   *   two lies inside a returned extent (extents may cover unchanged bytes: a
   *   coarse answer costs reading, never correctness); extents are sorted, do
   *   not overlap, and lie inside the larger of the two sizes. An extent
   *   past `from`'s size (after an extend) need not be listed: the core reads
   *   everything past the parent's size anyway.
   * - Idempotency: pure, while the snapshots exist.
   * - Errors: `DriverError`. The core then falls back to its own tracking or,
   *   failing that, to reading everything; a backup never fails for it.
   * - Default if omitted: everything changed (the core's own changed-block
   *   tracking applies where it knows better).
   */
  changedExtents?(vol: VolumeRef, from: SnapshotRef, to?: SnapshotRef): Promise<ChangedExtent[]>;

  /**
   * Registers `listener` for volumes this driver lost to another host.
   * Optional: present exactly when `capabilities.canLoseVolumes`.
   * - When: once, after `init`, by the volume service.
   * - Preconditions: none.
   * - Postconditions: from now on, each time the driver finds that another
   *   host took volumes from it, and after it made itself able to serve them
   *   again (a fresh connection), it calls `listener` with their ids. Handles
   *   open on them then fail every call; the core drops their exports, so
   *   hosts reconnect and new handles are opened.
   * - Idempotency: each call adds a listener.
   * - Errors: none.
   * - Default if omitted: volumes are never lost.
   */
  watchLostVolumes?(listener: (volumeIds: readonly string[]) => void): void;

  /**
   * Puts a volume under the backend's own replication to its target.
   * Optional: present exactly when `capabilities.supportsBackendReplication`
   * (as are the three below).
   * - When: by the core's loop (`replication-backend.ts`), for each volume of
   *   a replicated type on this backend, until it succeeds once in the
   *   process, and again after a failover.
   * - Preconditions: the volume exists; `mode` is the type's
   *   (`basalt:rbd_mirror_mode`, default `snapshot`).
   * - Postconditions: the backend copies the volume to the target from now
   *   on (the first copy may still be under way).
   * - Idempotency: a volume already replicated succeeds.
   * - Errors: `DriverError` (retryable while the target cannot be reached).
   * - Default if omitted: refused (`NOT_IMPLEMENTED`).
   */
  enableReplication?(vol: VolumeRef, o: { mode: 'snapshot' | 'journal' }): Promise<void>;

  /**
   * Marks a point the target is to reach (RBD: a mirror snapshot, which
   * rbd-mirror ships). Asynchronous replication loses at most the writes
   * after the last point the target has.
   * - When: by the core's loop, each half RPO (`basalt:replication_rpo_seconds`).
   * - Preconditions: `enableReplication` succeeded for the volume.
   * - Postconditions: the target will hold the volume as of now once it caught up.
   * - Idempotency: each call marks a new point; older ones may be dropped.
   * - Errors: `DriverError`.
   * - Default if omitted: nothing to mark (continuous replication).
   */
  replicationPoint?(vol: VolumeRef): Promise<void>;

  /**
   * How the volume's replication stands, as `replication_status` shows it:
   * `enabled` (the target is in step, up to the last point), `copying`
   * (the first copy, or a point, is on its way; or the target has not
   * reported yet), `error` (the target fails or cannot be reached).
   * - When: by the core's loop, at every tick.
   * - Preconditions: as {@link replicationPoint}.
   * - Postconditions: none (reads only). `detail` is for operators' logs, never users.
   * - Idempotency: read-only.
   * - Errors: `DriverError` when the primary itself cannot be read.
   * - Default if omitted: refused (`NOT_IMPLEMENTED`).
   */
  replicationState?(vol: VolumeRef): Promise<{ status: 'enabled' | 'copying' | 'error'; detail: string }>;

  /**
   * Makes the replication target `backendId` the storage the driver serves
   * from (`default`: its own, a failback), promoting the copies of `vols`
   * there and demoting their old primaries where those can be reached.
   * - When: by the failover job (`os-services/failover_host`), with the
   *   backend's replicated volumes; and, with none, by the core's loop in
   *   every process of the backend whose services row names another active
   *   target than the driver serves from (a restart while failed over, a
   *   failover run by another member).
   * - Preconditions: `backendId` is a configured target or `default`.
   * - Postconditions: handles opened from now on use `backendId`'s storage;
   *   handles open before fail every call and the driver reports their
   *   volumes lost (`watchLostVolumes`), so the core drops their exports and
   *   hosts reconnect. The result names the volumes whose copy could not be
   *   promoted (they stay where they were), with why in `reasons` (for
   *   operators' logs) when the driver knows.
   * - Idempotency: a volume already promoted there counts as done; a call
   *   after a crash midway completes the rest.
   * - Errors: `DriverError`, retryable when a failback waits for copies to
   *   be in step on the backend's own storage.
   * - Default if omitted: refused (`NOT_IMPLEMENTED`).
   */
  failOver?(backendId: string, vols: readonly VolumeRef[]): Promise<FailoverResult>;

  /**
   * Makes the replication target `backendId` serve just `vols` (`default`:
   * the backend's own storage again), promoting their copies there as
   * {@link failOver} does; the backend's other volumes stay where they are.
   * Optional (contract 1.10), with `supportsBackendReplication`.
   * - When: by a replication group's failover job (Cinder's 3.38
   *   `failover_replication`), with the group's members; and, after a
   *   restart, by the core's loop for each member of a group failed over.
   * - Preconditions: `backendId` is a configured target or `default`; the
   *   backend itself serves from its own storage (the API refuses a group's
   *   failover on a backend failed over as a whole).
   * - Postconditions: as {@link failOver}, for `vols` alone: handles on them
   *   opened from now on use `backendId`'s storage; older ones fail and the
   *   volumes are reported lost. The result names the volumes whose copy
   *   could not be promoted.
   * - Idempotency: as {@link failOver}.
   * - Errors: as {@link failOver}.
   * - Default if omitted: refused (`NOT_IMPLEMENTED`): a group on such a
   *   backend cannot fail over alone.
   *
   * With `o.prepare`: only what may be done while the volumes are still
   * written, before the core holds their writes for the real call (a
   * failback's wait for the copies to be in step, and the repairs the real
   * call would make first, such as setting a copy resyncing). Serves no
   * volume from another side yet, returns no failures; throws the retryable
   * `DriverError` the real call would.
   */
  failOverVolumes?(backendId: string, vols: readonly VolumeRef[], o?: { prepare?: boolean }): Promise<FailoverResult>;

  /**
   * The extents of a snapshot that may hold data. Optional: present exactly
   * when `capabilities.supportsAllocatedExtents`.
   * - When: a client asks for a snapshot's allocated extents (the
   *   experimental block metadata API, CSI's GetMetadataAllocated), to read
   *   only those for a full backup.
   * - Preconditions: the snapshot exists on this backend; nothing deletes it meanwhile.
   * - Postconditions: none (reads only). Every byte of the snapshot that does
   *   not read as zero lies inside a returned extent (extents may cover zeros
   *   and holes: a coarse answer costs reading, never correctness); extents
   *   are sorted, do not overlap and lie inside the snapshot's size.
   * - Idempotency: pure, while the snapshot exists.
   * - Errors: `DriverError`.
   * - Default if omitted: the whole snapshot.
   */
  allocatedExtents?(snap: SnapshotRef): Promise<ChangedExtent[]>;

  /**
   * The size of storage a manage request names. Optional: present exactly
   * when `capabilities.supportsManageExisting` (as are all the manage methods).
   * - When: for a volume in status `managing`, before its quota is taken and
   *   before {@link manageExisting}.
   * - Preconditions: `ref`'s values are strings.
   * - Postconditions: none (reads only).
   * - Idempotency: pure, as long as the storage does not change.
   * - Errors: non-retryable `DriverError` when `ref` names nothing this backend
   *   may adopt (missing, malformed, already a Basalt volume or snapshot).
   * - Default if omitted: the core refuses manage requests for this backend.
   * @returns the size in GiB, rounded up (at least 1).
   */
  manageExistingGetSize?(ref: ManageReference): Promise<number>;

  /**
   * Adopts the storage `ref` names as the volume `vol.id`.
   * - When: for a volume in status `managing`, after {@link manageExistingGetSize}.
   * - Preconditions: as for `manageExistingGetSize`; the volume `vol.id` does not exist yet.
   * - Postconditions: the volume `vol.id` exists with the storage's data and
   *   size (rounded up to whole GiB by growing it, never by cutting it); `ref`
   *   no longer names anything the backend lists as manageable.
   * - Idempotency: when `ref` names nothing but the volume `vol.id` exists (an
   *   earlier attempt got that far), it succeeds.
   * - Errors: non-retryable `DriverError` as for `manageExistingGetSize`.
   * - Default if omitted: the core refuses manage requests for this backend.
   */
  manageExisting?(vol: Pick<VolumeRef, 'id'>, ref: ManageReference): Promise<void>;

  /**
   * Forgets a volume while keeping its data (`os-unmanage`).
   * - When: for a volume in status `unmanaging`; its snapshots are gone and no handle is open.
   * - Preconditions: none beyond those.
   * - Postconditions: the volume `vol.id` no longer exists for the backend;
   *   its data stays, listed by {@link listManageableVolumes} under a
   *   reference a manage request can name (the file driver's
   *   `unmanaged-volume-<id>`).
   * - Idempotency: unmanaging a volume that no longer exists succeeds.
   * - Errors: `DriverError`.
   * - Default if omitted: the core refuses unmanage requests for this backend.
   */
  unmanage?(vol: Pick<VolumeRef, 'id'>): Promise<void>;

  /**
   * Adopts the storage `ref` names as the snapshot `snap.id` of the volume `snap.volumeId`.
   * - When: for a snapshot in status `creating` made by `os-snapshot-manage`.
   * - Preconditions: the volume `snap.volumeId` exists on this backend; the
   *   snapshot `snap.id` does not exist yet.
   * - Postconditions: the snapshot exists with the storage's data, usable as
   *   any snapshot (`createVolumeFromSnapshot`, `deleteSnapshot`).
   * - Idempotency: like `manageExisting`.
   * - Errors: non-retryable `DriverError` when `ref` names nothing it may adopt.
   * - Default if omitted: the core refuses snapshot manage requests for this backend.
   */
  manageExistingSnapshot?(snap: Pick<SnapshotRef, 'id' | 'volumeId'>, ref: ManageReference): Promise<void>;

  /**
   * Forgets a snapshot while keeping its data (snapshot `os-unmanage`).
   * - When: for a snapshot in status `unmanaging`.
   * - Preconditions: no volume is being made from it.
   * - Postconditions: like `unmanage`, for a snapshot (the file driver's
   *   `unmanaged-snapshot-<id>`).
   * - Idempotency: unmanaging a snapshot that no longer exists succeeds.
   * - Errors: `DriverError`.
   * - Default if omitted: the core refuses snapshot unmanage requests for this backend.
   */
  unmanageSnapshot?(snap: Pick<SnapshotRef, 'id'>): Promise<void>;

  /**
   * What the backend holds that is or could be a volume, for the 3.8
   * `manageable_volumes` listing.
   * - When: on an admin's listing request.
   * - Preconditions: none.
   * - Postconditions: none (reads only); Basalt's own volumes are listed
   *   with `basaltId` and `safeToManage: false`.
   * - Idempotency: pure.
   * - Errors: `DriverError`.
   * - Default if omitted: the core refuses the listing for this backend.
   */
  listManageableVolumes?(): Promise<ManageableResource[]>;

  /**
   * Like {@link listManageableVolumes}, for snapshots (with `sourceReference`).
   * - When: on an admin's `manageable_snapshots` listing request.
   * - Preconditions: none.
   * - Postconditions: none (reads only).
   * - Idempotency: pure.
   * - Errors: `DriverError`.
   * - Default if omitted: the core refuses the listing for this backend.
   */
  listManageableSnapshots?(): Promise<ManageableResource[]>;

  /**
   * Releases resources (connections, timers) at shutdown.
   * - When: once, when the volume service stops.
   * - Preconditions: every other call has ended (the guard waits for them,
   *   timed-out ones included); handles may still be open (their exports
   *   are closed first, but a copy may be cut short).
   * - Postconditions: nothing of the process holds the backend.
   * - Idempotency: yes.
   * - Errors: `DriverError`; the core logs it and stops anyway.
   * - Default if omitted: nothing to release.
   */
  close?(): Promise<void>;
}

/** A byte range of a volume that may have changed (see {@link VolumeDriver.changedExtents}). */
export interface ChangedExtent {
  readonly offset: number;
  readonly length: number;
}

/**
 * Connection info in a backend's own protocol (see
 * {@link VolumeDriver.nativeConnection}): Cinder's `driver_volume_type` (such
 * as `rbd`) and the driver's keys of `data`.
 */
export interface NativeConnection {
  readonly driverVolumeType: string;
  readonly data: Readonly<Record<string, unknown>>;
}

/** The id placeholder of a local path template (see {@link VolumeDriver.localPath}). */
export const VOLUME_ID_PLACEHOLDER = '{volume_id}';

/** Bytes in a GiB. */
export const GiB = 1024 ** 3;
