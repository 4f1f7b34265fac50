/**
 * Generic volume groups (3.13): create, list, detail, show, update (rename,
 * add and remove volumes), delete and reset status through `…/action`,
 * groups from a group snapshot or another group (3.14, `POST /groups/action`),
 * and group replication's actions (3.38: `src/volume/group-replication.ts`).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cinderTime } from '../common/index.ts';
import { GROUP_SORT_KEYS, type GroupRow, type ResourceFilter } from '../db/index.ts';
import { InvalidInputError, NotFoundError } from '../errors/index.ts';
import { GroupReplication } from '../volume/index.ts';
import type { ApiDeps } from './context.ts';
import { queryValue, truthy } from './pagination.ts';
import { resourceList, type ResourceListOptions } from './resource-list.ts';
import { nameSchema } from './validation.ts';
import { actionBodies, body, requestedAction, validAction, validBody, type ActionDeclaration } from './body-declaration.ts';

const boolish = { anyOf: [{ type: 'boolean' }, { type: 'string', enum: ['true', 'false', 'True', 'False', '1', '0', 'yes', 'no', 'on', 'off'] }] };
const uuid = { type: 'string', format: 'uuid' };

const CREATE = {
  type: 'object', required: ['group'], additionalProperties: false,
  properties: {
    group: {
      type: 'object', required: ['group_type', 'volume_types'], additionalProperties: false,
      properties: {
        name: nameSchema, description: nameSchema,
        group_type: { type: 'string', minLength: 1, maxLength: 255 },
        volume_types: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', minLength: 1, maxLength: 255 } },
        availability_zone: { type: ['string', 'null'], minLength: 1, maxLength: 255 },
      },
    },
  },
};
const CREATE_FROM_SOURCE = {
  type: 'object', additionalProperties: false,
  properties: { name: nameSchema, description: nameSchema, group_snapshot_id: uuid, source_group_id: uuid },
  oneOf: [{ required: ['group_snapshot_id'] }, { required: ['source_group_id'] }],
};
const UPDATE = {
  type: 'object', required: ['group'], additionalProperties: false,
  properties: {
    group: {
      type: 'object', additionalProperties: false,
      properties: { name: nameSchema, description: nameSchema, add_volumes: nameSchema, remove_volumes: nameSchema },
      anyOf: [{ required: ['name'] }, { required: ['description'] }, { required: ['add_volumes'] }, { required: ['remove_volumes'] }],
    },
  },
};
const DELETE = { type: 'object', additionalProperties: false, properties: { 'delete-volumes': boolish } };
/** Cinder's group statuses. */
const RESET_STATUS = {
  type: 'object', required: ['status'], additionalProperties: false,
  properties: { status: { enum: ['error', 'available', 'creating', 'deleting', 'deleted', 'updating', 'in-use', 'error_deleting'] } },
};

/** Cinder's body of `enable_replication`, `disable_replication` and `list_replication_targets` (3.38): an empty object or null. */
const EMPTY_ACTION = { type: ['object', 'null'], additionalProperties: false, properties: {} };
/** Cinder's body of `failover_replication` (3.38). */
const FAILOVER_REPLICATION = {
  type: ['object', 'null'], additionalProperties: false,
  properties: { allow_attached_volume: boolish, secondary_backend_id: { type: ['string', 'null'], maxLength: 255 } },
};
/** The group actions of replication (3.38, GROUP_REPLICATION): below it they do not exist (404), as in Cinder. */
const REPLICATION_ACTIONS: Record<string, ActionDeclaration> = {
  enable_replication: { schema: EMPTY_ACTION, since: '3.38' },
  disable_replication: { schema: EMPTY_ACTION, since: '3.38' },
  failover_replication: { schema: FAILOVER_REPLICATION, since: '3.38', nullIsEmpty: true },
  list_replication_targets: { schema: EMPTY_ACTION, since: '3.38' },
};

/** Cinder's boolean parameter: true, or one of the strings that mean it. */
function isTrue(v: unknown): boolean {
  return v === true || (typeof v === 'string' && ['true', '1', 'yes', 'on'].includes(v.toLowerCase()));
}

/** A name or description as stored: trimmed, as Cinder does. */
function text(v: unknown): string | null {
  return typeof v === 'string' ? v.trim() : null;
}

/** Comma-separated volume ids (`add_volumes`, `remove_volumes`). */
function ids(v: unknown): string[] {
  return typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : [];
}

/** Registers the routes. */
export function groupRoutes(deps: ApiDeps) {
  const { db, groups, groupManager, config } = deps;
  const replication = deps.replication && new GroupReplication({
    db, queue: deps.replication.queue, services: deps.services, serviceDownMs: config.DEFAULT.service_down_time * 1000,
    groupTypes: deps.groupTypes, types: deps.types, kinds: deps.replication.kinds,
  });

  /** Detailed views, with volume types (and, at 3.25 with `list_volume`, members) loaded in bulk. */
  const views = async (req: FastifyRequest, rows: GroupRow[]): Promise<Record<string, unknown>[]> => {
    const v = req.apiVersion;
    const types = await groups.volumeTypesOf(db.kysely, rows.map((r) => r.id));
    const listVolumes = v.atLeast('3.25') && truthy(queryValue(req.query as Record<string, unknown>, 'list_volume'));
    const members = listVolumes ? await groups.memberIdsOf(db.kysely, rows.map((r) => r.id)) : undefined;
    return rows.map((g) => {
      const view: Record<string, unknown> = {
        id: g.id, status: g.status, availability_zone: g.availability_zone, created_at: cinderTime(g.created_at),
        name: g.name, description: g.description, group_type: g.group_type_id, volume_types: types.get(g.id),
      };
      if (v.atLeast('3.14')) { view.group_snapshot_id = g.group_snapshot_id; view.source_group_id = g.source_group_id; }
      if (members) view.volumes = members.get(g.id);
      if (v.atLeast('3.38')) view.replication_status = g.replication_status ?? 'disabled';
      if (v.atLeast('3.58') && req.caller.isAdmin) view.project_id = g.project_id;
      return view;
    });
  };
  const summary = (g: GroupRow) => ({ id: g.id, name: g.name });

  return async (app: FastifyInstance): Promise<void> => {
    app.addHook('preHandler', async (req) => {
      if (!req.apiVersion.atLeast('3.13')) throw new NotFoundError('The resource could not be found.');
    });

    app.post('/groups', body(CREATE), async (req, reply) => {
      const b = validBody<{ group: Record<string, unknown> }>(req).group;
      const g = await groupManager.requestCreate(req.caller, {
        name: text(b.name), description: text(b.description), groupType: b.group_type as string,
        volumeTypes: b.volume_types as string[], availabilityZone: (b.availability_zone ?? null) as string | null,
      });
      return reply.code(202).send({ group: summary(g) });
    });

    const listing: ResourceListOptions<GroupRow, ResourceFilter> = {
      db: db.kysely, repo: groups, collection: 'groups', sortKeys: GROUP_SORT_KEYS, maxLimit: config.DEFAULT.osapi_max_limit,
      narrow() { /* name, status and the shared filters only */ },
      summaries: async (_req, rows) => rows.map(summary),
      details: views,
    };
    app.get('/groups', resourceList(listing, false));
    app.get('/groups/detail', resourceList(listing, true));
    app.get<{ Params: { id: string } }>('/groups/:id', async (req) => ({ group: (await views(req, [await groupManager.get(req.caller, req.params.id)]))[0] }));

    app.put<{ Params: { id: string } }>('/groups/:id', body(UPDATE), async (req, reply) => {
      const b = validBody<{ group: Record<string, unknown> }>(req).group;
      await groupManager.requestUpdate(req.caller, req.params.id, {
        ...('name' in b ? { name: text(b.name) } : {}), ...('description' in b ? { description: text(b.description) } : {}),
        addVolumes: ids(b.add_volumes), removeVolumes: ids(b.remove_volumes),
      });
      return reply.code(202).send();
    });

    app.post<{ Params: { id: string } }>('/groups/:id/action', actionBodies({
      delete: { schema: DELETE, nullIsEmpty: true },
      reset_status: { schema: RESET_STATUS, since: '3.20' },
      ...REPLICATION_ACTIONS,
    }), async (req, reply) => {
      const key = req.body !== null && typeof req.body === 'object' ? Object.keys(req.body)[0] : undefined;
      if (key && key in REPLICATION_ACTIONS && !req.apiVersion.atLeast('3.38')) throw new NotFoundError('The resource could not be found.');
      const [name, arg] = requestedAction(req);
      if (key && key in REPLICATION_ACTIONS && replication) {
        if (name === 'list_replication_targets') {
          validAction(req, arg);
          return reply.code(200).send(await replication.targets(req.caller, req.params.id));
        }
        if (name === 'failover_replication') {
          const a = validAction<{ allow_attached_volume?: unknown; secondary_backend_id?: string | null }>(req, arg);
          await replication.requestFailover(req.caller, req.params.id, { allowAttachedVolume: isTrue(a.allow_attached_volume), secondaryBackendId: a.secondary_backend_id ?? null });
        } else {
          validAction(req, arg);
          if (name === 'enable_replication') await replication.requestEnable(req.caller, req.params.id);
          else await replication.requestDisable(req.caller, req.params.id);
        }
        return reply.code(202).send();
      }
      if (name === 'delete') {
        const a = validAction<{ 'delete-volumes'?: unknown }>(req, arg);
        await groupManager.requestDelete(req.caller, req.params.id, isTrue(a['delete-volumes']));
      } else if (name === 'reset_status') {
        const a = validAction<{ status: string }>(req, arg);
        await groupManager.resetStatus(req.caller, req.params.id, a.status.toLowerCase());
      } else {
        throw new InvalidInputError(`There is no such action: ${name}`);
      }
      return reply.code(202).send();
    });

    app.post('/groups/action', actionBodies({ 'create-from-src': { schema: CREATE_FROM_SOURCE, since: '3.14' } }), async (req, reply) => {
      const [, arg] = requestedAction(req);
      const a = validAction<{ name?: string | null; description?: string | null; group_snapshot_id?: string; source_group_id?: string }>(req, arg);
      const g = await groupManager.requestCreateFromSource(req.caller, {
        name: text(a.name), description: text(a.description),
        ...(a.group_snapshot_id ? { groupSnapshotId: a.group_snapshot_id } : { sourceGroupId: a.source_group_id! }),
      });
      return reply.code(202).send({ group: summary(g) });
    });
  };
}
