/**
 * Webhooks (issue 17 part 2): an admin registers a URL, the events it wants
 * (names or patterns such as `volume.*`), optionally one project, and a
 * secret; every matching event of the event stream is POSTed to it as JSON,
 * signed, as a durable job of its own per event and webhook.
 *
 * - The dispatcher (every process runs one, every {@link DISPATCH_MS}) reads
 *   the event stream after each webhook's `queued_through` place and, in one
 *   transaction with the webhook's row locked, queues a `webhook.deliver`
 *   job per matching event and moves the place on: each event is queued once
 *   per webhook, whichever processes run, and none is skipped (places are
 *   committed in order, see the event stream).
 * - A delivery signs `<timestamp>.<body>` with HMAC-SHA256 under the secret
 *   and sends `X-Basalt-Timestamp` (Unix seconds) and
 *   `X-Basalt-Signature: sha256=<hex>`, with `X-Basalt-Event` and
 *   `X-Basalt-Delivery` (the job's id, the same on every retry); a receiver
 *   recomputes the signature and refuses old timestamps (replays).
 * - A 2xx answer delivers it; no answer, one slower than `[webhooks]
 *   timeout`, a 5xx, 408 or 429 is tried again with back-off up to
 *   `max_attempts`; another 4xx is a refusal, not tried again. Every attempt
 *   is a row of the delivery history (`event_deliveries`, sink
 *   `webhook:<id>`), shown at `GET /webhooks/{id}/deliveries` and counted by
 *   `/metrics`.
 */
import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import type { Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import { sentEvent, type Db, type JobRow, type Tx, type WebhooksTable } from '../db/index.ts';
import { BasaltError } from '../errors/index.ts';
import type { JobHandler, JobKind, JobQueue } from '../jobs/index.ts';

/** How often the dispatcher looks for events to queue. */
export const DISPATCH_MS = 200;
/** The job target webhook deliveries go to: every process's events worker takes them. */
export const EVENTS_TARGET = 'events';
/** Most events one dispatch pass reads per webhook. */
const DISPATCH_BATCH = 200;

/** `webhook.deliver` v1: one event to one webhook. */
export interface WebhookDeliveryPayload { webhookId: string; eventId: string; place: number }

/** The delivery history's sink of a webhook. */
export function webhookSink(id: string): string {
  return `webhook:${id}`;
}

/** The signature of a delivery: `sha256=` and the HMAC-SHA256 of `<timestamp>.<body>` under the secret, in hex. */
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** Whether an event name matches one of a webhook's patterns (`*` matches any run of characters). */
export function matchesPatterns(event: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => new RegExp(`^${p.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`).test(event));
}

/** The job kind (any process's sweeper can fail it; failing touches only the history it already wrote). */
export function webhookDeliveryKind(maxAttempts: number): JobKind<WebhookDeliveryPayload> {
  return {
    kind: 'webhook.deliver',
    version: 1,
    minVersion: 1,
    resourceType: 'delivery',
    maxAttempts,
    parse(payload, version) {
      if (version !== 1) throw new Error(`payload version ${version} is not readable`);
      const p = payload as Partial<WebhookDeliveryPayload> | null;
      if (!p || typeof p.webhookId !== 'string' || typeof p.eventId !== 'string' || typeof p.place !== 'number') throw new Error('payload must name webhookId, eventId and place');
      return p as WebhookDeliveryPayload;
    },
    // The history says it failed; there is no user resource to put in an error status.
    onFailure: async () => undefined,
  };
}

/** What webhooks need. */
export interface WebhooksDeps {
  db: Db;
  queue: JobQueue;
  clock: Clock;
  log: Logger;
  /** `[webhooks] timeout`, in ms. */
  timeoutMs: number;
  /** `[webhooks] max_attempts`. */
  maxAttempts: number;
}

/** The dispatcher and the delivery handler of one process. */
export class Webhooks {
  readonly kind: JobKind<WebhookDeliveryPayload>;
  readonly handler: JobHandler<WebhookDeliveryPayload>;
  private timer: NodeJS.Timeout | undefined;
  private pass: Promise<void> | undefined;

  constructor(private readonly deps: WebhooksDeps) {
    this.kind = webhookDeliveryKind(deps.maxAttempts);
    this.handler = { kind: this.kind, run: (ctx, p) => this.deliver(ctx.job, p, ctx.complete) };
  }

  /** Starts dispatching. */
  start(): void {
    this.timer = setInterval(() => {
      this.pass ??= this.dispatch().catch((err: unknown) => this.deps.log.warn({ err }, 'webhook dispatch failed; trying again')).finally(() => { this.pass = undefined; });
    }, DISPATCH_MS);
  }

  /** Stops dispatching (a pass under way finishes). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.pass;
  }

  /** One pass: queues the deliveries of every webhook's new events. */
  async dispatch(): Promise<void> {
    const hooks = await this.deps.db.kysely.selectFrom('webhooks').select('id').execute();
    for (const { id } of hooks) {
      await this.deps.queue.transaction(async (tx, enqueue) => {
        // Locked while its deliveries are queued: two processes never queue the same events (SQLite: one writer anyway).
        const hook = await tx.selectFrom('webhooks').selectAll().where('id', '=', id)
          .$if(this.deps.db.dialect === 'postgres', (qb) => qb.forUpdate()).executeTakeFirst();
        if (!hook) return;
        let q = tx.selectFrom('event_stream as s').innerJoin('events as e', 'e.id', 's.event_id').select(['s.seq', 'e.id', 'e.event'])
          .where('s.seq', '>', hook.queued_through).orderBy('s.seq').limit(DISPATCH_BATCH);
        if (hook.project_id !== null) q = q.where('s.project_id', '=', hook.project_id);
        const rows = await q.execute();
        if (rows.length === 0) return;
        const patterns = hook.events.split(',');
        for (const r of rows) {
          if (!matchesPatterns(r.event, patterns)) continue;
          await enqueue(this.kind, { target: EVENTS_TARGET, resourceId: newId(), payload: { webhookId: hook.id, eventId: r.id, place: Number(r.seq) } });
        }
        await tx.updateTable('webhooks').set({ queued_through: Number(rows.at(-1)!.seq) }).where('id', '=', hook.id).execute();
      });
    }
  }

  /** One attempt at one delivery. */
  private async deliver(job: JobRow, p: WebhookDeliveryPayload, complete: (fn: (tx: Tx) => Promise<void>) => Promise<void>): Promise<void> {
    const db = this.deps.db.kysely;
    const hook = await db.selectFrom('webhooks').selectAll().where('id', '=', p.webhookId).executeTakeFirst();
    const event = await db.selectFrom('events').selectAll().where('id', '=', p.eventId).executeTakeFirst();
    // Unregistered meanwhile, or the event is gone: nothing to deliver.
    if (!hook || !event) return complete(async () => undefined);
    const body = JSON.stringify({ ...sentEvent(p.place, event), project_id: event.project_id });
    const started = Date.now();
    const timestamp = String(Math.floor(this.deps.clock.now() / 1000));
    let status: number | undefined;
    let error: string | undefined;
    try {
      const r = await fetch(hook.url, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json', 'User-Agent': 'Basalt-Webhook/1',
          'X-Basalt-Event': event.event, 'X-Basalt-Delivery': job.id, 'X-Basalt-Timestamp': timestamp,
          'X-Basalt-Signature': webhookSignature(hook.secret, timestamp, body),
        },
        body,
        signal: AbortSignal.timeout(this.deps.timeoutMs),
        redirect: 'manual',
      });
      status = r.status;
      await r.arrayBuffer().catch(() => undefined);
      if (r.status < 200 || r.status >= 300) error = `the receiver answered ${r.status}`;
    } catch (err) {
      const e = err as Error;
      error = e.name === 'TimeoutError' ? `no answer within ${this.deps.timeoutMs / 1000} s` : `the receiver could not be reached: ${e.message}${e.cause instanceof Error ? `: ${e.cause.message}` : ''}`;
    }
    const outcome = error === undefined ? 'delivered' : status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429 ? 'refused' : 'failed';
    const row = {
      id: newId(), job_id: job.id, sink: webhookSink(hook.id), project_id: event.project_id, resource_type: event.resource_type,
      resource_id: event.resource_id, event: event.event, attempt: job.attempts, outcome, http_status: status ?? null, error: error ?? null,
      duration_ms: Date.now() - started, created_at: isoAt(this.deps.clock.now()),
    } as const;
    const log = this.deps.log.child({ webhook_id: hook.id, job_id: job.id, event: event.event, place: p.place, attempt: job.attempts });
    if (outcome === 'delivered') return complete(async (tx) => { await tx.insertInto('event_deliveries').values(row).execute(); });
    await db.insertInto('event_deliveries').values(row).execute();
    log.warn({ status, error }, outcome === 'refused' || job.attempts >= job.max_attempts ? 'webhook delivery failed for good' : 'webhook delivery failed; trying again later');
    throw new BasaltError('BACKEND_UNAVAILABLE', `Webhook ${hook.id} did not take event ${p.place}`, { retryable: outcome === 'failed', cause: new Error(error) });
  }
}

/** A webhook as the API shows it: everything but its secret. */
export function webhookView(h: Pick<WebhooksTable, 'id' | 'url' | 'events' | 'project_id' | 'created_at'>) {
  return { id: h.id, url: h.url, events: h.events.split(','), project_id: h.project_id, created_at: h.created_at };
}
