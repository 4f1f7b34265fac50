/**
 * Group replication, the API's side (issue 16 part 3, Cinder's 3.38 group
 * actions): the checks Cinder's group API makes before it changes anything,
 * the status changes (`enabling`, `disabling`, `failing-over` on the group
 * and every member, by compare-and-swap under the rows' locks) and the
 * durable job, in one transaction; the job is the volume service's
 * (`group-replication-jobs.ts`).
 *
 * A group is replicated when its group type says
 * `consistent_group_replication_enabled` (or Cinder's other spelling,
 * `group_replication_enabled`) is `<is> True` and every volume type it allows
 * has `replication_enabled='<is> True'`. Its copies are on its backend's
 * replication target, made by the volume replication that each member has by
 * its type; enabling the group's replication makes their asynchronous points
 * one group point. On a backend that replicates itself (RBD's rbd-mirror:
 * its report says `replication_in_driver`) the copies are the backend's
 * own, on its target's storage: every job goes to the group's own backend,
 * which fails the members over and back itself.
 */
import type { Caller } from '../common/index.ts';
import type { Db, GroupRow, GroupTypeRepository, ServiceRepository, VolumeRow, VolumeTypeRepository } from '../db/index.ts';
import { InvalidInputError } from '../errors/index.ts';
import type { Enqueue, JobQueue, Tx } from '../jobs/index.ts';
import { replicatesInDriver, reporting, replicationTargetsOf, volumeTarget } from '../services/index.ts';
import { lockGroup } from './group-membership.ts';
import { FAILBACK_ID, replicaOf, type ReplicationJobKinds } from './replication-jobs.ts';
import { replicationOf } from './volume-type-flags.ts';

/** The group specs that make a group type's groups replicated (Cinder's `Group.is_replicated`). */
export const GROUP_REPLICATION_SPECS = ['consistent_group_replication_enabled', 'group_replication_enabled'] as const;

/** What the group replication requests need. */
export interface GroupReplicationApiDeps {
  db: Db;
  queue: JobQueue;
  services: ServiceRepository;
  /** After how long without a heartbeat a service counts as down. */
  serviceDownMs: number;
  groupTypes: GroupTypeRepository;
  types: VolumeTypeRepository;
  kinds: ReplicationJobKinds;
}

/** A failover request after validation. */
export interface GroupFailoverInput { allowAttachedVolume: boolean; secondaryBackendId: string | null }

const ENABLE = { group: ['available'], replication: ['disabled', 'enabled'] };
const DISABLE = { group: ['available', 'error'], replication: ['enabled', 'error'] };
const FAILOVER = { group: ['available'], replication: ['enabled', 'failed-over'] };
/**
 * Member replication statuses enabling accepts: Cinder's (`disabled`,
 * `enabled`) and Basalt's own of a copy still being made or behind
 * (`copying`, `error`), which enabling is what brings in step.
 */
const ENABLE_MEMBERS = ['disabled', 'enabled', 'copying', 'error'];
/**
 * Member replication statuses a failover accepts: Cinder's (`enabled`,
 * `failed-over`) and Basalt's `error`, which the replication loops set when
 * a copy falls behind or the primary's storage cannot be read — the disaster
 * a failover is for (Cinder's drivers seldom report it, so Cinder's list
 * leaves it out). What the copies hold is the job's to check (a file
 * backend's: one group point for all of them, else the failover fails; an
 * rbd backend's: see `replication-backend.ts`).
 */
const FAILOVER_MEMBERS = ['enabled', 'failed-over', 'error'];

/** API-side group replication. */
export class GroupReplication {
  constructor(private readonly deps: GroupReplicationApiDeps) {}

  /**
   * `enable_replication`: the group and its members go `enabling`, and the
   * group's backend ships a first group point.
   * @throws NotFoundError, InvalidInputError (Cinder's InvalidGroupType, InvalidVolumeType, InvalidGroup, InvalidVolume: all 400).
   */
  async requestEnable(caller: Caller, groupId: string): Promise<void> {
    await this.change(caller, groupId, 'enable', ENABLE, async (tx, g, members, enqueue) => {
      for (const v of members) {
        this.refuseVolumeStatus(v, 'enable');
        if (!ENABLE_MEMBERS.includes(v.replication_status ?? 'disabled')) {
          throw new InvalidInputError(`Invalid volume: Volume ${v.id} replication status must be ${ENABLE_MEMBERS.join(' or ')}, but current status is: ${v.replication_status}. Cannot enable replication.`);
        }
      }
      await this.setStatus(tx, g, members, 'enabling');
      await enqueue(this.deps.kinds.groupEnable, { target: volumeTarget(g.cluster_name!), resourceId: g.id, requestId: caller.requestId, payload: { groupId: g.id } });
    });
  }

  /**
   * `disable_replication`: the group and its members go `disabling`; their
   * points stop (the copies stay).
   * @throws NotFoundError, InvalidInputError.
   */
  async requestDisable(caller: Caller, groupId: string): Promise<void> {
    await this.change(caller, groupId, 'disable', DISABLE, async (tx, g, members, enqueue) => {
      for (const v of members) {
        if (!DISABLE.replication.includes(v.replication_status ?? 'disabled')) {
          throw new InvalidInputError(`Invalid volume: Volume ${v.id} replication status must be ${DISABLE.replication.join(' or ')}, but current status is: ${v.replication_status ?? 'disabled'}. Cannot disable replication.`);
        }
      }
      await this.setStatus(tx, g, members, 'disabling');
      await enqueue(this.deps.kinds.groupDisable, { target: volumeTarget(g.cluster_name!), resourceId: g.id, requestId: caller.requestId, payload: { groupId: g.id } });
    });
  }

  /**
   * `failover_replication`: fails the group over to `secondaryBackendId` (its
   * backend's only target when omitted), or back with `default`.
   * @throws NotFoundError, InvalidInputError (an attached member without
   * `allowAttachedVolume`, an unknown or unreachable target, nothing to fail back).
   */
  async requestFailover(caller: Caller, groupId: string, input: GroupFailoverInput): Promise<void> {
    await this.change(caller, groupId, 'failover', FAILOVER, async (tx, g, members, enqueue) => {
      for (const v of members) {
        this.refuseVolumeStatus(v, 'failover');
        if (v.status === 'in-use' && !input.allowAttachedVolume) {
          throw new InvalidInputError(`Invalid volume: Volume ${v.id} is attached but allow_attached_volume flag is False. Cannot failover replication.`);
        }
        if (!FAILOVER_MEMBERS.includes(v.replication_status ?? 'disabled')) {
          throw new InvalidInputError(`Invalid volume: Volume ${v.id} replication status must be ${FAILOVER_MEMBERS.join(' or ')}, but current status is: ${v.replication_status ?? 'disabled'}. Cannot failover replication.`);
        }
      }
      const failedOver = g.replication_status === 'failed-over';
      const home = await this.homeCluster(tx, g, members);
      const { targets, inDriver, activeBackendId } = await this.backendOf(tx, home);
      const all = await this.deps.services.list(tx);
      const live = reporting(all).filter(({ service }) => this.deps.services.isUp(service, this.deps.serviceDownMs));
      let backendId = input.secondaryBackendId ?? undefined;
      if (backendId === undefined) {
        // Cinder lets the driver choose; Basalt chooses only when there is nothing to choose.
        if (failedOver) throw new InvalidInputError(`Invalid input received: group ${g.id} is failed over: name secondary_backend_id default to fail back.`);
        if (targets.length !== 1) throw new InvalidInputError(`Invalid input received: group ${g.id}'s backend has ${targets.length} replication targets (${targets.join(', ')}): name one in secondary_backend_id.`);
        backendId = targets[0]!;
      }
      let jobCluster: string;
      if (backendId === FAILBACK_ID) {
        if (!failedOver) throw new InvalidInputError(`Invalid input received: group ${g.id} is not failed over: there is nothing to fail back.`);
        if (!live.some(({ service }) => service.cluster === home)) {
          throw new InvalidInputError(`Invalid input received: the original backend of group ${g.id} (${home}) is unreachable (no volume service of it is up): it cannot take the group back until it is.`);
        }
        jobCluster = g.cluster_name!;
      } else {
        if (failedOver) throw new InvalidInputError(`Invalid input received: group ${g.id} is failed over already: fail back (secondary_backend_id default) first.`);
        if (!targets.includes(backendId)) {
          throw new InvalidInputError(`Invalid input received: ${backendId} is not a replication target of group ${g.id}${targets.length ? ` (its targets: ${targets.join(', ')})` : ' (its backend has none)'}.`);
        }
        if (inDriver) {
          // The group's backend promotes its members' copies on the target itself, and only while it serves from its own storage.
          if (activeBackendId) {
            throw new InvalidInputError(`Invalid input received: the backend of group ${g.id} is failed over as a whole (to ${activeBackendId}): fail it back (os-services/failover with backend_id default) before failing over the group.`);
          }
          await this.setStatus(tx, g, members, 'failing-over');
          await enqueue(this.deps.kinds.groupFailover, { target: volumeTarget(home), resourceId: g.id, requestId: caller.requestId, payload: { groupId: g.id, backendId } });
          return;
        }
        const target = live.find(({ service, report }) => report.volume_backend_name === backendId && service.cluster !== home);
        if (!target) throw new InvalidInputError(`Invalid input received: replication target ${backendId} has no volume service up: nothing can take over group ${g.id}.`);
        jobCluster = target.service.cluster!;
        for (const v of members) {
          const r = await replicaOf(tx, v.id);
          if (!r || r.secondary_cluster !== jobCluster) {
            throw new InvalidInputError(`Invalid volume: Volume ${v.id} has no secondary copy on ${backendId} yet. Cannot failover replication.`);
          }
        }
      }
      await this.setStatus(tx, g, members, 'failing-over');
      await enqueue(this.deps.kinds.groupFailover, { target: volumeTarget(jobCluster), resourceId: g.id, requestId: caller.requestId, payload: { groupId: g.id, backendId } });
    });
  }

  /**
   * `list_replication_targets`: the replication devices of the group's own
   * backend (Cinder shows admins every key of each device; Basalt's devices
   * have only `backend_id`, so everyone sees the same).
   * @throws NotFoundError, InvalidInputError (not a replicated group).
   */
  async targets(caller: Caller, groupId: string): Promise<{ replication_targets: Array<{ backend_id: string }> }> {
    return this.deps.queue.transaction(async (tx) => {
      const g = await lockGroup(this.deps.db, tx, caller, groupId);
      await this.refuseUnreplicated(tx, g);
      const members = await tx.selectFrom('volumes').selectAll().where('group_id', '=', g.id).execute();
      const home = g.cluster_name ? await this.homeCluster(tx, g, members as VolumeRow[]) : undefined;
      return { replication_targets: (home ? (await this.backendOf(tx, home)).targets : []).map((backend_id) => ({ backend_id })) };
    });
  }

  /** Locks the group and its members, checks its type and statuses, then runs `fn` (the request's own checks and changes). */
  private async change(
    caller: Caller, groupId: string, verb: 'enable' | 'disable' | 'failover', valid: { group: string[]; replication: string[] },
    fn: (tx: Tx, g: GroupRow, members: VolumeRow[], enqueue: Enqueue) => Promise<void>,
  ): Promise<void> {
    const words = { enable: 'enable replication', disable: 'disable replication', failover: 'failover replication' }[verb];
    await this.deps.queue.transaction(async (tx, enqueue) => {
      const g = await lockGroup(this.deps.db, tx, caller, groupId);
      await this.refuseUnreplicated(tx, g);
      if (!valid.group.includes(g.status)) {
        throw new InvalidInputError(`Invalid group: Group ${g.id} status must be ${valid.group.join(' or ')}, but current status is: ${g.status}. Cannot ${words}.`);
      }
      const status = g.replication_status ?? 'disabled';
      if (!valid.replication.includes(status)) {
        throw new InvalidInputError(`Invalid group: Group ${g.id} replication status must be ${valid.replication.join(' or ')}, but current status is: ${status}. Cannot ${words}.`);
      }
      // A group has a backend once its first volume is placed; an empty one has nothing to replicate.
      if (!g.cluster_name) throw new InvalidInputError(`Invalid group: Group ${g.id} has no volumes on a backend yet. Cannot ${words}.`);
      const members = await tx.selectFrom('volumes').selectAll().where('group_id', '=', g.id).orderBy('id').execute() as VolumeRow[];
      await this.deps.db.lockRows(tx, 'volumes', members.map((v) => v.id));
      await fn(tx, g, members, enqueue);
    });
    await this.deps.db.durable();
  }

  /**
   * Refuses a group whose type is not a replication group type, or that
   * allows a volume type without replication (Cinder's `_check_type`).
   * @throws InvalidInputError.
   */
  private async refuseUnreplicated(tx: Tx, g: GroupRow): Promise<void> {
    const viewer = { isAdmin: true, projectId: g.project_id };
    const gt = await this.deps.groupTypes.find(tx, g.group_type_id, viewer);
    if (!GROUP_REPLICATION_SPECS.some((k) => /^<is>\s+true$/i.test((gt?.group_specs[k] ?? '').trim()))) {
      throw new InvalidInputError(`Invalid group type: Group ${g.id} is not a replication group type (its group type needs consistent_group_replication_enabled='<is> True').`);
    }
    const typeIds = (await tx.selectFrom('group_volume_types').select('volume_type_id').where('group_id', '=', g.id).execute()).map((x) => x.volume_type_id);
    for (const id of typeIds) {
      const t = await this.deps.types.find(tx, id, viewer);
      if (!t || !replicationOf(t)) {
        throw new InvalidInputError(`Invalid volume type: Volume type ${id} does not have 'replication_enabled' spec key set to '<is> True'.`);
      }
    }
  }

  /** Refuses a member that is neither available nor in use (Cinder's check before enable and failover). */
  private refuseVolumeStatus(v: VolumeRow, verb: 'enable' | 'failover'): void {
    if (!['available', 'in-use'].includes(v.status)) {
      throw new InvalidInputError(`Invalid volume: Volume ${v.id} status must be available or in-use, but current status is: ${v.status}. Cannot ${verb} replication.`);
    }
  }

  /** Sets the group and every member to `status` (their statuses were checked under the rows' locks). */
  private async setStatus(tx: Tx, g: GroupRow, members: readonly VolumeRow[], status: string): Promise<void> {
    await tx.updateTable('groups').set({ replication_status: status }).where('id', '=', g.id).execute();
    if (members.length > 0) await tx.updateTable('volumes').set({ replication_status: status }).where('id', 'in', members.map((v) => v.id)).execute();
  }

  /** The cluster of the group's own backend: where it is, or, failed over, where its members' copies are. */
  private async homeCluster(tx: Tx, g: GroupRow, members: readonly VolumeRow[]): Promise<string> {
    if (g.replication_status !== 'failed-over') return g.cluster_name!;
    for (const v of members) {
      const r = await replicaOf(tx, v.id);
      if (r) return r.secondary_cluster;
    }
    return g.cluster_name!;
  }

  /**
   * What a cluster's volume services report of its replication: its targets
   * (backend ids), whether the backend replicates to them itself, and the
   * target it serves from when failed over as a whole.
   */
  private async backendOf(tx: Tx, cluster: string): Promise<{ targets: string[]; inDriver: boolean; activeBackendId: string | null }> {
    const rows = (await this.deps.services.list(tx)).filter((s) => s.binary === 'cinder-volume' && s.cluster === cluster);
    const reports = reporting(rows);
    return {
      targets: [...new Set(reports.flatMap(({ report }) => replicationTargetsOf(report)))],
      inDriver: reports.some(({ report }) => replicatesInDriver(report)),
      activeBackendId: rows.find((s) => s.active_backend_id)?.active_backend_id ?? null,
    };
  }
}
