/** `os-services` (admin) and `os-availability-zone`. */
import type { FastifyInstance } from 'fastify';
import { cinderTime } from '../common/index.ts';
import type { ApiDeps } from './context.ts';
import { queryValue } from './pagination.ts';

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
        .filter((s) => (binary === undefined || s.binary === binary) && (host === undefined || s.host === host || s.host.startsWith(`${host}@`)));
      return {
        services: rows.map((s) => {
          const up = services.isUp(s, downMs);
          const view: Record<string, unknown> = {
            binary: s.binary, host: s.host, zone: s.availability_zone,
            status: s.disabled ? 'disabled' : 'enabled', state: up ? 'up' : 'down',
            updated_at: cinderTime(s.heartbeat_at), disabled_reason: s.disabled_reason,
          };
          if (s.binary === 'cinder-volume') {
            view.replication_status = 'disabled';
            view.active_backend_id = null;
            view.frozen = false;
          }
          if (req.apiVersion.atLeast('3.7')) view.cluster = s.cluster;
          if (req.apiVersion.atLeast('3.49') && s.binary === 'cinder-volume') view.backend_state = up ? 'up' : 'down';
          return view;
        }),
      };
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
