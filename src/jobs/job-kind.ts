/**
 * What a kind of job is: its payload schema and version, and what a permanent
 * failure does to the resource. Handlers (the code that does the work) are
 * registered separately by the role that runs them; kinds are known to every
 * role, so that any process's sweeper can fail any job.
 */
import type { Logger } from 'pino';
import type { JobRow, Tx } from '../db/index.ts';
import type { BasaltError } from '../errors/index.ts';

/** A database handle that may be a transaction (defined with the schema; re-exported for the roles). */
export type { Tx } from '../db/index.ts';

/** Adds a job inside the caller's transaction. */
export type Enqueue = <P>(kind: JobKind<P>, job: NewJob<P>) => Promise<string>;

/** What a writer says about a new job. */
export interface NewJob<P> {
  payload: P;
  /** `scheduler` or `volume:<cluster>`. */
  target: string;
  resourceId: string;
  requestId?: string | null;
  /** Earliest start, epoch ms. Default: now. */
  notBefore?: number;
}

/** The declaration of one job kind. */
export interface JobKind<P> {
  /** Stable name, e.g. `volume.create`. */
  readonly kind: string;
  /** The payload version this code writes. */
  readonly version: number;
  /** The oldest payload version this code still reads (N-1 for rolling upgrades). */
  readonly minVersion: number;
  /** `volume`, … : the resource the job changes. */
  readonly resourceType: string;
  /**
   * Whether later jobs of the same resource wait until this one has finished
   * (done or failed): they are not claimed while it is queued or running. Jobs
   * of kinds that hold later jobs do not wait for each other. E.g. a fence: no
   * work on a volume starts while a write of a detached host may still land.
   * Default false.
   */
  readonly holdsLaterJobs?: boolean;
  /**
   * Attempts before a job of this kind fails for good. Default: the queue's
   * (`job_max_attempts`). A delivery to a party outside Basalt sets its own:
   * the party may be down far longer than a backend hiccups.
   */
  readonly maxAttempts?: number;
  /**
   * Writes `payload` in the shape of an older `version` (from `minVersion`),
   * for consumers that do not read the current one yet. Default: the payload
   * as it is (the shape did not change).
   */
  encode?(payload: P, version: number): unknown;
  /**
   * Validates a stored payload of `version` and upgrades it to the current shape.
   * @throws Error for a payload this code cannot read (the job then fails permanently).
   */
  parse(payload: unknown, version: number): P;
  /**
   * Called once, in the transaction that marks the job failed, when it failed
   * permanently or ran out of attempts. Puts the resource into its error status
   * and records a user message. Touches only the database: it may run in any
   * role's sweeper, where no driver exists.
   */
  onFailure(tx: Tx, payload: P, job: JobRow, error: BasaltError): Promise<void>;
}

/** Given to a handler for the run of one job. */
export interface JobContext {
  readonly job: JobRow;
  /** Aborted when the lease is lost or the worker is stopping. */
  readonly signal: AbortSignal;
  readonly log: Logger;
  /**
   * Runs `fn` and marks the job done in one transaction. Every handler ends
   * with this, so that its last database change and the job's completion are
   * atomic (a crash before it re-runs the job; a crash after it leaves nothing).
   * @throws LeaseLostError if another worker now holds the job (the transaction rolls back).
   */
  complete(fn?: (tx: Tx, enqueue: Enqueue) => Promise<void>): Promise<void>;
}

/** The code that does one kind of job. Must be idempotent: it may run again after a crash. */
export interface JobHandler<P> {
  readonly kind: JobKind<P>;
  run(ctx: JobContext, payload: P): Promise<void>;
}

/** Erases the payload type for registries. */
export type AnyJobKind = JobKind<any>; // eslint-disable-line @typescript-eslint/no-explicit-any
export type AnyJobHandler = JobHandler<any>; // eslint-disable-line @typescript-eslint/no-explicit-any
