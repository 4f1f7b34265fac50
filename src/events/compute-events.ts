/**
 * Telling the compute side of changes to attached volumes: after an in-use
 * volume is extended, each instance it is attached to gets Nova's
 * `volume-extended` external event (tag: the volume id), as Cinder sends it,
 * so the hypervisor resizes the guest's disk.
 *
 * Sending is a durable job of its own (`compute.external_events`), queued in
 * the transaction that finishes the operation and never part of it: the
 * volume is `in-use` at its new size whatever Nova does. A Nova that cannot be
 * reached, or answers too slowly, is tried again with back-off (from
 * `job_retry_delay_seconds`, doubling) up to `[nova] event_max_attempts`;
 * a Nova that refuses the event (the server is gone, or on no host) is not.
 * Every attempt is logged and recorded in `event_deliveries` (the delivery
 * history, counted by `/metrics`); when delivery fails for good the volume gets
 * Cinder's user message (extend volume: compute service failed).
 *
 * Nova's schema for external events knows no attach or detach event: Nova
 * learns those results from the answers to its own attachment calls, so
 * Basalt, as Cinder, sends none.
 */
import type { Logger } from 'pino';
import type { Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import type { Db, JobRow, Tx, VolumeRow } from '../db/index.ts';
import { BasaltError } from '../errors/index.ts';
import type { Enqueue, JobHandler, JobKind } from '../jobs/index.ts';
import { MESSAGE_ACTIONS, MESSAGE_DETAILS, recordUserMessage } from '../messages/index.ts';
import { volumeTarget } from '../services/index.ts';
import { NovaClient, VOLUME_EXTENDED_MICROVERSION, type ExternalEvent, type SendResult } from './nova-client.ts';

/** `compute.external_events` v1: events about one volume for the instances it is attached to. */
export interface ComputeEventsPayload {
  volumeId: string;
  projectId: string;
  /** Nova's event name (`volume-extended`). */
  event: string;
  /** The instances to tell. */
  serverIds: string[];
  /** The compute API microversion the event needs. */
  microversion: string;
}

/** The delivery sink these jobs record in `event_deliveries`. */
export const NOVA_SINK = 'nova';

/** What the job kind needs (it runs in any role's sweeper too). */
export interface ComputeEventsKindDeps {
  clock: Clock;
  messageTtlSeconds: number;
  /** `[nova] event_max_attempts`. */
  maxAttempts: number;
}

/** The job kind. Its resource is the delivery itself (a fresh id): it neither holds nor is held by the volume's jobs, nor keeps the sweeper from a stuck volume. */
export function computeEventsKind(deps: ComputeEventsKindDeps): JobKind<ComputeEventsPayload> {
  return {
    kind: 'compute.external_events',
    version: 1,
    minVersion: 1,
    resourceType: 'delivery',
    maxAttempts: deps.maxAttempts,
    parse(payload, version) {
      if (version !== 1) throw new Error(`payload version ${version} is not readable`);
      const p = payload as Partial<ComputeEventsPayload> | null;
      if (!p || typeof p.volumeId !== 'string' || typeof p.projectId !== 'string' || typeof p.event !== 'string' || typeof p.microversion !== 'string'
        || !Array.isArray(p.serverIds) || !p.serverIds.every((s) => typeof s === 'string')) {
        throw new Error('payload must name volumeId, projectId, event, microversion and serverIds');
      }
      return p as ComputeEventsPayload;
    },
    async onFailure(tx: Tx, p: ComputeEventsPayload, job: JobRow) {
      // The volume itself is fine: only its user sees that the compute side was not told.
      await recordUserMessage(tx, deps.clock, deps.messageTtlSeconds, {
        projectId: p.projectId, resourceType: 'volume', resourceId: p.volumeId,
        action: MESSAGE_ACTIONS.EXTEND_VOLUME, detail: MESSAGE_DETAILS.NOTIFY_COMPUTE_SERVICE_FAILED, requestId: job.request_id,
      });
    },
  };
}

/** What the volume service needs to tell the compute side. */
export interface ComputeEventsDeps extends ComputeEventsKindDeps {
  db: Db;
  client: NovaClient;
  log: Logger;
}

/** The compute side's notifier of one process: queues deliveries and runs them. */
export class ComputeEvents {
  readonly kind: JobKind<ComputeEventsPayload>;
  readonly handler: JobHandler<ComputeEventsPayload>;

  constructor(private readonly deps: ComputeEventsDeps) {
    this.kind = computeEventsKind(deps);
    this.handler = { kind: this.kind, run: (ctx, p) => this.deliver(ctx.job, p, ctx.complete) };
  }

  /**
   * Queues `volume-extended` for every instance `v` is attached to, inside the
   * transaction that finishes the extend (on the volume's cluster, whose
   * services run the delivery). Nothing when no attachment names an instance.
   */
  async volumeExtended(tx: Tx, enqueue: Enqueue, v: VolumeRow, requestId: string | null): Promise<void> {
    const rows = await tx.selectFrom('attachments').select('instance_uuid').distinct()
      .where('volume_id', '=', v.id).where('instance_uuid', 'is not', null).execute();
    const serverIds = rows.map((r) => r.instance_uuid!).sort();
    if (serverIds.length === 0) return;
    await enqueue(this.kind, {
      target: volumeTarget(v.cluster_name!), resourceId: newId(), requestId,
      payload: { volumeId: v.id, projectId: v.project_id, event: 'volume-extended', serverIds, microversion: VOLUME_EXTENDED_MICROVERSION },
    });
  }

  /** One attempt: send, record, and complete, retry (failed) or fail for good (refused). */
  private async deliver(job: JobRow, p: ComputeEventsPayload, complete: (fn: (tx: Tx) => Promise<void>) => Promise<void>): Promise<void> {
    const events: ExternalEvent[] = p.serverIds.map((server_uuid) => ({ server_uuid, name: p.event, tag: p.volumeId }));
    const result = await this.deps.client.send(events, p.microversion, job.request_id);
    const log = this.deps.log.child({ job_id: job.id, volume_id: p.volumeId, event: p.event, servers: p.serverIds, attempt: job.attempts });
    if (result.outcome === 'delivered') {
      log.info({ ms: result.durationMs }, 'compute side told of the event');
      return complete((tx) => this.record(tx, job, p, result));
    }
    await this.record(this.deps.db.kysely, job, p, result);
    const last = result.outcome === 'refused' || job.attempts >= job.max_attempts;
    log[last ? 'error' : 'warn']({ status: result.httpStatus, error: result.error, ms: result.durationMs },
      last ? 'compute side could not be told of the event; giving up (user message on the volume)' : 'compute side could not be told of the event; trying again later');
    throw new BasaltError('COMPUTE_NOTIFY_FAILED', `The compute side could not be told of ${p.event} for volume ${p.volumeId}`, {
      retryable: result.outcome === 'failed', cause: new Error(result.error),
    });
  }

  /** Records one attempt in the delivery history. */
  private async record(q: Tx, job: JobRow, p: ComputeEventsPayload, r: SendResult): Promise<void> {
    await q.insertInto('event_deliveries').values({
      id: newId(), job_id: job.id, sink: NOVA_SINK, project_id: p.projectId, resource_type: 'volume', resource_id: p.volumeId,
      event: p.event, attempt: job.attempts, outcome: r.outcome, http_status: r.httpStatus ?? null, error: r.error ?? null,
      duration_ms: Math.round(r.durationMs), created_at: isoAt(this.deps.clock.now()),
    }).execute();
  }
}
