/**
 * Group types and their group specs (3.11): admin-managed, like volume
 * types. `GET /group_types/default` shows the type named by
 * `[DEFAULT] default_group_type`.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ownValue } from '../common/index.ts';
import type { GroupType } from '../db/index.ts';
import { ConflictError, InvalidInputError, NotFoundError } from '../errors/index.ts';
import type { ApiDeps } from './context.ts';
import { parsePaging, queryValue } from './pagination.ts';
import { body as bodyOf, validBody } from './body-declaration.ts';

const boolish = { anyOf: [{ type: 'boolean' }, { type: 'string', enum: ['true', 'false', 'True', 'False', '1', '0', 'yes', 'no', 'on', 'off'] }] };
const description = { type: ['string', 'null'], maxLength: 255 };
/** Spec keys and values as Cinder allows them: no spaces in keys, values up to 255 characters. */
const specs = {
  type: 'object', additionalProperties: false,
  patternProperties: { '^[a-zA-Z0-9-_:.]{1,255}$': { type: 'string', maxLength: 255 } },
};

const CREATE = {
  type: 'object', required: ['group_type'], additionalProperties: false,
  properties: {
    group_type: {
      type: 'object', required: ['name'], additionalProperties: false,
      properties: {
        name: { type: 'string', minLength: 1, maxLength: 255, pattern: '\\S' }, description, is_public: boolish,
        group_specs: { anyOf: [specs, { type: 'null' }] },
      },
    },
  },
};
const UPDATE = {
  type: 'object', required: ['group_type'], additionalProperties: false,
  properties: {
    group_type: {
      type: 'object', additionalProperties: false,
      properties: { name: { type: ['string', 'null'], maxLength: 255 }, description, is_public: boolish },
    },
  },
};
const SPECS = { type: 'object', required: ['group_specs'], additionalProperties: false, properties: { group_specs: specs } };
const ONE_SPEC = { ...specs, minProperties: 1, maxProperties: 1 };

/** Sort keys of the list. */
const SORT_KEYS: Record<string, 'name' | 'id' | 'created_at' | 'description'> = { name: 'name', id: 'id', created_at: 'created_at', description: 'description' };

function asBool(v: unknown): boolean {
  return v === true || (typeof v === 'string' && ['true', '1', 'yes', 'on'].includes(v.toLowerCase()));
}

/** The group type as this caller sees it: group specs for admins only, as in Cinder. */
export function groupTypeView(req: FastifyRequest, t: GroupType): Record<string, unknown> {
  const view: Record<string, unknown> = { id: t.id, name: t.name, description: t.description, is_public: t.is_public === 1 };
  if (req.caller.isAdmin) view.group_specs = t.group_specs;
  return view;
}

/** Registers the routes. */
export function groupTypeRoutes(deps: ApiDeps) {
  const { db, groupTypes, config } = deps;
  const find = async (req: FastifyRequest, id: string): Promise<GroupType> => {
    if (id === 'default') {
      const name = config.DEFAULT.default_group_type;
      const t = name ? await groupTypes.find(db.kysely, name, { isAdmin: true, projectId: req.caller.projectId }) : undefined;
      if (!t) throw new NotFoundError('Default group type can not be found.');
      return t;
    }
    const t = await groupTypes.find(db.kysely, id, req.caller);
    if (!t) throw new NotFoundError(`Group type with id ${id} could not be found.`);
    return t;
  };
  const spec = (t: GroupType, key: string): string => {
    const value = ownValue(t.group_specs, key);
    if (value === undefined) throw new NotFoundError(`Group Type ${t.id} has no specs with key ${key}.`);
    return value;
  };
  return async (app: FastifyInstance): Promise<void> => {
    app.addHook('preHandler', async (req) => {
      if (!req.apiVersion.atLeast('3.11')) throw new NotFoundError('The resource could not be found.');
    });

    app.get('/group_types', async (req) => {
      const q = req.query as Record<string, unknown>;
      const p = queryValue(q, 'is_public');
      // As in Cinder: public types by default; admins may ask for private ones or (None) all.
      const isPublic = !req.caller.isAdmin || p === undefined ? true : p.toLowerCase() === 'none' ? undefined : asBool(p);
      const paging = parsePaging(q, SORT_KEYS, config.DEFAULT.osapi_max_limit, [{ column: 'name', dir: 'asc' }]);
      const rows = await groupTypes.list(db.kysely, req.caller, isPublic);
      rows.sort((a, b) => {
        for (const k of paging.sort) {
          const c = String(a[k.column] ?? '').localeCompare(String(b[k.column] ?? ''));
          if (c !== 0) return k.dir === 'asc' ? c : -c;
        }
        return 0;
      });
      const after = paging.marker === undefined ? 0 : rows.findIndex((r) => r.id === paging.marker) + 1;
      if (paging.marker !== undefined && after === 0) throw new NotFoundError(`Marker ${paging.marker} could not be found.`);
      const start = after + paging.offset;
      return { group_types: rows.slice(start, start + paging.limit).map((t) => groupTypeView(req, t)) };
    });
    app.get<{ Params: { id: string } }>('/group_types/:id', async (req) => ({ group_type: groupTypeView(req, await find(req, req.params.id)) }));

    app.post('/group_types', bodyOf(CREATE), async (req, reply) => {
      const b = validBody<{ group_type: { name: string; description?: string | null; is_public?: unknown; group_specs?: Record<string, string> | null } }>(req).group_type;
      const name = b.name.trim();
      const id = await db.kysely.transaction().execute(async (tx) => {
        if (await groupTypes.nameTaken(tx, name)) throw new ConflictError(`Group Type ${name} already exists.`);
        return groupTypes.create(tx, {
          name, description: b.description ?? null, isPublic: b.is_public === undefined ? true : asBool(b.is_public), specs: b.group_specs ?? {},
        });
      });
      return reply.code(202).send({ group_type: groupTypeView(req, (await groupTypes.find(db.kysely, id, req.caller))!) });
    });

    app.put<{ Params: { id: string } }>('/group_types/:id', bodyOf(UPDATE), async (req) => {
      const b = validBody<{ group_type: { name?: string | null; description?: string | null; is_public?: unknown } }>(req).group_type;
      if (typeof b.name === 'string' && b.name.trim() === '') throw new InvalidInputError('Group type name can not be empty.');
      if ((b.name ?? null) === null && (b.description ?? null) === null && b.is_public === undefined) {
        throw new InvalidInputError('Specify group type name, description or a combination thereof.');
      }
      const t = await find(req, req.params.id);
      await db.kysely.transaction().execute(async (tx) => {
        const set: { name?: string; description?: string | null; is_public?: number } = {};
        if (typeof b.name === 'string') {
          const name = b.name.trim();
          if (await groupTypes.nameTaken(tx, name, t.id)) throw new ConflictError(`Group Type ${name} already exists.`);
          set.name = name;
        }
        if (b.description !== undefined && b.description !== null) set.description = b.description;
        if (b.is_public !== undefined) set.is_public = asBool(b.is_public) ? 1 : 0;
        await groupTypes.update(tx, t.id, set);
      });
      return { group_type: groupTypeView(req, (await groupTypes.find(db.kysely, t.id, req.caller))!) };
    });

    app.delete<{ Params: { id: string } }>('/group_types/:id', async (req, reply) => {
      const t = await find(req, req.params.id);
      await db.kysely.transaction().execute(async (tx) => {
        if (await groupTypes.inUse(tx, t.id)) throw new InvalidInputError('Target group type is still in use.');
        await groupTypes.delete(tx, t.id);
      });
      return reply.code(202).send();
    });

    // Group specs.
    app.get<{ Params: { id: string } }>('/group_types/:id/group_specs', async (req) => ({ group_specs: (await find(req, req.params.id)).group_specs }));
    app.post<{ Params: { id: string } }>('/group_types/:id/group_specs', bodyOf(SPECS), async (req, reply) => {
      const b = validBody<{ group_specs: Record<string, string> }>(req);
      const t = await find(req, req.params.id);
      await db.kysely.transaction().execute((tx) => groupTypes.setSpecs(tx, t.id, b.group_specs));
      return reply.code(202).send({ group_specs: b.group_specs });
    });
    app.get<{ Params: { id: string; key: string } }>('/group_types/:id/group_specs/:key', async (req) => {
      const t = await find(req, req.params.id);
      return { [req.params.key]: spec(t, req.params.key) };
    });
    app.put<{ Params: { id: string; key: string } }>('/group_types/:id/group_specs/:key', bodyOf(ONE_SPEC), async (req) => {
      const body = validBody<Record<string, string>>(req);
      if (!Object.hasOwn(body, req.params.key)) throw new InvalidInputError('Request body and URI mismatch');
      const t = await find(req, req.params.id);
      await groupTypes.setSpecs(db.kysely, t.id, body);
      return body;
    });
    app.delete<{ Params: { id: string; key: string } }>('/group_types/:id/group_specs/:key', async (req, reply) => {
      const t = await find(req, req.params.id);
      if (!(await groupTypes.deleteSpec(db.kysely, t.id, req.params.key))) spec(t, req.params.key);
      return reply.code(202).send();
    });
  };
}
