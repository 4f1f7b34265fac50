/**
 * The export provider of a process's NBD server: an export name resolves
 * while its attachment exists and has been given a connector, or while its
 * row in `volume_exports` exists (Basalt's own exports: a move between
 * processes reads its source through one, a replicated volume's points are
 * shipped to its secondary copy through one), and the backend whose copy it
 * serves (the volume's, or the export's `cluster`) runs in this process.
 */
import type { Logger } from 'pino';
import { qosOfType, type AttachmentRepository, type Db, type VolumeRepository } from '../db/index.ts';
import type { GuardedDriver } from '../drivers/index.ts';
import { qosLimits, type ExportProvider, type QosLimits } from '../export/index.ts';
import type { LiveMoves } from '../volume/index.ts';

/**
 * Builds the provider over the drivers of this process, by cluster. A volume
 * moving while attached (`moves`) is served by the mirror of its move.
 */
export function attachmentExports(
  db: Db, attachments: AttachmentRepository, volumes: VolumeRepository, drivers: ReadonlyMap<string, GuardedDriver>, moves?: LiveMoves, log?: Logger,
): ExportProvider {
  let keys = new Map<string, Buffer>();
  return {
    async find(name) {
      const a = await attachments.byExport(db.kysely, name)
        ?? await db.kysely.selectFrom('volume_exports').select(['volume_id', 'psk_identity', 'read_only', 'cluster']).where('export_name', '=', name).executeTakeFirst()
          .then((x) => x && { volume_id: x.volume_id, psk_identity: x.psk_identity, attach_mode: x.read_only === 1 ? 'ro' : 'rw', attach_status: 'attached', cluster: x.cluster });
      if (!a || !['attaching', 'attached'].includes(a.attach_status)) return undefined;
      const v = await volumes.get(db.kysely, a.volume_id);
      // A replication export serves the copy on its own backend (the secondary), not the volume's.
      const copy = 'cluster' in a && a.cluster ? a.cluster : undefined;
      const cluster = copy ?? v?.cluster_name;
      const driver = cluster ? drivers.get(cluster) : undefined;
      if (!v || !driver) return undefined;
      if (copy !== undefined) {
        return {
          // No key: holding the volume's writes (a point being taken) must not hold the copy's, nor count them as the volume's changes.
          name, pskIdentity: a.psk_identity!, description: `Basalt replica of volume ${v.id}`, readOnly: false,
          canMultiConn: driver.capabilities.canMultiConn, open: () => driver.openVolume({ id: v.id, sizeGiB: v.size }),
          // Its natively served clients are a synchronous mirror's channels from a process on this machine, whose
          // worker polls for each reply already: a second thread spinning for the next request took the CPU both
          // processes' writes need (bench/replication.ts on 2 vCPUs: sync 4k QD1 68-72 µs without, 94-113 µs with).
          pollMicros: 0,
        };
      }
      // A synchronously replicated volume is served only through its mirror: no write is acknowledged on the primary alone.
      // Once failed over it is served alone until its old primary is back and mirrored again (what a failover is for:
      // the old primary is gone); the writes it takes meanwhile reach that copy by the mirror's first copy, and a
      // failback waits for the mirror to be in step.
      if (!moves?.has(v.id) && v.replication_status !== 'failed-over' && await db.kysely.selectFrom('volume_replicas').select('volume_id').where('volume_id', '=', v.id)
        .where('mode', '=', 'sync').where('primary_cluster', '=', cluster!).executeTakeFirst()) return undefined;
      const qos = await exportQos(db, v.volume_type_id, v.size, log);
      return {
        name,
        key: v.id,
        ...(qos ? { qos } : {}),
        ...(a.psk_identity ? { pskIdentity: a.psk_identity } : {}),
        description: `Basalt volume ${v.id}`,
        readOnly: a.attach_mode === 'ro',
        canMultiConn: driver.capabilities.canMultiConn,
        open: async () => moves?.open(v.id) ?? driver.openVolume({ id: v.id, sizeGiB: v.size }),
      };
    },
    // Export names are credentials: nobody is entitled to a list of them.
    async list() {
      return [];
    },
    async refreshKeys() {
      const own = await db.kysely.selectFrom('volume_exports').select(['psk_identity', 'psk_key']).execute();
      keys = new Map([...await attachments.pskKeys(db.kysely), ...own.map((x) => [x.psk_identity, x.psk_key] as const)].map(([id, hex]) => [id, Buffer.from(hex, 'hex')]));
    },
    pskKey: (identity) => keys.get(identity),
  };
}

/**
 * The QoS limits of a volume's type at its export: every consumer's specs
 * (Basalt's export is the host's way in and the backend's door at once).
 * Specs that do not parse (stored before they were checked) limit nothing, and say so.
 */
async function exportQos(db: Db, typeId: string | null, sizeGiB: number, log?: Logger): Promise<QosLimits | undefined> {
  const specs = await qosOfType(db.kysely, typeId);
  if (!specs) return undefined;
  try {
    return qosLimits(specs.specs, sizeGiB);
  } catch (err) {
    log?.warn({ err, qos_specs_id: specs.id }, 'QoS specs that do not parse limit nothing');
    return undefined;
  }
}
