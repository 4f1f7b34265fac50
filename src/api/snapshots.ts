/** Snapshots: create, show, list, detail, update, delete, metadata. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cinderTime } from '../common/index.ts';
import { SNAPSHOT_SORT_KEYS, type SnapshotFilter, type SnapshotRow } from '../db/index.ts';
import { InvalidInputError } from '../errors/index.ts';
import type { ApiDeps } from './context.ts';
import { metadataRoutes } from './metadata.ts';
import { queryValue } from './pagination.ts';
import { resourceList, type ResourceListOptions } from './resource-list.ts';
import { actionOf, metadataSchema, nameSchema, validate } from './validation.ts';

const boolish = { anyOf: [{ type: 'boolean' }, { type: 'string', enum: ['true', 'false', 'True', 'False', '1', '0'] }] };

function createSchema(strict: boolean): object {
  return {
    type: 'object', required: ['snapshot'], additionalProperties: !strict,
    properties: {
      snapshot: {
        type: 'object', required: ['volume_id'], additionalProperties: !strict,
        properties: {
          volume_id: { type: 'string', format: 'uuid' }, force: boolish, name: nameSchema, description: nameSchema,
          display_name: nameSchema, display_description: nameSchema, metadata: metadataSchema,
        },
      },
    },
  };
}
const CREATE_LEGACY = createSchema(false);
const CREATE_STRICT = createSchema(true);
const UPDATE = {
  type: 'object', required: ['snapshot'],
  properties: {
    snapshot: {
      type: 'object', minProperties: 1, additionalProperties: false,
      properties: { name: nameSchema, description: nameSchema, display_name: nameSchema, display_description: nameSchema },
    },
  },
};

/** The snapshot as the API shows it in detail. */
function snapshotView(req: FastifyRequest, s: SnapshotRow, metadata: Record<string, string>): Record<string, unknown> {
  const view: Record<string, unknown> = {
    id: s.id,
    created_at: cinderTime(s.created_at),
    updated_at: cinderTime(s.updated_at),
    name: s.name,
    description: s.description,
    volume_id: s.volume_id,
    status: s.status,
    size: s.volume_size,
    metadata,
    'os-extended-snapshot-attributes:progress': s.status === 'available' ? '100%' : '0%',
    'os-extended-snapshot-attributes:project_id': s.project_id,
  };
  if (req.apiVersion.atLeast('3.14')) view.group_snapshot_id = s.group_snapshot_id;
  if (req.apiVersion.atLeast('3.41')) view.user_id = s.user_id;
  if (req.apiVersion.atLeast('3.65')) view.consumes_quota = true;
  return view;
}

/** `os-reset_status`: the statuses an admin may set (Cinder's list). */
const RESET_STATUS = {
  type: 'object', required: ['status'], additionalProperties: false,
  properties: { status: { enum: ['creating', 'available', 'deleting', 'error', 'error_deleting'] } },
};

/** Registers the routes. */
export function snapshotRoutes(deps: ApiDeps) {
  const { db, snapshots, volumeManager, config } = deps;
  const views = async (req: FastifyRequest, rows: SnapshotRow[]) => {
    const md = await snapshots.metadataOf(db.kysely, rows.map((r) => r.id));
    return rows.map((r) => snapshotView(req, r, md.get(r.id)!));
  };
  return async (app: FastifyInstance): Promise<void> => {
    app.post('/snapshots', async (req, reply) => {
      const body = validate<{ snapshot: Record<string, unknown> }>(req.apiVersion.atLeast('3.53') ? CREATE_STRICT : CREATE_LEGACY, req.body).snapshot;
      const s = await volumeManager.requestSnapshot(req.caller, {
        volumeId: body.volume_id as string,
        force: body.force === true || (typeof body.force === 'string' && ['true', '1'].includes(body.force.toLowerCase())),
        name: (body.name ?? body.display_name ?? null) as string | null,
        description: (body.description ?? body.display_description ?? null) as string | null,
        metadata: (body.metadata ?? {}) as Record<string, string>,
      });
      return reply.code(202).send({ snapshot: (await views(req, [s]))[0] });
    });

    const listing: ResourceListOptions<SnapshotRow, SnapshotFilter> = {
      db: db.kysely, repo: snapshots, collection: 'snapshots', sortKeys: SNAPSHOT_SORT_KEYS, maxLimit: config.DEFAULT.osapi_max_limit,
      narrow(q, filter) {
        const volumeId = queryValue(q, 'volume_id');
        if (volumeId !== undefined) filter.volumeId = volumeId;
      },
      summary: (_req, r) => ({ id: r.id, name: r.name, status: r.status, volume_id: r.volume_id, size: r.volume_size }),
      details: views,
    };
    const list = (detail: boolean) => resourceList(listing, detail);
    app.get('/snapshots', list(false));
    app.get('/snapshots/detail', list(true));

    app.get<{ Params: { id: string } }>('/snapshots/:id', async (req) => ({
      snapshot: (await views(req, [await volumeManager.getSnapshot(req.caller, req.params.id)]))[0],
    }));
    app.put<{ Params: { id: string } }>('/snapshots/:id', async (req) => {
      const u = validate<{ snapshot: Record<string, unknown> }>(UPDATE, req.body).snapshot;
      const s = await volumeManager.getSnapshot(req.caller, req.params.id);
      const set: { name?: string | null; description?: string | null } = {};
      if ('name' in u || 'display_name' in u) set.name = (u.name ?? u.display_name ?? null) as string | null;
      if ('description' in u || 'display_description' in u) set.description = (u.description ?? u.display_description ?? null) as string | null;
      await snapshots.update(db.kysely, s.id, set);
      return { snapshot: (await views(req, [(await snapshots.get(db.kysely, s.id))!]))[0] };
    });
    app.delete<{ Params: { id: string } }>('/snapshots/:id', async (req, reply) => {
      await volumeManager.requestSnapshotDelete(req.caller, req.params.id);
      return reply.code(202).send();
    });
    app.post<{ Params: { id: string } }>('/snapshots/:id/action', async (req, reply) => {
      const [name, arg] = actionOf(req.body);
      if (name === 'os-reset_status') {
        const a = validate<{ status: string }>(RESET_STATUS, arg);
        await volumeManager.resetSnapshotStatus(req.caller, req.params.id, a.status);
      } else if (name === 'os-force_delete') {
        await volumeManager.requestSnapshotDelete(req.caller, req.params.id);
      } else {
        throw new InvalidInputError(`There is no such action: ${name}`);
      }
      return reply.code(202).send();
    });
    metadataRoutes(app, deps, { path: '/snapshots', kind: 'Snapshot', repo: snapshots, find: (req, id) => volumeManager.getSnapshot(req.caller, id) });
  };
}
