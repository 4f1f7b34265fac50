/**
 * The service report: what each volume service publishes through its
 * `services` row (the `capabilities` column, JSON) at every heartbeat — its
 * backend, pools with their capacities and capability flags, and where it
 * exports volumes. This module owns the type, its version and the reading of
 * it; nobody else parses that JSON.
 *
 * Versioning: `report_version` is {@link SERVICE_REPORT_VERSION}. A report
 * without it comes from a release before versions (it has the v1 fields, some
 * of them not yet); fields added since are optional and read with the
 * defaults below, so members of release N and N-1 read each other's reports.
 * A newer report is read for the fields this release knows.
 */
import type { ServiceRow, Tx } from '../db/index.ts';
import { VOLUME_ID_PLACEHOLDER } from '../drivers/index.ts';

/** The report version this release writes. */
export const SERVICE_REPORT_VERSION = 1;

/** One pool of a backend, in Cinder's capability names (what extra specs match). */
export interface PoolReport {
  pool_name: string;
  total_capacity_gb: number;
  free_capacity_gb: number;
  provisioned_capacity_gb: number;
  reserved_percentage: number;
  max_over_subscription_ratio: number;
  thin_provisioning_support: boolean;
  thick_provisioning_support: boolean;
  /** Whether volumes here may be attached to several hosts (matched by the `multiattach` extra spec). Default false. */
  multiattach: boolean;
  /** Whether in-use volumes here can be extended (3.42). Default false. */
  online_extend_support: boolean;
  /** Whether volumes here can be reverted to a snapshot (3.40). Default false. */
  revert_to_snapshot_support: boolean;
  /**
   * How snapshots and clones are made here: `reflink`, `copy` or `cow`.
   * Default `copy`: a pool that has not said counts as copying, the safe guess
   * (copying is what refuses in-use snapshots that cannot be quiesced).
   */
  copy_method: string;
}

/** Where a service's NBD server listens, for connection info. */
export interface NbdEndpoint {
  nbd_host: string;
  nbd_port: number;
  /** Whether clients must use TLS (the listener is not on loopback). Default false. */
  nbd_require_tls?: boolean;
  /** A Unix domain socket of the same server, for hosts named {@link nbd_socket_host} (absent: none). */
  nbd_socket?: string;
  /** The host whose connectors are given {@link nbd_socket}: the volume service's own. */
  nbd_socket_host?: string;
}

/**
 * Where volumes are local files or devices, for `local` connections on the
 * service's own host: published when its driver declares `supportsLocalPath`.
 * A report of a release before templates (it had `local_dir`) offers none:
 * its volumes attach over NBD, which always works.
 */
export interface LocalEndpoint {
  local_host: string;
  /** The driver's local path with `{volume_id}` standing for the volume's id. */
  local_path_template: string;
}

/**
 * How hosts open this backend's volumes through its own protocol (the
 * driver's `nativeConnection`): Cinder's `driver_volume_type` and `data`,
 * `{volume_id}` standing for the volume's id in every string. Published when
 * the driver has one; absent, attachments go through the NBD export.
 */
export interface NativeConnectionReport {
  driver_volume_type: string;
  data: Record<string, unknown>;
}

/**
 * One volume or snapshot the backend holds, as the 3.8 manageable listings
 * show it (Cinder's field names). Basalt's own carry `cinder_id` and are not
 * safe to manage.
 */
export interface ManageableReport {
  reference: Record<string, string>;
  size: number;
  safe_to_manage: boolean;
  reason_not_safe: string | null;
  cinder_id: string | null;
  extra_info: string | null;
  /** Snapshots: the reference of the volume it was taken from. */
  source_reference?: Record<string, string>;
}

/** What a volume service reports, as stored (JSON) in its row. */
export interface ServiceReport extends Partial<NbdEndpoint>, Partial<LocalEndpoint> {
  report_version: number;
  volume_backend_name: string;
  vendor_name: string;
  driver_version: string;
  storage_protocol: string;
  pools: PoolReport[];
  /**
   * What the backend could adopt, listed at the heartbeat (absent: the driver
   * cannot manage, or a member of an older release). At most
   * {@link MANAGEABLE_LIMIT} of each.
   */
  manageable_volumes?: ManageableReport[];
  manageable_snapshots?: ManageableReport[];
  /** Native connection info (absent: none, or a member of an older release; its volumes attach over NBD). */
  native_connection?: NativeConnectionReport;
  /**
   * The native connection template as each replication target (by
   * `backend_id`) serves the volumes, for a backend that replicates itself,
   * and as its own storage does ({@link HOME_SITE}): what the members of a
   * group failed over alone are opened with while the backend serves the
   * rest itself, and what every volume is opened with right after a failover
   * or a failback, before the next report's {@link native_connection} says
   * it. Absent: none (hosts then get {@link native_connection}).
   */
  native_connection_targets?: Record<string, NativeConnectionReport>;
  /**
   * Whether the backend has a replication target (`replication_device`):
   * what a type's `replication_enabled='<is> True'` matches. Absent: false (a
   * member of a release before replication).
   */
  replication_enabled?: boolean;
  /** The `backend_id`s of its replication targets, in the order configured (absent: none). */
  replication_targets?: string[];
  /**
   * Whether the backend's driver replicates to those targets itself
   * (`supportsBackendReplication`, RBD's rbd-mirror): a target is then no
   * Basalt backend, and the backend's own services fail it over. Absent: false.
   */
  replication_in_driver?: boolean;
  /**
   * `down` while the backend's driver cannot be initialised (its storage
   * cannot be reached, or refuses the credentials): the report then has no
   * pools, so nothing is placed on it, and {@link backend_state_reason} says
   * why, as the driver said it. Absent: up. Cinder's `backend_state`.
   */
  backend_state?: 'down';
  backend_state_reason?: string;
}

/** Why the backend of a report is down (its driver could not be initialised), or undefined when it is up. */
export function backendDownReason(report: ServiceReport | undefined): string | undefined {
  return report?.backend_state === 'down' ? String(report.backend_state_reason ?? 'unknown') : undefined;
}

/** Whether a report's backend replicates to its targets itself (`replication_in_driver`; false when absent). */
export function replicatesInDriver(report: ServiceReport | undefined): boolean {
  return report?.replication_in_driver === true;
}

/** The replication targets a report names (none when absent). */
export function replicationTargetsOf(report: ServiceReport | undefined): string[] {
  return Array.isArray(report?.replication_targets) ? report.replication_targets.filter((t) => typeof t === 'string') : [];
}

/** How many manageable volumes (and snapshots) a report carries at most: the report is rewritten at every heartbeat. */
export const MANAGEABLE_LIMIT = 1000;

/**
 * The key of a backend's own storage in {@link ServiceReport.native_connection_targets}:
 * Cinder's `backend_id` of a failback.
 */
export const HOME_SITE = 'default';

/**
 * The manageable volumes or snapshots a report lists, or undefined when the
 * service does not list them (its driver cannot manage).
 */
export function manageableOf(report: ServiceReport, kind: 'volumes' | 'snapshots'): ManageableReport[] | undefined {
  return kind === 'volumes' ? report.manageable_volumes : report.manageable_snapshots;
}

/** Defaults of the pool fields added after the first reports. */
const POOL_DEFAULTS: Pick<PoolReport, 'multiattach' | 'online_extend_support' | 'revert_to_snapshot_support' | 'copy_method'> = {
  multiattach: false, online_extend_support: false, revert_to_snapshot_support: false, copy_method: 'copy',
};

/** Cache of parsed reports by their text: a row's report changes only at its heartbeat. */
const parsed = new Map<string, ServiceReport | undefined>();
const CACHE_LIMIT = 256;

/**
 * The report of a service row, or undefined when it has none (not a volume
 * service, not reported yet) or its text is not a report.
 */
export function readReport(row: Pick<ServiceRow, 'capabilities'>): ServiceReport | undefined {
  const text = row.capabilities;
  if (!text) return undefined;
  if (parsed.has(text)) return parsed.get(text);
  const report = parse(text);
  if (parsed.size >= CACHE_LIMIT) parsed.delete(parsed.keys().next().value!);
  parsed.set(text, report);
  return report;
}

function parse(text: string): ServiceReport | undefined {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (!raw || typeof raw !== 'object' || !Array.isArray(raw.pools)) return undefined;
  return {
    ...(raw as unknown as ServiceReport),
    report_version: typeof raw.report_version === 'number' ? raw.report_version : 1,
    pools: (raw.pools as Array<Partial<PoolReport>>).map((p) => ({ ...POOL_DEFAULTS, ...p }) as PoolReport),
  };
}

/** The report of a live volume service, paired with its row. */
export interface ReportingService { service: ServiceRow; report: ServiceReport }

/** The rows among `rows` that have a report, with it. */
export function reporting(rows: readonly ServiceRow[]): ReportingService[] {
  return rows.flatMap((service) => {
    const report = service.binary === 'cinder-volume' ? readReport(service) : undefined;
    return report ? [{ service, report }] : [];
  });
}

/** A pool of a report by name. */
export function poolNamed(report: ServiceReport, poolName: string | undefined): PoolReport | undefined {
  return report.pools.find((p) => p.pool_name === poolName);
}

/** The NBD endpoint a report announces, if its service exports. */
export function nbdEndpointOf(report: ServiceReport | undefined): NbdEndpoint | undefined {
  if (!report?.nbd_host || !report.nbd_port) return undefined;
  const socket = report.nbd_socket && report.nbd_socket_host ? { nbd_socket: report.nbd_socket, nbd_socket_host: report.nbd_socket_host } : {};
  return { nbd_host: report.nbd_host, nbd_port: report.nbd_port, nbd_require_tls: report.nbd_require_tls === true, ...socket };
}

/** The local endpoint a report announces, if its volumes are local files. */
export function localEndpointOf(report: ServiceReport | undefined): LocalEndpoint | undefined {
  const template = report?.local_path_template;
  return report?.local_host && template?.includes(VOLUME_ID_PLACEHOLDER) ? { local_host: report.local_host, local_path_template: template } : undefined;
}

/** The native connection a report announces, if its driver has one. */
export function nativeConnectionOf(report: ServiceReport | undefined): NativeConnectionReport | undefined {
  const n = report?.native_connection;
  return n && typeof n.driver_volume_type === 'string' && n.data && typeof n.data === 'object' ? n : undefined;
}

/** The native connection template as replication target `backendId` serves the volumes (see `native_connection_targets`). */
export function nativeConnectionAt(report: ServiceReport | undefined, backendId: string | undefined): NativeConnectionReport | undefined {
  return backendId === undefined ? undefined : nativeConnectionOf({ native_connection: report?.native_connection_targets?.[backendId] } as ServiceReport);
}

/** The native connection info of volume `volumeId`: the template with its id substituted in every string. */
export function nativeConnectionFor(template: NativeConnectionReport, volumeId: string): NativeConnectionReport {
  // Every string of the template, nested ones included; a volume id is JSON-safe (a UUID).
  return JSON.parse(JSON.stringify(template).replaceAll(VOLUME_ID_PLACEHOLDER, volumeId)) as NativeConnectionReport;
}

/** The local path of volume `volumeId` under a local endpoint. */
export function localPathOf(endpoint: LocalEndpoint, volumeId: string): string {
  return endpoint.local_path_template.replaceAll(VOLUME_ID_PLACEHOLDER, volumeId);
}

/**
 * The pool a volume's host string (`host@backend#pool`) names, as its service
 * last reported it, with the service row; undefined before a report.
 */
export async function reportedPool(q: Tx, hostString: string): Promise<{ service: ServiceRow; report: ServiceReport; pool: PoolReport } | undefined> {
  const [serviceHost, poolName] = hostString.split('#');
  const service = await q.selectFrom('services').selectAll().where('binary', '=', 'cinder-volume').where('host', '=', serviceHost!).executeTakeFirst();
  const report = service ? readReport(service) : undefined;
  const pool = report ? poolNamed(report, poolName) : undefined;
  return service && report && pool ? { service, report, pool } : undefined;
}

/** A pool capability flag that can be asked of a cluster. */
export type PoolFlag = 'online_extend_support' | 'revert_to_snapshot_support' | 'multiattach';

/** Whether any reported pool of `cluster`'s volume services has `flag`. */
export function clusterCan(rows: readonly ServiceRow[], cluster: string, flag: PoolFlag): boolean {
  return reporting(rows).some(({ service, report }) => service.cluster === cluster && report.pools.some((p) => p[flag]));
}

/** Job kind → the highest payload version a service row's code reads. */
export function payloadVersionsOf(row: Pick<ServiceRow, 'payload_versions'>): Record<string, number> {
  try {
    const v = JSON.parse(row.payload_versions) as unknown;
    return v && typeof v === 'object' ? v as Record<string, number> : {};
  } catch {
    return {};
  }
}
