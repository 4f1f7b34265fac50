/**
 * Two Ceph clusters for rbd-mirror tests (issue 16 part 4): a primary (the
 * run's shared cluster when `TEST_CEPH_DIR` names one, else a fresh one, as
 * {@link startCeph} decides) and a fresh secondary, each with a pool of the
 * same name (rbd-mirror pairs pools by name), and an `rbd-mirror` daemon on
 * each cluster — on the secondary to pull the primary's images, on the
 * primary to pull them back once the secondary was promoted (failback). The
 * daemons are started by pid under the clusters' temporary folders and
 * stopped by pid; nothing here peers the pools or enables mirroring: that is
 * what Basalt (or a test, through the `rbd` CLI) does.
 *
 * See `/work/shared/ceph/README.md` ("rbd-mirror"): the daemon reads its
 * local cluster from `CEPH_CONF` (it ignores `--conf` for that connection),
 * and `rbd mirror image status` lags about 30 s behind the data on a fresh
 * daemon, so tests wait on the data (or on mirror snapshots), not on it.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { startCeph, type Ceph } from './ceph.ts';
import { hasExited, kill9, pidAlive } from './process.ts';

const run = promisify(execFile);

/** A primary and a secondary cluster with a pool of one name and an rbd-mirror daemon on each. */
export interface CephPair {
  primary: Ceph;
  secondary: Ceph;
  /** The pool both clusters have (the primary's {@link Ceph.pool}). */
  pool: string;
  /** Creates a pool of one fresh name on both clusters (each `active+clean`) and returns the name. */
  newPool(): Promise<string>;
  /** The pids of the rbd-mirror daemons (secondary's first). */
  mirrorPids: number[];
  /**
   * Runs a command on the secondary's rbd-mirror daemon through its admin
   * socket (`ceph --admin-daemon`), e.g. `rbd mirror stop <pool>/<image>`
   * to stop replaying one image, and returns what it printed.
   */
  secondaryMirrorCommand(...args: string[]): Promise<string>;
  /**
   * SIGKILLs every daemon of the primary cluster and its rbd-mirror (a site
   * lost), by the pids they were started with; its folder stays until `stop`.
   * @throws Error on a shared primary, which other test files use.
   */
  killPrimary(): Promise<void>;
  /** Kills the daemons by pid, then stops both clusters (the secondary is removed, the shared primary loses its pool only). */
  stop(): Promise<void>;
}

/** How to start. */
export interface StartCephPairOptions {
  /** Also run rbd-mirror on the primary (needed to fail back). Default true. */
  twoWay?: boolean;
  /** Start a primary of its own even when the run shares one (needed by {@link CephPair.killPrimary}). Default false. */
  freshPrimary?: boolean;
}

/** Debian's package that holds the daemon (installed by `scripts/install-test-tools.sh`). */
const RBD_MIRROR = '/usr/bin/rbd-mirror';

/**
 * Starts the pair; see the module comment.
 * @throws Error when a cluster or a daemon does not start (everything started is stopped first).
 */
export async function startCephPair(o: StartCephPairOptions = {}): Promise<CephPair> {
  if (!fs.existsSync(RBD_MIRROR)) {
    await run('bash', [path.resolve(import.meta.dirname, '../../scripts/install-test-tools.sh')], { maxBuffer: 64 * 1024 * 1024 });
  }
  // In parallel: two clusters start in about 9 s together (the README's figure) against 12 one after the other.
  const [p, s] = await Promise.allSettled([startCeph({ fresh: o.freshPrimary ?? false }), startCeph({ fresh: true })]);
  if (p.status === 'rejected' || s.status === 'rejected') {
    if (p.status === 'fulfilled') await p.value.stop();
    if (s.status === 'fulfilled') await s.value.stop();
    throw new Error(`the Ceph pair did not start: ${[p, s].filter((x) => x.status === 'rejected').map((x) => (x as PromiseRejectedResult).reason.message).join('; ')}`);
  }
  const primary = p.value;
  const secondary = s.value;
  const daemons: ChildProcess[] = [];
  const stopDaemons = async (): Promise<void> => {
    await Promise.all(daemons.map(kill9));
  };
  try {
    await secondary.newPool(primary.pool);
    const clusters = o.twoWay === false ? [secondary] : [secondary, primary];
    for (const c of clusters) daemons.push(await startMirrorDaemon(c));
  } catch (err) {
    await stopDaemons();
    await secondary.stop();
    await primary.stop();
    throw err;
  }
  return {
    primary, secondary, pool: primary.pool,
    newPool: async () => secondary.newPool(await primary.newPool()),
    async killPrimary() {
      if (!o.freshPrimary) throw new Error('killPrimary needs a pair started with freshPrimary');
      const pidsFile = path.join(path.dirname(primary.confPath), 'pids');
      const pids = fs.readFileSync(pidsFile, 'utf8').split('\n').filter(Boolean).map(Number);
      const primaryMirror = daemons[1];
      if (primaryMirror?.pid) pids.push(primaryMirror.pid);
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch { /* gone already */ }
      }
      // Gone once kill(pid, 0) fails: a dead monitor must not answer the failover's first calls.
      for (let i = 0; i < 100 && pids.some(pidAlive); i++) await new Promise((r) => setTimeout(r, 50));
    },
    mirrorPids: daemons.map((d) => d.pid!),
    async secondaryMirrorCommand(...args: string[]) {
      // Not the caller's CEPH_ARGS (a debug log of the test's own clients): the daemon would take them for arguments.
      const { CEPH_ARGS: _, ...env } = process.env;
      const { stdout } = await run('ceph', ['--admin-daemon', mirrorSocket(secondary), ...args], { env });
      return stdout;
    },
    async stop() {
      await stopDaemons();
      await Promise.all([secondary.stop(), primary.stop()]);
    },
  };
}

/** Where the rbd-mirror daemon of cluster `c` keeps its admin socket. */
function mirrorSocket(c: Ceph): string {
  return path.join(path.dirname(c.confPath), 'rbd-mirror.asok');
}

/**
 * Starts `rbd-mirror` in the foreground on cluster `c` as `client.admin`
 * (the test clusters' one key; a real site gives it `profile rbd-mirror`),
 * its log next to the cluster's. Resolves once the daemon runs; it registers
 * with the cluster's manager on its own, which nothing here waits for.
 */
async function startMirrorDaemon(c: Ceph): Promise<ChildProcess> {
  const dir = path.dirname(c.confPath);
  const env: NodeJS.ProcessEnv = { ...process.env, CEPH_CONF: c.confPath };
  for (const k of ['PYTHONPATH', 'PYTHONHOME', 'CEPH_ARGS']) delete env[k];
  const logDir = fs.existsSync(path.join(dir, 'log')) ? path.join(dir, 'log') : dir;
  const out = fs.openSync(path.join(logDir, `rbd-mirror-${process.pid}-${Date.now()}.stderr`), 'a');
  // A new peer or pool is noticed within 1 s instead of 30 (the daemon's refresh of its pool replayers), and
  // an image whose peer was promoted (a failover) within 5 s instead of 30 (its image replayers' restart check).
  const child = spawn(RBD_MIRROR, [
    '-f', '--id', c.user, '--keyring', c.keyringPath,
    '--rbd_mirror_pool_replayers_refresh_interval', '1', '--rbd_mirror_image_state_check_interval', '5',
    '--admin_socket', mirrorSocket(c),
  ], { env, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', reject);
  });
  // A daemon that cannot reach its cluster exits at once: give it a moment to say so.
  await new Promise((r) => setTimeout(r, 500));
  if (hasExited(child)) throw new Error(`rbd-mirror on ${c.confPath} exited (${child.exitCode ?? child.signalCode})`);
  return child;
}
