/**
 * Volumes whose storage went missing behind Basalt's back: an image someone
 * removed from the RBD pool with `rbd rm`, a volume file deleted by hand.
 *
 * Each listing of what a backend holds (the manageable listing a volume
 * service runs in the background at its heartbeats) names every volume of
 * Basalt's it found. A volume recorded on the backend, `available` or
 * `in-use`, unchanged since before the listing began, and missing from two
 * listings in a row, has lost its storage:
 * - `available`: it becomes `error` (a status event whose reason says why),
 *   with a user message: it can only be deleted;
 * - `in-use`: its status stays, so that it can still be detached (its host
 *   already sees I/O errors), with the same user message and a
 *   `volume.storage_missing` event; once detached, the next listings make it `error`.
 * Volumes being moved (a migration or retype under way) or failed over to a
 * replication target are left alone: their storage is elsewhere for a while.
 * Two listings, not one, so that a volume created, managed or renamed while a
 * listing ran is never taken for lost.
 */
import type { Clock } from '../common/index.ts';
import { isoAt } from '../common/index.ts';
import type { Db, VolumeRepository } from '../db/index.ts';
import { failureDetail, MESSAGE_ACTIONS, MESSAGE_DETAILS, recordUserMessage } from '../messages/index.ts';

/** What {@link LostStorage} needs. */
export interface LostStorageDeps {
  db: Db;
  volumes: VolumeRepository;
  clock: Clock;
  messageTtlSeconds: number;
}

/** One volume service's watch over its backend's volumes. */
export class LostStorage {
  /** Volumes missing from the last listing: missing again, they are lost. */
  #suspects = new Set<string>();
  /** Attached volumes already reported lost (said once per process). */
  readonly #reported = new Set<string>();

  /** @param hosts the service's host strings (`host@backend` and its cluster): volumes whose `host` is `<one of them>#<pool>` are its. */
  constructor(private readonly deps: LostStorageDeps, private readonly hosts: readonly string[]) {}

  /**
   * Takes one complete listing: `found` holds the id of every volume of
   * Basalt's the backend holds, `since` when the listing began (ms).
   * Returns the volumes it found lost this time.
   */
  async listed(found: ReadonlySet<string>, since: number): Promise<string[]> {
    const { db, volumes, clock, messageTtlSeconds } = this.deps;
    const rows = await db.kysely.selectFrom('volumes').select(['id', 'project_id', 'status'])
      .where((eb) => eb.or(this.hosts.map((h) => eb('host', 'like', `${h}#%`))))
      .where('status', 'in', ['available', 'in-use'])
      .where('migration_status', 'is', null)
      .where((eb) => eb.or([eb('replication_status', 'is', null), eb('replication_status', '!=', 'failed-over')]))
      .where('updated_at', '<', isoAt(since))
      .execute();
    const missing = rows.filter((r) => !found.has(r.id));
    const lost = missing.filter((r) => this.#suspects.has(r.id));
    this.#suspects = new Set(missing.map((r) => r.id));
    const detail = failureDetail('volume', MESSAGE_ACTIONS.CHECK_VOLUME, MESSAGE_DETAILS.STORAGE_MISSING);
    const marked: string[] = [];
    for (const v of lost) {
      if (v.status === 'in-use' && this.#reported.has(v.id)) continue;
      const changed = await db.kysely.transaction().execute(async (tx) => {
        if (v.status === 'available') {
          if (!await volumes.transition(tx, { id: v.id, from: ['available'], to: 'error', detail })) return false;
        } else {
          await volumes.event(tx, v.project_id, v.id, 'volume.storage_missing', null, null, null, detail);
        }
        await recordUserMessage(tx, clock, messageTtlSeconds, {
          projectId: v.project_id, resourceType: 'volume', resourceId: v.id, action: MESSAGE_ACTIONS.CHECK_VOLUME, detail: MESSAGE_DETAILS.STORAGE_MISSING, requestId: null,
        });
        return true;
      });
      if (!changed) continue;
      if (v.status === 'in-use') this.#reported.add(v.id);
      marked.push(v.id);
    }
    const stillMissing = new Set(missing.map((r) => r.id));
    for (const id of this.#reported) if (!stillMissing.has(id)) this.#reported.delete(id);
    return marked;
  }
}
