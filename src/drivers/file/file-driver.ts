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
import { DriverError } from '../../errors/index.ts';
import {
  GiB,
  type BackendStats, type DeclaredCapabilities, type SnapshotRef, type VolumeDriver, type VolumeHandle, type VolumeRef,
} from '../volume-driver.ts';
import { dataExtentsOf, fallocate, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, readNowait, writeNowait } from './native-io.ts';
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
  private async syncDirectory(): Promise<void> {
    const dir = await fs.open(this.options.directory, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(() => true, () => false);
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
