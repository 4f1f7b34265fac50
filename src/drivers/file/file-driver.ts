/**
 * The reference driver: each volume is a sparse raw file `volume-<id>` in one
 * folder. One pool, named after the backend. Thin: a new volume uses no space
 * until written.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { DriverError } from '../../errors/index.ts';
import {
  DRIVER_CONTRACT_VERSION, GiB,
  type BackendStats, type DriverCapabilities, type VolumeDriver, type VolumeRef,
} from '../volume-driver.ts';

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
  readonly contractVersion = DRIVER_CONTRACT_VERSION;
  readonly capabilities: DriverCapabilities = {
    canRunInParallel: true, // every call touches only its own file
    supportsThinProvisioning: true,
    supportsOnlineExtend: false,
    storageProtocol: 'nbd',
    vendorName: 'Basalt',
    driverVersion: '1.0.0',
  };

  constructor(private readonly options: FileDriverOptions) {}

  /** Path of a volume's file. */
  volumePath(id: string): string {
    return path.join(this.options.directory, `volume-${id}`);
  }

  async init(): Promise<void> {
    await fs.mkdir(this.options.directory, { recursive: true });
  }

  async getStats(): Promise<BackendStats> {
    const st = await fs.statfs(this.options.directory);
    const fsTotal = (st.blocks * st.bsize) / GiB;
    const free = (st.bavail * st.bsize) / GiB;
    let provisioned = 0;
    for (const name of await fs.readdir(this.options.directory)) {
      if (!name.startsWith('volume-')) continue;
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

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
