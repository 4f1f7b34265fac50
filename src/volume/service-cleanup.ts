/**
 * Cleanup of a dead service's work (Cinder's "cleanup of resources of failed
 * services", `POST /workers/cleanup`, 3.24). A service is dead when its
 * heartbeat is older than `service_down_time`. Its half-done work is:
 *
 * - jobs it had leased: their leases are expired at once, so a live member
 *   of its cluster (or another scheduler) claims them now rather than when the
 *   lease would run out; the handlers are idempotent, so half-done driver work
 *   is redone or finished, never doubled;
 * - exports it served: attachments whose connection info points at its NBD
 *   endpoint get new connection info naming a live member of the cluster, so
 *   clients reconnect there (any member serves the cluster's exports).
 *
 * Locks it held need nothing: file locks go stale, PostgreSQL advisory locks
 * die with its sessions, etcd locks with its lease. The sweeper runs this for
 * every dead service; the API runs it on demand for a filtered set.
 */
import type { AttachmentRepository, Db, ServiceRepository, ServiceRow, VolumeRepository } from '../db/index.ts';
import type { JobQueue } from '../jobs/index.ts';
import { chooseEndpoint, connectionInfo, endpointOf, type ConnectionInfo } from './connection-info.ts';

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

/** Cleans the dead services that match `filter`. Safe to run from several processes at once. */
export async function cleanupServices(deps: CleanupDeps, filter: CleanupFilter = {}): Promise<CleanupResult> {
  const { db, services, serviceDownMs } = deps;
  const all = await services.list(db.kysely);
  const result: CleanupResult = { cleaning: [], unavailable: [], jobs: 0, exports: 0 };
  for (const s of all) {
    if (services.isUp(s, serviceDownMs) || !matches(s, filter)) continue;
    // Someone must be alive to take the work: another service of the same
    // binary (and, for volume services, of the same cluster).
    const peer = all.some((o) => o.id !== s.id && o.binary === s.binary && (s.binary !== 'cinder-volume' || o.cluster === s.cluster) && services.isUp(o, serviceDownMs));
    if (!peer) {
      result.unavailable.push(s);
      continue;
    }
    result.cleaning.push(s);
    result.jobs += await deps.queue.releaseLeasesOf(s.instance_id, {
      ...(filter.resourceId !== undefined ? { resourceId: filter.resourceId } : {}),
      ...(filter.resourceType !== undefined ? { resourceType: filter.resourceType.toLowerCase() } : {}),
    });
    if (s.binary === 'cinder-volume') result.exports += await moveExports(deps, s);
  }
  return result;
}

function matches(s: ServiceRow, f: CleanupFilter): boolean {
  return (f.serviceId === undefined || s.id === f.serviceId)
    && (f.host === undefined || s.host === f.host || s.host.startsWith(`${f.host}@`))
    && (f.binary === undefined || s.binary === f.binary)
    && (f.clusterName === undefined || s.cluster === f.clusterName)
    && (f.disabled === undefined || (s.disabled === 1) === f.disabled);
}

/** Points the attachments that name a dead service's endpoint at a live member. Returns how many moved. */
async function moveExports(deps: CleanupDeps, dead: ServiceRow): Promise<number> {
  const gone = endpointOf(dead);
  if (!gone) return 0;
  const { db, queue, volumes, attachments, services, serviceDownMs } = deps;
  const candidates = await db.kysely.selectFrom('attachments').innerJoin('volumes', 'volumes.id', 'attachments.volume_id')
    .select(['attachments.id as id', 'attachments.volume_id as volume_id', 'attachments.connection_info as connection_info'])
    .where('volumes.cluster_name', '=', dead.cluster).where('attachments.attach_status', 'in', ['attaching', 'attached'])
    .execute();
  let moved = 0;
  for (const c of candidates) {
    if (!pointsAt(c.connection_info, gone.nbd_host, gone.nbd_port)) continue;
    await queue.transaction(async (tx) => {
      await db.lockRows(tx, 'volumes', [c.volume_id]);
      const a = await attachments.get(tx, c.id);
      const v = await volumes.get(tx, c.volume_id);
      if (!a || !v || !pointsAt(a.connection_info, gone.nbd_host, gone.nbd_port)) return;
      const endpoint = await chooseEndpoint(tx, services, serviceDownMs, v);
      if (!endpoint) return;
      const connector = a.connector ? JSON.parse(a.connector) as { host?: unknown } : {};
      await tx.updateTable('attachments').set({ connection_info: JSON.stringify(connectionInfo(a, v, endpoint, connector.host)) })
        .where('id', '=', a.id).execute();
      moved++;
    });
  }
  return moved;
}

function pointsAt(info: string | null, host: string, port: number): boolean {
  if (!info) return false;
  const i = JSON.parse(info) as ConnectionInfo;
  return i.driver_volume_type === 'nbd' && i.data.host === host && i.data.port === port;
}
