/**
 * Group snapshots (3.14): create, list, detail, show, delete, and an admin's
 * reset status (3.19). A group snapshot is one consistent point in time
 * across every volume of its group (see `src/volume/group-handlers.ts`).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cinderTime } from '../common/index.ts';
import { GROUP_SNAPSHOT_SORT_KEYS, type GroupSnapshotFilter, type GroupSnapshotRow } from '../db/index.ts';
import { NotFoundError } from '../errors/index.ts';
import type { ApiDeps } from './context.ts';
import { queryValue } from './pagination.ts';
import { resourceList, type ResourceListOptions } from './resource-list.ts';
import { nameSchema } from './validation.ts';
import { actionBodies, body, requestedAction, validAction, validBody } from './body-declaration.ts';

const CREATE = {
  type: 'object', required: ['group_snapshot'], additionalProperties: false,
  properties: {
    group_snapshot: {
      type: 'object', required: ['group_id'], additionalProperties: false,
      properties: { group_id: { type: 'string', format: 'uuid' }, name: nameSchema, description: nameSchema },
    },
  },
};
/** Cinder's group snapshot statuses. */
const RESET_STATUS = {
  type: 'object', required: ['status'], additionalProperties: false,
  properties: { status: { enum: ['error', 'available', 'creating', 'deleting', 'deleted', 'updating', 'error_deleting'] } },
};

/** The group snapshot in detail; `project_id` for admins from 3.58. */
function detailView(req: FastifyRequest, s: GroupSnapshotRow): Record<string, unknown> {
  const view: Record<string, unknown> = {
    id: s.id, group_id: s.group_id, group_type_id: s.group_type_id, status: s.status, created_at: cinderTime(s.created_at),
    name: s.name, description: s.description,
  };
  if (req.apiVersion.atLeast('3.58') && req.caller.isAdmin) view.project_id = s.project_id;
  return view;
}

const summary = (s: GroupSnapshotRow) => ({ id: s.id, name: s.name, group_type_id: s.group_type_id });

/** Registers the routes. */
export function groupSnapshotRoutes(deps: ApiDeps) {
  const { db, groupSnapshots, config } = deps;
  const manager = deps.groupManager.snapshots;
  return async (app: FastifyInstance): Promise<void> => {
    app.addHook('preHandler', async (req) => {
      if (!req.apiVersion.atLeast('3.14')) throw new NotFoundError('The resource could not be found.');
    });

    app.post('/group_snapshots', body(CREATE), async (req, reply) => {
      const b = validBody<{ group_snapshot: { group_id: string; name?: string | null; description?: string | null } }>(req).group_snapshot;
      const s = await manager.requestSnapshot(req.caller, {
        groupId: b.group_id, name: b.name?.trim() ?? null, description: b.description?.trim() ?? null,
      });
      return reply.code(202).send({ group_snapshot: summary(s) });
    });

    const listing: ResourceListOptions<GroupSnapshotRow, GroupSnapshotFilter> = {
      db: db.kysely, repo: groupSnapshots, collection: 'group_snapshots', sortKeys: GROUP_SNAPSHOT_SORT_KEYS, maxLimit: config.DEFAULT.osapi_max_limit,
      narrow(q, filter) {
        const groupId = queryValue(q, 'group_id');
        if (groupId !== undefined) filter.groupId = groupId;
      },
      // Cinder's summary list shows only the id and name.
      summaries: async (_req, rows) => rows.map((s) => ({ id: s.id, name: s.name })),
      details: async (req, rows) => rows.map((s) => detailView(req, s)),
    };
    app.get('/group_snapshots', resourceList(listing, false));
    app.get('/group_snapshots/detail', resourceList(listing, true));
    app.get<{ Params: { id: string } }>('/group_snapshots/:id', async (req) => ({
      group_snapshot: detailView(req, await manager.get(req.caller, req.params.id)),
    }));
    app.delete<{ Params: { id: string } }>('/group_snapshots/:id', async (req, reply) => {
      await manager.requestSnapshotDelete(req.caller, req.params.id);
      return reply.code(202).send();
    });
    app.post<{ Params: { id: string } }>('/group_snapshots/:id/action', actionBodies({ reset_status: { schema: RESET_STATUS, since: '3.19' } }), async (req, reply) => {
      const [, arg] = requestedAction(req);
      const a = validAction<{ status: string }>(req, arg);
      await manager.resetSnapshotStatus(req.caller, req.params.id, a.status);
      return reply.code(202).send();
    });
  };
}
