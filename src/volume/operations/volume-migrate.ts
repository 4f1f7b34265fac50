/**
 * Volume migration to another backend (`os-migrate_volume`, and `os-retype`
 * with `migration_policy: on-demand` to a type the volume's pool does not
 * meet). The destination's volume service makes the volume on its backend
 * under the same id, copies it block by block from the source's driver
 * (skipping holes by block status), then the row takes the new host, cluster
 * (and type, for a retype) with the job; the source's storage is removed last,
 * by a job of the source's cluster, once the row has moved.
 *
 * | | |
 * | --- | --- |
 * | starts from | `available` or `in-use`; no snapshots, no group, not migrating |
 * | transitional | `maintenance` (Cinder's status of a locked migration), `migration_status` `migrating` |
 * | ends in | `available` (`in-use` when attached) on the new host, `migration_status` `success` (and the new type) |
 * | error | `available` (`in-use` when attached) where it was, `migration_status` `error`; the retype's quota given back |
 * | jobs | `volume.migrate` v1 (destination cluster), `volume.migrate_cleanup` v1 (the cluster whose copy goes) |
 * | lock | `volume-<id>` |
 *
 * The copy reads the source through the driver the destination's process
 * holds for the source's backend when one process serves both. Otherwise it
 * reads the source through an NBD export of a live process serving the
 * source's backend (`../../export/nbd-client.ts`, TLS-PSK): the request makes
 * a read-only export of the volume for the move (`volume_exports`), the end of
 * the move (success or failure) removes it, and the cleanup job fences it on
 * the source before the source's storage goes.
 *
 * An attached volume moves through its export (`../live-move.ts`): while the
 * copy is made, the export serves a mirror of source and destination, and
 * once the row names the destination the cleanup job ends the mirror — its
 * connections reconnect to the same export name, now on the destination —
 * before the source's storage goes. Every attachment must be served by this
 * process's NBD export: a local (loop) attachment or a host reading the
 * backend natively (rbd) writes where no mirror sees it, and another process
 * serving the source's backend could take a reconnection onto the source
 * alone; such moves are refused with a message naming the attachment or the
 * processes.
 */
import { randomBytes } from 'node:crypto';
import type { Db, Tx, VolumeRow, VolumeType } from '../../db/index.ts';
import type { GuardedDriver, VolumeHandle } from '../../drivers/index.ts';
import { DriverError, InvalidInputError, InvalidStatusError } from '../../errors/index.ts';
import { MESSAGE_ACTIONS } from '../../messages/index.ts';
import { fits, reportedPool, roomFor, reporting, unmetSpecs, volumeTarget } from '../../services/index.ts';
import { openClusterExport } from '../export-connect.ts';
import { isoAt } from '../../common/index.ts';
import { typeNameOf } from '../volume-quota.ts';
import { isMultiattachType } from '../volume-type-flags.ts';
import { withLock } from '../../coordination/index.ts';
import type { JobHandler, JobKind } from '../../jobs/index.ts';
import type { VolumeHandlerDeps } from '../volume-handlers.ts';
import { LiveMove } from '../live-move.ts';
import { writesPastExport, type ConnectionInfo } from '../connection-info.ts';
import { operation, type PayloadSchema, type RequestContext } from './operation.ts';

/** `volume.migrate` (target: the destination cluster): copy the volume there and move its row. */
export interface MigratePayload {
  volumeId: string;
  sourceCluster: string;
  destHost: string;
  destCluster: string;
  /** The type the volume takes with the move (a retype), or null. */
  newTypeId: string | null;
  /** (v2) The export the source is read through when no process serves both backends, or null. */
  sourceExport: string | null;
}

/** `volume.migrate_cleanup` (target: `cluster`): remove the copy of the volume a finished or failed move left on `cluster`. */
export interface MigrateCleanupPayload {
  volumeId: string;
  cluster: string;
  /** The export the move read the source through, to fence before the copy goes (absent: none). */
  sourceExport?: string;
}

/** What a migration request says: an admin's destination, or a retype's new type (the destination is then chosen). */
export interface MigrateVolumeInput {
  /** `host@backend#pool` (or `host@backend`: its first pool); absent for a retype. */
  host?: string;
  /** 3.16: a cluster instead of a host. */
  cluster?: string;
  /** Accepted: Basalt always copies through the drivers (no backend-assisted move yet). */
  forceHostCopy?: boolean;
  /** Accepted: the volume is always held in `maintenance` while it moves. */
  lockVolume?: boolean;
  /** A retype with migration: the resolved new type. */
  newType?: VolumeType;
}

/** Bytes copied per read while migrating. */
const COPY_CHUNK_BYTES = 4 * 1024 * 1024;

const isString = (x: unknown): x is string => typeof x === 'string';

const migrateSchema: PayloadSchema<MigratePayload> = {
  kind: 'volume.migrate', version: 2, minVersion: 1,
  parse(payload, version) {
    if (version !== 1 && version !== 2) throw new Error(`payload version ${version} is not readable`);
    const p = payload as Partial<MigratePayload> | null;
    if (!p || ![p.volumeId, p.sourceCluster, p.destHost, p.destCluster].every(isString) || !(p.newTypeId === null || isString(p.newTypeId))) {
      throw new Error('payload must name volumeId, sourceCluster, destHost, destCluster and newTypeId');
    }
    // v1 had no export: its moves ran in one process.
    const sourceExport = version === 1 ? null : p.sourceExport;
    if (!(sourceExport === null || isString(sourceExport))) throw new Error('payload sourceExport must be a string or null');
    return { ...p, sourceExport } as MigratePayload;
  },
  // A v1 reader knows no export (its moves ran in one process): it reads the source locally or waits for a member that can.
  encode: (p, version) => {
    if (version !== 1) return p;
    const { sourceExport: _, ...v1 } = p;
    return v1;
  },
};

const cleanupSchema: PayloadSchema<MigrateCleanupPayload> = {
  kind: 'volume.migrate_cleanup', version: 1, minVersion: 1,
  parse(payload, version) {
    if (version !== 1) throw new Error(`payload version ${version} is not readable`);
    const p = payload as Partial<MigrateCleanupPayload> | null;
    if (!p || !isString(p.volumeId) || !isString(p.cluster) || !(p.sourceExport === undefined || isString(p.sourceExport))) throw new Error('payload must name volumeId and cluster');
    return p as MigrateCleanupPayload;
  },
};

/** Where a migration goes: a pool of a live volume service. */
interface Destination { host: string; cluster: string }

/**
 * The destination an admin names (`host@backend#pool`, `host@backend`, or a cluster).
 * @throws InvalidInputError naming the host when no live volume service reports it.
 */
async function namedDestination({ tx, deps }: RequestContext, input: MigrateVolumeInput): Promise<Destination> {
  const live = liveReports(await deps.services.list(tx), deps.clock.now(), deps.options.serviceDownMs);
  const asked = input.cluster ?? input.host!;
  const [serviceHost, poolName] = asked.split('#');
  const found = input.cluster
    ? live.find(({ service }) => service.cluster === input.cluster)
    : live.find(({ service }) => service.host === serviceHost);
  const pool = found && (poolName === undefined || input.cluster ? found.report.pools[0] : found.report.pools.find((p) => p.pool_name === poolName));
  if (!found || !pool) throw new InvalidInputError(`Invalid input received: No available service named ${asked}: no live volume service reports that ${input.cluster ? 'cluster' : 'host'}.`);
  return { host: `${found.service.host}#${pool.pool_name}`, cluster: found.service.cluster ?? found.service.host };
}

/**
 * The pool a retype moves the volume to: the first live pool of another
 * backend that meets the new type's extra specs and holds the volume.
 * @throws InvalidInputError when none does.
 */
async function chosenDestination({ tx, deps }: RequestContext, v: VolumeRow, type: VolumeType): Promise<Destination> {
  for (const { service, report } of liveReports(await deps.services.list(tx), deps.clock.now(), deps.options.serviceDownMs)) {
    if ((service.cluster ?? service.host) === v.cluster_name || service.disabled === 1 || service.frozen === 1) continue;
    for (const pool of report.pools) {
      const host = `${service.host}#${pool.pool_name}`;
      if (unmetSpecs(report, pool, type.extra_specs).length === 0 && fits(pool, await deps.volumes.provisionedGiB(tx, host), v.size)) {
        return { host, cluster: service.cluster ?? service.host };
      }
    }
  }
  const specs = Object.entries(type.extra_specs).map(([k, x]) => `${k}=${x}`).join(', ');
  throw new InvalidInputError(`Invalid input received: No valid host was found: no live pool of another backend meets volume type ${type.name}${specs ? ` (${specs})` : ''} and holds ${v.size} GiB: a retype with migration has nowhere to go.`);
}

/**
 * Whether the move crosses processes (no live process serves both backends):
 * its copy then reads the source through an NBD export. An attached volume
 * moves only within one process, the only one serving its backend.
 * @throws InvalidInputError for an attached volume that cannot move so.
 */
async function crossesProcesses({ tx, deps }: RequestContext, sourceCluster: string, dest: Destination, attached: boolean): Promise<boolean> {
  const live = liveReports(await deps.services.list(tx), deps.clock.now(), deps.options.serviceDownMs).map(({ service }) => service);
  const processesOf = (cluster: string) => new Set(live.filter((s) => (s.cluster ?? s.host) === cluster).map((s) => s.instance_id));
  const sources = processesOf(sourceCluster);
  const apart = ![...processesOf(dest.cluster)].some((p) => sources.has(p));
  if (attached && apart) {
    throw new InvalidInputError(`Invalid input received: backends ${sourceCluster} and ${dest.cluster} are not served by one process: an attached volume moves only between backends one process serves; detach it first.`);
  }
  if (attached && sources.size > 1) {
    // The mirror lives in one process: a host reconnecting to another member would write to the source alone.
    throw new InvalidInputError(`Invalid input received: backend ${sourceCluster} is served by ${sources.size} processes: an attached volume moves only when one process serves its backend; detach it first.`);
  }
  return apart;
}

/** Makes the read-only export a move between processes reads its source through; returns its name. */
async function sourceExportFor({ tx, deps }: RequestContext, v: VolumeRow): Promise<string> {
  const name = `basalt-move-${randomBytes(24).toString('hex')}`;
  await tx.insertInto('volume_exports').values({
    export_name: name, volume_id: v.id, purpose: 'migration', read_only: 1,
    psk_identity: `basalt-move-${v.id}-${randomBytes(4).toString('hex')}`, psk_key: randomBytes(32).toString('hex'), created_at: isoAt(deps.clock.now()),
  }).execute();
  return name;
}

/** Removes the exports a move made for the volume (its end, success or failure). */
async function dropMoveExports(tx: Tx, volumeId: string): Promise<void> {
  await tx.deleteFrom('volume_exports').where('volume_id', '=', volumeId).where('purpose', '=', 'migration').execute();
}

function liveReports(rows: Parameters<typeof reporting>[0], nowMs: number, serviceDownMs: number): ReturnType<typeof reporting> {
  return reporting(rows).filter(({ service }) => nowMs - Date.parse(service.heartbeat_at) <= serviceDownMs);
}

/** The volume migration operation (also the moving part of a retype with migration). */
export const volumeMigrate = operation<'volume', MigratePayload, MigrateVolumeInput>().change({
  shape: 'change',
  name: 'volume.migrate',
  resource: 'volume',
  from: ['available', 'in-use'],
  transitional: 'maintenance',
  to: ['available', 'in-use'],
  error: 'available',
  action: MESSAGE_ACTIONS.MIGRATE_VOLUME,
  lock: 'volume',
  jobs: { main: migrateSchema, cleanup: cleanupSchema },
  // An admin may set `maintenance` too (os-reset_status): only a row marked migrating is a move the sweeper must end.
  stuckWhen: (v) => v.migration_status === 'migrating',

  refusal: (v, _allowed, input) => `Invalid volume: Volume ${v.id} status must be available or in-use to ${input.newType ? 'retype with migration' : 'migrate'}, but current status is: ${v.status}.`,

  async check({ tx, deps }, v) {
    if (v.migration_status === 'migrating') throw new InvalidStatusError(`Invalid volume: Volume ${v.id} is already being migrated.`);
    if (v.group_id) throw new InvalidInputError(`Invalid input received: Volume ${v.id} belongs to group ${v.group_id}; remove it from the group first.`);
    if (v.replication_status && !['disabled', 'not-capable'].includes(v.replication_status)) {
      // Its copies are tied to its backend and its target (and a synchronous one is served through a mirror a move would replace).
      throw new InvalidInputError(`Invalid input received: Volume ${v.id} is replicated (replication_status ${v.replication_status}): a replicated volume cannot be migrated; fail its backend over instead.`);
    }
    if ((await deps.snapshots.ofVolume(tx, v.id)).length > 0) throw new InvalidInputError(`Invalid input received: Volume ${v.id} has snapshots: a volume with snapshots cannot be migrated.`);
    if (!v.cluster_name || !v.host) throw new InvalidInputError(`Invalid input received: Volume ${v.id} was never placed on a backend.`);
    if (v.status === 'in-use') {
      for (const a of await tx.selectFrom('attachments').select(['id', 'connection_info']).where('volume_id', '=', v.id).execute()) {
        if (writesPastExport(a.connection_info)) {
          const type = (JSON.parse(a.connection_info!) as ConnectionInfo).driver_volume_type;
          throw new InvalidInputError(`Invalid input received: Volume ${v.id} is attached as ${type} (attachment ${a.id}): only volumes attached through Basalt's NBD export can move while attached; detach it first.`);
        }
      }
    }
  },

  async request(ctx, v, input) {
    const { tx, deps } = ctx;
    const dest = input.newType ? await chosenDestination(ctx, v, input.newType) : await namedDestination(ctx, input);
    if (dest.host === v.host) throw new InvalidInputError(`Invalid input received: Destination host ${dest.host} must be different from the volume's current host.`);
    if (dest.cluster === v.cluster_name) {
      // Both copies would have one name on one backend.
      throw new InvalidInputError(`Invalid input received: Destination ${dest.host} is on the volume's own backend (${v.cluster_name}): moving between pools of one backend is not supported by this Basalt release.`);
    }
    const apart = await crossesProcesses(ctx, v.cluster_name!, dest, v.status === 'in-use');
    const reported = await reportedPool(tx, dest.host);
    if (reported && !(await roomFor(tx, deps, { serviceId: reported.service.id, host: dest.host, pool: reported.pool }, v.size))) {
      throw new InvalidInputError(`Invalid input received: Insufficient free space: pool ${dest.host} cannot hold ${v.size} GiB.`);
    }
    if (input.newType) {
      // Only the per-type resources move (the totals stay): the new type's are taken now, the old type's given back when the move ends.
      await deps.quotas.consume(tx, v.project_id, { [`volumes_${input.newType.name}`]: 1, [`gigabytes_${input.newType.name}`]: v.size }, v.size);
    }
    return {
      set: { migration_status: 'migrating', migration_host: dest.host },
      job: {
        target: volumeTarget(dest.cluster),
        payload: {
          volumeId: v.id, sourceCluster: v.cluster_name!, destHost: dest.host, destCluster: dest.cluster, newTypeId: input.newType?.id ?? null,
          sourceExport: apart ? await sourceExportFor(ctx, v) : null,
        },
      },
    };
  },

  async run({ deps, driver, lost }, v, p) {
    const local = deps.drivers?.get(p.sourceCluster);
    if (!local && !p.sourceExport) {
      throw new DriverError(`The source backend ${p.sourceCluster} of volume ${v.id} is not served by the process serving ${p.destCluster}, and the move has no export to read it through.`, { retryable: true });
    }
    const source = local ?? { openVolume: () => openSourceExport(deps, p) };
    const vol = { id: v.id, sizeGiB: v.size };
    // A fresh destination every run: the copy skips the source's holes, so a
    // copy left here by an earlier move (or a run cut short) must not show
    // through them. The row names the source, so nothing here is the volume's.
    await driver.deleteVolume(vol);
    await driver.createVolume(vol);
    // The copy is written past the export's changed-block tracker.
    await deps.exports?.changedBlocks?.markAllChanged(v.id, `migration from ${p.sourceCluster}`);
    try {
      if (await isAttached(deps.db.kysely, v.id)) await copyAttached(deps, source, driver, vol, lost);
      else await copyVolume(source, driver, vol, lost);
    } catch (err) {
      if (err instanceof DriverError && err.retryable) throw err; // the retry copies again into the same volume
      if (lost.aborted) throw err; // another may hold the lock now: touch nothing (withLock has the job run again)
      await driver.deleteVolume(vol).catch(() => undefined); // a lost copy: the job fails with the original error
      throw err;
    }
  },

  async finish({ tx, enqueue, deps, requestId }, v, p) {
    await deps.db.lockRows(tx, 'volumes', [v.id]);
    const type = p.newTypeId ? await deps.types.find(tx, p.newTypeId, { isAdmin: true, projectId: v.project_id }) : undefined;
    await dropMoveExports(tx, v.id);
    const moved = await deps.volumes.transition(tx, {
      id: v.id, from: ['maintenance'], to: await isAttached(tx, v.id) ? 'in-use' : 'available', requestId,
      set: { host: p.destHost, cluster_name: p.destCluster, migration_status: 'success', migration_host: null, ...(type ? { volume_type_id: type.id, multiattach: isMultiattachType(type) ? 1 : 0 } : {}) },
    });
    if (!moved) return;
    if (type) {
      const oldName = await typeNameOf(deps.types, tx, v.volume_type_id);
      if (oldName) await deps.quotas.release(tx, v.project_id, { [`volumes_${oldName}`]: 1, [`gigabytes_${oldName}`]: v.size });
    }
    // Destroy data last: the source's copy goes only now that the row names the destination.
    await enqueue(deps.kinds.migrateCleanup, {
      target: volumeTarget(p.sourceCluster), resourceId: v.id, requestId,
      payload: { volumeId: v.id, cluster: p.sourceCluster, ...(p.sourceExport ? { sourceExport: p.sourceExport } : {}) },
    });
  },

  async undo({ tx, deps }, v, p) {
    // The failure moved the row to `available`; an attached volume goes back to `in-use` (its attachments never left).
    await dropMoveExports(tx, v.id);
    const status = await isAttached(tx, v.id) ? { status: 'in-use' as const } : {};
    await tx.updateTable('volumes').set({ migration_status: 'error', migration_host: null, ...status }).where('id', '=', v.id).execute();
    if (p?.newTypeId) {
      const name = await typeNameOf(deps.types, tx, p.newTypeId);
      if (name) await deps.quotas.release(tx, v.project_id, { [`volumes_${name}`]: 1, [`gigabytes_${name}`]: v.size });
    } else if (!p) {
      // Stuck with no job: nothing says which type the request took, so recount the per-type resources from the rows.
      await deps.quotas.recount(tx, v.project_id, ['volumes', 'gigabytes']);
    }
  },
});

/**
 * The handler of `volume.migrate_cleanup`: removes the copy of a volume a
 * move left on `cluster` (the source, once the row names the destination),
 * unless the row names that cluster again (the volume moved back meanwhile).
 * Runs holding the volume's lock; a volume deleted meanwhile still has its
 * copy removed. Idempotent: deleting a missing volume succeeds.
 */
export function migrateCleanupHandler(deps: VolumeHandlerDeps, driver: GuardedDriver, kind: JobKind<MigrateCleanupPayload>): JobHandler<MigrateCleanupPayload> {
  return {
    kind,
    async run(ctx, p) {
      await withLock(deps.coordinator, `volume-${p.volumeId}`, deps.lockTimeoutMs, async () => {
        const row = await deps.volumes.get(deps.db.kysely, p.volumeId);
        if (row && row.cluster_name === p.cluster) return;
        // An attached move's mirror writes to the source too: its connections move to the destination first.
        await deps.moves?.end(p.volumeId);
        // The export a move between processes read the source through: its row is gone, drop what is still connected.
        if (p.sourceExport) await deps.exports?.closeExport(p.sourceExport);
        await driver.deleteVolume({ id: p.volumeId });
        // Should the volume come back here, what this process recorded of it is stale.
        await deps.exports?.changedBlocks?.markAllChanged(p.volumeId, `migrated away from ${p.cluster}`);
      });
      await ctx.complete();
    },
  };
}

/**
 * Copies a volume between two drivers block by block: ranges the source
 * reports as holes or zeros are skipped (the destination is new, so they read
 * as zeros there), data ranges are read and written in chunks, and the
 * destination is flushed before the handles close. Once `stop` is aborted
 * (the move's lock lost) no further chunk is read: it throws its reason.
 */
export async function copyVolume(source: Pick<GuardedDriver, 'openVolume'>, dest: GuardedDriver, vol: { id: string; sizeGiB: number }, stop?: AbortSignal): Promise<void> {
  const from = await source.openVolume(vol);
  let to: VolumeHandle | undefined;
  try {
    to = await dest.openVolume(vol);
    const size = Math.min(from.sizeBytes, to.sizeBytes);
    let offset = 0;
    while (offset < size) {
      const extents = from.blockStatus ? await from.blockStatus(offset, Math.min(size - offset, 1024 * COPY_CHUNK_BYTES)) : [{ length: size - offset, hole: false, zero: false }];
      for (const e of extents) {
        const end = Math.min(offset + e.length, size);
        if (!e.zero) {
          for (let at = offset; at < end; at += COPY_CHUNK_BYTES) {
            stop?.throwIfAborted();
            const data = await from.read(at, Math.min(COPY_CHUNK_BYTES, end - at));
            // A chunk of zeros in a data extent is left as the destination's hole.
            if (!data.every((b) => b === 0)) await to.write(at, data);
          }
        }
        offset = end;
        if (offset >= size) break;
      }
    }
    await to.flush();
  } finally {
    await to?.close();
    await from.close();
  }
}

/** Whether the volume has an attachment a host may have connected (its export may be open). */
async function isAttached(q: Tx | Db['kysely'], volumeId: string): Promise<boolean> {
  const row = await q.selectFrom('attachments').select('id').where('volume_id', '=', volumeId).where('attach_status', 'in', ['attaching', 'attached']).executeTakeFirst();
  return row !== undefined;
}

/**
 * Copies an attached volume while its export serves a mirror of source and
 * destination (`../live-move.ts`). The mirror stays after the copy — the
 * cleanup job ends it once the row names the destination; a failed copy
 * ends it here, and the connections go back to the source alone. Once
 * `stop` is aborted the copy ends after the chunk in flight.
 * @throws DriverError when this process exports no volume (nothing can mirror the host's writes).
 */
async function copyAttached(deps: VolumeHandlerDeps, source: Pick<GuardedDriver, 'openVolume'>, dest: GuardedDriver, vol: { id: string; sizeGiB: number }, stop: AbortSignal): Promise<void> {
  if (!deps.moves) throw new DriverError(`Volume ${vol.id} is attached and this process serves no NBD export: it cannot move while attached.`);
  const from = await source.openVolume(vol);
  const to = await dest.openVolume(vol).catch(async (err: unknown) => { await from.close(); throw err; });
  const move = new LiveMove(from, to);
  try {
    await deps.moves.begin(vol.id, move);
    await move.copy(() => stop.throwIfAborted());
  } catch (err) {
    // The connections go back to the source alone; the pair is closed even if the mirror never started.
    await deps.moves.end(vol.id);
    await move.close();
    throw err;
  }
}

/**
 * Opens the source of a move between processes through its export on a live
 * process serving the source's backend (its Unix socket on this machine, else TLS-PSK with the move's own key).
 * @throws DriverError (retryable) when no such process answers, or the export is gone.
 */
async function openSourceExport(deps: VolumeHandlerDeps, p: MigratePayload): Promise<VolumeHandle> {
  return openClusterExport(deps, p.sourceCluster, p.sourceExport!, `volume ${p.volumeId} for its move`, 'the move ended meanwhile');
}
