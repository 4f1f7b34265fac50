/**
 * The one typed option schema. Every option Basalt reads is declared here with
 * its type, default and meaning; nothing else reads configuration.
 *
 * Sections follow Cinder's shape: `[DEFAULT]` holds service-wide options,
 * `[backend_defaults]` what every backend inherits, and one section per name in
 * `enabled_backends` overrides it. `[database]` picks the database.
 */
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from '../errors/index.ts';

/** The value kinds an option can have. */
export type OptionType = 'string' | 'int' | 'float' | 'bool' | 'list';

/** What a default may depend on: options resolved before it. */
export interface DefaultContext {
  /** The resolved `[DEFAULT] state_dir`. */
  stateDir: string;
  /** The resolved `[DEFAULT] storage_availability_zone`. */
  storageAvailabilityZone: string;
  /** For backend options, the backend's section name. */
  backend?: string;
}

/** The declaration of one option. */
export interface OptionSpec<T = unknown> {
  readonly type: OptionType;
  /** The default, or a function of options resolved earlier. */
  readonly default: T | ((ctx: DefaultContext) => T);
  /** What the option means, shown by `basalt config show --help` and in docs. */
  readonly help: string;
  /** Inclusive bounds for numbers. */
  readonly min?: number;
  readonly max?: number;
  /** The only values a string option may take. */
  readonly choices?: readonly string[];
  /** A credential: `basalt config show` prints it masked. */
  readonly secret?: boolean;
}

const opt = <T>(spec: OptionSpec<T>): OptionSpec<T> => spec;

/** `[DEFAULT]`: service-wide options. */
export const DEFAULT_OPTIONS = {
  state_dir: opt<string>({
    type: 'string', default: './state',
    help: 'Folder holding all local state: the SQLite database, file-backend volumes and locks. Relative paths are resolved against the working directory.',
  }),
  backup_posix_path: opt<string>({
    type: 'string', default: (ctx) => path.join(ctx.stateDir, 'backups'),
    help: 'Directory of the posix backup target (Cinder\'s name): the backup repository keeps every backup\'s chunks and manifest there, under volumes/<volume id>/. Default <state_dir>/backups. Put it on another disk than the volumes for backups to survive that disk.',
  }),
  backup_driver: opt<string>({
    type: 'string', default: 'posix', choices: ['posix', 's3'],
    help: 'Where the backup repository keeps backups: posix (a directory, backup_posix_path) or s3 (a bucket of any S3-compatible store, the backup_s3_* options). Cinder names its drivers by class; Basalt by these two words.',
  }),
  backup_s3_endpoint_url: opt<string>({
    type: 'string', default: '',
    help: 'URL of the S3-compatible store (Cinder\'s name), e.g. http://127.0.0.1:7480 for Ceph\'s radosgw. Empty: AWS\'s own endpoint. Addressed path-style (endpoint/bucket/key).',
  }),
  backup_s3_store_bucket: opt<string>({ type: 'string', default: 'volumebackups', help: 'Bucket that holds the backup repository (Cinder\'s name and default). It must exist.' }),
  backup_s3_store_access_key: opt<string>({ type: 'string', default: '', help: 'S3 access key id (Cinder\'s name).' }),
  backup_s3_store_secret_key: opt<string>({ type: 'string', default: '', secret: true, help: 'S3 secret access key (Cinder\'s name).' }),
  backup_timer_interval: opt<number>({
    type: 'float', default: 2, min: 0.05, max: 3600,
    help: 'Least seconds between two progress events of one running backup or restore (Cinder\'s name; its default is 120 s for notifications, Basalt\'s events are rows: 2 s). An event is recorded each time the work passes another 5%, no more often than this; the end is the done event\'s.',
  }),
  replication_max_concurrent_shipments: opt<number>({
    type: 'int', default: 4, min: 1, max: 64,
    help: 'Replication shipments (asynchronous points, group points, synchronous mirrors\' first copies) one process runs at once, at most one per volume or group: a slow volume then delays no other. Each keeps 8 requests of up to 4 MiB in flight to its secondary.',
  }),
  backup_s3_timeout: opt<number>({ type: 'int', default: 60, min: 1, max: 3600, help: 'Seconds one S3 request may take before the store counts as unreachable and the backup job is retried later (Cinder\'s name and default).' }),
  host: opt<string>({
    type: 'string', default: () => os.hostname(),
    help: 'Name of this node, the first part of host strings (host@backend#pool). Default: the machine hostname.',
  }),
  osapi_volume_listen: opt<string>({
    type: 'string', default: '127.0.0.1',
    help: 'Address the API listens on. Loopback by default: noauth must not be reachable from other hosts.',
  }),
  osapi_volume_listen_port: opt<number>({
    type: 'int', default: 8776, min: 0, max: 65535,
    help: 'API port (0 picks a free one). Also set by BASALT_PORT and --port.',
  }),
  auth_strategy: opt<string>({
    type: 'string', default: 'noauth', choices: ['noauth', 'keystone'],
    help: 'How requests are authenticated. noauth takes project and user from X-Auth-Token "user:project" or X-Project-Id/X-User-Id, roles from X-Roles. keystone validates X-Auth-Token against Keystone v3 as [keystone_authtoken] says.',
  }),
  allow_noauth_on_any_address: opt<boolean>({
    type: 'bool', default: false,
    help: 'Allow noauth on a non-loopback listen address. Off by default because noauth trusts whatever the client claims.',
  }),
  dashboard_enabled: opt<boolean>({
    type: 'bool', default: false,
    help: 'Serve the web dashboard at /dashboard/ on the API port (processes running the api role). The page asks for a token and calls the API with it, so it sees exactly what that token may see; the admin role shows pool capacity, services and clusters. Off by default: an operator opts in to another thing listening.',
  }),
  nbd_listen: opt<string>({
    type: 'string', default: '127.0.0.1',
    help: 'Address the NBD export server of the volume service listens on (and announces in connection info).',
  }),
  nbd_require_tls: opt<string>({
    type: 'string', default: 'auto', choices: ['auto', 'true', 'false'],
    help: 'Refuse NBD clients that do not start TLS-PSK with their attachment\'s credentials. auto: required unless nbd_listen is loopback (safe default: export names alone then guard nothing off the host).',
  }),
  nbd_port: opt<number>({
    type: 'int', default: 10809, min: 0, max: 65535,
    help: 'Port of the NBD export server (0 picks a free one).',
  }),
  nbd_unix_socket: opt<string>({
    type: 'string', default: (ctx) => path.join(ctx.stateDir, 'nbd', 'nbd.sock'),
    help: 'Unix domain socket the NBD export server also listens on, for hosts on this machine (a connector naming this service\'s host gets an nbd+unix:// URI): the same exports, export names, fences and quiesces, past TCP\'s ceiling. Accessible to Basalt\'s user only (0600, in a 0700 folder made when missing); no TLS is asked there. Empty: none. A path longer than a Unix socket allows (107 bytes) is skipped with a warning. Default <state_dir>/nbd/nbd.sock.',
  }),
  nbd_data_plane: opt<string>({
    type: 'string', default: 'native', choices: ['native', 'event-loop'],
    help: 'Who serves the requests of plain (non-TLS) NBD connections to file-backed volumes once negotiated: native threads of Basalt\'s addon (fast), or the event loop, as TLS connections and other drivers always are.',
  }),
  nbd_threads_per_connection: opt<number>({
    type: 'int', default: 8, min: 1, max: 64,
    help: 'Native worker threads per NBD connection. They take turns reading requests, so deeper client queues spread over them; a request that may block (a cache miss, a flush) holds up only its own thread.',
  }),
  nbd_poll_us: opt<number>({
    type: 'int', default: 50, min: 0, max: 1000,
    help: 'How long at most a native NBD worker polls the socket for the next request before it blocks, in microseconds. Polling stops while a client is idle (no request for 20 times this long) and starts again when it is busy; at most half the CPUs poll at once. Polling saves the wake-up of a blocked thread (tens of microseconds across vCPUs) at the price of CPU time while a client is busy. 0 never polls.',
  }),
  nbd_max_connections: opt<number>({
    type: 'int', default: 512, min: 1,
    help: 'Most NBD connections the volume service holds at once, negotiating ones included. One more is answered NBD_REP_ERR_SHUTDOWN with a message saying why and closed, so a flood of clients cannot exhaust descriptors or memory.',
  }),
  nbd_max_connections_per_export: opt<number>({
    type: 'int', default: 16, min: 1,
    help: 'Most NBD connections one attachment\'s export may have in their transmission phase. One more is refused at NBD_OPT_GO with NBD_REP_ERR_POLICY and a message. QEMU opens one connection, nbdcopy four.',
  }),
  nbd_max_requests_per_connection: opt<number>({
    type: 'int', default: 64, min: 1, max: 4096,
    help: 'Most requests one NBD connection may have in flight, replies not yet handed to the socket included, on native threads and on the event loop alike. At the bound the server stops reading that socket until replies drain (backpressure). On native threads nbd_threads_per_connection bounds them too (one request per worker).',
  }),
  nbd_max_buffer_mib_per_connection: opt<number>({
    type: 'int', default: 64, min: 1, max: 4096,
    help: 'Most memory, in MiB, one NBD connection may hold in write payloads and unsent read replies, on native threads and on the event loop alike. At the bound the server stops reading that socket until replies drain, so a client that never reads its replies costs at most this much; one request larger than it still runs alone. Default: two of the largest (32 MiB) reads.',
  }),
  nbd_negotiation_timeout_ms: opt<number>({
    type: 'int', default: 10000, min: 100,
    help: 'How long an NBD client may take from connecting to its transmission phase (TLS handshake included), in milliseconds, before it is dropped; as qemu-nbd\'s 10 s handshake limit.',
  }),
  enabled_backends: opt<string[]>({
    type: 'list', default: ['file'],
    help: 'Backend section names to run a volume service for, comma separated.',
  }),
  storage_availability_zone: opt<string>({
    type: 'string', default: 'nova',
    help: 'Availability zone of this node\'s backends unless a backend sets backend_availability_zone.',
  }),
  default_availability_zone: opt<string>({
    type: 'string', default: (ctx) => ctx.storageAvailabilityZone,
    help: 'Zone given to volumes created without one. Default: storage_availability_zone.',
  }),
  allow_availability_zone_fallback: opt<boolean>({
    type: 'bool', default: false,
    help: 'Place a volume that asks for an unknown availability zone in default_availability_zone instead of refusing it (the volume then shows the zone it got).',
  }),
  default_group_type: opt<string>({
    type: 'string', default: '',
    help: 'Name of the group type `GET /group_types/default` shows (3.11); empty: none, and that request answers 404, as in Cinder.',
  }),
  default_volume_type: opt<string>({
    type: 'string', default: '__DEFAULT__',
    help: 'Name of the volume type given to volumes created without one, unless the project has its own default (3.62).',
  }),
  osapi_max_limit: opt<number>({
    type: 'int', default: 1000, min: 1,
    help: 'Most items one list request returns.',
  }),
  report_interval: opt<number>({
    type: 'float', default: 10, min: 0.05,
    help: 'Seconds between service heartbeats (and pool stats reports).',
  }),
  service_down_time: opt<number>({
    type: 'float', default: 60, min: 0.1,
    help: 'Seconds without a heartbeat after which a service counts as down. On PostgreSQL a volume service that cannot record its heartbeat for three quarters of it drops its NBD connections and refuses new ones until it can again (self-fencing), so that its peers, which then stop waiting for it to fence deleted attachments, are right that it serves nothing.',
  }),
  graceful_shutdown_timeout: opt<number>({
    type: 'float', default: 60, min: 0,
    help: 'Seconds `basalt server` waits, after SIGTERM or SIGINT, for its roles to stop (running jobs and driver calls to end, connections to close) before it exits anyway, with status 1 (as oslo.service\'s option of that name); 0: no limit. A call stuck on storage that does not answer (a Ceph cluster gone) cannot then keep the process from ending; its job is taken over by another worker when its lease ends, as after a kill.',
  }),
  job_lease_seconds: opt<number>({
    type: 'float', default: 30, min: 0.1,
    help: 'How long a claimed job stays leased without renewal; a dead worker\'s jobs are taken over after this.',
  }),
  job_max_attempts: opt<number>({
    type: 'int', default: 5, min: 1,
    help: 'Attempts before a job that keeps failing transiently fails for good.',
  }),
  job_retry_delay_seconds: opt<number>({
    type: 'float', default: 1, min: 0,
    help: 'First retry delay; doubles with each attempt (exponential back-off), up to 64 times this.',
  }),
  job_poll_interval_seconds: opt<number>({
    type: 'float', default: 1, min: 0.01,
    help: 'How often an idle worker looks for jobs written by other processes (jobs from its own process wake it at once).',
  }),
  job_payload_version_cap: opt<number>({
    type: 'int', default: 0, min: 0,
    help: 'Highest job payload version this process writes and reads; 0: none. Like Cinder\'s [upgrade_levels]: lets a node behave as the previous release during a rolling upgrade (see docs/upgrades.md).',
  }),
  job_concurrency: opt<number>({
    type: 'int', default: 8, min: 1,
    help: 'Jobs one role runs at the same time.',
  }),
  message_ttl: opt<number>({
    type: 'int', default: 2592000, min: 1,
    help: 'Seconds a user message is kept (Cinder default: 30 days).',
  }),
  log_level: opt<string>({
    type: 'string', default: 'info', choices: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'],
    help: 'Log level of the log on standard output.',
  }),
  log_format: opt<string>({
    type: 'string', default: '', choices: ['', 'json', 'pretty'],
    help: 'Shape of the log on standard output: json (one object per line), pretty (one readable line per event), or empty: pretty on a terminal, json otherwise. basalt server --log-format overrides it.',
  }),
  quota_volumes: opt<number>({ type: 'int', default: 10, min: -1, help: 'Default number of volumes a project may have (-1: unlimited).' }),
  quota_snapshots: opt<number>({ type: 'int', default: 10, min: -1, help: 'Default number of snapshots a project may have (-1: unlimited).' }),
  quota_gigabytes: opt<number>({ type: 'int', default: 1000, min: -1, help: 'Default GiB of volumes and snapshots a project may have (-1: unlimited).' }),
  quota_backups: opt<number>({ type: 'int', default: 10, min: -1, help: 'Default number of backups a project may have (-1: unlimited).' }),
  quota_backup_gigabytes: opt<number>({ type: 'int', default: 1000, min: -1, help: 'Default GiB of backups a project may have (-1: unlimited).' }),
  quota_groups: opt<number>({ type: 'int', default: 10, min: -1, help: 'Default number of volume groups a project may have (-1: unlimited).' }),
  per_volume_size_limit: opt<number>({ type: 'int', default: -1, min: -1, help: 'Default largest size in GiB of one volume (-1: unlimited); the per_volume_gigabytes quota.' }),
} as const;

/** `[backend_defaults]` and per-backend sections. */
export const BACKEND_OPTIONS = {
  volume_driver: opt<string>({
    // The choices are the registered drivers' names (src/drivers), filled in by the loader.
    type: 'string', default: 'file',
    help: 'Driver serving this backend, by its registered name. Each driver\'s own options follow its name in this list.',
  }),
  volume_backend_name: opt<string>({
    type: 'string', default: (ctx) => ctx.backend ?? '',
    help: 'Name volume types match with the volume_backend_name extra spec. Default: the section name.',
  }),
  backend_availability_zone: opt<string>({
    type: 'string', default: (ctx) => ctx.storageAvailabilityZone,
    help: 'Availability zone of this backend. Default: storage_availability_zone.',
  }),
  cluster: opt<string>({
    type: 'string', default: '',
    help: 'Cluster name shared by volume services that serve this backend together. Default: host@backend (not clustered).',
  }),
  reserved_percentage: opt<number>({
    type: 'int', default: 0, min: 0, max: 100,
    help: 'Percentage of capacity kept free for the backend\'s own use.',
  }),
  max_over_subscription_ratio: opt<number>({
    type: 'float', default: 20, min: 1,
    help: 'How far thin provisioning may promise beyond total capacity.',
  }),
  driver_timeout_seconds: opt<number>({
    type: 'float', default: 600, min: 0.1,
    help: 'Longest one driver call may take before it counts as failed (and is retried).',
  }),
  replication_device: opt<string>({
    type: 'string', default: '',
    help: 'Replication targets of this backend, in Cinder\'s form: backend_id:NAME, where NAME is the volume_backend_name of another Basalt backend (on this host or another, served by any process on the same database); several targets are separated by semicolons. Volumes of a type with replication_enabled=\'<is> True\' are placed only on backends with a target, and their data is shipped to it over its NBD export with TLS-PSK (issue 16). Empty: none; the backend reports replication_enabled False.',
  }),
} as const;

/** One replication target of a backend (`replication_device`), as parsed by {@link replicationDevices}. */
export interface ReplicationDevice {
  /** The target's name: the `volume_backend_name` of the Basalt backend holding the secondary copies (or, for a driver that replicates itself, its own name for the target). */
  readonly backendId: string;
  /** The entry's other `key:value` pairs: those of a driver that replicates itself (rbd: `conf`, `user`, `keyring`, `secret_uuid`). */
  readonly options: Readonly<Record<string, string>>;
}

/**
 * The replication targets `replication_device` names: `backend_id:NAME`
 * entries separated by `;` (Cinder repeats the option instead, which an INI
 * file here cannot). Other `key:value` pairs of an entry are the backend's
 * driver's (`driverKeys`, its registration's `replicationDeviceKeys`) and
 * refused when it takes none of that name, so a typo cannot pass for a
 * setting; `any` takes every key (for readers of a configuration that was
 * checked with its driver's keys when it was loaded). Default none.
 * @throws ConfigError naming the option when an entry has no backend_id, names one twice, or has a key the driver does not take.
 */
export function replicationDevices(backend: { readonly name: string; readonly replication_device: string }, driverKeys: readonly string[] | 'any' = []): ReplicationDevice[] {
  const out: ReplicationDevice[] = [];
  for (const entry of backend.replication_device.split(';').map((e) => e.trim()).filter((e) => e !== '')) {
    const pairs = entry.split(',').map((p) => p.trim()).filter((p) => p !== '');
    let backendId: string | undefined;
    const options: Record<string, string> = {};
    for (const pair of pairs) {
      const i = pair.indexOf(':');
      const [key, value] = i < 0 ? [pair, ''] : [pair.slice(0, i).trim(), pair.slice(i + 1).trim()];
      if (key !== 'backend_id' && driverKeys !== 'any' && !driverKeys.includes(key)) {
        throw new ConfigError(`Invalid value "${entry}" for option replication_device in [${backend.name}]: Basalt knows only the key${driverKeys.length ? 's' : ''} ${['backend_id', ...driverKeys].join(', ')} here, not ${key}.`);
      }
      if (value === '') throw new ConfigError(`Invalid value "${entry}" for option replication_device in [${backend.name}]: ${key} needs a value (${key}:VALUE).`);
      if (key === 'backend_id') backendId = value;
      else options[key] = value;
    }
    if (backendId === undefined) throw new ConfigError(`Invalid value "${entry}" for option replication_device in [${backend.name}]: an entry must name backend_id.`);
    if (out.some((d) => d.backendId === backendId)) throw new ConfigError(`Invalid value for option replication_device in [${backend.name}]: backend_id ${backendId} is named twice.`);
    if (backendId === 'default') throw new ConfigError(`Invalid value for option replication_device in [${backend.name}]: backend_id default is Cinder's word for failing back and cannot name a target.`);
    out.push({ backendId, options });
  }
  return out;
}

/** `[database]`. */
export const DATABASE_OPTIONS = {
  connection: opt<string>({
    type: 'string', default: (ctx) => `sqlite://${path.join(ctx.stateDir, 'basalt.sqlite')}`,
    help: 'Database URL. sqlite://PATH (default: <state_dir>/basalt.sqlite, WAL mode).',
  }),
} as const;

/** `[coordination]`. */
export const COORDINATION_OPTIONS = {
  backend_url: opt<string>({
    type: 'string', default: (ctx) => `file://${path.join(ctx.stateDir, 'locks')}`,
    help: 'Where named locks live: file://DIR (processes on one host; default <state_dir>/locks), postgresql://… (advisory locks) or etcd3+http://HOST:PORT[,HOST:PORT][?ttl=S] (etcd leases), for a cluster.',
  }),
  lock_timeout_seconds: opt<number>({
    type: 'float', default: 120, min: 0.1,
    help: 'Longest wait for a lock before the job is retried later.',
  }),
} as const;

/**
 * `[keystone_authtoken]`: Basalt's own token validation, with
 * keystonemiddleware's option names (the ones Cinder's configuration uses).
 */
export const KEYSTONE_OPTIONS = {
  www_authenticate_uri: opt<string>({
    type: 'string', default: '',
    help: 'Keystone URL sent to unauthenticated clients in WWW-Authenticate (default: auth_url).',
  }),
  auth_url: opt<string>({ type: 'string', default: '', help: 'Keystone URL Basalt validates tokens at, e.g. http://keystone:5000 (the /v3 suffix is optional).' }),
  auth_type: opt<string>({ type: 'string', default: 'password', choices: ['password'], help: 'How Basalt authenticates itself to Keystone.' }),
  username: opt<string>({ type: 'string', default: 'cinder', help: 'Basalt\'s service user.' }),
  password: opt<string>({ type: 'string', default: '', secret: true, help: 'The service user\'s password.' }),
  user_domain_name: opt<string>({ type: 'string', default: 'Default', help: 'Domain of the service user.' }),
  project_name: opt<string>({ type: 'string', default: 'service', help: 'Project the service user\'s token is scoped to.' }),
  project_domain_name: opt<string>({ type: 'string', default: 'Default', help: 'Domain of that project.' }),
  token_cache_time: opt<number>({
    type: 'int', default: 300, min: -1,
    help: 'Seconds a validation result (valid or not) is reused; never beyond the token\'s expiry. -1: no cache.',
  }),
  token_cache_size: opt<number>({
    type: 'int', default: 10000, min: 1,
    help: 'Most tokens the validation cache holds (least recently used leave first). Basalt\'s own option.',
  }),
  http_connect_timeout: opt<number>({
    type: 'float', default: 10, min: 0.1,
    help: 'Seconds to wait for Keystone on the first try of a call; try n waits n times as long (a slow Keystone is not a down one).',
  }),
  http_request_max_retries: opt<number>({
    type: 'int', default: 3, min: 0,
    help: 'How many more times a Keystone call that timed out, could not connect or got 502/503/504 is tried (after a jittered back-off from 0.2 s) before the request is answered 503.',
  }),
} as const;

/**
 * `[nova]`: how Basalt tells the compute side (Nova) of changes to attached
 * volumes through `POST /os-server-external-events`, with the option names of
 * Cinder's `[nova]` section (keystoneauth's password plugin and session
 * options, `region_name`, `interface`). Notifications are off while neither
 * `auth_url` nor `endpoint_override` is set.
 */
export const NOVA_OPTIONS = {
  auth_type: opt<string>({
    type: 'string', default: 'password', choices: ['password', 'none'],
    help: 'How Basalt authenticates to Nova: password (a Keystone token for the user below; Nova\'s endpoint from the token\'s catalog unless endpoint_override) or none (no token: a Nova, or a stand-in, that needs none).',
  }),
  auth_url: opt<string>({ type: 'string', default: '', help: 'Keystone URL of the user that may send external events (an admin, or a service user Nova\'s policy allows), e.g. http://keystone:5000/v3.' }),
  username: opt<string>({ type: 'string', default: 'nova', help: 'The user Basalt sends external events as.' }),
  password: opt<string>({ type: 'string', default: '', secret: true, help: 'The password of [nova] username.' }),
  user_domain_name: opt<string>({ type: 'string', default: 'Default', help: 'Domain of [nova] username.' }),
  project_name: opt<string>({ type: 'string', default: 'service', help: 'Project the token is scoped to.' }),
  project_domain_name: opt<string>({ type: 'string', default: 'Default', help: 'Domain of [nova] project_name.' }),
  region_name: opt<string>({ type: 'string', default: '', help: 'Region of the compute endpoint to pick from the catalog (empty: any).' }),
  interface: opt<string>({
    type: 'string', default: 'public', choices: ['public', 'admin', 'internal'],
    help: 'Which of the compute service\'s catalog endpoints to use.',
  }),
  endpoint_override: opt<string>({
    type: 'string', default: '',
    help: 'Nova\'s API URL (e.g. http://nova:8774/v2.1), used instead of the catalog\'s; with auth_type none, the only option needed.',
  }),
  timeout: opt<number>({
    type: 'float', default: 30, min: 0.1,
    help: 'Seconds one request to Nova (or Keystone) may take; a slower answer counts as a failed attempt, tried again.',
  }),
  event_max_attempts: opt<number>({
    type: 'int', default: 10, min: 1,
    help: 'Basalt\'s own: attempts at delivering one batch of events before it fails for good (a user message on the volume says so); the delay between attempts starts at job_retry_delay_seconds and doubles. A Nova that is down never delays or fails the volume\'s operation itself.',
  }),
} as const;

/**
 * `[webhooks]`: how Basalt delivers events to the webhooks admins register
 * (an experimental API; Basalt's own section).
 */
export const WEBHOOK_OPTIONS = {
  timeout: opt<number>({
    type: 'float', default: 10, min: 0.1,
    help: 'Seconds one delivery may take; a slower receiver counts as a failed attempt, tried again.',
  }),
  max_attempts: opt<number>({
    type: 'int', default: 10, min: 1,
    help: 'Attempts at delivering one event to one webhook before it fails for good (shown in its delivery history); the delay between attempts starts at job_retry_delay_seconds and doubles.',
  }),
} as const;

/**
 * `[key_manager]`: where the keys of encrypted volumes come from (the option
 * names Cinder's configuration uses, read by Castellan there).
 */
export const KEY_MANAGER_OPTIONS = {
  backend: opt<string>({
    type: 'string', default: 'fixed', choices: ['fixed', 'cinder.keymgr.conf_key_mgr.ConfKeyManager'],
    help: 'The key manager. fixed (or Cinder\'s name for it, cinder.keymgr.conf_key_mgr.ConfKeyManager): one key for every encrypted volume, from fixed_key. A Barbican-backed manager can implement the same interface (src/keymgr) later.',
  }),
  fixed_key: opt<string>({
    type: 'string', default: '', secret: true,
    help: 'The one key of the fixed-key manager, in hex (e.g. 64 hex digits for 256 bits). Every encrypted volume shares it: anyone holding it reads them all, so keep this file off the storage it protects. The compute side must be configured with the same key. Empty: volumes of encrypted types are refused.',
  }),
} as const;

type ValueOf<S> = S extends OptionSpec<infer T> ? T : never;
/** The resolved values of a group of option declarations, by option name. */
export type ResolvedOptions<G> = { -readonly [K in keyof G]: ValueOf<G[K]> };
type Resolved<G> = ResolvedOptions<G>;

/** Resolved `[DEFAULT]` options. */
export type DefaultOptions = Resolved<typeof DEFAULT_OPTIONS>;
/**
 * Resolved options of one backend: the options every backend has, its
 * section name, and the options its driver declares in its registration
 * (resolved the same way, read only by the driver's factory).
 */
export type BackendOptions = Resolved<typeof BACKEND_OPTIONS> & {
  readonly name: string;
  readonly driverOptions: Readonly<Record<string, unknown>>;
};
/** Resolved `[database]` options. */
export type DatabaseOptions = Resolved<typeof DATABASE_OPTIONS>;
/** Resolved `[coordination]` options. */
export type CoordinationOptions = Resolved<typeof COORDINATION_OPTIONS>;
/** Resolved `[keystone_authtoken]` options. */
export type KeystoneOptions = Resolved<typeof KEYSTONE_OPTIONS>;
/** Resolved `[nova]` options. */
export type NovaOptions = Resolved<typeof NOVA_OPTIONS>;
/** Resolved `[webhooks]` options. */
export type WebhookOptions = Resolved<typeof WEBHOOK_OPTIONS>;
/** Resolved `[key_manager]` options. */
export type KeyManagerOptions = Resolved<typeof KEY_MANAGER_OPTIONS>;

/** The effective configuration every role is built from. */
export interface BasaltConfig {
  readonly DEFAULT: DefaultOptions;
  readonly database: DatabaseOptions;
  readonly coordination: CoordinationOptions;
  readonly keystone_authtoken: KeystoneOptions;
  readonly key_manager: KeyManagerOptions;
  readonly nova: NovaOptions;
  readonly webhooks: WebhookOptions;
  /** One entry per name in `enabled_backends`, in that order. */
  readonly backends: readonly BackendOptions[];
  /** Where each effective value came from, keyed `section.option`. */
  readonly sources: ReadonlyMap<string, string>;
  /** What looks wrong without being an error: sections nothing reads, enabled backends with no section. Said by `config show` and at start. */
  readonly notes: readonly string[];
}
