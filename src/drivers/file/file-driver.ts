/**
 * The reference driver: each volume is a sparse raw file `volume-<id>` in one
 * folder, each snapshot a file `snapshot-<id>` beside it. One pool, named
 * after the backend. Thin: a new volume uses no space until written.
 * Snapshots and clones are reflinks where the filesystem shares extents
 * (probed at init) and sparse-aware copies elsewhere; stats say which.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { SharedFlush } from '../../common/index.ts';
import { DriverError } from '../../errors/index.ts';
import {
  GiB,
  type BackendStats, type ChangedExtent, type DeclaredCapabilities, type ManageableResource, type ManageReference, type SnapshotRef, type VolumeDriver, type VolumeHandle, type VolumeRef,
} from '../volume-driver.ts';
import { dataExtentsOf, differingRanges, fadvise, fallocate, mappedExtents, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, POSIX_FADV_DONTNEED, readNowait, writeNowait } from './native-io.ts';
import { copyVolumeFile, tryReflink } from './sparse-copy.ts';

/** Settings of a {@link FileDriver}. */
export interface FileDriverOptions {
  /** Pool name (the backend's name). */
  poolName: string;
  /** Folder holding the volume files; created by `init`. */
  directory: string;
  /** Capacity to report in GiB; 0 means the filesystem's size. */
  totalCapacityGiB: number;
}

/** Sparse raw files in a folder. */
export class FileDriver implements VolumeDriver {
  readonly capabilities: DeclaredCapabilities = {
    canRunInParallel: true, // every call touches only its own files
    // pread/pwrite/fallocate at explicit offsets on one fd may run at once; the kernel orders overlaps.
    canRunIoInParallel: true,
    // Every handle opens the same file: writes land in the one page cache, and
    // fdatasync through any fd flushes the file's dirty pages, whoever wrote them.
    canMultiConn: true,
    supportsThinProvisioning: true,
    // Growing a file that connections have open is safe; they see the new size when they reconnect.
    supportsOnlineExtend: true,
    supportsMultiattach: true,
    supportsRevertToSnapshot: true,
    supportsLocalPath: true,
    // A file put in the folder by hand is adopted by renaming it; an unmanaged one is renamed back out of the way.
    supportsManageExisting: true,
    // Extents a volume still shares with a snapshot (a reflink) are unchanged since it; on a
    // pool that copies, nothing is shared and every data extent counts as changed.
    supportsChangedExtents: true,
    // A snapshot is a sparse file: its data extents (SEEK_DATA/SEEK_HOLE).
    supportsAllocatedExtents: true,
    storageProtocol: 'nbd',
    vendorName: 'Basalt',
    driverVersion: '1.0.0',
  };

  /** Whether the folder's filesystem can reflink; probed by `init`. */
  private reflink = false;

  constructor(private readonly options: FileDriverOptions) {}

  /** Path of a volume's file. */
  volumePath(id: string): string {
    return path.join(this.options.directory, `volume-${id}`);
  }

  /** The volume's file: a loop device on this host may attach it directly. */
  localPath(vol: Pick<VolumeRef, 'id'>): string {
    return path.resolve(this.volumePath(vol.id));
  }

  /** Path of a snapshot's file. */
  snapshotPath(id: string): string {
    return path.join(this.options.directory, `snapshot-${id}`);
  }

  async init(): Promise<void> {
    await fs.mkdir(this.options.directory, { recursive: true });
    // Its own probe name: members of a cluster share the folder and may start together.
    const probe = path.join(this.options.directory, `.reflink-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
    await fs.writeFile(probe, 'probe');
    try {
      this.reflink = await tryReflink(probe, `${probe}.clone`);
    } finally {
      await fs.rm(probe, { force: true });
      await fs.rm(`${probe}.clone`, { force: true });
    }
  }

  async getStats(): Promise<BackendStats> {
    const st = await fs.statfs(this.options.directory);
    const fsTotal = (st.blocks * st.bsize) / GiB;
    const free = (st.bavail * st.bsize) / GiB;
    let provisioned = 0;
    for (const name of await fs.readdir(this.options.directory)) {
      if (!name.startsWith('volume-') || name.endsWith('.partial')) continue;
      const s = await fs.stat(path.join(this.options.directory, name)).catch(() => undefined);
      if (s) provisioned += s.size / GiB;
    }
    const total = this.options.totalCapacityGiB > 0 ? this.options.totalCapacityGiB : fsTotal;
    return {
      pools: [{
        name: this.options.poolName,
        totalCapacityGiB: round(total),
        freeCapacityGiB: round(Math.min(free, total)),
        provisionedCapacityGiB: round(provisioned),
        copyMethod: this.reflink ? 'reflink' : 'copy',
      }],
    };
  }

  async createVolume(vol: VolumeRef): Promise<void> {
    const file = this.volumePath(vol.id);
    const handle = await fs.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o600);
    try {
      // Exactly the requested size: completes a file left short by an earlier attempt.
      await handle.truncate(vol.sizeGiB * GiB);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await this.syncDirectory();
  }

  async deleteVolume(vol: Pick<VolumeRef, 'id'>): Promise<void> {
    await fs.rm(`${this.volumePath(vol.id)}.partial`, { force: true });
    try {
      await fs.unlink(this.volumePath(vol.id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // already gone: success
      throw err;
    }
    await this.syncDirectory();
  }

  async extendVolume(vol: VolumeRef, newSizeGiB: number): Promise<void> {
    const file = this.volumePath(vol.id);
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(file, fs.constants.O_WRONLY);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new DriverError(`Volume file of ${vol.id} is missing`, { cause: err });
      }
      throw err;
    }
    try {
      const { size } = await handle.stat();
      if (size >= newSizeGiB * GiB) return; // an earlier attempt already grew it
      await handle.truncate(newSizeGiB * GiB);
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  async createSnapshot(snap: SnapshotRef): Promise<void> {
    const target = this.snapshotPath(snap.id);
    if (await exists(target)) return; // complete: copies land under their final name only when done
    await this.copy(this.volumePath(snap.volumeId), target, snap.sizeGiB * GiB, `volume ${snap.volumeId}`);
  }

  async deleteSnapshot(snap: Pick<SnapshotRef, 'id'>): Promise<void> {
    await fs.rm(`${this.snapshotPath(snap.id)}.partial`, { force: true });
    try {
      await fs.unlink(this.snapshotPath(snap.id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    await this.syncDirectory();
  }

  async createVolumeFromSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void> {
    const target = this.volumePath(vol.id);
    if (await exists(target)) return this.createVolume(vol); // done before a crash: make sure of the size
    await this.copy(this.snapshotPath(snap.id), target, vol.sizeGiB * GiB, `snapshot ${snap.id}`);
  }

  async cloneVolume(vol: VolumeRef, source: VolumeRef): Promise<void> {
    const target = this.volumePath(vol.id);
    if (await exists(target)) return this.createVolume(vol);
    await this.copy(this.volumePath(source.id), target, vol.sizeGiB * GiB, `volume ${source.id}`);
  }

  async revertToSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void> {
    // Copy to a temporary name, then rename over the volume: a crash leaves
    // either the old or the reverted volume, never a mix.
    await this.copy(this.snapshotPath(snap.id), this.volumePath(vol.id), vol.sizeGiB * GiB, `snapshot ${snap.id}`);
  }

  /**
   * The extents that may differ between snapshot `from` and snapshot `to` (or
   * the volume): by their extent maps, everything but the holes of both and
   * the blocks both still share (reflinks). Both files are flushed first, so
   * no dirty page sits over a block still shared. A filesystem without FIEMAP
   * answers everything.
   */
  async changedExtents(vol: VolumeRef, from: SnapshotRef, to?: SnapshotRef): Promise<ChangedExtent[]> {
    const files = [this.snapshotPath(from.id), to ? this.snapshotPath(to.id) : this.volumePath(vol.id)];
    const handles: fs.FileHandle[] = [];
    try {
      for (const f of files) handles.push(await fs.open(f, 'r'));
      for (const h of handles) await h.datasync();
      const end = Math.max(...await Promise.all(handles.map(async (h) => (await h.stat()).size)));
      const [a, b] = handles.map((h) => mappedExtents(h.fd, 0, end));
      if (!a || !b) return end > 0 ? [{ offset: 0, length: end }] : [];
      return differingRanges(a, b, end);
    } catch (err) {
      throw new DriverError(`Cannot compare the extents of ${files.join(' and ')}`, { cause: err });
    } finally {
      for (const h of handles) await h.close();
    }
  }

  /** The data extents of the snapshot's file (SEEK_DATA/SEEK_HOLE): what reads as other than zeros lies inside them. */
  async allocatedExtents(snap: SnapshotRef): Promise<ChangedExtent[]> {
    const file = this.snapshotPath(snap.id);
    let handle: fs.FileHandle | undefined;
    try {
      handle = await fs.open(file, 'r');
      const { size } = await handle.stat();
      const out: ChangedExtent[] = [];
      let offset = 0;
      for (const e of dataExtentsOf(handle.fd, size, 0, size)) {
        if (!e.hole) out.push({ offset, length: e.length });
        offset += e.length;
      }
      return out;
    } catch (err) {
      throw new DriverError(`Cannot read the data extents of ${file}`, { cause: err });
    } finally {
      await handle?.close();
    }
  }

  async openVolume(vol: VolumeRef): Promise<VolumeHandle> {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(this.volumePath(vol.id), 'r+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new DriverError(`Volume file of ${vol.id} is missing`, { cause: err });
      throw err;
    }
    const { size } = await handle.stat();
    let closed = false;
    return {
      sizeBytes: size,
      fd: handle.fd,
      async read(offset, length) {
        const buf = Buffer.allocUnsafe(length);
        // Fast path: straight from the page cache, no thread-pool hop.
        let done = Math.max(0, readNowait(handle.fd, buf, offset));
        if (done === length) return buf;
        while (done < length) {
          const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
          if (bytesRead === 0) {
            buf.fill(0, done); // past the end reads as zeros
            break;
          }
          done += bytesRead;
        }
        return buf;
      },
      async write(offset, data) {
        let done = Math.max(0, writeNowait(handle.fd, data, offset));
        while (done < data.length) done += (await handle.write(data, done, data.length - done, offset + done)).bytesWritten;
      },
      flush: () => handle.datasync(),
      async trim(offset, length) {
        // Discard is advisory: a filesystem without hole punching keeps the data.
        fallocate(handle.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
      },
      async writeZeroes(offset, length, mayPunch) {
        const mode = mayPunch ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
        if (fallocate(handle.fd, mode, offset, length) === 0) return;
        const zero = Buffer.alloc(Math.min(length, 1024 * 1024));
        for (let done = 0; done < length;) {
          const n = Math.min(zero.length, length - done);
          done += (await handle.write(zero, 0, n, offset + done)).bytesWritten;
        }
      },
      async evict(offset, length) {
        // The page cache's copy only: the data stays in the file. Pages under writeback stay, which is harmless.
        fadvise(handle.fd, offset, length, POSIX_FADV_DONTNEED);
      },
      async blockStatus(offset, length) {
        return dataExtentsOf(handle.fd, size, offset, length).map((e) => ({ length: e.length, hole: e.hole, zero: e.hole }));
      },
      async close() {
        if (closed) return;
        closed = true;
        await handle.close();
      },
    };
  }

  /**
   * The size of the file `ref["source-name"]` names in the folder, rounded up to GiB.
   * @throws DriverError when the reference names no file the driver may adopt.
   */
  async manageExistingGetSize(ref: ManageReference): Promise<number> {
    const st = await fs.stat(this.adoptable(ref)).catch((err: NodeJS.ErrnoException) => {
      throw new DriverError(`No file ${ref['source-name']} to manage`, { cause: err });
    });
    if (!st.isFile()) throw new DriverError(`${ref['source-name']} is not a regular file`);
    return Math.max(1, Math.ceil(st.size / GiB));
  }

  /** Renames the file to the volume's name, then grows it to whole GiB. */
  async manageExisting(vol: Pick<VolumeRef, 'id'>, ref: ManageReference): Promise<void> {
    await this.adopt(this.adoptable(ref), this.volumePath(vol.id), ref);
  }

  /** Renames the volume's file to `unmanaged-volume-<id>`, which a manage request can name. */
  async unmanage(vol: Pick<VolumeRef, 'id'>): Promise<void> {
    await this.release(this.volumePath(vol.id), path.join(this.options.directory, `${UNMANAGED}volume-${vol.id}`));
  }

  /** Renames the file to the snapshot's name. */
  async manageExistingSnapshot(snap: Pick<SnapshotRef, 'id' | 'volumeId'>, ref: ManageReference): Promise<void> {
    await this.adopt(this.adoptable(ref), this.snapshotPath(snap.id), ref);
  }

  /** Renames the snapshot's file to `unmanaged-snapshot-<id>`. */
  async unmanageSnapshot(snap: Pick<SnapshotRef, 'id'>): Promise<void> {
    await this.release(this.snapshotPath(snap.id), path.join(this.options.directory, `${UNMANAGED}snapshot-${snap.id}`));
  }

  /** Every file of the folder that is not a snapshot's: Basalt's volumes (not safe) and the others (safe). */
  async listManageableVolumes(): Promise<ManageableResource[]> {
    return (await this.manageable()).filter((r) => !r.snapshot).map(({ snapshot: _snapshot, ...r }) => r);
  }

  /** Every snapshot file of the folder: Basalt's (not safe) and unmanaged ones (safe). */
  async listManageableSnapshots(): Promise<ManageableResource[]> {
    // Which volume an unmanaged snapshot came from is not kept in its file.
    return (await this.manageable()).filter((r) => r.snapshot).map(({ snapshot: _snapshot, ...r }) => ({ ...r, sourceReference: {} }));
  }

  /** The files of the folder as manageable resources, with whether each is a snapshot's. */
  private async manageable(): Promise<(ManageableResource & { snapshot: boolean })[]> {
    const out: (ManageableResource & { snapshot: boolean })[] = [];
    for (const entry of await fs.readdir(this.options.directory, { withFileTypes: true })) {
      const name = entry.name;
      if (!entry.isFile() || name.startsWith('.') || name.endsWith('.partial')) continue;
      const st = await fs.stat(path.join(this.options.directory, name)).catch(() => undefined);
      if (!st) continue; // removed meanwhile
      const owned = OWNED.exec(name);
      out.push({
        reference: { 'source-name': name }, sizeGiB: Math.max(1, Math.ceil(st.size / GiB)),
        basaltId: owned ? owned[2]! : null, safeToManage: !owned, reasonNotSafe: owned ? 'Already managed' : null, extraInfo: null,
        snapshot: owned ? owned[1] === 'snapshot' : name.startsWith(`${UNMANAGED}snapshot-`),
      });
    }
    return out;
  }

  /**
   * The path of the file a manage reference names.
   * @throws DriverError when it names no plain file name of the folder, or one of Basalt's own.
   */
  private adoptable(ref: ManageReference): string {
    const name = ref['source-name'];
    if (typeof name !== 'string' || name === '') throw new DriverError('The file driver manages by source-name only');
    if (name.includes('/') || name.startsWith('.') || name.endsWith('.partial')) throw new DriverError(`${name} is not a file name of the volume folder`);
    if (OWNED.test(name)) throw new DriverError(`${name} is already managed`);
    return path.join(this.options.directory, name);
  }

  /** Renames `from` to `to` (done already when only `to` exists), grows it to whole GiB and makes it durable. */
  private async adopt(from: string, to: string, ref: ManageReference): Promise<void> {
    try {
      await fs.rename(from, to);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !(await exists(to))) {
        throw new DriverError(`No file ${ref['source-name']} to manage`, { cause: err });
      }
    }
    const handle = await fs.open(to, fs.constants.O_WRONLY);
    try {
      const { size } = await handle.stat();
      const whole = Math.max(1, Math.ceil(size / GiB)) * GiB;
      if (size < whole) await handle.truncate(whole); // grown, never cut: the volume is whole GiB
      await handle.sync();
    } finally {
      await handle.close();
    }
    await this.syncDirectory();
  }

  /** Renames `from` to `to`; nothing to do when `from` is gone (done already, or never there). */
  private async release(from: string, to: string): Promise<void> {
    try {
      await fs.rename(from, to);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    await this.syncDirectory();
  }

  private async copy(src: string, dst: string, sizeBytes: number, what: string): Promise<void> {
    try {
      await copyVolumeFile(src, dst, sizeBytes, this.reflink);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new DriverError(`The file of ${what} is missing`, { cause: err });
      throw err;
    }
    await this.syncDirectory();
  }

  /** Makes a create or unlink durable: fsync of the folder. */
  /**
   * Makes the folder's entries durable (a new, renamed or removed file). One
   * fsync of the folder covers every change made before it started, so
   * concurrent creates and deletes share them.
   */
  private syncDirectory(): Promise<void> {
    return this.directoryFlush.flush();
  }

  private readonly directoryFlush = new SharedFlush(async () => {
    const dir = await fs.open(this.options.directory, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  });
}

/** The prefix of an unmanaged volume's or snapshot's file: `unmanaged-volume-<id>`, `unmanaged-snapshot-<id>`. */
const UNMANAGED = 'unmanaged-';

/** The names of Basalt's own files: `volume-<uuid>`, `snapshot-<uuid>`. */
const OWNED = /^(volume|snapshot)-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(() => true, () => false);
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
