/**
 * Backups (Cinder's backup API): create, list, detail, show, update (3.9,
 * metadata 3.43), delete, restore, the admin actions `os-reset_status`
 * and `os-force_delete`, and export/import of backup records (admin); and
 * Basalt's own `GET /backups/{id}/progress` (how far a running backup or
 * restore is). Each action answers with Cinder's view for it: create
 * and update the summary (`id`, `name`, `links`), restore the restore view,
 * show and detail the detailed view with the microversioned keys.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { BACKUP_RESET_STATUSES } from '../backup/index.ts';
import { cinderTime } from '../common/index.ts';
import { BACKUP_SORT_KEYS, progressOf, progressRate, type BackupFilter, type BackupRow } from '../db/index.ts';
import { InvalidInputError, NotFoundError } from '../errors/index.ts';
import { baseUrl, type ApiDeps } from './context.ts';
import { EXPERIMENTAL } from './experimental.ts';
import { queryValue } from './pagination.ts';
import { resourceList, type ResourceListOptions } from './resource-list.ts';
import { metadataSchema, nameSchema } from './validation.ts';
import { actionBodies, body, requestedAction, validAction, validBody, versionedBody } from './body-declaration.ts';

/** Cinder's `parameter_types.boolean`: a JSON boolean or one of its words. */
const BOOLEAN_WORDS = ['true', 'false', 't', 'f', 'yes', 'no', 'y', 'n', 'on', 'off', '1', '0'];
const boolish = { anyOf: [{ type: 'boolean' }, { type: 'string', enum: [...new Set([...BOOLEAN_WORDS, ...BOOLEAN_WORDS.map((w) => w.toUpperCase()), 'True', 'False', 'Yes', 'No', 'On', 'Off'])] }] };
const isTrue = (x: unknown): boolean => x === true || (typeof x === 'string' && ['true', 't', 'yes', 'y', 'on', '1'].includes(x.toLowerCase()));
const uuid = { type: 'string', format: 'uuid' };
const uuidOrNull = { anyOf: [uuid, { type: 'null' }] };

function createSchema(metadata: boolean, zone: boolean): object {
  return {
    type: 'object', required: ['backup'], additionalProperties: false,
    properties: {
      backup: {
        type: 'object', required: ['volume_id'], additionalProperties: false,
        properties: {
          volume_id: uuid, container: { type: ['string', 'null'], maxLength: 255 }, description: nameSchema, incremental: boolish, force: boolish,
          name: nameSchema, snapshot_id: uuidOrNull,
          ...(metadata ? { metadata: { anyOf: [metadataSchema, { type: 'null' }] } } : {}),
          ...(zone ? { availability_zone: { type: ['string', 'null'], maxLength: 255 } } : {}),
        },
      },
    },
  };
}
const CREATE = createSchema(false, false);
const CREATE_343 = createSchema(true, false);
const CREATE_351 = createSchema(true, true);

function updateSchema(metadata: boolean): object {
  return {
    type: 'object', required: ['backup'], additionalProperties: false,
    properties: {
      backup: {
        type: 'object', additionalProperties: false,
        properties: { name: nameSchema, description: nameSchema, ...(metadata ? { metadata: metadataSchema } : {}) },
      },
    },
  };
}
const UPDATE = updateSchema(false);
const UPDATE_343 = updateSchema(true);

const RESTORE = {
  type: 'object', required: ['restore'], additionalProperties: false,
  properties: {
    restore: { type: ['object', 'null'], additionalProperties: false, properties: { name: nameSchema, volume_id: uuidOrNull } },
  },
};

const IMPORT = {
  type: 'object', required: ['backup-record'], additionalProperties: false,
  properties: {
    'backup-record': {
      type: 'object', required: ['backup_service', 'backup_url'], additionalProperties: false,
      properties: { backup_service: { type: 'string', minLength: 0, maxLength: 255 }, backup_url: { type: 'string', minLength: 1, maxLength: 65535 } },
    },
  },
};

/** `os-reset_status`: the statuses an admin may set (Cinder's). */
const RESET_STATUS = {
  type: 'object', required: ['status'], additionalProperties: false,
  properties: { status: { enum: BACKUP_RESET_STATUSES } },
};

function links(req: FastifyRequest, b: { id: string; project_id: string }): { href: string; rel: string }[] {
  const base = baseUrl(req);
  return [
    { href: `${base}/v3/${b.project_id}/backups/${b.id}`, rel: 'self' },
    { href: `${base}/${b.project_id}/backups/${b.id}`, rel: 'bookmark' },
  ];
}

/** The summary view (list, create, update). */
function summaryView(req: FastifyRequest, b: BackupRow): Record<string, unknown> {
  return { id: b.id, name: b.name, links: links(req, b) };
}

/** The detailed view (show, detail list), with the keys each microversion adds. */
function detailView(req: FastifyRequest, b: BackupRow, metadata: Record<string, string>, hasDependants: boolean): Record<string, unknown> {
  const view: Record<string, unknown> = {
    id: b.id, status: b.status, size: b.size, object_count: b.object_count, availability_zone: b.availability_zone,
    container: b.container, created_at: cinderTime(b.created_at), updated_at: cinderTime(b.updated_at), name: b.name,
    description: b.description, fail_reason: b.fail_reason, volume_id: b.volume_id, links: links(req, b),
    is_incremental: b.parent_id !== null, has_dependent_backups: hasDependants, snapshot_id: b.snapshot_id,
    data_timestamp: cinderTime(b.data_timestamp),
  };
  if (req.apiVersion.atLeast('3.43')) view.metadata = metadata;
  // Cinder's backup attributes policy: admins only.
  if (req.apiVersion.atLeast('3.18') && req.caller.isAdmin) view['os-backup-project-attr:project_id'] = b.project_id;
  if (req.apiVersion.atLeast('3.56') && req.caller.isAdmin) view.user_id = b.user_id;
  return view;
}

/** Registers the routes. */
export function backupRoutes(deps: ApiDeps) {
  const { db, backups, backupManager, config } = deps;
  const details = async (req: FastifyRequest, rows: BackupRow[]): Promise<Record<string, unknown>[]> => {
    const ids = rows.map((r) => r.id);
    const [md, dependants] = await Promise.all([backups.metadataOf(db.kysely, ids), backups.withDependants(db.kysely, ids)]);
    return rows.map((r) => detailView(req, r, md.get(r.id)!, dependants.has(r.id)));
  };
  return async (app: FastifyInstance): Promise<void> => {
    app.post('/backups', versionedBody({ before: '3.43', schema: CREATE }, { since: '3.43', before: '3.51', schema: CREATE_343 }, { since: '3.51', schema: CREATE_351 }), async (req, reply) => {
      const b = validBody<{ backup: Record<string, unknown> }>(req).backup;
      const row = await backupManager.requestCreate(req.caller, {
        volumeId: b.volume_id as string,
        snapshotId: (b.snapshot_id ?? null) as string | null,
        name: (b.name ?? null) as string | null,
        description: (b.description ?? null) as string | null,
        container: (b.container ?? null) as string | null,
        incremental: isTrue(b.incremental),
        force: isTrue(b.force),
        metadata: (b.metadata ?? {}) as Record<string, string>,
        availabilityZone: (b.availability_zone ?? null) as string | null,
      });
      return reply.code(202).send({ backup: summaryView(req, row) });
    });

    const listing: ResourceListOptions<BackupRow, BackupFilter> = {
      db: db.kysely, repo: backups, collection: 'backups', sortKeys: BACKUP_SORT_KEYS, maxLimit: config.DEFAULT.osapi_max_limit,
      narrow(q, filter) {
        const volumeId = queryValue(q, 'volume_id');
        if (volumeId !== undefined) filter.volumeId = volumeId;
      },
      summaries: async (req, rows) => rows.map((r) => summaryView(req, r)),
      details,
    };
    app.get('/backups', resourceList(listing, false));
    app.get('/backups/detail', resourceList(listing, true));

    app.get<{ Params: { id: string } }>('/backups/:id', async (req) => ({
      backup: (await details(req, [await backupManager.get(req.caller, req.params.id)]))[0],
    }));
    // Basalt's own, beside Cinder's views (which carry no progress): how far a running backup or restore is.
    // Experimental: its shape may change without a microversion (docs/experimental.md).
    app.get<{ Params: { id: string } }>('/backups/:id/progress', EXPERIMENTAL, async (req) => {
      const b = await backupManager.get(req.caller, req.params.id);
      const p = await progressOf(db.kysely, b.id);
      return {
        progress: p ? {
          status: b.status, operation: p.operation, done_bytes: p.doneBytes, total_bytes: p.totalBytes,
          percent: p.totalBytes ? Math.floor((p.doneBytes * 100) / p.totalBytes) : 100, updated_at: p.updatedAt,
          started_at: p.startedAt ?? null, bytes_per_second: progressRate(p) ?? null,
        } : null,
      };
    });
    app.put<{ Params: { id: string } }>('/backups/:id', versionedBody({ before: '3.43', schema: UPDATE }, { since: '3.43', schema: UPDATE_343 }), async (req) => {
      if (!req.apiVersion.atLeast('3.9')) throw new NotFoundError('The resource could not be found.');
      const u = validBody<{ backup: Record<string, unknown> | null }>(req).backup ?? {};
      const set: { name?: string | null; description?: string | null; metadata?: Record<string, string> } = {};
      if ('name' in u) set.name = u.name as string | null;
      if ('description' in u) set.description = u.description as string | null;
      if ('metadata' in u) set.metadata = u.metadata as Record<string, string>;
      return { backup: summaryView(req, await backupManager.update(req.caller, req.params.id, set)) };
    });
    app.delete<{ Params: { id: string } }>('/backups/:id', async (req, reply) => {
      await backupManager.requestDelete(req.caller, req.params.id);
      return reply.code(202).send();
    });
    app.post<{ Params: { id: string } }>('/backups/:id/restore', body(RESTORE), async (req, reply) => {
      const r = validBody<{ restore: { name?: string | null; volume_id?: string | null } | null }>(req).restore ?? {};
      const restore = await backupManager.requestRestore(req.caller, req.params.id, { volumeId: r.volume_id ?? null, name: r.name ?? null });
      return reply.code(202).send({ restore });
    });
    app.get<{ Params: { id: string } }>('/backups/:id/export_record', async (req) => ({
      'backup-record': await backupManager.exportRecord(req.caller, req.params.id),
    }));
    app.post('/backups/import_record', body(IMPORT), async (req, reply) => {
      const r = validBody<{ 'backup-record': { backup_service: string; backup_url: string } }>(req)['backup-record'];
      return reply.code(201).send({ backup: summaryView(req, await backupManager.importRecord(req.caller, r)) });
    });
    app.post<{ Params: { id: string } }>('/backups/:id/action', actionBodies({ 'os-reset_status': { schema: RESET_STATUS }, 'os-force_delete': {} }), async (req, reply) => {
      const [name, arg] = requestedAction(req);
      if (name === 'os-reset_status') {
        const a = validAction<{ status: 'available' | 'error' }>(req, arg);
        await backupManager.resetStatus(req.caller, req.params.id, a.status);
      } else if (name === 'os-force_delete') {
        await backupManager.requestDelete(req.caller, req.params.id, { force: true });
      } else {
        throw new InvalidInputError(`There is no such action: ${name}`);
      }
      return reply.code(202).send();
    });
  };
}
