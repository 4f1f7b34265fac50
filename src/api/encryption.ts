/**
 * Encryption: the encryption specs of volume types (admin, `/types/{id}/encryption`)
 * and a volume's encryption metadata (`/volumes/{id}/encryption`, what a
 * compute host reads to find the key of a volume it attaches).
 *
 * A spec cannot be created, changed or deleted while volumes of the type
 * exist: their data is already encrypted the way the spec said.
 *
 * Differences from Cinder, on purpose: an unknown field in a spec is refused
 * (400 naming it) where Cinder accepts and ignores it, and an unknown key of
 * a volume's metadata is a 404 where Cinder fails with a 500.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cinderTime } from '../common/index.ts';
import type { EncryptionSpec, VolumeType, VolumeTypeEncryptionRow } from '../db/index.ts';
import { InvalidInputError, NotFoundError } from '../errors/index.ts';
import type { ApiDeps } from './context.ts';
import { body, validBody } from './body-declaration.ts';

/** The largest key size stored (Cinder's database integer limit). */
const MAX_KEY_SIZE = 2147483647;

const specProperties = {
  provider: { type: 'string', minLength: 0, maxLength: 255 },
  cipher: { type: ['string', 'null'], minLength: 0, maxLength: 255 },
  // Bits; Cinder also accepts a string of digits, and null.
  key_size: { type: ['integer', 'string', 'null'], minimum: 0, maximum: MAX_KEY_SIZE },
  control_location: { enum: ['front-end', 'back-end'] },
} as const;

function specSchema(required: readonly string[]): object {
  return {
    type: 'object', required: ['encryption'], additionalProperties: false,
    properties: { encryption: { type: 'object', required, additionalProperties: false, properties: specProperties } },
  };
}
const CREATE = specSchema(['provider', 'control_location']);
const UPDATE = specSchema([]);

/**
 * The spec fields of the request's body, checked against the route's schema, `key_size` as a number.
 * @throws InvalidInputError for a `key_size` string that is not an integer.
 */
function specFields(req: FastifyRequest): Partial<EncryptionSpec> {
  const e = { ...validBody<{ encryption: Record<string, unknown> }>(req).encryption };
  if (typeof e.key_size === 'string') {
    const n = /^\s*\d+\s*$/.test(e.key_size) ? Number(e.key_size) : NaN;
    if (!(n <= MAX_KEY_SIZE)) throw new InvalidInputError(`Invalid input for field/attribute key_size. Value: ${e.key_size}. key_size must be an integer.`);
    e.key_size = n;
  }
  return e as Partial<EncryptionSpec>;
}

/** A spec as Cinder shows it: the stored row, never soft-deleted here. */
function specView(e: VolumeTypeEncryptionRow): Record<string, unknown> {
  return {
    volume_type_id: e.volume_type_id, encryption_id: e.encryption_id, provider: e.provider, cipher: e.cipher,
    key_size: e.key_size, control_location: e.control_location,
    deleted: false, created_at: cinderTime(e.created_at), updated_at: cinderTime(e.updated_at), deleted_at: null,
  };
}

const notFound = (typeId: string): NotFoundError => new NotFoundError(`Volume type encryption for type ${typeId} does not exist.`);

/** Registers the routes. */
export function encryptionRoutes(deps: ApiDeps) {
  const { db, types, typeEncryption } = deps;
  const findType = async (req: FastifyRequest, id: string, q = db.kysely): Promise<VolumeType> => {
    const t = await types.find(q, id, req.caller);
    if (!t) throw NotFoundError.of('Volume type', id);
    return t;
  };
  /** Runs `change` on a type's spec unless volumes of the type exist (400 "Cannot <verb> …"). */
  const changeSpec = <T>(req: FastifyRequest, typeId: string, verb: string, change: (t: VolumeType, tx: typeof db.kysely) => Promise<T>): Promise<T> =>
    db.kysely.transaction().execute(async (tx) => {
      const t = await findType(req, typeId, tx);
      await typeEncryption.lockType(tx, t.id, 'update');
      if (await types.inUse(tx, t.id)) throw new InvalidInputError(`Cannot ${verb} encryption specs. Volume type in use.`);
      return change(t, tx);
    });

  return async (app: FastifyInstance): Promise<void> => {
    app.get<{ Params: { id: string } }>('/types/:id/encryption', async (req) => {
      const t = await findType(req, req.params.id);
      const e = await typeEncryption.get(db.kysely, t.id);
      return e ? specView(e) : {};
    });

    app.post<{ Params: { id: string } }>('/types/:id/encryption', body(CREATE), async (req) => {
      const spec = specFields(req);
      return changeSpec(req, req.params.id, 'create', async (t, tx) => {
        if (await typeEncryption.get(tx, t.id)) throw new InvalidInputError(`Volume type encryption for type ${t.id} already exists.`);
        const id = await typeEncryption.create(tx, t.id, { cipher: null, key_size: null, ...spec } as EncryptionSpec);
        return { encryption: { ...spec, volume_type_id: t.id, encryption_id: id } };
      });
    });

    // One item of the spec, e.g. `provider`.
    app.get<{ Params: { id: string; key: string } }>('/types/:id/encryption/:key', async (req) => {
      const t = await findType(req, req.params.id);
      const e = await typeEncryption.get(db.kysely, t.id);
      const view = e ? specView(e) : {};
      if (!Object.hasOwn(view, req.params.key)) throw notFound(t.id);
      return { [req.params.key]: view[req.params.key] };
    });

    // The last segment names the spec (its id, or any word: clients send `provider`); a type has one spec.
    app.put<{ Params: { id: string; key: string } }>('/types/:id/encryption/:key', body(UPDATE), async (req) => {
      const spec = specFields(req);
      return changeSpec(req, req.params.id, 'update', async (t, tx) => {
        if (!(await typeEncryption.update(tx, t.id, spec))) throw notFound(t.id);
        return { encryption: spec };
      });
    });

    app.delete<{ Params: { id: string; key: string } }>('/types/:id/encryption/:key', async (req, reply) => {
      await changeSpec(req, req.params.id, 'delete', async (t, tx) => {
        if (!(await typeEncryption.delete(tx, t.id))) throw notFound(t.id);
      });
      return reply.code(202).send();
    });

    // A volume's encryption metadata: its key id and its type's spec (Cinder's os-volume-encryption-metadata).
    const metadata = async (req: FastifyRequest<{ Params: { id: string } }>): Promise<Record<string, unknown>> => {
      const v = await deps.volumeManager.get(req.caller, req.params.id);
      const e = v.volume_type_id ? await typeEncryption.get(db.kysely, v.volume_type_id) : undefined;
      return {
        encryption_key_id: v.encryption_key_id,
        ...(e ? { provider: e.provider, cipher: e.cipher, key_size: e.key_size, control_location: e.control_location } : {}),
      };
    };
    app.get<{ Params: { id: string } }>('/volumes/:id/encryption', metadata);
    app.get<{ Params: { id: string; key: string } }>('/volumes/:id/encryption/:key', async (req, reply) => {
      const m = await metadata(req);
      if (!Object.hasOwn(m, req.params.key)) throw new NotFoundError(`Volume ${req.params.id} has no encryption metadata ${req.params.key}.`);
      // Cinder answers with the bare value.
      return reply.type('application/json').send(JSON.stringify(m[req.params.key]));
    });
  };
}
