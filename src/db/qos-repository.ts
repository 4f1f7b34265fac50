/** Queries on QoS specs and their association with volume types. */
import type { Kysely } from 'kysely';
import type { Clock } from '../common/index.ts';
import { isoAt, newId } from '../common/index.ts';
import { CatalogueMemo } from './catalogue-memo.ts';
import type { Database, QosSpecsRow } from './schema.ts';

type Q = Kysely<Database>;

/** A QoS spec with its key/value pairs. */
export interface QosSpecs extends QosSpecsRow { specs: Record<string, string> }

/** Repository over QoS specs. */
export class QosRepository {
  /** @param memo the catalogue memo the volume types are kept in: an association changes a type (catalogue-memo.ts). */
  constructor(private readonly clock: Clock, private readonly memo = new CatalogueMemo()) {}

  async list(q: Q): Promise<QosSpecs[]> {
    return withItems(q, await q.selectFrom('qos_specs').selectAll().orderBy('name').execute());
  }

  async get(q: Q, id: string): Promise<QosSpecs | undefined> {
    const row = await q.selectFrom('qos_specs').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? (await withItems(q, [row]))[0] : undefined;
  }

  async nameTaken(q: Q, name: string): Promise<boolean> {
    return (await q.selectFrom('qos_specs').select('id').where('name', '=', name).executeTakeFirst()) !== undefined;
  }

  async create(q: Q, name: string, consumer: string, specs: Record<string, string>): Promise<string> {
    const id = newId();
    await q.insertInto('qos_specs').values({ id, name, consumer, created_at: isoAt(this.clock.now()) }).execute();
    await this.setItems(q, id, specs);
    return id;
  }

  async setConsumer(q: Q, id: string, consumer: string): Promise<void> {
    await q.updateTable('qos_specs').set({ consumer }).where('id', '=', id).execute();
  }

  async setItems(q: Q, id: string, specs: Record<string, string>): Promise<void> {
    for (const [key, value] of Object.entries(specs)) {
      await q.insertInto('qos_spec_items').values({ qos_specs_id: id, key, value })
        .onConflict((oc) => oc.columns(['qos_specs_id', 'key']).doUpdateSet({ value })).execute();
    }
  }

  /** Deletes keys; returns those that were absent. */
  async deleteItems(q: Q, id: string, keys: readonly string[]): Promise<string[]> {
    const missing: string[] = [];
    for (const key of keys) {
      const r = await q.deleteFrom('qos_spec_items').where('qos_specs_id', '=', id).where('key', '=', key).executeTakeFirst();
      if (r.numDeletedRows === 0n) missing.push(key);
    }
    return missing;
  }

  /** Types associated with the spec. */
  async associations(q: Q, id: string): Promise<Array<{ id: string; name: string }>> {
    return q.selectFrom('volume_types').select(['id', 'name']).where('qos_specs_id', '=', id).orderBy('name').execute();
  }

  /** Sets (or clears, with null) the spec of one type. */
  async associate(q: Q, typeId: string, qosId: string | null): Promise<void> {
    this.memo.changed(q);
    await q.updateTable('volume_types').set({ qos_specs_id: qosId }).where('id', '=', typeId).execute();
  }

  /** Clears the spec from every type that has it. */
  async disassociateAll(q: Q, id: string): Promise<void> {
    this.memo.changed(q);
    await q.updateTable('volume_types').set({ qos_specs_id: null }).where('qos_specs_id', '=', id).execute();
  }

  async delete(q: Q, id: string): Promise<void> {
    await q.deleteFrom('qos_specs').where('id', '=', id).execute();
  }
}

/** Rows with their key/value pairs. */
async function withItems(q: Q, rows: QosSpecsRow[]): Promise<QosSpecs[]> {
  if (rows.length === 0) return [];
  const items = await q.selectFrom('qos_spec_items').selectAll().where('qos_specs_id', 'in', rows.map((r) => r.id)).orderBy('key').execute();
  return rows.map((r) => ({ ...r, specs: Object.fromEntries(items.filter((i) => i.qos_specs_id === r.id).map((i) => [i.key, i.value])) }));
}

/** The QoS spec associated with a volume type, if any: what limits its volumes' I/O at the export, read when a connection opens. */
export async function qosOfType(q: Q, typeId: string | null): Promise<QosSpecs | undefined> {
  if (!typeId) return undefined;
  const row = await q.selectFrom('volume_types').innerJoin('qos_specs', 'qos_specs.id', 'volume_types.qos_specs_id')
    .selectAll('qos_specs').where('volume_types.id', '=', typeId).executeTakeFirst();
  return row ? (await withItems(q, [row]))[0] : undefined;
}

/**
 * The specs a host applies itself, as Cinder puts them in connection info
 * (`qos_specs`): those of a `front-end` or `both` consumer; null otherwise.
 */
export async function frontEndQos(q: Q, typeId: string | null): Promise<Record<string, string> | null> {
  const s = await qosOfType(q, typeId);
  return s && (s.consumer === 'front-end' || s.consumer === 'both') ? s.specs : null;
}
