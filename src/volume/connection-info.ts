/**
 * Where a volume is exported and what a host is told to connect to. Every
 * live member of a volume's cluster can serve its exports (they share the
 * backend); one is chosen per volume by rendezvous hashing, so the choice is
 * stable while that member lives and moves only when it dies.
 */
import { createHash } from 'node:crypto';
import type { AttachmentRow, ServiceRepository, ServiceRow, VolumeRow } from '../db/index.ts';
import type { Tx } from '../jobs/index.ts';
import {
  HOME_SITE, localEndpointOf, localPathOf, nativeConnectionAt, nativeConnectionFor, nativeConnectionOf, replicationTargetsOf, nbdEndpointOf, readReport, type LocalEndpoint, type NativeConnectionReport, type NbdEndpoint,
} from '../services/index.ts';

/**
 * Where a volume service exports (its report's NBD endpoint, and its local
 * one if any), and its driver's native connection template if it has one.
 */
export type Endpoint = NbdEndpoint & Partial<LocalEndpoint> & { native?: NativeConnectionReport };

/**
 * The connection info handed to a host (Cinder's `connection_info`): `nbd`,
 * `local`, or a driver's native type (`rbd`).
 */
export interface ConnectionInfo { driver_volume_type: string; data: Record<string, unknown> }

/**
 * A service's endpoint, if it reports one. On a backend that replicates
 * itself the native connection is the one of the site serving the volume:
 * the backend's target (its first: where such a backend mirrors to) for a
 * volume failed over while its backend is not (a member of a group failed
 * over alone), else the site the services row says the backend is failed
 * over to, else its own storage ({@link HOME_SITE}). The row says it as soon
 * as a failover or failback is done, the report's `native_connection` only
 * from the next heartbeat on; without a template per site (another backend,
 * or none asked yet) it is `native_connection`.
 */
export function endpointOf(s: Pick<ServiceRow, 'capabilities'> & Partial<Pick<ServiceRow, 'active_backend_id'>>, volume?: Partial<Pick<VolumeRow, 'replication_status'>>): Endpoint | undefined {
  const report = readReport(s);
  const nbd = nbdEndpointOf(report);
  const alone = volume?.replication_status === 'failed-over' && !s.active_backend_id;
  const site = alone ? replicationTargetsOf(report)[0] : s.active_backend_id ?? HOME_SITE;
  const native = nativeConnectionAt(report, site) ?? nativeConnectionOf(report);
  return nbd ? { ...nbd, ...localEndpointOf(report), ...(native ? { native } : {}) } : undefined;
}

/**
 * The endpoint that serves `volume` now: among the cluster's volume services
 * that are up and export, the one ranking first for the volume id.
 */
export async function chooseEndpoint(q: Tx, services: ServiceRepository, downMs: number, volume: Pick<VolumeRow, 'id' | 'cluster_name'> & Partial<Pick<VolumeRow, 'replication_status'>>): Promise<Endpoint | undefined> {
  let best: { rank: string; endpoint: Endpoint } | undefined;
  for (const s of await services.list(q)) {
    if (s.binary !== 'cinder-volume' || s.cluster !== volume.cluster_name || !services.isUp(s, downMs)) continue;
    const endpoint = endpointOf(s, volume);
    if (!endpoint) continue;
    const rank = createHash('sha256').update(`${s.host}\0${volume.id}`).digest('hex');
    if (!best || rank > best.rank) best = { rank, endpoint };
  }
  return best?.endpoint;
}

/** What {@link connectionInfo} reads of a host's connector (os-brick's connector properties). */
export interface HostConnector { host?: unknown; do_local_attach?: unknown }

/**
 * The connection info of attachment `a` through `endpoint`: the volume's
 * local path as a local device when the host is the volume's own host (a
 * driver with `supportsLocalPath`) and its connector does not say
 * `do_local_attach: false`; else the driver's native connection info
 * when it has one (`supportsNativeConnection`: Cinder's `rbd` for an rbd
 * backend, with `access_mode` and `encrypted` added as Cinder's volume
 * manager adds them); else the NBD export with its TLS-PSK credentials — over
 * the server's Unix socket (`socket`, an `nbd+unix://` URI) when the host is
 * the volume service's own, else TCP. `encrypted`
 * says, as in Cinder, that the host must open an encryption layer over the
 * device: it gets the key id from `GET /volumes/{id}/encryption` and the key
 * from the key manager. `qos_specs` are the type's front-end QoS specs (null
 * when there are none), as Cinder gives them.
 */
export function connectionInfo(
  a: AttachmentRow, v: Pick<VolumeRow, 'id' | 'encryption_key_id'>, endpoint: Endpoint, connector: HostConnector, qosSpecs: Record<string, string> | null = null,
): ConnectionInfo {
  const encrypted = v.encryption_key_id !== null;
  // As Cinder: the front-end QoS specs the host may apply itself (Basalt's export applies every consumer's).
  const qos_specs = qosSpecs;
  const connectorHost = connector.host;
  // os-brick's do_local_attach: false says the hypervisor opens the volume itself, so no device is made for it.
  if (endpoint.local_path_template && endpoint.local_host && connectorHost === endpoint.local_host && connector.do_local_attach !== false) {
    return {
      driver_volume_type: 'local',
      data: { device_path: localPathOf({ local_host: endpoint.local_host, local_path_template: endpoint.local_path_template }, v.id), access_mode: a.attach_mode, volume_id: v.id, attachment_id: a.id, encrypted, qos_specs },
    };
  }
  if (endpoint.native) {
    const native = nativeConnectionFor(endpoint.native, v.id);
    return { driver_volume_type: native.driver_volume_type, data: { ...native.data, access_mode: a.attach_mode, encrypted, qos_specs } };
  }
  // A host on the service's own machine gets its Unix socket: the same export, past TCP's ceiling.
  const socket = endpoint.nbd_socket && connectorHost === endpoint.nbd_socket_host ? endpoint.nbd_socket : undefined;
  return {
    driver_volume_type: 'nbd',
    data: {
      host: endpoint.nbd_host, port: endpoint.nbd_port, export_name: a.export_name,
      uri: socket ? `nbd+unix:///${a.export_name}?socket=${socket}` : `nbd://${endpoint.nbd_host}:${endpoint.nbd_port}/${a.export_name}`,
      ...(socket ? { socket } : {}),
      access_mode: a.attach_mode, volume_id: v.id, attachment_id: a.id, encrypted, qos_specs,
      // STARTTLS with these (TLS-PSK); required when the export listens off loopback.
      tls: { psk_identity: a.psk_identity, psk_key: a.psk_key, required: endpoint.nbd_require_tls === true },
    },
  };
}

/** Whether a connection info (JSON as stored) is `local`: a loop device on the volume's own host. */
export function isLocal(info: string | null): boolean {
  return info !== null && (JSON.parse(info) as ConnectionInfo).driver_volume_type === 'local';
}

/**
 * Whether an attachment with this connection info (JSON as stored) writes the
 * volume past the NBD export, where no changed block is recorded: a loop
 * device (`local`) or a backend's own protocol. False before a connector.
 */
export function writesPastExport(info: string | null): boolean {
  return info !== null && (JSON.parse(info) as ConnectionInfo).driver_volume_type !== 'nbd';
}

/**
 * Whether a native connection info (JSON as stored; `rbd`) names other than
 * where `endpoint` serves volume `volumeId` now (another cluster after a
 * failover or failback, other monitors): false for NBD and local ones, and
 * when the endpoint has no native connection.
 */
export function nativeStale(info: string | null, endpoint: Endpoint | undefined, volumeId: string): boolean {
  const i = info ? JSON.parse(info) as ConnectionInfo : undefined;
  if (!i || i.driver_volume_type === 'nbd' || i.driver_volume_type === 'local' || !endpoint?.native) return false;
  const now = nativeConnectionFor(endpoint.native, volumeId);
  return now.driver_volume_type !== i.driver_volume_type || Object.entries(now.data).some(([k, v]) => JSON.stringify(v) !== JSON.stringify(i.data[k]));
}

/** `host:port` of an NBD connection info (JSON as stored), or undefined for any other kind. */
export function nbdAddress(info: string | null): string | undefined {
  const i = info ? JSON.parse(info) as ConnectionInfo : undefined;
  return i?.driver_volume_type === 'nbd' ? `${String(i.data.host)}:${String(i.data.port)}` : undefined;
}

/**
 * The live volume services that export, by cluster and NBD address: the key
 * is {@link exporterKey}. Which member, if any, serves an attachment now.
 */
export async function liveExporters(q: Tx, services: ServiceRepository, downMs: number): Promise<Map<string, ServiceRow>> {
  const live = new Map<string, ServiceRow>();
  for (const s of await services.list(q)) {
    const e = s.binary === 'cinder-volume' && services.isUp(s, downMs) ? endpointOf(s) : undefined;
    if (e) live.set(exporterKey(s.cluster, `${e.nbd_host}:${e.nbd_port}`), s);
  }
  return live;
}

/** Key of {@link liveExporters}. */
export function exporterKey(cluster: string | null, address: string): string {
  return `${cluster}\0${address}`;
}
