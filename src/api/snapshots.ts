/** Snapshots: create, show, list, detail, update, delete, metadata. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cinderTime } from '../common/index.ts';
import { SNAPSHOT_SORT_KEYS, type SnapshotFilter, type SnapshotRow } from '../db/index.ts';
import { InvalidInputError, NotFoundError } from '../errors/index.ts';
import { SNAPSHOT_RESET_STATUSES, type SnapshotStatus } from '../volume/index.ts';
import type { ApiDeps } from './context.ts';
import { metadataRoutes } from './metadata.ts';
import { queryValue } from './pagination.ts';
import { resourceList, type ResourceListOptions } from './resource-list.ts';
import { metadataSchema, nameSchema } from './validation.ts';
import { actionBodies, body, requestedAction, validAction, validBody, versionedBody } from './body-declaration.ts';

const boolish = { anyOf: [{ type: 'boolean' }, { type: 'string', enum: ['true', 'false', 'True', 'False', '1', '0'] }] };

function createSchema(strict: boolean): object {
  return {
    type: 'object', required: ['snapshot'], additionalProperties: !strict,
    properties: {
      snapshot: {
        type: 'object', required: ['volume_id'], additionalProperties: !strict,
        properties: {
          // A null volume_id names no volume: 404 below, as in Cinder.
          volume_id: { anyOf: [{ type: 'string', format: 'uuid' }, { type: 'null' }] }, force: boolish, name: nameSchema, description: nameSchema,
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

/**
 * The snapshot as the API shows it for `action`: the summary list has the base
 * fields only; create and update add the microversioned fields; show and detail
 * also the extended attributes (progress, project), as Cinder answers.
 */
export function snapshotView(req: FastifyRequest, s: SnapshotRow, metadata: Record<string, string>, action: 'summary' | 'create' | 'show'): Record<string, unknown> {
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
  };
  if (action === 'summary') return view;
  if (action === 'show') {
    view['os-extended-snapshot-attributes:progress'] = s.progress ?? (s.status === 'available' ? '100%' : '0%');
    view['os-extended-snapshot-attributes:project_id'] = s.project_id;
  }
  if (req.apiVersion.atLeast('3.14')) view.group_snapshot_id = s.group_snapshot_id;
  if (req.apiVersion.atLeast('3.41')) view.user_id = s.user_id;
  if (req.apiVersion.atLeast('3.65')) view.consumes_quota = true;
  return view;
}

/** `os-reset_status`: the statuses an admin may set (Cinder's list, declared with the operation table). */
const RESET_STATUS = {
  type: 'object', required: ['status'], additionalProperties: false,
  properties: { status: { enum: SNAPSHOT_RESET_STATUSES } },
};

/** `os-update_snapshot_status` (a host reporting on a snapshot it takes itself). */
const UPDATE_STATUS = {
  type: 'object', required: ['status'], additionalProperties: false,
  properties: { status: { enum: ['creating', 'available', 'error', 'deleting', 'error_deleting'] }, progress: { type: 'string', maxLength: 255 } },
};

/** Registers the routes. */
export function snapshotRoutes(deps: ApiDeps) {
  const { db, snapshots, volumeManager, config } = deps;
  const views = async (req: FastifyRequest, rows: SnapshotRow[], action: 'summary' | 'create' | 'show' = 'show') => {
    const md = await snapshots.metadataOf(db.kysely, rows.map((r) => r.id));
    return rows.map((r) => snapshotView(req, r, md.get(r.id)!, action));
  };
  return async (app: FastifyInstance): Promise<void> => {
    app.post('/snapshots', versionedBody({ before: '3.53', schema: CREATE_LEGACY }, { since: '3.53', schema: CREATE_STRICT }), async (req, reply) => {
      const body = validBody<{ snapshot: Record<string, unknown> }>(req).snapshot;
      if (body.volume_id === null) throw new NotFoundError('Volume could not be found.');
      const force = body.force === undefined ? undefined
        : body.force === true || (typeof body.force === 'string' && ['true', '1'].includes(body.force.toLowerCase()));
      // From 3.66 in-use volumes need no force; an explicit force=false is refused there
      // (and force=true silently accepted), as Cinder does.
      const inUseAllowed = req.apiVersion.atLeast('3.66');
      if (inUseAllowed && force === false) {
        throw new InvalidInputError("Invalid input received: Since microversion 3.66 the 'force' flag is invalid for this request; a true value is accepted and ignored.");
      }
      const s = await volumeManager.requestSnapshot(req.caller, {
        volumeId: body.volume_id as string,
        force: inUseAllowed || force === true,
        name: (body.name ?? body.display_name ?? null) as string | null,
        description: (body.description ?? body.display_description ?? null) as string | null,
        metadata: (body.metadata ?? {}) as Record<string, string>,
      });
      return reply.code(202).send({ snapshot: (await views(req, [s], 'create'))[0] });
    });

    const listing: ResourceListOptions<SnapshotRow, SnapshotFilter> = {
      db: db.kysely, repo: snapshots, collection: 'snapshots', sortKeys: SNAPSHOT_SORT_KEYS, maxLimit: config.DEFAULT.osapi_max_limit,
      narrow(q, filter) {
        const volumeId = queryValue(q, 'volume_id');
        if (volumeId !== undefined) filter.volumeId = volumeId;
      },
      summaries: (req, rows) => views(req, rows, 'summary'),
      details: views,
    };
    const list = (detail: boolean) => resourceList(listing, detail);
    app.get('/snapshots', list(false));
    app.get('/snapshots/detail', list(true));

    app.get<{ Params: { id: string } }>('/snapshots/:id', async (req) => ({
      snapshot: (await views(req, [await volumeManager.getSnapshot(req.caller, req.params.id)]))[0],
    }));
    app.put<{ Params: { id: string } }>('/snapshots/:id', body(UPDATE), async (req) => {
      const u = validBody<{ snapshot: Record<string, unknown> }>(req).snapshot;
      const s = await volumeManager.getSnapshot(req.caller, req.params.id);
      const set: { name?: string | null; description?: string | null } = {};
      if ('name' in u || 'display_name' in u) set.name = (u.name ?? u.display_name ?? null) as string | null;
      if ('description' in u || 'display_description' in u) set.description = (u.description ?? u.display_description ?? null) as string | null;
      await snapshots.update(db.kysely, s.id, set);
      return { snapshot: (await views(req, [(await snapshots.get(db.kysely, s.id))!], 'create'))[0] };
    });
    app.delete<{ Params: { id: string } }>('/snapshots/:id', async (req, reply) => {
      await volumeManager.requestSnapshotDelete(req.caller, req.params.id);
      return reply.code(202).send();
    });
    app.post<{ Params: { id: string } }>('/snapshots/:id/action', actionBodies({
      'os-reset_status': { schema: RESET_STATUS },
      'os-force_delete': {},
      'os-unmanage': {},
      'os-update_snapshot_status': { schema: UPDATE_STATUS },
    }), async (req, reply) => {
      const [name, arg] = requestedAction(req);
      if (name === 'os-reset_status') {
        const a = validAction<{ status: SnapshotStatus }>(req, arg);
        await volumeManager.resetSnapshotStatus(req.caller, req.params.id, a.status);
      } else if (name === 'os-force_delete') {
        await volumeManager.requestSnapshotDelete(req.caller, req.params.id, { force: true });
      } else if (name === 'os-unmanage') {
        await volumeManager.requestSnapshotUnmanage(req.caller, req.params.id);
      } else if (name === 'os-update_snapshot_status') {
        const a = validAction<{ status: string; progress?: string }>(req, arg);
        await volumeManager.updateSnapshotStatus(req.caller, req.params.id, a.status, a.progress);
      } else {
        throw new InvalidInputError(`There is no such action: ${name}`);
      }
      return reply.code(202).send();
    });
    metadataRoutes(app, deps, { path: '/snapshots', kind: 'Snapshot', repo: snapshots, find: (req, id) => volumeManager.getSnapshot(req.caller, id) });
  };
}
