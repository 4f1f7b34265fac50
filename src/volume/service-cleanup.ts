/**
 * Cleanup of a dead service's work (Cinder's "cleanup of resources of failed
 * services", `POST /workers/cleanup`, 3.24). A service is dead when its
 * heartbeat is older than `service_down_time`. Its half-done work is:
 *
 * - jobs it had leased: their leases are expired at once, so a live member
 *   of its cluster (or another scheduler) claims them now rather than when the
 *   lease would run out; the handlers are idempotent, so half-done driver work
 *   is redone or finished, never doubled;
 * - exports it served: attachments whose connection info points at an NBD
 *   endpoint no live member serves get new connection info naming a live
 *   member of the cluster, so clients reconnect there (any member serves the
 *   cluster's exports). This also covers a member restarted on another port,
 *   and (the same sweep) native connection info naming a site a failover or
 *   failback left.
 *
 * Locks it held need nothing: the kernel dropped its file locks, PostgreSQL advisory locks
 * die with its sessions, etcd locks with its lease (or when its successor
 * starts: `RoleService`). The sweeper runs this for
 * every dead service; the API runs it on demand for a filtered set.
 */
import type { AttachmentRepository, Db, ServiceRepository, ServiceRow, VolumeRepository } from '../db/index.ts';
import { frontEndQos } from '../db/index.ts';
import type { JobQueue } from '../jobs/index.ts';
import { chooseEndpoint, connectionInfo, endpointOf, exporterKey, liveExporters, nativeStale, nbdAddress, type HostConnector } from './connection-info.ts';
import { memberTarget, volumeTarget } from './volume-jobs.ts';

/** Which services to clean (the body of `POST /workers/cleanup`); every field narrows. */
export interface CleanupFilter {
  serviceId?: string;
  host?: string;
  binary?: string;
  clusterName?: string;
  disabled?: boolean;
  /** Only this resource's jobs are taken over. */
  resourceId?: string;
  /** Only jobs on this kind of resource (`volume`, `snapshot`) are taken over. */
  resourceType?: string;
}

/** What cleanup needs. */
export interface CleanupDeps {
  db: Db;
  queue: JobQueue;
  services: ServiceRepository;
  volumes: VolumeRepository;
  attachments: AttachmentRepository;
  serviceDownMs: number;
}

/** The services cleaned, and the dead ones nobody can take over from (no live peer). */
export interface CleanupResult {
  cleaning: ServiceRow[];
  unavailable: ServiceRow[];
  /** Jobs handed over and attachments moved, for logs. */
  jobs: number;
  exports: number;
}

/**
 * Cleans the dead services that match `filter`; with `moveExports` (the
 * default) also points their clusters' stale attachments at live members.
 * Safe to run from several processes at once.
 */
export async function cleanupServices(deps: CleanupDeps, filter: CleanupFilter = {}, opts: { moveExports?: boolean } = {}): Promise<CleanupResult> {
  const { db, services, serviceDownMs } = deps;
  const all = await services.list(db.kysely);
  const result: CleanupResult = { cleaning: [], unavailable: [], jobs: 0, exports: 0 };
  const only = {
    ...(filter.resourceId !== undefined ? { resourceId: filter.resourceId } : {}),
    ...(filter.resourceType !== undefined ? { resourceType: filter.resourceType.toLowerCase() } : {}),
  };
  const clusters = new Set<string>();
  for (const s of all) {
    if (services.isUp(s, serviceDownMs) || !matches(services, s, filter)) continue;
    // Someone must be alive to take the work: another service of the same
    // binary (and, for volume services, of the same cluster).
    const peer = all.some((o) => o.id !== s.id && o.binary === s.binary && (s.binary !== 'cinder-volume' || o.cluster === s.cluster) && services.isUp(o, serviceDownMs));
    if (!peer) {
      result.unavailable.push(s);
      continue;
    }
    result.cleaning.push(s);
    if (s.binary === 'cinder-volume' && s.cluster) {
      // Work queued for the dead member alone (a snapshot where its exports were) goes to the cluster.
      result.jobs += await deps.queue.retarget(memberTarget(s.host), volumeTarget(s.cluster), only);
      clusters.add(s.cluster);
    }
    result.jobs += await deps.queue.releaseLeasesOf(s.instance_id, only);
  }
  if (opts.moveExports !== false) {
    for (const cluster of clusters) result.exports += await moveStaleExports(deps, cluster);
  }
  return result;
}

function matches(services: ServiceRepository, s: ServiceRow, f: CleanupFilter): boolean {
  return (f.serviceId === undefined || s.id === f.serviceId)
    && (f.host === undefined || services.onHost(s, f.host))
    && (f.binary === undefined || s.binary === f.binary)
    && (f.clusterName === undefined || s.cluster === f.clusterName)
    && (f.disabled === undefined || (s.disabled === 1) === f.disabled);
}

/**
 * Points the attachments whose connection info no longer says where their
 * volume is served at where it is, in every cluster or in one: NBD ones that
 * name an endpoint no live member of their cluster serves (a dead member, or
 * one restarted on another port) at a live member; native ones (`rbd`) that
 * name another site than the one serving the volume now (a failover or a
 * failback of a backend that replicates itself) at that site. Returns how
 * many moved.
 */
export async function moveStaleExports(deps: CleanupDeps, cluster?: string | null): Promise<number> {
  const { db, queue, volumes, attachments, services, serviceDownMs } = deps;
  const live = await liveExporters(db.kysely, services, serviceDownMs);
  // A native connection is the same through every member of a cluster: one live member tells it.
  const member = new Map<string | null, ServiceRow>();
  for (const s of live.values()) if (!member.has(s.cluster)) member.set(s.cluster, s);
  const stale = (v: { id: string; cluster_name: string | null; replication_status: string | null }, info: string | null): boolean => {
    const address = nbdAddress(info);
    if (address !== undefined) return !live.has(exporterKey(v.cluster_name, address));
    const s = member.get(v.cluster_name);
    return s !== undefined && nativeStale(info, endpointOf(s, v), v.id);
  };
  let q = db.kysely.selectFrom('attachments').innerJoin('volumes', 'volumes.id', 'attachments.volume_id')
    .select(['attachments.id as id', 'attachments.volume_id as volume_id', 'attachments.connection_info as connection_info', 'volumes.cluster_name as cluster_name', 'volumes.replication_status as replication_status'])
    .where('attachments.attach_status', 'in', ['attaching', 'attached']);
  if (cluster !== undefined) q = q.where('volumes.cluster_name', '=', cluster);
  let moved = 0;
  for (const c of await q.execute()) {
    if (!stale({ id: c.volume_id, cluster_name: c.cluster_name, replication_status: c.replication_status }, c.connection_info)) continue;
    await queue.transaction(async (tx) => {
      await db.lockRows(tx, 'volumes', [c.volume_id]);
      const a = await attachments.get(tx, c.id);
      const v = await volumes.get(tx, c.volume_id);
      if (!a || !v || !stale(v, a.connection_info)) return;
      const endpoint = await chooseEndpoint(tx, services, serviceDownMs, v);
      if (!endpoint) return;
      const connector = a.connector ? JSON.parse(a.connector) as HostConnector : {};
      await tx.updateTable('attachments').set({ connection_info: JSON.stringify(connectionInfo(a, v, endpoint, connector, await frontEndQos(tx, v.volume_type_id))) })
        .where('id', '=', a.id).execute();
      moved++;
    });
  }
  return moved;
}
