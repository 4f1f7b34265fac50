/**
 * The scheduler role: consumes `volume.schedule` jobs, picks a backend pool
 * for each new volume, records the host string on the volume and queues the
 * `volume.create` job for that backend's cluster, in one transaction.
 *
 * Placement here is deliberately simple (zone + capacity, most free space
 * first); filters and weighers over volume types come with the scheduler issue.
 */
import type { Logger } from 'pino';
import type { Clock } from '../common/index.ts';
import type { ServiceRepository, ServiceRow, VolumeRepository, VolumeTypeRepository } from '../db/index.ts';
import { claimGroupHost } from '../db/index.ts';
import { reporting, roomFor, unmetSpecs, volumeTarget, type PoolReport, type ReportingService } from '../services/index.ts';
import { BasaltError, NoValidBackendError } from '../errors/index.ts';
import { RoleService, type JobHandler, type JobQueue } from '../jobs/index.ts';
import type { SchedulePayload, VolumeJobKinds } from '../volume/index.ts';

/** Settings of a {@link Scheduler}. */
export interface SchedulerOptions {
  queue: JobQueue;
  services: ServiceRepository;
  volumes: VolumeRepository;
  types: VolumeTypeRepository;
  kinds: VolumeJobKinds;
  clock: Clock;
  host: string;
  availabilityZone: string;
  version: string;
  instanceId: string;
  concurrency: number;
  pollMs: number;
  heartbeatMs: number;
  serviceDownMs: number;
  log: Logger;
}

/** One candidate pool. */
interface Candidate { service: ServiceRow; pool: PoolReport }

/** Runs the scheduler role. */
export class Scheduler {
  private readonly role: RoleService;

  constructor(private readonly o: SchedulerOptions) {
    const handler: JobHandler<SchedulePayload> = { kind: o.kinds.schedule, run: (ctx, p) => this.schedule(ctx, p) };
    this.role = new RoleService({
      queue: o.queue, services: o.services, host: o.host, binary: 'cinder-scheduler', backend: null, cluster: null,
      availabilityZone: o.availabilityZone, version: o.version, instanceId: o.instanceId, target: 'scheduler',
      handlers: [handler], concurrency: o.concurrency, pollMs: o.pollMs, heartbeatMs: o.heartbeatMs,
      log: o.log.child({ role: 'scheduler' }),
    });
  }

  start(): Promise<void> { return this.role.start(); }
  stop(): Promise<void> { return this.role.stop(); }

  private async schedule(ctx: Parameters<JobHandler<SchedulePayload>['run']>[0], p: SchedulePayload): Promise<void> {
    const { queue, services, volumes, kinds } = this.o;
    const volume = await volumes.get(queue.db.kysely, p.volumeId);
    if (!volume || volume.status !== 'creating' || volume.host !== null) return ctx.complete(); // settled meanwhile
    const up = reporting((await services.list(queue.db.kysely))
      .filter((s) => s.disabled === 0 && s.frozen !== 1 && services.isUp(s, this.o.serviceDownMs)));
    if (up.length === 0) {
      // Volume services may still be starting: worth retrying before giving up.
      throw new BasaltError('NO_VALID_BACKEND', 'No volume service is up', { retryable: true });
    }
    const type = volume.volume_type_id ? await this.o.types.find(queue.db.kysely, volume.volume_type_id, { isAdmin: true, projectId: volume.project_id }) : undefined;
    const { candidates, reasons } = this.candidates(up, p, type?.extra_specs ?? {});
    await ctx.complete(async (tx, enqueue) => {
      // Capacity is checked against the database inside the placing transaction,
      // so volumes placed since the last heartbeat count; the service's placement key
      // serialises concurrent placements on it, so they cannot overcommit a pool.
      for (const { service, pool } of candidates) {
        const host = `${service.host}#${pool.pool_name}`;
        if (!(await roomFor(tx, { db: queue.db, volumes }, { serviceId: service.id, host, pool }, p.sizeGiB))) {
          reasons.push(`${host}: CapacityFilter`);
          continue;
        }
        // A group's volumes share one pool: the first one placed picks it.
        if (volume.group_id && !(await claimGroupHost(tx, volume.group_id, host, service.cluster))) {
          reasons.push(`${host}: GroupFilter (the group's volumes are in another pool)`);
          continue;
        }
        const placed = await tx.updateTable('volumes').set({ host, cluster_name: service.cluster })
          .where('id', '=', p.volumeId).where('status', '=', 'creating').where('host', 'is', null).executeTakeFirst();
        if (placed.numUpdatedRows === 0n) return;
        await enqueue(kinds.create, {
          target: volumeTarget(service.cluster!), resourceId: p.volumeId, requestId: ctx.job.request_id,
          payload: { volumeId: p.volumeId, sizeGiB: p.sizeGiB },
        });
        return;
      }
      throw new NoValidBackendError(reasons);
    });
  }

  /**
   * The pools that pass the zone and capabilities filters, most free space
   * first, with the reasons the others were rejected.
   */
  private candidates(up: ReportingService[], p: SchedulePayload, specs: Record<string, string>): { candidates: Candidate[]; reasons: string[] } {
    const reasons: string[] = [];
    const candidates: Candidate[] = [];
    for (const { service, report } of up) {
      if (service.availability_zone !== p.availabilityZone) {
        reasons.push(`${service.host}: AvailabilityZoneFilter`);
        continue;
      }
      for (const pool of report.pools) {
        const failed = unmetSpecs(report, pool, specs);
        if (failed.length) reasons.push(`${service.host}#${pool.pool_name}: CapabilitiesFilter (${failed.join(', ')})`);
        else candidates.push({ service, pool });
      }
    }
    candidates.sort((a, b) => b.pool.free_capacity_gb - a.pool.free_capacity_gb);
    return { candidates, reasons };
  }
}
