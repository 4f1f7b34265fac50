/**
 * Clusters (3.7, admin): the volume services that share one backend's jobs,
 * seen as one. Listing, showing, and enable/disable (a disabled cluster gets
 * no new volumes from the scheduler).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cinderTime } from '../common/index.ts';
import type { ServiceRow } from '../db/index.ts';
import { NotFoundError } from '../errors/index.ts';
import type { ApiDeps } from './context.ts';
import { queryValue } from './pagination.ts';
import { body, validBody } from './body-declaration.ts';
import { serviceReplicationStatus } from './replication.ts';

const TOGGLE = {
  type: 'object', required: ['name'], additionalProperties: false,
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 255 },
    binary: { enum: ['cinder-volume'] },
    disabled_reason: { type: ['string', 'null'], maxLength: 255 },
  },
};

/** Registers the routes. */
export function clusterRoutes(deps: ApiDeps) {
  const { db, services, config } = deps;
  const downMs = config.DEFAULT.service_down_time * 1000;
  const guard = (req: FastifyRequest): void => {
    if (!req.apiVersion.atLeast('3.7')) throw new NotFoundError('The resource could not be found.');
  };
  /** Clusters from the service rows, by name. */
  const clusters = async (): Promise<Map<string, ServiceRow[]>> => {
    const out = new Map<string, ServiceRow[]>();
    for (const s of await services.list(db.kysely)) {
      if (!s.cluster) continue;
      out.set(s.cluster, [...(out.get(s.cluster) ?? []), s]);
    }
    return out;
  };
  /**
   * Cinder's cluster views (cinder/api/v3/views/clusters.py): the replication
   * keys only from 3.26 (REPLICATION_CLUSTER), and a time not set is ''.
   */
  const view = (req: FastifyRequest, name: string, rows: ServiceRow[], detail: boolean): Record<string, unknown> => {
    const up = rows.filter((s) => services.isUp(s, downMs));
    const disabled = rows.every((s) => s.disabled === 1);
    const replication = req.apiVersion.atLeast('3.26');
    const v: Record<string, unknown> = { name, binary: rows[0]!.binary, state: up.length ? 'up' : 'down', status: disabled ? 'disabled' : 'enabled' };
    if (replication) v.replication_status = serviceReplicationStatus(rows[0]!);
    if (detail) {
      v.num_hosts = rows.length;
      v.num_down_hosts = rows.length - up.length;
      v.last_heartbeat = cinderTime(rows.map((s) => s.heartbeat_at).sort().pop()) ?? '';
      v.created_at = cinderTime(rows.map((s) => s.created_at).sort()[0]) ?? '';
      v.updated_at = cinderTime(rows.map((s) => s.updated_at ?? s.created_at).sort().pop()) ?? '';
      v.disabled_reason = disabled ? rows[0]!.disabled_reason : null;
      if (replication) {
        v.frozen = rows.some((s) => s.frozen === 1);
        v.active_backend_id = rows[0]!.active_backend_id ?? null;
      }
    }
    return v;
  };
  return async (app: FastifyInstance): Promise<void> => {
    const list = (detail: boolean) => async (req: FastifyRequest) => {
      guard(req);
      const q = req.query as Record<string, unknown>;
      const name = queryValue(q, 'name');
      return { clusters: [...await clusters()].filter(([n]) => name === undefined || n === name).map(([n, rows]) => view(req, n, rows, detail)) };
    };
    app.get('/clusters', list(false));
    app.get('/clusters/detail', list(true));
    app.get<{ Params: { name: string } }>('/clusters/:name', async (req) => {
      guard(req);
      const rows = (await clusters()).get(req.params.name);
      if (!rows) throw new NotFoundError(`Cluster {'name': '${req.params.name}'} could not be found.`);
      return { cluster: view(req, req.params.name, rows, true) };
    });
    const toggle = (disable: boolean) => async (req: FastifyRequest) => {
      guard(req);
      const b = validBody<{ name: string; disabled_reason?: string | null }>(req);
      const rows = (await clusters()).get(b.name);
      if (!rows) throw new NotFoundError(`Cluster {'name': '${b.name}'} could not be found.`);
      await services.setDisabled(db.kysely, rows.map((r) => r.id), disable, b.disabled_reason ?? null);
      const fresh = (await clusters()).get(b.name)!;
      // As Cinder: the summary plus the reason just set (null when enabling).
      const reason = disable ? b.disabled_reason ?? null : null;
      return { cluster: { ...view(req, b.name, fresh, false), disabled_reason: reason } };
    };
    app.put('/clusters/disable', body(TOGGLE), toggle(true));
    app.put('/clusters/enable', body(TOGGLE), toggle(false));
  };
}
