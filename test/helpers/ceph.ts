/**
 * A real one-node Ceph cluster from Debian's packages for tests: one monitor,
 * one manager and one OSD (bluestore on a sparse file), cephx on, everything
 * on 127.0.0.1 under one temporary folder, with pools of size 1. Started by
 * {@link startCeph}; ready when the monitor answers, the manager is available
 * and every placement group of the pool is `active+clean` (waited for by
 * asking the cluster, never by a guessed sleep); stopped by pid.
 *
 * Sharing: `scripts/test.sh` starts one cluster for the whole run
 * (`test/helpers/ceph-shared.ts start`) and names its folder in
 * `TEST_CEPH_DIR`; {@link startCeph} then attaches to it, makes a pool
 * of its own for the calling file, and that file's `stop` removes only its
 * pool. The script stops the daemons by pid when the run ends, whatever
 * happened to the files. A file run alone (no such variable) starts and stops
 * its own cluster, about 5 s on 2 cores (see `/work/shared/ceph/README.md` for
 * the measurements behind the settings). A shared instance started by the
 * first file that needs it and stopped by the last (a reference count under a
 * file lock) was not chosen: a file killed by the runner's timeout would leave
 * its count behind and the cluster running past the run.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './net.ts';
import { endsWithThisProcess, hasExited, kill9 } from './process.ts';

const run = promisify(execFile);

/** A running cluster (or a pool of its own on a shared one). */
export interface Ceph {
  /** The cluster's `ceph.conf` (monitors, cephx; the client keyring is named under `[client]`). */
  confPath: string;
  /** The keyring holding the key of {@link Ceph.user}. */
  keyringPath: string;
  /** The cephx user id without `client.` (`admin`). */
  user: string;
  /** A pool of size 1, initialised for RBD, every placement group `active+clean`. */
  pool: string;
  /** The monitor's address, `127.0.0.1:PORT` (msgr v1). */
  monitor: string;
  /**
   * Creates another RBD pool (8 placement groups, all `active+clean` when it
   * resolves) and returns its name; `stop` removes it. `name`: the pool's
   * name (rbd-mirror pairs pools of the same name on two clusters); default a
   * fresh `basalt-XXXXXXXX`.
   */
  newPool(name?: string): Promise<string>;
  /** Runs the `ceph` CLI against the cluster and returns its stdout. */
  ceph(...args: string[]): Promise<string>;
  /** Runs the `rbd` CLI against the cluster and returns its stdout. */
  rbd(...args: string[]): Promise<string>;
  /** Runs the `rados` CLI (objects of a pool) against the cluster and returns its stdout. */
  rados(...args: string[]): Promise<string>;
  /** Kills every daemon it started by pid (SIGKILL: the cluster is thrown away) and removes its folder; on a shared cluster, removes its pools only. */
  stop(): Promise<void>;
}

/** Debian's packages the cluster and the `rbd` driver need (installed by `scripts/install-test-tools.sh`). */
const BINARIES = ['ceph-mon', 'ceph-mgr', 'ceph-osd', 'ceph', 'ceph-authtool', 'monmaptool', 'rbd'];

/**
 * The environment of every Ceph process: without Python variables that would
 * point the `ceph` CLI or the manager's embedded Python at another
 * interpreter's modules (the CLI needs Debian's `python3-rados`).
 */
function cephEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of ['PYTHONPATH', 'PYTHONHOME', 'CEPH_ARGS', 'CEPH_CONF']) delete env[k];
  return env;
}

/** Installs the Ceph packages when a binary is missing (the script waits for apt's lock). */
async function ensureInstalled(): Promise<void> {
  const missing = BINARIES.filter((b) => !['/usr/bin', '/usr/sbin'].some((d) => fs.existsSync(path.join(d, b))));
  if (missing.length === 0 && fs.existsSync('/usr/include/rbd/librbd.h')) return;
  const script = path.resolve(import.meta.dirname, '../../scripts/install-test-tools.sh');
  await run('bash', [script], { maxBuffer: 64 * 1024 * 1024 });
}

/** Writes `ceph.conf` for a cluster in `dir`; see the module comment. */
function writeConf(dir: string, fsid: string, monV2: number, monV1: number, bindMin: number): string {
  const conf = `[global]
fsid = ${fsid}
mon_host = [v2:127.0.0.1:${monV2},v1:127.0.0.1:${monV1}]
mon_initial_members = a
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
public_network = 127.0.0.0/8
ms_bind_port_min = ${bindMin}
ms_bind_port_max = ${bindMin + 99}
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
# Every client here is recent: refuse the old global_id reclaim (otherwise HEALTH_WARN).
auth_allow_insecure_global_id_reclaim = false
run_dir = ${dir}/run
admin_socket = ${dir}/run/$cluster-$name.asok
pid_file = ${dir}/run/$name.pid
log_file = ${dir}/log/$name.log
mon_data = ${dir}/mon-$id
mon_cluster_log_file = ${dir}/log/cluster.log
# One OSD: pools of one copy, and no warning about it.
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_allow_pool_delete = true
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_autoscale_mode = off
mon_data_avail_warn = 2
# Every test of a run makes pools of 8 placement groups on the one OSD: past 250 (Ceph's
# default limit, about 30 pools) pool creation is refused.
mon_max_pg_per_osd = 2000
# Test-speed timers: ready in about 6 s instead of 15.
paxos_propose_interval = 0.1
mgr_stats_period = 1
mon_mgr_digest_period = 1
mgr_tick_period = 1
# A killed client's watch (and so its exclusive lock) is given up after 5 s instead of 30:
# the tests that kill a client mid-call retry on the same image.
osd_client_watch_timeout = 5
# Layering, exclusive-lock, object-map, fast-diff, deep-flatten.
rbd_default_features = 61

[client]
keyring = ${dir}/admin.keyring
admin_socket =
log_file = ${dir}/log/client.log

[mgr]
mgr_data = ${dir}/mgr
keyring = ${dir}/mgr/keyring
# No dashboard or other module opening HTTP listeners.
mgr_initial_modules = iostat

[osd]
osd_data = ${dir}/osd
keyring = ${dir}/osd/keyring
osd_objectstore = bluestore
# Outside osd_data: bluestore makes "block" a symlink there, and mkfs fails with ELOOP on a file inside.
bluestore_block_path = ${dir}/osd-block
bluestore_block_create = true
bluestore_block_size = ${10 * 1024 ** 3}
osd_memory_target = ${1024 ** 3}
osd_op_num_shards = 2
bdev_aio_poll_ms = 50
`;
  const p = path.join(dir, 'ceph.conf');
  fs.writeFileSync(p, conf);
  return p;
}

/** Polls `probe` until it returns true; fails with `what` after `timeoutMs` or when a daemon died. */
async function until(what: string, timeoutMs: number, daemons: ChildProcess[], probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = daemons.find(hasExited);
    if (dead) throw new Error(`${what}: ${dead.spawnfile} exited (${dead.exitCode ?? dead.signalCode})`);
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A contiguous range of 100 ports for the daemons' own listeners, picked around a free one. */
async function bindRange(): Promise<number> {
  const p = await freePort();
  return p > 60000 ? p - 200 : p;
}

/** Sends JSON commands to a cluster's monitors (the manager's through them). */
type MonCommand = (command: Record<string, unknown>) => Promise<string>;

/**
 * Settings of the tests' own librados clients (the addon's `connect`): a
 * connect or a call the cluster does not answer fails after a minute with
 * ETIMEDOUT, naming itself, instead of holding its test until the runner's
 * limit per file (librados waits for ever by default).
 */
export const TEST_CLIENT_TIMEOUTS: Readonly<Record<string, string>> = { client_mount_timeout: '60', rados_mon_op_timeout: '60', rados_osd_op_timeout: '60' };

/**
 * Runs `fn` with monitor commands sent through a librados client of this
 * process (the RBD addon's), connected for it and shut down after: a
 * command costs milliseconds, where each run of the `ceph` command (Python)
 * cost about 0.4 s of CPU, and a pool's making and removal took five of them.
 */
async function withMonCommands<T>(confPath: string, keyringPath: string, fn: (mon: MonCommand) => Promise<T>): Promise<T> {
  const { loadRbdAddon } = await import('../../src/drivers/rbd/rbd-addon.ts');
  const rbd = loadRbdAddon();
  const cluster = await rbd.connect(confPath, 'admin', keyringPath, TEST_CLIENT_TIMEOUTS);
  try {
    return await fn(async (command) => (await rbd.monCommand(cluster, JSON.stringify(command))).out);
  } finally {
    await rbd.shutdown(cluster);
  }
}

/**
 * Creates an RBD pool of 8 placement groups and waits until they are all
 * `active+clean` and the manager's `df` (a backend's capacity) lists the
 * pool: it may list it a moment after its placement groups are clean.
 */
async function createPool(mon: MonCommand, daemons: ChildProcess[], name: string): Promise<void> {
  await mon({ prefix: 'osd pool create', pool: name, pg_num: 8, pgp_num: 8 });
  await mon({ prefix: 'osd pool application enable', pool: name, app: 'rbd' });
  await until(`pool ${name} clean`, 120_000, daemons, async () => {
    const stat = JSON.parse(await mon({ prefix: 'pg ls-by-pool', poolstr: name, format: 'json' })) as { pg_stats?: Array<{ state: string }> } | Array<{ state: string }>;
    const pgs = Array.isArray(stat) ? stat : stat.pg_stats ?? [];
    return pgs.length === 8 && pgs.every((pg) => pg.state === 'active+clean');
  });
  await until(`pool ${name} in df`, 120_000, daemons, async () =>
    (JSON.parse(await mon({ prefix: 'df', detail: 'detail', format: 'json' })) as { pools: Array<{ name: string }> }).pools.some((p) => p.name === name));
}

/** How to start. */
export interface StartCephOptions {
  /** Start a cluster of its own even when `TEST_CEPH_DIR` names a shared one. Default false. */
  fresh?: boolean;
  /** Leave the daemons running when this process exits (the shared cluster of a run). Default false. */
  detached?: boolean;
}

/**
 * Starts a fresh cluster (or, with `TEST_CEPH_DIR`, makes a pool on the
 * running one): see the module comment. The daemons' pids are written to
 * `<folder>/pids`, one a line.
 * @throws Error naming the daemon or the step that did not get ready.
 */
export async function startCeph(o: StartCephOptions = {}): Promise<Ceph> {
  await ensureInstalled();
  const shared = o.fresh ? undefined : process.env.TEST_CEPH_DIR;
  const dir = shared ?? fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-ceph-'));
  const confPath = path.join(dir, 'ceph.conf');
  const keyringPath = path.join(dir, 'admin.keyring');
  const env = cephEnv();
  const tool = async (bin: string, args: string[]): Promise<string> =>
    (await run(bin, args, { env, maxBuffer: 64 * 1024 * 1024, timeout: 60_000 })).stdout;
  const cli = (...args: string[]): Promise<string> => tool('ceph', ['-c', confPath, '--connect-timeout', '20', ...args]);
  const rbd = (...args: string[]): Promise<string> => tool('rbd', ['-c', confPath, ...args]);
  const rados = (...args: string[]): Promise<string> => tool('rados', ['-c', confPath, ...args]);
  const pool = `basalt-${randomUUID().slice(0, 8)}`;

  const daemons: ChildProcess[] = [];
  const kill = async (): Promise<void> => {
    await Promise.all(daemons.map(kill9));
  };
  /** Pools made by {@link Ceph.newPool}, removed by `stop` on a shared cluster. */
  const made: string[] = [];
  const newPool = async (name = `basalt-${randomUUID().slice(0, 8)}`): Promise<string> => {
    made.push(name);
    await withMonCommands(confPath, keyringPath, (mon) => createPool(mon, daemons, name));
    return name;
  };
  const monitor = (): string => /v1:(127\.0\.0\.1:\d+)/.exec(fs.readFileSync(confPath, 'utf8'))![1]!;

  if (shared) {
    await withMonCommands(confPath, keyringPath, (mon) => createPool(mon, daemons, pool));
    return {
      confPath, keyringPath, user: 'admin', pool, monitor: monitor(), newPool, ceph: cli, rbd, rados,
      async stop() {
        await withMonCommands(confPath, keyringPath, async (mon) => {
          for (const p of [pool, ...made]) await mon({ prefix: 'osd pool rm', pool: p, pool2: p, yes_i_really_really_mean_it: true });
        });
      },
    };
  }

  try {
    for (const sub of ['run', 'log', 'mgr', 'osd']) fs.mkdirSync(path.join(dir, sub));
    const fsid = randomUUID();
    const [monV2, monV1] = [await freePort(), await freePort()];
    writeConf(dir, fsid, monV2, monV1, await bindRange());
    const daemon = (bin: string, args: string[]): ChildProcess => {
      const out = fs.openSync(path.join(dir, 'log', `${bin}.stderr`), 'a');
      const child = spawn(bin, ['-f', '-c', confPath, ...args], { env, stdio: ['ignore', out, out], detached: o.detached ?? false });
      fs.closeSync(out);
      daemons.push(child);
      fs.appendFileSync(path.join(dir, 'pids'), `${child.pid}\n`);
      if (o.detached) child.unref();
      else endsWithThisProcess(child);
      return child;
    };

    // Monitor: keyrings (mon. and client.admin), a monmap, mkfs, start.
    const monKeyring = path.join(dir, 'mon.keyring');
    await tool('ceph-authtool', ['--create-keyring', monKeyring, '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *']);
    await tool('ceph-authtool', ['--create-keyring', keyringPath, '--gen-key', '-n', 'client.admin',
      '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *', '--cap', 'mgr', 'allow *', '--cap', 'mds', 'allow *']);
    await tool('ceph-authtool', [monKeyring, '--import-keyring', keyringPath]);
    const monmap = path.join(dir, 'monmap');
    await tool('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monV2},v1:127.0.0.1:${monV1}]`, monmap]);
    await tool('ceph-mon', ['-c', confPath, '--mkfs', '-i', 'a', '--monmap', monmap, '--keyring', monKeyring]);
    daemon('ceph-mon', ['-i', 'a']);
    await until('ceph-mon answering', 60_000, daemons, async () => { await cli('mon', 'stat'); return true; });

    // Manager and OSD keys in one round of monitor commands each; both daemons start together.
    const mgrKeyring = path.join(dir, 'mgr', 'keyring');
    fs.writeFileSync(mgrKeyring, await cli('auth', 'get-or-create', 'mgr.x', 'mon', 'allow profile mgr', 'osd', 'allow *', 'mds', 'allow *'));
    daemon('ceph-mgr', ['-i', 'x']);
    const osdUuid = randomUUID();
    const secret = (await tool('ceph-authtool', ['--gen-print-key'])).trim();
    const secretFile = path.join(dir, 'osd-secret.json');
    fs.writeFileSync(secretFile, JSON.stringify({ cephx_secret: secret }));
    const osdId = (await cli('osd', 'new', osdUuid, '-i', secretFile)).trim();
    fs.rmSync(secretFile);
    await tool('ceph-authtool', ['--create-keyring', path.join(dir, 'osd', 'keyring'), '--name', `osd.${osdId}`, '--add-key', secret]);
    await tool('ceph-osd', ['-c', confPath, '-i', osdId, '--mkfs', '--osd-uuid', osdUuid]);
    daemon('ceph-osd', ['-i', osdId]);
    await withMonCommands(confPath, keyringPath, async (mon) => {
      await until('ceph-osd up', 60_000, daemons, async () => (JSON.parse(await mon({ prefix: 'osd stat', format: 'json' })) as { num_up_osds: number }).num_up_osds === 1);
      // The manager first: it answers the pool's placement-group listing.
      await until('ceph-mgr available', 60_000, daemons, async () => (JSON.parse(await mon({ prefix: 'mgr stat', format: 'json' })) as { available: boolean }).available);
      await createPool(mon, daemons, pool);
      await until('HEALTH_OK', 60_000, daemons, async () => (JSON.parse(await mon({ prefix: 'health', format: 'json' })) as { status: string }).status === 'HEALTH_OK');
    });
  } catch (err) {
    await kill();
    const logs = fs.existsSync(path.join(dir, 'log')) ? fs.readdirSync(path.join(dir, 'log')).map((f) => `${f}: ${tail(path.join(dir, 'log', f))}`).join('\n') : '';
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`the test Ceph cluster did not start: ${(err as Error).message}\n${logs}`, { cause: err });
  }
  return {
    confPath, keyringPath, user: 'admin', pool, monitor: monitor(), newPool, ceph: cli, rbd, rados,
    async stop() {
      await kill();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The last lines of a log, for a start-up failure's message. */
function tail(file: string): string {
  const text = fs.readFileSync(file, 'utf8');
  return text.split('\n').slice(-8).join('\n');
}
