/** `os-services` (list, enable/disable, freeze/thaw), `os-hosts` and `os-availability-zone`. */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sql } from 'kysely';
import { cinderTime } from '../common/index.ts';
import { InvalidInputError, NotFoundError } from '../errors/index.ts';
import { body, validBody, versionedBody } from './body-declaration.ts';
import { serviceReplicationStatus } from './replication.ts';
import type { ApiDeps } from './context.ts';
import { queryValue } from './pagination.ts';
import { backendDownReason, readReport } from '../services/index.ts';

const TOGGLE = {
  type: 'object', required: ['host'], additionalProperties: false,
  // An unknown binary finds no service: 404, as in Cinder.
  properties: { host: { type: 'string', minLength: 1, maxLength: 255 }, binary: { type: 'string', minLength: 1, maxLength: 255 } },
};
const DISABLE_WITH_REASON = {
  ...TOGGLE, required: ['host', 'disabled_reason'],
  properties: { ...TOGGLE.properties, disabled_reason: { type: 'string', minLength: 1, maxLength: 255 } },
};
const HOST_ONLY = { type: 'object', required: ['host'], additionalProperties: false, properties: { host: { type: 'string', minLength: 1, maxLength: 255 } } };
/** Freeze and thaw from 3.26 (Cinder's REPLICATION_CLUSTER): a host or a cluster, one of them. */
const HOST_OR_CLUSTER = {
  type: 'object', additionalProperties: false,
  properties: { host: { type: ['string', 'null'], maxLength: 255 }, cluster: { type: ['string', 'null'], maxLength: 255 } },
};

/** Registers the routes. */
export function infrastructureRoutes(deps: ApiDeps) {
  const { db, services, config } = deps;
  const downMs = config.DEFAULT.service_down_time * 1000;
  return async (app: FastifyInstance): Promise<void> => {
    app.get('/os-services', async (req) => {
      const q = req.query as Record<string, unknown>;
      const binary = queryValue(q, 'binary');
      const host = queryValue(q, 'host');
      const rows = (await services.list(db.kysely))
        .filter((s) => (binary === undefined || s.binary === binary) && (host === undefined || services.onHost(s, host)));
      return {
        services: rows.map((s) => {
          const up = services.isUp(s, downMs);
          const view: Record<string, unknown> = {
            binary: s.binary, host: s.host, zone: s.availability_zone,
            status: s.disabled ? 'disabled' : 'enabled', state: up ? 'up' : 'down',
            updated_at: cinderTime(s.heartbeat_at), disabled_reason: s.disabled_reason,
          };
          if (s.binary === 'cinder-volume') {
            view.replication_status = serviceReplicationStatus(s);
            view.active_backend_id = s.active_backend_id ?? null;
            view.frozen = s.frozen === 1;
          }
          if (req.apiVersion.atLeast('3.7')) view.cluster = s.cluster;
          // Down as well while the service runs but its driver could not be initialised (the report says why).
          if (req.apiVersion.atLeast('3.49') && s.binary === 'cinder-volume') view.backend_state = up && !backendDownReason(readReport(s)) ? 'up' : 'down';
          return view;
        }),
      };
    });

    // enable / disable / disable-log-reason (by host and binary), freeze / thaw (a volume host's backends).
    const toggle = (disable: boolean, needReason: boolean) => async (req: FastifyRequest) => {
      const b = validBody<{ host: string; binary?: string; disabled_reason?: string }>(req);
      const binary = b.binary ?? 'cinder-volume';
      const rows = (await services.list(db.kysely)).filter((s) => s.binary === binary && services.onHost(s, b.host));
      if (rows.length === 0) throw new NotFoundError(`Service ${binary} on host ${b.host} could not be found.`);
      const reason = disable ? b.disabled_reason ?? null : null;
      await services.setDisabled(db.kysely, rows.map((r) => r.id), disable, reason);
      // Cinder's view: `service` echoes the deprecated request key (not accepted here, so empty);
      // `disabled_reason` only from disable-log-reason — and from enable as null, which tempest's
      // schema requires (Cinder omits it there, and tempest only calls enable in negative tests).
      const view: Record<string, unknown> = { host: b.host, service: '', binary, status: disable ? 'disabled' : 'enabled', disabled: disable };
      if (needReason || !disable) view.disabled_reason = reason;
      return view;
    };
    app.put('/os-services/enable', body(TOGGLE), toggle(false, false));
    app.put('/os-services/disable', body(TOGGLE), toggle(true, false));
    app.put('/os-services/disable-log-reason', body(DISABLE_WITH_REASON), toggle(true, true));
    const freeze = (frozen: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
      const clustered = req.apiVersion.atLeast('3.26');
      const b = validBody<{ host?: string | null; cluster?: string | null }>(req);
      // Cinder's get_cluster_host: from 3.26 exactly one of host and cluster.
      if (clustered && Boolean(b.host) === Boolean(b.cluster)) throw new InvalidInputError('Invalid input received: One and only one of cluster and host must be set.');
      const rows = (await services.list(db.kysely)).filter((s) => s.binary === 'cinder-volume' && (b.cluster ? s.cluster === b.cluster : services.onHost(s, b.host!)));
      // Cinder answers an unknown host here with a 400, not a 404.
      if (rows.length === 0) throw new InvalidInputError(`Invalid input received: ${b.cluster ? `Cluster ${b.cluster}` : `Host ${b.host}`} could not be found.`);
      await services.setFrozen(db.kysely, rows.map((r) => r.id), frozen);
      return reply.code(200).send();
    };
    const hostOrCluster = () => versionedBody({ before: '3.26', schema: HOST_ONLY }, { since: '3.26', schema: HOST_OR_CLUSTER });
    app.put('/os-services/freeze', hostOrCluster(), freeze(true));
    app.put('/os-services/thaw', hostOrCluster(), freeze(false));

    // os-hosts: the hosts running services, and what one volume host holds per project.
    app.get('/os-hosts', async () => ({
      hosts: (await services.list(db.kysely)).map((s) => ({
        host_name: s.host, service: s.binary, zone: s.availability_zone,
        'service-status': services.isUp(s, downMs) ? 'available' : 'unavailable',
        'service-state': s.disabled ? 'disabled' : 'enabled',
        'last-update': cinderTime(s.heartbeat_at),
      })),
    }));
    app.get<{ Params: { host: string } }>('/os-hosts/:host', async (req) => {
      const { host } = req.params;
      if (!(await services.list(db.kysely)).some((s) => s.binary === 'cinder-volume' && services.onHost(s, host))) {
        throw new NotFoundError(`Host ${host} could not be found.`);
      }
      const onHost = (col: string) => sql<boolean>`(${sql.ref(col)} = ${host} or ${sql.ref(col)} like ${`${host}#%`} or ${sql.ref(col)} like ${`${host}@%`})`;
      const vols = await db.kysely.selectFrom('volumes').select(['project_id', (eb) => eb.fn.countAll<number>().as('n'), (eb) => eb.fn.sum<number>('size').as('gb')])
        .where(onHost('host')).groupBy('project_id').execute();
      const snaps = await db.kysely.selectFrom('snapshots').innerJoin('volumes', 'volumes.id', 'snapshots.volume_id')
        .select(['snapshots.project_id as project_id', (eb) => eb.fn.countAll<number>().as('n'), (eb) => eb.fn.sum<number>('snapshots.volume_size').as('gb')])
        .where(onHost('volumes.host')).groupBy('snapshots.project_id').execute();
      const projects = new Map<string, { volumes: number; gb: number; snapshots: number; snapshotGb: number }>();
      const at = (p: string) => projects.get(p) ?? projects.set(p, { volumes: 0, gb: 0, snapshots: 0, snapshotGb: 0 }).get(p)!;
      for (const v of vols) Object.assign(at(v.project_id), { volumes: Number(v.n), gb: Number(v.gb ?? 0) });
      for (const x of snaps) Object.assign(at(x.project_id), { snapshots: Number(x.n), snapshotGb: Number(x.gb ?? 0) });
      const total = [...projects.values()].reduce((a, p) => ({ volumes: a.volumes + p.volumes, gb: a.gb + p.gb, snapshots: a.snapshots + p.snapshots, snapshotGb: a.snapshotGb + p.snapshotGb }), { volumes: 0, gb: 0, snapshots: 0, snapshotGb: 0 });
      const resource = (project: string, u: typeof total) => ({
        resource: {
          project, host, volume_count: String(u.volumes), total_volume_gb: String(u.gb), snapshot_count: String(u.snapshots), total_snapshot_gb: String(u.snapshotGb),
        },
      });
      return { host: [resource('(total)', total), ...[...projects].map(([p, u]) => resource(p, u))] };
    });

    app.get('/os-availability-zone', async () => {
      const zones = new Map<string, boolean>();
      for (const s of await services.list(db.kysely)) {
        if (s.binary !== 'cinder-volume') continue;
        const available = !s.disabled && services.isUp(s, downMs);
        zones.set(s.availability_zone, (zones.get(s.availability_zone) ?? false) || available);
      }
      return { availabilityZoneInfo: [...zones].map(([zoneName, available]) => ({ zoneName, zoneState: { available } })) };
    });
  };
}
