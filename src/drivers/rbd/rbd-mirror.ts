/**
 * The `rbd` driver's replication through Ceph's own rbd-mirror (issue 16
 * part 4): a backend whose `replication_device` names a second cluster
 * (`backend_id:NAME, conf:PATH, user:ID, keyring:PATH, secret_uuid:UUID`,
 * Cinder's RBD keys plus `keyring`) mirrors the images of its replicated
 * volumes there. The pool has the same name on both clusters (rbd-mirror
 * pairs pools by name, and Cinder's RBD driver assumes the same); an
 * rbd-mirror daemon runs on each cluster (the target's pulls the images,
 * the backend's own pulls them back after a failover), which the operator
 * runs as Ceph documents.
 *
 * Everything goes through librbd's mirroring API in the RBD addon, none
 * through the `rbd` CLI:
 * - peering: both pools in `image` mode (each image mirrored by itself), and
 *   when the pool has no peer yet, a bootstrap token made on the backend's
 *   cluster is imported on the target's, both ways (rx-tx). A pool that has
 *   a peer already is left as it is: peering is done once, by whoever comes
 *   first (Basalt or an operator).
 * - a volume is mirrored in snapshot mode (default) or journal mode
 *   (`basalt:rbd_mirror_mode = journal`, which turns the image's journaling
 *   on); a point is a mirror snapshot, which rbd-mirror ships.
 * - its state comes from the image's global mirror status, as the site
 *   serving it sees its peer: `replaying` is `enabled`, `syncing`, a
 *   starting replay or no report yet `copying`, `error`, `stopped` or a
 *   down daemon `error`. The status lags (about 30 s on a fresh daemon).
 * - failover to the target demotes each image on the serving cluster when
 *   that answers (an orderly failover: the demotion reaches the target,
 *   then the target's image is promoted without force), else promotes the
 *   target's image with force (what the old primary wrote after its last
 *   shipped point is then lost to the volume, as with any asynchronous
 *   replication; the forced promotion runs in a process of its own, see
 *   {@link RbdMirrorHost.promoteByForce}). Failback (`default`) first makes the backend's own images
 *   copies of the target's again (a force-promoted pair is resynced), then
 *   demotes the target's and promotes its own once the demotion reached
 *   them: nothing written while failed over is lost.
 */
import { DriverError } from '../../errors/index.ts';
import { isRbdError, type RbdAddon, type RbdCluster, type RbdImage } from './rbd-addon.ts';

/** A second cluster the backend mirrors to (one `replication_device` entry). */
export interface RbdMirrorTarget {
  /** Its name (`backend_id`): what failover names, and `cluster_name` in rbd connection info while it serves. */
  backendId: string;
  /** Its ceph.conf (`conf`; Cinder's default `/etc/ceph/<backend_id>.conf`). */
  confPath: string;
  /** The cephx user there, without `client.` (`user`; default the backend's `rbd_user`). */
  user: string;
  /** The keyring of that user (`keyring`); empty: what its ceph.conf names. */
  keyringPath: string;
  /** The libvirt secret's UUID on hosts for that cluster (`secret_uuid`); empty: its fsid. */
  secretUuid: string;
}

/** Cinder's failback word: the backend's own cluster. */
export const OWN_SITE = 'default';
/** How long a promotion waits for the demotion to reach the image before a failover forces it (a failback retries instead). */
const PROMOTE_WAIT_MS = 60_000;
/** How long a failover waits for the serving cluster to demote an image before counting it out of reach. */
const DEMOTE_WAIT_MS = 15_000;

/** What the mirror needs of its driver. */
export interface RbdMirrorHost {
  addon(): RbdAddon;
  /** The pool (same name on both clusters). */
  pool: string;
  /** The backend's own client (after `init`). */
  own(): RbdCluster;
  /** Connects a client of a target. @throws DriverError as the driver's connect. */
  connect(t: RbdMirrorTarget): Promise<RbdCluster>;
  /**
   * Promotes `image` on `site` by force in a process of its own. Ceph
   * Pacific's librbd can segfault in a forced promotion (seen every time on
   * copies whose interrupted sync had copied user snapshots taken each
   * second; `rbd mirror image promote --force` crashed the same way on such
   * a copy); in this process that would end the volume service, and the
   * failover job it runs again after a restart would end it again.
   * @throws DriverError naming the image when the promotion fails or its process dies.
   */
  promoteByForce(site: string, image: string): Promise<void>;
}

/** Rejects after `ms` with ETIMEDOUT unless `p` settles first (the call itself goes on in its thread). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`${what}: no answer within ${ms} ms`), { errno: 110, code: 'ETIMEDOUT' })), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** The backend's sites (its own cluster and its targets) and the one it serves from. */
export class RbdMirror {
  /** Which site the driver serves from: {@link OWN_SITE} or a target's `backendId`. */
  active = OWN_SITE;
  private readonly clients = new Map<string, Promise<RbdCluster>>();
  private readonly peered = new Map<string, Promise<void>>();

  constructor(private readonly host: RbdMirrorHost, readonly targets: readonly RbdMirrorTarget[]) {}

  /** The target named `backendId`, or undefined for {@link OWN_SITE}. @throws DriverError for an unknown name. */
  target(backendId: string): RbdMirrorTarget | undefined {
    if (backendId === OWN_SITE) return undefined;
    const t = this.targets.find((x) => x.backendId === backendId);
    if (!t) throw new DriverError(`${backendId} is not a replication target of this backend (its targets: ${this.targets.map((x) => x.backendId).join(', ')})`);
    return t;
  }

  /** The client of a site: the driver's own for {@link OWN_SITE}, a target's connected once and kept. */
  async client(site: string): Promise<RbdCluster> {
    const t = this.target(site);
    if (!t) return this.host.own();
    let c = this.clients.get(site);
    if (!c) {
      c = this.host.connect(t);
      this.clients.set(site, c);
      c.catch(() => this.clients.delete(site)); // tried again at the next call
    }
    return c;
  }

  /**
   * A fresh client of `site` in place of `old`, which its cluster blocklisted
   * (the caller shuts `old` down once its images are closed); the current one
   * when another call renewed it already.
   */
  async renew(site: string, old: RbdCluster): Promise<RbdCluster> {
    const t = this.target(site);
    if (!t) throw new DriverError(`${site} is the backend's own site, not a target`);
    const current = await this.clients.get(site)?.catch(() => undefined);
    if (current !== undefined && current !== old) return current;
    const c = this.host.connect(t);
    this.clients.set(site, c);
    c.catch(() => this.clients.delete(site));
    return c;
  }

  /** The site the mirror of the active site goes to: the first target while the backend serves itself, else its own. */
  get peer(): string {
    return this.active === OWN_SITE ? this.targets[0]!.backendId : OWN_SITE;
  }

  /** Disconnects the targets' clients (no image of theirs is open: the driver closed its images first). */
  async close(): Promise<void> {
    const clients = [...this.clients.values()];
    this.clients.clear();
    this.peered.clear();
    for (const c of clients) await this.host.addon().shutdown(await c.catch(() => undefined) as RbdCluster).catch(() => undefined);
  }

  /** Peers the pool with the first target's, once per process (see the module comment). */
  private peering(): Promise<void> {
    const target = this.targets[0]!.backendId;
    let p = this.peered.get(target);
    if (!p) {
      p = (async () => {
        const { addon, pool } = { addon: this.host.addon(), pool: this.host.pool };
        const own = await this.client(OWN_SITE);
        const other = await this.client(target);
        for (const c of [own, other]) if ((await addon.mirrorModeGet(c, pool)) !== 'image') await addon.mirrorModeSet(c, pool, 1);
        if ((await addon.mirrorPeers(own, pool)).length > 0 && (await addon.mirrorPeers(other, pool)).length > 0) return;
        const token = await addon.mirrorBootstrapCreate(own, pool);
        await addon.mirrorBootstrapImport(other, pool, token, 2);
      })();
      this.peered.set(target, p);
      p.catch(() => this.peered.delete(target));
    }
    return p;
  }

  /** Runs `fn` on `image` of `site` opened read-write, closing it after. */
  private async onImage<T>(site: string, image: string, fn: (img: RbdImage) => Promise<T>): Promise<T> {
    const addon = this.host.addon();
    const img = await addon.openImage(await this.client(site), this.host.pool, image, null, false);
    try {
      return await fn(img);
    } finally {
      await addon.closeImage(img);
    }
  }

  /**
   * Mirrors `image` from `site` (default the active site; a group failed
   * over alone serves from another) (idempotent: an image mirrored already,
   * in either mode, is left so).
   */
  async enable(image: string, mode: 'snapshot' | 'journal', site = this.active): Promise<void> {
    await this.peering();
    const addon = this.host.addon();
    await this.onImage(site, image, async (img) => {
      const info = await addon.mirrorInfo(img);
      if (info.state === 'enabled') return;
      try {
        await addon.mirrorEnable(img, mode === 'journal' ? 0 : 1);
      } catch (err) {
        // Enabled meanwhile by another caller (the loop and a group's enabling job at once: librbd answers EINVAL).
        if ((await addon.mirrorInfo(img)).state !== 'enabled') throw err;
      }
    });
  }

  /** A mirror snapshot of `image` on `site`, default the active one (snapshot mode; nothing in journal mode, which ships every write). */
  async point(image: string, site = this.active): Promise<void> {
    const addon = this.host.addon();
    await this.onImage(site, image, async (img) => {
      const info = await addon.mirrorInfo(img);
      if (info.state === 'enabled' && info.primary && info.mode === 'snapshot') await addon.mirrorSnapshot(img);
    });
  }

  /** How `image`'s mirror stands, as its serving site (default the active one) sees its peer (see the module comment). */
  async state(image: string, site = this.active): Promise<{ status: 'enabled' | 'copying' | 'error'; detail: string }> {
    const addon = this.host.addon();
    const status = await this.onImage(site, image, (img) => addon.mirrorStatus(img));
    if (status.state !== 'enabled') return { status: 'copying', detail: `mirroring ${status.state}` };
    if (!status.primary) return { status: 'error', detail: 'the serving site\'s image is not primary' };
    // The local site's entry has an empty mirror uuid; the peer's is the other.
    const peer = status.sites.find((s) => s.mirrorUuid !== '');
    if (!peer) return { status: 'copying', detail: 'no report from the peer yet' };
    const detail = `${peer.state}${peer.up ? '' : ' (daemon down)'}: ${peer.description}`;
    if (!peer.up || peer.state === 'error' || peer.state === 'stopped') return { status: 'error', detail };
    return { status: peer.state === 'replaying' ? 'enabled' : 'copying', detail };
  }

  /**
   * Makes `to` the serving site for `images` (see the module comment) and
   * returns the images that could not be promoted there, each with why. `to`
   * equal to the active site only promotes what is not primary there yet (a
   * run after a crash). The caller switches its handles afterwards.
   *
   * With `o.imagesOnly` the active site stays as it is and only `images`
   * change sides (a group's failover, its failback with `to` the active
   * site): the same steps, image by image, as the whole backend's.
   * @throws DriverError (retryable) when a failback waits for the backend's own images to be in step.
   */
  async failOver(to: string, images: readonly string[], o: { imagesOnly?: boolean } = {}): Promise<Map<string, string>> {
    const { from, failback } = this.direction(to);
    const failed = new Map<string, string>();
    for (const image of images) {
      try {
        if (failback) await this.failBackImage(from, image);
        else await this.failOverImage(from, to, image);
      } catch (err) {
        if (failback) throw err;
        failed.set(image, err instanceof Error ? err.message : String(err));
      }
    }
    if (!o.imagesOnly) this.active = to;
    return failed;
  }

  /**
   * What a failover to `to` may do before the writes of `images` are held
   * (a group's failover holds its members' writes at Basalt's exports while
   * their sides change): a failback waits until each own image is in step,
   * so that the hold covers only the demotion and the promotion. A failover
   * needs nothing first. Promotes nothing on the side it fails back to; the
   * repairs of {@link readyToFailBack} (a resync, the target promoted again)
   * are made here as the real call would make them.
   * @throws DriverError (retryable) while an own image is not in step.
   */
  async prepareFailOver(to: string, images: readonly string[]): Promise<void> {
    const { from, failback } = this.direction(to);
    if (failback) for (const image of images) await this.readyToFailBack(from, image);
  }

  /** The site a failover to `to` moves from, and whether it is a failback. Refuses an unknown `to`. */
  private direction(to: string): { from: string; failback: boolean } {
    this.target(to); // refuses an unknown name
    const from = to === this.active ? (to === OWN_SITE ? this.targets[0]!.backendId : OWN_SITE) : this.active;
    return { from, failback: to === OWN_SITE };
  }

  /** Promotes `image` on `to`: orderly when `from` demotes it, forced when `from` does not answer. */
  private async failOverImage(from: string, to: string, image: string): Promise<void> {
    const addon = this.host.addon();
    let demoted = false;
    try {
      demoted = await within(this.onImage(from, image, async (img) => {
        const info = await addon.mirrorInfo(img);
        if (info.primary) await addon.mirrorDemote(img);
        return true;
      }), DEMOTE_WAIT_MS, `demote ${image}`);
    } catch (err) {
      if (isRbdError(err, 'ENOENT')) throw err; // no such image: nothing to fail over
      // Out of reach (or refusing): the target's copy is promoted by force below.
    }
    try {
      await this.promote(to, image, demoted ? PROMOTE_WAIT_MS : 0);
    } catch (err) {
      // No copy there (rbd-mirror never made one): nothing was promoted in its place, so the image
      // demoted above is promoted back (without force) rather than left read-only on both sides.
      if (demoted && isRbdError(err, 'ENOENT')) await this.onImage(from, image, (img) => addon.mirrorPromote(img, 0)).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Failback of `image` from target `from`, in the order Ceph's orderly
   * failback needs: the backend's own image must be receiving the target's
   * mirror snapshots (its latest a `.mirror.non_primary.…` copy) BEFORE the
   * target's is demoted, for rbd-mirror copies a demotion only to an image
   * that is replaying its peer. Its daemon notices a newly promoted peer at
   * its next image check (`rbd_mirror_image_state_check_interval`, 30 s by
   * default), so a failback soon after a failover waits here. Demoted first
   * (as before, seen in CI runs), both images sat non-primary, the own one's
   * latest snapshot its own demotion: rbd-mirror copied nothing, and a
   * promotion without force took the own image back at once, without any
   * write made while failed over. Then the target's image is demoted, and
   * the own one promoted without force once its latest snapshot is a
   * complete copy of that demotion. Basalt waits for that itself: rbd-mirror
   * makes the copy's snapshot before it copies the data into it, and
   * Pacific's librbd promoted an image whose copy of the demotion was not
   * complete yet, without the writes still being copied (a CI run: the
   * primary back without the writes made while failed over).
   * A pair promoted by force is resynced (rbd-mirror copies it again).
   * @throws DriverError (retryable) while the own image is not in step.
   */
  private async failBackImage(from: string, image: string): Promise<void> {
    const addon = this.host.addon();
    const remote = await this.readyToFailBack(from, image);
    if (remote === 'done') return;
    if (remote.primary) await this.onImage(from, image, (img) => addon.mirrorDemote(img));
    await this.demotionCopied(from, image);
    await this.promote(OWN_SITE, image, PROMOTE_WAIT_MS, { force: false });
  }

  /**
   * Waits up to {@link PROMOTE_WAIT_MS} until the own image's latest mirror
   * snapshot is a complete copy of the target's demotion: every write the
   * target took is then in the own image (snapshot mode; nothing to wait for
   * in journal mode).
   * @throws DriverError (retryable) when it is not yet.
   */
  private async demotionCopied(from: string, image: string): Promise<void> {
    const addon = this.host.addon();
    const deadline = Date.now() + PROMOTE_WAIT_MS;
    for (;;) {
      const { mode, snaps } = await this.onImage(OWN_SITE, image, async (img) => ({ mode: (await addon.mirrorInfo(img)).mode, snaps: await addon.snapList(img) }));
      if (mode !== 'snapshot') return; // journal mode: librbd's promotion waits for the journal's replay
      const latest = snaps.filter((x) => x.namespace === 'mirror').sort((a, b) => a.id - b.id).at(-1);
      if (latest?.mirror?.state === 'non-primary-demoted' && latest.mirror.complete) return;
      if (Date.now() >= deadline) {
        throw new DriverError(`${image} has not received all of ${from}'s writes yet (its latest mirror snapshot: ${latest?.mirror ? `${latest.mirror.state}${latest.mirror.complete ? '' : ', being copied'}` : 'none'}): failback waits for them`, { retryable: true });
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /**
   * The checks of {@link failBackImage} before anything changes sides:
   * `done` when the own image is primary again (an earlier attempt), else
   * the target's mirror state, the own image receiving its snapshots.
   * @throws DriverError (retryable) while the own image is not in step.
   */
  private async readyToFailBack(from: string, image: string): Promise<'done' | { primary: boolean }> {
    const addon = this.host.addon();
    const own = await this.onImage(OWN_SITE, image, (img) => addon.mirrorInfo(img));
    const remote = await this.onImage(from, image, (img) => addon.mirrorInfo(img))
      .catch((err) => (own.primary && isRbdError(err, 'ENOENT') ? undefined : Promise.reject(err)));
    if (!remote) return 'done'; // no copy there (its failover failed): the own image serves already
    if (own.primary && remote.primary) {
      // Both primary: the failover forced the target's. The own image's writes since are given up for the target's.
      await this.onImage(OWN_SITE, image, async (img) => {
        await addon.mirrorDemote(img);
        await addon.mirrorResync(img);
      });
      throw new DriverError(`${image} is being copied back from ${from}: failback waits until it is in step`, { retryable: true });
    }
    if (own.primary) return 'done'; // by an earlier attempt
    const receiving = await this.receiving(image);
    if (!receiving) {
      // Demoted before the own image received anything (an attempt of an older Basalt, or an operator):
      // the target's image is promoted again, its latest snapshot being its own demotion, so that
      // rbd-mirror copies it back; the failback tries again later.
      if (!remote.primary) await this.onImage(from, image, (img) => addon.mirrorPromote(img, 0));
      throw new DriverError(`${image} has not begun to receive ${from}'s writes yet: failback waits for them`, { retryable: true });
    }
    return remote;
  }

  /**
   * Whether the own image is receiving the target's mirror snapshots: its
   * latest mirror snapshot is a copy (`.mirror.non_primary.…`), not one of
   * its own (`.mirror.primary.…`, the demotion the failover took). Waits up
   * to {@link PROMOTE_WAIT_MS} for it; an image with no mirror snapshot at
   * all counts as receiving (nothing tells the copy from the original, and
   * librbd's rule for a promotion without force decides).
   */
  private async receiving(image: string): Promise<boolean> {
    const addon = this.host.addon();
    const deadline = Date.now() + PROMOTE_WAIT_MS;
    for (;;) {
      const snaps = await this.onImage(OWN_SITE, image, (img) => addon.snapList(img));
      const latest = snaps.filter((x) => x.name.startsWith('.mirror.')).sort((a, b) => a.id - b.id).at(-1)?.name;
      if (latest === undefined || latest.startsWith('.mirror.non_primary.')) return true;
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  /**
   * Promotes `image` on `site`, without force until `waitMs` passed (the
   * peer's demotion must reach it first), then with force unless
   * `o.force` is false.
   * @throws DriverError (retryable) when it stays refused and force is not allowed.
   */
  private async promote(site: string, image: string, waitMs: number, o: { force?: boolean } = {}): Promise<void> {
    const addon = this.host.addon();
    const deadline = Date.now() + waitMs;
    for (;;) {
      const done = await this.onImage(site, image, async (img) => {
        if ((await addon.mirrorInfo(img)).primary) return true;
        // Nothing to wait for (the old primary is out of reach): by force at once. An orderly promotion
        // of an image whose peer cannot be reached waits for rbd-mirror to let go of it, for minutes.
        if (waitMs === 0 && o.force !== false) return 'force' as const;
        try {
          await addon.mirrorPromote(img, 0);
          return true;
        } catch (err) {
          // Refused while the peer's demotion has not reached this image (EROFS: it is still a copy being written).
          if (!isRbdError(err, 'EBUSY', 'EINVAL', 'EEXIST', 'EROFS', 'EAGAIN')) throw err;
          if (Date.now() < deadline) return false;
          if (o.force === false) throw new DriverError(`${image} is not in step on ${site} yet: failback waits for it`, { cause: err, retryable: true });
          return 'force' as const;
        }
      });
      // With this process's handle closed: see RbdMirrorHost.promoteByForce.
      if (done === 'force') await this.host.promoteByForce(site, image);
      if (done) return;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}
