/**
 * The test double of a backend: volumes and snapshots live in this process's
 * memory and are lost when it exits. It stands for the storage edge only; the
 * core treats it exactly like any other driver.
 *
 * Data is kept in 64 KiB chunks; unwritten chunks read as zeros. Snapshots and
 * clones share chunk buffers with their source, and a write replaces a chunk
 * instead of changing it in place, so they are copy-on-write for free.
 */
import { DriverError } from '../../errors/index.ts';
import {
  GiB,
  type BackendStats, type DeclaredCapabilities, type Extent, type ManageableResource, type ManageReference, type SnapshotRef, type VolumeDriver, type VolumeHandle, type VolumeRef,
} from '../volume-driver.ts';

const CHUNK = 64 * 1024;

/** One volume's or snapshot's data. */
interface Image { sizeBytes: number; chunks: Map<number, Buffer> }

/** Settings of a {@link MemoryDriver}. */
export interface MemoryDriverOptions {
  poolName: string;
  /** Capacity to report in GiB. Default 1024. */
  totalCapacityGiB?: number;
  /**
   * Capabilities to declare instead of its own, for tests: a driver may
   * always declare less than it can (no revert, no multi-conn, serial calls,
   * handle I/O that may not overlap) and the core must then do without.
   */
  declare?: Partial<DeclaredCapabilities>;
}

/** Volumes and snapshots as chunk maps. */
export class MemoryDriver implements VolumeDriver {
  readonly capabilities: DeclaredCapabilities;
  /** Volume id → data. Exposed for tests that check for leaks. */
  readonly volumes = new Map<string, Image>();
  /** Snapshot id → data. */
  readonly snapshots = new Map<string, Image>();
  /** Data the backend holds that is no volume or snapshot of Basalt's, by `source-name` (tests put images here to manage them). */
  readonly unmanaged = new Map<string, { sizeBytes: number; chunks: Map<number, Buffer> }>();

  constructor(private readonly options: MemoryDriverOptions) {
    this.capabilities = {
      canRunInParallel: true, // every call does its work without waiting in between
      // A call changes the chunk map without waiting in between, so calls on one handle cannot interleave badly.
      canRunIoInParallel: true,
      // Every handle reads and writes the one image in this process's memory.
      canMultiConn: true,
      supportsThinProvisioning: true,
      supportsOnlineExtend: true,
      supportsMultiattach: true,
      supportsRevertToSnapshot: true,
      supportsManageExisting: true,
      volatile: true, // nothing outlives the process
      storageProtocol: 'nbd',
      vendorName: 'Basalt',
      driverVersion: '1.0.0',
      ...options.declare,
    };
    // Without the capability the method must be absent too, as the contract says.
    if (!this.capabilities.supportsRevertToSnapshot) (this as { revertToSnapshot?: unknown }).revertToSnapshot = undefined;
    if (!this.capabilities.supportsManageExisting) {
      for (const m of ['manageExistingGetSize', 'manageExisting', 'unmanage', 'manageExistingSnapshot', 'unmanageSnapshot', 'listManageableVolumes', 'listManageableSnapshots']) {
        (this as Record<string, unknown>)[m] = undefined;
      }
    }
  }

  async getStats(): Promise<BackendStats> {
    const total = this.options.totalCapacityGiB || 1024;
    const provisioned = [...this.volumes.values()].reduce((a, v) => a + v.sizeBytes / GiB, 0);
    const used = [...this.volumes.values(), ...this.snapshots.values()].reduce((a, v) => a + v.chunks.size * CHUNK / GiB, 0);
    return { pools: [{ name: this.options.poolName, totalCapacityGiB: total, freeCapacityGiB: Math.max(0, total - used), provisionedCapacityGiB: provisioned, copyMethod: 'cow' }] };
  }

  async createVolume(vol: VolumeRef): Promise<void> {
    const existing = this.volumes.get(vol.id);
    if (existing) resize(existing, vol.sizeGiB * GiB);
    else this.volumes.set(vol.id, { sizeBytes: vol.sizeGiB * GiB, chunks: new Map() });
  }

  async deleteVolume(vol: Pick<VolumeRef, 'id'>): Promise<void> {
    this.volumes.delete(vol.id);
  }

  async extendVolume(vol: VolumeRef, newSizeGiB: number): Promise<void> {
    const image = this.volume(vol.id);
    if (image.sizeBytes < newSizeGiB * GiB) image.sizeBytes = newSizeGiB * GiB;
  }

  async createSnapshot(snap: SnapshotRef): Promise<void> {
    if (this.snapshots.has(snap.id)) return;
    this.snapshots.set(snap.id, copy(this.volume(snap.volumeId)));
  }

  async deleteSnapshot(snap: Pick<SnapshotRef, 'id'>): Promise<void> {
    this.snapshots.delete(snap.id);
  }

  async createVolumeFromSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void> {
    const source = this.snapshots.get(snap.id);
    if (!source) throw new DriverError(`Snapshot ${snap.id} does not exist`);
    this.volumes.set(vol.id, resize(copy(source), vol.sizeGiB * GiB));
  }

  async cloneVolume(vol: VolumeRef, source: VolumeRef): Promise<void> {
    this.volumes.set(vol.id, resize(copy(this.volume(source.id)), vol.sizeGiB * GiB));
  }

  async revertToSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void> {
    const source = this.snapshots.get(snap.id);
    if (!source) throw new DriverError(`Snapshot ${snap.id} does not exist`);
    this.volumes.set(vol.id, resize(copy(source), vol.sizeGiB * GiB));
  }

  async openVolume(vol: VolumeRef): Promise<VolumeHandle> {
    const id = vol.id;
    const image = (): Image => this.volume(id);
    const handle: VolumeHandle = {
      sizeBytes: image().sizeBytes,
      async read(offset, length) {
        const out = Buffer.alloc(length);
        for (let pos = offset; pos < offset + length;) {
          const index = Math.floor(pos / CHUNK);
          const within = pos - index * CHUNK;
          const n = Math.min(CHUNK - within, offset + length - pos);
          image().chunks.get(index)?.copy(out, pos - offset, within, within + n);
          pos += n;
        }
        return out;
      },
      async write(offset, data) {
        const img = image();
        for (let pos = offset; pos < offset + data.length;) {
          const index = Math.floor(pos / CHUNK);
          const within = pos - index * CHUNK;
          const n = Math.min(CHUNK - within, offset + data.length - pos);
          const chunk = Buffer.alloc(CHUNK);
          img.chunks.get(index)?.copy(chunk); // never change a (possibly shared) chunk in place
          data.copy(chunk, within, pos - offset, pos - offset + n);
          img.chunks.set(index, chunk);
          pos += n;
        }
      },
      async flush() { /* memory is as durable as it gets */ },
      async trim(offset, length) {
        await handle.writeZeroes!(offset, length, true);
      },
      async writeZeroes(offset, length, mayPunch) {
        const img = image();
        for (let pos = offset; pos < offset + length;) {
          const index = Math.floor(pos / CHUNK);
          const within = pos - index * CHUNK;
          const n = Math.min(CHUNK - within, offset + length - pos);
          const old = img.chunks.get(index);
          if (n === CHUNK && mayPunch) img.chunks.delete(index);
          else if (old) {
            const chunk = Buffer.from(old);
            chunk.fill(0, within, within + n);
            img.chunks.set(index, chunk);
          } else if (!mayPunch) img.chunks.set(index, Buffer.alloc(CHUNK));
          pos += n;
        }
      },
      async blockStatus(offset, length) {
        const img = image();
        const out: Extent[] = [];
        const end = Math.min(img.sizeBytes, offset + length);
        for (let pos = offset; pos < end;) {
          const index = Math.floor(pos / CHUNK);
          const n = Math.min((index + 1) * CHUNK, end) - pos;
          const hole = !img.chunks.has(index);
          const last = out[out.length - 1];
          if (last && last.hole === hole) last.length += n;
          else out.push({ length: n, hole, zero: hole });
          pos += n;
        }
        return out;
      },
      async close() { /* nothing held */ },
    };
    return handle;
  }

  /** @throws DriverError when `ref` names no unmanaged image. */
  async manageExistingGetSize(ref: ManageReference): Promise<number> {
    return Math.max(1, Math.ceil(this.unmanagedNamed(ref).sizeBytes / GiB));
  }

  async manageExisting(vol: Pick<VolumeRef, 'id'>, ref: ManageReference): Promise<void> {
    if (this.volumes.has(vol.id) && !this.unmanaged.has(ref['source-name'] ?? '')) return; // done already
    const image = this.unmanagedNamed(ref);
    this.unmanaged.delete(ref['source-name']!);
    this.volumes.set(vol.id, resize(image, Math.max(1, Math.ceil(image.sizeBytes / GiB)) * GiB));
  }

  async unmanage(vol: Pick<VolumeRef, 'id'>): Promise<void> {
    const image = this.volumes.get(vol.id);
    if (!image) return;
    this.unmanaged.set(`unmanaged-volume-${vol.id}`, image);
    this.volumes.delete(vol.id);
  }

  async manageExistingSnapshot(snap: Pick<SnapshotRef, 'id' | 'volumeId'>, ref: ManageReference): Promise<void> {
    if (this.snapshots.has(snap.id) && !this.unmanaged.has(ref['source-name'] ?? '')) return;
    const image = this.unmanagedNamed(ref);
    this.unmanaged.delete(ref['source-name']!);
    this.snapshots.set(snap.id, image);
  }

  async unmanageSnapshot(snap: Pick<SnapshotRef, 'id'>): Promise<void> {
    const image = this.snapshots.get(snap.id);
    if (!image) return;
    this.unmanaged.set(`unmanaged-snapshot-${snap.id}`, image);
    this.snapshots.delete(snap.id);
  }

  async listManageableVolumes(): Promise<ManageableResource[]> {
    return [
      ...[...this.volumes].map(([id, image]) => listed(id, image, id)),
      ...[...this.unmanaged].filter(([name]) => !name.startsWith('unmanaged-snapshot-')).map(([name, image]) => listed(name, image, null)),
    ];
  }

  async listManageableSnapshots(): Promise<ManageableResource[]> {
    return [
      ...[...this.snapshots].map(([id, image]) => listed(id, image, id)),
      ...[...this.unmanaged].filter(([name]) => name.startsWith('unmanaged-snapshot-')).map(([name, image]) => listed(name, image, null)),
    ].map((r) => ({ ...r, sourceReference: {} }));
  }

  /** @throws DriverError when `ref` names no unmanaged image. */
  private unmanagedNamed(ref: ManageReference): Image {
    const image = this.unmanaged.get(ref['source-name'] ?? '');
    if (!image) throw new DriverError(`No unmanaged image ${ref['source-name'] ?? '(no source-name)'}`);
    return image;
  }

  private volume(id: string): Image {
    const image = this.volumes.get(id);
    // Most often a volume recorded before this process started: the memory driver kept it in the process that stopped.
    if (!image) throw new DriverError(`Volume ${id} does not exist in this process's memory (the memory driver keeps volumes only while the process that made them runs)`);
    return image;
  }
}

/** A listing entry: Basalt's own (`basaltId`) are not safe to manage. */
function listed(name: string, image: Image, basaltId: string | null): ManageableResource {
  return {
    reference: { 'source-name': name }, sizeGiB: Math.max(1, Math.ceil(image.sizeBytes / GiB)), basaltId,
    safeToManage: basaltId === null, reasonNotSafe: basaltId === null ? null : 'Already managed', extraInfo: null,
  };
}

function copy(image: Image): Image {
  return { sizeBytes: image.sizeBytes, chunks: new Map(image.chunks) };
}

/** Sets the size, dropping chunks past a smaller end. */
function resize(image: Image, sizeBytes: number): Image {
  image.sizeBytes = sizeBytes;
  for (const index of image.chunks.keys()) if (index * CHUNK >= sizeBytes) image.chunks.delete(index);
  return image;
}
