/**
 * Encryption of new volumes: which key a volume of an encrypted type gets, and
 * which copies are refused. Basalt stores and serves ciphertext only; the host
 * that attaches the volume encrypts (see src/keymgr).
 */
import type { TypeEncryptionRepository, VolumeType } from '../db/index.ts';
import { InvalidInputError } from '../errors/index.ts';
import type { Tx } from '../jobs/index.ts';
import { copyKey, type KeyContext, type KeyManager } from '../keymgr/index.ts';

/** What {@link keyForNewVolume} needs. */
export interface VolumeEncryptionDeps {
  typeEncryption: TypeEncryptionRepository;
  keys: KeyManager;
}

/** The source of a copy: its type and key id. */
export interface CopySource {
  kind: 'snapshot' | 'source volume';
  typeId: string | null;
  encryptionKeyId: string | null;
}

/**
 * The key id a new volume of `type` gets, or null for an unencrypted type:
 * a new key, or for a copy of an encrypted volume (clone, volume from a
 * snapshot) a copy of its source's key, so each volume's key can be deleted
 * with it (Cinder's rule). Holds the type's row (shared) to the end of `tx`,
 * so the spec cannot change before the volume row is written.
 * @throws InvalidInputError when a copy would change how the data is
 *   encrypted, the type is both encrypted and multiattach, or its spec has
 *   no cipher to make a key for; KeyManagerError,
 *   KeyNotFoundError from the key manager.
 */
export async function keyForNewVolume(deps: VolumeEncryptionDeps, tx: Tx, ctx: KeyContext, type: VolumeType, source: CopySource | undefined, multiattach: boolean): Promise<string | null> {
  await deps.typeEncryption.lockType(tx, type.id, 'share');
  if (source && !(await deps.typeEncryption.sameEncryption(tx, source.typeId, type.id))) {
    // The copy's data is the source's: read through another encryption layer it is garbage.
    const hint = source.kind === 'snapshot' ? 'recommend omitting the type argument' : 'either match source volume, or omit type argument';
    throw new InvalidInputError(`Invalid input received: Invalid volume_type provided: ${type.id} (requested type is not compatible; ${hint}).`);
  }
  const spec = await deps.typeEncryption.get(tx, type.id);
  if (!spec) return null;
  if (multiattach) throw new InvalidInputError('Invalid input received: Multiattach cannot be used with encrypted volumes.');
  if (source?.encryptionKeyId) return copyKey(deps.keys, ctx, source.encryptionKeyId);
  // As in Cinder: the key's algorithm comes from the cipher, so a spec without one cannot make keys.
  if (!spec.cipher) throw new InvalidInputError(`Invalid input received: the encryption spec of volume type ${type.id} has no cipher, so no key can be made for it.`);
  return deps.keys.createKey(ctx, { algorithm: spec.cipher.split('-')[0]!, lengthBits: spec.key_size });
}
