/**
 * The operation table without HTTP: an in-memory SQLite database, the volume
 * manager (the API's entry points), the volume service's handlers over the
 * memory driver, and a job runner that runs queued jobs one at a time as a
 * worker would (claim, run, complete or fail).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import pino from 'pino';
import { isoAt, newId, systemClock, type Caller } from '../../../src/common/index.ts';
import { openCoordinator } from '../../../src/coordination/index.ts';
import {
  AttachmentRepository, migrateToLatest, openDatabase, QuotaRepository, ServiceRepository, SnapshotRepository, TypeEncryptionRepository,
  VolumeRepository, VolumeTypeRepository, type JobRow, type VolumeRow,
} from '../../../src/db/index.ts';
import { GuardedDriver, MemoryDriver } from '../../../src/drivers/index.ts';
import { toBasaltError } from '../../../src/errors/index.ts';
import { JobQueue, type AnyJobHandler, type JobContext } from '../../../src/jobs/index.ts';
import { FixedKeyManager } from '../../../src/keymgr/index.ts';
import { QuotaEngine } from '../../../src/quota/index.ts';
import { perTypeResources, stuckResourceRules, VolumeManager, volumeHandlers, volumeJobKinds, volumeQuota, volumeUsageCounter } from '../../../src/volume/index.ts';

/** The project and member every test acts as. */
export const CALLER: Caller = { projectId: 'p1', userId: 'u1', isAdmin: false, roles: ['member'], requestId: 'req-unit' };
/** An admin of the same project. */
export const ADMIN: Caller = { ...CALLER, isAdmin: true, roles: ['admin', 'member'] };
/** The one backend's cluster and pool. */
export const CLUSTER = 'host@memory';
const POOL = `${CLUSTER}#pool`;

/** Builds everything on a fresh database; closed after the test. */
export async function operationHarness(t: TestContext) {
  const db = openDatabase('sqlite://:memory:');
  t.after(() => db.close());
  await migrateToLatest(db);
  const clock = systemClock;
  const queue = new JobQueue(db, clock, { maxAttempts: 1, leaseMs: 60_000, retryDelayMs: 10 });
  const volumes = new VolumeRepository(clock);
  const snapshots = new SnapshotRepository(clock);
  const types = new VolumeTypeRepository(clock);
  const services = new ServiceRepository(clock);
  const attachments = new AttachmentRepository(clock);
  const typeEncryption = new TypeEncryptionRepository(clock, db.dialect);
  const keys = new FixedKeyManager('00'.repeat(32));
  const quotas = new QuotaEngine({
    repo: new QuotaRepository(clock),
    config: { quota_volumes: 10, quota_snapshots: 10, quota_gigabytes: 100, quota_backups: 10, quota_backup_gigabytes: 100, quota_groups: 10, per_volume_size_limit: -1 },
    count: volumeUsageCounter(volumes, snapshots, types), extraResources: perTypeResources(types),
  });
  const jobDeps = { volumes, snapshots, quotas, types, clock, messageTtlSeconds: 3600 };
  const kinds = volumeJobKinds(jobDeps);
  const manager = new VolumeManager({
    db, queue, clock, volumes, snapshots, quotas, kinds, types, services, typeEncryption, keys,
    options: { defaultVolumeType: '__DEFAULT__', defaultZone: 'nova', zoneFallback: false, serviceDownMs: 60_000 },
  });
  const memory = new MemoryDriver({ poolName: 'pool' });
  const driver = new GuardedDriver(memory, 10_000);
  const lockDir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-ops-'));
  const coordinator = openCoordinator(`file://${lockDir}`);
  t.after(async () => { await coordinator.close(); fs.rmSync(lockDir, { recursive: true, force: true }); });
  const handlers = new Map<string, AnyJobHandler>(volumeHandlers({
    db, clock, queue, services, kinds, coordinator, lockTimeoutMs: 5_000, keys, volumes, snapshots, types, quotas,
  }, driver).map((h) => [h.kind.kind, h]));
  const log = pino({ level: 'silent' });

  return {
    db, queue, volumes, snapshots, attachments, quotas, manager, driver, memory, kinds,
    sweepRules: stuckResourceRules(db, jobDeps),

    /** Queued jobs (not yet run), oldest first. */
    queued: (): Promise<JobRow[]> => db.kysely.selectFrom('jobs').selectAll().where('state', '=', 'queued').orderBy('created_at').execute(),

    /** Runs the queued jobs of the volume service (not the scheduler's) until none is left, as a worker would. Returns them. */
    async runJobs(): Promise<JobRow[]> {
      const ran: JobRow[] = [];
      for (let job = await queue.claim('unit', [`volume:${CLUSTER}`], [...handlers.keys()]); job; job = await queue.claim('unit', [`volume:${CLUSTER}`], [...handlers.keys()])) {
        const h = handlers.get(job.kind)!;
        const claimed = job;
        const ctx: JobContext = {
          job: claimed, signal: new AbortController().signal, log,
          complete: (fn) => queue.transaction(async (tx, enqueue) => {
            if (fn) await fn(tx, enqueue);
            await queue.markDone(tx, claimed.id, 'unit');
          }),
        };
        try {
          await h.run(ctx, h.kind.parse(JSON.parse(claimed.payload), claimed.payload_version));
        } catch (err) {
          await queue.fail(h.kind, claimed, 'unit', toBasaltError(err));
        }
        ran.push(claimed);
      }
      return ran;
    },

    /** An available volume placed on the memory backend, with its storage and its quota taken. */
    async volume(o: Partial<VolumeRow> & { withStorage?: boolean } = {}): Promise<VolumeRow> {
      const { withStorage = true, ...set } = o;
      const row: VolumeRow = {
        id: newId(), project_id: CALLER.projectId, user_id: CALLER.userId, name: null, description: null, size: 1, status: 'available',
        attach_status: 'detached', availability_zone: 'nova', host: POOL, cluster_name: CLUSTER, volume_type_id: null, snapshot_id: null,
        source_volid: null, bootable: 0, multiattach: 0, provider_location: null, readonly: null, encryption_key_id: null,
        created_at: isoAt(clock.now()), updated_at: null, launched_at: null, group_id: null, migration_status: null, migration_host: null, replication_status: 'disabled', ...set,
      };
      await queue.transaction(async (tx) => {
        await quotas.consume(tx, row.project_id, volumeQuota(row.size), row.size);
        await volumes.insert(tx, row, {});
      });
      if (withStorage) await driver.createVolume({ id: row.id, sizeGiB: row.size });
      return row;
    },

    /** Whether the backend holds the volume's storage. */
    async hasStorage(id: string): Promise<boolean> {
      return memory.openVolume({ id, sizeGiB: 1 }).then(async (h) => { await h.close(); return true; }, () => false);
    },

    /** The project's quota usage. */
    usage: () => quotas.usage(db.kysely, CALLER.projectId),

    /** The user messages recorded for a resource. */
    messages: (resourceId: string) => db.kysely.selectFrom('messages').selectAll().where('resource_uuid', '=', resourceId).execute(),

    /** An attachment row of a volume in `status` (reserved, attaching, attached). */
    async attach(volumeId: string, status: 'reserved' | 'attaching' | 'attached'): Promise<string> {
      const id = newId();
      await attachments.insert(db.kysely, {
        id, volume_id: volumeId, project_id: CALLER.projectId, instance_uuid: null, attached_host: null, mountpoint: null, attach_mode: 'rw',
        attach_status: status, connector: null, connection_info: null, export_name: `basalt-${id}`, created_at: isoAt(clock.now()), updated_at: null,
        attach_time: null, psk_identity: `basalt-${id}`, psk_key: '00',
      });
      return id;
    },
  };
}
