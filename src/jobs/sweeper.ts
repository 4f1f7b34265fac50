/**
 * The sweeper: the guarantee that nothing stays stuck. Every process that runs
 * a worker also runs one; they may overlap safely because every change they make
 * is a compare-and-swap.
 *
 * Each pass: fails jobs whose lease expired with no attempts left (their kind
 * puts the resource into its error status), applies each rule (e.g. a resource
 * stuck in a transitional status with no live job, expired user messages), and
 * prunes old finished jobs.
 */
import type { Logger } from 'pino';
import { BasaltError, isStateDirectoryUnwritable } from '../errors/index.ts';
import type { AnyJobKind } from './job-kind.ts';
import type { JobQueue } from './job-queue.ts';

/** One housekeeping step of every sweep, e.g. failing stuck volumes. */
export interface SweepRule {
  readonly name: string;
  /**
   * Does the step. `olderThanMs` is the instant before which a transitional
   * status with no queued or running job counts as stuck. Returns how many rows
   * it changed (logged when non-zero).
   */
  sweep(olderThanMs: number): Promise<number>;
}

/** Settings of a {@link Sweeper}. */
export interface SweeperOptions {
  queue: JobQueue;
  kinds: readonly AnyJobKind[];
  rules: readonly SweepRule[];
  intervalMs: number;
  /** How long a row may sit transitional with no job before it counts as stuck. */
  graceMs: number;
  /** Age after which finished jobs are deleted. */
  retentionMs: number;
  log: Logger;
}

/** Runs {@link Sweeper.sweepOnce} every interval until stopped. */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private current: Promise<void> | undefined;

  constructor(private readonly options: SweeperOptions) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (!this.current) {
        this.current = this.sweepOnce().catch((err: unknown) => {
          // A full state directory is logged once per episode by the database; the next pass after it works.
          if (isStateDirectoryUnwritable(err)) this.options.log.debug({ code: err.code }, 'sweep refused: state directory unwritable');
          else this.options.log.error({ err }, 'sweep failed');
        }).finally(() => { this.current = undefined; });
      }
    }, this.options.intervalMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.current;
  }

  /** One pass. Exposed for tests and for start-up. */
  async sweepOnce(): Promise<void> {
    const { queue, kinds, rules, log } = this.options;
    const byName = new Map(kinds.map((k) => [k.kind, k]));
    for (const job of await queue.exhausted()) {
      const kind = byName.get(job.kind);
      if (!kind) continue; // a kind from a newer release: its own services will sweep it
      const err = new BasaltError('INTERNAL', `Job ${job.kind} ran out of attempts`, { cause: job.last_error });
      if (await queue.fail(kind, job, null, err)) log.warn({ job_id: job.id, kind: job.kind }, 'failed job that ran out of attempts');
    }
    const olderThan = queue.clock.now() - this.options.graceMs;
    for (const rule of rules) {
      const n = await rule.sweep(olderThan);
      if (n > 0) log.warn({ rule: rule.name, count: n }, 'sweep rule changed rows');
    }
    await queue.prune(this.options.retentionMs);
  }
}
