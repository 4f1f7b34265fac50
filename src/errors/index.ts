/**
 * The error catalogue: every error Basalt raises on purpose has a stable `code`
 * listed here, an HTTP `status`, and a message that is safe to show a client.
 *
 * Exactly one place (the API's fault mapper) turns these into HTTP faults; the
 * job runner uses {@link BasaltError.retryable} to choose between retry and a
 * permanent failure. `docs/errors.md` lists the same codes; a unit test keeps
 * the two equal.
 */

/** Every error code Basalt can produce, with its HTTP status. */
export const ERROR_CATALOGUE = {
  /** A resource id that does not exist for this caller (or is malformed). */
  NOT_FOUND: 404,
  /** A request body, query or header that fails validation. */
  INVALID_INPUT: 400,
  /** The resource is not in a status that allows the operation. */
  INVALID_STATUS: 400,
  /** The request conflicts with what exists (e.g. a name already taken). */
  CONFLICT: 409,
  /** The caller is not allowed to do this. */
  FORBIDDEN: 403,
  /** No usable credentials were presented. */
  UNAUTHORIZED: 401,
  /** The requested microversion is outside the supported range. */
  VERSION_NOT_ACCEPTABLE: 406,
  /** A quota would be exceeded. */
  QUOTA_EXCEEDED: 413,
  /** A storage driver failed; the detail stays in the log. */
  DRIVER_FAILED: 500,
  /** The driver or backend is temporarily unable to serve; the job is retried. */
  BACKEND_UNAVAILABLE: 503,
  /**
   * The compute side (Nova) could not be told of an event: unreachable, too
   * slow, or it refused the event. Only a delivery job fails with it, never the
   * volume's operation.
   */
  COMPUTE_NOTIFY_FAILED: 502,
  /** No backend can hold the volume. */
  NO_VALID_BACKEND: 500,
  /** The identity service (Keystone) cannot validate tokens right now. */
  AUTH_UNAVAILABLE: 503,
  /**
   * The state directory (the SQLite database's filesystem) is full: writes are
   * refused until space is freed, reads keep working. A storage limit reached,
   * as Cinder's 413 `overLimit` says of quotas, with `Retry-After`.
   */
  STATE_DIRECTORY_FULL: 413,
  /**
   * The state directory cannot be written (an I/O error): writes are refused
   * until it can be, reads keep working.
   */
  STATE_DIRECTORY_UNWRITABLE: 503,
  /**
   * The disk of the PostgreSQL database (its data directory or the tablespace
   * holding Basalt's tables) is full (SQLSTATE 53100): writes are refused until
   * space is freed, reads keep working. Answered as {@link STATE_DIRECTORY_FULL} is.
   */
  DATABASE_DISK_FULL: 413,
  /**
   * The PostgreSQL database cannot be reached, or ended the session (a
   * restart, a failover, a network cut): the request was not done, unless it
   * was cut off at its COMMIT, which may have taken effect (`Retry-After`); a
   * job is retried (its steps are idempotent).
   */
  DATABASE_UNAVAILABLE: 503,
  /**
   * The coordination service (etcd) cannot be reached, so a lock could not be
   * taken: the request was not done (`Retry-After`); a job waits for the
   * service without using up its attempts.
   */
  COORDINATION_UNAVAILABLE: 503,
  /**
   * A backup's stored data is missing or fails its checksum: the chunk (or
   * manifest) is named; the backup cannot be restored as it is.
   */
  BACKUP_CORRUPT: 500,
  /** A configuration file or option is wrong. */
  CONFIG_INVALID: 500,
  /** The route exists for another method, or not at this microversion. */
  NOT_IMPLEMENTED: 501,
  /** An unexpected internal failure. */
  INTERNAL: 500,
} as const;

/** One stable error code. */
export type ErrorCode = keyof typeof ERROR_CATALOGUE;

/** Options every {@link BasaltError} accepts. */
export interface BasaltErrorOptions {
  /** The error this one wraps; kept for logs, never shown to clients. */
  cause?: unknown;
  /** Whether a job that hit this error may be retried. Default false. */
  retryable?: boolean;
}

/**
 * The base of every deliberate error. `message` must be safe for end users:
 * it never carries backend output or stack traces.
 */
export class BasaltError extends Error {
  /** Stable code from {@link ERROR_CATALOGUE}. */
  readonly code: ErrorCode;
  /** HTTP status the API answers with. */
  readonly status: number;
  /** Whether the job runner may try again. */
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: BasaltErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = ERROR_CATALOGUE[code];
    this.retryable = options.retryable ?? false;
  }
}

/** A resource does not exist, or the caller may not see it. */
export class NotFoundError extends BasaltError {
  constructor(message: string, options?: BasaltErrorOptions) {
    super('NOT_FOUND', message, options);
  }
  /** The Cinder-shaped message for a missing resource, e.g. "Volume abc could not be found.". */
  static of(kind: string, id: string): NotFoundError {
    return new NotFoundError(`${kind} ${id} could not be found.`);
  }
}

/** Input that fails validation; the message names the field. */
export class InvalidInputError extends BasaltError {
  constructor(message: string, options?: BasaltErrorOptions) {
    super('INVALID_INPUT', message, options);
  }
}

/** The resource's status does not allow the operation (Cinder's InvalidVolume). */
export class InvalidStatusError extends BasaltError {
  constructor(message: string, options?: BasaltErrorOptions) {
    super('INVALID_STATUS', message, options);
  }
}

/** The request conflicts with an existing resource, e.g. a duplicate name. */
export class ConflictError extends BasaltError {
  constructor(message: string, options?: BasaltErrorOptions) {
    super('CONFLICT', message, options);
  }
}

/** The caller lacks the role for the operation. */
export class ForbiddenError extends BasaltError {
  constructor(message = 'Policy does not allow this operation to be performed.', options?: BasaltErrorOptions) {
    super('FORBIDDEN', message, options);
  }
}

/** Missing credentials. */
export class UnauthorizedError extends BasaltError {
  constructor(message = 'Authentication required', options?: BasaltErrorOptions) {
    super('UNAUTHORIZED', message, options);
  }
}

/** A quota would be exceeded. */
export class QuotaExceededError extends BasaltError {
  constructor(message: string, options?: BasaltErrorOptions) {
    super('QUOTA_EXCEEDED', message, options);
  }
}

/**
 * A driver call failed. The message is generic; the driver's own text stays
 * in `cause` and in the log, never in a response or user message.
 */
export class DriverError extends BasaltError {
  constructor(message: string, options?: BasaltErrorOptions) {
    super(options?.retryable ? 'BACKEND_UNAVAILABLE' : 'DRIVER_FAILED', message, options);
  }
}

/**
 * A driver call failed because the backend's storage has no room for it (a
 * Ceph pool full or at its quota). Retryable: room freed or a quota raised
 * lets the next attempt through; a failure for good gets its own user
 * message (the user can act on it), not the generic one.
 */
export class NoRoomError extends DriverError {
  constructor(message: string, options?: Omit<BasaltErrorOptions, 'retryable'>) {
    super(message, { ...options, retryable: true });
  }
}

/** A backup's stored chunk or manifest is missing or fails its check; the message names it. */
export class BackupCorruptError extends BasaltError {
  constructor(message: string, options?: BasaltErrorOptions) {
    super('BACKUP_CORRUPT', message, options);
  }
}

/**
 * No backend passed the scheduler's filters. `rejections` names, per pool, the
 * filter that refused it; it is Basalt's own text (host strings and filter
 * names), so it may be shown to users in the volume's message.
 */
export class NoValidBackendError extends BasaltError {
  constructor(readonly rejections: readonly string[], options?: BasaltErrorOptions) {
    super('NO_VALID_BACKEND', `No valid backend was found. ${rejections.join('; ')}`, options);
  }
}

/** A configuration error; the message names the option and, for files, the line. */
export class ConfigError extends BasaltError {
  constructor(message: string, options?: BasaltErrorOptions) {
    super('CONFIG_INVALID', message, options);
  }
}

/** Where a refused write was to go: SQLite's state directory, or a PostgreSQL server's disk. */
export type WriteRefusalStore = 'state-directory' | 'postgresql';

/** Options of {@link StateDirectoryUnwritableError}. */
export interface StateDirectoryUnwritableErrorOptions extends Omit<BasaltErrorOptions, 'retryable'> {
  /** Where the write was to go; default `state-directory` (SQLite). */
  store?: WriteRefusalStore;
}

/**
 * A write to the database was refused because the filesystem holding it is
 * full or failing: the state directory of the SQLite database (SQLITE_FULL,
 * ENOSPC, EDQUOT; SQLITE_IOERR when it fails to write), or the disk of the
 * PostgreSQL database (SQLSTATE 53100 disk_full; code `DATABASE_DISK_FULL`).
 * Nothing of the refused write remains; reads keep working, and writes work
 * again by themselves once space returns. Retryable: a job that hits it is
 * tried again later. The API answers a full disk with 413 `overLimit`
 * (a storage limit reached, the status Cinder gives an exceeded quota; HTTP
 * allows `Retry-After` on it for a passing condition) and an I/O error with
 * 503 `serviceUnavailable`, both with `Retry-After`.
 */
export class StateDirectoryUnwritableError extends BasaltError {
  /** Whether the filesystem is full (else it failed to write: an I/O error). */
  readonly full: boolean;
  /** Where the write was to go. */
  readonly store: WriteRefusalStore;

  constructor(full: boolean, options: StateDirectoryUnwritableErrorOptions = {}) {
    const { store = 'state-directory', ...rest } = options;
    const [code, message] = store === 'postgresql'
      // (PostgreSQL reports an I/O error as other SQLSTATEs, which stay server errors: only a full disk comes here.)
      ? ['DATABASE_DISK_FULL', 'The disk of Basalt\'s PostgreSQL database is full: writes are refused until space is freed.'] as const
      : full
        ? ['STATE_DIRECTORY_FULL', 'Basalt\'s state directory is full: writes are refused until space is freed.'] as const
        : ['STATE_DIRECTORY_UNWRITABLE', 'Basalt\'s state directory cannot be written (an I/O error): writes are refused until it can be.'] as const;
    super(code, message, { ...rest, retryable: true });
    this.full = full;
    this.store = store;
  }
}

/** Whether `err` is a {@link StateDirectoryUnwritableError} (logged once per episode by the database, so callers log it quietly). */
export function isStateDirectoryUnwritable(err: unknown): err is StateDirectoryUnwritableError {
  return err instanceof StateDirectoryUnwritableError;
}

/** Wraps anything that is not a {@link BasaltError}, keeping it as `cause`: retryable when PostgreSQL ended the transaction (deadlock, serialization failure). */
export function toBasaltError(err: unknown): BasaltError {
  if (err instanceof BasaltError) return err;
  // PostgreSQL ended the transaction to break a deadlock, or could not serialize it: run again, it may pass.
  const sqlState = (err as { code?: unknown } | undefined)?.code;
  if (sqlState === '40P01' || sqlState === '40001') return new BasaltError('INTERNAL', 'The database ended the transaction (a deadlock or a conflict); it may be tried again.', { cause: err, retryable: true });
  return new BasaltError('INTERNAL', 'An unknown error occurred.', { cause: err });
}
