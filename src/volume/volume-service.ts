/**
 * The volume service of one backend: a {@link RoleService} whose handlers call
 * that backend's driver and whose heartbeat reports its pools.
 */
import type { Logger } from 'pino';
import { replicationDevices, type BackendOptions } from '../config/index.ts';
import type { ServiceRepository } from '../db/index.ts';
import type { GuardedDriver, ManageableResource, NativeConnection } from '../drivers/index.ts';
import { RoleService, type JobQueue, type RoleServiceOptions } from '../jobs/index.ts';
import { volumeHandlers, type ExportServer } from './volume-handlers.ts';
import { groupHandlers, type GroupHandlerDeps } from './group-handlers.ts';
import { replicationHandlers, type ReplicationDeps } from './replication-jobs.ts';
import { groupReplicationHandlers } from './group-replication-jobs.ts';
import { LostStorage } from './lost-storage.ts';
import {
  HOME_SITE, MANAGEABLE_LIMIT, memberTarget, SERVICE_REPORT_VERSION, volumeTarget, type LocalEndpoint, type ManageableReport, type NativeConnectionReport, type ServiceReport,
} from '../services/index.ts';

/** Settings of a {@link VolumeService}. */
export interface VolumeServiceOptions extends GroupHandlerDeps {
  backend: BackendOptions;
  driver: GuardedDriver;
  queue: JobQueue;
  services: ServiceRepository;
  host: string;
  version: string;
  instanceId: string;
  concurrency: number;
  pollMs: number;
  heartbeatMs: number;
  log: Logger;
  /** The NBD endpoint to announce, when this process exports volumes. */
  nbdEndpoint?: { host: string; port: number; requireTls: boolean; socket?: string };
  /** How long user messages live (seconds). */
  messageTtlSeconds: number;
  /** What the replication jobs need (`replication-jobs.ts`); absent: this service runs none. */
  replication?: Omit<ReplicationDeps, keyof GroupHandlerDeps>;
}

/** How often the native connection as each replication target serves the volumes is asked again (ms). */
const NATIVE_TARGETS_MS = 30_000;

/** A driver's native connection as a service report carries it. */
function asNativeReport(n: NativeConnection | undefined): NativeConnectionReport | undefined {
  return n ? { driver_volume_type: n.driverVolumeType, data: { ...n.data } } : undefined;
}

/** Serves one backend. */
export class VolumeService {
  private readonly role: RoleService;
  /** `host@backend`, the service's host string. */
  readonly serviceHost: string;
  /** The cluster whose jobs this service takes. */
  readonly cluster: string;
  /** The last native connection the driver gave, published again when asking fails. */
  private lastNative: NativeConnectionReport | undefined;
  /** The same as each replication target serves the volumes (a backend that replicates itself). */
  private readonly lastNativeTargets: Record<string, NativeConnectionReport> = {};
  private nativeTargetsAt = 0;
  /** The background asking of {@link lastNativeTargets}, while it runs. */
  private askingSites: Promise<void> | undefined;
  /** The last listing of what the backend could adopt (undefined until the first), and the one running: see {@link manageable}. */
  private lastManageable: Pick<ServiceReport, 'manageable_volumes' | 'manageable_snapshots'> | undefined;
  private listing: Promise<void> | undefined;
  /** Volumes of this backend whose storage went missing: told by each listing. */
  private readonly lostStorage: LostStorage;
  /** Why the backend is down (its driver's init failed), undefined while it is up; and the init being tried again: see {@link initDriver}. */
  private downReason: string | undefined;
  private initializing: Promise<void> | undefined;

  constructor(private readonly o: VolumeServiceOptions) {
    this.serviceHost = `${o.host}@${o.backend.name}`;
    this.cluster = o.backend.cluster || this.serviceHost;
    this.lostStorage = new LostStorage(o, [...new Set([this.cluster, this.serviceHost])]);
    this.role = new RoleService({
      queue: o.queue, services: o.services, host: this.serviceHost, binary: 'cinder-volume',
      backend: o.backend.name, cluster: this.cluster, availabilityZone: o.backend.backend_availability_zone,
      version: o.version, instanceId: o.instanceId, coordinator: o.coordinator, target: volumeTarget(this.cluster), extraTargets: [memberTarget(this.serviceHost)],
      handlers: [...volumeHandlers(o, o.driver), ...groupHandlers(o, o.driver), ...(o.replication ? replicationHandlers({ ...o, ...o.replication }, o.driver, this.cluster) : []),
        ...(o.replication ? groupReplicationHandlers({ ...o, ...o.replication }, o.driver, this.cluster) : [])], concurrency: o.concurrency, pollMs: o.pollMs,
      heartbeatMs: o.heartbeatMs, log: o.log.child({ role: 'volume', backend: o.backend.name }),
      reportCapabilities: () => this.capabilities(),
      // Only where members on other hosts judge this one by its heartbeat: on
      // SQLite every process shares one file on one host, a heartbeat is refused
      // only when the state directory is full — when no peer can record a cleanup
      // or a fence's completion either — and dropping every host's disk then
      // would make a full disk worse.
      ...(o.exports && o.db.dialect === 'postgres' ? { staleHeartbeat: selfFencing(o.exports, this.serviceHost, o.queue.options.serviceDownMs ?? 60_000) } : {}),
    });
  }

  /**
   * Prepares the driver, then registers and starts taking jobs. A driver
   * that cannot be initialised (a Ceph cluster out of reach, refused
   * credentials) leaves the backend down, not the process: the service
   * registers and heartbeats with a report that says why and has no pools,
   * and tries again at each heartbeat until the driver comes up.
   */
  async start(): Promise<void> {
    await this.initDriver();
    if (this.downReason === undefined && this.o.driver.capabilities.volatile) await this.sayWhatIsLost();
    await this.role.start();
  }

  /** One try at the driver's init: sets or clears {@link downReason}, logging each change. */
  private async initDriver(): Promise<void> {
    const name = this.o.backend.name;
    try {
      await this.o.driver.init();
      if (this.downReason !== undefined) this.o.log.warn({ backend: name }, `backend ${name} is up again`);
      this.downReason = undefined;
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      if (reason !== this.downReason) this.o.log.error({ err, backend: name }, `backend ${name} is down: ${reason}`);
      this.downReason = reason;
    }
  }

  /**
   * A volatile driver (the memory driver) starts empty: volumes recorded on
   * its backend before this start have no data here — they look available,
   * and reading them fails. Said once, as a warning, rather than left for a
   * client to find.
   */
  private async sayWhatIsLost(): Promise<void> {
    const hosts = [...new Set([this.cluster, this.serviceHost])];
    const { n } = await this.o.db.kysely.selectFrom('volumes').select((eb) => eb.fn.countAll<number>().as('n'))
      .where((eb) => eb.or(hosts.map((h) => eb('host', 'like', `${h}#%`))))
      .where('status', 'not in', ['deleting', 'error_deleting', 'error']).executeTakeFirstOrThrow();
    if (Number(n) === 0) return;
    this.o.log.warn({ backend: this.o.backend.name, volumes: Number(n) },
      `backend ${this.o.backend.name} uses the memory driver, which keeps volumes only while its process runs: ${n} volume(s) recorded on it have no data in this process (unless another member of cluster ${this.cluster} holds them); delete them`);
  }

  async stop(): Promise<void> {
    await this.role.stop();
    await this.listing; // a background listing, asking or init ends before its driver closes
    await this.askingSites;
    await this.initializing;
    await this.o.driver.close();
  }

  /** This service's report (src/services), published at each heartbeat. */
  private async capabilities(): Promise<ServiceReport> {
    const { driver, backend } = this.o;
    if (this.downReason !== undefined) {
      // Tried in the background: a connect that waits for its timeout must not hold the heartbeat.
      this.initializing ??= this.initDriver().finally(() => { this.initializing = undefined; });
      if (this.downReason !== undefined) return this.downReport(this.downReason);
    }
    const stats = await driver.getStats();
    return {
      report_version: SERVICE_REPORT_VERSION,
      volume_backend_name: backend.volume_backend_name,
      ...localEndpoint(this.o.host, driver),
      ...this.nbdReport(),
      vendor_name: driver.capabilities.vendorName,
      driver_version: driver.capabilities.driverVersion,
      storage_protocol: driver.capabilities.storageProtocol,
      pools: stats.pools.map((p) => ({
        pool_name: p.name,
        total_capacity_gb: p.totalCapacityGiB,
        free_capacity_gb: p.freeCapacityGiB,
        provisioned_capacity_gb: p.provisionedCapacityGiB,
        reserved_percentage: backend.reserved_percentage,
        max_over_subscription_ratio: backend.max_over_subscription_ratio,
        thin_provisioning_support: driver.capabilities.supportsThinProvisioning,
        thick_provisioning_support: !driver.capabilities.supportsThinProvisioning,
        revert_to_snapshot_support: driver.capabilities.supportsRevertToSnapshot,
        multiattach: driver.capabilities.supportsMultiattach,
        online_extend_support: driver.capabilities.supportsOnlineExtend,
        copy_method: p.copyMethod ?? 'copy',
      })),
      ...(await this.manageable()),
      ...(await this.nativeConnection()),
      ...replicationReport(backend),
      ...(driver.capabilities.supportsBackendReplication ? { replication_in_driver: true } : {}),
    };
  }

  /** Where this process's NBD server exports, as the report says it. */
  private nbdReport(): Partial<ServiceReport> {
    const e = this.o.nbdEndpoint;
    return {
      ...(e ? { nbd_host: e.host, nbd_port: e.port, nbd_require_tls: e.requireTls } : {}),
      ...(e?.socket ? { nbd_socket: e.socket, nbd_socket_host: this.o.host } : {}),
    };
  }

  /** The report of a backend whose driver could not be initialised: why, no pools, and where this process exports. */
  private downReport(reason: string): ServiceReport {
    const { driver, backend } = this.o;
    return {
      report_version: SERVICE_REPORT_VERSION,
      volume_backend_name: backend.volume_backend_name,
      ...this.nbdReport(),
      vendor_name: driver.capabilities.vendorName,
      driver_version: driver.capabilities.driverVersion,
      storage_protocol: driver.capabilities.storageProtocol,
      pools: [],
      backend_state: 'down',
      backend_state_reason: reason,
    };
  }

  /**
   * The driver's native connection template, if any. When asking fails (a
   * monitor slow to answer) the last answer is published again: hosts keep
   * the protocol they were given instead of switching to NBD for a heartbeat.
   * A backend that replicates itself also publishes the template as each of
   * its sites serves the volumes (its targets and its own storage), asked in
   * the background every {@link NATIVE_TARGETS_MS} and site by site: a site
   * out of reach (the cluster a failover left) holds neither the heartbeat
   * nor the others' answers, and keeps its last one.
   */
  private async nativeConnection(): Promise<Pick<ServiceReport, 'native_connection' | 'native_connection_targets'>> {
    const { driver } = this.o;
    if (!driver.capabilities.supportsNativeConnection) return {};
    try {
      this.lastNative = asNativeReport(await driver.nativeConnectionTemplate());
    } catch (err) {
      this.o.log.warn({ err }, 'asking the driver for its native connection failed; publishing the last one');
    }
    const targets = driver.capabilities.supportsBackendReplication ? replicationReport(this.o.backend).replication_targets ?? [] : [];
    if (targets.length > 0 && !this.askingSites && Date.now() - this.nativeTargetsAt >= NATIVE_TARGETS_MS) {
      this.nativeTargetsAt = Date.now();
      this.askingSites = this.askSites([...targets, HOME_SITE]).finally(() => { this.askingSites = undefined; });
    }
    return {
      ...(this.lastNative ? { native_connection: this.lastNative } : {}),
      ...(Object.keys(this.lastNativeTargets).length > 0 ? { native_connection_targets: { ...this.lastNativeTargets } } : {}),
    };
  }

  /** Asks the driver for the native connection template as each of `sites` serves the volumes, into {@link lastNativeTargets}. */
  private async askSites(sites: string[]): Promise<void> {
    await Promise.all(sites.map(async (site) => {
      try {
        const n = asNativeReport(await this.o.driver.nativeConnectionTemplate(site));
        if (n) this.lastNativeTargets[site] = n;
        else delete this.lastNativeTargets[site];
      } catch (err) {
        this.o.log.warn({ err, site }, 'asking the driver for its native connection at a replication site failed; publishing the last one');
      }
    }));
  }

  /**
   * What the backend could adopt, for the 3.8 listings: the last listing that
   * finished, and a new one started in the background when none runs (the
   * first report waits for its own). Listing opens every image of an RBD
   * pool, seconds for a few hundred images: a heartbeat that waited for it
   * would be recorded late, its peers would count the member dead and it
   * would fence its own exports (seen in the RBD chaos run). Nothing when the
   * driver cannot manage; a failed listing keeps the last one (the heartbeat goes on).
   */
  private async manageable(): Promise<Pick<ServiceReport, 'manageable_volumes' | 'manageable_snapshots'>> {
    if (!this.o.driver.capabilities.supportsManageExisting) return {};
    const first = this.lastManageable === undefined;
    this.listing ??= this.listManageable().finally(() => { this.listing = undefined; });
    if (first) await this.listing;
    return this.lastManageable ?? {};
  }

  /** One listing of what the backend could adopt, kept as {@link lastManageable}. */
  private async listManageable(): Promise<void> {
    const { driver } = this.o;
    const since = this.o.clock.now();
    let volumes: ManageableResource[];
    try {
      let snapshots: ManageableResource[];
      [volumes, snapshots] = await Promise.all([driver.listManageableVolumes(), driver.listManageableSnapshots()]);
      const shown = (list: ManageableResource[]): ManageableReport[] => list.slice(0, MANAGEABLE_LIMIT).map((r) => ({
        reference: { ...r.reference }, size: r.sizeGiB, safe_to_manage: r.safeToManage, reason_not_safe: r.reasonNotSafe,
        cinder_id: r.basaltId, extra_info: r.extraInfo, ...(r.sourceReference ? { source_reference: { ...r.sourceReference } } : {}),
      }));
      this.lastManageable = { manageable_volumes: shown(volumes), manageable_snapshots: shown(snapshots) };
    } catch (err) {
      this.o.log.warn({ err }, 'listing manageable volumes failed');
      this.lastManageable ??= {};
      return;
    }
    // The listing names every volume of Basalt's the backend holds: those it lacks lost their storage.
    try {
      const lost = await this.lostStorage.listed(new Set(volumes.flatMap((v) => (v.basaltId ? [v.basaltId] : []))), since);
      if (lost.length) this.o.log.error({ backend: this.o.backend.name, volumes: lost }, 'volumes whose storage was removed outside Basalt: marked error (attached ones when detached)');
    } catch (err) {
      this.o.log.warn({ err }, 'checking for volumes whose storage is gone failed');
    }
  }
}

/**
 * Self-fencing: when this service's heartbeat has not been recorded for
 * three quarters of `service_down_time`, the process's export server drops
 * every connection and refuses new ones until a beat is recorded again. Its
 * peers count it dead (and stop waiting for it to fence a deleted
 * attachment's export, `export-fence.ts`) only after the whole
 * `service_down_time`: the last quarter is for writes in flight to drain and
 * for clocks that differ a little between hosts. Without it, a member cut off
 * from the database would go on writing for hosts whose attachments are gone.
 */
function selfFencing(exports: ExportServer, holder: string, serviceDownMs: number): NonNullable<RoleServiceOptions['staleHeartbeat']> {
  return {
    afterMs: Math.floor(serviceDownMs * 3 / 4),
    stale: () => exports.suspend(holder),
    fresh: () => exports.resume(holder),
  };
}

/** What the report says of replication: whether the backend has targets (what types match), and their names. */
function replicationReport(backend: BackendOptions): Pick<ServiceReport, 'replication_enabled' | 'replication_targets'> {
  const targets = replicationDevices(backend, 'any').map((d) => d.backendId); // its driver's keys were checked at load
  return { replication_enabled: targets.length > 0, replication_targets: targets };
}

/** The local endpoint of a driver with local paths (a loop device on this host may attach its volumes). */
function localEndpoint(host: string, driver: GuardedDriver): Partial<LocalEndpoint> {
  const template = driver.localPathTemplate();
  return template ? { local_host: host, local_path_template: template } : {};
}
