/**
 * Replication's API (issue 16): Cinder's `os-services/failover_host` (and,
 * from 3.26, `os-services/failover` with a cluster), and Basalt's own admin
 * view of where each copy of a replicated volume is
 * (`GET /volumes/{id}/replication`; Cinder's volume views stay as they are).
 *
 * A failover is the backend's, as in Cinder: its services go `failing-over`
 * by compare-and-swap from `enabled` or `failed-over`, and one durable
 * `replication.failover` job does the rest on the cluster that becomes the
 * primary (`src/volume/replication-jobs.ts`). Unlike Cinder, the failed
 * backend need not be up — the target's volume service promotes its copies —
 * but the target must be; a failback (`backend_id: default`) needs both.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { cinderTime } from '../common/index.ts';
import type { ServiceRow } from '../db/index.ts';
import { InvalidInputError, NotFoundError } from '../errors/index.ts';
import { replicatesInDriver, reporting, replicationTargetsOf, volumeTarget } from '../services/index.ts';
import { FAILBACK_ID, type ReplicationJobKinds } from '../volume/index.ts';
import type { JobQueue } from '../jobs/index.ts';
import type { ApiDeps } from './context.ts';
import { body, validBody } from './body-declaration.ts';

const nullableName = { type: ['string', 'null'], maxLength: 255 };
/** Cinder's `failover_host` schema: host, backend_id and cluster, nothing else. */
const FAILOVER = {
  type: 'object', additionalProperties: false,
  properties: { host: { type: 'string', minLength: 1, maxLength: 255 }, backend_id: nullableName, cluster: nullableName },
};

/** What replication's routes need beyond the API's deps (`ApiDeps.replication`). */
export interface ReplicationApiDeps {
  kinds: ReplicationJobKinds;
  /** The queue the failover job is written to, with the services' change. */
  queue: JobQueue;
}

/**
 * The failover state a volume service's row shows (Cinder's
 * `replication_status` of a service): its own once it has failed over (or is
 * failing over), else `enabled` when its backend has a target, `disabled`
 * when not.
 */
export function serviceReplicationStatus(s: ServiceRow): string {
  if (s.replication_status) return s.replication_status;
  const [r] = reporting([s]);
  return replicationTargetsOf(r?.report).length > 0 ? 'enabled' : 'disabled';
}

/** Registers the routes. */
export function replicationRoutes(deps: ApiDeps, replication: ReplicationApiDeps) {
  const { db, services, config } = deps;
  const downMs = config.DEFAULT.service_down_time * 1000;
  return async (app: FastifyInstance): Promise<void> => {
    const failover = (clustered: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
      // `failover` in the path is 3.26's (REPLICATION_CLUSTER); below it the resource does not exist.
      if (clustered && !req.apiVersion.atLeast('3.26')) throw new NotFoundError('The resource could not be found.');
      const b = validBody<{ host?: string; backend_id?: string | null; cluster?: string | null }>(req);
      // Cinder's get_cluster_host: from 3.26 exactly one of host and cluster; before it, host.
      const withCluster = clustered || req.apiVersion.atLeast('3.26');
      const cluster = withCluster ? b.cluster ?? undefined : undefined;
      if (!withCluster && b.cluster) throw new InvalidInputError('Invalid input received: Host field is missing.');
      if (Boolean(cluster) === Boolean(b.host)) {
        throw new InvalidInputError(`Invalid input received: ${withCluster ? 'One and only one of cluster and host must be set.' : 'Host field is missing.'}`);
      }
      const all = await services.list(db.kysely);
      const rows = all.filter((s) => s.binary === 'cinder-volume' && (cluster ? s.cluster === cluster : services.onHost(s, b.host!)));
      if (rows.length === 0) throw new InvalidInputError(`Invalid input received: No service found with ${cluster ? `cluster=${cluster}` : `host=${b.host}`}`);
      const clusters = new Set(rows.map((s) => s.cluster));
      if (clusters.size > 1) throw new InvalidInputError('Invalid input received: Services from different clusters found.');
      const failing = rows[0]!.cluster!;
      const status = serviceReplicationStatus(rows[0]!);
      const name = cluster ?? b.host!;
      if (!['enabled', 'failed-over'].includes(status)) {
        throw new InvalidInputError(`Invalid input received: replication_status in ${name} must be enabled or failed-over to failover (it is ${status}).`);
      }
      const live = reporting(all).filter(({ service }) => services.isUp(service, downMs));
      const targets = [...new Set(rows.flatMap((s) => replicationTargetsOf(reporting([s])[0]?.report)))];
      let backendId = b.backend_id ?? undefined;
      if (backendId === undefined) {
        // Cinder lets the driver choose; Basalt chooses only when there is nothing to choose.
        if (status === 'failed-over') throw new InvalidInputError(`Invalid input received: ${name} is failed over: name backend_id default to fail back.`);
        if (targets.length !== 1) throw new InvalidInputError(`Invalid input received: ${name} has ${targets.length} replication targets (${targets.join(', ')}): name one in backend_id.`);
        backendId = targets[0]!;
      }
      let jobCluster: string;
      // A backend that replicates itself (RBD's rbd-mirror): its own services promote the target's copies, both ways.
      // Its job goes to its own cluster even when no member is counted up: a member whose storage is lost
      // cannot report (no heartbeat without its stats) yet still takes jobs, and a restarted one takes it later.
      const inDriver = rows.some((s) => replicatesInDriver(reporting([s])[0]?.report));
      const own = { service: rows[0]! };
      if (backendId === FAILBACK_ID) {
        if (status !== 'failed-over') throw new InvalidInputError(`Invalid input received: ${name} is not failed over: there is nothing to fail back.`);
        if (!live.some(({ service }) => service.cluster === failing)) {
          throw new InvalidInputError(`Invalid input received: ${name} is unreachable (no volume service of it is up): it cannot take its volumes back until it is.`);
        }
        const active = rows[0]!.active_backend_id;
        const target = inDriver ? own : live.find(({ service, report }) => report.volume_backend_name === active && service.cluster !== failing);
        if (!target) throw new InvalidInputError(`Invalid input received: the backend ${name} is failed over to (${active}) has no volume service up: nothing can ship its last writes back.`);
        jobCluster = target.service.cluster!;
      } else {
        if (status === 'failed-over') throw new InvalidInputError(`Invalid input received: ${name} is failed over already: fail back (backend_id default) first.`);
        if (!targets.includes(backendId)) {
          throw new InvalidInputError(`Invalid input received: ${backendId} is not a replication target of ${name}${targets.length ? ` (its targets: ${targets.join(', ')})` : ' (it has none)'}.`);
        }
        const target = inDriver ? own : live.find(({ service, report }) => report.volume_backend_name === backendId && service.cluster !== failing);
        if (!target) throw new InvalidInputError(`Invalid input received: replication target ${backendId} has no volume service up: nothing can take over ${name}.`);
        jobCluster = target.service.cluster!;
      }
      await replication.queue.transaction(async (tx, enqueue) => {
        const changed = await tx.updateTable('services').set({ replication_status: 'failing-over' }).where('cluster', '=', failing)
          .where('binary', '=', 'cinder-volume')
          .where((eb) => eb.or([eb('replication_status', 'is', null), eb('replication_status', '=', status)])).executeTakeFirst();
        if (Number(changed.numUpdatedRows) === 0) throw new InvalidInputError(`Invalid input received: replication_status in ${name} must be enabled or failed-over to failover.`);
        // Its resource is the failing backend's first service row (an id: a cluster name may be longer than a resource id may).
        await enqueue(replication.kinds.failover, { target: volumeTarget(jobCluster), resourceId: rows[0]!.id, requestId: req.id, payload: { cluster: failing, backendId: backendId! } });
      });
      await db.durable();
      return reply.code(202).send();
    };
    app.put('/os-services/failover_host', body(FAILOVER), failover(false));
    app.put('/os-services/failover', body(FAILOVER), failover(true));

    app.get<{ Params: { id: string } }>('/volumes/:id/replication', async (req) => {
      const v = await deps.volumes.get(db.kysely, req.params.id);
      if (!v) throw new NotFoundError(`Volume ${req.params.id} could not be found.`);
      const r = await db.kysely.selectFrom('volume_replicas').selectAll().where('volume_id', '=', v.id).executeTakeFirst();
      return {
        replication: {
          volume_id: v.id,
          replication_status: v.replication_status ?? 'disabled',
          primary: { host: v.host, cluster: v.cluster_name },
          secondary: r ? { host: r.secondary_host, cluster: r.secondary_cluster, backend_id: r.backend_id } : null,
          mode: r?.mode ?? null,
          rpo_seconds: r?.rpo_seconds ?? null,
          state: r?.state ?? null,
          last_point_at: cinderTime(r?.last_point_at ?? null) ?? null,
          bytes_shipped: r ? Number(r.bytes_shipped) : 0,
          last_error: r?.last_error ?? null,
        },
      };
    });
  };
}
