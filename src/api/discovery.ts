/**
 * What clients and operators ask the service about itself: `extensions`,
 * `scheduler-stats/get_pools` (with `detail`, 3.35 `volume_type`) and
 * `capabilities/{host}`, all from the volume services' reported capabilities.
 */
import type { FastifyInstance } from 'fastify';
import { NotFoundError } from '../errors/index.ts';
import { replicationTargetsOf, reporting, type ReportingService } from '../services/index.ts';
import type { ApiDeps } from './context.ts';
import { queryValue, truthy } from './pagination.ts';

/** The API extensions Basalt serves (the names and aliases Cinder lists). */
const EXTENSIONS: ReadonlyArray<[alias: string, name: string, description: string]> = [
  ['os-admin-actions', 'AdminActions', 'Enable admin actions (reset status, force delete, force detach).'],
  ['os-availability-zone', 'AvailabilityZones', 'Describe Availability Zones.'],
  ['capabilities', 'Capabilities', 'Capabilities support.'],
  ['os-hosts', 'Hosts', 'Admin-only host administration.'],
  ['qos-specs', 'Qos_specs_manage', 'QoS specs support.'],
  ['os-quota-class-sets', 'Quota_classes', 'Quota classes management support.'],
  ['os-quota-sets', 'Quotas', 'Quota management support.'],
  ['scheduler-stats', 'Scheduler_stats', 'Scheduler stats support.'],
  ['os-services', 'Services', 'Services support.'],
  ['os-extended-snapshot-attributes', 'ExtendedSnapshotAttributes', 'Extended SnapshotAttributes support.'],
  ['os-used-limits', 'UsedLimits', 'Provide data on limited resources that are being used.'],
  ['os-vol-host-attr', 'VolumeHostAttribute', 'Expose host as an attribute of a volume.'],
  ['os-vol-tenant-attr', 'VolumeTenantAttribute', 'Expose the internal project_id as an attribute of a volume.'],
  ['os-volume-actions', 'VolumeActions', 'Enable volume actions.'],
  ['os-volume-transfer', 'VolumeTransfer', 'Volume transfer management support.'],
  ['os-types-extra-specs', 'TypesExtraSpecs', 'Type extra specs support.'],
  ['os-types-manage', 'TypesManage', 'Types manage support.'],
  ['os-volume-type-access', 'VolumeTypeAccess', 'Volume type access support.'],
  ['encryption', 'VolumeTypeEncryption', 'Encryption support for volume types.'],
  ['os-volume-encryption-metadata', 'VolumeEncryptionMetadata', 'Volume encryption metadata retrieval support.'],
];

/** Registers the routes. */
export function discoveryRoutes(deps: ApiDeps) {
  const { db, services, types, config } = deps;
  const downMs = config.DEFAULT.service_down_time * 1000;
  /** Live volume services with their capabilities. */
  const live = async (): Promise<ReportingService[]> => reporting((await services.list(db.kysely)).filter((s) => services.isUp(s, downMs)));

  return async (app: FastifyInstance): Promise<void> => {
    app.get('/extensions', async () => ({
      extensions: EXTENSIONS.map(([alias, name, description]) => ({ alias, name, description, links: [], updated: '2013-04-18T00:00:00+00:00' })),
    }));

    app.get('/scheduler-stats/get_pools', async (req) => {
      const q = req.query as Record<string, unknown>;
      const detail = truthy(queryValue(q, 'detail'));
      const name = queryValue(q, 'name');
      const typeName = req.apiVersion.atLeast('3.35') ? queryValue(q, 'volume_type') : undefined;
      let backendName: string | undefined;
      if (typeName !== undefined) {
        const t = await types.find(db.kysely, typeName, req.caller);
        if (!t) throw NotFoundError.of('Volume type', typeName);
        backendName = t.extra_specs.volume_backend_name;
      }
      const pools = [];
      for (const { service: s, report: caps } of await live()) {
        if (backendName !== undefined && caps.volume_backend_name !== backendName) continue;
        for (const p of caps.pools) {
          const poolName = `${s.host}#${p.pool_name}`;
          if (name !== undefined && poolName !== name) continue;
          pools.push(detail ? {
            name: poolName,
            capabilities: {
              ...p,
              volume_backend_name: caps.volume_backend_name, vendor_name: caps.vendor_name, driver_version: caps.driver_version,
              storage_protocol: caps.storage_protocol, allocated_capacity_gb: p.provisioned_capacity_gb, QoS_support: true,
              timestamp: s.heartbeat_at,
            },
          } : { name: poolName });
        }
      }
      return { pools };
    });

    app.get<{ Params: { host: string } }>('/capabilities/:host', async (req) => {
      const found = (await live()).find(({ service }) => service.host === req.params.host);
      if (!found) throw new NotFoundError(`Service ${req.params.host} could not be found.`);
      const caps = found.report;
      const pool = caps.pools[0];
      const property = (title: string, description: string) => ({ title, description, type: 'boolean' });
      return {
        namespace: `OS::Storage::Capabilities::${req.params.host}`,
        vendor_name: caps.vendor_name, volume_backend_name: caps.volume_backend_name, pool_name: pool?.pool_name ?? null,
        driver_version: caps.driver_version, storage_protocol: caps.storage_protocol,
        display_name: null, description: null, visibility: null, replication_targets: replicationTargetsOf(caps),
        properties: {
          thin_provisioning: { ...property('Thin Provisioning', 'Sets thin provisioning.'), default: pool?.thin_provisioning_support ?? false },
          multiattach: { ...property('Multiattach', 'Whether volumes may be attached to several hosts.'), default: pool?.multiattach ?? false },
          online_extend_support: { ...property('Online extend', 'Whether in-use volumes can be extended.'), default: pool?.online_extend_support ?? false },
          revert_to_snapshot_support: { ...property('Revert to snapshot', 'Whether volumes can be reverted to their latest snapshot.'), default: pool?.revert_to_snapshot_support ?? false },
        },
      };
    });
  };
}
