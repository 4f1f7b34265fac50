/**
 * The registered drivers and the loader that builds a backend's driver from
 * its configuration. Adding a driver means adding its registration to
 * {@link REGISTERED_DRIVERS}; nothing else in the core names a driver.
 */
import { replicationDevices, type BackendOptions } from '../config/index.ts';
import { ConfigError } from '../errors/index.ts';
import { GuardedDriver } from './driver-guard.ts';
import { checkContractVersion, type DriverRegistration } from './driver-registration.ts';
import { fileRegistration } from './file/file-registration.ts';
import { memoryRegistration } from './memory/memory-registration.ts';
import { rbdRegistration } from './rbd/rbd-registration.ts';

/** Every driver a backend's `volume_driver` may name. */
export const REGISTERED_DRIVERS: readonly DriverRegistration[] = [fileRegistration, memoryRegistration, rbdRegistration];

/** The registration named `name`, if any. */
export function findDriver(name: string, registrations: readonly DriverRegistration[] = REGISTERED_DRIVERS): DriverRegistration | undefined {
  return registrations.find((r) => r.name === name);
}

/**
 * Builds the guarded driver of one backend: finds its registration, refuses
 * an unknown contract major, makes the driver with its resolved options and
 * wraps it in the guard with the backend's `driver_timeout_seconds`.
 * `o.stateDirectory`: the backend's directory on this member (see `DriverContext`). The
 * driver is not initialised yet: the guard runs `init` before its first call.
 * @throws ConfigError for an unknown `volume_driver` or contract major version.
 */
export function openDriver(backend: BackendOptions, o: { stateDirectory?: string; registrations?: readonly DriverRegistration[] } = {}): GuardedDriver {
  const registrations = o.registrations ?? REGISTERED_DRIVERS;
  const registration = findDriver(backend.volume_driver, registrations);
  if (!registration) throw new ConfigError(`Unknown volume_driver ${backend.volume_driver} in [${backend.name}]`);
  checkContractVersion(registration);
  const driver = registration.create({
    backendName: backend.name, options: backend.driverOptions as never, replicationDevices: replicationDevices(backend, registration.replicationDeviceKeys ?? []),
    ...(o.stateDirectory ? { stateDirectory: o.stateDirectory } : {}),
  });
  return new GuardedDriver(driver, backend.driver_timeout_seconds * 1000);
}
