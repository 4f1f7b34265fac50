/**
 * Volume types (admin-managed): CRUD, extra specs, project access, and the
 * per-project default types of microversion 3.62.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ownValue } from '../common/index.ts';
import type { VolumeType } from '../db/index.ts';
import { ConflictError, ForbiddenError, InvalidInputError, NotFoundError } from '../errors/index.ts';
import type { ApiDeps } from './context.ts';
import { replicationSpecProblem } from '../volume/index.ts';
import { queryValue } from './pagination.ts';
import { metadataSchema } from './validation.ts';
import { actionBodies, body as bodyOf, validAction, validBody } from './body-declaration.ts';

/** Extra specs every user may read; the rest are admin-only, as in Cinder. */
const USER_VISIBLE_SPECS = new Set(['multiattach', 'RESKEY:availability_zones', 'replication_enabled']);

const boolish = { anyOf: [{ type: 'boolean' }, { type: 'string', enum: ['true', 'false', 'True', 'False', '1', '0'] }] };
const typeName = { type: 'string', minLength: 1, maxLength: 255, pattern: '\\S' };
const description = { type: ['string', 'null'], maxLength: 255 };
const extraSpecs = { ...metadataSchema, propertyNames: { minLength: 1, maxLength: 255, pattern: '^[\\w.:\\-]+$' } };

const CREATE = {
  type: 'object', required: ['volume_type'], additionalProperties: false,
  properties: {
    volume_type: {
      type: 'object', required: ['name'], additionalProperties: false,
      properties: { name: typeName, description, 'os-volume-type-access:is_public': boolish, is_public: boolish, extra_specs: extraSpecs },
    },
  },
};
const UPDATE = {
  type: 'object', required: ['volume_type'], additionalProperties: false,
  properties: {
    volume_type: {
      type: 'object', additionalProperties: false, minProperties: 1,
      properties: { name: typeName, description, is_public: boolish },
    },
  },
};
const SPECS = { type: 'object', required: ['extra_specs'], additionalProperties: false, properties: { extra_specs: extraSpecs } };
const ACCESS = {
  type: 'object', required: ['project'], additionalProperties: false,
  properties: { project: { type: 'string', minLength: 1, maxLength: 255 } },
};
const DEFAULT_TYPE = {
  type: 'object', required: ['default_type'], additionalProperties: false,
  properties: { default_type: { type: 'object', required: ['volume_type'], additionalProperties: false, properties: { volume_type: typeName } } },
};

/**
 * Refuses extra specs Basalt reads and cannot take (replication's), with a
 * 400 naming the spec: a type that would place volumes it cannot replicate
 * as asked is refused when it is written, not when a volume is made.
 * @throws InvalidInputError naming the spec.
 */
function checkSpecs(specs: Readonly<Record<string, string>>): void {
  const problem = replicationSpecProblem(specs);
  if (problem) throw new InvalidInputError(`Invalid input received: ${problem}.`);
}

function asBool(v: unknown): boolean {
  return v === true || (typeof v === 'string' && ['true', '1'].includes(v.toLowerCase()));
}

/**
 * The type as the API shows it to this caller for `action`: show and list add
 * the QoS specs id (admins) and the access extension's `is_public`; create adds
 * only the latter and update neither, as Cinder answers.
 */
export function typeView(req: FastifyRequest, t: VolumeType, action: 'create' | 'update' | 'show' = 'show'): Record<string, unknown> {
  const specs = req.caller.isAdmin ? t.extra_specs : Object.fromEntries(Object.entries(t.extra_specs).filter(([k]) => USER_VISIBLE_SPECS.has(k)));
  const view: Record<string, unknown> = { id: t.id, name: t.name, description: t.description, is_public: t.is_public === 1, extra_specs: specs };
  if (action !== 'update') view['os-volume-type-access:is_public'] = t.is_public === 1;
  if (action === 'show' && req.caller.isAdmin) view.qos_specs_id = t.qos_specs_id;
  return view;
}


/** Registers the routes. */
export function typeRoutes(deps: ApiDeps) {
  const { db, types, config } = deps;
  const find = async (req: FastifyRequest, id: string): Promise<VolumeType> => {
    if (id === 'default') {
      return deps.volumeManager.defaultType(db.kysely, req.caller);
    }
    const t = await types.find(db.kysely, id, req.caller);
    if (!t) throw NotFoundError.of('Volume type', id);
    return t;
  };
  return async (app: FastifyInstance): Promise<void> => {
    app.get('/types', async (req) => {
      const q = req.query as Record<string, unknown>;
      const p = queryValue(q, 'is_public');
      // As in Cinder: public types by default, is_public=None for all (admins),
      // and non-admins always see public types plus private ones shared with them.
      const isPublic = p === undefined ? true : p.toLowerCase() === 'none' ? undefined : asBool(p);
      return { volume_types: (await types.list(db.kysely, req.caller, isPublic)).map((t) => typeView(req, t)) };
    });
    app.get<{ Params: { id: string } }>('/types/:id', async (req) => ({ volume_type: typeView(req, await find(req, req.params.id)) }));

    app.post('/types', bodyOf(CREATE), async (req) => {
      const b = validBody<{ volume_type: Record<string, unknown> }>(req).volume_type;
      const name = (b.name as string).trim();
      checkSpecs((b.extra_specs ?? {}) as Record<string, string>);
      const id = await db.kysely.transaction().execute(async (tx) => {
        if (await types.nameTaken(tx, name)) throw new ConflictError(`Volume Type ${name} already exists.`);
        const pub = b['os-volume-type-access:is_public'] ?? b.is_public;
        return types.create(tx, {
          name, description: (b.description ?? null) as string | null,
          isPublic: pub === undefined ? true : asBool(pub), extraSpecs: (b.extra_specs ?? {}) as Record<string, string>,
        });
      });
      return { volume_type: typeView(req, (await types.find(db.kysely, id, req.caller))!, 'create') };
    });

    app.put<{ Params: { id: string } }>('/types/:id', bodyOf(UPDATE), async (req) => {
      const b = validBody<{ volume_type: Record<string, unknown> }>(req).volume_type;
      const t = await find(req, req.params.id);
      await db.kysely.transaction().execute(async (tx) => {
        const set: { name?: string; description?: string | null; is_public?: number } = {};
        if (b.name !== undefined) {
          const name = (b.name as string).trim();
          if (t.name === config.DEFAULT.default_volume_type && name !== t.name) {
            throw new InvalidInputError(`Invalid input received: the default volume type ${t.name} cannot be renamed.`);
          }
          if (await types.nameTaken(tx, name, t.id)) throw new ConflictError(`Volume Type ${name} already exists.`);
          set.name = name;
        }
        if ('description' in b) set.description = (b.description ?? null) as string | null;
        if (b.is_public !== undefined) set.is_public = asBool(b.is_public) ? 1 : 0;
        await types.update(tx, t.id, set);
      });
      return { volume_type: typeView(req, (await types.find(db.kysely, t.id, req.caller))!, 'update') };
    });

    app.delete<{ Params: { id: string } }>('/types/:id', async (req, reply) => {
      const t = await find(req, req.params.id);
      await db.kysely.transaction().execute(async (tx) => {
        if (t.name === config.DEFAULT.default_volume_type) throw new InvalidInputError(`Invalid input received: the default volume type ${t.name} cannot be deleted.`);
        if (await types.inUse(tx, t.id)) throw new InvalidInputError('Target volume type is still in use.');
        if (await types.isProjectDefault(tx, t.id)) throw new InvalidInputError('Invalid input received: the volume type is the default type of a project.');
        await types.delete(tx, t.id);
      });
      return reply.code(202).send();
    });

    // Extra specs.
    app.get<{ Params: { id: string } }>('/types/:id/extra_specs', async (req) => ({ extra_specs: typeView(req, await find(req, req.params.id)).extra_specs }));
    app.post<{ Params: { id: string } }>('/types/:id/extra_specs', bodyOf(SPECS), async (req) => {
      const b = validBody<{ extra_specs: Record<string, string> }>(req);
      checkSpecs(b.extra_specs);
      const t = await find(req, req.params.id);
      await db.kysely.transaction().execute((tx) => types.setExtraSpecs(tx, t.id, b.extra_specs));
      return { extra_specs: b.extra_specs };
    });
    app.get<{ Params: { id: string; key: string } }>('/types/:id/extra_specs/:key', async (req) => {
      const specs = typeView(req, await find(req, req.params.id)).extra_specs as Record<string, string>;
      const value = ownValue(specs, req.params.key);
      if (value === undefined) throw new NotFoundError(`Volume Type ${req.params.id} has no extra specs with key ${req.params.key}.`);
      return { [req.params.key]: value };
    });
    app.put<{ Params: { id: string; key: string } }>('/types/:id/extra_specs/:key', bodyOf(extraSpecs), async (req) => {
      const body = validBody<Record<string, string>>(req);
      const keys = Object.keys(body);
      if (keys.length !== 1) throw new InvalidInputError('Request body contains too many items');
      if (keys[0] !== req.params.key) throw new InvalidInputError('Request body and URI mismatch');
      checkSpecs(body);
      const t = await find(req, req.params.id);
      await types.setExtraSpecs(db.kysely, t.id, body);
      return body;
    });
    app.delete<{ Params: { id: string; key: string } }>('/types/:id/extra_specs/:key', async (req, reply) => {
      const t = await find(req, req.params.id);
      if (!(await types.deleteExtraSpec(db.kysely, t.id, req.params.key))) {
        throw new NotFoundError(`Volume Type ${t.id} has no extra specs with key ${req.params.key}.`);
      }
      return reply.code(202).send();
    });

    // Project access to private types.
    app.get<{ Params: { id: string } }>('/types/:id/os-volume-type-access', async (req) => {
      const t = await find(req, req.params.id);
      if (t.is_public) throw new NotFoundError(`Access list not available for public volume types.`);
      return { volume_type_access: (await types.access(db.kysely, t.id)).map((p) => ({ volume_type_id: t.id, project_id: p })) };
    });
    app.post<{ Params: { id: string } }>('/types/:id/action', actionBodies({ addProjectAccess: { schema: ACCESS }, removeProjectAccess: { schema: ACCESS } }), async (req, reply) => {
      const body = req.body as Record<string, unknown> | undefined;
      const [name, arg] = Object.entries(body ?? {})[0] ?? [];
      if (name !== 'addProjectAccess' && name !== 'removeProjectAccess') throw new InvalidInputError(`There is no such action: ${name ?? ''}`);
      const { project } = validAction<{ project: string }>(req, arg);
      const t = await find(req, req.params.id);
      if (t.is_public) throw new InvalidInputError('Invalid volume type: Type access modification is not applicable to public volume type.');
      if (name === 'addProjectAccess') {
        if (!(await types.addAccess(db.kysely, t.id, project))) throw new ConflictError(`Volume type access for ${t.id} / ${project} combination already exists.`);
      } else if (!(await types.removeAccess(db.kysely, t.id, project))) {
        throw new NotFoundError(`Volume type access not found for ${t.id} / ${project} combination.`);
      }
      return reply.code(202).send();
    });

    // Per-project default types (3.62).
    const requireDefaults = (req: FastifyRequest): void => {
      if (!req.apiVersion.atLeast('3.62')) throw new NotFoundError('The resource could not be found.');
    };
    const defaultView = (p: { project_id: string; volume_type_id: string }) => ({ project_id: p.project_id, volume_type_id: p.volume_type_id });
    app.put<{ Params: { project: string } }>('/default-types/:project', bodyOf(DEFAULT_TYPE), async (req) => {
      requireDefaults(req);
      const b = validBody<{ default_type: { volume_type: string } }>(req);
      const t = await types.find(db.kysely, b.default_type.volume_type, req.caller);
      if (!t) throw NotFoundError.of('Volume type', b.default_type.volume_type);
      await types.setProjectDefault(db.kysely, req.params.project, t.id);
      return { default_type: defaultView({ project_id: req.params.project, volume_type_id: t.id }) };
    });
    app.get<{ Params: { project: string } }>('/default-types/:project', async (req) => {
      requireDefaults(req);
      if (!req.caller.isAdmin && req.params.project !== req.caller.projectId) throw new ForbiddenError();
      const id = await types.projectDefault(db.kysely, req.params.project);
      if (!id) throw new NotFoundError(`Default type for project ${req.params.project} could not be found.`);
      return { default_type: defaultView({ project_id: req.params.project, volume_type_id: id }) };
    });
    app.get('/default-types', async (req) => {
      requireDefaults(req);
      return { default_types: (await types.projectDefaults(db.kysely)).map(defaultView) };
    });
    app.delete<{ Params: { project: string } }>('/default-types/:project', async (req, reply) => {
      requireDefaults(req);
      if (!(await types.deleteProjectDefault(db.kysely, req.params.project))) {
        throw new NotFoundError(`Default type for project ${req.params.project} could not be found.`);
      }
      return reply.code(204).send();
    });
  };
}
