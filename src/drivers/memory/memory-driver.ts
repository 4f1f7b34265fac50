/**
 * The test double of a backend: volumes live in this process's memory and are
 * lost when it exits. It stands for the storage edge only; the core treats it
 * exactly like any other driver.
 */
import { DriverError } from '../../errors/index.ts';
import {
  DRIVER_CONTRACT_VERSION,
  type BackendStats, type DriverCapabilities, type VolumeDriver, type VolumeRef,
} from '../volume-driver.ts';

/** Settings of a {@link MemoryDriver}. */
export interface MemoryDriverOptions {
  poolName: string;
  /** Capacity to report in GiB. Default 1024. */
  totalCapacityGiB?: number;
}

/** Volumes as sizes in a map. */
export class MemoryDriver implements VolumeDriver {
  readonly contractVersion = DRIVER_CONTRACT_VERSION;
  readonly capabilities: DriverCapabilities = {
    canRunInParallel: true,
    supportsThinProvisioning: true,
    supportsOnlineExtend: true,
    storageProtocol: 'nbd',
    vendorName: 'Basalt',
    driverVersion: '1.0.0',
  };
  /** Volume id → size in GiB. Exposed for tests that check for leaks. */
  readonly volumes = new Map<string, number>();

  constructor(private readonly options: MemoryDriverOptions) {}

  async getStats(): Promise<BackendStats> {
    const total = this.options.totalCapacityGiB || 1024;
    const provisioned = [...this.volumes.values()].reduce((a, b) => a + b, 0);
    return { pools: [{ name: this.options.poolName, totalCapacityGiB: total, freeCapacityGiB: total, provisionedCapacityGiB: provisioned }] };
  }

  async createVolume(vol: VolumeRef): Promise<void> {
    this.volumes.set(vol.id, vol.sizeGiB);
  }

  async deleteVolume(vol: Pick<VolumeRef, 'id'>): Promise<void> {
    this.volumes.delete(vol.id);
  }

  async extendVolume(vol: VolumeRef, newSizeGiB: number): Promise<void> {
    const size = this.volumes.get(vol.id);
    if (size === undefined) throw new DriverError(`Volume ${vol.id} does not exist`);
    this.volumes.set(vol.id, Math.max(size, newSizeGiB));
  }
}
