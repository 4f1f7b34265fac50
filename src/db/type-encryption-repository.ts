/**
 * Queries on the encryption specs of volume types (Cinder's volume type
 * encryption): at most one spec per type; a type with one is an encrypted type.
 */
import type { Kysely } from 'kysely';
import type { Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import { prepared } from './prepared.ts';
import type { Database, VolumeTypeEncryptionRow } from './schema.ts';

type Q = Kysely<Database>;

/** The fields of a spec an admin sets (`key_size` in bits). */
export interface EncryptionSpec {
  provider: string;
  cipher: string | null;
  key_size: number | null;
  control_location: string;
}

/** The fields that decide how a volume's data is encrypted: two types with equal ones read each other's volumes. */
const SPEC_FIELDS = ['provider', 'cipher', 'key_size', 'control_location'] as const;

/** A type's encryption, read by every create (prepared.ts). */
const ENCRYPTION_OF = prepared<{ typeId: string }>()((q, a) =>
  q.selectFrom('volume_type_encryption').selectAll().where('volume_type_id', '=', a('typeId')));

/** Repository over `volume_type_encryption`. */
export class TypeEncryptionRepository {
  constructor(private readonly clock: Clock, private readonly dialect: 'sqlite' | 'postgres') {}

  /**
   * Locks a type's row until the end of transaction `q`: `update` before a
   * spec changes (no volume of the type may appear meanwhile), `share` while a
   * volume of the type is created (its key follows the spec it read). Under
   * PostgreSQL's READ COMMITTED that is what orders the two; SQLite: nothing
   * to do, a transaction holds the only connection.
   */
  async lockType(q: Q, typeId: string, mode: 'share' | 'update'): Promise<void> {
    if (this.dialect !== 'postgres') return;
    const s = q.selectFrom('volume_types').select('id').where('id', '=', typeId);
    await (mode === 'update' ? s.forUpdate() : s.forShare()).execute();
  }

  /** The spec of a type, or undefined for a type that is not encrypted. */
  async get(q: Q, typeId: string): Promise<VolumeTypeEncryptionRow | undefined> {
    return ENCRYPTION_OF.first(q, { typeId });
  }

  /** Gives a type its spec and returns the new spec's id; the caller checked it has none. */
  async create(q: Q, typeId: string, spec: EncryptionSpec): Promise<string> {
    const id = newId();
    await q.insertInto('volume_type_encryption').values({
      encryption_id: id, volume_type_id: typeId, ...spec, created_at: isoAt(this.clock.now()), updated_at: null,
    }).execute();
    return id;
  }

  /** Changes the given fields of a type's spec; false if the type has none. */
  async update(q: Q, typeId: string, set: Partial<EncryptionSpec>): Promise<boolean> {
    const r = await q.updateTable('volume_type_encryption').set({ ...set, updated_at: isoAt(this.clock.now()) })
      .where('volume_type_id', '=', typeId).executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  /** Removes a type's spec (the type is then unencrypted); false if it had none. */
  async delete(q: Q, typeId: string): Promise<boolean> {
    const r = await q.deleteFrom('volume_type_encryption').where('volume_type_id', '=', typeId).executeTakeFirst();
    return r.numDeletedRows > 0n;
  }

  /**
   * Whether volumes of type `a` and of type `b` are encrypted alike (both
   * unencrypted, or with equal provider, cipher, key size and control
   * location): a copy of a volume may change its type only between such types,
   * or its data would be read with the wrong layer (Cinder's rule).
   */
  async sameEncryption(q: Q, a: string | null, b: string | null): Promise<boolean> {
    if (a === b) return true;
    const [ea, eb] = [a ? await this.get(q, a) : undefined, b ? await this.get(q, b) : undefined];
    if (!ea || !eb) return !ea && !eb;
    return SPEC_FIELDS.every((f) => ea[f] === eb[f]);
  }
}
