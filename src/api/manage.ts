/**
 * Manage and unmanage (issue 12, part 5): `POST /os-volume-manage` and
 * `/manageable_volumes` (3.8) adopt storage a backend holds as a new volume;
 * `POST /os-snapshot-manage` and `/manageable_snapshots` (3.8) as a new
 * snapshot of an existing volume. The `os-unmanage` actions live with the
 * volume and snapshot actions. A bad reference's shape is refused here with
 * a 400 naming the field; whether the backend has what it names is learnt by
 * the volume service, which fails the row (`error_managing`) with a user
 * message and leaves the storage as it was.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { InvalidInputError } from '../errors/index.ts';
import type { ApiDeps } from './context.ts';
import { metadataSchema, nameSchema, validate } from './validation.ts';
import { snapshotView } from './snapshots.ts';
import { volumeView } from './volumes.ts';

/** A manage reference: an object of strings, e.g. `{"source-name": "…"}`. */
const referenceSchema = { type: 'object', minProperties: 1, additionalProperties: { type: 'string', minLength: 1, maxLength: 255 } } as const;

const VOLUME_BODY = {
  type: 'object', required: ['volume'],
  properties: {
    volume: {
      type: 'object', required: ['ref'],
      properties: {
        ref: referenceSchema,
        host: { type: ['string', 'null'], minLength: 1, maxLength: 255 },
        cluster: { type: ['string', 'null'], minLength: 1, maxLength: 255 },
        name: nameSchema, description: nameSchema, metadata: metadataSchema,
        availability_zone: { type: ['string', 'null'], minLength: 1, maxLength: 255 },
        volume_type: { type: ['string', 'null'], maxLength: 255 },
        bootable: { type: ['boolean', 'string'] },
      },
    },
  },
};

const SNAPSHOT_BODY = {
  type: 'object', required: ['snapshot'],
  properties: {
    snapshot: {
      type: 'object', required: ['volume_id', 'ref'],
      properties: {
        volume_id: { type: 'string', format: 'uuid' }, ref: referenceSchema,
        name: nameSchema, description: nameSchema, metadata: metadataSchema,
      },
    },
  },
};

interface VolumeManageBody {
  volume: {
    ref: Record<string, string>; host?: string | null; cluster?: string | null; name?: string | null; description?: string | null;
    metadata?: Record<string, string>; availability_zone?: string | null; volume_type?: string | null; bootable?: boolean | string;
  };
}
interface SnapshotManageBody {
  snapshot: { volume_id: string; ref: Record<string, string>; name?: string | null; description?: string | null; metadata?: Record<string, string> };
}

/** Registers the manage routes (under a `/v3/{project_id}` or `/v3` prefix). */
export function manageRoutes(deps: ApiDeps) {
  const { db, volumes, snapshots, volumeManager } = deps;
  return async (app: FastifyInstance): Promise<void> => {
    const manageVolume = async (req: FastifyRequest, reply: FastifyReply) => {
      const v = validate<VolumeManageBody>(VOLUME_BODY, req.body).volume;
      // `cluster` from 3.16; before it, only `host` names the backend (as in Cinder).
      const cluster = req.apiVersion.atLeast('3.16') ? v.cluster ?? null : null;
      const host = v.host ?? null;
      if (host === null && cluster === null) throw new InvalidInputError(`Invalid input received: host${req.apiVersion.atLeast('3.16') ? ' or cluster' : ''} is required to name the backend that holds the storage.`);
      if (host !== null && cluster !== null) throw new InvalidInputError('Invalid input received: give either host or cluster, not both.');
      const row = await volumeManager.requestManage(req.caller, {
        host, cluster, reference: v.ref, name: v.name?.trim() || null, description: v.description?.trim() || null,
        metadata: v.metadata ?? {}, availabilityZone: v.availability_zone ?? null, volumeType: v.volume_type ?? null,
        bootable: v.bootable === true || (typeof v.bootable === 'string' && ['true', '1', 'yes', 'on', 't', 'y'].includes(v.bootable.toLowerCase())),
      });
      const md = await volumes.metadataOf(db.kysely, [row.id]);
      const type = row.volume_type_id ? (await deps.types.byIds(db.kysely, [row.volume_type_id])).get(row.volume_type_id)?.name ?? null : null;
      return reply.code(202).send({ volume: volumeView(req, row, md.get(row.id) ?? {}, type) });
    };
    const manageSnapshot = async (req: FastifyRequest, reply: FastifyReply) => {
      const s = validate<SnapshotManageBody>(SNAPSHOT_BODY, req.body).snapshot;
      const row = await volumeManager.requestSnapshotManage(req.caller, {
        volumeId: s.volume_id, reference: s.ref, name: s.name ?? null, description: s.description ?? null, metadata: s.metadata ?? {},
      });
      const md = await snapshots.metadataOf(db.kysely, [row.id]);
      return reply.code(202).send({ snapshot: snapshotView(req, row, md.get(row.id) ?? {}, 'summary') });
    };
    app.post('/os-volume-manage', manageVolume);
    app.post('/os-snapshot-manage', manageSnapshot);
    app.post('/manageable_volumes', manageVolume);
    app.post('/manageable_snapshots', manageSnapshot);
  };
}
