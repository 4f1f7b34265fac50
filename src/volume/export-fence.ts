/**
 * The fence of a deleted attachment's export, across its volume's cluster.
 * Every member of a cluster serves the cluster's exports, so a host's
 * connection may be held by any of them; the fence is complete only when
 * every member that could hold one has dropped it:
 *
 * - at once: a notification on {@link FENCE_CHANNEL} when the delete commits
 *   (PostgreSQL NOTIFY; every process's export server drops the name's
 *   connections). A hint only: a process whose LISTEN session is reconnecting
 *   misses it, and SQLite has none;
 * - durably: one `export.fence` job per live member, on its member target,
 *   done once that member's export server has dropped the connections and no
 *   write of theirs can land (`closeExport`). The fence is complete when all
 *   of them are done.
 *
 * A member that is not live holds no connection: its heartbeat is older than
 * `service_down_time`, and (on PostgreSQL, where members on other hosts
 * judge it by that heartbeat) a process that cannot record its heartbeat for
 * three quarters of that drops every connection by itself (self-fencing,
 * `volume-service.ts`). A member that dies after its job was queued has that
 * job moved to the cluster's target by the cleanup of dead services, where a
 * live member completes it. Later jobs of the volume wait for every fence
 * (the fence kind `holdsLaterJobs`), so no delete, migration, extend or revert
 * starts while a write of a detached host may still land; the detach itself
 * answers once they are done, within a bound ({@link awaitFences}).
 */
import type { Db, ServiceRepository } from '../db/index.ts';
import type { Enqueue, JobQueue, Tx } from '../jobs/index.ts';
import { memberTarget, volumeTarget, type VolumeJobKinds } from './volume-jobs.ts';

/** The notification channel on which deleted attachments' export names are fenced. */
export const FENCE_CHANNEL = 'basalt_fence';

/** What a fence needs: notifications, the queue (its `serviceDownMs`), the service rows and the fence kind. */
export interface ExportFenceDeps {
  db: Db;
  queue: Pick<JobQueue, 'options'>;
  services: ServiceRepository;
  kinds: Pick<VolumeJobKinds, 'fence'>;
}

/**
 * Fences the export `exportName` of volume `v`, in `tx` (whose commit makes
 * it happen): notifies every process and, with `enqueue`, queues the durable
 * fence of every live member of the volume's cluster ({@link fenceTargets}).
 * Without `enqueue` only the notification is sent (a handler's own
 * transaction, when the request already queued the durable fences). Returns
 * the ids of the live members' fence jobs, for {@link awaitFences}.
 * `untracked`: the attachment wrote past the NBD export (a loop device), so
 * each fence also marks the volume wholly changed for incremental backups.
 */
export async function fenceExport(
  deps: ExportFenceDeps, tx: Tx, enqueue: Enqueue | undefined, v: { id: string; cluster_name: string | null }, exportName: string, requestId: string | null, untracked = false,
): Promise<string[]> {
  await deps.db.notify(FENCE_CHANNEL, exportName, tx);
  if (!enqueue || !v.cluster_name) return [];
  const jobIds: string[] = [];
  for (const target of await fenceTargets(deps, tx, v.cluster_name)) {
    const id = await enqueue(deps.kinds.fence, { target, resourceId: v.id, requestId, payload: { exportName, ...(untracked ? { untracked } : {}) } });
    // The cluster's job (no member live) is for whichever starts next, which holds no connection: nothing to wait for.
    if (target !== volumeTarget(v.cluster_name)) jobIds.push(id);
  }
  return jobIds;
}

/** How often {@link awaitFences} looks at the fence jobs, in ms. */
const FENCE_POLL_MS = 10;

/**
 * Waits until the fence jobs `jobIds` (committed) have all finished, for at
 * most `timeoutMs`; returns whether they did. A detach waits so, as Cinder's
 * detach waits for its volume service to remove the export: in a healthy
 * cluster every member fences within milliseconds, so a host that attaches
 * the volume again after the answer never shares it with the detached one.
 * Past the bound (a member died and is not yet counted dead) the answer goes
 * out anyway: the jobs go on, and the volume's later jobs wait for them.
 */
export async function awaitFences(db: Db, jobIds: readonly string[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (let pending = [...jobIds]; pending.length > 0;) {
    const rows = await db.kysely.selectFrom('jobs').select('id').where('id', 'in', pending).where('state', 'in', ['queued', 'running']).execute();
    pending = rows.map((r) => r.id);
    if (pending.length === 0) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, FENCE_POLL_MS));
  }
  return true;
}

/**
 * Who must fence an export of `cluster`: the member target of each of its
 * volume services that is up (heartbeat within `service_down_time`), or the
 * cluster's target when none is, so that whichever member starts next
 * completes it.
 */
export async function fenceTargets(deps: Pick<ExportFenceDeps, 'queue' | 'services'>, tx: Tx, cluster: string): Promise<string[]> {
  const downMs = deps.queue.options.serviceDownMs ?? 60_000;
  const members = (await deps.services.list(tx))
    .filter((s) => s.binary === 'cinder-volume' && s.cluster === cluster && deps.services.isUp(s, downMs));
  return members.length > 0 ? members.map((s) => memberTarget(s.host)) : [volumeTarget(cluster)];
}
