/**
 * Attachments (the 3.27 API): reserve a volume for a host, hand the host its
 * connection info, complete, and detach. Each attachment is its own NBD
 * export whose unguessable name is the credential; deleting the attachment
 * makes the name stop resolving and fences its open connections.
 *
 * Volume status: available ➜ reserved ➜ attaching ➜ in-use, and back to
 * available when its last attachment is deleted — the attach side's status
 * changes of the operation table (`operations/volume-attach.ts`).
 */
import { randomBytes } from 'node:crypto';
import type { Caller, Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import type { AttachmentRepository, AttachmentRow, Db, ServiceRepository, VolumeRow } from '../db/index.ts';
import { frontEndQos } from '../db/index.ts';
import { InvalidInputError, InvalidStatusError, NotFoundError } from '../errors/index.ts';
import type { JobQueue, Tx } from '../jobs/index.ts';
import { chooseEndpoint, connectionInfo, writesPastExport } from './connection-info.ts';
import { busyReason, type LifecycleDeps } from './lifecycle.ts';
import { volumeBeginDetaching, volumeComplete, volumeConnect, volumeDetach, volumeReserve, volumeRollDetaching } from './operations/index.ts';
import type { VolumeJobKinds } from './volume-jobs.ts';
import { awaitFences, fenceExport } from './export-fence.ts';

/**
 * How long a detach waits at most for every member to fence the attachment's
 * export, in ms (never longer than `service_down_time`): members fence within
 * milliseconds, so only a member that died and is not yet counted dead makes
 * it wait this long.
 */
export const FENCE_WAIT_MS = 5_000;

/** What a host says about itself when it asks for connection info (Cinder's connector). */
export interface Connector {
  host?: string;
  ip?: string;
  initiator?: string;
  mode?: string;
  [key: string]: unknown;
}

/** What the attachment manager needs. */
export interface AttachmentManagerDeps extends LifecycleDeps {
  db: Db;
  queue: JobQueue;
  clock: Clock;
  attachments: AttachmentRepository;
  services: ServiceRepository;
  kinds: VolumeJobKinds;
  /** `service_down_time` in ms: connection info points only at live services. */
  serviceDownMs: number;
}


/** Attachment operations. */
export class AttachmentManager {
  constructor(private readonly deps: AttachmentManagerDeps) {}

  /** @throws NotFoundError for an attachment the caller may not see. */
  async get(caller: Caller, id: string, q: Tx = this.deps.db.kysely): Promise<AttachmentRow> {
    const a = await this.deps.attachments.get(q, id, caller.isAdmin ? 'all' : { projectId: caller.projectId });
    if (!a) throw NotFoundError.of('VolumeAttachment', id);
    return a;
  }

  /**
   * Locks the row of an attachment's volume for the rest of `tx` (attachments
   * change only under it: the count of a volume's attachments decides its
   * status), then reads both afresh.
   * @throws NotFoundError.
   */
  private async lock(caller: Caller, id: string, tx: Tx): Promise<{ a: AttachmentRow; v: VolumeRow }> {
    const { volume_id } = await this.get(caller, id, tx);
    await this.deps.db.lockRows(tx, 'volumes', [volume_id]);
    return { a: await this.get(caller, id, tx), v: (await this.deps.volumes.get(tx, volume_id))! };
  }

  /**
   * Reserves the volume and records an attachment; with a connector, also
   * returns its connection info (status `attaching`). The legacy `os-reserve`
   * puts the volume straight into `attaching`, as Cinder's does.
   * @throws NotFoundError, InvalidStatusError (not available, already attached), InvalidInputError.
   */
  async create(caller: Caller, input: { volumeId: string; instanceUuid: string | null; connector: Connector | null; mode: 'rw' | 'ro'; legacyReserve?: boolean }): Promise<AttachmentRow> {
    const { queue, volumes, attachments, clock } = this.deps;
    const id = newId();
    await queue.transaction(async (tx) => {
      await this.deps.db.lockRows(tx, 'volumes', [input.volumeId]);
      const v = await volumes.get(tx, input.volumeId, caller.isAdmin ? 'all' : { projectId: caller.projectId });
      if (!v) throw NotFoundError.of('Volume', input.volumeId);
      // A multiattach volume takes further attachments while attached; any other only when available.
      const joining = v.multiattach === 1 && ['reserved', 'attaching', 'in-use'].includes(v.status);
      if (v.status !== 'available' && !joining) {
        throw new InvalidStatusError(v.multiattach
          ? `Invalid volume: Volume ${v.id} status must be available, reserved, attaching or in-use to attach, but the current status is: ${v.status}.`
          : `Invalid volume: Volume ${v.id} status must be available to reserve, but the current status is: ${v.status} (the volume is not multiattach).`);
      }
      const busy = await busyReason(this.deps, tx, v.id);
      if (busy) throw new InvalidStatusError(`Invalid volume: Volume ${v.id} is busy: ${busy}.`);
      if (!joining && !(await volumes.transition(tx, { id: v.id, from: volumeReserve.from, to: input.legacyReserve ? 'attaching' : 'reserved', requestId: caller.requestId }))) {
        throw new InvalidStatusError(`Invalid volume: Volume ${v.id} status changed concurrently; try again.`);
      }
      await attachments.insert(tx, {
        id, volume_id: v.id, project_id: v.project_id, instance_uuid: input.instanceUuid, attached_host: null, mountpoint: null,
        // A read-only volume is only ever exported read-only.
        attach_mode: v.readonly ? 'ro' : input.mode, attach_status: 'reserved', connector: null, connection_info: null,
        export_name: `basalt-${randomBytes(24).toString('hex')}`, created_at: isoAt(clock.now()), updated_at: null, attach_time: null,
        psk_identity: `basalt-${id}`, psk_key: randomBytes(32).toString('hex'),
      });
      if (input.connector) await this.connect(tx, caller, (await attachments.get(tx, id))!, v, input.connector);
    });
    return (await attachments.get(this.deps.db.kysely, id))!;
  }

  /**
   * Gives a reserved attachment the host's connector and its connection info.
   * @throws NotFoundError, InvalidStatusError.
   */
  async update(caller: Caller, id: string, connector: Connector): Promise<AttachmentRow> {
    await this.deps.queue.transaction(async (tx) => {
      const { a, v } = await this.lock(caller, id, tx);
      await this.connect(tx, caller, a, v, connector);
    });
    return (await this.deps.attachments.get(this.deps.db.kysely, id))!;
  }

  private async connect(tx: Tx, caller: Caller, a: AttachmentRow, v: VolumeRow, connector: Connector): Promise<void> {
    const endpoint = await chooseEndpoint(tx, this.deps.services, this.deps.serviceDownMs, v);
    if (!endpoint) {
      throw new InvalidInputError(`Invalid input received: no volume service of ${v.cluster_name ?? 'this volume'} exports volumes now; try again later.`);
    }
    const info = connectionInfo(a, v, endpoint, connector, await frontEndQos(tx, v.volume_type_id));
    if (!(await this.deps.attachments.transition(tx, a.id, ['reserved', 'attaching'], 'attaching', {
      connector: JSON.stringify(connector), connection_info: JSON.stringify(info), attached_host: typeof connector.host === 'string' ? connector.host : null,
    }))) {
      throw new InvalidStatusError(`Invalid attachment: attachment ${a.id} is ${a.attach_status} and cannot be given a connector.`);
    }
    await this.deps.volumes.transition(tx, { id: v.id, from: volumeConnect.from, to: volumeConnect.to[0], requestId: caller.requestId });
  }

  /**
   * Marks the attachment attached and the volume in-use (3.44 `os-complete`).
   * @throws NotFoundError, InvalidStatusError (no connector given yet).
   */
  async complete(caller: Caller, id: string): Promise<void> {
    await this.deps.queue.transaction(async (tx) => {
      const { a } = await this.lock(caller, id, tx);
      if (a.attach_status === 'attached') return;
      if (!(await this.deps.attachments.transition(tx, id, ['attaching'], 'attached', { attach_time: isoAt(this.deps.clock.now()) }))) {
        throw new InvalidStatusError(`Invalid attachment: attachment ${id} must be attaching (updated with a connector) to complete, but it is ${a.attach_status}.`);
      }
      await this.deps.volumes.transition(tx, { id: a.volume_id, from: volumeComplete.from, to: volumeComplete.to[0], set: { attach_status: 'attached' }, requestId: caller.requestId });
      await this.attachmentEvent(tx, 'volume.attached', (await this.deps.attachments.get(tx, id))!, caller.requestId);
    });
  }

  /** Records `volume.attached` or `volume.detached` for attachment `a` (its host and instance in the detail: `docs/events.md`). */
  private async attachmentEvent(tx: Tx, event: 'volume.attached' | 'volume.detached', a: AttachmentRow, requestId: string | null): Promise<void> {
    await this.deps.volumes.event(tx, a.project_id, a.volume_id, event, null, null, requestId, {
      attachment_id: a.id, instance_uuid: a.instance_uuid, attached_host: a.attached_host, attach_mode: a.attach_mode,
    });
  }

  /**
   * Deletes the attachment: its export name stops resolving at once and its
   * open connections are dropped by every member of the volume's cluster
   * (durable fence jobs, `export-fence.ts`), which it waits for, at most
   * {@link FENCE_WAIT_MS}; the volume is available again when no attachment is left.
   * @throws NotFoundError.
   */
  async delete(caller: Caller, id: string): Promise<void> {
    const fences = await this.deps.queue.transaction(async (tx, enqueue) => {
      const { a, v } = await this.lock(caller, id, tx);
      await this.deps.attachments.delete(tx, id);
      // Only what was attached is detached: removing a reservation that never connected says nothing.
      if (a.attach_status === 'attached') await this.attachmentEvent(tx, 'volume.detached', a, caller.requestId);
      if ((await this.deps.attachments.ofVolume(tx, v.id)).length === 0) {
        await this.deps.volumes.transition(tx, {
          id: v.id, from: volumeDetach.from, to: volumeDetach.to[0], set: { attach_status: 'detached' }, requestId: caller.requestId,
        });
      }
      // Any member of the cluster may be serving the export: every process
      // hears the fence when this commits, and every live member has its
      // durable fence job (export-fence.ts); later jobs of the volume wait for them.
      return fenceExport(this.deps, tx, enqueue, v, a.export_name, caller.requestId, writesPastExport(a.connection_info));
    });
    await awaitFences(this.deps.db, fences, Math.min(FENCE_WAIT_MS, this.deps.serviceDownMs));
  }

  // The older action API (os-reserve … os-force_detach), mapped onto attachments.

  /** `os-initialize_connection`: connection info for a host, reusing a pending attachment or making one. */
  async initializeConnection(caller: Caller, volumeId: string, connector: Connector): Promise<unknown> {
    for (let attempt = 1; ; attempt++) {
      const pending = (await this.deps.attachments.ofVolume(this.deps.db.kysely, volumeId))
        .find((a) => a.attach_status === 'reserved' || (a.attach_status === 'attaching' && a.attached_host === (connector.host ?? null)));
      try {
        const a = pending
          ? await this.update(caller, pending.id, connector)
          : await this.create(caller, { volumeId, instanceUuid: null, connector, mode: connector.mode === 'ro' ? 'ro' : 'rw' });
        return JSON.parse(a.connection_info!);
      } catch (err) {
        // The pending attachment was removed (a concurrent detach) after it was listed: look again.
        if (!pending || attempt >= 3 || !(err instanceof NotFoundError) || (await this.deps.attachments.get(this.deps.db.kysely, pending.id))) throw err;
      }
    }
  }

  /**
   * `os-attach`: completes the volume's pending attachment, recording instance,
   * mount point and host. One transaction under the volume's row lock, like
   * the 3.27 path: of concurrent calls on a volume that is not multiattach one
   * completes the attachment and the others find it attached — to the same
   * instance, an idempotent success (as in Cinder); to another, a refusal.
   * No call ever writes half an attachment (issue 13, defect 11).
   * @throws NotFoundError (a volume the caller may not see), InvalidStatusError
   *   (nothing pending to attach, or attached elsewhere and not multiattach).
   */
  async legacyAttach(caller: Caller, volumeId: string, info: { instanceUuid: string | null; mountpoint: string | null; hostName: string | null }): Promise<void> {
    const { db, queue, volumes, attachments, clock } = this.deps;
    await queue.transaction(async (tx) => {
      await db.lockRows(tx, 'volumes', [volumeId]);
      const v = await volumes.get(tx, volumeId, caller.isAdmin ? 'all' : { projectId: caller.projectId });
      if (!v) throw NotFoundError.of('Volume', volumeId);
      const all = await attachments.ofVolume(tx, v.id);
      const a = all.find((x) => x.attach_status === 'attaching' || x.attach_status === 'reserved');
      if (!a) {
        const attached = all.filter((x) => x.attach_status === 'attached');
        const same = (x: AttachmentRow) => info.instanceUuid !== null ? x.instance_uuid === info.instanceUuid : info.hostName !== null && x.attached_host === info.hostName;
        if (attached.some(same)) return;
        throw new InvalidStatusError(attached.length > 0 && !v.multiattach
          ? `Invalid volume: Volume ${v.id} is already attached and multiple attachments are not enabled.`
          : `Invalid volume: Volume ${v.id} has no connection being attached; call os-initialize_connection first.`);
      }
      // Under the lock nothing else changes this attachment: each compare-and-swap holds.
      if (a.attach_status === 'reserved') {
        await volumes.transition(tx, { id: v.id, from: volumeConnect.from, to: volumeConnect.to[0], requestId: caller.requestId });
      }
      await attachments.transition(tx, a.id, ['reserved', 'attaching'], 'attached', {
        instance_uuid: info.instanceUuid ?? a.instance_uuid, mountpoint: info.mountpoint, attached_host: info.hostName ?? a.attached_host,
        attach_time: isoAt(clock.now()),
      });
      await volumes.transition(tx, { id: v.id, from: volumeComplete.from, to: volumeComplete.to[0], set: { attach_status: 'attached' }, requestId: caller.requestId });
      await this.attachmentEvent(tx, 'volume.attached', (await attachments.get(tx, a.id))!, caller.requestId);
    });
  }

  /** `os-begin_detaching` / `os-roll_detaching`: in-use ⇄ detaching. */
  async setDetaching(caller: Caller, volumeId: string, detaching: boolean): Promise<void> {
    const v = await this.deps.volumes.get(this.deps.db.kysely, volumeId, caller.isAdmin ? 'all' : { projectId: caller.projectId });
    if (!v) throw NotFoundError.of('Volume', volumeId);
    const op = detaching ? volumeBeginDetaching : volumeRollDetaching;
    const [from, to] = [op.from[0], op.to[0]];
    if (!(await this.deps.volumes.transition(this.deps.db.kysely, { id: v.id, from: op.from, to, requestId: caller.requestId }))) {
      if (!detaching && v.status !== 'detaching') return; // rolling back what was not begun is harmless
      throw new InvalidStatusError(`Invalid volume: Volume ${v.id} status must be ${from}, but current status is: ${v.status}.`);
    }
  }

  /**
   * `os-detach` / `os-unreserve` / `os-force_detach`: deletes the given
   * attachment, or the volume's attachments (only the unattached ones for unreserve).
   */
  async detachVolume(caller: Caller, volumeId: string, opts: { attachmentId?: string | null; onlyPending?: boolean } = {}): Promise<void> {
    const v = await this.deps.volumes.get(this.deps.db.kysely, volumeId, caller.isAdmin ? 'all' : { projectId: caller.projectId });
    if (!v) throw NotFoundError.of('Volume', volumeId);
    let targets = await this.deps.attachments.ofVolume(this.deps.db.kysely, v.id);
    if (opts.attachmentId) {
      targets = targets.filter((a) => a.id === opts.attachmentId);
      if (targets.length === 0) throw NotFoundError.of('VolumeAttachment', opts.attachmentId);
    }
    if (opts.onlyPending) targets = targets.filter((a) => a.attach_status !== 'attached');
    for (const a of targets) {
      try {
        await this.delete(caller, a.id);
      } catch (err) {
        // Listed before a concurrent detach removed it: what this call asked for holds.
        if (!(err instanceof NotFoundError) || (await this.deps.attachments.get(this.deps.db.kysely, a.id))) throw err;
      }
    }
  }
}
