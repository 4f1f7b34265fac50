/**
 * Composes the roles of one process from the configuration: the volume
 * services of every enabled backend, the scheduler, the backup service (which
 * reads and writes volumes through this process's drivers), the sweeper and the API.
 * `basalt server` runs them all; `--roles` will pick a subset.
 */
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { buildApi, isLoopback, Observability } from '../api/index.ts';
import { Foreground, newId, systemClock, type Clock } from '../common/index.ts';
import type { BasaltConfig } from '../config/index.ts';
import {
  AttachmentRepository, CatalogueMemo, MessageRepository, migrateToLatest, openDatabase, startRefusal, QosRepository, QuotaRepository, ServiceRepository, SnapshotRepository, TypeEncryptionRepository, VolumeRepository, VolumeTypeRepository, type Db,
} from '../db/index.ts';
import { GroupRepository, GroupSnapshotRepository, GroupTypeRepository } from '../db/index.ts';
import { QuotaEngine } from '../quota/index.ts';
import { openDriver, type GuardedDriver } from '../drivers/index.ts';
import { ChangedBlockTracker, NbdServer } from '../export/index.ts';
import { openCoordinator } from '../coordination/index.ts';
import { ConfigError } from '../errors/index.ts';
import { ComputeEvents, computeEventsKind, EVENTS_TARGET, NovaClient, pruneDeliveries, Webhooks } from '../events/index.ts';
import { JobQueue, Sweeper, Worker } from '../jobs/index.ts';
import { openKeyManager, type KeyManager } from '../keymgr/index.ts';
import { Scheduler } from '../scheduler/index.ts';
import { AttachmentManager, BackendReplicator, BlockMetadata, cleanupServices, LiveMoves, Replicator, replicationJobKinds, TransferManager, FENCE_CHANNEL, moveStaleExports, perTypeResources, stuckResourceRules, VolumeManager, volumeJobKinds, VolumeService, volumeUsageCounter } from '../volume/index.ts';
import { GroupManager, groupJobKinds, groupUsageCounter, stuckGroupRules } from '../volume/index.ts';
import { BackupManager, BackupRepository, BackupService, backupJobKinds, backupUsageCounter, configuredBackupTarget, stuckBackupRules, volumeFromBackup, type ServedBackend } from '../backup/index.ts';
import { BackupRowRepository } from '../db/index.ts';
import { BASALT_VERSION } from './version.ts';
import { ROLES, type Role } from './roles.ts';
import { attachmentExports } from './attachment-exports.ts';
import { logDestination } from './log-destination.ts';

export { ROLES, type Role } from './roles.ts';

/** Inputs to {@link startServer}. */
export interface StartServerInput {
  config: BasaltConfig;
  /** Default: every role. */
  roles?: readonly Role[];
  /** Default: pino JSON to stdout at `log_level`. */
  logger?: Logger;
  clock?: Clock;
  /** Default: the key manager `[key_manager] backend` names. */
  keyManager?: KeyManager;
}

/** A running Basalt process. */
export interface RunningServer {
  /** `http://host:port` of the API (when the api role runs). */
  readonly url: string | undefined;
  readonly db: Db;
  readonly config: BasaltConfig;
  readonly api: FastifyInstance | undefined;
  readonly sweeper: Sweeper;
  /** The API's requests in flight, which this process's job workers let go first. */
  readonly foreground: Foreground;
  /** Stops every role (letting running jobs settle) and closes the database. */
  close(): Promise<void>;
}

/**
 * Starts the configured roles.
 * @throws ConfigError for an unsafe or invalid configuration (e.g. noauth off loopback).
 * @throws BasaltError STATE_DIRECTORY_FULL (or STATE_DIRECTORY_UNWRITABLE, DATABASE_DISK_FULL)
 * when the database cannot be opened, migrated or registered in because its filesystem is
 * full or failing: one message naming the directory, the original error as `cause`.
 */
export async function startServer(input: StartServerInput): Promise<RunningServer> {
  try {
    return await startRoles(input);
  } catch (err) {
    throw startRefusal(err, input.config.database.connection) ?? err;
  }
}

/** {@link startServer}, before its errors are told apart. */
async function startRoles(input: StartServerInput): Promise<RunningServer> {
  const { config } = input;
  const d = config.DEFAULT;
  const roles = new Set(input.roles ?? ROLES);
  // Asynchronous, bounded, and safe on a full disk: see log-destination.ts.
  const log = input.logger ?? pino({ level: d.log_level, base: { service: 'basalt' } }, logDestination());
  const clock = input.clock ?? systemClock;

  if (roles.has('api') && d.auth_strategy === 'noauth' && !isLoopback(d.osapi_volume_listen) && !d.allow_noauth_on_any_address) {
    throw new ConfigError(`Refusing to serve auth_strategy = noauth on ${d.osapi_volume_listen}: noauth trusts any client. Listen on loopback, or set allow_noauth_on_any_address = true in [DEFAULT] to force it.`);
  }

  fs.mkdirSync(d.state_dir, { recursive: true });
  const db = openDatabase(config.database.connection, { log: log.child({ component: 'database' }) });
  try {
    const applied = await migrateToLatest(db);
    if (applied.length) log.info({ migrations: applied }, 'database migrated');
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }

  const instanceId = newId();
  const leaseMs = d.job_lease_seconds * 1000;
  // The API's requests in flight, which this process's job workers let go first.
  const foreground = new Foreground();
  const queue = new JobQueue(db, clock, {
    foreground,
    maxAttempts: d.job_max_attempts, leaseMs, retryDelayMs: d.job_retry_delay_seconds * 1000,
    payloadVersionCap: d.job_payload_version_cap, serviceDownMs: d.service_down_time * 1000,
  });
  const volumes = new VolumeRepository(clock);
  const services = new ServiceRepository(clock);
  const messages = new MessageRepository(clock);
  // What every create reads of types and quota limits, kept while the database says it is current.
  const catalogue = new CatalogueMemo();
  const types = new VolumeTypeRepository(clock, catalogue);
  const snapshots = new SnapshotRepository(clock);
  const attachments = new AttachmentRepository(clock);
  const typeEncryption = new TypeEncryptionRepository(clock, db.dialect);
  const keys = input.keyManager ?? openKeyManager(config.key_manager);
  const groups = new GroupRepository(clock);
  const groupSnapshots = new GroupSnapshotRepository(clock);
  const groupTypes = new GroupTypeRepository(clock);
  const backups = new BackupRowRepository(clock);
  const quotas = new QuotaEngine({
    repo: new QuotaRepository(clock, catalogue), config: d, count: backupUsageCounter(backups, groupUsageCounter(groups, volumeUsageCounter(volumes, snapshots, types))),
    extraResources: perTypeResources(types),
  });
  const jobDeps = { volumes, snapshots, quotas, types, clock, messageTtlSeconds: d.message_ttl };
  const kinds = volumeJobKinds(jobDeps);
  const replicationKinds = replicationJobKinds({ clock, messageTtlSeconds: d.message_ttl });
  const groupJobDeps = { ...jobDeps, groups, groupSnapshots };
  const groupKinds = groupJobKinds(groupJobDeps);
  const backupJobDeps = { backups, volumes, snapshots, clock, messageTtlSeconds: d.message_ttl };
  const backupKinds = backupJobKinds(backupJobDeps);
  const fromBackup = volumeFromBackup({ backups, volumes, kinds: backupKinds });
  // The compute side is told of changes to attached volumes only when [nova] says where it is; any sweeper can fail a delivery.
  const computeKindDeps = { clock, messageTtlSeconds: d.message_ttl, maxAttempts: config.nova.event_max_attempts };
  const webhooks = new Webhooks({
    db, queue, clock, log: log.child({ component: 'webhooks' }), timeoutMs: config.webhooks.timeout * 1000, maxAttempts: config.webhooks.max_attempts,
  });
  const compute = NovaClient.configured(config.nova)
    ? new ComputeEvents({ ...computeKindDeps, db, client: new NovaClient(config.nova), log: log.child({ component: 'compute-events' }) })
    : undefined;
  const common = {
    queue, services, version: BASALT_VERSION, instanceId, concurrency: d.job_concurrency,
    pollMs: d.job_poll_interval_seconds * 1000, heartbeatMs: d.report_interval * 1000,
  };

  const stoppers: Array<() => Promise<void>> = [];
  const coordinator = openCoordinator(config.coordination.backend_url, { owner: instanceId });
  stoppers.push(() => coordinator.close());
  const stopAll = async (): Promise<void> => {
    for (const stop of stoppers.reverse()) await stop().catch((err) => log.error({ err }, 'stop failed'));
    await db.close();
  };
  /** Stops what started after a failed start; the start's own error is the one that matters. */
  const stopAfterFailure = (): Promise<void> => stopAll().catch((err) => log.error({ err }, 'stop after a failed start failed'));

  try {
    if (roles.has('volume') || roles.has('scheduler') || roles.has('backup')) stoppers.push(await queue.listenForWakeups());
    // The backends this process serves, for the backup service: it reads and writes their volumes through their drivers.
    const served = new Map<string, ServedBackend>();
    let exports: NbdServer | undefined;
    if (roles.has('volume')) {
      // One NBD server per process serves the attachments of every backend it runs.
      const drivers = new Map<string, GuardedDriver>();
      // An attached volume moving between backends is served by a mirror; beginning and ending a move fence its exports.
      const moves = new LiveMoves({
        fenceVolume: async (volumeId) => {
          for (const a of await attachments.ofVolume(db.kysely, volumeId)) await nbd.closeExport(a.export_name);
        },
      });
      const requireTls = d.nbd_require_tls === 'auto' ? !isLoopback(d.nbd_listen) : d.nbd_require_tls === 'true';
      // The writes of the exports, for incremental backups: the tracker's files
      // are saved after the NBD server has dropped every connection (stoppers run in reverse).
      const changedBlocks = await ChangedBlockTracker.open({ directory: path.join(d.state_dir, 'changed-blocks'), log: log.child({ component: 'changed-blocks' }) });
      stoppers.push(() => changedBlocks.close());
      const nbd = new NbdServer({
        changedBlocks,
        provider: attachmentExports(db, attachments, volumes, drivers, moves, log.child({ role: 'export' })), log: log.child({ role: 'export' }), requireTls,
        dataPlane: d.nbd_data_plane === 'event-loop' ? 'event-loop' : 'native', threadsPerConnection: d.nbd_threads_per_connection,
        pollMicros: d.nbd_poll_us,
        maxConnections: d.nbd_max_connections, maxConnectionsPerExport: d.nbd_max_connections_per_export,
        maxRequestsPerConnection: d.nbd_max_requests_per_connection,
        maxBufferBytesPerConnection: d.nbd_max_buffer_mib_per_connection * 1024 * 1024,
        negotiationTimeoutMs: d.nbd_negotiation_timeout_ms,
      });
      exports = nbd;
      const address = await nbd.listen(d.nbd_port, d.nbd_listen);
      // sun_path holds 107 bytes and a NUL: a longer path cannot be listened on.
      if (d.nbd_unix_socket && Buffer.byteLength(d.nbd_unix_socket) > 107) {
        log.warn({ path: d.nbd_unix_socket }, 'nbd_unix_socket is longer than a Unix socket path may be (107 bytes): hosts on this machine use TCP');
      } else if (d.nbd_unix_socket) {
        await nbd.listenUnix(d.nbd_unix_socket);
      }
      stoppers.push(() => nbd.close());
      stoppers.push(await db.listen(FENCE_CHANNEL, (name) => void nbd.closeExport(name)));
      log.info({ host: d.nbd_listen, port: address.port, ...(nbd.socketPath ? { socket: nbd.socketPath } : {}) }, 'NBD export server listening');
      // Ships the points of this process's replicated volumes to their secondary copies (issue 16).
      const replicator = new Replicator({
        deps: {
          ...common, db, volumes, snapshots, quotas, types, kinds, clock, coordinator, lockTimeoutMs: config.coordination.lock_timeout_seconds * 1000, keys,
          exports: nbd, moves, drivers, replicationKinds, messageTtlSeconds: d.message_ttl, attachments, host: d.host,
        },
        drivers, log: log.child({ component: 'replication' }), maxConcurrentShipments: d.replication_max_concurrent_shipments,
      });
      for (const backend of config.backends) {
        const driver = openDriver(backend, { stateDirectory: path.join(d.state_dir, 'drivers', encodeURIComponent(d.host), backend.name) });
        const svc = new VolumeService({
          ...common, backend, driver, db, volumes, snapshots, quotas, types, kinds, clock, host: d.host, log, groups, groupSnapshots, groupKinds, messageTtlSeconds: d.message_ttl,
          coordinator, lockTimeoutMs: config.coordination.lock_timeout_seconds * 1000, keys,
          ...(compute ? { compute } : {}),
          replication: { replicationKinds, messageTtlSeconds: d.message_ttl, attachments, replicator },
          exports: nbd, moves, nbdEndpoint: { host: d.nbd_listen, port: address.port, requireTls, ...(nbd.socketPath ? { socket: nbd.socketPath } : {}) }, drivers, backupRestore: fromBackup,
        });
        drivers.set(svc.cluster, driver);
        // Volumes another member took from this one (an RBD client blocklisted when its lock was
        // broken): their exports are dropped so hosts reconnect, here through the fresh client or elsewhere.
        driver.watchLostVolumes((ids) => {
          log.warn({ backend: backend.name, volumes: ids }, 'volumes taken over by another member: dropping their exports');
          void Promise.all(ids.map(async (id) => {
            for (const a of await attachments.ofVolume(db.kysely, id)) await nbd.closeExport(a.export_name);
          })).catch((err: unknown) => log.error({ err, volumes: ids }, 'dropping the exports of lost volumes failed'));
        });
        served.set(svc.cluster, { cluster: svc.cluster, serviceHost: svc.serviceHost, driver });
        await svc.start();
        stoppers.push(() => svc.stop());
        log.info({ backend: backend.name, cluster: svc.cluster }, 'volume service started');
      }
      replicator.start();
      // Stopped before the volume services (stoppers run in reverse): a shipment in progress ends first.
      stoppers.push(() => replicator.stop());
      // Backends that replicate themselves (RBD's rbd-mirror): their volumes' mirroring, points and status (issue 16 part 4).
      const backendReplicator = new BackendReplicator({ db, volumes, types, services, clock, drivers, exports: nbd, log: log.child({ component: 'backend-replication' }) });
      backendReplicator.start();
      stoppers.push(() => backendReplicator.stop());
    }
    const lockTimeoutMs = config.coordination.lock_timeout_seconds * 1000;
    if (roles.has('backup')) {
      const backupTarget = await configuredBackupTarget(d);
      const backupService = new BackupService({
        ...common, ...backupJobDeps, db, quotas, kinds: backupKinds, repository: new BackupRepository(backupTarget),
        coordinator, lockTimeoutMs, backends: served, ...(exports ? { exports } : {}), host: d.host, progressEventMs: d.backup_timer_interval * 1000,
        availabilityZone: d.storage_availability_zone, log: log.child({ role: 'backup' }),
      });
      await backupService.start();
      stoppers.push(() => backupService.stop());
      log.info({ clusters: [...served.keys()], target: backupTarget.location }, 'backup service started');
    }
    if (roles.has('scheduler')) {
      const scheduler = new Scheduler({
        ...common, volumes, types, kinds, clock, host: d.host, availabilityZone: d.storage_availability_zone,
        serviceDownMs: d.service_down_time * 1000, log,
      });
      await scheduler.start();
      stoppers.push(() => scheduler.stop());
      log.info('scheduler started');
    }
    const cleanupDeps = { db, queue, services, volumes, attachments, serviceDownMs: d.service_down_time * 1000 };
    const deadServices = {
      name: 'dead-services',
      async sweep() {
        // Exports are checked once, in every cluster: a member restarted on another port leaves stale ones too.
        const r = await cleanupServices(cleanupDeps, {}, { moveExports: false });
        return r.jobs + await moveStaleExports(cleanupDeps);
      },
    };
    const sweeper = new Sweeper({
      queue, kinds: [...Object.values(kinds), ...Object.values(groupKinds), ...Object.values(backupKinds), compute?.kind ?? computeEventsKind(computeKindDeps),
        ...Object.values(replicationKinds), webhooks.kind],
      rules: [...stuckResourceRules(db, jobDeps), ...stuckGroupRules(db, groupJobDeps), ...stuckBackupRules(db, backupJobDeps), deadServices, { name: 'expired-messages', sweep: () => messages.pruneExpired(db.kysely) },
        { name: 'old-deliveries', sweep: () => pruneDeliveries(db, clock, d.message_ttl * 1000) }],
      intervalMs: Math.max(200, Math.min(leaseMs, d.service_down_time * 1000) / 2), graceMs: leaseMs, retentionMs: 3600_000, log,
    });
    await sweeper.sweepOnce();
    sweeper.start();
    stoppers.push(() => sweeper.stop());
    // Every process queues and runs webhook deliveries (its own events worker, no service row): any one that lives delivers.
    const eventsWorker = new Worker({
      queue, owner: instanceId, targets: [EVENTS_TARGET], handlers: [webhooks.handler], concurrency: d.job_concurrency,
      pollMs: d.job_poll_interval_seconds * 1000, log: log.child({ component: 'webhooks' }),
    });
    eventsWorker.start();
    webhooks.start();
    stoppers.push(() => eventsWorker.stop());
    stoppers.push(() => webhooks.stop());

    let api: FastifyInstance | undefined;
    let url: string | undefined;
    if (roles.has('api')) {
      const volumeManager = new VolumeManager({
        db, queue, clock, volumes, snapshots, quotas, kinds, types, services, typeEncryption, keys, backupSource: fromBackup,
        options: {
          defaultVolumeType: d.default_volume_type, defaultZone: d.default_availability_zone, zoneFallback: d.allow_availability_zone_fallback,
          serviceDownMs: d.service_down_time * 1000,
        },
      });
      const attachmentManager = new AttachmentManager({ db, queue, clock, volumes, snapshots, quotas, types, attachments, services, kinds, serviceDownMs: d.service_down_time * 1000 });
      const groupManager = new GroupManager({ db, queue, clock, quotas, volumes, snapshots, types, groups, groupSnapshots, groupTypes, groupKinds, volumeManager });
      const backupManager = new BackupManager({
        db, queue, clock, backups, volumes, snapshots, quotas, services, kinds: backupKinds, volumeManager,
        serviceDownMs: d.service_down_time * 1000, availabilityZone: d.storage_availability_zone,
      });
      const observability = new Observability({ db, services, queue, roles: [...roles], ...(exports ? { exports } : {}), now: () => clock.now() });
      api = buildApi({ groups, groupSnapshots, groupTypes, groupManager, backups, backupManager, config, db, volumes, snapshots, services, messages, quotas, types, qos: new QosRepository(clock, catalogue), volumeManager, attachments, attachmentManager, typeEncryption, cleanup: (f) => cleanupServices(cleanupDeps, f),
        transfers: new TransferManager({ db, queue, clock, volumes, snapshots, types, quotas }), observability, foreground, replication: { kinds: replicationKinds, queue },
        ...(served.size > 0 ? { blockMetadata: new BlockMetadata({ look: volumeManager, drivers: new Map([...served].map(([cluster, b]) => [cluster, b.driver])) }) } : {}),
      }, log);
      await api.listen({ host: d.osapi_volume_listen, port: d.osapi_volume_listen_port });
      const addr = api.server.address() as AddressInfo;
      url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
      stoppers.push(() => api!.close());
      log.info({ url }, 'API listening');
    }
    return { url, db, config, api, sweeper, foreground, close: stopAll };
  } catch (err) {
    await stopAfterFailure();
    throw err;
  }
}
