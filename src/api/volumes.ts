/**
 * Volumes: create, show, list, detail, update, delete, metadata, and actions
 * (`os-extend`).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cinderTime, ownValue, type Caller } from '../common/index.ts';
import { VOLUME_SORT_KEYS, type AttachmentRow, type VolumeFilter, type VolumeRow } from '../db/index.ts';
import { InvalidInputError, InvalidStatusError, NotFoundError } from '../errors/index.ts';
import type { Tx } from '../jobs/index.ts';
import { VOLUME_RESET_STATUSES, type Connector, type VolumeStatus } from '../volume/index.ts';
import { clusterCan, type PoolFlag } from '../services/index.ts';
import { baseUrl, type ApiDeps } from './context.ts';
import type { ApiVersion } from './microversion.ts';
import { metadataRoutes } from './metadata.ts';
import { listFilter, resourceList, type ResourceListOptions } from './resource-list.ts';
import { queryValue, truthy } from './pagination.ts';
import { metadataSchema, nameSchema, sizeSchema, toSize } from './validation.ts';
import { actionBodies, requestedAction, validAction, validBody, versionedBody, type ActionDeclaration } from './body-declaration.ts';

const uuidOrNull = { anyOf: [{ type: 'string', format: 'uuid' }, { type: 'null' }] };

/** Fields of `volume` in a create body; `additionalProperties` is closed from 3.53. */
const createProperties = {
  size: sizeSchema,
  name: nameSchema,
  description: nameSchema,
  display_name: nameSchema,
  display_description: nameSchema,
  metadata: metadataSchema,
  availability_zone: { type: ['string', 'null'], minLength: 1, maxLength: 255 },
  volume_type: { type: ['string', 'null'], maxLength: 255 },
  snapshot_id: uuidOrNull,
  source_volid: uuidOrNull,
  source_replica: uuidOrNull,
  consistencygroup_id: uuidOrNull,
  group_id: uuidOrNull,
  backup_id: uuidOrNull,
  imageRef: { type: ['string', 'null'] },
  image_id: { type: ['string', 'null'] },
  multiattach: { type: 'boolean' },
  bootable: { type: 'boolean' },
} as const;

function createSchema(strict: boolean): object {
  return {
    type: 'object',
    required: ['volume'],
    additionalProperties: !strict,
    properties: {
      volume: { type: 'object', required: ['size'], additionalProperties: !strict, properties: createProperties },
      'OS-SCH-HNT:scheduler_hints': { type: ['object', 'null'] },
      scheduler_hints: { type: ['object', 'null'] },
    },
  };
}
const CREATE_SCHEMA_LEGACY = createSchema(false);
const CREATE_SCHEMA_STRICT = createSchema(true);

function updateSchema(strict: boolean): object {
  return {
    type: 'object',
    required: ['volume'],
    additionalProperties: !strict,
    properties: {
      volume: {
        type: 'object', additionalProperties: !strict,
        properties: { name: nameSchema, description: nameSchema, display_name: nameSchema, display_description: nameSchema, metadata: metadataSchema },
      },
    },
  };
}
const UPDATE_SCHEMA_LEGACY = updateSchema(false);
const UPDATE_SCHEMA_STRICT = updateSchema(true);

const REVERT_BODY = {
  type: 'object', required: ['snapshot_id'], additionalProperties: false, properties: { snapshot_id: { type: 'string', format: 'uuid' } },
};
/** `os-reset_status`: the statuses an admin may set (Cinder's list, declared with the operation table). */
const RESET_STATUS_BODY = {
  type: 'object', additionalProperties: false, minProperties: 1,
  properties: {
    status: { enum: VOLUME_RESET_STATUSES },
    attach_status: { enum: ['attached', 'detached'] },
    migration_status: { type: ['string', 'null'] },
  },
};
/** A boolean as Cinder's strict `bool_from_string` takes it. */
const strictBool = { anyOf: [{ type: 'boolean' }, { type: 'string', enum: ['true', 'false', 'True', 'False', 'TRUE', 'FALSE', '1', '0', 't', 'f', 'yes', 'no', 'on', 'off', 'y', 'n'] }] };
const asBool = (v: boolean | string): boolean => v === true || (typeof v === 'string' && ['true', '1', 't', 'yes', 'on', 'y'].includes(v.toLowerCase()));
const BOOTABLE_BODY = { type: 'object', required: ['bootable'], additionalProperties: false, properties: { bootable: strictBool } };
const READONLY_BODY = { type: 'object', required: ['readonly'], additionalProperties: false, properties: { readonly: strictBool } };
const RETYPE_BODY = {
  type: 'object', required: ['new_type'], additionalProperties: false,
  properties: { new_type: { type: 'string', minLength: 1, maxLength: 255 }, migration_policy: { enum: ['never', 'on-demand', null] } },
};
const MIGRATE_BODY = {
  type: 'object', additionalProperties: false,
  properties: { host: { type: ['string', 'null'], maxLength: 255 }, cluster: { type: 'string', maxLength: 255 }, force_host_copy: strictBool, lock_volume: strictBool },
};
const MIGRATE_COMPLETION_BODY = {
  type: 'object', required: ['new_volume'], additionalProperties: false,
  properties: { new_volume: { type: 'string', format: 'uuid' }, error: { type: ['string', 'null', 'boolean'] } },
};
const EXTEND_BODY = {
  type: 'object', required: ['new_size'], additionalProperties: false, properties: { new_size: sizeSchema },
};

// The older attach/detach actions' arguments, for clients that predate the attachments API.
const CONNECTOR_BODY = { type: 'object', required: ['connector'], properties: { connector: { type: 'object' } } };
const ATTACH_BODY = {
  type: 'object',
  properties: {
    instance_uuid: uuidOrNull,
    mountpoint: { type: ['string', 'null'], maxLength: 255 },
    host_name: { type: ['string', 'null'], maxLength: 255 },
    mode: { enum: ['rw', 'ro'] },
  },
};
const DETACH_BODY = { type: ['object', 'null'], properties: { attachment_id: uuidOrNull } };

/** The actions of `POST /volumes/{id}/action`, by body key: what each one's argument must be, and from which microversion. */
const ACTIONS: Record<string, ActionDeclaration> = {
  'os-extend': { schema: EXTEND_BODY },
  'os-reset_status': { schema: RESET_STATUS_BODY },
  'os-force_delete': {},
  'os-unmanage': {},
  'os-update_readonly_flag': { schema: READONLY_BODY },
  'os-retype': { schema: RETYPE_BODY },
  'os-migrate_volume': { schema: MIGRATE_BODY },
  revert: { schema: REVERT_BODY, since: '3.40' },
  'os-set_bootable': { schema: BOOTABLE_BODY },
  'os-reserve': {},
  'os-unreserve': {},
  'os-initialize_connection': { schema: CONNECTOR_BODY },
  'os-attach': { schema: ATTACH_BODY, nullIsEmpty: true },
  'os-begin_detaching': {},
  'os-roll_detaching': {},
  'os-detach': { schema: DETACH_BODY },
  'os-terminate_connection': { schema: CONNECTOR_BODY },
  'os-migrate_volume_completion': { schema: MIGRATE_COMPLETION_BODY },
  'os-force_detach': { schema: DETACH_BODY },
};

/**
 * Which action a volume view answers. Cinder's create and update answer with
 * the base view; show and detail add the attribute extensions (project, and for
 * admins host and migration status), and strict clients reject them elsewhere.
 */
export type VolumeViewAction = 'create' | 'update' | 'show';

/** Statuses shown as another (as Cinder's view does): a volume being managed is `creating` to its users, a failed one `error`. */
const SHOWN_STATUS: Readonly<Record<string, string>> = { managing: 'creating', error_managing: 'error' };

/** The volume as the API shows it for `action`, for this caller and microversion. */
export function volumeView(req: FastifyRequest, v: VolumeRow, metadata: Record<string, string>, typeName: string | null, attachments: AttachmentRow[] = [], action: VolumeViewAction = 'show'): Record<string, unknown> {
  const caller: Caller = req.caller;
  const version: ApiVersion = req.apiVersion;
  const view: Record<string, unknown> = {
    id: v.id,
    status: SHOWN_STATUS[v.status] ?? v.status,
    size: v.size,
    availability_zone: v.availability_zone,
    created_at: cinderTime(v.created_at),
    updated_at: cinderTime(v.updated_at),
    attachments: attachments.filter((a) => a.attach_status === 'attached').map((a) => ({
      id: v.id, attachment_id: a.id, volume_id: v.id, server_id: a.instance_uuid,
      // Where a volume is attached is an operator's business (as in Cinder).
      host_name: caller.isAdmin ? a.attached_host : null,
      device: a.mountpoint, attached_at: cinderTime(a.attach_time),
    })),
    name: v.name,
    description: v.description,
    volume_type: typeName,
    snapshot_id: v.snapshot_id,
    source_volid: v.source_volid,
    // Cinder shows the visible admin metadata (`readonly`) among the volume's metadata.
    metadata: v.readonly === null ? metadata : { ...metadata, readonly: v.readonly ? 'True' : 'False' },
    links: links(req, v),
    user_id: v.user_id,
    bootable: v.bootable ? 'true' : 'false',
    encrypted: v.encryption_key_id !== null,
    replication_status: v.replication_status ?? 'disabled',
    consistencygroup_id: null,
    multiattach: v.multiattach === 1,
  };
  if (caller.isAdmin) view.migration_status = v.migration_status;
  if (action === 'show') {
    view['os-vol-tenant-attr:tenant_id'] = v.project_id;
    if (caller.isAdmin) {
      view['os-vol-host-attr:host'] = v.host;
      view['os-vol-mig-status-attr:migstat'] = v.migration_status;
      // A moved volume keeps its id as its storage's name on the new backend: there is no other name to show.
      view['os-vol-mig-status-attr:name_id'] = null;
    }
  }
  if (version.atLeast('3.13')) view.group_id = v.group_id;
  if (version.atLeast('3.21') && caller.isAdmin) view.provider_id = null;
  if (version.atLeast('3.48')) { view.shared_targets = false; view.service_uuid = null; }
  if (version.atLeast('3.61') && caller.isAdmin) view.cluster_name = v.cluster_name;
  if (version.atLeast('3.63')) view.volume_type_id = v.volume_type_id;
  if (version.atLeast('3.65')) view.consumes_quota = true;
  return view;
}

function links(req: FastifyRequest, v: { id: string; project_id: string }): { href: string; rel: string }[] {
  const base = baseUrl(req);
  return [
    { href: `${base}/v3/${v.project_id}/volumes/${v.id}`, rel: 'self' },
    { href: `${base}/${v.project_id}/volumes/${v.id}`, rel: 'bookmark' },
  ];
}

/** Registers the volume routes (under a `/v3/{project_id}` or `/v3` prefix). */
export function volumeRoutes(deps: ApiDeps) {
  const { db, volumes, volumeManager, config } = deps;
  return async (app: FastifyInstance): Promise<void> => {
    /** Detailed views of rows, with their metadata and type names loaded in two queries. */
    const views = async (req: FastifyRequest, rows: VolumeRow[], action: VolumeViewAction = 'show') => {
      const md = await volumes.metadataOf(db.kysely, rows.map((r) => r.id));
      const typeRows = await deps.types.byIds(db.kysely, rows.flatMap((r) => r.volume_type_id ? [r.volume_type_id] : []));
      const attached = await deps.attachments.ofVolumes(db.kysely, rows.map((r) => r.id));
      return rows.map((r) => volumeView(req, r, md.get(r.id)!, r.volume_type_id ? typeRows.get(r.volume_type_id)?.name ?? null : null, attached.get(r.id), action));
    };
    const one = async (req: FastifyRequest, v: VolumeRow, action: VolumeViewAction = 'show') => ({ volume: (await views(req, [v], action))[0] });

    app.post('/volumes', versionedBody({ before: '3.53', schema: CREATE_SCHEMA_LEGACY }, { since: '3.53', schema: CREATE_SCHEMA_STRICT }), async (req, reply) => {
      const body = validBody<{ volume: Record<string, unknown> }>(req);
      const v = body.volume;
      const size = toSize('size', v.size as number | string);
      if (v.imageRef || v.image_id || v.source_replica) {
        throw new InvalidInputError('Invalid input received: creating a volume from an image or replica is not supported by this Basalt release.');
      }
      if (v.backup_id && !req.apiVersion.atLeast('3.47')) {
        throw new InvalidInputError('Invalid input received: creating a volume from a backup (backup_id) needs microversion 3.47.');
      }
      if (v.consistencygroup_id) {
        throw new InvalidInputError('Invalid input received: consistency groups are not supported by this Basalt release: use generic volume groups (group_id, 3.13).');
      }
      if (v.multiattach === true) {
        throw new InvalidInputError("Invalid input received: multiattach comes from the volume type (3.50): use a type with multiattach='<is> True'.");
      }
      const metadata = (v.metadata ?? {}) as Record<string, string>;
      const { row, typeName } = await volumeManager.requestCreate(req.caller, {
        sizeGiB: size,
        name: (v.name ?? v.display_name ?? null) as string | null,
        description: (v.description ?? v.display_description ?? null) as string | null,
        metadata,
        availabilityZone: (v.availability_zone ?? null) as string | null,
        volumeType: (v.volume_type ?? null) as string | null,
        snapshotId: (v.snapshot_id ?? null) as string | null,
        sourceVolumeId: (v.source_volid ?? null) as string | null,
        groupId: req.apiVersion.atLeast('3.13') ? (v.group_id ?? null) as string | null : null,
        backupId: (v.backup_id ?? null) as string | null,
      });
      // Built from what the create stored: a new volume has no attachment yet.
      return reply.code(202).send({ volume: volumeView(req, row, metadata, typeName, undefined, 'create') });
    });

    const listing: ResourceListOptions<VolumeRow, VolumeFilter> = {
      db: db.kysely, repo: volumes, collection: 'volumes', sortKeys: VOLUME_SORT_KEYS, maxLimit: config.DEFAULT.osapi_max_limit,
      narrow(q, filter) {
        const zone = queryValue(q, 'availability_zone');
        if (zone !== undefined) filter.availabilityZone = zone;
        const bootable = queryValue(q, 'bootable');
        if (bootable !== undefined) filter.bootable = truthy(bootable);
        const groupId = queryValue(q, 'group_id');
        if (groupId !== undefined) filter.groupId = groupId;
      },
      summaries: async (req, rows) => rows.map((r) => ({ id: r.id, name: r.name, links: links(req, r) })),
      details: views,
    };
    const list = (detail: boolean) => resourceList(listing, detail);
    app.get('/volumes', list(false));
    app.get('/volumes/detail', list(true));
    app.get('/volumes/summary', async (req) => {
      if (!req.apiVersion.atLeast('3.12')) throw NotFoundError.of('Volume', 'summary');
      const sum = await volumes.summary(db.kysely, listFilter(listing, req));
      return { 'volume-summary': { total_size: sum.sizeGiB, total_count: sum.count, ...(req.apiVersion.atLeast('3.36') ? { metadata: sum.metadata } : {}) } };
    });

    app.get<{ Params: { id: string } }>('/volumes/:id', async (req) => one(req, await volumeManager.get(req.caller, req.params.id)));

    app.put<{ Params: { id: string } }>('/volumes/:id', versionedBody({ before: '3.53', schema: UPDATE_SCHEMA_LEGACY }, { since: '3.53', schema: UPDATE_SCHEMA_STRICT }), async (req) => {
      const body = validBody<{ volume: Record<string, unknown> }>(req);
      const v = await volumeManager.get(req.caller, req.params.id);
      const u = body.volume;
      await db.kysely.transaction().execute(async (tx) => {
        const set: { name?: string | null; description?: string | null } = {};
        if ('name' in u || 'display_name' in u) set.name = (u.name ?? u.display_name ?? null) as string | null;
        if ('description' in u || 'display_description' in u) set.description = (u.description ?? u.display_description ?? null) as string | null;
        await volumes.update(tx, v.id, set);
        if (u.metadata) await volumes.replaceMetadata(tx, v.id, u.metadata as Record<string, string>);
      });
      return one(req, (await volumes.get(db.kysely, v.id))!, 'update');
    });

    app.delete<{ Params: { id: string } }>('/volumes/:id', async (req, reply) => {
      const q = req.query as Record<string, unknown>;
      const force = truthy(queryValue(q, 'force'));
      await volumeManager.requestDelete(req.caller, req.params.id, { force, cascade: truthy(queryValue(q, 'cascade')) });
      return reply.code(202).send();
    });

    metadataRoutes(app, deps, { path: '/volumes', kind: 'Volume', repo: volumes, find: (req, id) => volumeManager.get(req.caller, id) });

    /** Whether a volume service of `cluster` reports a pool with the capability. */
    const backendCan = async (tx: Tx, cluster: string, capability: PoolFlag): Promise<boolean> => clusterCan(await deps.services.list(tx), cluster, capability);

    // Actions: one key per body names the action.
    const actions: Record<string, (req: FastifyRequest<{ Params: { id: string } }>, arg: unknown) => Promise<void>> = {
      'os-extend': async (req, arg) => {
        const a = validAction<{ new_size: number | string }>(req, arg);
        await volumeManager.requestExtend(req.caller, req.params.id, toSize('new_size', a.new_size), {
          // In-use volumes extend from 3.42, where their backend can.
          inUseAllowed: req.apiVersion.atLeast('3.42') ? (tx, cluster) => backendCan(tx, cluster, 'online_extend_support') : undefined,
        });
      },
      'os-reset_status': async (req, arg) => {
        const a = validAction<{ status?: VolumeStatus; attach_status?: string }>(req, arg);
        await volumeManager.resetStatus(req.caller, req.params.id, {
          ...(a.status !== undefined ? { status: a.status } : {}), ...(a.attach_status !== undefined ? { attachStatus: a.attach_status } : {}),
        });
      },
      'os-force_delete': async (req) => {
        await volumeManager.requestDelete(req.caller, req.params.id, { force: true });
      },
      'os-unmanage': async (req) => {
        await volumeManager.requestUnmanage(req.caller, req.params.id);
      },
      'os-update_readonly_flag': async (req, arg) => {
        const a = validAction<{ readonly: boolean | string }>(req, arg);
        await db.kysely.transaction().execute(async (tx) => {
          const v = await volumeManager.lockVolume(req.caller, req.params.id, tx);
          if (v.status !== 'available') {
            throw new InvalidStatusError(`Invalid volume: Volume ${v.id} status must be available to update readonly flag, but current status is: ${v.status}.`);
          }
          await volumes.setFlags(tx, v.id, { readonly: asBool(a.readonly) ? 1 : 0 });
        });
      },
      'os-retype': async (req, arg) => {
        const a = validAction<{ new_type: string; migration_policy?: 'never' | 'on-demand' | null }>(req, arg);
        await volumeManager.requestRetype(req.caller, req.params.id, a.new_type, a.migration_policy ?? 'never');
      },
      'os-migrate_volume': async (req, arg) => {
        const a = validAction<{ host?: string | null; cluster?: string; force_host_copy?: boolean | string; lock_volume?: boolean | string }>(req, arg);
        const cluster = req.apiVersion.atLeast('3.16') ? a.cluster : undefined;
        if (a.cluster !== undefined && cluster === undefined) throw new InvalidInputError("Invalid input for field/attribute os-migrate_volume. Additional properties are not allowed ('cluster' was unexpected)");
        if (!a.host === !cluster) throw new InvalidInputError('Invalid input received: give exactly one of host and cluster.');
        await volumeManager.requestMigrate(req.caller, req.params.id, {
          ...(a.host ? { host: a.host } : {}), ...(cluster ? { cluster } : {}),
          forceHostCopy: a.force_host_copy !== undefined && asBool(a.force_host_copy), lockVolume: a.lock_volume !== undefined && asBool(a.lock_volume),
        });
      },
      revert: async (req, arg) => {
        const a = validAction<{ snapshot_id: string }>(req, arg);
        await volumeManager.requestRevert(req.caller, req.params.id, a.snapshot_id, (tx, cluster) => backendCan(tx, cluster, 'revert_to_snapshot_support'));
      },
    };
    // The older attach/detach actions, for clients that predate the attachments API.
    const legacy: Record<string, (req: FastifyRequest<{ Params: { id: string } }>, arg: unknown) => Promise<unknown>> = {
      'os-reserve': async (req) => { await deps.attachmentManager.create(req.caller, { volumeId: req.params.id, instanceUuid: null, connector: null, mode: 'rw', legacyReserve: true }); },
      'os-unreserve': (req) => deps.attachmentManager.detachVolume(req.caller, req.params.id, { onlyPending: true }),
      'os-initialize_connection': async (req, arg) => ({
        connection_info: await deps.attachmentManager.initializeConnection(req.caller, req.params.id, validAction<{ connector: Connector }>(req, arg).connector),
      }),
      'os-attach': async (req, arg) => {
        const a = validAction<{ instance_uuid?: string | null; mountpoint?: string | null; host_name?: string | null }>(req, arg);
        await deps.attachmentManager.legacyAttach(req.caller, req.params.id, { instanceUuid: a.instance_uuid ?? null, mountpoint: a.mountpoint ?? null, hostName: a.host_name ?? null });
      },
      'os-begin_detaching': (req) => deps.attachmentManager.setDetaching(req.caller, req.params.id, true),
      'os-roll_detaching': (req) => deps.attachmentManager.setDetaching(req.caller, req.params.id, false),
      'os-detach': (req, arg) => deps.attachmentManager.detachVolume(req.caller, req.params.id, { attachmentId: validAction<{ attachment_id?: string | null } | null>(req, arg)?.attachment_id ?? null }),
      'os-terminate_connection': async (req, arg) => {
        validAction(req, arg);
        await volumeManager.get(req.caller, req.params.id); // the attachment stays until os-detach, as in Cinder
      },
      'os-migrate_volume_completion': async (req, arg) => {
        // Basalt moves a volume under its own id and finishes the move itself: no
        // destination row ever waits for a compute-driven swap, so this refuses as
        // Cinder does for a destination that is not the source's migration target.
        const a = validAction<{ new_volume: string; error?: string | boolean | null }>(req, arg);
        const v = await volumeManager.get(req.caller, req.params.id);
        const target = await volumeManager.get(req.caller, a.new_volume);
        if (!v.migration_status) throw new InvalidInputError('Invalid volume: Source volume not mid-migration.');
        throw new InvalidInputError(`Invalid volume: Destination ${target.id} has migration_status ${target.migration_status}, expected target:${v.id}.`);
      },
      'os-force_detach': async (req, arg) => {
        await deps.attachmentManager.detachVolume(req.caller, req.params.id, { attachmentId: validAction<{ attachment_id?: string | null } | null>(req, arg)?.attachment_id ?? null });
      },
    };

    app.post<{ Params: { id: string } }>('/volumes/:id/action', actionBodies(ACTIONS), async (req, reply) => {
      const [name, arg] = requestedAction(req);
      if (name === 'os-set_bootable') {
        // Answered with 200 and no body, as Cinder does.
        const a = validAction<{ bootable: boolean | string }>(req, arg);
        const v = await volumeManager.get(req.caller, req.params.id);
        await volumes.setFlags(db.kysely, v.id, { bootable: asBool(a.bootable) ? 1 : 0 });
        return reply.code(200).send();
      }
      // Own members only: an action named `constructor` or `toString` is unknown, not Object's.
      const old = ownValue(legacy, name);
      if (old) {
        const result = await old(req, arg);
        return result === undefined ? reply.code(202).send() : reply.code(200).send(result);
      }
      const action = ownValue(actions, name);
      if (!action) throw new InvalidInputError(`There is no such action: ${name}`);
      await action(req, arg);
      return reply.code(202).send();
    });
  };
}
