/**
 * Basalt's optional RBD addon (`native/rbd/basalt_rbd.c`): librados and
 * librbd for the `rbd` driver, built apart from the main addon by
 * `scripts/build-rbd-addon.mjs` and only where Ceph's headers are. It is
 * loaded on first use, never at import, so that a Basalt without Ceph's
 * libraries runs every other driver; {@link loadRbdAddon} then says exactly
 * what to install.
 *
 * Every function returns a promise and none blocks the event loop:
 * management calls run each on a thread of its own (never on libuv's pool,
 * which a long flatten would hold for minutes), block I/O goes through
 * librbd's asynchronous calls (rbd_aio_*) whose completions come back to the
 * event loop. A rejection is an Error with `errno` (positive) and `code`
 * (ENOENT, EEXIST, EBUSY …), see {@link RbdCallError}.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type { DataPlaneBackend } from '../../common/index.ts';
import { rootPath } from '../../common/root.ts';
import { DriverError } from '../../errors/index.ts';

/** An opaque connected cluster (a `rados_t`). */
export type RbdCluster = { readonly __rbdCluster: unique symbol };
/** An opaque open image (an `rbd_image_t` with its own I/O context). */
export type RbdImage = { readonly __rbdImage: unique symbol };

/** What a failed call rejects with. */
export interface RbdCallError extends Error {
  /** The positive errno librados or librbd returned. */
  errno: number;
  /** Its name: `ENOENT`, `EEXIST`, `EBUSY`, `ENOTEMPTY` … */
  code: string;
}

/** `stat` of an image. */
export interface RbdImageStat {
  sizeBytes: number;
  objectSizeBytes: number;
  /** log2 of the object size. */
  order: number;
  /** Feature bits ({@link RBD_FEATURES}). */
  features: number;
  /** Bytes of the parent a clone still reads through; 0 without a parent. */
  overlapBytes: number;
}

/** `poolStats` of a pool. */
export interface RbdPoolStats {
  /** Images in the pool's directory (not in its trash). */
  images: number;
  /** The sum of their sizes (heads only, not their snapshots). */
  provisionedBytes: number;
}

/**
 * One snapshot of an image. Besides the user's snapshots an image holds
 * librbd's own: `mirror` (rbd-mirror's), `group`, and `trash` — a snapshot
 * whose removal began (the first step of rbd_snap_remove moves it there,
 * under a generated name, `trashedName` keeping the one it had) and which
 * librbd removes when its last clone goes.
 */
export interface RbdSnapshotInfo {
  id: number;
  name: string;
  sizeBytes: number;
  namespace: 'user' | 'group' | 'trash' | 'mirror' | 'unknown';
  trashedName?: string;
  /** A mirror snapshot's state, and whether rbd-mirror finished copying it (always true on the side that took it). */
  mirror?: { state: 'primary' | 'primary-demoted' | 'non-primary' | 'non-primary-demoted' | 'unknown'; complete: boolean };
}
/** Where a clone comes from. */
export interface RbdParent { pool: string; image: string; snap: string }
/** A clone of a snapshot. */
export interface RbdChild { pool: string; image: string; trash: boolean }
/** One changed (or, without a starting snapshot, allocated) extent from `rbd_diff_iterate2`. */
export interface RbdDiffExtent { offset: number; length: number; exists: boolean }

/** The addon's functions; see `native/rbd/basalt_rbd.c`. */
export interface RbdAddon {
  /** rados_create2 + conf_read_file (null: the default places) + `CEPH_ARGS` + keyring + `settings` + rados_connect, as `client.<user>`. */
  connect(conf: string | null, user: string, keyring: string | null, settings: Readonly<Record<string, string>>): Promise<RbdCluster>;
  /** Refused (EBUSY) while images are open. */
  shutdown(cluster: RbdCluster): Promise<void>;
  /** A monitor command (JSON): its output and status text. */
  monCommand(cluster: RbdCluster, command: string): Promise<{ out: string; status: string }>;
  createImage(cluster: RbdCluster, pool: string, name: string, sizeBytes: number, features: number, order: number): Promise<void>;
  /** Clones `parent@snap` as `child` in the same pool. */
  cloneImage(cluster: RbdCluster, pool: string, parent: string, snap: string, child: string, features: number, order: number): Promise<void>;
  removeImage(cluster: RbdCluster, pool: string, name: string): Promise<void>;
  renameImage(cluster: RbdCluster, pool: string, from: string, to: string): Promise<void>;
  /** rados_remove of one object of the pool (the driver removes an interrupted rename's leftover id object this way). */
  removeObject(cluster: RbdCluster, pool: string, oid: string): Promise<void>;
  /** rados_stat of one object: its size and when it was last written (whole seconds). */
  statObject(cluster: RbdCluster, pool: string, oid: string): Promise<{ sizeBytes: number; mtimeMs: number }>;
  /** rbd_get_id: the image's id, which its header and data objects are named by (the same under every name of it). */
  imageId(image: RbdImage): Promise<string>;
  listImages(cluster: RbdCluster, pool: string): Promise<string[]>;
  /**
   * `rbd_pool_stats_get`: how many images the pool lists and the sum of their
   * sizes, read from their header objects without opening any image.
   */
  poolStats(cluster: RbdCluster, pool: string): Promise<RbdPoolStats>;
  /**
   * Opens the head read-write (`snap` null, `readOnly` false), else read-only:
   * the head, or the snapshot `snap`. A read-only open never takes the
   * exclusive lock.
   */
  openImage(cluster: RbdCluster, pool: string, name: string, snap: string | null, readOnly: boolean): Promise<RbdImage>;
  /** Refused (EBUSY) while I/O is in flight. */
  closeImage(image: RbdImage): Promise<void>;
  stat(image: RbdImage): Promise<RbdImageStat>;
  resize(image: RbdImage, sizeBytes: number): Promise<void>;
  flatten(image: RbdImage): Promise<void>;
  snapCreate(image: RbdImage, name: string): Promise<void>;
  snapRemove(image: RbdImage, name: string): Promise<void>;
  /** rbd_snap_remove_by_id: a snapshot of any namespace (a trashed one is not found by its name). */
  snapRemoveById(image: RbdImage, id: number): Promise<void>;
  snapRollback(image: RbdImage, name: string): Promise<void>;
  snapRename(image: RbdImage, from: string, to: string): Promise<void>;
  snapProtect(image: RbdImage, name: string): Promise<void>;
  snapUnprotect(image: RbdImage, name: string): Promise<void>;
  snapIsProtected(image: RbdImage, name: string): Promise<boolean>;
  snapList(image: RbdImage): Promise<RbdSnapshotInfo[]>;
  /** The parent of a clone, null when the image has none. */
  parent(image: RbdImage): Promise<RbdParent | null>;
  /** The clones of the snapshot the image was opened at. */
  children(image: RbdImage): Promise<RbdChild[]>;
  /** Sets a key of the image's metadata (`rbd image-meta`, kept in its header); a clone made later copies it. */
  metadataSet(image: RbdImage, key: string, value: string): Promise<void>;
  /** Removes a key of the image's metadata; ENOENT when there is none. */
  metadataRemove(image: RbdImage, key: string): Promise<void>;
  /** Every key of the image's metadata, with its value. */
  metadataList(image: RbdImage): Promise<Array<{ key: string; value: string }>>;
  /** rbd_diff_iterate2 with the parent included; `wholeObject` uses the object map (fast-diff). */
  diffIterate(image: RbdImage, fromSnap: string | null, offset: number, length: number, wholeObject: 0 | 1): Promise<RbdDiffExtent[]>;
  /** Reads into `buffer`; resolves with the bytes read. */
  aioRead(image: RbdImage, offset: number, buffer: Buffer): Promise<number>;
  aioWrite(image: RbdImage, offset: number, buffer: Buffer): Promise<void>;
  aioFlush(image: RbdImage): Promise<void>;
  aioDiscard(image: RbdImage, offset: number, length: number): Promise<void>;
  aioWriteZeroes(image: RbdImage, offset: number, length: number): Promise<void>;
  /**
   * The image as a backend of the NBD data plane (`native/nbd_backend.h`):
   * its threads submit rbd_aio_* themselves and take the completions, no
   * event loop between. Closing the image is refused (EBUSY) while a
   * data-plane connection holds it.
   * @throws Error (code EBADF) when the image is closed or closing.
   */
  dataPlaneBackend(image: RbdImage): DataPlaneBackend;
  /** This client's address as the cluster's blocklist names it (`ip:port/nonce`); local, no round trip. */
  clientAddress(cluster: RbdCluster): string;
  /** rbd_mirror_mode_set: 0 disabled, 1 image (each image enabled by itself), 2 pool (every journaled image). */
  mirrorModeSet(cluster: RbdCluster, pool: string, mode: 0 | 1 | 2): Promise<void>;
  mirrorModeGet(cluster: RbdCluster, pool: string): Promise<'disabled' | 'image' | 'pool'>;
  /** rbd_mirror_site_name_set: this cluster's name as its peers list it. */
  mirrorSiteNameSet(cluster: RbdCluster, name: string): Promise<void>;
  /** rbd_mirror_peer_bootstrap_create: a token holding a key of this cluster's (never log it). */
  mirrorBootstrapCreate(cluster: RbdCluster, pool: string): Promise<string>;
  /** rbd_mirror_peer_bootstrap_import of another cluster's token: direction 0 rx-only, 1 tx-only, 2 rx-tx. */
  mirrorBootstrapImport(cluster: RbdCluster, pool: string, token: string, direction: 0 | 1 | 2): Promise<void>;
  /** rbd_mirror_peer_site_list: the pool's peers. */
  mirrorPeers(cluster: RbdCluster, pool: string): Promise<RbdMirrorPeer[]>;
  /** rbd_mirror_image_enable2: mode 0 journal, 1 snapshot. */
  mirrorEnable(image: RbdImage, mode: 0 | 1): Promise<void>;
  mirrorDisable(image: RbdImage, force: 0 | 1): Promise<void>;
  /** rbd_mirror_image_promote; `force` promotes while the peer's image is still primary (its cluster out of reach). */
  mirrorPromote(image: RbdImage, force: 0 | 1): Promise<void>;
  mirrorDemote(image: RbdImage): Promise<void>;
  /** rbd_mirror_image_resync: a non-primary image is copied again from the primary. */
  mirrorResync(image: RbdImage): Promise<void>;
  mirrorInfo(image: RbdImage): Promise<RbdMirrorInfo>;
  /** rbd_mirror_image_get_global_status: the image's mirroring and each site's status (the peer's lags up to 30 s). */
  mirrorStatus(image: RbdImage): Promise<RbdMirrorInfo & { sites: RbdMirrorSiteStatus[] }>;
  /** rbd_mirror_image_create_snapshot: a mirror snapshot rbd-mirror ships; resolves with its id. */
  mirrorSnapshot(image: RbdImage): Promise<number>;
}

/** One peer of a mirrored pool. */
export interface RbdMirrorPeer { uuid: string; siteName: string; mirrorUuid: string; direction: 'rx-only' | 'tx-only' | 'rx-tx' }
/** An image's mirroring: `mode` is null unless `state` is `enabled`. */
export interface RbdMirrorInfo { globalId: string; state: 'disabling' | 'enabled' | 'disabled' | 'unknown'; primary: boolean; mode: 'snapshot' | 'journal' | null }
/** One site's status of a mirrored image (`up`: its rbd-mirror daemon reports). */
export interface RbdMirrorSiteStatus {
  mirrorUuid: string;
  state: 'unknown' | 'error' | 'syncing' | 'starting_replay' | 'replaying' | 'stopping_replay' | 'stopped';
  description: string;
  /** Seconds since the epoch. */
  lastUpdate: number;
  up: boolean;
}

/** Feature bits of `rbd/features.h`. */
export const RBD_FEATURES = Object.freeze({
  layering: 1,
  exclusiveLock: 4,
  objectMap: 8,
  fastDiff: 16,
  deepFlatten: 32,
});

/**
 * Where the build puts the addon (`scripts/build-rbd-addon.mjs`), or the file
 * `BASALT_RBD_ADDON_PATH` names (a build with a sanitizer; the tests of the
 * messages below).
 */
export const RBD_ADDON_PATH = process.env.BASALT_RBD_ADDON_PATH || rootPath('native', 'rbd', 'build', 'Release', 'basalt_rbd.node');

let loaded: RbdAddon | undefined;

/**
 * The RBD addon, loaded on the first call.
 * @throws DriverError (not retryable) saying what to install or build: the
 *   Debian packages librbd-dev and librados-dev when the addon was never
 *   built (their headers are missing), `node scripts/build-rbd-addon.mjs`
 *   when the headers are there but the build is not, librbd1 and librados2
 *   when the built addon cannot find Ceph's libraries.
 */
export function loadRbdAddon(): RbdAddon {
  if (loaded) return loaded;
  if (!fs.existsSync(RBD_ADDON_PATH)) {
    const headers = fs.existsSync('/usr/include/rbd/librbd.h') && fs.existsSync('/usr/include/rados/librados.h');
    throw new DriverError(headers
      ? `The rbd driver needs Basalt's RBD addon, which is not built: run \`node scripts/build-rbd-addon.mjs\` (or \`npm ci\`) in Basalt's folder`
      : 'The rbd driver needs Ceph\'s client libraries: install the packages librbd-dev and librados-dev (Debian, Ubuntu; librbd-devel and librados-devel elsewhere), then run `node scripts/build-rbd-addon.mjs` (or `npm ci`) in Basalt\'s folder');
  }
  try {
    loaded = createRequire(import.meta.url)(RBD_ADDON_PATH) as RbdAddon;
  } catch (err) {
    const libs = /lib(rbd|rados)\.so/.test((err as Error).message);
    throw new DriverError(libs
      ? 'The rbd driver cannot load Ceph\'s client libraries: install the packages librbd1 and librados2 (the versions the addon was built against)'
      : `The rbd driver cannot load its addon ${RBD_ADDON_PATH}: rebuild it with \`node scripts/build-rbd-addon.mjs\``, { cause: err });
  }
  return loaded;
}

/** Whether `err` is a failed addon call with errno `code`. */
export function isRbdError(err: unknown, ...codes: string[]): err is RbdCallError {
  return err instanceof Error && typeof (err as RbdCallError).errno === 'number' && codes.includes((err as RbdCallError).code);
}
