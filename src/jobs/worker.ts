/**
 * A worker: claims jobs for its targets, runs their handlers with a renewed
 * lease, and settles each one (done, retried later, or failed for good).
 *
 * It wakes when its own process enqueues for one of its targets, and polls
 * for jobs written by other processes. Between polls it claims only from the
 * targets it was woken for since their last empty claim: a claim that finds
 * nothing is a write statement, and the create burst of bench/api.ts spent a
 * fifth of its event loop on them (4.5 claims per job, 3.5 of them empty).
 */
import type { Logger } from 'pino';
import type { JobRow } from '../db/index.ts';
import { BasaltError, isStateDirectoryUnwritable, toBasaltError } from '../errors/index.ts';
import type { AnyJobHandler, JobContext } from './job-kind.ts';
import { describe, isOutage, JobQueue, LeaseLostError } from './job-queue.ts';

/** Settings of one {@link Worker}. */
export interface WorkerOptions {
  queue: JobQueue;
  /** Lease owner id: the process incarnation. */
  owner: string;
  targets: readonly string[];
  handlers: readonly AnyJobHandler[];
  /** Jobs run at once. */
  concurrency: number;
  pollMs: number;
  log: Logger;
}

/** Runs jobs until stopped. */
export class Worker {
  private readonly handlers = new Map<string, AnyJobHandler>();
  private readonly running = new Set<Promise<void>>();
  private readonly aborts = new Set<AbortController>();
  private stopped = true;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** Set by a wake-up that came while the loop was not sleeping, so it is not lost. */
  private woken = false;
  /** Targets that may have due jobs: woken since their last empty claim (all of them after a poll). */
  private readonly pending = new Set<string>();
  /**
   * Targets that may have due jobs of the kinds that hold later ones: what a
   * full worker still claims. Without it, each wake-up of a full worker read
   * its whole queue for one (115 µs a claim with 200 creates queued).
   */
  private readonly pendingHolding = new Set<string>();
  private readonly holdingKinds: readonly string[];
  private readonly onWake = (target: string, kinds?: ReadonlySet<string>): void => {
    if (!this.options.targets.includes(target)) return;
    this.pending.add(target);
    if (!kinds || this.holdingKinds.some((k) => kinds.has(k))) this.pendingHolding.add(target);
    this.poke();
  };
  private pendAll(): void {
    for (const t of this.options.targets) {
      this.pending.add(t);
      this.pendingHolding.add(t);
    }
  }
  private poke(): void {
    this.woken = true;
    this.wake?.();
  }

  constructor(private readonly options: WorkerOptions) {
    for (const h of options.handlers) this.handlers.set(h.kind.kind, h);
    this.holdingKinds = options.handlers.filter((h) => h.kind.holdsLaterJobs === true).map((h) => h.kind.kind);
  }

  /** Starts claiming. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.pendAll();
    this.options.queue.wakeups.on('wake', this.onWake);
    this.loop = this.run();
  }

  /**
   * Stops claiming, aborts the running handlers' signals and waits for them to
   * settle. Jobs they leave unfinished keep their lease and are taken over.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.options.queue.wakeups.off('wake', this.onWake);
    this.poke();
    for (const a of this.aborts) a.abort();
    await this.loop;
    await Promise.allSettled([...this.running]);
  }

  private async run(): Promise<void> {
    const kinds = [...this.handlers.keys()];
    const holding = this.holdingKinds;
    const { concurrency } = this.options;
    // Jobs that hold later ones (fences: brief, and a volume's other work waits
    // for them) have slots of their own, so long jobs filling the worker do not
    // delay them.
    let holdingRunning = 0;
    const full = (): boolean => this.running.size - holdingRunning >= concurrency;
    while (!this.stopped) {
      this.woken = false;
      /** The last claim found nothing (or failed): sleep until woken, not claim again at once. */
      let exhausted = false;
      while (!this.stopped && (!full() || (holding.length > 0 && holdingRunning < concurrency))) {
        let job: JobRow | undefined;
        // The API's answers first: a claim waits briefly while requests are in flight (common/foreground.ts);
        // a worker with nothing to claim goes to sleep without waiting.
        if ((full() ? this.pendingHolding : this.pending).size === 0) {
          exhausted = true;
          break;
        }
        await this.options.queue.options.foreground?.quiet();
        if (this.stopped) break;
        const restricted = full();
        // Taken out before the claim: a wake-up while it runs puts its target back.
        const from = restricted ? this.pendingHolding : this.pending;
        const woken = [...from];
        if (woken.length === 0) {
          exhausted = true;
          break;
        }
        const wokenHolding = woken.filter((t) => this.pendingHolding.has(t));
        for (const t of woken) {
          this.pending.delete(t);
          this.pendingHolding.delete(t);
        }
        /**
         * A target stays pending while a claim from it may find more: every
         * woken target after a claim that took a job (it tried them in turn
         * and stopped at the first) or asked for the holding kinds alone; and
         * pending for the holding kinds after any claim that took a job. A
         * claim of every kind takes the oldest job, and a holding job newer
         * than it may be why the target was marked (its wake-up came before
         * this claim, which took the mark): dropped, a full worker would not
         * look for that job until the next poll (job-queue.test.ts, a fence
         * behind a long job with one slot). A claim that found nothing
         * leaves its targets' marks to the wake-ups that come after it.
         */
        const putBack = (claimed: JobRow | undefined | 'failed'): void => {
          if (claimed !== undefined || restricted) for (const t of woken) this.pending.add(t);
          if (claimed !== undefined) for (const t of wokenHolding) this.pendingHolding.add(t);
        };
        try {
          job = await this.options.queue.claim(this.options.owner, this.options.targets, restricted ? holding : kinds, holding, woken);
          putBack(job);
        } catch (err) {
          putBack('failed');
          // A full state directory is logged once per episode by the database: claims resume when it ends.
          if (isStateDirectoryUnwritable(err)) this.options.log.debug({ code: err.code }, 'job claim refused: state directory unwritable');
          else this.options.log.error({ err }, 'job claim failed');
          exhausted = true;
          break;
        }
        if (!job) {
          exhausted = true;
          break;
        }
        const held = holding.includes(job.kind);
        if (held) holdingRunning++;
        const p = this.execute(job).finally(() => {
          // A freed slot matters only to a loop that stopped claiming for want
          // of one: otherwise its last claim found nothing, and new jobs wake it
          // (an enqueue in this process, a fence's release of what it held, the poll).
          const slotWasMissing = full() || (held && holdingRunning >= concurrency);
          this.running.delete(p);
          if (held) holdingRunning--;
          if (slotWasMissing) this.poke();
        });
        this.running.add(p);
      }
      if (this.stopped) break;
      // Sleep until woken (own enqueue, a free slot) or the poll interval passes.
      if ((exhausted || full()) && !this.woken) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            // The poll: other processes' jobs, and retries whose time has come.
            this.pendAll();
            done();
          }, this.options.pollMs);
          function done(): void { clearTimeout(t); resolve(); }
          this.wake = done;
        });
        this.wake = undefined;
      }
    }
  }

  private async execute(job: JobRow): Promise<void> {
    const { queue, owner, log: baseLog } = this.options;
    const handler = this.handlers.get(job.kind)!;
    const log = baseLog.child({ job_id: job.id, kind: job.kind, request_id: job.request_id, resource_id: job.resource_id, attempt: job.attempts });
    const abort = new AbortController();
    this.aborts.add(abort);
    const renewEvery = Math.max(10, Math.floor(queue.options.leaseMs / 3));
    const renewal = setInterval(() => {
      queue.renew(job.id, owner).then((held) => {
        if (!held) abort.abort(new LeaseLostError(job.id));
      }, (err) => quietIfRefused(log, err, 'warn', 'lease renewal failed'));
    }, renewEvery);
    const ctx: JobContext = {
      job,
      signal: abort.signal,
      log,
      complete: (fn) => queue.transaction(async (tx, enqueue) => {
        if (fn) await fn(tx, enqueue);
        await queue.markDone(tx, job.id, owner);
      }),
    };
    try {
      let payload: unknown;
      try {
        const cap = queue.options.payloadVersionCap ?? 0;
        if (cap > 0 && job.payload_version > cap) throw new Error(`payload version ${job.payload_version} is newer than this release reads (${cap})`);
        payload = handler.kind.parse(JSON.parse(job.payload), job.payload_version);
      } catch (err) {
        throw new BasaltError('INTERNAL', `Unreadable payload of job ${job.id}`, { cause: err });
      }
      // The job acts on what was committed (its own row, the status that asked for it): that
      // must be on disk first, or a power cut could leave the work done and its reason lost.
      await queue.db.durable().catch((err: unknown) => {
        throw new BasaltError('INTERNAL', 'The database could not be flushed to disk', { cause: err, retryable: true });
      });
      log.debug('job started');
      await handler.run(ctx, payload);
      log.debug('job done');
    } catch (raw) {
      const err = toBasaltError(raw);
      if (raw instanceof LeaseLostError || abort.signal.reason instanceof LeaseLostError) {
        log.warn('job lease lost; another worker owns it now');
      } else if (this.stopped && abort.signal.aborted) {
        log.info('job interrupted by shutdown; it will be taken over');
      } else if (isOutage(err)) {
        // Not the job's failure: it waits for the service however long it is away. Said once per job, with no stack.
        log[job.deferrals === 0 ? 'warn' : 'debug']({ code: err.code, cause: (err.cause as Error | undefined)?.message }, 'job deferred: Basalt\'s database or coordination service is out of reach');
        // The database away, this write fails too: the lease then expires and the job is claimed again.
        await queue.deferLater(job, owner, describe(raw)).catch((e) => quietIfRefused(log, e, 'warn', 'deferral bookkeeping failed'));
      } else if (err.retryable && job.attempts < job.max_attempts) {
        quietIfRefused(log, raw, 'warn', 'job failed; retrying later');
        // On a full state directory this write fails too: the lease then expires and the job is claimed again.
        await queue.retryLater(job, owner, describe(raw)).catch((e) => quietIfRefused(log, e, 'error', 'retry bookkeeping failed'));
      } else {
        log.error({ err: raw }, 'job failed permanently');
        await queue.fail(handler.kind, job, owner, err).catch((e) => log.error({ err: e }, 'failure bookkeeping failed'));
      }
    } finally {
      clearInterval(renewal);
      this.aborts.delete(abort);
    }
    // Done or failed, it holds nothing now: the jobs it held are claimable.
    if (handler.kind.holdsLaterJobs) {
      await queue.wakeWaiting(job.resource_id).catch((err: unknown) => quietIfRefused(log, err, 'warn', 'waking the jobs it held failed (they wait for the next poll)'));
    }
  }
}

/**
 * Logs `err` at `level`, or at debug without its stack when it is a write
 * refused because the state directory is full: the database logs each such
 * episode once, and a worker hits it at every poll.
 */
function quietIfRefused(log: Logger, err: unknown, level: 'warn' | 'error', msg: string): void {
  if (isStateDirectoryUnwritable(err)) log.debug({ code: err.code }, `${msg}: state directory unwritable`);
  else log[level]({ err }, msg);
}
