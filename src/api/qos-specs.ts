/** QoS specs (admin): CRUD, key deletion, and association with volume types. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { QosSpecs } from '../db/index.ts';
import { ConflictError, InvalidInputError, NotFoundError } from '../errors/index.ts';
import { baseUrl, type ApiDeps } from './context.ts';
import { queryValue, truthy } from './pagination.ts';
import { body, validBody } from './body-declaration.ts';
import { qosLimits } from '../export/index.ts';

const CONSUMERS = ['front-end', 'back-end', 'both'];
const specValue = { type: 'string', maxLength: 255 };
const CREATE = {
  type: 'object', required: ['qos_specs'], additionalProperties: false,
  properties: {
    qos_specs: {
      type: 'object', required: ['name'],
      properties: { name: { type: 'string', minLength: 1, maxLength: 255, pattern: '\\S' }, consumer: { enum: CONSUMERS } },
      additionalProperties: specValue,
    },
  },
};
const UPDATE = {
  type: 'object', required: ['qos_specs'], additionalProperties: false,
  properties: { qos_specs: { type: 'object', minProperties: 1, properties: { consumer: { enum: CONSUMERS } }, additionalProperties: specValue } },
};
const DELETE_KEYS = {
  type: 'object', required: ['keys'], additionalProperties: false,
  properties: { keys: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } } },
};

/**
 * Refuses a limit Basalt's export could not apply (a rate that is not a
 * number): found here rather than when a volume's connection opens.
 * @throws InvalidInputError naming the key.
 */
function checkLimits(specs: Record<string, string>): void {
  try {
    qosLimits(specs, 1);
  } catch (err) {
    throw new InvalidInputError(`Invalid input received: ${(err as Error).message}.`);
  }
}

function view(q: QosSpecs): Record<string, unknown> {
  return { id: q.id, name: q.name, consumer: q.consumer, specs: q.specs };
}

function links(req: FastifyRequest, q: QosSpecs): { href: string; rel: string }[] {
  return [
    { href: `${baseUrl(req)}/v3/${req.caller.projectId}/qos-specs/${q.id}`, rel: 'self' },
    { href: `${baseUrl(req)}/${req.caller.projectId}/qos-specs/${q.id}`, rel: 'bookmark' },
  ];
}

/** Registers the routes. */
export function qosRoutes(deps: ApiDeps) {
  const { db, qos, types } = deps;
  const find = async (req: FastifyRequest<{ Params: { id: string } }>): Promise<QosSpecs> => {
    const q = await qos.get(db.kysely, req.params.id);
    if (!q) throw new NotFoundError(`No such QoS spec ${req.params.id}.`);
    return q;
  };
  const typeParam = async (req: FastifyRequest): Promise<string> => {
    const id = queryValue(req.query as Record<string, unknown>, 'vol_type_id');
    if (!id) throw new InvalidInputError('Invalid input received: vol_type_id is required.');
    const t = await types.find(db.kysely, id, req.caller);
    if (!t) throw NotFoundError.of('Volume type', id);
    return t.id;
  };
  return async (app: FastifyInstance): Promise<void> => {
    app.get('/qos-specs', async (req) => {
      return { qos_specs: (await qos.list(db.kysely)).map(view) };
    });
    app.post('/qos-specs', body(CREATE), async (req) => {
      const { name, consumer, ...specs } = validBody<{ qos_specs: Record<string, string> }>(req).qos_specs;
      checkLimits(specs);
      const id = await db.kysely.transaction().execute(async (tx) => {
        if (await qos.nameTaken(tx, name!.trim())) throw new ConflictError(`QoS Specs ${name} already exists.`);
        return qos.create(tx, name!.trim(), consumer ?? 'back-end', specs);
      });
      const created = (await qos.get(db.kysely, id))!;
      return { qos_specs: view(created), links: links(req, created) };
    });
    app.get<{ Params: { id: string } }>('/qos-specs/:id', async (req) => {
      const q = await find(req);
      return { qos_specs: view(q), links: links(req, q) };
    });
    app.put<{ Params: { id: string } }>('/qos-specs/:id', body(UPDATE), async (req) => {
      const q = await find(req);
      const { consumer, ...specs } = validBody<{ qos_specs: Record<string, string> }>(req).qos_specs;
      checkLimits({ ...q.specs, ...specs });
      await db.kysely.transaction().execute(async (tx) => {
        if (consumer) await qos.setConsumer(tx, q.id, consumer);
        await qos.setItems(tx, q.id, specs);
      });
      return { qos_specs: { ...(consumer ? { consumer } : {}), ...specs } };
    });
    app.delete<{ Params: { id: string } }>('/qos-specs/:id', async (req, reply) => {
      const q = await find(req);
      const force = truthy(queryValue(req.query as Record<string, unknown>, 'force'));
      await db.kysely.transaction().execute(async (tx) => {
        if ((await qos.associations(tx, q.id)).length > 0) {
          if (!force) throw new InvalidInputError(`Invalid input received: QoS Specs ${q.id} is still associated with entities.`);
          await qos.disassociateAll(tx, q.id);
        }
        await qos.delete(tx, q.id);
      });
      return reply.code(202).send();
    });
    app.put<{ Params: { id: string } }>('/qos-specs/:id/delete_keys', body(DELETE_KEYS), async (req, reply) => {
      const q = await find(req);
      const { keys } = validBody<{ keys: string[] }>(req);
      const missing = keys.filter((k) => !Object.hasOwn(q.specs, k));
      if (missing.length) throw new NotFoundError(`QoS spec ${q.id} has no key ${missing.join(', ')}.`);
      await qos.deleteItems(db.kysely, q.id, keys);
      return reply.code(202).send();
    });
    app.get<{ Params: { id: string } }>('/qos-specs/:id/associations', async (req) => {
      const q = await find(req);
      return { qos_associations: (await qos.associations(db.kysely, q.id)).map((t) => ({ association_type: 'volume_type', name: t.name, id: t.id })) };
    });
    app.get<{ Params: { id: string } }>('/qos-specs/:id/associate', async (req, reply) => {
      const q = await find(req);
      const typeId = await typeParam(req);
      const current = (await types.byIds(db.kysely, [typeId])).get(typeId)!.qos_specs_id;
      if (current && current !== q.id) throw new InvalidInputError(`Invalid input received: Type ${typeId} is already associated with another qos specs: ${current}`);
      await qos.associate(db.kysely, typeId, q.id);
      return reply.code(202).send();
    });
    app.get<{ Params: { id: string } }>('/qos-specs/:id/disassociate', async (req, reply) => {
      const q = await find(req);
      const typeId = await typeParam(req);
      if ((await types.byIds(db.kysely, [typeId])).get(typeId)!.qos_specs_id !== q.id) {
        throw new NotFoundError(`Volume type ${typeId} is not associated with QoS spec ${q.id}.`);
      }
      await qos.associate(db.kysely, typeId, null);
      return reply.code(202).send();
    });
    app.get<{ Params: { id: string } }>('/qos-specs/:id/disassociate_all', async (req, reply) => {
      await qos.disassociateAll(db.kysely, (await find(req)).id);
      return reply.code(202).send();
    });
  };
}
