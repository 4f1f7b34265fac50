/**
 * The backup target contract: where a backup repository keeps its objects
 * (chunks and manifests). A target is a flat store of immutable objects under
 * `/`-separated keys — a directory (`posix`) or an S3 bucket (`s3`) — and
 * knows nothing of volumes, chunks or manifests; the repository above it
 * ({@link BackupRepository}) gives the objects their meaning.
 *
 * Every method is documented under the same headings as the volume driver's
 * (`src/drivers/volume-driver.ts`). Common to all:
 * - Preconditions: `key` is 1–512 characters of `[A-Za-z0-9._/-]`, with no
 *   empty, `.` or `..` segment (the repository checks; a target may trust it).
 * - Errors: `DriverError` with `retryable: true` (code `BACKEND_UNAVAILABLE`)
 *   when the target cannot be reached or is full, so that the job retries and
 *   reuses the objects already stored; `DriverError` otherwise.
 *
 * Calls may run concurrently, on the same key included.
 */

/** A place that stores a backup repository's objects. */
export interface BackupTarget {
  /** The target's kind, as the configuration names it (`posix`, `s3`). */
  readonly kind: string;
  /** Where it is, for messages and logs: a directory, or `s3://bucket/prefix`. No secret. */
  readonly location: string;

  /**
   * Stores an object.
   * - When: a chunk not stored yet; a backup's manifest, once all its chunks are.
   * - Postconditions: once it resolves, `get` returns exactly `data` and the
   *   object survives a crash of the process and of the machine (it was
   *   flushed); a reader never sees part of it (written aside, then renamed
   *   or committed in one request).
   * - Idempotency: storing the same key again replaces it (the repository
   *   only does so with the same bytes).
   */
  put(key: string, data: Buffer): Promise<void>;

  /**
   * The bytes of an object, or `undefined` when there is none.
   * - When: a restore, a verify, an incremental backup reading its parent's manifest.
   * - Idempotency: read-only.
   */
  get(key: string): Promise<Buffer | undefined>;

  /**
   * Whether an object exists.
   * - When: before storing a chunk, to store each one once.
   * - Idempotency: read-only.
   */
  has(key: string): Promise<boolean>;

  /**
   * Removes an object.
   * - When: a backup's deletion (its manifest first, then the chunks no other
   *   backup names).
   * - Idempotency: removing a missing object succeeds.
   */
  delete(key: string): Promise<void>;

  /**
   * The keys of every object whose key starts with `prefix` (a whole number
   * of segments ending in `/`), in no particular order.
   * - When: deleting a backup (which chunks are still named), clean-up of a
   *   backup cut short.
   * - Idempotency: read-only.
   */
  list(prefix: string): Promise<string[]>;
}

/** Whether `key` is a key a target must accept (see the common preconditions). */
export function isValidObjectKey(key: string): boolean {
  return /^[A-Za-z0-9._/-]{1,512}$/.test(key) && key.split('/').every((s) => s !== '' && s !== '.' && s !== '..');
}
