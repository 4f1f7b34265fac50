/**
 * Health and metrics (issue 18): what supervisors, load balancers and
 * Prometheus ask a Basalt process, on the API port outside `/v3`.
 *
 * - `GET /healthz`: the process answers (200 while the event loop turns).
 * - `GET /readyz`: 200 when it can do its work — the database answers within
 *   {@link READY_DB_TIMEOUT_MS}, and its export server (if it runs one) is not
 *   fenced off (a member cut off from PostgreSQL suspends its exports); else
 *   503 naming each failed check.
 * - `GET /metrics`: Prometheus' text format through prom-client. API requests
 *   by method, route template and status with their latency; jobs by kind and
 *   state (the queue's depth) and the leases this process took over; pool capacities as the volume services report
 *   them; services' heartbeat age; NBD connections of this process, and per
 *   volume its requests, payload bytes and their time by operation; the
 *   process's own (CPU, memory, event-loop lag).
 *
 * Unauthenticated, like the version document: nothing here names a project
 * or a user — counts, capacities and timings only; the NBD series are
 * labelled with volume ids (opaque UUIDs, as the export's own logs carry),
 * never with export names, which are attachments' credentials. Each server has
 * its own registry (tests run several servers in one process).
 */
import { sql } from 'kysely';
import client from 'prom-client';
import { progressRate, runningProgress, type Db, type ServiceRepository } from '../db/index.ts';
import { reporting } from '../services/index.ts';
import { deliveryCounts } from '../events/index.ts';

/** How long `/readyz` waits for the database. */
export const READY_DB_TIMEOUT_MS = 2000;

/** What the metrics and checks read from the process. */
export interface ObservedProcess {
  db: Db;
  services: ServiceRepository;
  /** The roles this process runs. */
  roles: readonly string[];
  /** The process's NBD server, when it exports volumes. */
  exports?: { readonly connectionCount: number; readonly suspended: boolean; readonly stats?: { snapshot(): Array<{ volume: string; op: string; count: number; bytes: number; seconds: number }> } };
  /** The process's job queue: the leases it took over. */
  queue?: { readonly takeovers: number };
  now(): number;
}

/**
 * One read shared by the gauges of a scrape: prom-client starts collecting
 * every metric of a scrape in one pass, so gauges built on the same rows ask
 * `load` once — the read in flight is reused until shortly after it ends.
 */
function perScrape<T>(load: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => {
    pending ??= load().finally(() => setImmediate(() => { pending = undefined; }));
    return pending;
  };
}

/** One readiness check's outcome: `ok` or why not. */
export type Checks = Record<string, string>;

/** The registry and checks of one process. */
export class Observability {
  readonly registry = new client.Registry();
  private readonly requests: client.Counter<'method' | 'route' | 'status'>;
  private readonly latency: client.Histogram<'method' | 'route'>;

  constructor(private readonly p: ObservedProcess) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry, prefix: 'basalt_' });
    this.requests = new client.Counter({
      name: 'basalt_api_requests_total', help: 'API requests answered, by method, route template and status.',
      labelNames: ['method', 'route', 'status'], registers,
    });
    this.latency = new client.Histogram({
      name: 'basalt_api_request_duration_seconds', help: 'Time from a request to its answer, by method and route template.',
      labelNames: ['method', 'route'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers,
    });
    new client.Gauge({
      name: 'basalt_jobs', help: 'Jobs in the durable queue, by kind and state (done and failed ones are kept an hour).',
      labelNames: ['kind', 'state'], registers,
      async collect() {
        this.reset();
        const rows = await p.db.kysely.selectFrom('jobs').select(['kind', 'state', (eb) => eb.fn.countAll<number>().as('n')]).groupBy(['kind', 'state']).execute();
        for (const r of rows) this.set({ kind: r.kind, state: r.state }, Number(r.n));
      },
    });
    if (p.queue) {
      const queue = p.queue;
      new client.Counter({
        name: 'basalt_job_lease_takeovers_total', help: 'Jobs this process took over from a worker whose lease ran out (a crashed or stalled process).', registers,
        collect() {
          this.reset();
          this.inc(queue.takeovers);
        },
      });
    }
    new client.Gauge({
      name: 'basalt_pool_capacity_gib', help: 'Capacity of each pool as its volume service last reported it: total, free and provisioned.',
      labelNames: ['pool', 'kind'], registers,
      async collect() {
        this.reset();
        for (const { service, report } of reporting(await p.services.list(p.db.kysely))) {
          for (const pool of report.pools) {
            const name = `${service.host}#${pool.pool_name}`;
            this.set({ pool: name, kind: 'total' }, pool.total_capacity_gb);
            this.set({ pool: name, kind: 'free' }, pool.free_capacity_gb);
            this.set({ pool: name, kind: 'provisioned' }, pool.provisioned_capacity_gb);
          }
        }
      },
    });
    new client.Gauge({
      name: 'basalt_service_heartbeat_age_seconds', help: 'Seconds since each service (of the whole deployment) last recorded its heartbeat.',
      labelNames: ['binary', 'host'], registers,
      async collect() {
        this.reset();
        for (const s of await p.services.list(p.db.kysely)) this.set({ binary: s.binary, host: s.host }, Math.max(0, (p.now() - Date.parse(s.heartbeat_at)) / 1000));
      },
    });
    new client.Gauge({
      name: 'basalt_event_deliveries', help: 'Attempts at delivering events outside Basalt kept in the delivery history (message_ttl), by sink (nova) and outcome (delivered; failed: tried again; refused: the receiver said no).',
      labelNames: ['sink', 'outcome'], registers,
      async collect() {
        this.reset();
        for (const r of await deliveryCounts(p.db)) this.set({ sink: r.sink, outcome: r.outcome }, r.count);
      },
    });
    this.progressMetrics(registers);
    this.replicationMetrics(registers);
    if (p.exports) {
      const exports = p.exports;
      new client.Gauge({
        name: 'basalt_nbd_connections', help: 'NBD connections open on this process\'s export server, negotiating ones included.', registers,
        collect() { this.set(exports.connectionCount); },
      });
      // Per volume and operation, counted by both data planes (src/export/nbd-stats.ts): IOPS and
      // throughput are their rates, the mean latency rate(seconds) / rate(requests).
      const served = (): ReturnType<NonNullable<typeof exports.stats>['snapshot']> => exports.stats?.snapshot() ?? [];
      type Served = ReturnType<typeof served>[number];
      /** One NBD counter by volume and operation: `value` of each row, rows it gives undefined for left out. */
      const nbdCounter = (name: string, help: string, value: (r: Served) => number | undefined): void => {
        new client.Counter({
          name, help, labelNames: ['volume', 'op'], registers,
          collect() {
            this.reset();
            for (const r of served()) {
              const v = value(r);
              if (v !== undefined) this.inc({ volume: r.volume, op: r.op }, v);
            }
          },
        });
      };
      nbdCounter('basalt_nbd_requests_total', 'NBD requests this process\'s export server answered, by volume and operation (read, write, flush, trim, zero, other).', (r) => r.count);
      nbdCounter('basalt_nbd_bytes_total', 'Payload bytes of the NBD reads and writes this process\'s export server answered, by volume and operation.',
        (r) => (r.op === 'read' || r.op === 'write' ? r.bytes : undefined));
      nbdCounter('basalt_nbd_request_seconds_total', 'Seconds NBD requests took from being read to their reply being sent, summed, by volume and operation.', (r) => r.seconds);
    }
  }

  /**
   * Backups and restores running anywhere in the deployment, from the
   * progress their jobs record (`progress`, at most every 0.5 s): bytes done
   * and total, and the mean rate so far, labelled by backup id (an opaque
   * UUID) and operation. A series is there while its operation runs.
   */
  private progressMetrics(registers: client.Registry[]): void {
    const p = this.p;
    const running = perScrape(async () => (await runningProgress(p.db.kysely)).filter((r) => r.resourceType === 'backup'));
    new client.Gauge({
      name: 'basalt_backup_progress_bytes', help: 'Bytes of each running backup or restore: done so far and total (the volume\'s size), by backup id and operation (backup, restore).',
      labelNames: ['backup', 'operation', 'kind'], registers,
      async collect() {
        this.reset();
        for (const r of await running()) {
          this.set({ backup: r.resourceId, operation: r.operation, kind: 'done' }, r.doneBytes);
          this.set({ backup: r.resourceId, operation: r.operation, kind: 'total' }, r.totalBytes);
        }
      },
    });
    new client.Gauge({
      name: 'basalt_backup_bytes_per_second', help: 'Mean rate of each running backup or restore since it began, by backup id and operation.',
      labelNames: ['backup', 'operation'], registers,
      async collect() {
        this.reset();
        for (const r of await running()) {
          const rate = progressRate(r);
          if (rate !== undefined) this.set({ backup: r.resourceId, operation: r.operation }, rate);
        }
      },
    });
  }

  /**
   * Each replicated volume's secondary copy (`volume_replicas`): how old its
   * last consistent point is, the bytes its next shipment must send whatever
   * changed (ranges the copies diverged in after a failover), the bytes
   * shipped so far and whether it is in step, labelled by volume id and mode.
   */
  private replicationMetrics(registers: client.Registry[]): void {
    const p = this.p;
    const replicas = perScrape(() => p.db.kysely.selectFrom('volume_replicas')
      .select(['volume_id', 'mode', 'state', 'last_point_at', 'pending_ranges', 'bytes_shipped', 'rpo_seconds']).orderBy('volume_id').execute());
    type Replica = Awaited<ReturnType<typeof replicas>>[number];
    new client.Gauge({
      name: 'basalt_replication_lag_seconds', help: 'Seconds since the last consistent point of each replicated volume\'s secondary copy (asynchronous: the last point shipped; synchronous: when its mirror was last in step), by volume id and mode; absent before the first.',
      labelNames: ['volume', 'mode'], registers,
      async collect() {
        this.reset();
        for (const r of await replicas()) {
          if (r.last_point_at) this.set({ volume: r.volume_id, mode: r.mode }, Math.max(0, (p.now() - Date.parse(r.last_point_at)) / 1000));
        }
      },
    });
    const perReplica = (name: string, help: string, value: (r: Replica) => number): void => {
      new client.Gauge({
        name, help, labelNames: ['volume', 'mode'], registers,
        async collect() {
          this.reset();
          for (const r of await replicas()) this.set({ volume: r.volume_id, mode: r.mode }, value(r));
        },
      });
    };
    perReplica('basalt_replication_rpo_seconds', 'The recovery point objective of each replicated volume (asynchronous: the most time between two points).', (r) => r.rpo_seconds);
    perReplica('basalt_replication_pending_bytes', 'Bytes the next shipment of each replicated volume sends whatever changed: the ranges its copies diverged in after a failover or failback.',
      (r) => (r.pending_ranges ? (JSON.parse(r.pending_ranges) as [number, number][]).reduce((n, [, length]) => n + length, 0) : 0));
    perReplica('basalt_replication_shipped_bytes', 'Bytes shipped to each replicated volume\'s secondary copy since the copy was made.', (r) => Number(r.bytes_shipped));
    perReplica('basalt_replication_in_step', '1 when each replicated volume\'s secondary copy is in step (enabled), 0 while it is made, copied, behind (error) or lagging (its last point older than the RPO allows).', (r) => (r.state === 'enabled' ? 1 : 0));
  }

  /** Counts an answered request; `route` is the route's template (bounded), or `unmatched`. */
  observe(method: string, route: string | undefined, status: number, seconds: number): void {
    const r = route ?? 'unmatched';
    this.requests.inc({ method, route: r, status: String(status) });
    this.latency.observe({ method, route: r }, seconds);
  }

  /** Runs the readiness checks; ready when every one says `ok`. */
  async readiness(): Promise<{ ready: boolean; checks: Checks; roles: readonly string[] }> {
    const checks: Checks = {};
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        sql`select 1`.execute(this.p.db.kysely),
        new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${READY_DB_TIMEOUT_MS} ms`)), READY_DB_TIMEOUT_MS); }),
      ]);
      checks.database = 'ok';
    } catch (err) {
      checks.database = `unreachable: ${(err as Error).message}`;
    } finally {
      clearTimeout(timer);
    }
    if (this.p.exports) checks.exports = this.p.exports.suspended ? 'suspended: this member cannot prove to its cluster that it is alive (self-fenced)' : 'ok';
    return { ready: Object.values(checks).every((v) => v === 'ok'), checks, roles: this.p.roles };
  }

  /** The text Prometheus scrapes. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
