/**
 * Registration records: how a driver makes itself known to the core. A
 * record names the driver (the value of a backend's `volume_driver`), the
 * contract version it was written against, its own configuration options
 * (each documented, read from the backend's section and `[backend_defaults]`)
 * and the factory that makes one instance per backend. There is no central
 * switch: the loader looks the name up among the registered records
 * (`driver-registry.ts`), refuses an unknown contract major, resolves the
 * driver's options with the rest of the configuration and wraps what the
 * factory returns in the guard.
 */
import type { OptionSpec, ReplicationDevice, ResolvedOptions } from '../config/index.ts';
import { ConfigError } from '../errors/index.ts';
import { DRIVER_CONTRACT_VERSION, type VolumeDriver } from './volume-driver.ts';

/** A driver's own options: option name → declaration, as in `src/config/schema.ts`. */
export type DriverOptionGroup = Readonly<Record<string, OptionSpec>>;

/** What a driver's factory gets. */
export interface DriverContext<O extends DriverOptionGroup> {
  /** The backend's section name (in `enabled_backends`); a one-pool driver names its pool after it. */
  readonly backendName: string;
  /** The driver's own options, resolved for this backend. */
  readonly options: ResolvedOptions<O>;
  /** The backend's `replication_device` targets, for a driver that replicates itself (`replicationDeviceKeys`). Default none. */
  readonly replicationDevices?: readonly ReplicationDevice[];
  /**
   * A directory of this backend's own on this member (host), kept across the
   * process's restarts, where a driver keeps what its next incarnation must know
   * of this one (the rbd driver: its Ceph client's address, to fence it). Made
   * by the driver when it writes there. Default none: nothing is kept.
   */
  readonly stateDirectory?: string;
}

/** How a driver registers: see the module comment. */
export interface DriverRegistration<O extends DriverOptionGroup = DriverOptionGroup> {
  /** The `volume_driver` value that picks this driver; letters, digits and `_`. */
  readonly name: string;
  /** `major.minor` of the contract the driver implements (`DRIVER_CONTRACT_VERSION` when written). */
  readonly contractVersion: string;
  /** One sentence for `volume_driver`'s documentation. */
  readonly description: string;
  /**
   * The driver's own options. Their names are prefixed with the driver's
   * name by convention (`file_volume_dir`), except options every driver may
   * share with the same meaning.
   */
  readonly options: O;
  /**
   * The keys besides `backend_id` a `replication_device` entry of this
   * driver's backends may have (those of a driver that replicates itself,
   * `supportsBackendReplication`). Default none: any other key is refused
   * when the configuration is loaded.
   */
  readonly replicationDeviceKeys?: readonly string[];
  /**
   * Makes the driver of one backend. It must not touch the backend: that is
   * `init`'s work, which the guard runs (and retries) before the first call.
   * @throws ConfigError for option values the driver cannot use.
   */
  create(context: DriverContext<O>): VolumeDriver;
}

/** Declares one of a driver's options with its value type inferred. */
export function option<T>(spec: OptionSpec<T>): OptionSpec<T> {
  return spec;
}

/** Declares a registration with its option types inferred. */
export function defineDriver<O extends DriverOptionGroup>(registration: DriverRegistration<O>): DriverRegistration<O> {
  return registration;
}

/**
 * Refuses a registration whose contract major version is not
 * {@link DRIVER_CONTRACT_VERSION}'s: the meaning of the contract changed
 * between majors. Any minor of the same major runs: a minor only adds
 * optional members with safe defaults, so an older driver lacks nothing the
 * core needs, and what a newer one adds the core does not call.
 * @throws ConfigError naming the driver and both versions.
 */
export function checkContractVersion(registration: Pick<DriverRegistration, 'name' | 'contractVersion'>): void {
  const theirs = /^(\d+)\.(\d+)$/.exec(registration.contractVersion);
  const ours = DRIVER_CONTRACT_VERSION.split('.')[0];
  if (!theirs || theirs[1] !== ours) {
    throw new ConfigError(`Driver ${registration.name} implements driver contract ${registration.contractVersion}; this Basalt implements ${DRIVER_CONTRACT_VERSION} and runs drivers of contract ${ours}.x only`);
  }
}
