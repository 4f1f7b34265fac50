/**
 * Manage and unmanage (issue 12, part 5): `POST /os-volume-manage` and
 * `/manageable_volumes` (3.8) adopt storage a backend holds as a new volume;
 * `POST /os-snapshot-manage` and `/manageable_snapshots` (3.8) as a new
 * snapshot of an existing volume. The `os-unmanage` actions live with the
 * volume and snapshot actions. A bad reference's shape is refused here with
 * a 400 naming the field; whether the backend has what it names is learnt by
 * the volume service, which fails the row (`error_managing`) with a user
 * message and leaves the storage as it was.
 *
 * The 3.8 listings (`GET /manageable_volumes[/detail]`,
 * `/manageable_snapshots[/detail]`) show what the named backend's volume
 * service listed at its last heartbeat (its service report): Basalt's own
 * volumes and snapshots with `cinder_id` and `safe_to_manage: false`.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { InvalidInputError, NotFoundError } from '../errors/index.ts';
import { manageableOf, readReport, type ManageableReport } from '../services/index.ts';
import type { ApiDeps } from './context.ts';
import { queryValue } from './pagination.ts';
import { metadataSchema, nameSchema } from './validation.ts';
import { body, validBody } from './body-declaration.ts';
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
      const v = validBody<VolumeManageBody>(req).volume;
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
      const s = validBody<SnapshotManageBody>(req).snapshot;
      const row = await volumeManager.requestSnapshotManage(req.caller, {
        volumeId: s.volume_id, reference: s.ref, name: s.name ?? null, description: s.description ?? null, metadata: s.metadata ?? {},
      });
      const md = await snapshots.metadataOf(db.kysely, [row.id]);
      return reply.code(202).send({ snapshot: snapshotView(req, row, md.get(row.id) ?? {}, 'summary') });
    };
    /** The 3.8 paths answer 404 below 3.8, as an unknown path does. */
    const since38 = <A extends unknown[], R>(fn: (req: FastifyRequest, ...rest: A) => Promise<R>) => async (req: FastifyRequest, ...rest: A): Promise<R> => {
      if (!req.apiVersion.atLeast('3.8')) throw new NotFoundError('The resource could not be found.');
      return fn(req, ...rest);
    };
    const list = (kind: 'volumes' | 'snapshots', detail: boolean) => async (req: FastifyRequest) => {
      const q = req.query as Record<string, unknown>;
      const entries = await manageableEntries(req, q, kind);
      return { [`manageable-${kind}`]: entries.map((r) => manageableView(r, kind, detail)) };
    };
    /** The entries of the backend the query names, sorted and paged as asked. */
    const manageableEntries = async (req: FastifyRequest, q: Record<string, unknown>, kind: 'volumes' | 'snapshots'): Promise<ManageableReport[]> => {
      const host = queryValue(q, 'host');
      const cluster = req.apiVersion.atLeast('3.17') ? queryValue(q, 'cluster') : undefined;
      if ((host === undefined) === (cluster === undefined)) {
        throw new InvalidInputError(`Invalid input received: give ${req.apiVersion.atLeast('3.17') ? 'exactly one of host and cluster' : 'host'} to name the backend to list.`);
      }
      const rows = (await deps.services.list(db.kysely)).filter((r) => r.binary === 'cinder-volume'
        && (host !== undefined ? r.host === host.split('#')[0] : r.cluster === cluster!.split('#')[0]));
      if (rows.length === 0) throw new NotFoundError(host !== undefined ? `Service host ${host} could not be found.` : `Cluster ${cluster} could not be found.`);
      const listed = rows.map((r) => readReport(r)).map((r) => (r ? manageableOf(r, kind) : undefined)).find((l) => l !== undefined);
      if (!listed) throw new InvalidInputError(`Invalid input received: the backend of ${host ?? cluster} cannot manage existing storage (or has not reported yet).`);
      const keys = (queryValue(q, 'sort_key') ?? queryValue(q, 'sort_keys') ?? 'reference').split(',');
      const dirs = (queryValue(q, 'sort_dir') ?? queryValue(q, 'sort_dirs') ?? 'desc').split(',');
      const badKey = keys.find((k) => k !== 'reference' && k !== 'size');
      if (badKey) throw new InvalidInputError(`Invalid input received: Invalid sort keys passed: ${badKey}`);
      const badDir = dirs.find((d) => d !== 'asc' && d !== 'desc');
      if (badDir) throw new InvalidInputError(`Invalid input received: Invalid sort dirs passed: ${badDir}`);
      const sorted = [...listed].sort((a, b) => {
        for (const [i, k] of keys.entries()) {
          const c = k === 'size' ? a.size - b.size : JSON.stringify(a.reference).localeCompare(JSON.stringify(b.reference));
          if (c !== 0) return (dirs[i] ?? dirs[0]) === 'desc' ? -c : c;
        }
        return 0;
      });
      const offset = whole('offset', queryValue(q, 'offset')) ?? 0;
      const limit = whole('limit', queryValue(q, 'limit'));
      return sorted.slice(offset, limit === undefined ? undefined : offset + limit);
    };
    app.get('/manageable_volumes', since38(list('volumes', false)));
    app.get('/manageable_volumes/detail', since38(list('volumes', true)));
    app.get('/manageable_snapshots', since38(list('snapshots', false)));
    app.get('/manageable_snapshots/detail', since38(list('snapshots', true)));
    app.post('/os-volume-manage', body(VOLUME_BODY), manageVolume);
    app.post('/os-snapshot-manage', body(SNAPSHOT_BODY), manageSnapshot);
    app.post('/manageable_volumes', body(VOLUME_BODY), since38(manageVolume));
    app.post('/manageable_snapshots', body(SNAPSHOT_BODY), since38(manageSnapshot));
  };
}

/** A query parameter that must be a whole number ≥ 0, or undefined when absent. @throws InvalidInputError naming it. */
function whole(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new InvalidInputError(`Invalid input received: ${name} must be a whole number ≥ 0, got ${value}.`);
  return Number(value);
}

/** One entry of a manageable listing, in Cinder's summary or detail view. */
function manageableView(r: ManageableReport, kind: 'volumes' | 'snapshots', detail: boolean): Record<string, unknown> {
  return {
    reference: r.reference, size: r.size, safe_to_manage: r.safe_to_manage,
    ...(kind === 'snapshots' ? { source_reference: r.source_reference ?? {} } : {}),
    ...(detail ? { reason_not_safe: r.reason_not_safe, cinder_id: r.cinder_id, extra_info: r.extra_info } : {}),
  };
}
