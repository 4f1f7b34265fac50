/**
 * Volume manage (`os-volume-manage`, 3.8 `manageable_volumes`): a new volume
 * row adopting storage its backend already holds, named by a reference
 * (`{"source-name": …}`). The backend is the one the request names (`host`,
 * `host@backend#pool` or `host@backend`; or `cluster` from 3.16): the data is
 * there, so no scheduling.
 *
 * | | |
 * | --- | --- |
 * | starts from | a new row (the named backend's volume service registered, not disabled, not frozen) |
 * | transitional | `managing` (shown as `creating`) |
 * | ends in | `available` |
 * | error | `error_managing` (shown as `error`; action: create volume from backend storage); the storage is left as it was |
 * | jobs | `volume.manage` v1 (the backend's cluster) |
 * | lock | `volume-<id>` |
 *
 * Quota: the volume count in the request; its gigabytes once the backend has
 * said the size, before the storage is renamed — so a volume over quota fails
 * with the storage untouched, and one that fails later holds its quota until
 * deleted, as a failed create does.
 */
import { isoAt } from '../../common/index.ts';
import type { ServiceRow } from '../../db/index.ts';
import type { ManageReference } from '../../drivers/index.ts';
import { InvalidInputError, NotFoundError } from '../../errors/index.ts';
import { MESSAGE_ACTIONS } from '../../messages/index.ts';
import { readReport, volumeTarget } from '../../services/index.ts';
import { typeNameOf, volumeQuota } from '../volume-quota.ts';
import { isMultiattachType } from '../volume-type-flags.ts';
import { operation, type RequestContext } from './operation.ts';

/** `volume.manage` (target `volume:<cluster>`): adopt the storage `reference` names as the volume. */
export interface ManagePayload { volumeId: string; reference: ManageReference }

/** A manage request after validation. */
export interface ManageVolumeInput {
  /** `host@backend#pool` or `host@backend`; or null with `cluster`. */
  host: string | null;
  /** A cluster name (3.16), instead of `host`. */
  cluster: string | null;
  reference: ManageReference;
  name: string | null;
  description: string | null;
  metadata: Record<string, string>;
  availabilityZone: string | null;
  volumeType: string | null;
  bootable: boolean;
}

/** Checks a stored payload. */
function parseManage(payload: unknown, version: number): ManagePayload {
  if (version !== 1) throw new Error(`payload version ${version} is not readable`);
  const p = payload as Partial<ManagePayload> | null;
  if (!p || typeof p.volumeId !== 'string' || !isReference(p.reference)) throw new Error('payload must name volumeId and a reference');
  return p as ManagePayload;
}

/** Whether `ref` is a manage reference: an object of strings with at least one key. */
export function isReference(ref: unknown): ref is ManageReference {
  return ref !== null && typeof ref === 'object' && !Array.isArray(ref) && Object.keys(ref).length > 0
    && Object.values(ref).every((v) => typeof v === 'string');
}

const manage = { kind: 'volume.manage', version: 1, minVersion: 1, parse: parseManage } as const;

/** The volume manage operation. */
export const volumeManage = operation<'volume', ManagePayload, ManageVolumeInput>().create({
  shape: 'create',
  name: 'volume.manage',
  resource: 'volume',
  from: [],
  transitional: 'managing',
  to: ['available'],
  error: 'error_managing',
  action: MESSAGE_ACTIONS.MANAGE_VOLUME,
  lock: 'volume',
  jobs: { main: manage },

  async request(ctx, id, input) {
    const { tx, caller, deps, look } = ctx;
    const { service, host } = await managingService(ctx, input.host, input.cluster);
    const type = await look.resolveType(tx, caller, input.volumeType);
    const zone = input.availabilityZone ?? service.availability_zone;
    if (zone !== service.availability_zone) {
      throw new InvalidInputError(`Invalid input received: availability_zone ${zone} is not the zone of host ${host} (${service.availability_zone}).`);
    }
    // The count now (a project at its limit is refused at once); the gigabytes once the backend knows the size.
    await deps.quotas.consume(tx, caller.projectId, volumeQuota(0, type.name), 0);
    await deps.volumes.insert(tx, {
      id, project_id: caller.projectId, user_id: caller.userId, name: input.name, description: input.description,
      size: 0, status: 'managing', attach_status: 'detached', availability_zone: zone,
      host, cluster_name: service.cluster, volume_type_id: type.id, snapshot_id: null, source_volid: null,
      bootable: input.bootable ? 1 : 0, multiattach: isMultiattachType(type) ? 1 : 0, provider_location: null, readonly: null,
      encryption_key_id: null, created_at: isoAt(deps.clock.now()), updated_at: null, launched_at: null, group_id: null,
    }, input.metadata);
    return { job: { schema: manage, target: volumeTarget(service.cluster!), payload: { volumeId: id, reference: input.reference } satisfies ManagePayload } };
  },

  async run({ deps, driver }, v, p) {
    const now = await deps.volumes.get(deps.db.kysely, v.id);
    if (!now?.size) {
      const sizeGiB = await driver.manageExistingGetSize(p.reference);
      // The gigabytes before the storage changes: over quota, the job fails with the storage as it was.
      await deps.db.kysely.transaction().execute(async (tx) => {
        await deps.db.lockRows(tx, 'volumes', [v.id]);
        const row = await deps.volumes.get(tx, v.id);
        if (row?.status !== 'managing' || row.size) return;
        const typeName = await typeNameOf(deps.types, tx, row.volume_type_id);
        await deps.quotas.consume(tx, row.project_id, volumeQuota(sizeGiB, typeName, 0), sizeGiB);
        await tx.updateTable('volumes').set({ size: sizeGiB }).where('id', '=', v.id).execute();
      });
    }
    // Adopted data has no history here: its first incremental backup reads it all.
    await deps.exports?.changedBlocks?.markAllChanged(v.id, 'managed');
    await driver.manageExisting({ id: v.id }, p.reference);
  },

  async finish({ tx, deps, requestId }, v) {
    await deps.volumes.transition(tx, { id: v.id, from: ['managing'], to: 'available', set: { launched_at: isoAt(deps.clock.now()) }, requestId });
  },
});

/**
 * The volume service a manage request names, with the host string the new
 * row gets (`host@backend#pool`; the backend's first pool when none is named).
 * @throws InvalidInputError when neither or both of host and cluster are given, or the service is disabled or frozen.
 * @throws NotFoundError when no volume service has that host or cluster.
 */
export async function managingService({ tx }: RequestContext, hostString: string | null, cluster: string | null): Promise<{ service: ServiceRow; host: string }> {
  if ((hostString === null) === (cluster === null)) throw new InvalidInputError('Invalid input received: give exactly one of host and cluster.');
  const [serviceHost, pool] = (hostString ?? '').split('#');
  let q = tx.selectFrom('services').selectAll().where('binary', '=', 'cinder-volume');
  q = hostString !== null ? q.where('host', '=', serviceHost!) : q.where('cluster', '=', cluster!.split('#')[0]!);
  const services = await q.execute();
  if (services.length === 0) throw new NotFoundError(hostString !== null ? `Service host ${hostString} could not be found.` : `Cluster ${cluster} could not be found.`);
  const service = services.find((s) => s.disabled === 0) ?? services[0]!;
  if (service.disabled !== 0) throw new InvalidInputError(`Invalid input received: the volume service of ${hostString ?? cluster} is disabled.`);
  if (service.frozen === 1) throw new InvalidInputError(`Invalid input received: the backend ${service.cluster} is frozen; thaw it first.`);
  const report = readReport(service);
  const poolName = pool ?? report?.pools[0]?.pool_name;
  if (!poolName) throw new InvalidInputError(`Invalid input received: the volume service of ${hostString ?? cluster} has not reported its pools yet; try again.`);
  if (report && !report.pools.some((p) => p.pool_name === poolName)) throw new InvalidInputError(`Invalid input received: host ${hostString} names pool ${poolName}, which its backend does not have.`);
  return { service, host: `${service.host}#${poolName}` };
}
