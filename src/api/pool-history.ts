/**
 * Pool capacity over time, for the dashboard's plots: a ring buffer in the API
 * process, filled by sampling the capacity the live volume services report
 * (their `services` rows, through the service report's accessors).
 *
 * Why in memory: the reports are rewritten at every heartbeat and keep no past,
 * and a plot of the last hours is worth less than a table and a migration. The
 * price: the history starts empty when the API process starts, and each API
 * process of a split deployment keeps its own (they sample the same rows, so
 * they agree but for timing).
 */
import type { Clock } from '../common/index.ts';
import { isoAt } from '../common/index.ts';
import type { Db, ServiceRepository } from '../db/index.ts';
import { reporting } from '../services/index.ts';

/** One sample of one pool. */
export interface PoolSample {
  /** When it was taken (ISO-8601). */
  at: string;
  total_capacity_gb: number;
  free_capacity_gb: number;
  provisioned_capacity_gb: number;
}

/** The history of one pool, named as `get_pools` names it (`host@backend#pool`). */
export interface PoolHistoryEntry {
  name: string;
  volume_backend_name: string;
  /** Oldest first. */
  samples: PoolSample[];
}

/** Options of {@link PoolHistory}. */
export interface PoolHistoryOptions {
  db: Db;
  services: ServiceRepository;
  clock: Clock;
  /** A service whose heartbeat is older than this counts as down and is not sampled (`service_down_time`). */
  downMs: number;
  /** Time between samples. */
  intervalMs: number;
  /** Samples kept per pool; the oldest go first. Default {@link DEFAULT_SAMPLES_KEPT}. */
  samplesKept?: number;
}

/** Samples kept per pool by default: 720, two hours at the ten-second default report interval. */
export const DEFAULT_SAMPLES_KEPT = 720;

/** The sampled capacity history of every pool the API process has seen. */
export class PoolHistory {
  private readonly pools = new Map<string, PoolHistoryEntry>();
  private readonly samplesKept: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(private readonly o: PoolHistoryOptions) {
    this.samplesKept = o.samplesKept ?? DEFAULT_SAMPLES_KEPT;
  }

  /** Takes a sample now, then one every `intervalMs` until {@link stop}. Idempotent. */
  start(): void {
    if (this.timer) return;
    const tick = (): void => {
      // One sample at a time: a slow database makes gaps in the plot, never a pile of queries.
      if (this.running) return;
      this.running = this.sample().catch(() => undefined).finally(() => { this.running = undefined; });
    };
    tick();
    this.timer = setInterval(tick, this.o.intervalMs);
    this.timer.unref();
  }

  /** Stops sampling and waits for a sample in progress; the history stays readable. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /**
   * Records the capacity every live volume service reports now. A pool whose
   * service is down gets no sample (a gap in its plot, not a stale value).
   */
  async sample(): Promise<void> {
    const rows = await this.o.services.list(this.o.db.kysely);
    const at = isoAt(this.o.clock.now());
    for (const { service, report } of reporting(rows.filter((s) => this.o.services.isUp(s, this.o.downMs)))) {
      for (const p of report.pools) {
        const name = `${service.host}#${p.pool_name}`;
        let entry = this.pools.get(name);
        if (!entry) {
          entry = { name, volume_backend_name: report.volume_backend_name, samples: [] };
          this.pools.set(name, entry);
        }
        entry.samples.push({ at, total_capacity_gb: p.total_capacity_gb, free_capacity_gb: p.free_capacity_gb, provisioned_capacity_gb: p.provisioned_capacity_gb });
        if (entry.samples.length > this.samplesKept) entry.samples.splice(0, entry.samples.length - this.samplesKept);
      }
    }
  }

  /** Every pool's history, by name; samples at or after `sinceIso` only when given. */
  list(sinceIso?: string): PoolHistoryEntry[] {
    return [...this.pools.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((e) => ({ ...e, samples: sinceIso === undefined ? [...e.samples] : e.samples.filter((s) => s.at >= sinceIso) }));
  }
}
