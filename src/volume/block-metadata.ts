/**
 * Block metadata of snapshots and volumes for backup tools (issue 17 part 4):
 * which extents of a snapshot hold data, and which differ between a snapshot
 * (or a volume that nothing writes) and an earlier snapshot of the same
 * volume — changed-block tracking as a service, in the shape of CSI's
 * SnapshotMetadata service (GetMetadataAllocated, GetMetadataDelta): byte
 * extents, ordered, paged by a starting offset.
 *
 * Answers come from the volume's driver (`allocatedExtents`,
 * `changedExtents`), the same machinery incremental backups and replication
 * use; so only a process that serves the volume's backend answers (an API
 * without it refuses with 503, as a backup nobody can run is refused). A
 * driver that cannot tell answers coarsely (the whole snapshot, or everything
 * past the base): never wrong, only more to read.
 */
import type { Caller } from '../common/index.ts';
import type { SnapshotRow, VolumeRow } from '../db/index.ts';
import { GiB, type ChangedExtent, type GuardedDriver, type SnapshotRef } from '../drivers/index.ts';
import { BasaltError, InvalidInputError } from '../errors/index.ts';
import type { VolumeManager } from './volume-manager.ts';

/** One page of extents, as CSI's SnapshotMetadata answers. */
export interface BlockMetadataPage {
  /** CSI's `block_metadata_type`: extents of any length. */
  block_metadata_type: 'VARIABLE_LENGTH';
  /** The size of the snapshot (or volume) the extents are of. */
  volume_capacity_bytes: number;
  /** Ordered, non-overlapping extents starting at or after the page's starting offset. */
  block_metadata: Array<{ byte_offset: number; size_bytes: number }>;
  /** Where the next page starts (pass it as `starting_offset`); null on the last page. */
  next_starting_offset: number | null;
}

/** Which part of the answer a request wants. */
export interface PageRequest {
  /** Byte offset the answer starts at (an extent across it is cut there). */
  startingOffset: number;
  /** Most extents in one page. */
  maxResults: number;
}

/** What the service needs. */
export interface BlockMetadataDeps {
  look: VolumeManager;
  /** The drivers of the backends this process serves, by cluster. */
  drivers: ReadonlyMap<string, GuardedDriver>;
}

/** Answers block metadata requests. One per API process. */
export class BlockMetadata {
  constructor(private readonly deps: BlockMetadataDeps) {}

  /**
   * The extents of snapshot `id` that may hold data (GetMetadataAllocated).
   * @throws NotFoundError for a snapshot the caller cannot see; InvalidInputError when it is not available;
   *   BasaltError BACKEND_UNAVAILABLE when no volume service of this process serves its backend.
   */
  async allocated(caller: Caller, id: string, page: PageRequest): Promise<BlockMetadataPage> {
    const s = await this.available(caller, id, 'snapshot_id');
    const v = await this.deps.look.get(caller, s.volume_id);
    const driver = this.driverOf(v);
    const size = s.volume_size * GiB;
    const extents = driver.capabilities.supportsAllocatedExtents ? await driver.allocatedExtents(ref(s)) : [{ offset: 0, length: size }];
    return paged(extents, size, page);
  }

  /**
   * The extents that may differ between base snapshot `baseId` and snapshot
   * `id`, or volume `id` (GetMetadataDelta). The volume must be available:
   * nothing may write it while it is compared (snapshot an attached one first).
   * @throws NotFoundError for a resource the caller cannot see; InvalidInputError naming
   *   `base_snapshot_id` for a base of another volume or not older, or naming the resource
   *   when it is not available; BasaltError BACKEND_UNAVAILABLE as {@link allocated}.
   */
  async delta(caller: Caller, target: { snapshotId: string } | { volumeId: string }, baseId: string, page: PageRequest): Promise<BlockMetadataPage> {
    const base = await this.available(caller, baseId, 'base_snapshot_id');
    let to: SnapshotRow | undefined;
    let v: VolumeRow;
    if ('snapshotId' in target) {
      to = await this.available(caller, target.snapshotId, 'snapshot_id');
      v = await this.deps.look.get(caller, to.volume_id);
      if (to.id === base.id) throw new InvalidInputError('Invalid input received: base_snapshot_id must name an earlier snapshot than the one compared.');
      if (base.volume_id !== to.volume_id) throw new InvalidInputError(`Invalid input received: base_snapshot_id ${base.id} is a snapshot of another volume than snapshot ${to.id}.`);
      if (base.created_at >= to.created_at) throw new InvalidInputError(`Invalid input received: base_snapshot_id ${base.id} is not older than snapshot ${to.id}.`);
    } else {
      v = await this.deps.look.get(caller, target.volumeId);
      if (base.volume_id !== v.id) throw new InvalidInputError(`Invalid input received: base_snapshot_id ${base.id} is not a snapshot of volume ${v.id}.`);
      // Compared while nothing writes it: an attached volume's answer would be out of date as it is given.
      if (v.status !== 'available') throw new InvalidInputError(`Invalid volume: Volume ${v.id} must be available to compare it with a snapshot (it is ${v.status}); take a snapshot of it and compare that.`);
    }
    const driver = this.driverOf(v);
    const size = (to ? to.volume_size : v.size) * GiB;
    // A driver that cannot tell: everything may differ.
    const extents = driver.capabilities.supportsChangedExtents
      ? await driver.changedExtents({ id: v.id, sizeGiB: v.size }, ref(base), to ? ref(to) : undefined)
      : [{ offset: 0, length: size }];
    // Past the base's size everything is new: the contract lets drivers leave it out.
    const baseSize = base.volume_size * GiB;
    return paged(size > baseSize ? union(extents, { offset: baseSize, length: size - baseSize }) : extents, size, page);
  }

  /** Snapshot `id`, which must be available. */
  private async available(caller: Caller, id: string, field: string): Promise<SnapshotRow> {
    const s = await this.deps.look.getSnapshot(caller, id);
    if (s.status !== 'available') throw new InvalidInputError(`Invalid input received: ${field} ${id} is ${s.status}; its block metadata can be read once it is available.`);
    return s;
  }

  private driverOf(v: VolumeRow): GuardedDriver {
    const driver = this.deps.drivers.get(v.cluster_name ?? '');
    if (!driver) throw new BasaltError('BACKEND_UNAVAILABLE', `No volume service of this process serves the backend of volume ${v.id}; ask the API of a process that runs its volume service.`);
    return driver;
  }
}

function ref(s: SnapshotRow): SnapshotRef {
  return { id: s.id, volumeId: s.volume_id, sizeGiB: s.volume_size };
}

/** `extents` with `extra` (at their end) merged in. */
function union(extents: readonly ChangedExtent[], extra: ChangedExtent): ChangedExtent[] {
  const kept = extents.filter((e) => e.offset + e.length < extra.offset);
  const joined = extents.filter((e) => e.offset + e.length >= extra.offset);
  const start = Math.min(extra.offset, ...joined.map((e) => e.offset));
  return [...kept, { offset: start, length: extra.offset + extra.length - start }];
}

/** One page: the extents from `startingOffset` on (an extent across it cut there), at most `maxResults`. */
function paged(extents: readonly ChangedExtent[], sizeBytes: number, page: PageRequest): BlockMetadataPage {
  const from = extents
    .filter((e) => e.length > 0 && e.offset + e.length > page.startingOffset)
    .map((e) => (e.offset >= page.startingOffset ? e : { offset: page.startingOffset, length: e.offset + e.length - page.startingOffset }));
  const shown = from.slice(0, page.maxResults);
  const last = shown.at(-1);
  return {
    block_metadata_type: 'VARIABLE_LENGTH',
    volume_capacity_bytes: sizeBytes,
    block_metadata: shown.map((e) => ({ byte_offset: e.offset, size_bytes: e.length })),
    next_starting_offset: from.length > shown.length && last ? last.offset + last.length : null,
  };
}
