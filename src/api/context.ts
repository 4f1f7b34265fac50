/**
 * What every API route plugin receives, and the per-request decorations the
 * app adds (`caller`, `apiVersion`).
 */
import type { Observability } from './observability.ts';
import type { ReplicationApiDeps } from './replication.ts';
import type { BasaltConfig } from '../config/index.ts';
import type { Caller, Foreground } from '../common/index.ts';
import type { AttachmentRepository, Db, MessageRepository, QosRepository, ServiceRepository, SnapshotRepository, TypeEncryptionRepository, VolumeRepository, VolumeTypeRepository } from '../db/index.ts';
import type { AttachmentManager, BlockMetadata, CleanupFilter, CleanupResult, TransferManager, VolumeManager } from '../volume/index.ts';
import type { QuotaEngine } from '../quota/index.ts';
import type { ApiVersion } from './microversion.ts';
import type { GroupRepository, GroupSnapshotRepository, GroupTypeRepository } from '../db/index.ts';
import type { GroupManager } from '../volume/index.ts';
import type { BackupManager } from '../backup/index.ts';
import type { BackupRowRepository } from '../db/index.ts';

/** Dependencies of the API. */
export interface ApiDeps {
  config: BasaltConfig;
  db: Db;
  volumes: VolumeRepository;
  snapshots: SnapshotRepository;
  services: ServiceRepository;
  messages: MessageRepository;
  quotas: QuotaEngine;
  types: VolumeTypeRepository;
  /** Encryption specs of volume types (`/types/{id}/encryption`). */
  typeEncryption: TypeEncryptionRepository;
  qos: QosRepository;
  volumeManager: VolumeManager;
  attachments: AttachmentRepository;
  attachmentManager: AttachmentManager;
  transfers: TransferManager;
  groups: GroupRepository;
  groupSnapshots: GroupSnapshotRepository;
  groupTypes: GroupTypeRepository;
  groupManager: GroupManager;
  backups: BackupRowRepository;
  backupManager: BackupManager;
  /** Takes over the work of the dead services matching the filter (`POST /workers/cleanup`). */
  cleanup(filter: CleanupFilter): Promise<CleanupResult>;
  /** Metrics and readiness (`/metrics`, `/readyz`); without it only `/healthz` answers. */
  observability?: Observability;
  /**
   * Block metadata of snapshots and volumes for backup tools (experimental,
   * issue 17); present where this process serves backends, else the routes are not served.
   */
  blockMetadata?: BlockMetadata;
  /** Counts the requests in flight, which this process's job workers let go first (common/foreground.ts). */
  foreground?: Foreground;
  /** Replication's failover (`os-services/failover_host`, issue 16); without it those routes are not served. */
  replication?: ReplicationApiDeps;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set for every `/v3/…` request by the auth hook. */
    caller: Caller;
    /** The negotiated microversion. */
    apiVersion: ApiVersion;
  }
}

/** Base URL of the request, e.g. `http://127.0.0.1:8776`. */
export function baseUrl(req: { protocol: string; headers: Record<string, unknown>; hostname: string }): string {
  const host = typeof req.headers.host === 'string' ? req.headers.host : req.hostname;
  return `${req.protocol}://${host}`;
}
