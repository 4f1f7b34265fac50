/** Queries on `attachments`. */
import type { Kysely } from 'kysely';
import type { Clock } from '../common/index.ts';
import { isoAt } from '../common/index.ts';
import type { ProjectScope } from './resource-repository.ts';
import type { AttachmentRow, Database } from './schema.ts';

type Q = Kysely<Database>;

/** Repository over attachments. */
export class AttachmentRepository {
  constructor(private readonly clock: Clock) {}

  async insert(q: Q, row: AttachmentRow): Promise<void> {
    await q.insertInto('attachments').values(row).execute();
  }

  /** The attachment, if it exists within `scope`. */
  async get(q: Q, id: string, scope: ProjectScope = 'all'): Promise<AttachmentRow | undefined> {
    let s = q.selectFrom('attachments').selectAll().where('id', '=', id);
    if (scope !== 'all') s = s.where('project_id', '=', scope.projectId);
    return s.executeTakeFirst();
  }

  /** The attachment behind an export name. */
  async byExport(q: Q, exportName: string): Promise<AttachmentRow | undefined> {
    return q.selectFrom('attachments').selectAll().where('export_name', '=', exportName).executeTakeFirst();
  }

  /** Identity → key of every attachment that can be connected to now. */
  async pskKeys(q: Q): Promise<Map<string, string>> {
    const rows = await q.selectFrom('attachments').select(['psk_identity', 'psk_key'])
      .where('attach_status', 'in', ['attaching', 'attached']).where('psk_identity', 'is not', null).execute();
    return new Map(rows.map((r) => [r.psk_identity!, r.psk_key!]));
  }

  /** A volume's attachments, oldest first. */
  async ofVolume(q: Q, volumeId: string): Promise<AttachmentRow[]> {
    return q.selectFrom('attachments').selectAll().where('volume_id', '=', volumeId).orderBy('created_at').execute();
  }

  /** Attachments of many volumes at once. */
  async ofVolumes(q: Q, volumeIds: readonly string[]): Promise<Map<string, AttachmentRow[]>> {
    const out = new Map<string, AttachmentRow[]>(volumeIds.map((id) => [id, []]));
    if (volumeIds.length === 0) return out;
    for (const a of await q.selectFrom('attachments').selectAll().where('volume_id', 'in', volumeIds).orderBy('created_at').execute()) {
      out.get(a.volume_id)!.push(a);
    }
    return out;
  }

  /** Lists attachments in `scope`, with optional exact filters. */
  async list(q: Q, scope: ProjectScope, f: { volumeId?: string; instanceId?: string; status?: string }, limit: number): Promise<AttachmentRow[]> {
    let s = q.selectFrom('attachments').selectAll();
    if (scope !== 'all') s = s.where('project_id', '=', scope.projectId);
    if (f.volumeId) s = s.where('volume_id', '=', f.volumeId);
    if (f.instanceId) s = s.where('instance_uuid', '=', f.instanceId);
    if (f.status) s = s.where('attach_status', '=', f.status);
    return s.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute();
  }

  /** Compare-and-swap of the attach status, with other columns. */
  async transition(q: Q, id: string, from: readonly string[], to: string, set: Partial<AttachmentRow> = {}): Promise<boolean> {
    const r = await q.updateTable('attachments').set({ ...set, attach_status: to, updated_at: isoAt(this.clock.now()) })
      .where('id', '=', id).where('attach_status', 'in', from).executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  async delete(q: Q, id: string): Promise<boolean> {
    const r = await q.deleteFrom('attachments').where('id', '=', id).executeTakeFirst();
    return r.numDeletedRows > 0n;
  }
}
