/**
 * Queries on `services`: registration of a role instance, heartbeats with
 * capabilities, and the views the scheduler and `os-services` need.
 */
import type { Kysely } from 'kysely';
import type { Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import type { Database, ServiceRow } from './schema.ts';

type Q = Kysely<Database>;

/** What a starting service says about itself. */
export interface ServiceRegistration {
  host: string;
  binary: string;
  backend: string | null;
  cluster: string | null;
  availabilityZone: string;
  version: string;
  payloadVersions: Record<string, number>;
  instanceId: string;
}

/** Repository over services. */
export class ServiceRepository {
  constructor(private readonly clock: Clock) {}

  /**
   * Creates or takes over the row of (`host`, `binary`) and returns it with the
   * instance id it had before, which — being another incarnation on the same
   * host — is dead, so its leases can be released at once.
   */
  async register(q: Q, r: ServiceRegistration): Promise<{ row: ServiceRow; previousInstanceId: string | null }> {
    const now = this.clock.now();
    const fields = {
      backend: r.backend, cluster: r.cluster, availability_zone: r.availabilityZone, version: r.version,
      payload_versions: JSON.stringify(r.payloadVersions), instance_id: r.instanceId,
      heartbeat_at: isoAt(now), heartbeat_ms: now,
    };
    const existing = await q.selectFrom('services').selectAll().where('host', '=', r.host).where('binary', '=', r.binary).executeTakeFirst();
    if (existing) {
      await q.updateTable('services').set({ ...fields, updated_at: isoAt(now) }).where('id', '=', existing.id).execute();
    } else {
      await q.insertInto('services').values({
        id: newId(), host: r.host, binary: r.binary, disabled: 0, disabled_reason: null, capabilities: null,
        created_at: isoAt(now), updated_at: null, ...fields,
      }).execute();
    }
    const row = await q.selectFrom('services').selectAll().where('host', '=', r.host).where('binary', '=', r.binary).executeTakeFirstOrThrow();
    return { row, previousInstanceId: existing && existing.instance_id !== r.instanceId ? existing.instance_id : null };
  }

  /** Records a heartbeat, with fresh capabilities when given. */
  async heartbeat(q: Q, id: string, capabilities?: unknown): Promise<void> {
    const now = this.clock.now();
    await q.updateTable('services')
      .set({ heartbeat_at: isoAt(now), heartbeat_ms: now, ...(capabilities === undefined ? {} : { capabilities: JSON.stringify(capabilities) }) })
      .where('id', '=', id).execute();
  }

  /** Every service row. */
  async list(q: Q): Promise<ServiceRow[]> {
    return q.selectFrom('services').selectAll().orderBy('binary').orderBy('host').execute();
  }

  /** Sets rows (by id) enabled, or disabled with a reason. */
  async setDisabled(q: Q, ids: readonly string[], disabled: boolean, reason: string | null): Promise<void> {
    if (ids.length === 0) return;
    await q.updateTable('services').set({ disabled: disabled ? 1 : 0, disabled_reason: disabled ? reason : null, updated_at: isoAt(this.clock.now()) })
      .where('id', 'in', ids).execute();
  }

  /** Freezes or thaws rows (by id). */
  async setFrozen(q: Q, ids: readonly string[], frozen: boolean): Promise<void> {
    if (ids.length === 0) return;
    await q.updateTable('services').set({ frozen: frozen ? 1 : 0, updated_at: isoAt(this.clock.now()) }).where('id', 'in', ids).execute();
  }

  /** Whether a row runs on `host`: its host string is `host`, or `host@backend`. */
  onHost(row: Pick<ServiceRow, 'host'>, host: string): boolean {
    return row.host === host || row.host.startsWith(`${host}@`);
  }

  /** Whether a row's heartbeat is recent enough to count as up. */
  isUp(row: Pick<ServiceRow, 'heartbeat_ms'>, downMs: number): boolean {
    return Number(row.heartbeat_ms) >= this.clock.now() - downMs;
  }
}
