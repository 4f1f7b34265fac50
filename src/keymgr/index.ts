/**
 * Key managers: the keys of encrypted volumes. `openKeyManager` builds the one
 * `[key_manager] backend` names; `copyKey` is how a clone gets its own key.
 */
import type { KeyManagerOptions } from '../config/index.ts';
import { FixedKeyManager } from './fixed-key-manager.ts';
import type { KeyContext, KeyManager } from './key-manager.ts';

export * from './key-manager.ts';
export { FIXED_KEY_ID, FixedKeyManager } from './fixed-key-manager.ts';

/**
 * The key manager the configuration names.
 * @throws ConfigError for a malformed key.
 */
export function openKeyManager(options: KeyManagerOptions): KeyManager {
  // `backend` has one choice today; the config schema refuses others.
  return new FixedKeyManager(options.fixed_key);
}

/**
 * A new key id holding the same key as `keyId`: what a clone or a volume made
 * from a snapshot gets, so that deleting one volume's key leaves the other
 * readable (Cinder's rule: key ids are never shared between volumes).
 * @throws KeyNotFoundError, KeyManagerError.
 */
export async function copyKey(keys: KeyManager, ctx: KeyContext, keyId: string): Promise<string> {
  return keys.storeKey(ctx, await keys.getKey(ctx, keyId));
}
