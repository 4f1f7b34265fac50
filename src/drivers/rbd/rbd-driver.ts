/**
 * The `rbd` driver: each volume is an RBD image `volume-<id>` in one Ceph
 * pool, each snapshot an RBD snapshot `snapshot-<id>` of its volume's image,
 * through librbd (the optional addon, `rbd-addon.ts`). Names and behaviour
 * follow Cinder's RBD driver, so an operator who knows one knows the other:
 *
 * - Images are created with layering, exclusive-lock, object-map, fast-diff
 *   and deep-flatten; thin: an image uses space only where written.
 * - A volume from a snapshot is a copy-on-write clone of that (protected)
 *   snapshot. A clone of a volume is a clone of a snapshot
 *   `volume-<clone id>.clone_snap` taken of the source for it. A clone whose
 *   chain of parents reaches `rbd_max_clone_depth` is flattened (copied) at
 *   once, as is every volume from a snapshot when
 *   `rbd_flatten_volume_from_snapshot`.
 * - A volume whose image still has clones (its `.clone_snap` snapshots have
 *   children) cannot be removed: its image is renamed `volume-<id>.deleted`
 *   and removed when its last clone goes (Cinder does the same).
 * - Deleting a snapshot that has clones flattens them first: the contract
 *   says volumes made from a snapshot outlive it, and clone format 1 (the one
 *   every Ceph client understands) cannot drop a snapshot with children.
 *   The parent's image metadata names each clone while it is flattened, so
 *   that a delete killed midway finds it again (see `dropSnapshot`).
 * - Revert is `rbd_snap_rollback`, then a resize back to the volume's size.
 * - Block I/O uses librbd's asynchronous calls; block status, and the
 *   changed extents between two snapshots (or one and the volume) that
 *   incremental backups read, come from `rbd_diff_iterate2` over the object
 *   maps (fast-diff).
 * - Manage adopts an image (or a snapshot of the volume's image) named by
 *   `source-name` by renaming it; unmanage renames a volume's image to
 *   `unmanaged-volume-<id>` (a snapshot to `unmanaged-snapshot-<id>`), where
 *   a manage request finds it again.
 * - Attachments get Cinder's rbd connection info without a secret: the host
 *   authenticates with its own keyring or libvirt secret. The keyring of
 *   Basalt's own connection (`rbd_keyring_conf`) goes to hosts only where
 *   the operator opts in (`rbd_send_keyring_to_hosts`; OSSN-0085).
 *
 * - Active/active: every member of a cluster opens the images it serves;
 *   librbd hands the exclusive lock between them. A member that stops
 *   answering loses it: another breaks the lock and Ceph blocklists the old
 *   client (rbd_blocklist_on_break_lock), which can then write nothing. The
 *   driver looks every `rbd_blocklist_check_interval` seconds whether its
 *   client is blocklisted (on every cluster it serves from: its own, and a
 *   replication target's while failed over there, the same handover
 *   happening there); if so it connects a fresh client, forgets the
 *   images the old one had open and tells the core which volumes it lost
 *   (`watchLostVolumes`): the core drops their exports, hosts reconnect (to
 *   any member), and the next open goes through the fresh client.
 *   A member that was killed and starts again blocklists its dead
 *   predecessor's client at once ({@link RbdDriver.fencePredecessor}), so
 *   that no host waits for that client's watches to time out.
 *
 * - Replication: with a `replication_device` naming a second cluster, the
 *   images of replicated volumes are mirrored there by Ceph's rbd-mirror
 *   (`rbd-mirror.ts`); while failed over the driver serves every volume from
 *   that cluster; a group failed over alone (`failOverVolumes`) has just its
 *   volumes' images served from there.
 *
 * Capacity comes from the cluster (`ceph df detail`: the pool's `max_avail`,
 * `stored` and quota), as Cinder reports it; provisioned capacity from the
 * images' headers (`rbd_pool_stats_get`), no image opened.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { DataPlaneBackend } from '../../common/index.ts';
import { rootPath } from '../../common/root.ts';
import { ConfigError, DriverError, NoRoomError } from '../../errors/index.ts';
import {
  GiB,
  type BackendStats, type ChangedExtent, type DeclaredCapabilities, type Extent, type FailoverResult, type ManageableResource, type ManageReference, type NativeConnection, type SnapshotRef, type VolumeDriver,
  type VolumeHandle, type VolumeRef,
} from '../volume-driver.ts';
import { isRbdError, loadRbdAddon, RBD_FEATURES, type RbdAddon, type RbdCluster, type RbdImage, type RbdSnapshotInfo } from './rbd-addon.ts';
import { OWN_SITE, RbdMirror, type RbdMirrorTarget } from './rbd-mirror.ts';

/** Settings of an {@link RbdDriver} (the registration maps Cinder's option names onto these). */
export interface RbdDriverOptions {
  /** Pool name reported to the scheduler (the backend's name). */
  poolName: string;
  /** The Ceph pool holding the images (`rbd_pool`). */
  cephPool: string;
  /** cephx user without `client.` (`rbd_user`). */
  user: string;
  /** ceph.conf path; empty: librados's default places (`rbd_ceph_conf`). */
  confPath: string;
  /** Keyring path for Basalt's own connection; empty: what ceph.conf names (`rbd_keyring_conf`). */
  keyringPath: string;
  /**
   * Whether rbd connection info carries the keyring's contents
   * (`rbd_send_keyring_to_hosts`). Default false: the key is a secret of
   * Basalt's, and connection info is read by every user who attaches (OSSN-0085).
   */
  sendKeyringToHosts?: boolean;
  /** Flatten every volume made from a snapshot (`rbd_flatten_volume_from_snapshot`). */
  flattenVolumeFromSnapshot: boolean;
  /** Flatten a clone whose chain of parents would reach this depth; 0 flattens every clone (`rbd_max_clone_depth`). */
  maxCloneDepth: number;
  /** Object size of new images in MiB, a power of two (`rbd_store_chunk_size`). */
  chunkSizeMiB: number;
  /** Seconds librados waits for the cluster at connect and for each operation (`rados_connect_timeout`); ≤ 0: librados's defaults. */
  connectTimeoutSeconds: number;
  /** Whether hosts get Cinder's rbd connection info (`rbd_connection = rbd`); false: the NBD export. Default true. */
  nativeConnection?: boolean;
  /** The cluster's name in rbd connection info (`rbd_cluster_name`). Default `ceph`. */
  clusterName?: string;
  /** The libvirt secret's UUID in rbd connection info (`rbd_secret_uuid`); empty: the cluster's fsid, as Cinder. */
  secretUuid?: string;
  /** Whether rbd connection info says hosts may discard (`report_discard_supported`). Default false. */
  reportDiscard?: boolean;
  /** Seconds between looks at the cluster's blocklist for this client (`rbd_blocklist_check_interval`); 0: never. Default 0. */
  blocklistCheckSeconds?: number;
  /** The clusters the images of replicated volumes are mirrored to (`replication_device`; see `rbd-mirror.ts`). Default none. */
  replicationTargets?: readonly RbdMirrorTarget[];
  /** The backend's directory on this member, kept across restarts: see {@link RbdDriver.fencePredecessor}. Default none: no fencing. */
  stateDirectory?: string;
}

/** Layering, exclusive-lock, object-map, fast-diff, deep-flatten: Cinder's and Ceph's default set. */
const FEATURES = RBD_FEATURES.layering | RBD_FEATURES.exclusiveLock | RBD_FEATURES.objectMap | RBD_FEATURES.fastDiff | RBD_FEATURES.deepFlatten;
const CLONE_SNAP = '.clone_snap';
/**
 * A key of a parent image's metadata, `basalt.flattening.<clone image>`, whose
 * value names the parent's snapshot the clone is being flattened from (see
 * {@link RbdDriver.dropSnapshot}).
 */
const FLATTENING = 'basalt.flattening.';
/**
 * A key of a parent image's metadata, `basalt.releasing.<clone snapshot>`,
 * whose value names the clone being removed: set before the clone goes, gone
 * with the snapshot. A removal killed between the two leaves the snapshot
 * found by it, even where nothing else leads there (see
 * {@link RbdDriver.releaseMarked}).
 */
const RELEASING = 'basalt.releasing.';
const DELETED = '.deleted';
/** The prefix of the object that maps an image's name to its id (RBD format 2), one per name. */
const RBD_ID_OBJECT = 'rbd_id.';
/**
 * How old a new name's id object must be to count as left by a rename killed
 * midway: a rename's writes take milliseconds, and the object's time is the
 * renaming client's clock (hosts' clocks agree far better than this).
 */
const RENAME_SETTLE_MS = 15_000;
/** A copy across clusters under way (see {@link RbdDriver.copyAcross}): renamed to the volume's image once whole. */
const COPYING = '.copying';
/** What unmanage renames a volume's image or a snapshot to (`unmanaged-volume-<id>`, `unmanaged-snapshot-<id>`). */
const UNMANAGED = 'unmanaged-';
/** Basalt's own images and snapshots: `volume-<uuid>`, `snapshot-<uuid>`. */
const OWNED = /^(volume|snapshot)-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;
/** How an image is opened: see {@link RbdDriver.withImage}. */
type Access = 'write' | 'read' | { snap: string };
/** The most zero bytes one write sends for write-zeroes that must keep its space. */
const ZERO_CHUNK = 4 * 1024 * 1024;

/** The monitors a ceph.conf names (`mon_host`, `mon host`), for messages; undefined when it cannot be read. */
function monitorsOf(confPath: string): string | undefined {
  try {
    return /^\s*mon[_ ]host\s*=\s*(.+?)\s*$/m.exec(fs.readFileSync(confPath, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/**
 * The contents of the keyring at `keyringPath`, for hosts (Cinder's `keyring_data`).
 * @throws DriverError (not retryable) when it cannot be read or is empty: an
 *   opted-in keyring that silently went missing would leave hosts unable to
 *   authenticate, so the backend says why instead.
 */
function keyringForHosts(keyringPath: string): string {
  let data: string;
  try {
    data = fs.readFileSync(keyringPath, 'utf8');
  } catch (err) {
    throw new DriverError(`rbd_send_keyring_to_hosts is set but the keyring ${keyringPath} (rbd_keyring_conf) cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err });
  }
  if (data.trim() === '') throw new DriverError(`rbd_send_keyring_to_hosts is set but the keyring ${keyringPath} (rbd_keyring_conf) is empty`);
  return data;
}

/** Ceph RBD through librbd. */
export class RbdDriver implements VolumeDriver {
  readonly capabilities: DeclaredCapabilities = {
    // librados and librbd are thread-safe; calls on different images run at once.
    canRunInParallel: true,
    // One image handle takes any number of asynchronous requests; librbd orders overlaps.
    canRunIoInParallel: true,
    // The handles of one volume share one open image (one librbd client, one cache), so a
    // write through one reads back through all, and a flush through any covers them all.
    canMultiConn: true,
    supportsThinProvisioning: true,
    // rbd_resize while other handles are open: they keep their size until reopened.
    supportsOnlineExtend: true,
    supportsRevertToSnapshot: true,
    // An image put in the pool by hand is adopted by renaming it; an unmanaged one is renamed out of the way.
    supportsManageExisting: true,
    // Cinder's rbd connection info, for hypervisors with librbd (unless rbd_connection = nbd).
    supportsNativeConnection: true,
    // rbd_diff_iterate2 between two RBD snapshots (or one and the head), from the object maps (fast-diff).
    supportsChangedExtents: true,
    // Another member may break this client's exclusive lock and have it blocklisted.
    canLoseVolumes: true,
    storageProtocol: 'nbd',
    vendorName: 'Basalt',
    driverVersion: '1.0.0',
  };

  private addon: RbdAddon | undefined;
  private cluster: RbdCluster | undefined;
  /** The open image of each volume with handles, shared by them all, by volume id. */
  private readonly shared = new Map<string, SharedImage>();
  /** Who hears of lost volumes ({@link watchLostVolumes}). */
  private readonly lostListeners = new Set<(volumeIds: readonly string[]) => void>();
  /** The blocklist watch's timer, and whether a look is running. */
  private blocklistTimer: NodeJS.Timeout | undefined;
  private looking = false;
  /** Blocklisted clients replaced by fresh ones, with the images of theirs still open (shut down at 0). */
  private readonly retired = new Map<RbdCluster, number>();
  /** Replication through rbd-mirror, when the backend names targets. */
  private readonly mirror: RbdMirror | undefined;
  /** The target's client while the backend is failed over to it; undefined: its own. */
  private serving: RbdCluster | undefined;
  /**
   * Images served from another site than the backend's (a group failed over
   * alone, {@link failOverVolumes}), with that site and its client, by image
   * name: every call on that image goes there (its snapshots included);
   * listing, creating, cloning into and removing images still go to the
   * backend's serving cluster.
   */
  private readonly moved = new Map<string, { site: string; client: RbdCluster }>();

  /**
   * @throws ConfigError when `chunkSizeMiB` is not a power of two, or when
   *   `sendKeyringToHosts` is set without a `keyringPath` (there would be
   *   nothing to send; Cinder refuses the same at setup), or when
   *   `replicationTargets` names more than one cluster (the pool is peered
   *   with one: a second target would hold no copy to fail over to).
   */
  constructor(private readonly options: RbdDriverOptions) {
    if (!Number.isInteger(Math.log2(options.chunkSizeMiB))) throw new ConfigError(`rbd_store_chunk_size must be a power of two (MiB), not ${options.chunkSizeMiB}`);
    if (options.sendKeyringToHosts && !options.keyringPath) throw new ConfigError('rbd_send_keyring_to_hosts needs rbd_keyring_conf: the keyring whose contents hosts get');
    if ((options.replicationTargets?.length ?? 0) > 1) {
      throw new ConfigError(`replication_device in [${options.poolName}] names ${options.replicationTargets!.length} clusters (${options.replicationTargets!.map((t) => t.backendId).join(', ')}): an rbd backend mirrors its pool to one other cluster`);
    }
    if (options.replicationTargets?.length) {
      this.mirror = new RbdMirror({
        addon: () => this.rbd, pool: options.cephPool, own: () => this.ownConn,
        connect: (t) => this.connect({ confPath: t.confPath, user: t.user, keyringPath: t.keyringPath }),
        promoteByForce: (site, image) => this.promoteByForce(site === OWN_SITE ? this.options : this.mirror!.target(site)!, image),
      }, options.replicationTargets);
      // Mirrored by rbd-mirror, failed over by promoting the target's images.
      this.capabilities = { ...this.capabilities, supportsBackendReplication: true };
    }
  }

  /** The image name of a volume (Cinder's `volume_name_template`). */
  static imageName(id: string): string {
    return `volume-${id}`;
  }

  /** The RBD snapshot name of a snapshot (Cinder's `snapshot_name_template`). */
  static snapName(id: string): string {
    return `snapshot-${id}`;
  }

  /**
   * Loads the addon and connects to the cluster.
   * @throws DriverError not retryable when the addon or Ceph's libraries are
   *   missing (saying what to install), when the cluster refuses the
   *   credentials (named as such), or when `rbd_send_keyring_to_hosts` is set
   *   and the keyring cannot be read; retryable when the cluster does not answer.
   */
  async init(): Promise<void> {
    if (this.cluster) return;
    this.addon = loadRbdAddon();
    const o = this.options;
    if (o.sendKeyringToHosts) keyringForHosts(o.keyringPath);
    this.cluster = await this.connect();
    await this.fencePredecessor(this.cluster);
    if (o.blocklistCheckSeconds && !this.blocklistTimer) {
      this.blocklistTimer = setInterval(() => void this.lookAtBlocklist(), o.blocklistCheckSeconds * 1000);
      this.blocklistTimer.unref();
    }
  }

  /**
   * A new client of the cluster.
   * @throws DriverError as {@link init} says.
   */
  private async connect(site: Pick<RbdDriverOptions, 'confPath' | 'user' | 'keyringPath'> = this.options): Promise<RbdCluster> {
    const o = { ...this.options, ...site };
    try {
      return await this.rbd.connect(o.confPath || null, o.user, o.keyringPath || null, this.clientSettings());
    } catch (err) {
      const conf = o.confPath || '/etc/ceph/ceph.conf';
      const cluster = `The Ceph cluster at monitors ${monitorsOf(conf) ?? '(none found)'} (${conf})`;
      const code = (err as { code?: string }).code ?? 'unknown error';
      // Wrong credentials stay wrong until an operator changes them; anything else (a monitor
      // down, a network cut) may pass, and the guard tries init again before the next call anyway.
      if (isRbdError(err, 'EACCES', 'EPERM')) {
        throw new DriverError(`${cluster} refused the credentials of client.${o.user} (keyring ${o.keyringPath || 'named in ceph.conf'}): ${code}`, { cause: err });
      }
      throw new DriverError(`${cluster} could not be reached as client.${o.user}: ${code}`, { cause: err, retryable: true });
    }
  }

  /** The librados settings of every client of the driver: its timeouts (`rados_connect_timeout`). */
  private clientSettings(): Record<string, string> {
    const settings: Record<string, string> = {};
    if (this.options.connectTimeoutSeconds > 0) {
      for (const k of ['client_mount_timeout', 'rados_mon_op_timeout', 'rados_osd_op_timeout']) settings[k] = String(this.options.connectTimeoutSeconds);
    }
    return settings;
  }

  /**
   * Promotes `image` by force on the cluster `site` names, in a child
   * process (`rbd-promote-child.ts`; why: `RbdMirrorHost.promoteByForce`).
   * @throws DriverError naming the image and what ended the child.
   */
  private async promoteByForce(site: Pick<RbdDriverOptions, 'confPath' | 'user' | 'keyringPath'>, image: string): Promise<void> {
    const job = { conf: site.confPath || null, user: site.user, keyring: site.keyringPath || null, settings: this.clientSettings(), pool: this.options.cephPool, image };
    const child = rootPath('src', 'drivers', 'rbd', 'rbd-promote-child.ts');
    // The child loads TypeScript as this process does, whatever its working directory.
    const args = ['--import', import.meta.resolve('tsx'), child, JSON.stringify(job)];
    const timeout = Math.max(60, 4 * this.options.connectTimeoutSeconds) * 1000;
    const { code, signal, stderr } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => {
      execFile(process.execPath, args, { timeout, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
        const e = err as (Error & { code?: number | string; signal?: NodeJS.Signals }) | null;
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stderr });
      });
    });
    if (code === 0) return;
    let reason = signal ? `its process died of ${signal}` : 'its process failed';
    try {
      const last = JSON.parse(stderr.trim().split('\n').at(-1) ?? '') as { code: string; message: string };
      reason = `${last.code}: ${last.message}`;
    } catch { /* no JSON line: the process died */ }
    throw new DriverError(`The forced promotion of ${image} failed (${reason})${signal === 'SIGSEGV' ? ': librbd crashed promoting its copy (Ceph Pacific does on some copies whose sync was interrupted); it is left for an operator' : ''}`);
  }

  /**
   * Fences this member's previous incarnation. A process killed with images
   * open leaves its Ceph client holding their exclusive locks until the OSDs
   * time its watches out (`osd_client_watch_timeout`, 30 s by default): until
   * then no member can take them, and the writes of every host of those
   * volumes wait. Its address, kept in the state directory, is blocklisted
   * at once, which ends its watches, so the next member to want a lock breaks
   * it without waiting (for Ceph's default hour: a dead client's nonce never
   * comes back). Then `client`'s address is kept for the next
   * incarnation. A refused blocklist (no `osd blocklist` capability) or a
   * state directory that takes no write only leaves the wait as it was.
   */
  private async fencePredecessor(client: RbdCluster): Promise<void> {
    if (!this.options.stateDirectory) return;
    const file = path.join(this.options.stateDirectory, 'rados-client');
    const address = this.rbd.clientAddress(client);
    const before = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : '';
    if (before && before !== address) {
      await this.rbd.monCommand(client, JSON.stringify({ prefix: 'osd blocklist', blocklistop: 'add', addr: before })).catch(() => undefined);
    }
    try {
      fs.mkdirSync(this.options.stateDirectory, { recursive: true });
      fs.writeFileSync(`${file}.new`, `${address}\n`);
      fs.renameSync(`${file}.new`, file);
    } catch {
      // A full or read-only state directory: the next incarnation waits out this client's watches instead.
    }
  }

  /**
   * Calls `listener` with the volumes this driver lost to another member
   * (see the module comment), after it connected a fresh client.
   */
  watchLostVolumes(listener: (volumeIds: readonly string[]) => void): void {
    this.lostListeners.add(listener);
  }

  /**
   * Whether the cluster blocklists this client: its address (`ip:port/nonce`)
   * is in the OSD map's blocklist. Monitors still answer a blocklisted client;
   * OSDs refuse it.
   */
  private async blocklisted(cluster: RbdCluster): Promise<boolean> {
    const address = this.rbd.clientAddress(cluster);
    const { out } = await this.rbd.monCommand(cluster, JSON.stringify({ prefix: 'osd blocklist ls', format: 'json' }));
    return out.includes(`"${address}"`);
  }

  /**
   * One look at the blocklist of every cluster this driver serves from: its
   * own, and a target's while the backend (or a group, see
   * {@link failOverVolumes}) is failed over there. A client on its
   * cluster's blocklist is replaced by a fresh one: the images open on the
   * old client are forgotten (closed, with the old client, once their last
   * handle closes: their I/O fails meanwhile) and the listeners hear their
   * volumes. A failed look (the cluster out of reach) is tried again at the
   * next interval.
   */
  private async lookAtBlocklist(): Promise<void> {
    if (this.looking || !this.cluster) return;
    this.looking = true;
    try {
      const clients = new Map<RbdCluster, string>([[this.cluster, OWN_SITE]]);
      if (this.serving && this.mirror) clients.set(this.serving, this.mirror.active);
      for (const m of this.moved.values()) clients.set(m.client, m.site);
      for (const [client, site] of clients) await this.renewIfBlocklisted(client, site);
    } finally {
      this.looking = false;
    }
  }

  /** Replaces `old`, the client of `site`, when its cluster blocklists it (see {@link lookAtBlocklist}). */
  private async renewIfBlocklisted(old: RbdCluster, site: string): Promise<void> {
    try {
      if (!(await this.blocklisted(old))) return;
      if (site === OWN_SITE) {
        const fresh = await this.connect();
        if (this.cluster !== old) { // closed meanwhile
          await this.rbd.shutdown(fresh);
          return;
        }
        this.cluster = fresh;
        await this.fencePredecessor(fresh);
      } else {
        const fresh = await this.mirrored().renew(site, old);
        if (this.serving === old) this.serving = fresh;
        for (const m of this.moved.values()) if (m.client === old) m.client = fresh;
      }
      const lost = [...this.shared].filter(([, entry]) => entry.cluster === old);
      for (const [id, entry] of lost) {
        entry.lost = true;
        this.shared.delete(id);
      }
      this.retired.set(old, lost.length);
      if (lost.length === 0) await this.retire(old);
      const ids = lost.map(([id]) => id);
      for (const listener of this.lostListeners) listener(ids);
    } catch {
      // The cluster did not answer: look again at the next interval.
    }
  }

  /** Counts down a retired client's open images; shuts it down at the last. */
  private async retire(cluster: RbdCluster, closed = 0): Promise<void> {
    const left = (this.retired.get(cluster) ?? 0) - closed;
    if (left > 0) {
      this.retired.set(cluster, left);
      return;
    }
    this.retired.delete(cluster);
    await this.rbd.shutdown(cluster).catch(() => undefined); // blocklisted: nothing of it matters any more
  }

  /** Closes the images handles still hold (their I/O has ended: the guard waited), then disconnects. */
  async close(): Promise<void> {
    clearInterval(this.blocklistTimer);
    this.blocklistTimer = undefined;
    const shared = [...this.shared.values()];
    this.shared.clear();
    for (const entry of shared) {
      const img = await entry.image.catch(() => undefined);
      if (img) await this.rbd.closeImage(img).catch(() => undefined); // closed by its last handle meanwhile
    }
    this.serving = undefined;
    this.moved.clear();
    await this.mirror?.close();
    const cluster = this.cluster;
    this.cluster = undefined;
    // Refused (EBUSY) while a call is stuck on a lost cluster: that client is left to the process's end.
    if (cluster) await this.rbd.shutdown(cluster).catch((err: unknown) => { if (!isRbdError(err, 'EBUSY')) throw err; });
  }

  private get rbd(): RbdAddon {
    if (!this.addon) throw new DriverError('The rbd driver is not initialised');
    return this.addon;
  }

  /** The client of the cluster the driver serves from: its own, or a target's while failed over. */
  private get conn(): RbdCluster {
    return this.serving ?? this.ownConn;
  }

  /** The client of the backend's own cluster. */
  private get ownConn(): RbdCluster {
    if (!this.cluster) throw new DriverError('The rbd driver is not connected');
    return this.cluster;
  }

  /** Mirrors a replicated volume's image to the target (see `rbd-mirror.ts`). */
  async enableReplication(vol: VolumeRef, o: { mode: 'snapshot' | 'journal' }): Promise<void> {
    const image = RbdDriver.imageName(vol.id);
    await this.mirrored().enable(image, o.mode, this.siteOf(image));
  }

  /** A mirror snapshot of the volume's image (snapshot mode), which rbd-mirror ships. */
  async replicationPoint(vol: VolumeRef): Promise<void> {
    const image = RbdDriver.imageName(vol.id);
    await this.mirrored().point(image, this.siteOf(image));
  }

  /** The image's mirror status as the serving cluster sees its peer. */
  async replicationState(vol: VolumeRef): Promise<{ status: 'enabled' | 'copying' | 'error'; detail: string }> {
    const image = RbdDriver.imageName(vol.id);
    return this.mirrored().state(image, this.siteOf(image));
  }

  /**
   * Serves from `backendId` (`default`: the backend's own cluster), promoting
   * the images of `vols` there; the images open before are forgotten and
   * their volumes reported lost, so their exports are dropped and reopened
   * from the new cluster.
   */
  async failOver(backendId: string, vols: readonly VolumeRef[]): Promise<FailoverResult> {
    const mirror = this.mirrored();
    const result = failedVolumes(vols, await mirror.failOver(backendId, vols.map((v) => RbdDriver.imageName(v.id))));
    const next = backendId === OWN_SITE ? undefined : await mirror.client(backendId);
    // Promoted where the whole backend now serves: a group failed over alone before is no exception any more.
    for (const v of vols) if (!result.failed.includes(v.id)) this.moved.delete(RbdDriver.imageName(v.id));
    if (next === this.serving) return result;
    this.serving = next;
    this.dropHandles([...this.shared.keys()]);
    return result;
  }

  /**
   * Serves just `vols` from `backendId` (a group's failover; its failback
   * with `default`), promoting their images there through the same steps as
   * {@link failOver}; the backend's other volumes stay where they are. Their
   * open images are forgotten and the volumes reported lost, so their
   * exports are dropped and reopened from the new cluster. With
   * `o.prepare`, only the wait a failback needs for the own images to be in step.
   */
  async failOverVolumes(backendId: string, vols: readonly VolumeRef[], o: { prepare?: boolean } = {}): Promise<FailoverResult> {
    const mirror = this.mirrored();
    if (o.prepare) {
      await mirror.prepareFailOver(backendId, vols.map((v) => RbdDriver.imageName(v.id)));
      return { failed: [] };
    }
    const result = failedVolumes(vols, await mirror.failOver(backendId, vols.map((v) => RbdDriver.imageName(v.id)), { imagesOnly: true }));
    const client = backendId === mirror.active ? undefined : await mirror.client(backendId);
    const movedIds = vols.map((v) => v.id).filter((id) => !result.failed.includes(id));
    for (const id of movedIds) {
      if (client) this.moved.set(RbdDriver.imageName(id), { site: backendId, client });
      else this.moved.delete(RbdDriver.imageName(id));
    }
    this.dropHandles(movedIds.filter((id) => this.shared.has(id)));
    return result;
  }

  /** Forgets the open images of volumes `ids` (their handles fail every call) and reports the volumes lost. */
  private dropHandles(ids: readonly string[]): void {
    for (const id of ids) {
      const entry = this.shared.get(id);
      if (entry) entry.lost = true;
      this.shared.delete(id);
    }
    if (ids.length > 0) for (const listener of this.lostListeners) listener(ids);
  }

  /** The site serving image `name`: where its group was failed over to, else the backend's. */
  private siteOf(name: string): string {
    return this.moved.get(name)?.site ?? this.mirrored().active;
  }

  /** The client for image `name`'s head: its group's site's, else the serving cluster's. */
  private connOf(name: string): RbdCluster {
    return this.moved.get(name)?.client ?? this.conn;
  }

  private mirrored(): RbdMirror {
    if (!this.mirror) throw new DriverError('This rbd backend names no replication target (replication_device)');
    return this.mirror;
  }

  private get order(): number {
    return Math.log2(this.options.chunkSizeMiB * 1024 * 1024);
  }

  /**
   * Runs `fn` on the image `name`, closing it after: its head read-write
   * (`write`, the default), its head read-only (`read`: no watch is
   * registered, so it never keeps a removal or another member's write
   * waiting), or a snapshot read-only.
   */
  private async withImage<T>(name: string, fn: (img: RbdImage) => Promise<T>, at: Access = 'write'): Promise<T> {
    const shared = at === 'write' ? this.sharedFor(name) : undefined;
    if (shared) return this.usingShared(shared.id, shared.entry, fn);
    return this.using(await this.open(name, at), fn);
  }

  /**
   * The open image the volume's handles share, when `name` is a volume's
   * image this process has open for I/O (an export) on the client it would
   * open it with now. A management call (a snapshot, a resize, a flatten) then
   * goes through that same image, as QEMU's does: a second image of the same
   * volume in this process would take the exclusive lock from the first and
   * hand it back around every call, the writes of the export waiting meanwhile.
   */
  private sharedFor(name: string): { id: string; entry: SharedImage } | undefined {
    const [, kind, id] = OWNED.exec(name) ?? [];
    if (kind !== 'volume' || !id) return undefined;
    const entry = this.shared.get(id);
    return entry && !entry.lost && entry.cluster === this.connOf(name) ? { id, entry } : undefined;
  }

  /** Runs `fn` on a shared open image, holding a reference meanwhile (see {@link openVolume}). */
  private async usingShared<T>(id: string, entry: SharedImage, fn: (img: RbdImage) => Promise<T>): Promise<T> {
    entry.refs++;
    try {
      return await fn(await entry.image);
    } finally {
      await this.releaseShared(id, entry);
    }
  }

  /** Drops one reference to a shared open image; the last one closes it. */
  private async releaseShared(id: string, shared: SharedImage): Promise<void> {
    if (--shared.refs > 0) return;
    if (shared.lost) { // its client was blocklisted and replaced, or the backend failed over: close it (and a retired client after its last image)
      const img = await shared.image.catch(() => undefined);
      if (img) await this.rbd.closeImage(img).catch(() => undefined);
      if (this.retired.has(shared.cluster)) await this.retire(shared.cluster, 1);
      return;
    }
    if (this.shared.get(id) !== shared) return; // the driver closed it at shutdown
    this.shared.delete(id);
    const img = await shared.image.catch(() => undefined);
    if (img) await this.rbd.closeImage(img);
  }

  /**
   * Like {@link withImage}, or undefined when the image does not open
   * (ENOENT: it does not exist, or is half made or half removed). An ENOENT
   * from `fn` is `fn`'s: it does not say the image is missing.
   */
  private async withImageIfAny<T>(name: string, fn: (img: RbdImage) => Promise<T>, at: Access = 'write'): Promise<T | undefined> {
    const shared = at === 'write' ? this.sharedFor(name) : undefined;
    if (shared) {
      let opened = false;
      try {
        return await this.usingShared(shared.id, shared.entry, (img) => { opened = true; return fn(img); });
      } catch (err) {
        if (!opened && isRbdError(err, 'ENOENT')) return undefined;
        throw err;
      }
    }
    let img: RbdImage;
    try {
      img = await this.open(name, at);
    } catch (err) {
      if (isRbdError(err, 'ENOENT')) return undefined;
      throw err;
    }
    return this.using(img, fn);
  }

  private open(name: string, at: Access): Promise<RbdImage> {
    return this.rbd.openImage(this.connOf(name), this.options.cephPool, name, typeof at === 'object' ? at.snap : null, at !== 'write');
  }

  private async using<T>(img: RbdImage, fn: (img: RbdImage) => Promise<T>): Promise<T> {
    try {
      return await fn(img);
    } finally {
      await this.rbd.closeImage(img);
    }
  }

  /**
   * The image of the pool that holds the snapshot `snap` (or what a removal
   * killed midway left of it, see {@link dropTrashed}), if any: among the
   * `likely` images (and their `.deleted` names) when the caller knows the
   * volume, else among every image of the pool.
   */
  private async imageWithSnapshot(snap: string, likely: readonly string[] = []): Promise<string | undefined> {
    const holds = async (image: string): Promise<boolean> =>
      (await this.withImageIfAny(image, (img) => this.rbd.snapList(img), 'read'))?.some((s) => s.name === snap || s.trashedName === snap) ?? false;
    if (likely.length > 0) {
      for (const image of likely.flatMap((i) => [i, `${i}${DELETED}`])) if (await holds(image)) return image;
      return undefined;
    }
    for (const image of await this.rbd.listImages(this.conn, this.options.cephPool)) if (await holds(image)) return image;
    return undefined;
  }

  /**
   * Cinder's rbd connection info (its RBD driver's `initialize_connection`):
   * `pool/volume-<id>`, the monitors of the cluster's monmap (`mon dump`),
   * the cephx user and the libvirt secret's UUID (`rbd_secret_uuid`, else the
   * cluster's fsid, as Cinder). No secret: the host authenticates with its own
   * keyring or libvirt secret, unless the operator opted in with
   * `rbd_send_keyring_to_hosts`, which adds the keyring's contents
   * (`keyring`, as cinderlib sends it). Undefined with `rbd_connection = nbd`.
   * @throws DriverError when opted in and the keyring cannot be read.
   */
  async nativeConnection(vol: Pick<VolumeRef, 'id'>, at: { site?: string } = {}): Promise<NativeConnection | undefined> {
    const o = this.options;
    if (o.nativeConnection === false) return undefined;
    // The monitors of the cluster serving the image: the site asked for, else its group's target or the backend's.
    const conn = at.site !== undefined ? await this.mirrored().client(at.site) : this.connOf(RbdDriver.imageName(vol.id));
    const { out } = await this.rbd.monCommand(conn, JSON.stringify({ prefix: 'mon dump', format: 'json' }));
    const hosts: string[] = [];
    const ports: string[] = [];
    // `addr` is `host:port/nonce` (IPv6 hosts in brackets); ports are strings, as Cinder sends them.
    const monmap = JSON.parse(out) as { fsid: string; mons: Array<{ addr: string }> };
    for (const mon of monmap.mons) {
      const hostPort = mon.addr.slice(0, mon.addr.lastIndexOf('/'));
      const colon = hostPort.lastIndexOf(':');
      hosts.push(hostPort.slice(0, colon).replace(/^\[|\]$/g, ''));
      ports.push(hostPort.slice(colon + 1));
    }
    // Read at every call, not kept from init: a keyring rotated on disk reaches hosts with the next report.
    const keyring = o.sendKeyringToHosts ? keyringForHosts(o.keyringPath) : undefined;
    // Failed over: the target's cluster, named as Cinder's RBD driver names it (its backend_id), with its user and secret.
    const siteName = at.site ?? this.moved.get(RbdDriver.imageName(vol.id))?.site ?? (this.serving ? this.mirror?.active : undefined);
    const site = siteName !== undefined && this.mirror ? this.mirror.target(siteName) : undefined;
    return {
      driverVolumeType: 'rbd',
      data: {
        name: `${o.cephPool}/${RbdDriver.imageName(vol.id)}`,
        hosts, ports,
        cluster_name: site ? site.backendId : o.clusterName ?? 'ceph',
        auth_enabled: true,
        auth_username: site ? site.user : o.user,
        secret_type: 'ceph',
        secret_uuid: (site ? site.secretUuid : o.secretUuid) || monmap.fsid,
        volume_id: vol.id,
        discard: o.reportDiscard === true,
        ...(keyring !== undefined ? { keyring } : {}),
      },
    };
  }

  /**
   * The pool's capacity as Cinder's RBD driver reports it, from the cluster's
   * `df detail` (one monitor command): used is the pool's `stored` bytes;
   * with a pool quota (`quota_bytes`) free is what the quota leaves, never
   * more than the cluster's `max_avail` for the pool; without one, free is
   * `max_avail`; total is free + used (Cinder's default,
   * `report_dynamic_total_capacity`). Provisioned is the sum of the sizes of
   * the pool's images (every image, not only Basalt's, as Cinder counts)
   * from `rbd_pool_stats_get`, which reads each image's header object
   * without opening the image: no watch, no object map, no thread per image.
   * @throws DriverError when the pool does not exist.
   */
  async getStats(): Promise<BackendStats> {
    const pool = this.options.cephPool;
    const [{ out }, images] = await Promise.all([
      this.rbd.monCommand(this.conn, JSON.stringify({ prefix: 'df', detail: 'detail', format: 'json' })),
      this.rbd.poolStats(this.conn, pool).catch((err) => Promise.reject(isRbdError(err, 'ENOENT') ? new DriverError(`Ceph pool ${pool} does not exist`, { cause: err }) : err)),
    ]);
    const df = JSON.parse(out) as { pools: Array<{ name: string; stats: { max_avail: number; bytes_used: number; stored?: number; quota_bytes?: number } }> };
    const stats = df.pools.find((p) => p.name === pool)?.stats;
    if (!stats) throw new DriverError(`Ceph pool ${pool} does not exist`);
    const used = stats.stored ?? stats.bytes_used; // `stored` since Nautilus: bytes written, before replication
    const free = stats.quota_bytes ? Math.max(0, Math.min(stats.quota_bytes - used, stats.max_avail)) : stats.max_avail;
    const round = (bytes: number): number => Math.round((bytes / GiB) * 100) / 100;
    return {
      pools: [{
        name: this.options.poolName,
        totalCapacityGiB: round(free + used),
        freeCapacityGiB: round(free),
        provisionedCapacityGiB: Math.ceil(images.provisionedBytes / GiB),
        copyMethod: 'cow',
      }],
    };
  }

  /**
   * Runs `fn`, which needs room in the pool, naming a full pool in the error:
   * librados answers EDQUOT when the pool is at its quota and ENOSPC when the
   * cluster is full (the addon's I/O contexts fail such writes at once instead
   * of waiting for room). Retryable: a quota raised or space freed lets the
   * next attempt through (the scheduler, which reads the pool's free space,
   * refuses new volumes meanwhile; this is the window between its reports).
   * @throws NoRoomError (retryable) when the pool is full.
   */
  private async needingRoom<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (!isRbdError(err, 'EDQUOT', 'ENOSPC')) throw err;
      const why = err.code === 'EDQUOT' ? 'is at its quota' : 'is on a full cluster';
      throw new NoRoomError(`Ceph pool ${this.options.cephPool} ${why}: no room for ${what}`, { cause: err });
    }
  }

  createVolume(vol: VolumeRef): Promise<void> {
    return this.needingRoom(`volume ${vol.id}`, () => this.makeVolume(vol));
  }

  extendVolume(vol: VolumeRef, newSizeGiB: number): Promise<void> {
    return this.needingRoom(`extending volume ${vol.id}`, () => this.growVolume(vol, newSizeGiB));
  }

  createSnapshot(snap: SnapshotRef): Promise<void> {
    return this.needingRoom(`snapshot ${snap.id}`, () => this.makeSnapshot(snap));
  }

  createVolumeFromSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void> {
    return this.needingRoom(`volume ${vol.id}`, () => this.makeVolumeFromSnapshot(vol, snap));
  }

  cloneVolume(vol: VolumeRef, source: VolumeRef): Promise<void> {
    return this.needingRoom(`volume ${vol.id}`, () => this.makeClone(vol, source));
  }

  /**
   * Creates the image, or completes one an earlier attempt left: grown to the
   * size when it opens, removed and made again when it does not (an attempt
   * killed inside rbd_create leaves an image in the directory without its
   * header or object map).
   */
  private async makeVolume(vol: VolumeRef): Promise<void> {
    const name = RbdDriver.imageName(vol.id);
    const create = (): Promise<void> => this.rbd.createImage(this.conn, this.options.cephPool, name, vol.sizeGiB * GiB, FEATURES, this.order);
    try {
      await create();
      return; // made whole, at its size
    } catch (err) {
      if (!isRbdError(err, 'EEXIST')) throw err;
    }
    try {
      await this.growTo(name, vol.sizeGiB);
    } catch (err) {
      if (!isRbdError(err, 'ENOENT')) throw err;
      await this.removeUnwatched(name); // listed, but it does not open: half made
      await create();
    }
  }

  /**
   * Whether the image (or its snapshot `snap`) opens. What a killed attempt
   * left half made does not: no header, or no object map (ENOENT).
   */
  private async opens(image: string, snap: string | null = null): Promise<boolean> {
    try {
      await this.withImage(image, async () => undefined, snap ? { snap } : 'read');
      return true;
    } catch (err) {
      if (isRbdError(err, 'ENOENT')) return false;
      throw err;
    }
  }

  /** Resizes `name` up to `sizeGiB` when smaller. */
  private async growTo(name: string, sizeGiB: number): Promise<void> {
    await this.withImage(name, async (img) => {
      if ((await this.rbd.stat(img)).sizeBytes < sizeGiB * GiB) await this.rbd.resize(img, sizeGiB * GiB);
    });
  }

  private async growVolume(vol: VolumeRef, newSizeGiB: number): Promise<void> {
    try {
      await this.growTo(RbdDriver.imageName(vol.id), newSizeGiB);
    } catch (err) {
      if (isRbdError(err, 'ENOENT')) throw new DriverError(`The image of volume ${vol.id} is missing`, { cause: err });
      throw err;
    }
  }

  /**
   * Removes the volume's image with its clone snapshots; when clones still
   * hang on one, renames it `…​.deleted` instead (removed with its last clone).
   * Then lets the parent go if it was waiting for this clone.
   */
  async deleteVolume(vol: Pick<VolumeRef, 'id'>): Promise<void> {
    try {
      await this.removeImage(RbdDriver.imageName(vol.id));
    } catch (err) {
      // A parent and its last clone removed at once by two members: one renames, or removes, an image or
      // snapshot that the other has just looked at. The removal is idempotent: the next attempt looks again.
      if (isRbdError(err, 'ENOENT', 'ESTALE')) {
        throw new DriverError(`The image of volume ${vol.id} or its parent changed during its removal (another removal at the same time)`, { cause: err, retryable: true });
      }
      throw err;
    }
  }

  private async removeImage(name: string): Promise<void> {
    const state = await this.withImageIfAny(name, async (img) => {
      const parent = await this.rbd.parent(img);
      let busy = false;
      for (const s of await this.rbd.snapList(img)) {
        const dropped = s.namespace === 'trash' ? await this.dropTrashed(img, (t) => t.id === s.id) : await this.dropSnapshot(img, name, s.name, s.name.endsWith(CLONE_SNAP));
        if (!dropped) busy = true;
      }
      return { parent, busy };
    });
    if (!state) return this.finishRemoval(name);
    if (state.busy) {
      if (name.endsWith(DELETED)) return;
      // Marked already (an earlier attempt, killed after its rename, or another removal of the same
      // volume since this one opened it): renameOnce counts that as done.
      await this.renameOnce(name, `${name}${DELETED}`);
      // A clone's removal (another process) may have released the last clone snapshot between the
      // look above and the rename, seeing the image not yet marked: look again under the new name.
      return this.removeImage(`${name}${DELETED}`);
    }
    const parent = state.parent && state.parent.pool === this.options.cephPool && releases(state.parent) ? state.parent : undefined;
    if (parent?.snap.endsWith(CLONE_SNAP)) {
      // The parent's own removal may have renamed it to `.deleted` meanwhile: the mark goes on whichever name it has.
      await this.withImage(parent.image, (img) => this.rbd.metadataSet(img, `${RELEASING}${parent.snap}`, name))
        .catch((err) => (isRbdError(err, 'ENOENT') ? this.withImage(`${parent.image.replace(/\.deleted$/, '')}${DELETED}`, (img) => this.rbd.metadataSet(img, `${RELEASING}${parent.snap}`, name)) : Promise.reject(err)));
    }
    await this.removeUnwatched(name);
    if (parent) await this.releaseParent(parent.image, parent.snap, name);
  }

  /**
   * Completes the removal of an image that does not open: a removal killed
   * midway leaves the pool listing it without its header, or in the pool's
   * trash (rbd_remove moves it there first; rbd_list2 lists it, rbd_open does
   * not open it): it is removed now. Or it leaves the image gone but its clone snapshot on the parent
   * (`volume-<id>.clone_snap`, found by name: the image that named its parent
   * is gone), which is dropped as {@link releaseParent} would have, or a
   * copy across clusters begun ({@link copyAcross}), or a `.deleted` parent
   * whose clone snapshot it had dropped already. Nothing to do for an image
   * that was never made.
   */
  private async finishRemoval(name: string): Promise<void> {
    const listed = await this.rbd.listImages(this.conn, this.options.cephPool);
    if (listed.includes(name)) await this.removeUnwatched(name);
    if (listed.includes(`${name}${COPYING}`)) await this.removeUnwatched(`${name}${COPYING}`); // a copy across clusters left midway
    const cloneSnap = `${name.replace(/\.deleted$/, '')}${CLONE_SNAP}`;
    const parent = await this.imageWithSnapshot(cloneSnap);
    if (parent) await this.releaseParent(parent, cloneSnap, name);
    else await this.removeReleasedParents(listed);
    await this.releaseMarked(listed);
  }

  /**
   * Releases every clone snapshot whose parent's metadata names a clone being
   * removed ({@link RELEASING}) that the pool no longer lists: what a removal
   * killed between removing a clone and releasing its parent leaves. Its next
   * attempt finds such a snapshot by the clone's name, except where the
   * clone was a `.deleted` parent removed with its own last clone: the retry
   * is then that clone's, whose name leads only as far as the removed parent
   * (the chaos run found its parent's clone snapshot kept for good).
   */
  private async releaseMarked(listed: readonly string[]): Promise<void> {
    for (const image of listed) {
      const marks = await this.withImageIfAny(image, (img) => this.rbd.metadataList(img), 'read').catch((err) => (isRbdError(err, 'ENOENT') ? [] : Promise.reject(err)));
      for (const m of marks ?? []) {
        if (m.key.startsWith(RELEASING) && !listed.includes(m.value)) await this.releaseParent(image, m.key.slice(RELEASING.length), m.value);
      }
    }
  }

  /**
   * Removes every `.deleted` image of `listed` that has no snapshot left, so
   * no clone: what a clone's removal killed between dropping its parent's
   * clone snapshot and removing the parent leaves. Its next attempt no longer
   * finds the parent by that snapshot (the chaos run found such a parent kept
   * for good). A `.deleted` image listed that does not open is one whose own
   * removal was killed midway (its header gone, its directory entry left):
   * that removal is completed (the chaos run found one listed for good).
   */
  private async removeReleasedParents(listed: readonly string[]): Promise<void> {
    for (const image of listed.filter((i) => i.endsWith(DELETED))) {
      const snapshots = await this.withImageIfAny(image, async (img) => (await this.rbd.snapList(img)).length, 'read');
      if (snapshots === 0) await this.removeImage(image);
      else if (snapshots === undefined) await this.removeUnwatched(image);
    }
  }

  /**
   * rbd_remove, which librbd refuses (EBUSY) while a client has the image open
   * read-write: a handle that is just closing, or another host's. Tried again
   * for a few seconds, then a retryable error (the job tries later).
   * ENOENT (or ESTALE) means removed only when the pool no longer lists the image: in a
   * pool at its quota librbd cannot move the image to its trash (the first
   * step of a removal, EDQUOT) and answers ENOENT with the image still there.
   * @throws DriverError (retryable) when the image is still there after a removal, or still has a snapshot.
   */
  private async removeUnwatched(name: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.rbd.removeImage(this.conn, this.options.cephPool, name);
        return;
      } catch (err) {
        // ESTALE: another member removed or renamed it meanwhile (a parent and its last clone removed at once).
        if (isRbdError(err, 'ENOENT') || isRbdError(err, 'ESTALE')) {
          if (!(await this.imageListed(name))) return;
          throw new DriverError(`Image ${name} could not be removed (is pool ${this.options.cephPool} full?)`, { cause: err, retryable: true });
        }
        // A snapshot the removal did not list (made, or moved back out of the image's trash, since):
        // the next attempt lists the image's snapshots again.
        if (isRbdError(err, 'ENOTEMPTY')) throw new DriverError(`Image ${name} still has snapshots`, { cause: err, retryable: true });
        if (!isRbdError(err, 'EBUSY')) throw err;
        if (attempt === 5) throw new DriverError(`Image ${name} is still open by a client`, { cause: err, retryable: true });
        await new Promise((r) => setTimeout(r, 250 * attempt));
      }
    }
  }

  /**
   * After a clone went: drops the parent's clone snapshot when it has no clone left, and a `.deleted` parent with it.
   * `removed` names the clone just removed, when that is why.
   */
  private async releaseParent(image: string, snap: string, removed?: string): Promise<void> {
    if (!releases({ image, snap })) return;
    const base = image.replace(/\.deleted$/, '');
    // The parent's removal (another process) may rename it to `.deleted` at any moment: the name it
    // has now counts, before the snapshot is dropped (to find it) and after (to know it is marked).
    let empty: boolean | undefined;
    for (const name of [image, image === base ? `${base}${DELETED}` : base]) {
      empty = await this.withImageIfAny(name, async (img) => {
        if (snap.endsWith(CLONE_SNAP) && (await this.dropSnapshot(img, name, snap, true, removed))) {
          await this.rbd.metadataRemove(img, `${RELEASING}${snap}`).catch((err) => (isRbdError(err, 'ENOENT') ? undefined : Promise.reject(err)));
        }
        return (await this.rbd.snapList(img)).length === 0;
      }).catch((err) => (isRbdError(err, 'ENOENT') ? undefined : Promise.reject(err))); // renamed or released meanwhile: look under the other name
      if (empty !== undefined) break;
    }
    if (empty && (await this.imageListed(`${base}${DELETED}`))) await this.removeImage(`${base}${DELETED}`);
  }

  /**
   * Removes the snapshot `snap` of `image` (opened as `img`). A snapshot with
   * clones is kept when `keepIfCloned` (the answer is then false), else its
   * clones are flattened first. A snapshot that still lists `removed`, a clone
   * just removed, is neither: the caller's job tries again, rather than
   * complete and leave the snapshot behind for good.
   *
   * librbd's flatten unregisters the clone from the snapshot's children before
   * it unlinks the clone from its parent: a flatten killed between the two
   * leaves a clone that the snapshot no longer lists and that still needs it
   * (it does not open without it). So before each flatten the parent's
   * metadata names the clone ({@link FLATTENING}), the next attempt flattens
   * the clones named there as well as those listed, and the names go once
   * the snapshot is gone.
   * @throws DriverError (retryable) when the snapshot still lists `removed`.
   */
  private async dropSnapshot(img: RbdImage, image: string, snap: string, keepIfCloned: boolean, removed?: string): Promise<boolean> {
    const forget = async (children: Iterable<string>): Promise<void> => {
      for (const child of children) {
        await this.rbd.metadataRemove(img, `${FLATTENING}${child}`).catch((err) => (isRbdError(err, 'ENOENT') ? undefined : Promise.reject(err)));
      }
    };
    const begun = (await this.rbd.metadataList(img)).filter((m) => m.key.startsWith(FLATTENING) && m.value === snap).map((m) => m.key.slice(FLATTENING.length));
    if (await this.rbd.snapIsProtected(img, snap).catch((err) => (isRbdError(err, 'ENOENT') ? null : Promise.reject(err))) === null) {
      const dropped = await this.dropTrashed(img, (t) => t.trashedName === snap);
      if (dropped) await forget(begun);
      return dropped;
    }
    const children = (await this.withImage(image, (s) => this.rbd.children(s), { snap })).filter((c) => !c.trash);
    if (removed && children.some((c) => c.pool === this.options.cephPool && c.image === removed)) {
      throw new DriverError(`Snapshot ${snap} of ${image} still lists its removed clone ${removed}`, { retryable: true });
    }
    const flattening = new Set([...children.map((c) => c.image), ...begun]);
    if (flattening.size > 0) {
      if (keepIfCloned && children.length > 0) return false;
      for (const child of flattening) {
        await this.rbd.metadataSet(img, `${FLATTENING}${child}`, snap);
        await this.withImageIfAny(child, async (c) => {
          if ((await this.rbd.parent(c))?.snap === snap) await this.rbd.flatten(c);
        }).catch((err) => (isRbdError(err, 'ENOENT') ? undefined : Promise.reject(err))); // the clone removed meanwhile
      }
    }
    try {
      if (await this.rbd.snapIsProtected(img, snap)) await this.rbd.snapUnprotect(img, snap);
      await this.rbd.snapRemove(img, snap);
    } catch (err) {
      if (!isRbdError(err, 'ENOENT')) throw err;
    }
    await forget(flattening);
    return true;
  }

  /**
   * Removes the image's trashed snapshots that `which` picks. rbd_snap_remove
   * first moves the snapshot to the image's trash namespace (under a generated
   * name) and then removes it: one killed between the two leaves it there, out
   * of reach by its name, and the image can never be removed. One that still
   * has clones stays (librbd removes it with its last clone): the answer is
   * then false.
   */
  private async dropTrashed(img: RbdImage, which: (s: RbdSnapshotInfo) => boolean): Promise<boolean> {
    let kept = false;
    for (const s of (await this.rbd.snapList(img)).filter((x) => x.namespace === 'trash' && which(x))) {
      try {
        await this.rbd.snapRemoveById(img, s.id);
      } catch (err) {
        if (isRbdError(err, 'EBUSY')) kept = true;
        else if (!isRbdError(err, 'ENOENT')) throw err;
      }
    }
    return !kept;
  }

  private async makeSnapshot(snap: SnapshotRef): Promise<void> {
    const name = RbdDriver.snapName(snap.id);
    try {
      const image = RbdDriver.imageName(snap.volumeId);
      await this.withImage(image, async (img) => {
        if ((await this.rbd.snapList(img)).some((s) => s.name === name)) {
          // One an earlier attempt left: complete when it opens; replaced when it does not (an
          // attempt killed inside rbd_snap_create leaves a snapshot without its object map).
          if (await this.opens(image, name)) return;
          await this.rbd.snapRemove(img, name);
        }
        await this.rbd.snapCreate(img, name);
      });
    } catch (err) {
      if (isRbdError(err, 'ENOENT')) throw new DriverError(`The image of volume ${snap.volumeId} is missing`, { cause: err });
      throw err;
    }
  }

  /** Removes the RBD snapshot, flattening its clones first (see the module comment). */
  async deleteSnapshot(snap: Pick<SnapshotRef, 'id'> & Partial<Pick<SnapshotRef, 'volumeId'>>): Promise<void> {
    const name = RbdDriver.snapName(snap.id);
    const image = await this.imageWithSnapshot(name, snap.volumeId ? [RbdDriver.imageName(snap.volumeId)] : []);
    try {
      if (image) await this.withImageIfAny(image, (img) => this.dropSnapshot(img, image, name, false));
    } catch (err) {
      // Another removal of the snapshot, or of its volume's image, at the same time: the next attempt looks again.
      if (isRbdError(err, 'ENOENT', 'ESTALE')) throw new DriverError(`Snapshot ${snap.id} or its image changed during its removal`, { cause: err, retryable: true });
      throw err;
    }
  }

  private async makeVolumeFromSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void> {
    const parent = RbdDriver.imageName(snap.volumeId);
    const name = RbdDriver.snapName(snap.id);
    if (this.moved.has(parent)) return this.copyAcross(vol, parent, name);
    const listed = await this.dropPartialClone(vol, parent, name);
    await this.cloneFrom(vol, parent, name, { flatten: this.options.flattenVolumeFromSnapshot, listed });
  }

  private async makeClone(vol: VolumeRef, source: VolumeRef): Promise<void> {
    const parent = RbdDriver.imageName(source.id);
    const snap = `${RbdDriver.imageName(vol.id)}${CLONE_SNAP}`;
    // A source served by another cluster (its group failed over alone) is copied, not cloned, from its clone snapshot.
    const across = this.moved.has(parent);
    const listed = across ? await this.imageListed(RbdDriver.imageName(vol.id)) : await this.dropPartialClone(vol, parent, snap);
    if (!listed) {
      try {
        await this.withImage(parent, async (img) => {
          // A clone snapshot an earlier attempt left before the clone is taken again: it may be
          // half made (no object map), and the source has not changed since.
          if ((await this.rbd.snapList(img)).some((s) => s.name === snap)) {
            if (await this.rbd.snapIsProtected(img, snap)) await this.rbd.snapUnprotect(img, snap);
            await this.rbd.snapRemove(img, snap);
          }
          await this.rbd.snapCreate(img, snap);
          // Protected in the same open, so that cloneFrom needs no open of its own.
          await this.rbd.snapProtect(img, snap);
        });
      } catch (err) {
        if (isRbdError(err, 'ENOENT')) throw new DriverError(`The image of volume ${source.id} is missing`, { cause: err });
        throw err;
      }
    }
    if (across) {
      await this.copyAcross(vol, parent, snap);
      await this.releaseParent(parent, snap);
      return;
    }
    await this.cloneFrom(vol, parent, snap, { flatten: false, listed, isProtected: !listed });
  }

  /**
   * Makes `vol` a full copy of `parent@snap` where `parent` is served by
   * another cluster than the backend's (a member of a group failed over
   * alone): a copy-on-write clone cannot reach across clusters. Only the
   * snapshot's allocated objects are read (`rbd_diff_iterate2` over the
   * object map), and zeros are not written. The copy is made under a name of
   * its own and renamed to the volume's image once whole, so that an attempt
   * killed midway is started again, never taken for the volume. Idempotent:
   * a volume whose image is listed is done.
   */
  private async copyAcross(vol: VolumeRef, parent: string, snap: string): Promise<void> {
    const name = RbdDriver.imageName(vol.id);
    if (await this.imageListed(name)) return;
    const partial = `${name}${COPYING}`;
    if (await this.imageListed(partial)) await this.removeUnwatched(partial);
    await this.rbd.createImage(this.conn, this.options.cephPool, partial, vol.sizeGiB * GiB, FEATURES, this.order);
    try {
      await this.withImage(parent, async (src) => {
        const size = (await this.rbd.stat(src)).sizeBytes;
        const dst = await this.rbd.openImage(this.conn, this.options.cephPool, partial, null, false);
        const zeros = Buffer.alloc(ZERO_CHUNK);
        try {
          for (const e of await this.rbd.diffIterate(src, null, 0, size, 1)) {
            if (!e.exists) continue;
            for (let at = e.offset; at < e.offset + e.length; at += ZERO_CHUNK) {
              const buf = Buffer.allocUnsafe(Math.min(ZERO_CHUNK, e.offset + e.length - at));
              const n = await this.rbd.aioRead(src, at, buf);
              const data = buf.subarray(0, n);
              if (!data.equals(zeros.subarray(0, n))) await this.rbd.aioWrite(dst, at, data);
            }
          }
          await this.rbd.aioFlush(dst);
        } finally {
          await this.rbd.closeImage(dst);
        }
      }, { snap });
    } catch (err) {
      if (isRbdError(err, 'ENOENT')) throw new DriverError(`Snapshot ${snap} of ${parent} is missing`, { cause: err });
      throw err;
    }
    await this.renameOnce(partial, name);
  }

  /**
   * rbd_rename, idempotent and completing a rename killed midway. librbd
   * renames in three writes: the new name's id object (`rbd_id.<to>`), the
   * pool's directory, then the old name's id object removed. A process killed
   * after the first leaves `to` opening but unlisted, and every later rename
   * fails EEXIST (the image stays listed under `from` for good: once found
   * as a `.deleted` image's leftover name in the chaos run); killed after the
   * second, `from` still opens though the directory says `to`. Such a
   * leftover id object naming the same image is removed and the rename is
   * done (again). A new name's id object is taken for a leftover only when
   * it is older than {@link RENAME_SETTLE_MS}: younger, it may be the first
   * write of a rename of the same image running now (a delete job run twice,
   * two members), which removing it would break for good.
   * @throws DriverError (retryable) while such a young id object is there; the rename's error (EEXIST) when `to` is another image.
   */
  private async renameOnce(from: string, to: string): Promise<void> {
    try {
      await this.rbd.renameImage(this.conn, this.options.cephPool, from, to);
      return;
    } catch (err) {
      if (!isRbdError(err, 'EEXIST')) throw err;
      const listed = await this.rbd.listImages(this.conn, this.options.cephPool);
      if (listed.includes(to) && !listed.includes(from)) { // renamed already
        if (await this.sameImage(from, to)) await this.rbd.removeObject(this.conn, this.options.cephPool, `${RBD_ID_OBJECT}${from}`);
        return;
      }
      if (!listed.includes(from) || listed.includes(to) || !(await this.sameImage(from, to))) throw err;
      const { mtimeMs } = await this.rbd.statObject(this.conn, this.options.cephPool, `${RBD_ID_OBJECT}${to}`);
      if (Date.now() - mtimeMs < RENAME_SETTLE_MS) {
        throw new DriverError(`Image ${from} is being renamed to ${to}, or such a rename was stopped midway a moment ago`, { cause: err, retryable: true });
      }
      await this.rbd.removeObject(this.conn, this.options.cephPool, `${RBD_ID_OBJECT}${to}`);
      await this.rbd.renameImage(this.conn, this.options.cephPool, from, to);
    }
  }

  /** Whether two names open the same image (false when either does not open). */
  private async sameImage(a: string, b: string): Promise<boolean> {
    const id = (name: string): Promise<string | undefined> => this.withImageIfAny(name, (img) => this.rbd.imageId(img), 'read');
    const [x, y] = [await id(a), await id(b)];
    return x !== undefined && x === y;
  }

  /** Whether the pool's directory lists `image` (whether or not it opens). */
  private async imageListed(image: string): Promise<boolean> {
    return (await this.rbd.listImages(this.conn, this.options.cephPool)).includes(image);
  }

  /**
   * Removes what an attempt killed inside rbd_clone left of `vol`: an image
   * that does not open, or one that is not a registered child of
   * `parent@snap` while that snapshot exists (the image is made first, then
   * linked to its parent, then registered as its child). A finished clone is
   * registered, or flattened: unlinked, with its clone snapshot gone. (One
   * flattened from a snapshot that stays is made again: the cost of a retry,
   * never a half-made volume taken for a whole one.) Whether the pool still
   * lists `vol`'s image after (a finished clone kept).
   */
  private async dropPartialClone(vol: VolumeRef, parent: string, snap: string): Promise<boolean> {
    const name = RbdDriver.imageName(vol.id);
    if (!(await this.imageListed(name))) return false;
    if (await this.opens(name)) {
      const linked = await this.withImage(name, (img) => this.rbd.parent(img), 'read');
      const snapLeft = await this.withImageIfAny(parent, async (img) => (await this.rbd.snapList(img)).some((s) => s.name === snap), 'read');
      if (!linked && !snapLeft) return true; // flattened
      if (linked && snapLeft) {
        const children = await this.withImage(parent, (img) => this.rbd.children(img), { snap }).catch((err) => (isRbdError(err, 'ENOENT') ? [] : Promise.reject(err)));
        if (children.some((c) => c.image === name)) return true;
      }
    }
    await this.removeUnwatched(name);
    return false;
  }

  /**
   * Makes `vol` a copy-on-write clone of `parent@snap` (protecting the
   * snapshot) unless an earlier attempt did, grows it to its size and
   * flattens it when asked or when its chain of parents reaches
   * `rbd_max_clone_depth`. `o.listed`: whether the pool lists the image
   * (what {@link dropPartialClone} answered); `o.isProtected`: the caller
   * protected the snapshot itself.
   */
  private async cloneFrom(vol: VolumeRef, parent: string, snap: string, o: { flatten: boolean; listed: boolean; isProtected?: boolean }): Promise<void> {
    const name = RbdDriver.imageName(vol.id);
    if (!o.listed) {
      try {
        if (!o.isProtected) {
          await this.withImage(parent, async (img) => {
            if (!(await this.rbd.snapIsProtected(img, snap))) await this.rbd.snapProtect(img, snap);
          });
        }
        await this.rbd.cloneImage(this.conn, this.options.cephPool, parent, snap, name, FEATURES, this.order);
      } catch (err) {
        if (isRbdError(err, 'ENOENT')) throw new DriverError(`Snapshot ${snap} of ${parent} is missing`, { cause: err });
        if (!isRbdError(err, 'EEXIST')) throw err;
      }
    }
    await this.withImage(name, async (img) => {
      if ((await this.rbd.stat(img)).sizeBytes < vol.sizeGiB * GiB) await this.rbd.resize(img, vol.sizeGiB * GiB);
      const p = await this.rbd.parent(img);
      if (p && (o.flatten || (await this.depth(p.image)) + 1 > this.options.maxCloneDepth)) {
        await this.rbd.flatten(img);
        await this.releaseParent(p.image, p.snap);
      }
    });
  }

  /** How many parents the chain above `image` has (0: not a clone). */
  private async depth(image: string): Promise<number> {
    let d = 0;
    for (let name: string | undefined = image; name; d++) {
      const p: { image: string } | null | undefined = await this.withImageIfAny(name, (img) => this.rbd.parent(img), 'read');
      if (!p) return d;
      name = p.image;
    }
    return d;
  }

  /**
   * The extents that differ between the RBD snapshot of `from` and that of
   * `to` (or the image's head): `rbd_diff_iterate2` from `from` over the
   * image opened read-only at `to`, whole objects, which librbd answers from
   * the two object maps (fast-diff) without reading any data or asking the
   * OSDs object by object. Extents are whole objects (`rbd_store_chunk_size`),
   * so they may cover unchanged bytes; discarded ones are listed too (they
   * changed to zeros). Touching extents are merged.
   * @throws DriverError when the image or either snapshot is missing.
   */
  async changedExtents(vol: VolumeRef, from: SnapshotRef, to?: SnapshotRef): Promise<ChangedExtent[]> {
    const fromSnap = RbdDriver.snapName(from.id);
    try {
      const found = await this.withImage(RbdDriver.imageName(vol.id), async (img) => {
        const { sizeBytes } = await this.rbd.stat(img);
        return this.rbd.diffIterate(img, fromSnap, 0, sizeBytes, 1);
      }, to ? { snap: RbdDriver.snapName(to.id) } : 'read');
      const out: Array<{ offset: number; length: number }> = [];
      for (const e of found.sort((a, b) => a.offset - b.offset)) {
        const last = out.at(-1);
        if (last && e.offset <= last.offset + last.length) last.length = Math.max(last.length, e.offset + e.length - last.offset);
        else out.push({ offset: e.offset, length: e.length });
      }
      return out;
    } catch (err) {
      if (isRbdError(err, 'ENOENT')) throw new DriverError(`The image of volume ${vol.id}, or its snapshot ${from.id}${to ? ` or ${to.id}` : ''}, is missing`, { cause: err });
      throw err;
    }
  }

  async revertToSnapshot(vol: VolumeRef, snap: SnapshotRef): Promise<void> {
    await this.withImage(RbdDriver.imageName(vol.id), async (img) => {
      await this.rbd.snapRollback(img, RbdDriver.snapName(snap.id));
      // A rollback takes the snapshot's size back; the volume keeps its own.
      if ((await this.rbd.stat(img)).sizeBytes < vol.sizeGiB * GiB) await this.rbd.resize(img, vol.sizeGiB * GiB);
    });
  }

  /**
   * The size of the image `ref["source-name"]` names in the pool, rounded up to GiB.
   * @throws DriverError when it names no image the driver may adopt.
   */
  async manageExistingGetSize(ref: ManageReference): Promise<number> {
    const name = this.adoptable(ref);
    const st = await this.withImageIfAny(name, (img) => this.rbd.stat(img), 'read');
    if (!st) throw new DriverError(`No image ${name} to manage in pool ${this.options.cephPool}`);
    return Math.max(1, Math.ceil(st.sizeBytes / GiB));
  }

  /** Renames the image to the volume's name, then grows it to whole GiB. */
  async manageExisting(vol: Pick<VolumeRef, 'id'>, ref: ManageReference): Promise<void> {
    const from = this.adoptable(ref);
    const to = RbdDriver.imageName(vol.id);
    try {
      await this.renameOnce(from, to);
    } catch (err) {
      if (err instanceof DriverError) throw err; // a rename of it under way (renameOnce): tried again later
      // Renamed by an earlier attempt: the volume's image is there and the reference names nothing.
      if (!isRbdError(err, 'ENOENT') || !(await this.exists(to))) throw new DriverError(`No image ${from} to manage`, { cause: err });
    }
    await this.withImage(to, async (img) => {
      const { sizeBytes } = await this.rbd.stat(img);
      if (sizeBytes % GiB !== 0) await this.rbd.resize(img, Math.ceil(sizeBytes / GiB) * GiB);
    });
  }

  /** Renames the volume's image to `unmanaged-volume-<id>`, which a manage request can name. */
  async unmanage(vol: Pick<VolumeRef, 'id'>): Promise<void> {
    try {
      await this.renameOnce(RbdDriver.imageName(vol.id), `${UNMANAGED}${RbdDriver.imageName(vol.id)}`);
    } catch (err) {
      if (!isRbdError(err, 'ENOENT')) throw err;
    }
  }

  /** Renames the snapshot `ref["source-name"]` of the volume's image to the snapshot's name. */
  async manageExistingSnapshot(snap: Pick<SnapshotRef, 'id' | 'volumeId'>, ref: ManageReference): Promise<void> {
    const from = this.adoptable(ref);
    const to = RbdDriver.snapName(snap.id);
    await this.withImage(RbdDriver.imageName(snap.volumeId), async (img) => {
      const names = new Set((await this.rbd.snapList(img)).map((s) => s.name));
      if (names.has(to) && !names.has(from)) return; // renamed by an earlier attempt
      if (!names.has(from)) throw new DriverError(`No snapshot ${from} of volume ${snap.volumeId} to manage`);
      await this.rbd.snapRename(img, from, to);
    });
  }

  /** Renames the snapshot to `unmanaged-snapshot-<id>`. */
  async unmanageSnapshot(snap: Pick<SnapshotRef, 'id'>): Promise<void> {
    const name = RbdDriver.snapName(snap.id);
    const image = await this.imageWithSnapshot(name);
    if (!image) return; // unmanaged (or deleted) already
    await this.withImageIfAny(image, async (img) => {
      if ((await this.rbd.snapList(img)).some((x) => x.name === name)) await this.rbd.snapRename(img, name, `${UNMANAGED}${name}`);
    });
  }

  /** Every image of the pool: Basalt's volumes, images kept for their clones and copies under way (not safe), and the others (safe). */
  async listManageableVolumes(): Promise<ManageableResource[]> {
    const out: ManageableResource[] = [];
    for (const name of await this.rbd.listImages(this.conn, this.options.cephPool)) {
      const st = await this.withImageIfAny(name, (img) => this.rbd.stat(img), 'read');
      if (!st) continue; // removed meanwhile
      const owned = OWNED.exec(name);
      const reasonNotSafe = owned ? 'Already managed' : name.endsWith(DELETED) ? 'A deleted volume kept until its clones are gone'
        : name.endsWith(COPYING) ? 'A copy Basalt is making (or one it left midway, removed with its volume)' : null;
      out.push({
        reference: { 'source-name': name }, sizeGiB: Math.max(1, Math.ceil(st.sizeBytes / GiB)),
        basaltId: owned?.[1] === 'volume' ? owned[2]! : null, safeToManage: reasonNotSafe === null, reasonNotSafe, extraInfo: null,
      });
    }
    return out;
  }

  /** Every snapshot of every image: Basalt's (not safe), clone snapshots (not safe) and the others (safe). */
  async listManageableSnapshots(): Promise<ManageableResource[]> {
    const out: ManageableResource[] = [];
    for (const image of await this.rbd.listImages(this.conn, this.options.cephPool)) {
      for (const s of ((await this.withImageIfAny(image, (img) => this.rbd.snapList(img), 'read')) ?? []).filter((x) => x.namespace === 'user')) {
        const owned = OWNED.exec(s.name);
        const internal = s.name.endsWith(CLONE_SNAP) || image.endsWith(DELETED) || image.endsWith(COPYING);
        out.push({
          reference: { 'source-name': s.name }, sizeGiB: Math.max(1, Math.ceil(s.sizeBytes / GiB)),
          basaltId: owned?.[1] === 'snapshot' ? owned[2]! : null, safeToManage: !owned && !internal,
          reasonNotSafe: owned ? 'Already managed' : internal ? 'A snapshot Basalt keeps for a clone' : null, extraInfo: null,
          sourceReference: { 'source-name': image },
        });
      }
    }
    return out;
  }

  /**
   * The image or snapshot name a manage reference names (`source-name`).
   * @throws DriverError for another key, or a name of Basalt's own.
   */
  private adoptable(ref: ManageReference): string {
    const name = ref['source-name'];
    if (typeof name !== 'string' || name === '') throw new DriverError('The rbd driver manages by source-name only');
    if (OWNED.test(name)) throw new DriverError(`${name} is already managed`);
    if (name.endsWith(DELETED) || name.endsWith(CLONE_SNAP)) throw new DriverError(`${name} is kept by Basalt for a clone`);
    if (name.endsWith(COPYING)) throw new DriverError(`${name} is a copy Basalt is making`);
    return name;
  }

  private async exists(image: string): Promise<boolean> {
    return (await this.withImageIfAny(image, async () => true, 'read')) ?? false;
  }

  /**
   * A handle on the volume's image, which every handle of the volume in this
   * process shares (opened by the first, closed by the last): see `canMultiConn`.
   */
  async openVolume(vol: VolumeRef): Promise<VolumeHandle> {
    let entry = this.shared.get(vol.id);
    if (!entry) {
      const cluster = this.connOf(RbdDriver.imageName(vol.id));
      const image = this.rbd.openImage(cluster, this.options.cephPool, RbdDriver.imageName(vol.id), null, false);
      entry = { image, cluster, refs: 0 };
      this.shared.set(vol.id, entry);
    }
    entry.refs++; // before any await: a closing last handle must not close it under this one
    const shared = entry;
    const release = (): Promise<void> => this.releaseShared(vol.id, shared);
    try {
      const img = await shared.image;
      // Its current size: a handle opened after an online extend sees it, older ones keep theirs.
      const { sizeBytes } = await this.rbd.stat(img);
      return new RbdHandle(this.rbd, img, sizeBytes, release);
    } catch (err) {
      await release().catch(() => undefined);
      if (isRbdError(err, 'ENOENT')) throw new DriverError(`The image of volume ${vol.id} is missing`, { cause: err });
      throw err;
    }
  }
}

/** A volume's open image and how many handles use it. */
interface SharedImage {
  readonly image: Promise<RbdImage>;
  /** The client it was opened with. */
  readonly cluster: RbdCluster;
  refs: number;
  /** Its client was blocklisted (see `lookAtBlocklist`) or the backend failed over: no new handle shares it. */
  lost?: boolean;
}

/**
 * A handle on a volume's shared open image: I/O through librbd's asynchronous
 * calls, from the event loop (its methods) or from the NBD data plane's
 * threads (`dataPlaneBackend`).
 */
class RbdHandle implements VolumeHandle {
  /** Requests in flight: `close` waits for them (the addon refuses to close under them). */
  private readonly inFlight = new Set<Promise<unknown>>();
  private closed = false;
  readonly dataPlaneBackend: DataPlaneBackend;

  constructor(private readonly rbd: RbdAddon, private readonly img: RbdImage, readonly sizeBytes: number, private readonly release: () => Promise<void>) {
    this.dataPlaneBackend = rbd.dataPlaneBackend(img);
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    const done = (): void => { this.inFlight.delete(p); };
    p.then(done, done);
    return p;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    const n = await this.track(this.rbd.aioRead(this.img, offset, buf));
    if (n < length) buf.fill(0, n); // never past the end (the guard checked), but never stale bytes either
    return buf;
  }

  write(offset: number, data: Buffer): Promise<void> {
    return this.track(this.rbd.aioWrite(this.img, offset, data));
  }

  flush(): Promise<void> {
    return this.track(this.rbd.aioFlush(this.img));
  }

  trim(offset: number, length: number): Promise<void> {
    return this.track(this.rbd.aioDiscard(this.img, offset, length));
  }

  async writeZeroes(offset: number, length: number, mayPunch: boolean): Promise<void> {
    if (mayPunch) return this.track(this.rbd.aioWriteZeroes(this.img, offset, length));
    // Keep the space: real zeros, not librbd's write-zeroes (which may deallocate whole objects).
    const zeros = Buffer.alloc(Math.min(length, ZERO_CHUNK));
    for (let done = 0; done < length; done += zeros.length) {
      const n = Math.min(zeros.length, length - done);
      await this.track(this.rbd.aioWrite(this.img, offset + done, n === zeros.length ? zeros : zeros.subarray(0, n)));
    }
  }

  /** Allocated objects (the object map, through diff_iterate) are data; the rest are holes that read as zeros. */
  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    const end = offset + length;
    const found = await this.track(this.rbd.diffIterate(this.img, null, offset, length, 1));
    const out: Extent[] = [];
    let pos = offset;
    for (const e of found.sort((a, b) => a.offset - b.offset)) {
      const from = Math.max(e.offset, pos);
      const to = Math.min(e.offset + e.length, end);
      if (to <= from) continue;
      if (from > pos) out.push({ length: from - pos, hole: true, zero: true });
      out.push(e.exists ? { length: to - from, hole: false, zero: false } : { length: to - from, hole: true, zero: true });
      pos = to;
    }
    if (pos < end) out.push({ length: end - pos, hole: true, zero: true });
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.inFlight]);
    await this.release(); // the image closes with the volume's last handle
  }
}

/** The volumes of `vols` whose images a mirror failover could not promote (`reasons`: image name → why), by volume id. */
/** Whether a clone's removal releases anything of its parent: its clone snapshot, or a `.deleted` parent kept for it. */
function releases(parent: { image: string; snap: string }): boolean {
  return parent.snap.endsWith(CLONE_SNAP) || parent.image.endsWith(DELETED);
}

function failedVolumes(vols: readonly VolumeRef[], reasons: ReadonlyMap<string, string>): FailoverResult {
  const failed = vols.filter((v) => reasons.has(RbdDriver.imageName(v.id)));
  if (failed.length === 0) return { failed: [] };
  return { failed: failed.map((v) => v.id), reasons: Object.fromEntries(failed.map((v) => [v.id, reasons.get(RbdDriver.imageName(v.id))!])) };
}
