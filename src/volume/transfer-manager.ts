/**
 * Volume transfers: a project offers one of its volumes (status
 * `awaiting-transfer`) and hands out an auth key; whoever presents the key
 * accepts it, and the volume — with its snapshots, unless the offer said
 * `no_snapshots` — moves to the accepting project, its quota with it, in one
 * transaction. Only a salted hash of the key is stored.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Caller, Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import type { Db, SnapshotRepository, TransferRow, VolumeRepository, VolumeTypeRepository } from '../db/index.ts';
import { InvalidInputError, InvalidStatusError, NotFoundError } from '../errors/index.ts';
import type { JobQueue, Tx } from '../jobs/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import { snapshotQuota, typeNameOf, volumeQuota } from './volume-quota.ts';
import { volumeOffer, volumeOfferSettled } from './operations/index.ts';

/** What transfers need. */
export interface TransferManagerDeps {
  db: Db;
  queue: JobQueue;
  clock: Clock;
  volumes: VolumeRepository;
  snapshots: SnapshotRepository;
  types: VolumeTypeRepository;
  quotas: QuotaEngine;
}

/** A transfer as created: the only time its auth key is seen. */
export interface NewTransfer { row: TransferRow; authKey: string }

const hashOf = (salt: string, key: string): string => createHash('sha256').update(salt).update(key).digest('hex');

/** Transfer operations. */
export class TransferManager {
  constructor(private readonly deps: TransferManagerDeps) {}

  /**
   * Offers a volume for transfer.
   * @throws NotFoundError, InvalidStatusError (volume not available, snapshots busy).
   */
  async create(caller: Caller, input: { volumeId: string; name: string | null; noSnapshots: boolean }): Promise<NewTransfer> {
    const { db, queue, volumes, snapshots, clock } = this.deps;
    const authKey = randomBytes(8).toString('hex');
    const salt = randomBytes(8).toString('hex');
    const id = newId();
    await queue.transaction(async (tx) => {
      await db.lockRows(tx, 'volumes', [input.volumeId]);
      const v = await volumes.get(tx, input.volumeId, caller.isAdmin ? 'all' : { projectId: caller.projectId });
      if (!v) throw NotFoundError.of('Volume', input.volumeId);
      if (v.status !== 'available') throw new InvalidStatusError(`Invalid volume: Status of volume must be available, but current status is: ${v.status}.`);
      if (!input.noSnapshots) {
        const busy = (await snapshots.ofVolume(tx, v.id)).find((s) => s.status !== 'available');
        if (busy) throw new InvalidStatusError(`Invalid snapshot: Snapshot ${busy.id} of the volume is ${busy.status}; snapshots move with the volume and must be available.`);
      }
      await volumes.transition(tx, { id: v.id, from: volumeOffer.from, to: volumeOffer.to[0], requestId: caller.requestId });
      // An available volume's earlier offer is stale (an admin reset the volume's
      // status): it is withdrawn, or it would become acceptable again with this one.
      await tx.deleteFrom('transfers').where('volume_id', '=', v.id).execute();
      await tx.insertInto('transfers').values({
        id, volume_id: v.id, project_id: v.project_id, name: input.name, salt, key_hash: hashOf(salt, authKey),
        no_snapshots: input.noSnapshots ? 1 : 0, created_at: isoAt(clock.now()),
      }).execute();
    });
    return { row: (await this.find(this.deps.db.kysely, id))!, authKey };
  }

  /** Transfers the caller may see: its project's, or every project's for an admin asking for all. */
  async list(caller: Caller, allTenants: boolean): Promise<TransferRow[]> {
    let q = this.deps.db.kysely.selectFrom('transfers').selectAll();
    if (!(caller.isAdmin && allTenants)) q = q.where('project_id', '=', caller.projectId);
    return q.orderBy('created_at', 'desc').orderBy('id').execute();
  }

  /**
   * One transfer of the caller's project (any, for an admin).
   * @throws NotFoundError.
   */
  async get(caller: Caller, id: string, q: Tx = this.deps.db.kysely): Promise<TransferRow> {
    const t = await this.find(q, id);
    if (!t || (!caller.isAdmin && t.project_id !== caller.projectId)) throw NotFoundError.of('Transfer', id);
    return t;
  }

  /**
   * Withdraws an offer: the volume is available to its project again.
   * @throws NotFoundError.
   */
  async delete(caller: Caller, id: string): Promise<void> {
    await this.deps.queue.transaction(async (tx) => {
      const t = await this.lockTransfer(tx, () => this.get(caller, id, tx));
      await tx.deleteFrom('transfers').where('id', '=', t.id).execute();
      await this.deps.volumes.transition(tx, { id: t.volume_id, from: volumeOfferSettled.from, to: volumeOfferSettled.to[0], requestId: caller.requestId });
    });
  }

  /**
   * Accepts a transfer with its auth key: the volume (and its snapshots unless
   * the offer excluded them) now belongs to the caller's project.
   * @throws NotFoundError, InvalidInputError (wrong key), QuotaExceededError, InvalidStatusError.
   */
  async accept(caller: Caller, id: string, authKey: string): Promise<TransferRow> {
    const { volumes, snapshots, types, quotas } = this.deps;
    let accepted!: TransferRow;
    await this.deps.queue.transaction(async (tx) => {
      // Anyone holding the key may accept: the transfer is looked up in every project.
      const t = await this.lockTransfer(tx, async () => {
        const found = await this.find(tx, id);
        if (!found) throw NotFoundError.of('Transfer', id);
        return found;
      });
      const expected = Buffer.from(t.key_hash, 'hex');
      const given = Buffer.from(hashOf(t.salt, authKey), 'hex');
      if (!timingSafeEqual(expected, given)) throw new InvalidInputError(`Invalid auth key: Attempt to transfer ${id} with invalid auth key.`);
      const v = (await volumes.get(tx, t.volume_id))!;
      if (v.status !== 'awaiting-transfer') throw new InvalidStatusError(`Invalid volume: Status of volume must be awaiting-transfer, but current status is: ${v.status}.`);
      const typeName = await typeNameOf(types, tx, v.volume_type_id);
      const moving = t.no_snapshots ? [] : await snapshots.ofVolume(tx, v.id);
      // Quota moves with the rows: taken in the new project (which may refuse), given back in the old.
      await quotas.consume(tx, caller.projectId, volumeQuota(v.size, typeName), v.size);
      for (const s of moving) await quotas.consume(tx, caller.projectId, snapshotQuota(s.volume_size, typeName));
      await volumes.transition(tx, { id: v.id, from: volumeOfferSettled.from, to: volumeOfferSettled.to[0], set: { project_id: caller.projectId, user_id: caller.userId }, requestId: caller.requestId });
      for (const s of moving) await tx.updateTable('snapshots').set({ project_id: caller.projectId, user_id: caller.userId }).where('id', '=', s.id).execute();
      await quotas.release(tx, v.project_id, volumeQuota(v.size, typeName));
      for (const s of moving) await quotas.release(tx, s.project_id, snapshotQuota(s.volume_size, typeName));
      await tx.deleteFrom('transfers').where('id', '=', t.id).execute();
      accepted = t;
    });
    return accepted;
  }

  private find(q: Tx, id: string): Promise<TransferRow | undefined> {
    return q.selectFrom('transfers').selectAll().where('id', '=', id).executeTakeFirst();
  }

  /** Finds a transfer, locks its volume's row, and reads the transfer again under the lock. */
  private async lockTransfer(tx: Tx, find: () => Promise<TransferRow>): Promise<TransferRow> {
    const first = await find();
    await this.deps.db.lockRows(tx, 'volumes', [first.volume_id]);
    return find();
  }
}
