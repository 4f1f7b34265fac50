/** Volume drivers: the contract, the guard, and the drivers a backend can name. */
import type { BackendOptions } from '../config/index.ts';
import { ConfigError } from '../errors/index.ts';
import { GuardedDriver } from './driver-guard.ts';
import { FileDriver } from './file/file-driver.ts';
import { MemoryDriver } from './memory/memory-driver.ts';

export * from './volume-driver.ts';
export { GuardedDriver } from './driver-guard.ts';
export { FileDriver, type FileDriverOptions } from './file/file-driver.ts';
export { MemoryDriver, type MemoryDriverOptions } from './memory/memory-driver.ts';

/**
 * Builds the guarded driver a backend section names.
 * @throws ConfigError for an unknown `volume_driver`.
 */
export function createDriver(backend: BackendOptions): GuardedDriver {
  const timeoutMs = backend.driver_timeout_seconds * 1000;
  switch (backend.volume_driver) {
    case 'file':
      return new GuardedDriver(new FileDriver({ poolName: backend.name, directory: backend.file_volume_dir, totalCapacityGiB: backend.total_capacity_gb }), timeoutMs);
    case 'memory':
      return new GuardedDriver(new MemoryDriver({ poolName: backend.name, totalCapacityGiB: backend.total_capacity_gb }), timeoutMs);
    default:
      throw new ConfigError(`Unknown volume_driver ${backend.volume_driver} in [${backend.name}]`);
  }
}
