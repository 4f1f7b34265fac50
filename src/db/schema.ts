/**
 * Row types of every table, as Kysely sees them. Timestamps are ISO-8601 text
 * (`…Z`); lease and scheduling instants are integer epoch milliseconds so that
 * comparisons are plain integer comparisons on every dialect.
 */
import type { Generated, Insertable, Kysely, Selectable, Updateable } from 'kysely';

/** `volumes`: one row per volume that exists or is being created or deleted. */
/**
 * Every status a volume row can hold. The operation table
 * (`src/volume/operations/table.ts`) derives the same union from the
 * operations that declare them and fails to compile when the two disagree:
 * a status exists only when an operation owns it.
 */
export type VolumeRowStatus =
  | 'creating' | 'available' | 'deleting' | 'error' | 'error_deleting' | 'error_managing' | 'managing'
  | 'attaching' | 'in-use' | 'detaching' | 'maintenance' | 'reserved' | 'error_extending' | 'extending'
  | 'reverting' | 'awaiting-transfer' | 'error_restoring' | 'unmanaging' | 'error_unmanaging'
  | 'backing-up' | 'restoring-backup';

/** Every status a snapshot row can hold (checked against the operation table like {@link VolumeRowStatus}). */
export type SnapshotRowStatus = 'creating' | 'available' | 'deleting' | 'error' | 'error_deleting' | 'restoring' | 'unmanaging' | 'error_unmanaging' | 'backing-up';

/** Every status a backup row can hold (Cinder's backup statuses; `src/backup/backup-jobs.ts` says which are transitional). */
export type BackupRowStatus = 'creating' | 'available' | 'deleting' | 'error' | 'error_deleting' | 'restoring';

export interface VolumesTable {
  id: string;
  project_id: string;
  user_id: string;
  name: string | null;
  description: string | null;
  /** Size in GiB, as in the Cinder API. */
  size: number;
  status: VolumeRowStatus;
  attach_status: string;
  availability_zone: string;
  /** Host string `host@backend#pool`, set by the scheduler. */
  host: string | null;
  /** Cluster whose volume services own the volume. */
  cluster_name: string | null;
  volume_type_id: string | null;
  snapshot_id: string | null;
  source_volid: string | null;
  bootable: number;
  multiattach: number;
  provider_location: string | null;
  /** 1 when read-only (`os-update_readonly_flag`), 0 when made writable again, null when never set. */
  readonly: number | null;
  created_at: string;
  updated_at: string | null;
  launched_at: string | null;
  /** Id of the volume's key in the key manager, for a volume of an encrypted type (0011). */
  encryption_key_id: string | null;
  /** The generic volume group the volume belongs to (0010). */
  group_id: string | null;
  /** Cinder's migration status (0013): null when never moved, `migrating`, `success` or `error`. */
  migration_status: string | null;
  /** The destination pool (`host@backend#pool`) while a move runs (0013), null otherwise. */
  migration_host: string | null;
  /**
   * Cinder's replication status (0019): `disabled`, `enabled`, `copying`,
   * `error`, `failing-over`, `failed-over`, `not-capable`; null in rows made
   * before it, shown as `disabled`.
   */
  replication_status: string | null;
}

/** `volume_metadata`: user key/value pairs of a volume. */
export interface VolumeMetadataTable {
  volume_id: string;
  key: string;
  value: string;
}

/** `jobs`: the durable work queue (see `src/jobs`). */
export interface JobsTable {
  id: string;
  kind: string;
  payload_version: number;
  /** JSON text. */
  payload: string;
  target: string;
  resource_type: string;
  resource_id: string;
  /** `queued` | `running` | `done` | `failed`. */
  state: string;
  attempts: number;
  max_attempts: number;
  /** Times put back because the database or coordination service was out of reach (migration 0029); these use no attempt. */
  deferrals: Generated<number>;
  lease_owner: string | null;
  lease_expires_at: number | null;
  not_before: number;
  last_error: string | null;
  request_id: string | null;
  created_at: string;
  updated_at: string;
}

/** `services`: one row per running role instance. */
export interface ServicesTable {
  id: string;
  /** `host` for the scheduler, `host@backend` for a volume service. */
  host: string;
  /** Cinder's binary names: `cinder-scheduler`, `cinder-volume`. */
  binary: string;
  backend: string | null;
  cluster: string | null;
  availability_zone: string;
  version: string;
  /** JSON: job kind → highest payload version this code understands. */
  payload_versions: string;
  /** The current process incarnation; older incarnations' leases are dead. */
  instance_id: string;
  disabled: number;
  disabled_reason: string | null;
  /** 1 while frozen (os-services freeze): no management operations on its backend. */
  frozen: Generated<number>;
  /** The failover state (0019): `failing-over`, `failed-over`, `failover-error`; null when never failed over (then it follows the report). */
  replication_status?: string | null;
  /** The replication target the backend is failed over to (0019), null when it serves its own copies. */
  active_backend_id?: string | null;
  heartbeat_at: string;
  heartbeat_ms: number;
  /** JSON capabilities and pool stats reported by a volume service. */
  capabilities: string | null;
  created_at: string;
  updated_at: string | null;
}

/**
 * `event_deliveries` (0018): one attempt at delivering an event to a party
 * outside Basalt, with its outcome: the delivery history.
 */
export interface EventDeliveriesTable {
  id: string;
  /** The delivery job. */
  job_id: string;
  /** Where it went: `nova` (the compute side's external events API). */
  sink: string;
  project_id: string;
  resource_type: string;
  resource_id: string;
  /** What was delivered, e.g. `volume-extended`. */
  event: string;
  /** 1 for the first attempt. */
  attempt: number;
  /** `delivered`, `failed` (tried again later) or `refused` (the receiver said no: not tried again). */
  outcome: 'delivered' | 'failed' | 'refused';
  /** The receiver's HTTP status, null when none came (unreachable, timed out). */
  http_status: number | null;
  /** Why it failed, in Basalt's words (never shown to users). */
  error: string | null;
  duration_ms: number;
  created_at: string;
}

/**
 * `event_stream` (0018): the order of events, for clients that follow them.
 * `seq` increases in commit order (on PostgreSQL the writers of events take
 * one transaction lock for it), so a reader that resumes after `seq` misses nothing.
 */
export interface EventStreamTable {
  seq: Generated<number>;
  event_id: string;
  project_id: string;
}

/** `webhooks` (0018): where an admin has events delivered. */
export interface WebhooksTable {
  id: string;
  /** Where each event is POSTed. */
  url: string;
  /** The HMAC-SHA256 key each delivery is signed with; never shown again after registration. */
  secret: string;
  /** Event names or patterns (`volume.*`, `*`), comma-separated. */
  events: string;
  /** Only this project's events; null: every project's. */
  project_id: string | null;
  /** The last place of the event stream whose deliveries are queued. */
  queued_through: number;
  created_at: string;
}

/** `messages`: user messages about asynchronous failures (Cinder 3.3). */
export interface MessagesTable {
  id: string;
  project_id: string;
  request_id: string | null;
  resource_type: string;
  resource_uuid: string | null;
  event_id: string;
  message_level: string;
  action_id: string;
  detail_id: string;
  /** Safe arguments of the detail, appended to its text (0004). */
  detail_args: string | null;
  created_at: string;
  expires_at: string;
}

/** `events`: status changes of resources, newest last. */
export interface EventsTable {
  id: string;
  project_id: string;
  resource_type: string;
  resource_id: string;
  event: string;
  from_status: string | null;
  to_status: string | null;
  request_id: string | null;
  created_at: string;
  /** What the event says beyond the status change, as a JSON object (0020): see `docs/events.md`. Null when nothing. */
  detail: string | null;
}

/** `quotas`: per-project hard limits (-1: unlimited). */
export interface QuotasTable {
  project_id: string;
  resource: string;
  hard_limit: number;
  updated_at: string;
}

/** `quota_classes`: limits of a quota class; the `default` class overrides configured defaults. */
export interface QuotaClassesTable {
  class_name: string;
  resource: string;
  hard_limit: number;
  updated_at: string;
}

/** `quota_usages`: what a project uses now, per resource. */
export interface QuotaUsagesTable {
  project_id: string;
  resource: string;
  in_use: number;
  updated_at: string;
}

/** `pool_usage`: the sum of the sizes of each pool's volumes, kept by triggers on `volumes` (migration 0026). */
export interface PoolUsageTable {
  /** `host@backend#pool`, as `volumes.host`. */
  host: string;
  gigabytes: number;
}

/** `catalogue_generation`: one row whose token changes with every change to the catalogue (migration 0027, catalogue-memo.ts). */
export interface CatalogueGenerationTable {
  /** Always 1. */
  id: number;
  /** Random; a new one in the transaction of any change to types, their specs and access, project default types and quota limits. */
  token: string;
}

/** `volume_types`. */
export interface VolumeTypesTable {
  id: string;
  name: string;
  description: string | null;
  is_public: number;
  qos_specs_id: string | null;
  created_at: string;
  updated_at: string | null;
}

/** `volume_type_extra_specs`: key/value pairs that steer placement (and drivers). */
export interface VolumeTypeExtraSpecsTable { volume_type_id: string; key: string; value: string }

/** `volume_type_projects`: projects that may use a private type. */
export interface VolumeTypeProjectsTable { volume_type_id: string; project_id: string }

/** `default_volume_types`: per-project default type (3.62). */
export interface DefaultVolumeTypesTable { project_id: string; volume_type_id: string }

/** `volume_type_encryption`: the encryption spec of an encrypted volume type, at most one per type (0011). */
export interface VolumeTypeEncryptionTable {
  encryption_id: string;
  volume_type_id: string;
  /** Who encrypts, as the compute side names it: `luks`, `plain`, or an os-brick class name. */
  provider: string;
  /** dm-crypt cipher spec, e.g. `aes-xts-plain64`. */
  cipher: string | null;
  /** Key size in bits. */
  key_size: number | null;
  /** `front-end` (the compute host encrypts) or `back-end`. */
  control_location: string;
  created_at: string;
  updated_at: string | null;
}

/** `qos_specs`. */
export interface QosSpecsTable { id: string; name: string; consumer: string; created_at: string }

/** `qos_spec_items`: the key/value pairs of a QoS spec. */
export interface QosSpecItemsTable { qos_specs_id: string; key: string; value: string }

/** `snapshots`: point-in-time copies of volumes. */
export interface SnapshotsTable {
  id: string;
  project_id: string;
  user_id: string;
  volume_id: string;
  /** Size in GiB of the volume when the snapshot was taken. */
  volume_size: number;
  volume_type_id: string | null;
  name: string | null;
  description: string | null;
  status: SnapshotRowStatus;
  created_at: string;
  updated_at: string | null;
  /** The group snapshot the snapshot was taken for (0010). */
  group_snapshot_id: string | null;
  /** The key id of the volume it was taken from, shared with it (0011). */
  encryption_key_id: string | null;
  /** Progress a host reported with `os-update_snapshot_status` (0012); null: derived from the status. */
  progress: string | null;
}

/** `snapshot_metadata`: user key/value pairs of a snapshot. */
export interface SnapshotMetadataTable { snapshot_id: string; key: string; value: string }

/** `attachments`: a volume's attachments to hosts, each served by its own export. */
export interface AttachmentsTable {
  id: string;
  volume_id: string;
  project_id: string;
  instance_uuid: string | null;
  attached_host: string | null;
  mountpoint: string | null;
  /** `rw` or `ro`. */
  attach_mode: string;
  /** `reserved`, `attaching`, `attached`, `detaching`. */
  attach_status: string;
  /** JSON of the host's connector, once given. */
  connector: string | null;
  /** JSON of the connection info handed to the host. */
  connection_info: string | null;
  /** The NBD export name: unguessable, it is the credential. */
  export_name: string;
  created_at: string;
  updated_at: string | null;
  attach_time: string | null;
  /** TLS-PSK identity for the export (0007). */
  psk_identity: string | null;
  /** TLS-PSK key, hex (0007). */
  psk_key: string | null;
}

/** The whole database. */
/** A pending volume transfer; `key_hash` is sha256(salt + auth key). */
export interface TransfersTable {
  id: string;
  volume_id: string;
  /** The project giving the volume away. */
  project_id: string;
  name: string | null;
  salt: string;
  key_hash: string;
  no_snapshots: number;
  created_at: string;
}

/** `group_types`: named sets of group specs (3.11). */
export interface GroupTypesTable {
  id: string;
  name: string;
  description: string | null;
  is_public: number;
  created_at: string;
  updated_at: string | null;
}

/** `group_type_specs`: key/value pairs of a group type. */
export interface GroupTypeSpecsTable { group_type_id: string; key: string; value: string }

/** `group_type_projects`: projects that may use a private group type. */
export interface GroupTypeProjectsTable { group_type_id: string; project_id: string }

/** `groups`: generic volume groups (3.13). */
export interface GroupsTable {
  id: string;
  project_id: string;
  user_id: string;
  name: string | null;
  description: string | null;
  status: string;
  availability_zone: string;
  group_type_id: string;
  /** Host string of the pool its volumes live in, once the first one is placed. */
  host: string | null;
  cluster_name: string | null;
  /** The group snapshot it was created from. */
  group_snapshot_id: string | null;
  /** The group it was created from. */
  source_group_id: string | null;
  /** Cinder's group replication status (0021, 3.38): null in rows made before, shown as `disabled`. */
  replication_status: string | null;
  created_at: string;
  updated_at: string | null;
}

/** `group_volume_types`: the volume types a group's volumes may have. */
export interface GroupVolumeTypesTable { group_id: string; volume_type_id: string }

/** `group_snapshots`: consistent snapshots of every volume of a group (3.14). */
export interface GroupSnapshotsTable {
  id: string;
  project_id: string;
  user_id: string;
  group_id: string;
  group_type_id: string;
  name: string | null;
  description: string | null;
  status: string;
  created_at: string;
  updated_at: string | null;
}

/** `volume_exports`: NBD exports of volumes for Basalt's own use, resolved like an attachment's (0016). */
export interface VolumeExportsTable {
  /** Unguessable, as an attachment's: it is a credential. */
  export_name: string;
  volume_id: string;
  /** Why it exists: `migration` (a move between processes reads its source through it). */
  purpose: string;
  /** 1: the export refuses writes. */
  read_only: number;
  psk_identity: string;
  /** TLS-PSK key, hex. */
  psk_key: string;
  created_at: string;
  /** (0019) The backend whose copy the export serves: a replication export serves the secondary's; absent or null: the volume's own. */
  cluster?: string | null;
}

/** `volume_replicas`: where a replicated volume's secondary copy is and how far it has been shipped (0019). */
export interface VolumeReplicasTable {
  volume_id: string;
  /** The cluster serving the copy hosts use; the volume row's `cluster_name` says the same. */
  primary_cluster: string;
  /** The primary's pool (`host@backend#pool`), where the volume goes back on failback. */
  primary_host: string;
  /** The cluster holding the secondary copy. */
  secondary_cluster: string;
  /** The secondary's pool (`host@backend#pool`). */
  secondary_host: string;
  /** The `backend_id` of the primary's `replication_device` that names the secondary. */
  backend_id: string;
  /** `async` (points at an interval) or `sync` (each write on both). */
  mode: string;
  /** Asynchronous: the longest time between two shipped points. */
  rpo_seconds: number;
  /** `creating` (no secondary copy yet), `copying` (the first point ships), `enabled` (in step), `lagging` (points ship, but the last is older than the RPO allows), `error` (behind; retried), `failed-over`. */
  state: string;
  /** The read-write export of the secondary copy the primary ships through (`volume_exports`), once made. */
  export_name: string | null;
  /** The internal snapshot on the primary of the last point shipped whole (the next one ships what changed since). */
  last_point_id: string | null;
  /** When that point was taken. */
  last_point_at: string | null;
  /**
   * After a failover or failback: the last point the secondary's copy had
   * when it was the primary (on the secondary's backend); what it took since
   * must be overwritten by the next shipment. Cleared once noted.
   */
  peer_point_id: string | null;
  /** JSON `[[offset, length], …]`: ranges the next shipment sends whatever changed (the secondary's divergence), null when none. */
  pending_ranges: string | null;
  bytes_shipped: Generated<number>;
  /** Why the last shipment failed (operators only), null after one succeeds. */
  last_error: string | null;
  updated_at: string;
  /** (0021) The point of which the secondary's backend holds a snapshot of the copy (its checkpoint); null when none. */
  checkpoint_point_id?: string | null;
  /** (0021) A group point being written to the copy: set before its first write, cleared when it is recorded; set after a failure, the copy may be past its last point. */
  shipping_point_id?: string | null;
}

/** `progress`: how far the running long operation of a resource is, while it runs (0017). */
export interface ProgressTable {
  resource_id: string;
  resource_type: string;
  /** What runs: `backup`, `restore`. */
  operation: string;
  done_bytes: number;
  total_bytes: number;
  updated_at: string;
  /** When the operation began (0020; null in rows written before). */
  started_at: string | null;
}

/** `backups`: copies of volumes' (or snapshots') data kept in a backup repository (0015). */
export interface BackupsTable {
  id: string;
  project_id: string;
  user_id: string;
  /** The volume backed up; its data stays under this id in the backup repository after the volume is gone. */
  volume_id: string;
  /** The snapshot backed up, when the backup was taken from one. */
  snapshot_id: string | null;
  name: string | null;
  description: string | null;
  status: BackupRowStatus;
  /** Why the last create, restore or delete failed (user-message text), null otherwise. */
  fail_reason: string | null;
  /** GiB: the volume's size when it was backed up. */
  size: number;
  /** Objects the backup stored on its target (new chunks and its manifest). */
  object_count: number;
  /** The container the request named (kept and shown; the posix target keeps every backup in one directory). */
  container: string | null;
  /** The backup an incremental backup is an increment of. */
  parent_id: string | null;
  availability_zone: string | null;
  /** When the data backed up was the volume's: the backup's creation, or its snapshot's. */
  data_timestamp: string | null;
  /** The backup target kind that holds it (`posix`). */
  service: string | null;
  /** The backup service (host) that ran its last job. */
  host: string | null;
  /** The volume a running restore writes to. */
  restore_volume_id: string | null;
  /** JSON: the volume's metadata when it was backed up; a restore gives it to the volume it writes, as Cinder does. */
  volume_metadata: string | null;
  /**
   * Cinder's name for where the backup's data is: the backup id its manifest
   * is stored under in the backup repository — its own, or for a backup made by
   * `import_record` with another id, the exported backup's (both then name one
   * manifest). Null: its own id.
   */
  service_metadata: string | null;
  created_at: string;
  updated_at: string | null;
}

/** `backup_metadata`: user key/value pairs of a backup (3.43). */
export interface BackupMetadataTable { backup_id: string; key: string; value: string }

export interface Database {
  volumes: VolumesTable;
  volume_metadata: VolumeMetadataTable;
  jobs: JobsTable;
  services: ServicesTable;
  messages: MessagesTable;
  events: EventsTable;
  event_deliveries: EventDeliveriesTable;
  event_stream: EventStreamTable;
  webhooks: WebhooksTable;
  quotas: QuotasTable;
  quota_classes: QuotaClassesTable;
  quota_usages: QuotaUsagesTable;
  pool_usage: PoolUsageTable;
  catalogue_generation: CatalogueGenerationTable;
  volume_types: VolumeTypesTable;
  volume_type_extra_specs: VolumeTypeExtraSpecsTable;
  volume_type_projects: VolumeTypeProjectsTable;
  default_volume_types: DefaultVolumeTypesTable;
  qos_specs: QosSpecsTable;
  volume_type_encryption: VolumeTypeEncryptionTable;
  qos_spec_items: QosSpecItemsTable;
  snapshots: SnapshotsTable;
  snapshot_metadata: SnapshotMetadataTable;
  attachments: AttachmentsTable;
  transfers: TransfersTable;
  group_types: GroupTypesTable;
  group_type_specs: GroupTypeSpecsTable;
  group_type_projects: GroupTypeProjectsTable;
  groups: GroupsTable;
  group_volume_types: GroupVolumeTypesTable;
  group_snapshots: GroupSnapshotsTable;
  backups: BackupsTable;
  volume_exports: VolumeExportsTable;
  volume_replicas: VolumeReplicasTable;
  progress: ProgressTable;
  backup_metadata: BackupMetadataTable;
}

export type BackupRow = Selectable<BackupsTable>;

export type GroupTypeRow = Selectable<GroupTypesTable>;
export type GroupRow = Selectable<GroupsTable>;
export type GroupSnapshotRow = Selectable<GroupSnapshotsTable>;

export type TransferRow = Selectable<TransfersTable>;

export type AttachmentRow = Selectable<AttachmentsTable>;

export type SnapshotRow = Selectable<SnapshotsTable>;

export type VolumeTypeRow = Selectable<VolumeTypesTable>;
export type VolumeTypeEncryptionRow = Selectable<VolumeTypeEncryptionTable>;
export type QosSpecsRow = Selectable<QosSpecsTable>;

export type VolumeRow = Selectable<VolumesTable>;
export type VolumeReplicaRow = Selectable<VolumeReplicasTable>;
export type NewVolume = Insertable<VolumesTable>;
export type VolumeUpdate = Updateable<VolumesTable>;
export type JobRow = Selectable<JobsTable>;
export type ServiceRow = Selectable<ServicesTable>;
export type MessageRow = Selectable<MessagesTable>;

/** A database handle that may be a transaction: what queries take. */
export type Tx = Kysely<Database>;
