/**
 * The fixed-key manager: one key, read from `[key_manager] fixed_key` (hex),
 * in the shape of Cinder's `ConfKeyManager`. Every encrypted volume gets the
 * same key id, {@link FIXED_KEY_ID}, and so the same key.
 *
 * What it protects: data at rest on the storage (a lost or stolen disk, a
 * backend copy) and on the wire between the compute host and the export, as
 * long as the configuration file holding the key is not stored with the data.
 * What it does not: once the one key is known, every volume encrypted with it
 * can be read. It is for tests and single-operator deployments; a production
 * cloud wants a key per volume from a real key store (Barbican).
 */
import { ConfigError } from '../errors/index.ts';
import { KeyManagerError, KeyNotFoundError, type KeyContext, type KeyManager, type KeyRequest, type SymmetricKey } from './key-manager.ts';

/** The id of the fixed key (Cinder's and Nova's constant: both sides must agree on it). */
export const FIXED_KEY_ID = '00000000-0000-0000-0000-000000000000';

/** A key manager holding one configured key. */
export class FixedKeyManager implements KeyManager {
  readonly name = 'fixed';
  readonly hasKeyPerVolume = false;
  private readonly key: SymmetricKey | undefined;

  /**
   * @param fixedKeyHex `[key_manager] fixed_key`: the key as hex; empty means no key (encrypted volumes are then refused).
   * @throws ConfigError when the key is not hex.
   */
  constructor(fixedKeyHex: string) {
    if (fixedKeyHex === '') return;
    if (!/^([0-9a-fA-F]{2})+$/.test(fixedKeyHex)) {
      throw new ConfigError('Option fixed_key in [key_manager] must be an even number of hex digits');
    }
    const bytes = Buffer.from(fixedKeyHex, 'hex');
    this.key = { algorithm: 'AES', lengthBits: bytes.length * 8, bytes };
  }

  /** Returns {@link FIXED_KEY_ID}: there is one key. @throws KeyManagerError when no key is configured. */
  async createKey(_ctx: KeyContext, _request: KeyRequest): Promise<string> {
    this.configured();
    return FIXED_KEY_ID;
  }

  /** Accepts only the fixed key itself (a clone's copy of it). @throws KeyManagerError for any other key. */
  async storeKey(_ctx: KeyContext, key: SymmetricKey): Promise<string> {
    if (!this.configured().bytes.equals(key.bytes)) throw new KeyManagerError('the fixed-key manager cannot store other keys.');
    return FIXED_KEY_ID;
  }

  /** The configured key. @throws KeyNotFoundError for any other id; KeyManagerError when no key is configured. */
  async getKey(_ctx: KeyContext, keyId: string): Promise<SymmetricKey> {
    if (keyId !== FIXED_KEY_ID) throw new KeyNotFoundError(keyId);
    return this.configured();
  }

  /** Deletes nothing: the one key is shared by every encrypted volume. */
  async deleteKey(_ctx: KeyContext, _keyId: string): Promise<void> {}

  private configured(): SymmetricKey {
    if (!this.key) throw new KeyManagerError('no key is configured for encrypted volumes.');
    return this.key;
  }
}
