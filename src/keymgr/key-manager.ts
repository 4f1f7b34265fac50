/**
 * The key manager contract: where the keys of encrypted volumes live.
 *
 * Basalt never encrypts data itself. A volume of an encrypted type (one with an
 * encryption spec) is encrypted by whoever attaches it — the compute host, for
 * `control_location = front-end` — with a key it fetches from the same key
 * manager by the volume's key id (`GET /volumes/{id}/encryption` gives the id).
 * Basalt's part is the key's lifecycle: a key is created (or copied) when the
 * volume is created, and deleted when the volume is.
 *
 * The shape follows the Castellan key manager interface Cinder and Nova share
 * (`create_key`, `store`, `get`, `delete`), so a Barbican-backed manager can
 * implement it later: `createKey` is Barbican's "order a symmetric key",
 * `storeKey` "store a secret", `getKey` "get a secret's payload", `deleteKey`
 * "delete a secret".
 *
 * Lifecycle of one key:
 *
 *     createKey (volume create) ──▶ getKey* (attach, on the compute side) ──▶ deleteKey (volume delete)
 *     storeKey(getKey(id)) (clone, volume from snapshot) ─┘
 *
 * Every method may be called again after a crash (the job that called it is
 * retried), so each states its idempotency.
 */
import { InvalidInputError, NotFoundError, type BasaltErrorOptions } from '../errors/index.ts';

/** Who a key is made for or asked about: the project owning the volume. */
export interface KeyContext {
  /** The project that owns the volume (a per-project manager scopes its keys to it). */
  readonly projectId: string;
}

/** A symmetric key, as a key manager hands it out. */
export interface SymmetricKey {
  /** The algorithm the key is meant for, e.g. `AES` (the cipher spec's first word, upper-cased). */
  readonly algorithm: string;
  /** Length of `bytes` in bits. */
  readonly lengthBits: number;
  /** The key material. */
  readonly bytes: Buffer;
}

/** What a new key is for: from the volume type's encryption spec. */
export interface KeyRequest {
  /** The cipher spec's first word, e.g. `aes` of `aes-xts-plain64`. */
  readonly algorithm: string;
  /** The spec's `key_size` in bits; null when the spec leaves it to the provider. */
  readonly lengthBits: number | null;
}

/**
 * A key manager. Implementations are named by `[key_manager] backend`; the
 * only one today is the fixed-key manager ({@link FixedKeyManager}).
 */
export interface KeyManager {
  /** The `[key_manager] backend` value that selects it. */
  readonly name: string;
  /**
   * Whether each volume gets a key of its own. When false every key id names
   * the same key (the fixed-key manager), so deleting one volume's key must
   * not delete anything, and the key id says nothing worth showing (Cinder
   * hides the fixed key's id in volume views).
   */
  readonly hasKeyPerVolume: boolean;

  /**
   * Creates a key for a new volume of an encrypted type and returns its id.
   *
   * - When called: in the API's create request, before the volume row is written.
   * - Preconditions: the type has an encryption spec.
   * - Postconditions: `getKey(id)` returns the key.
   * - Idempotency: none needed; a request that fails later leaves an unused key
   *   behind (a per-volume manager should sweep keys no volume names).
   * @throws KeyManagerError when no key can be made (e.g. no key configured).
   */
  createKey(ctx: KeyContext, request: KeyRequest): Promise<string>;

  /**
   * Stores a copy of `key` under a new id and returns that id: a clone, or a
   * volume made from a snapshot, gets its own copy of its source's key (so
   * deleting either volume leaves the other readable).
   *
   * - Idempotency: as `createKey`.
   * @throws KeyManagerError when the manager cannot hold arbitrary keys (the
   *   fixed-key manager stores only its own key).
   */
  storeKey(ctx: KeyContext, key: SymmetricKey): Promise<string>;

  /**
   * The key with id `keyId`.
   * @throws KeyNotFoundError when there is no such key.
   */
  getKey(ctx: KeyContext, keyId: string): Promise<SymmetricKey>;

  /**
   * Deletes the key with id `keyId`: called when the volume naming it is
   * deleted, after its storage is gone. Deleting a key that does not exist
   * succeeds (the job may run again after a crash).
   * Default for a manager without per-volume keys: nothing is deleted.
   * @throws KeyManagerError when the manager cannot be reached (the job retries).
   */
  deleteKey(ctx: KeyContext, keyId: string): Promise<void>;
}

/**
 * A key manager failed or refused (Cinder answers these with a terse 400,
 * "Key manager error"). The message is safe to show; the cause is logged only.
 */
export class KeyManagerError extends InvalidInputError {
  constructor(message: string, options?: BasaltErrorOptions) {
    super(`Invalid input received: Key manager error: ${message}`, options);
  }
}

/** No key has the id asked for. */
export class KeyNotFoundError extends NotFoundError {
  constructor(readonly keyId: string) {
    super(`Key ${keyId} could not be found.`);
  }
}

/**
 * The passphrase a compute host gives QEMU's (or cryptsetup's) LUKS layer for
 * `key`: the key bytes as lowercase hex, as Nova does for volumes it attaches
 * with QEMU's native LUKS driver.
 */
export function luksPassphrase(key: SymmetricKey): string {
  return key.bytes.toString('hex');
}
