/**
 * The durable job queue in the `jobs` table: enqueue inside the caller's
 * transaction, claim with an expiring lease in one atomic statement, renew,
 * complete, retry with back-off, fail.
 *
 * Job states: `queued` ➜ `running` (leased) ➜ `done` | `failed`; a `running`
 * job whose lease expired is claimable again while it has attempts left.
 */
import { EventEmitter } from 'node:events';
import type { Clock, Foreground } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import { prepared, preparedShapes, withLastSteps, type Db, type JobRow, type Prepared } from '../db/index.ts';
import { BasaltError } from '../errors/index.ts';
import type { AnyJobKind, Enqueue, JobKind, NewJob, Tx } from './job-kind.ts';
import { payloadVersionsOf, targetReaders } from '../services/index.ts';

/** Thrown when a worker acts on a job whose lease another worker now holds. */
export class LeaseLostError extends BasaltError {
  constructor(jobId: string) {
    super('INTERNAL', `Lease of job ${jobId} was lost`, { retryable: false });
  }
}

/** The notification channel of job wake-ups. */
const WAKE_CHANNEL = 'basalt_jobs';

/** Settings of a {@link JobQueue}. */
export interface JobQueueOptions {
  /**
   * Highest payload version this process writes and reads (0: no cap). Set on
   * a process that must behave as the previous release during a rolling upgrade.
   */
  payloadVersionCap?: number;
  /** After how long without a heartbeat a consumer no longer counts for version pinning. */
  serviceDownMs?: number;
  /** Attempts before a job fails for good. */
  maxAttempts: number;
  /** Lease length in ms. */
  leaseMs: number;
  /** First retry delay in ms; doubles per attempt. */
  retryDelayMs: number;
  /** This process's API requests in flight: its workers' claims wait for them (common/foreground.ts). Default: claims never wait. */
  foreground?: Foreground;
}

// Statements every enqueue runs (prepared.ts).
const READERS = prepared<{ binary: string; place: string }>()((q, a) =>
  q.selectFrom('services').select(['payload_versions', 'heartbeat_ms']).where('binary', '=', a('binary')));
const READERS_IN_CLUSTER = prepared<{ binary: string; place: string }>()((q, a) =>
  q.selectFrom('services').select(['payload_versions', 'heartbeat_ms']).where('binary', '=', a('binary')).where('cluster', '=', a('place')));
const READERS_ON_HOST = prepared<{ binary: string; place: string }>()((q, a) =>
  q.selectFrom('services').select(['payload_versions', 'heartbeat_ms']).where('binary', '=', a('binary')).where('host', '=', a('place')));
const INSERT_JOB = prepared<Omit<JobRow, 'deferrals'>>()((q, a) => q.insertInto('jobs').values({
  id: a('id'), kind: a('kind'), payload_version: a('payload_version'), payload: a('payload'), target: a('target'),
  resource_type: a('resource_type'), resource_id: a('resource_id'), state: a('state'), attempts: a('attempts'),
  max_attempts: a('max_attempts'), lease_owner: a('lease_owner'), lease_expires_at: a('lease_expires_at'),
  not_before: a('not_before'), last_error: a('last_error'), request_id: a('request_id'), created_at: a('created_at'), updated_at: a('updated_at'),
}));

const RENEW = prepared<{ id: string; owner: string; lease: number; at: string }>()((q, a) => q.updateTable('jobs')
  .set({ lease_expires_at: a('lease'), updated_at: a('at') })
  .where('id', '=', a('id')).where('lease_owner', '=', a('owner')).where('state', '=', 'running'));
const MARK_DONE = prepared<{ id: string; owner: string; at: string }>()((q, a) => q.updateTable('jobs')
  .set({ state: 'done', lease_owner: null, lease_expires_at: null, updated_at: a('at') })
  .where('id', '=', a('id')).where('lease_owner', '=', a('owner')).where('state', '=', 'running'));

type ClaimArgs = Record<string, string | number>;

/** Claims, prepared per shape (a worker uses two: its kinds, and only the holding ones when it is full). */
const claimShape = preparedShapes<ClaimArgs, JobRow>();

/**
 * The claim of one due job: arguments `now`, `owner`, `lease` (its new
 * expiry), `takeover` (the note a taken-over job gets), `at`, and the lists
 * `t0…` (targets), `k0…` (kinds) and `h0…` (kinds that hold later jobs of their resource).
 *
 * Two kinds of claim, each a single atomic UPDATE:
 * - `queued`: the oldest queued job of ONE target whose time has come. The
 *   `jobs_claim` index (target, state, not_before, created_at) hands out that
 *   target's queue in claim order, so the claim reads from its head and stops
 *   at the first job it may take. (One claim over several targets and both
 *   states had to sort every queued job first: with a burst of a few hundred
 *   creates queued, each claim sorted them all — bench/api profile.)
 * - `expired`: the oldest running job of any of `targets` whose lease ran
 *   out and that has attempts left; running jobs are few (the workers' concurrency).
 */
function claimQuery(postgres: boolean, mode: 'queued' | 'expired', targets: number, kinds: number, holding: number): Prepared<ClaimArgs, JobRow> {
  return claimShape(`${postgres}/${mode}/${targets}/${kinds}/${holding}`, (q, arg) => {
    const a = arg as (name: string) => never;
    const list = (prefix: string, n: number): never[] => Array.from({ length: n }, (_, i) => a(`${prefix}${i}`));
    let due = q.selectFrom('jobs').select('id')
      .where('target', 'in', list('t', targets))
      .where('kind', 'in', list('k', kinds))
      .$if(mode === 'queued', (qb) => qb.where('state', '=', 'queued').where('not_before', '<=', a('now')))
      .$if(mode === 'expired', (qb) => qb.where('state', '=', 'running').where('lease_expires_at', '<', a('now')).whereRef('attempts', '<', 'max_attempts'))
      .$if(holding > 0, (qb) => qb.where((eb) => eb.or([
        eb('jobs.kind', 'in', list('h', holding)),
        // The `jobs_resource` index (resource_id, state) answers this.
        eb.not(eb.exists(eb.selectFrom('jobs as held').select('held.id')
          .whereRef('held.resource_id', '=', 'jobs.resource_id')
          .where('held.state', 'in', ['queued', 'running'])
          .where('held.kind', 'in', list('h', holding))
          .whereRef('held.created_at', '<=', 'jobs.created_at'))),
      ])))
      .orderBy('not_before').orderBy('created_at')
      .limit(1);
    // PostgreSQL: SKIP LOCKED lets concurrent claimers pass over each other's
    // candidate; the outer conditions repeat the due test, so a row another
    // claimer took meanwhile is not taken twice.
    if (postgres) due = due.forUpdate().skipLocked();
    return q.updateTable('jobs')
      .set((eb) => ({
        state: 'running',
        lease_owner: a('owner'),
        lease_expires_at: a('lease'),
        attempts: eb('attempts', '+', 1),
        last_error: eb.case().when('state', '=', 'running').then(a('takeover')).else(eb.ref('last_error')).end(),
        updated_at: a('at'),
      }))
      .where('id', '=', due)
      .$if(mode === 'queued', (qb) => qb.where('state', '=', 'queued').where('not_before', '<=', a('now')))
      .$if(mode === 'expired', (qb) => qb.where('state', '=', 'running').where('lease_expires_at', '<', a('now')))
      .returningAll();
  });
}

/** Most times a retry's delay doubles: at most 64 times `job_retry_delay_seconds` (64 s by default). */
export const MAX_BACKOFF_DOUBLINGS = 6;

/** Most times a deferral's delay doubles ({@link JobQueue.deferLater}): at most 8 times `job_retry_delay_seconds`. */
export const MAX_DEFERRAL_DOUBLINGS = 3;

/**
 * Whether `err` says that Basalt's own database or coordination service could
 * not be reached: the job waits for it without using up its attempts.
 */
export function isOutage(err: BasaltError): boolean {
  return err.code === 'DATABASE_UNAVAILABLE' || err.code === 'COORDINATION_UNAVAILABLE';
}

/** How long a claim that finds queued jobs may go without looking for expired leases. */
const EXPIRED_CHECK_MS = 1000;

/**
 * How long a claim that finds no queued job may go without looking for
 * expired leases: an idle worker takes a job over within this of its poll,
 * and a burst of wake-ups does not pay an empty UPDATE for each.
 */
const EXPIRED_IDLE_CHECK_MS = 100;

/** The queue over one database. One per process. */
export class JobQueue {
  /**
   * Emits `wake` with a target after a transaction that enqueued for it
   * commits, and the set of kinds it enqueued (absent when not known: a
   * release of held jobs, another process's notice).
   */
  readonly wakeups = new EventEmitter();
  /** Jobs this process took over from a worker whose lease ran out (a crash, a stall): `/metrics` counts them. */
  takeovers = 0;
  /** Where the next claim starts among its targets. */
  #nextTarget = 0;
  /** When expired leases were last looked for, per list of targets. */
  readonly #expiredChecked = new Map<string, number>();

  constructor(readonly db: Db, readonly clock: Clock, readonly options: JobQueueOptions) {
    this.wakeups.setMaxListeners(0);
  }

  /**
   * Runs `fn` in one transaction with an `enqueue` bound to it; after commit,
   * wakes this process's workers for the targets it enqueued for.
   *
   * Inside `fn`, query only through `tx`: on SQLite the transaction holds the
   * one connection, so a query through the outer database handle waits for it
   * forever.
   */
  async transaction<T>(fn: (tx: Tx, enqueue: Enqueue) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      /** Each target enqueued for, with the kinds enqueued for it. */
      const targets = new Map<string, Set<string>>();
      /** Jobs due later: their targets are woken when they are due. */
      const later: Array<{ target: string; notBefore: number }> = [];
      const body = (tx: Tx) => fn(tx, (kind, job) => {
        let kinds = targets.get(job.target);
        if (!kinds) targets.set(job.target, kinds = new Set());
        kinds.add(kind.kind);
        if (job.notBefore !== undefined) later.push({ target: job.target, notBefore: job.notBefore });
        return this.insert(tx, kind, job);
      });
      try {
        // SQLite runs one transaction at a time. PostgreSQL runs them at READ
        // COMMITTED: single conditional UPDATEs (status compare-and-swap, quota
        // within limit) are atomic there, and a check that spans statements
        // takes the row lock of what it guards first (Db.lockRows).
        // Quota usage changes go last (last-steps.ts): the project's usage rows stay locked only to the commit.
        const result = await this.db.kysely.transaction().execute((tx) => withLastSteps(tx, () => body(tx)));
        for (const [t, kinds] of targets) {
          this.wakeups.emit('wake', t, kinds);
          // Other processes on PostgreSQL hear it through LISTEN (see listenForWakeups).
          if (this.db.dialect === 'postgres') void this.db.notify(WAKE_CHANNEL, t).catch(() => undefined);
        }
        for (const { target, notBefore } of later) this.wakeWhenDue(target, notBefore);
        return result;
      } catch (err) {
        // A deadlock (or a serialization failure) ends one transaction of the
        // pair: run it again after a jittered exponential back-off (capped at 100 ms).
        if (attempt >= 100 || !isSerializationFailure(err)) throw err;
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(100, 2 ** attempt)));
      }
    }
  }

  /**
   * The payload version to write for `kind` to `target`: the newest that every
   * live consumer of the target understands (each service row lists what its
   * code reads), never above this process's cap nor below the kind's minimum.
   * This is what lets release N and N-1 run side by side.
   */
  async pinnedVersion(tx: Tx, kind: AnyJobKind, target: string): Promise<number> {
    let version = kind.version;
    const cap = this.options.payloadVersionCap ?? 0;
    if (cap > 0) version = Math.min(version, cap);
    const downMs = this.options.serviceDownMs ?? 60_000;
    const readers = targetReaders(target);
    if (!readers) return Math.max(version, kind.minVersion);
    const rows = 'cluster' in readers ? await READERS_IN_CLUSTER.all(tx, { binary: readers.binary, place: readers.cluster })
      : 'host' in readers ? await READERS_ON_HOST.all(tx, { binary: readers.binary, place: readers.host })
      : await READERS.all(tx, { binary: readers.binary, place: '' });
    for (const row of rows) {
      if (Number(row.heartbeat_ms) < this.clock.now() - downMs) continue;
      const understood = payloadVersionsOf(row)[kind.kind];
      if (understood !== undefined) version = Math.min(version, understood);
    }
    return Math.max(version, kind.minVersion);
  }

  private async insert<P>(tx: Tx, kind: JobKind<P>, job: NewJob<P>): Promise<string> {
    const now = this.clock.now();
    const id = newId();
    const version = await this.pinnedVersion(tx, kind, job.target);
    const payload = version === kind.version || !kind.encode ? job.payload : kind.encode(job.payload, version);
    await INSERT_JOB.run(tx, {
      id,
      kind: kind.kind,
      payload_version: version,
      payload: JSON.stringify(payload),
      target: job.target,
      resource_type: kind.resourceType,
      resource_id: job.resourceId,
      state: 'queued',
      attempts: 0,
      max_attempts: kind.maxAttempts ?? this.options.maxAttempts,
      lease_owner: null,
      lease_expires_at: null,
      not_before: job.notBefore ?? now,
      last_error: null,
      request_id: job.requestId ?? null,
      created_at: isoAt(now),
      updated_at: isoAt(now),
    });
    return id;
  }

  /**
   * Wakes the workers of the targets with jobs of `resourceId` queued: called
   * when a job of a kind that holds later jobs has finished, since a claim it
   * held back is tried again only at a wake-up or the next poll.
   */
  async wakeWaiting(resourceId: string): Promise<void> {
    const rows = await this.db.kysely.selectFrom('jobs').select('target').distinct()
      .where('resource_id', '=', resourceId).where('state', '=', 'queued').execute();
    for (const { target } of rows) {
      this.wakeups.emit('wake', target);
      if (this.db.dialect === 'postgres') await this.db.notify(WAKE_CHANNEL, target);
    }
  }

  /**
   * Wakes this process's workers when another process enqueues for their
   * targets (PostgreSQL LISTEN/NOTIFY; SQLite workers poll). Returns a stop function.
   */
  async listenForWakeups(): Promise<() => Promise<void>> {
    return this.db.listen(WAKE_CHANNEL, (target) => this.wakeups.emit('wake', target));
  }

  /**
   * Claims a due job for one of `targets` and `kinds`: a running one whose
   * lease expired and that has attempts left (the oldest), or the oldest
   * queued job whose time has come of one target, trying the targets in turn
   * from a different one at each claim (so no target's queue starves
   * another's). Each try is one atomic UPDATE. Expired leases are looked for
   * when no queued job is due (at most every {@link EXPIRED_IDLE_CHECK_MS}),
   * and at least every {@link EXPIRED_CHECK_MS} before the queued ones: a busy queue delays a take-over by at most that.
   * Returns undefined when there is none.
   * A job of another kind than `holding` waits while a job of a `holding`
   * kind of its resource, created before it (or in the same millisecond), is
   * queued or running ({@link JobKind.holdsLaterJobs}).
   */
  async claim(owner: string, targets: readonly string[], kinds: readonly string[], holding: readonly string[] = [], queuedTargets: readonly string[] = targets): Promise<JobRow | undefined> {
    if (targets.length === 0 || kinds.length === 0) return undefined;
    const now = this.clock.now();
    // A job still running had a worker whose lease ran out: the row says so (and the answer tells this claim it took one over).
    const takeover = `lease ran out; taken over by ${owner} at ${isoAt(now)}`;
    const args: Record<string, string | number> = { now, owner, lease: now + this.options.leaseMs, takeover, at: isoAt(now) };
    kinds.forEach((x, i) => { args[`k${i}`] = x; });
    holding.forEach((x, i) => { args[`h${i}`] = x; });
    const postgres = this.db.dialect === 'postgres';
    const key = targets.join('\n');
    const expired = async (): Promise<JobRow | undefined> => {
      this.#expiredChecked.set(key, now);
      targets.forEach((x, i) => { args[`t${i}`] = x; });
      const claimed = await claimQuery(postgres, 'expired', targets.length, kinds.length, holding.length).first(this.db.kysely, args);
      if (claimed?.last_error === takeover) this.takeovers++;
      return claimed;
    };
    const checkFirst = now - (this.#expiredChecked.get(key) ?? -Infinity) >= EXPIRED_CHECK_MS;
    if (checkFirst) {
      const claimed = await expired();
      if (claimed) return claimed;
    }
    const queued = claimQuery(postgres, 'queued', 1, kinds.length, holding.length);
    const first = this.#nextTarget++ % Math.max(1, queuedTargets.length);
    for (let i = 0; i < queuedTargets.length; i++) {
      args.t0 = queuedTargets[(first + i) % queuedTargets.length]!;
      const claimed = await queued.first(this.db.kysely, args);
      if (claimed) return claimed;
    }
    const idleCheck = now - (this.#expiredChecked.get(key) ?? -Infinity) >= EXPIRED_IDLE_CHECK_MS;
    return idleCheck ? expired() : undefined;
  }

  /** Extends the lease; false when `owner` no longer holds the job. */
  async renew(jobId: string, owner: string): Promise<boolean> {
    const now = this.clock.now();
    const r = await RENEW.run(this.db.kysely, { id: jobId, owner, lease: now + this.options.leaseMs, at: isoAt(now) });
    return Number(r.numAffectedRows ?? 0) > 0;
  }

  /**
   * Marks the job done inside `tx` if `owner` still holds it.
   * @throws LeaseLostError otherwise (so the caller's transaction rolls back).
   */
  async markDone(tx: Tx, jobId: string, owner: string): Promise<void> {
    const now = this.clock.now();
    const r = await MARK_DONE.run(tx, { id: jobId, owner, at: isoAt(now) });
    if (Number(r.numAffectedRows ?? 0) === 0) throw new LeaseLostError(jobId);
  }

  /**
   * Puts a job back in the queue after a transient failure, with exponential
   * back-off: the first delay doubled with each attempt, up to
   * {@link MAX_BACKOFF_DOUBLINGS} times. Attempts count takeovers too (a
   * runner that died), so without the bound a job that outlived a few runners
   * and then met a transient error waited hours.
   */
  async retryLater(job: JobRow, owner: string, error: string): Promise<boolean> {
    const now = this.clock.now();
    const delay = this.options.retryDelayMs * 2 ** Math.min(MAX_BACKOFF_DOUBLINGS, Math.max(0, job.attempts - 1));
    const r = await this.db.kysely.updateTable('jobs')
      .set({ state: 'queued', lease_owner: null, lease_expires_at: null, not_before: now + delay, last_error: error, updated_at: isoAt(now) })
      .where('id', '=', job.id).where('lease_owner', '=', owner).where('state', '=', 'running')
      .executeTakeFirst();
    if (r.numUpdatedRows === 0n) return false;
    this.wakeWhenDue(job.target, now + delay);
    return true;
  }

  /**
   * Puts a job back in the queue because Basalt's own database or
   * coordination service could not be reached ({@link isOutage}): the run
   * did not get to do its work, so the attempt its claim counted is given
   * back. Its delay doubles with each deferral up to
   * {@link MAX_DEFERRAL_DOUBLINGS} times (8 s by default), so that the queue
   * moves again soon after the service returns, however long it was away.
   */
  async deferLater(job: JobRow, owner: string, error: string): Promise<boolean> {
    const now = this.clock.now();
    const delay = this.options.retryDelayMs * 2 ** Math.min(MAX_DEFERRAL_DOUBLINGS, job.deferrals);
    const r = await this.db.kysely.updateTable('jobs')
      .set((eb) => ({
        state: 'queued', lease_owner: null, lease_expires_at: null, not_before: now + delay, last_error: error, updated_at: isoAt(now),
        attempts: eb('attempts', '-', 1), deferrals: eb('deferrals', '+', 1),
      }))
      .where('id', '=', job.id).where('lease_owner', '=', owner).where('state', '=', 'running')
      .executeTakeFirst();
    if (r.numUpdatedRows === 0n) return false;
    this.wakeWhenDue(job.target, now + delay);
    return true;
  }

  /**
   * Wakes this process's workers for `target` when a job this process queued
   * for later (a retry, a delayed job) is due, instead of at the first poll
   * after it: the poll is then only for other processes' jobs and expired leases.
   */
  private wakeWhenDue(target: string, dueAt: number): void {
    // Capped: setTimeout fires at once past 2^31-1 ms. A wake before the job is due finds nothing to claim.
    const delay = Math.min(Math.max(0, dueAt - this.clock.now()), 2 ** 31 - 1);
    setTimeout(() => this.wakeups.emit('wake', target), delay).unref();
  }

  /**
   * Fails a job for good and lets its kind put the resource into its error
   * status, in one transaction. `owner` null means "whoever held it" (the
   * sweeper failing an expired job); then only an expired lease is taken.
   * Returns false when the job was not in a state to fail (someone else acted).
   */
  async fail(kind: AnyJobKind, job: JobRow, owner: string | null, error: BasaltError): Promise<boolean> {
    const now = this.clock.now();
    return this.transaction(async (tx) => {
      let q = tx.updateTable('jobs')
        .set({ state: 'failed', lease_owner: null, lease_expires_at: null, last_error: describe(error), updated_at: isoAt(now) })
        .where('id', '=', job.id).where('state', '=', 'running');
      q = owner === null ? q.where('lease_expires_at', '<', now) : q.where('lease_owner', '=', owner);
      const r = await q.executeTakeFirst();
      if (r.numUpdatedRows === 0n) return false;
      let payload: unknown;
      try {
        payload = kind.parse(JSON.parse(job.payload), job.payload_version);
      } catch {
        payload = JSON.parse(job.payload);
      }
      await kind.onFailure(tx, payload, job, error);
      return true;
    });
  }

  /** Running jobs whose lease expired with no attempts left: the sweeper fails them. */
  async exhausted(): Promise<JobRow[]> {
    const now = this.clock.now();
    return this.db.kysely.selectFrom('jobs').selectAll()
      .where('state', '=', 'running').where('lease_expires_at', '<', now)
      .where((eb) => eb('attempts', '>=', eb.ref('max_attempts')))
      .execute();
  }

  /**
   * Expires at once the leases held by a dead process incarnation (found
   * through the `services` row it left), optionally only for one resource, so
   * its jobs are taken over now rather than when the lease would have run out.
   */
  async releaseLeasesOf(deadOwner: string, only: { resourceId?: string; resourceType?: string } = {}): Promise<number> {
    let q = this.db.kysely.updateTable('jobs')
      .set({ lease_expires_at: 0 })
      .where('state', '=', 'running').where('lease_owner', '=', deadOwner).where('lease_expires_at', '>', 0);
    if (only.resourceId !== undefined) q = q.where('resource_id', '=', only.resourceId);
    if (only.resourceType !== undefined) q = q.where('resource_type', '=', only.resourceType);
    const r = await q.executeTakeFirst();
    // The next claim looks for them before any queued job.
    this.#expiredChecked.clear();
    return Number(r.numUpdatedRows);
  }

  /**
   * Moves unfinished jobs from target `from` to target `to` (e.g. a dead
   * member's own work back to its cluster), optionally only one resource's or
   * one kind of resource's. Returns how many moved.
   */
  async retarget(from: string, to: string, only: { resourceId?: string; resourceType?: string } = {}): Promise<number> {
    let q = this.db.kysely.updateTable('jobs').set({ target: to })
      .where('target', '=', from).where('state', 'in', ['queued', 'running']);
    if (only.resourceId !== undefined) q = q.where('resource_id', '=', only.resourceId);
    if (only.resourceType !== undefined) q = q.where('resource_type', '=', only.resourceType);
    return Number((await q.executeTakeFirst()).numUpdatedRows);
  }

  /** Deletes finished jobs older than `ageMs`. */
  async prune(ageMs: number): Promise<void> {
    const before = isoAt(this.clock.now() - ageMs);
    await this.db.kysely.deleteFrom('jobs')
      .where('state', 'in', ['done', 'failed']).where('updated_at', '<', before)
      .execute();
  }
}

/** PostgreSQL's "could not serialize" and deadlock errors: the transaction may simply be run again. */
function isSerializationFailure(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code;
  return code === '40001' || code === '40P01';
}

/** Log-safe one-line description of an error, kept in `jobs.last_error` (never shown to users). */
export function describe(err: unknown): string {
  if (err instanceof Error) {
    // The sweeper's cause is the job's last error as stored (a string).
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : typeof err.cause === 'string' ? `: ${err.cause}` : '';
    return `${err.name}: ${err.message}${cause}`.slice(0, 2000);
  }
  return String(err).slice(0, 2000);
}
