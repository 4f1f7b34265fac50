/**
 * The volume driver contract: the one small interface every storage backend
 * implements, plus a readonly capabilities object. The core never probes a
 * driver's methods or class to learn what it can do; it reads `capabilities`.
 *
 * Lifecycle of a volume and its snapshots as the core drives them:
 *
 *   createVolume ─┐
 *   createVolumeFromSnapshot ─┼─► volume (size N) ──extendVolume(M>N)──► volume (size M)
 *   cloneVolume ──┘               │   ▲      │                        │
 *                                 │   │      └─openVolume─► handle (read/write/flush/close)
 *                   createSnapshot│   │revertToSnapshot (optional)
 *                                 ▼   │
 *                             snapshot (point in time) ──deleteSnapshot──► (gone)
 *                                 │
 *                                 └─► createVolumeFromSnapshot: a new, independent volume
 *   deleteVolume ─► (gone); the core deletes a volume's snapshots first.
 *
 * Every method may be called again after a crash with the same arguments and
 * must then complete the step, not fail or duplicate it.
 *
 * Contract version 1.1 (1.1 added `VolumeHandle.fd`). The loader refuses a driver with an unknown major
 * version; a minor version only adds optional members with defaults.
 */

/** The contract version this core implements. */
export const DRIVER_CONTRACT_VERSION = '1.1';

/** What a driver declares it can do. Every flag's default is given. */
export interface DriverCapabilities {
  /**
   * Whether the core may call the driver's methods concurrently. Default
   * false: the core serialises calls (see the guard).
   */
  readonly canRunInParallel: boolean;
  /** Whether volumes are thin (space used only when written). Default false. */
  readonly supportsThinProvisioning: boolean;
  /** Whether `extendVolume` may be called on an attached volume. Default false. */
  readonly supportsOnlineExtend: boolean;
  /** Whether several hosts may have the volume open at once (multiattach). Default false. */
  readonly supportsMultiattach: boolean;
  /** Whether `revertToSnapshot` exists. Default false (the core refuses reverts). */
  readonly supportsRevertToSnapshot: boolean;
  /** Protocol named in pool stats (`storage_protocol`), e.g. `nbd`. */
  readonly storageProtocol: string;
  /** Vendor and version shown in capabilities. */
  readonly vendorName: string;
  readonly driverVersion: string;
}

/** The part of a volume a driver needs. */
export interface VolumeRef {
  /** The volume's UUID; drivers name their objects after it (`volume-<id>`). */
  readonly id: string;
  /** Size in GiB. */
  readonly sizeGiB: number;
}

/** The part of a snapshot a driver needs. */
export interface SnapshotRef {
  /** The snapshot's UUID; drivers name their objects after it (`snapshot-<id>`). */
  readonly id: string;
  /** The volume it was (or is being) taken of. */
  readonly volumeId: string;
  /** Size in GiB of the volume when the snapshot was taken. */
  readonly sizeGiB: number;
}

/**
 * Block I/O on an open volume: what the NBD export, backups and image
 * transfers use. Offsets and lengths are in bytes; the core checks them
 * against `sizeBytes` before calling.
 */
export interface VolumeHandle {
  /** Size of the volume when it was opened. */
  readonly sizeBytes: number;
  /** Reads `length` bytes at `offset`; unwritten ranges read as zeros. */
  read(offset: number, length: number): Promise<Buffer>;
  /** Writes `data` at `offset`. Durable only after `flush`. */
  write(offset: number, data: Buffer): Promise<void>;
  /** Makes every completed write durable. */
  flush(): Promise<void>;
  /**
   * Discards a range: it may read back as zeros or as its old data
   * afterwards, and its space may be freed. Optional; default: nothing
   * (discard is advisory).
   */
  trim?(offset: number, length: number): Promise<void>;
  /**
   * Makes a range read as zeros. With `mayPunch` the space may be freed (a
   * hole); without it, it stays allocated. Optional; default: the core
   * writes zero buffers.
   */
  writeZeroes?(offset: number, length: number, mayPunch: boolean): Promise<void>;
  /**
   * Describes the allocation of a range as consecutive extents from `offset`
   * (they may stop short of `length`). Optional; default: one data extent.
   */
  blockStatus?(offset: number, length: number): Promise<Extent[]>;
  /**
   * The open file that holds the volume byte for byte (volume offset =
   * file offset, holes read as zeros), when the volume is such a file.
   * Optional; default: none. With it the NBD export serves plain (non-TLS)
   * connections from native threads that read, write, punch and seek this
   * file directly: the handle's methods, and the guard's range checks and
   * timeouts, are then bypassed (the export checks ranges itself). The fd
   * stays valid until `close`; the export duplicates it while serving.
   */
  readonly fd?: number;
  /** Releases the handle. Idempotent. */
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

/** The answer of {@link VolumeDriver.getStats}. */
export interface BackendStats {
  readonly pools: readonly PoolStats[];
}

/**
 * One storage backend. Methods below are required unless marked optional.
 *
 * Errors: a method throws `DriverError` (from `src/errors`) for failures it
 * understands, with `retryable: true` when trying again later may succeed.
 * Anything else it throws is wrapped by the core's guard into a non-retryable
 * `DriverError`, keeping it as the cause.
 */
export interface VolumeDriver {
  /** `major.minor` of the contract the driver was written against. */
  readonly contractVersion: string;
  readonly capabilities: DriverCapabilities;

  /**
   * Prepares the backend (creates folders, connects).
   * - When: once, before any other call; the guard makes sure of it.
   * - Idempotent: yes.
   * - Default if omitted: nothing to prepare.
   */
  init?(): Promise<void>;

  /**
   * Reports capacity per pool.
   * - When: at every heartbeat of the volume service.
   * - Postconditions: numbers are in GiB and non-negative.
   * - Idempotent: read-only.
   */
  getStats(): Promise<BackendStats>;

  /**
   * Creates an empty (all-zero) volume of `vol.sizeGiB` GiB.
   * - When: by the volume service for a volume in status `creating`.
   * - Preconditions: the core checked the size (≥ 1) and placed it here.
   * - Postconditions: the volume exists with exactly that size and reads as zeros.
   * - Idempotent: if it already exists (a previous attempt), completes it to
   *   the right size and succeeds.
   * - Errors: `DriverError` (retryable when the backend is temporarily unable).
   */
  createVolume(vol: VolumeRef): Promise<void>;

  /**
   * Deletes a volume and frees its space.
   * - When: by the volume service for a volume in status `deleting`.
   * - Postconditions: nothing of the volume remains on the backend.
   * - Idempotent: deleting a missing volume succeeds.
   * - Errors: `DriverError`.
   */
  deleteVolume(vol: Pick<VolumeRef, 'id'>): Promise<void>;

  /**
   * Grows a volume to `newSizeGiB`, keeping its data.
   * - When: by the volume service for a volume in status `extending`.
   * - Preconditions: `newSizeGiB` > the size the core recorded; the volume
   *   is detached unless `supportsOnlineExtend`.
   * - Postconditions: the volume has exactly `newSizeGiB`; old data intact;
   *   the new part reads as zeros.
   * - Idempotent: a volume already at `newSizeGiB` (or larger) succeeds.
   * - Errors: `DriverError` (non-retryable if the volume does not exist).
   */
  extendVolume(vol: VolumeRef, newSizeGiB: number): Promise<void>;

  /**
   * Takes a point-in-time copy of a volume.
   * - When: for a snapshot in status `creating`; the core guarantees no
   *   extend, revert or delete of the volume runs meanwhile, and (for in-use
   *   volumes) that writes are quiesced at the export.
   * - Postconditions: the snapshot holds the volume's data as of the call;
   *   later writes to the volume do not change it.
   * - Idempotent: an existing, complete snapshot of that id succeeds; a
   *   partial one left by a crash is replaced.
   * - Errors: `DriverError`.
   */
  createSnapshot(snap: SnapshotRef): Promise<void>;

  /**
   * Deletes a snapshot.
   * - Idempotent: deleting a missing snapshot succeeds.
   * - Postconditions: nothing of the snapshot remains; volumes made from it are untouched.
   */
  deleteSnapshot(snap: Pick<SnapshotRef, 'id'>): Promise<void>;

  /**
   * Creates a new volume holding a snapshot's data.
   * - Preconditions: `vol.sizeGiB` ≥ `snap.sizeGiB`; the snapshot exists on this backend.
   * - Postconditions: the volume has `vol.sizeGiB`; its first `snap.sizeGiB`
   *   GiB equal the snapshot, the rest reads as zeros; it is independent of
   *   the snapshot (either may be written or deleted).
   * - Idempotent: like `createVolume`.
   */
  createVolumeFromSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void>;

  /**
   * Creates a new volume holding a copy of another volume.
   * - Preconditions: `vol.sizeGiB` ≥ `source.sizeGiB`; no write reaches the
   *   source meanwhile (the core keeps it detached or quiesced).
   * - Postconditions: like `createVolumeFromSnapshot`, from the source volume.
   * - Idempotent: like `createVolume`.
   */
  cloneVolume(vol: VolumeRef, source: VolumeRef): Promise<void>;

  /**
   * Puts a snapshot's data back into its volume. Optional: present exactly
   * when `capabilities.supportsRevertToSnapshot`.
   * - Preconditions: the snapshot is the volume's latest; `vol.sizeGiB` ≥ `snap.sizeGiB`.
   * - Postconditions: the volume keeps `vol.sizeGiB`; its first `snap.sizeGiB`
   *   GiB equal the snapshot and the rest reads as zeros; the snapshot is unchanged.
   * - Idempotent: reverting again gives the same result.
   * - Default if omitted: the core refuses reverts on this backend.
   */
  revertToSnapshot?(vol: VolumeRef, snap: SnapshotRef): Promise<void>;

  /**
   * Opens a volume for block I/O.
   * - Preconditions: the volume exists.
   * - Errors: `DriverError` when it does not.
   */
  openVolume(vol: VolumeRef): Promise<VolumeHandle>;

  /**
   * Releases resources (handles, connections) at shutdown.
   * - Default if omitted: nothing to release.
   */
  close?(): Promise<void>;
}

/** Bytes in a GiB. */
export const GiB = 1024 ** 3;
