/**
 * The rows that refer to a volume (attachments, transfer offers), checked and
 * released before the volume is removed: a delete first makes the removal of
 * the volume's row certain, and only then destroys its storage. An admin's
 * `os-reset_status` (what Cinder's docs advise for a stuck volume) can leave
 * such rows behind a volume that looks free; deleting it must neither fail on
 * them after the data is gone nor keep them pointing at nothing.
 */
import { InvalidStatusError } from '../errors/index.ts';
import type { Enqueue, Tx } from '../jobs/index.ts';
import { fenceExport, type ExportFenceDeps } from './export-fence.ts';

/** What releasing needs: what fencing a released attachment's export needs. */
export type VolumeReferenceDeps = ExportFenceDeps;

/**
 * Refuses the removal of a volume a host is attached to, whatever the
 * volume's own status says (an admin may have reset it): its data is in use.
 * Call with the volume's row locked.
 * @throws InvalidStatusError naming the attachment.
 */
export async function refuseIfAttached(tx: Tx, volumeId: string): Promise<void> {
  const attached = await tx.selectFrom('attachments').select('id').where('volume_id', '=', volumeId).where('attach_status', '=', 'attached').executeTakeFirst();
  if (attached) {
    throw new InvalidStatusError(`Invalid volume: Volume ${volumeId} is attached (attachment ${attached.id}); detach it before deleting it.`);
  }
}

/**
 * Releases every row that refers to a volume about to be removed, in `tx`:
 * its pending attachments (reserved or attaching: deleted, their exports
 * fenced as a detach does) and its transfer offer. Idempotent. Call with the
 * volume's row locked, after {@link refuseIfAttached}. Without `enqueue` the
 * fence is only notified (a handler's own transaction; the request that moved
 * the volume to `deleting` already queued the durable fence jobs).
 */
export async function releaseVolumeReferences(deps: VolumeReferenceDeps, tx: Tx, enqueue: Enqueue | undefined, v: { id: string; cluster_name: string | null }, requestId: string | null): Promise<void> {
  const pending = await tx.selectFrom('attachments').select(['id', 'export_name']).where('volume_id', '=', v.id).where('attach_status', '!=', 'attached').execute();
  for (const a of pending) {
    await tx.deleteFrom('attachments').where('id', '=', a.id).execute();
    await fenceExport(deps, tx, enqueue, v, a.export_name, requestId);
  }
  await tx.deleteFrom('transfers').where('volume_id', '=', v.id).execute();
}
