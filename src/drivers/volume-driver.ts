/**
 * The volume driver contract: the one small interface every storage backend
 * implements, plus a readonly capabilities object. The core never probes a
 * driver's methods or class to learn what it can do; it reads `capabilities`.
 *
 * Lifecycle of a volume as the core drives it:
 *
 *       createVolume ──► (exists, size N) ──extendVolume(M>N)──► (exists, size M)
 *            │                   │
 *            │ (crash: re-run)   └──deleteVolume──► (gone)
 *            ▼
 *       createVolume again completes the same volume (idempotent)
 *
 * Every method may be called again after a crash with the same arguments and
 * must then complete the step, not fail or duplicate it.
 *
 * Contract version 1.0. The loader refuses a driver with an unknown major
 * version; a minor version only adds optional members with defaults.
 */

/** The contract version this core implements. */
export const DRIVER_CONTRACT_VERSION = '1.0';

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

/** Live capacity of one pool. */
export interface PoolStats {
  readonly name: string;
  readonly totalCapacityGiB: number;
  readonly freeCapacityGiB: number;
  /** Sum of the sizes of the volumes the backend holds (thin: promised, not used). */
  readonly provisionedCapacityGiB: number;
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
   * Releases resources (handles, connections) at shutdown.
   * - Default if omitted: nothing to release.
   */
  close?(): Promise<void>;
}

/** Bytes in a GiB. */
export const GiB = 1024 ** 3;
