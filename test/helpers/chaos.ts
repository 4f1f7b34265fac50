/**
 * Fault injection for a Basalt cluster (issue 5): PostgreSQL, 2 API
 * processes, 1 scheduler and 3 volume services of one cluster sharing a file
 * backend's folder. Clients run a bounded random mix of creates, extends,
 * snapshots, clones, attaches, detaches and deletes while random processes are
 * SIGKILLed and restarted; then every process is brought back, the cluster
 * settles, and the invariants are checked against the database and the files:
 *
 * - no volume or snapshot in a transitional status, none left in
 *   `error_deleting` (a delete is retried until it succeeds);
 * - every available / in-use volume's file exists with its size, every
 *   available snapshot's file exists;
 * - no volume or snapshot file without its row, no half-written copy left
 *   (a copy that failed for good leaves its data to its error row: such rows
 *   are deleted first, through the API, and must take it with them);
 * - quota usage equal to what the rows add up to;
 * - no job leased by a dead process.
 *
 * With {@link ChaosOptions.ceph} the volume services share an RBD pool
 * instead (issue 14): every member serves every volume, hosts write
 * numbered blocks (FUA) through the attachments' NBD exports while members
 * die, so an image's exclusive lock moves between members and a dead
 * member's lock is broken (and its client blocklisted); the checks look at
 * the pool's images and snapshots instead of files, error rows are deleted
 * through the API and must take their images with them, and every
 * acknowledged write reads back from its image.
 *
 * Used by test/helpers/cluster-chaos.ts, test/postgres/chaos-rbd.test.ts and bench/chaos.ts.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import pg from 'pg';
import { TEST_CLIENT_TIMEOUTS, type Ceph } from './ceph.ts';
import { checkBlocks, DRILL_BLOCK_BYTES, DrillWriter, type NbdConnectionData } from './drill-writer.ts';
import { startPostgres } from './postgres.ts';
import { exited, spawnBasalt } from './process.ts';

/** How to run. */
export interface ChaosOptions {
  /** Client operations to issue (≥ 500 for the issue's test). */
  operations: number;
  /** `etcd3+http://…`, `file://DIR` or `postgresql` (the database itself). */
  coordination: string;
  /** Clients issuing operations at once. */
  concurrency?: number;
  /** Mean pause between kills, ms. */
  killEveryMs?: number;
  /**
   * The most members down (killed, not yet ready again) at once; a kill waits below it. Default 2:
   * the kills keep pace with the restarts on any machine, where a fixed rate on a slow one (a
   * member takes 1-1.5 s of CPU to start, 2-3 s on a busy machine) kept most members down and the
   * clients making volumes that never became available, past the test's bound.
   */
  maxDown?: number;
  /** Random seed (printed, so that a failing run can be repeated). Default: `TEST_CHAOS_SEED`, else random. */
  seed?: number;
  /** Run on an RBD backend in this cluster's pool (see the module comment). Default: a shared file folder. */
  ceph?: Ceph;
  log?: (line: string) => void;
  /**
   * The run's time budget (ms, from its start): past it, no more operations are issued, the settling
   * and the error-row deletes stop waiting, and the overrun is a violation, so that a run stuck
   * somewhere still reports what it found (with its evidence) before its test's timeout. Default: none.
   */
  budgetMs?: number;
  /**
   * Kills the load phase must see: operations go on past {@link operations} until there were
   * this many (a quiet machine runs the operations in less time than a few kills take). Default 0.
   */
  minKills?: number;
  /**
   * Keep each member's log in `<logDir>/<member>.log` (appended across its restarts), and after a
   * failing run the database's volumes, snapshots, attachments and jobs in `<logDir>/db.json`, to
   * read afterwards. Default: `TEST_CHAOS_LOG_DIR`, else removed with the run's state.
   * The members log at `TEST_CHAOS_LOG_LEVEL` (default info; debug logs every job's start and end);
   * `TEST_CHAOS_CEPH_ARGS` goes to their librados as `CEPH_ARGS` (e.g. `--debug-rbd=15
   * --log-file=/tmp/logs/$pid.rbd.log`, to see what librbd did).
   */
  logDir?: string;
}

/** What one run did and found. */
export interface ChaosReport {
  seed: number;
  operations: Record<string, number>;
  /** `skipped`: operations drawn with nothing to do them on (not counted as issued); `refusedBy`: 4xx answers by operation, status and message. */
  outcomes: { accepted: number; refused: number; serverErrors: string[]; cutOff: number; skipped: number; refusedBy: Record<string, number> };
  kills: Record<string, number>;
  /** `files`: the shared folder's files, or the pool's images and snapshots on RBD; `writes`: acknowledged host writes read back (RBD). */
  checked: { volumes: number; snapshots: number; files: number; quotaResources: number; jobs: number; attachments: number; writes: number };
  violations: string[];
  /** Seconds from the run's start to the end of its load phase, of its settling, and of its checks. */
  seconds: { load: number; settled: number; checked: number };
  /** Error rows that held a failed copy's half-written data and were deleted before the checks. */
  deletedFailedCopies: number;
  /** When a violation names a volume or snapshot: the members' warnings and errors that name it too (at most 40 lines). */
  evidence: string[];
  /**
   * Members that a native library aborted (SIGABRT, and {@link NATIVE_ABORT}
   * on stderr: seen under librados, see the README's RBD section): another
   * process death the run must survive, reported apart. Any other end of a
   * member by itself is a violation.
   */
  aborts: string[];
}

const PROJECT = 'chaos';
const HEADERS = { 'X-Auth-Token': `admin:${PROJECT}`, 'Content-Type': 'application/json', 'OpenStack-API-Version': 'volume 3.44' };
const VOLUME_TRANSITIONAL = ['creating', 'extending', 'deleting', 'reverting', 'reserved', 'attaching', 'detaching'];
const SNAPSHOT_TRANSITIONAL = ['creating', 'deleting', 'restoring'];
const OPS = ['create', 'create', 'create', 'extend', 'snapshot', 'snapshot', 'clone', 'clone', 'attach', 'attach', 'detach', 'detach', 'deleteSnapshot', 'delete', 'delete', 'delete'] as const;
type Op = (typeof OPS)[number];
/** Where the hosts of RBD runs write: the first 4 MiB of a volume, numbered blocks round after round. */
const HOST_REGION = { baseBytes: 0, slots: 64 };
/** RBD: hosts attached for the whole run (never detached). */
const PINNED_HOSTS = 3;
/** RBD: the longest a host waits for its writes of one connection (8 writes) before the run counts one as hung. */
const HOST_WRITE_MAX_MS = 60_000;
/** The longest a client waits for an API answer before it counts the request as hung (a violation). */
const REQUEST_MAX_MS = 30_000;
const GiB = 1024 ** 3;

/** A small deterministic PRNG (mulberry32). */
/**
 * What a native library prints as it aborts the process: a C++ exception no
 * one caught (`terminate called after throwing …`), or a failed assertion of
 * glibc or of the library (`…: Assertion `…' failed.`).
 */
const NATIVE_ABORT = /terminate called|: Assertion `.*' failed/;

/** A refusal's kind: the operation, the status and the fault's message with its ids left out. */
function refusal(op: string, r: { status: number; body?: unknown }): string {
  const fault = Object.values((r.body ?? {}) as Record<string, { message?: string }>)[0];
  return `${op} ${r.status} ${String(fault?.message ?? '').replace(/[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}/g, '…').slice(0, 100)}`;
}

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Member { name: string; roles: string; ready: string; env: Record<string, string>; child?: ChildProcess; url?: string }

/** Runs the cluster, the load and the kills, then checks. Needs root (PostgreSQL) and Debian's postgresql. */
export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const startedAt = Date.now();
  const overBudget = (): boolean => o.budgetMs !== undefined && Date.now() - startedAt > o.budgetMs;
  const seed = o.seed ?? (process.env.TEST_CHAOS_SEED ? Number(process.env.TEST_CHAOS_SEED) : Math.floor(Math.random() * 2 ** 31));
  const random = prng(seed);
  const pick = <T>(xs: readonly T[]): T | undefined => xs.length ? xs[Math.floor(random() * xs.length)] : undefined;
  const log = o.log ?? (() => undefined);
  const report: ChaosReport = {
    seed, operations: {}, outcomes: { accepted: 0, refused: 0, serverErrors: [], cutOff: 0, skipped: 0, refusedBy: {} }, kills: {},
    checked: { volumes: 0, snapshots: 0, files: 0, quotaResources: 0, jobs: 0, attachments: 0, writes: 0 }, violations: [], deletedFailedCopies: 0, evidence: [], aborts: [], seconds: { load: 0, settled: 0, checked: 0 },
  };
  const postgres = await startPostgres();
  const database = await postgres.createDatabase();
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-chaos-'));
  const shared = path.join(stateDir, 'shared');
  const logDir = o.logDir ?? process.env.TEST_CHAOS_LOG_DIR ?? path.join(stateDir, 'logs');
  fs.mkdirSync(logDir, { recursive: true });
  const coordination = o.coordination === 'postgresql' ? database : o.coordination;
  const env = {
    BASALT_STATE_DIR: stateDir, BASALT_DATABASE__CONNECTION: database, BASALT_COORDINATION__BACKEND_URL: coordination,
    BASALT_PORT: '0', BASALT_NBD_PORT: '0', BASALT_LOG_LEVEL: process.env.TEST_CHAOS_LOG_LEVEL ?? 'info',
    BASALT_REPORT_INTERVAL: '0.5', BASALT_SERVICE_DOWN_TIME: '3', BASALT_JOB_LEASE_SECONDS: '4',
    BASALT_JOB_POLL_INTERVAL_SECONDS: '0.2', BASALT_JOB_RETRY_DELAY_SECONDS: '0.1', BASALT_JOB_MAX_ATTEMPTS: '10',
    BASALT_COORDINATION__LOCK_TIMEOUT_SECONDS: '20',
    BASALT_BACKEND_DEFAULTS__CLUSTER: 'c1',
    BASALT_QUOTA_VOLUMES: '10000', BASALT_QUOTA_SNAPSHOTS: '10000', BASALT_QUOTA_GIGABYTES: '100000',
    ...(o.ceph ? {
      // Hosts attach through Basalt's export (not librbd), so the members' own clients hold the images' locks.
      BASALT_ENABLED_BACKENDS: 'ceph', BASALT_CEPH__VOLUME_DRIVER: 'rbd', BASALT_CEPH__RBD_POOL: o.ceph.pool, BASALT_CEPH__RBD_USER: o.ceph.user,
      BASALT_CEPH__RBD_CEPH_CONF: o.ceph.confPath, BASALT_CEPH__RBD_KEYRING_CONF: o.ceph.keyringPath, BASALT_CEPH__RBD_CONNECTION: 'nbd',
      BASALT_CEPH__RBD_BLOCKLIST_CHECK_INTERVAL: '1',
    } : { BASALT_BACKEND_DEFAULTS__FILE_VOLUME_DIR: shared }),
  };
  const members: Member[] = [
    { name: 'api-1', roles: 'api', ready: 'API listening', env: { BASALT_HOST: 'api-1' } },
    { name: 'api-2', roles: 'api', ready: 'API listening', env: { BASALT_HOST: 'api-2' } },
    { name: 'scheduler', roles: 'scheduler', ready: 'scheduler started', env: { BASALT_HOST: 'sched' } },
    ...[0, 1, 2].map((i) => ({ name: `volume-${i}`, roles: 'volume', ready: 'volume service started', env: { BASALT_HOST: `node-${i}` } })),
  ];
  let stopping = false;
  let loading = true;
  const restarts: Array<Promise<void>> = [];
  /** Starts `m` again after its process ended, as a supervisor would (three tries). */
  const restart = (m: Member, child: ChildProcess): void => {
    const p = (async () => {
      await exited(child);
      await sleep(200 + random() * 1500);
      for (let attempt = 1; ; attempt++) {
        try {
          await start(m);
          return;
        } catch (err) {
          report.violations.push(`restart of ${m.name} failed: ${(err as Error).message}`);
          if (attempt === 3) throw err;
        }
      }
    })();
    p.catch(() => undefined); // handled here; Promise.all below still reports it
    restarts.push(p);
  };
  const start = async (m: Member): Promise<void> => {
    const s = await spawnBasalt({ ...env, ...m.env, ...(process.env.TEST_CHAOS_CEPH_ARGS ? { CEPH_ARGS: process.env.TEST_CHAOS_CEPH_ARGS } : {}) }, m.roles, m.ready, 'pipe');
    s.child.stdout!.pipe(fs.createWriteStream(path.join(logDir, `${m.name}.log`), { flags: 'a' }));
    // What a native library prints before it aborts the process goes to stderr.
    let said = '';
    s.child.stderr!.on('data', (b: Buffer) => { said = (said + b.toString()).slice(-2000); });
    s.child.stderr!.pipe(fs.createWriteStream(path.join(logDir, `${m.name}.stderr`), { flags: 'a' }));
    m.child = s.child;
    if (s.url) m.url = s.url;
    // A member that ends without being killed (an abort, an exit) is a finding; it is started again.
    // 'close': after its stderr's last bytes.
    s.child.once('close', (code, signal) => {
      if (stopping || m.child !== s.child) return; // killed by the run
      delete m.child;
      const tail = said.trim().split('\n').slice(-10).join(' / ').slice(-1000);
      const what = `${m.name} ended by itself (${signal ?? `exit code ${code}`})${tail ? `; its stderr ends: ${tail}` : ''}`;
      (signal === 'SIGABRT' && NATIVE_ABORT.test(said) ? report.aborts : report.violations).push(what);
      log(`${m.name} ended by itself`);
      if (loading) restart(m, s.child);
    });
  };
  const client = new pg.Client({ connectionString: database });
  /** RBD: each attached volume's host writer, by volume id. */
  const writers = new Map<string, DrillWriter>();
  try {
    for (const m of members) await start(m);
    await client.connect();

    // The client side: HTTP through whichever API is up.
    const apis = () => members.filter((m) => m.roles === 'api' && m.child && m.url);
    const call = async (method: string, p: string, body?: unknown): Promise<{ status: number; body: any } | undefined> => { // eslint-disable-line @typescript-eslint/no-explicit-any
      for (let attempt = 0; attempt < 20; attempt++) {
        const api = pick(apis());
        if (!api) { await sleep(100); continue; }
        try {
          const r = await fetch(`${api.url}/v3/${PROJECT}${p}`, {
            method, headers: HEADERS, signal: AbortSignal.timeout(REQUEST_MAX_MS), ...(body === undefined ? {} : { body: JSON.stringify(body) }),
          });
          const text = await r.text();
          return { status: r.status, body: text ? JSON.parse(text) : undefined };
        } catch (err) {
          if ((err as Error).name === 'TimeoutError') {
            report.violations.push(`${method} ${p} through ${api.name}: no answer within ${REQUEST_MAX_MS / 1000} s`);
            return undefined;
          }
          // The API process died under the request: a read is simply retried;
          // a change may or may not have happened, as for any client.
          if (method !== 'GET') return undefined;
          await sleep(50);
        }
      }
      return undefined;
    };
    const volumesNow = async (): Promise<Array<{ id: string; status: string; size: number }>> => (await call('GET', '/volumes/detail?limit=1000'))?.body?.volumes ?? [];
    const snapshotsNow = async (): Promise<Array<{ id: string; status: string; volume_id: string }>> => (await call('GET', '/snapshots/detail?limit=1000'))?.body?.snapshots ?? [];

    // RBD: a host per attachment writes through its export until the attachment is gone or the
    // load ends, following the attachment's connection info when its member dies. One host per
    // volume at a time (a new attachment's waits for the last one's), so a volume's write numbers go on.
    const hosts = new Map<string, Promise<void>>();
    const host = (volumeId: string, attachmentId: string): void => {
      const writer = writers.get(volumeId) ?? new DrillWriter();
      writers.set(volumeId, writer);
      hosts.set(volumeId, (hosts.get(volumeId) ?? Promise.resolve()).then(async () => {
        while (loading) {
          const r = await call('GET', `/attachments/${attachmentId}`);
          if (r?.status === 404) return;
          const data = r?.body?.attachment?.connection_info?.data as NbdConnectionData | undefined;
          if (data?.export_name) {
            // A write must be answered (with an error, when its member died or fenced itself), never left hanging.
            const err = await Promise.race([writer.run(data, HOST_REGION, 8), sleep(HOST_WRITE_MAX_MS).then(() => 'hung' as const)]);
            if (err === 'hung') {
              report.violations.push(`host of volume ${volumeId}: a write through ${data.host}:${data.port} got no answer within ${HOST_WRITE_MAX_MS / 1000} s`);
              return;
            }
            if (err) log(`host of ${volumeId}: ${err.message}`); // connect again
          }
          await sleep(200);
        }
      }));
    };

    const one = async (op: Op): Promise<{ status: number } | undefined | 'skip'> => {
      const vols = await volumesNow();
      const avail = vols.filter((v) => v.status === 'available');
      switch (op) {
        case 'create': return call('POST', '/volumes', { volume: { size: 1 + Math.floor(random() * 2) } });
        case 'extend': {
          const v = pick(avail);
          return v ? call('POST', `/volumes/${v.id}/action`, { 'os-extend': { new_size: v.size + 1 } }) : 'skip';
        }
        case 'snapshot': {
          const v = pick(vols.filter((x) => x.status === 'available' || x.status === 'in-use'));
          return v ? call('POST', '/snapshots', { snapshot: { volume_id: v.id, force: true } }) : 'skip';
        }
        case 'clone': {
          if (random() < 0.5) {
            const s = pick((await snapshotsNow()).filter((x) => x.status === 'available'));
            return s ? call('POST', '/volumes', { volume: { size: 3, snapshot_id: s.id } }) : 'skip';
          }
          const v = pick(avail);
          return v ? call('POST', '/volumes', { volume: { size: v.size, source_volid: v.id } }) : 'skip';
        }
        case 'attach': {
          const v = pick(avail);
          if (!v) return 'skip';
          const r = await call('POST', '/attachments', { attachment: { volume_uuid: v.id, connector: { host: 'compute-1', initiator: 'iqn.compute-1' } } });
          if (r?.status === 200) {
            await call('POST', `/attachments/${r.body.attachment.id}/action`, { 'os-complete': null });
            if (o.ceph) host(v.id, r.body.attachment.id);
          }
          return r;
        }
        case 'detach': {
          const a = pick((((await call('GET', '/attachments'))?.body?.attachments ?? []) as Array<{ id: string }>).filter((x) => !pinned.has(x.id)));
          return a ? call('DELETE', `/attachments/${a.id}`) : 'skip';
        }
        case 'deleteSnapshot': {
          const s = pick((await snapshotsNow()).filter((x) => x.status === 'available' || x.status === 'error'));
          return s ? call('DELETE', `/snapshots/${s.id}`) : 'skip';
        }
        case 'delete': {
          const v = pick(vols.filter((x) => x.status === 'available' || x.status === 'error'));
          return v ? call('DELETE', `/volumes/${v.id}?cascade=true`) : 'skip';
        }
      }
    };

    // RBD: hosts attached before the kills start and never detached, so that some hosts write
    // all along, through whichever member serves their export, while members die.
    const pinned = new Set<string>();
    for (let i = 0; o.ceph && i < PINNED_HOSTS; i++) {
      const r = await call('POST', '/volumes', { volume: { size: 1 } });
      const id = r?.body?.volume?.id as string;
      for (const until = Date.now() + 60_000; (await call('GET', `/volumes/${id}`))?.body?.volume?.status !== 'available';) {
        if (Date.now() > until) throw new Error(`host volume ${id} did not become available`);
        await sleep(200);
      }
      const a = await call('POST', '/attachments', { attachment: { volume_uuid: id, connector: { host: 'compute-1', initiator: 'iqn.compute-1' } } });
      if (a?.status !== 200) throw new Error(`host volume ${id} was not attached: ${a?.status} ${JSON.stringify(a?.body)}`);
      await call('POST', `/attachments/${a.body.attachment.id}/action`, { 'os-complete': null });
      pinned.add(a.body.attachment.id);
      host(id, a.body.attachment.id);
    }

    // The killer: a random live process dies every so often and comes back
    // shortly after (up to maxDown at once; one API always stays up).
    const killer = (async () => {
      while (loading) {
        await sleep((o.killEveryMs ?? 700) * (0.5 + random()));
        if (!loading) break;
        if (members.filter((m) => !m.child).length >= (o.maxDown ?? 2)) continue;
        const victim = pick(members.filter((m) => m.child && (m.roles !== 'api' || apis().length > 1)));
        if (!victim) continue;
        const child = victim.child!;
        delete victim.child;
        child.kill('SIGKILL');
        report.kills[victim.name] = (report.kills[victim.name] ?? 0) + 1;
        log(`killed ${victim.name}`);
        restart(victim, child); // a process that fails to start is a finding
      }
      await Promise.all(restarts);
    })();
    let issued = 0;
    await Promise.all(Array.from({ length: o.concurrency ?? 6 }, async () => {
      const killed = (): number => Object.values(report.kills).reduce((a, b) => a + b, 0);
      while (issued < o.operations || killed() < (o.minKills ?? 0)) {
        if (overBudget()) {
          if (!report.violations.some((v) => v.startsWith('the load phase'))) report.violations.push(`the load phase ran past the run's budget of ${o.budgetMs! / 1000} s (${issued} operations issued)`);
          break;
        }
        const op = OPS[Math.floor(random() * OPS.length)]!;
        const r = await one(op);
        if (r === 'skip') {
          // Nothing to do it on yet (no available volume, say): another operation after a pause,
          // as a client would, rather than listing every volume again at once, six clients at a time.
          report.outcomes.skipped++;
          await sleep(50);
          continue;
        }
        issued++;
        if (issued % 50 === 0) log(`${issued} operations issued (${report.outcomes.skipped} skipped) after ${Math.round((Date.now() - startedAt) / 1000)} s`);
        report.operations[op] = (report.operations[op] ?? 0) + 1;
        if (r === undefined) report.outcomes.cutOff++;
        else if (r.status < 400) report.outcomes.accepted++;
        else if (r.status < 500) {
          report.outcomes.refused++;
          report.outcomes.refusedBy[refusal(op, r)] = (report.outcomes.refusedBy[refusal(op, r)] ?? 0) + 1;
        }
        else report.outcomes.serverErrors.push(`${op}: ${r.status} ${JSON.stringify((r as { body?: unknown }).body)}`);
      }
    }));
    loading = false;
    await killer;
    await Promise.all(hosts.values());
    const elapsed = (): number => Math.round((Date.now() - startedAt) / 1000);
    report.seconds.load = elapsed();
    log(`load done after ${report.seconds.load} s: ${JSON.stringify(report.operations)}`);

    // Attachments the clients left half-made (their API died between create and complete) are finished, as a client would.
    for (const a of (await client.query(`select id from attachments where attach_status in ('reserved', 'attaching')`)).rows as Array<{ id: string }>) {
      await call('POST', `/attachments/${a.id}/action`, { 'os-complete': null });
    }
    // Settle: every transitional status is left (by the jobs, or by the sweeper failing them).
    const deadline = Date.now() + 120_000;
    for (;;) {
      const busy = (await client.query(`select (select count(*) from volumes where status = any($1)) + (select count(*) from snapshots where status = any($2)) as n`, [VOLUME_TRANSITIONAL, SNAPSHOT_TRANSITIONAL])).rows[0] as { n: string };
      if (Number(busy.n) === 0) break;
      if (Date.now() > deadline || overBudget()) break;
      await sleep(250);
    }
    // A copy that failed for good (its job ran out of attempts, each cut by a kill) leaves its
    // half-written data to its error row, as any failed create does; deleting the row must take it.
    // On RBD every error row is deleted so: what an image leaks shows as an image without a row.
    const partials = new Set((fs.existsSync(shared) ? fs.readdirSync(shared) : []).filter((f) => f.endsWith('.partial')).map((f) => f.replace(/^(volume|snapshot)-/, '').replace(/\.partial$/, '')));
    const owners = [
      ...((await client.query(`select id from snapshots where status = 'error'`)).rows as Array<{ id: string }>).filter((r) => o.ceph || partials.has(r.id)).map((r) => `/snapshots/${r.id}`),
      ...((await client.query(`select id from volumes where status = 'error'`)).rows as Array<{ id: string }>).filter((r) => o.ceph || partials.has(r.id)).map((r) => `/volumes/${r.id}${o.ceph ? '?cascade=true' : ''}`),
    ];
    report.seconds.settled = elapsed();
    log(`settled after ${report.seconds.settled} s; deleting ${owners.length} error rows`);
    for (const owner of owners) {
      report.deletedFailedCopies++;
      await call('DELETE', owner);
      const gone = owner.replace(/\?.*$/, '');
      for (const until = Date.now() + 60_000; Date.now() < until && !overBudget() && (await call('GET', gone))?.status !== 404;) await sleep(250);
    }
    if (overBudget()) report.violations.push(`the run passed its budget of ${o.budgetMs! / 1000} s before its checks (settling or deleting error rows)`);
    await check(client, o.ceph ? { ceph: o.ceph, writers } : { shared }, env.BASALT_SERVICE_DOWN_TIME, report);
    report.seconds.checked = elapsed();
    report.evidence = evidenceFor(report.violations, logDir);
    if (report.violations.length > 0) await dumpRows(client, path.join(logDir, 'db.json'));
    return report;
  } finally {
    stopping = true;
    for (const m of members) m.child?.kill('SIGKILL');
    await Promise.all(members.map((m) => m.child && exited(m.child)));
    await client.end().catch(() => undefined);
    await postgres.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
}

/** The members' log lines at warn or above that name a volume or snapshot a violation names (see {@link ChaosReport.evidence}). */
function evidenceFor(violations: readonly string[], logDir: string): string[] {
  const ids = new Set(violations.flatMap((v) => v.match(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g) ?? []));
  if (ids.size === 0) return [];
  const lines: string[] = [];
  for (const file of fs.readdirSync(logDir).filter((f) => f.endsWith('.log')).sort()) {
    for (const line of fs.readFileSync(path.join(logDir, file), 'utf8').split('\n')) {
      if (!/"level":[456]0/.test(line) || ![...ids].some((id) => line.includes(id))) continue;
      lines.push(`${file.replace(/\.log$/, '')}: ${line.replace(/"stack":"(?:[^"\\]|\\.)*",?/g, '').slice(0, 400)}`);
    }
  }
  return lines.sort((a, b) => (a.match(/"time":"([^"]+)"/)?.[1] ?? '').localeCompare(b.match(/"time":"([^"]+)"/)?.[1] ?? '')).slice(-40);
}

/** Writes the rows a failing run's violations are about, for reading after the run (its database is removed with it). */
async function dumpRows(client: pg.Client, file: string): Promise<void> {
  const rows: Record<string, unknown[]> = {};
  for (const table of ['volumes', 'snapshots', 'attachments', 'jobs']) {
    rows[table] = await client.query(`select * from ${table} order by created_at`).then((r) => r.rows, () => []);
  }
  fs.writeFileSync(file, JSON.stringify(rows, null, 1));
}

/** Where the volumes' data is: the shared folder, or an RBD pool and the hosts that wrote to its images. */
type Storage = { shared: string } | { ceph: Ceph; writers: ReadonlyMap<string, DrillWriter> };
type VolumeRows = Array<{ id: string; status: string; size: number }>;
type SnapshotRows = Array<{ id: string; status: string; volume_size: number; volume_id: string }>;

async function check(client: pg.Client, storage: Storage, downSeconds: string, report: ChaosReport): Promise<void> {
  const bad = (msg: string) => report.violations.push(msg);
  const volumes = (await client.query('select id, status, size from volumes')).rows as VolumeRows;
  const snapshots = (await client.query('select id, status, volume_size, volume_id from snapshots')).rows as SnapshotRows;
  report.checked.volumes = volumes.length;
  report.checked.snapshots = snapshots.length;
  for (const v of volumes.filter((x) => VOLUME_TRANSITIONAL.includes(x.status))) bad(`volume ${v.id} is still ${v.status}`);
  for (const s of snapshots.filter((x) => SNAPSHOT_TRANSITIONAL.includes(x.status))) bad(`snapshot ${s.id} (of volume ${s.volume_id}) is still ${s.status}`);
  // A delete is retried until it succeeds: one that gave up (its job failed for good) left the row for an operator.
  const lastError = async (id: string): Promise<string> => ((await client.query(`select last_error from jobs where resource_id = $1 and state = 'failed' order by updated_at desc limit 1`, [id])).rows[0] as { last_error?: string } | undefined)?.last_error ?? 'no failed job';
  for (const v of volumes.filter((x) => x.status === 'error_deleting')) bad(`volume ${v.id} ended error_deleting: ${await lastError(v.id)}`);
  for (const s of snapshots.filter((x) => x.status === 'error_deleting')) bad(`snapshot ${s.id} (of volume ${s.volume_id}) ended error_deleting: ${await lastError(s.id)}`);
  if ('shared' in storage) await checkFiles(client, storage.shared, volumes, snapshots, bad, report);
  else await checkImages(client, storage.ceph, storage.writers, volumes, snapshots, bad, report);

  // Quotas: each usage row equals what the rows add up to (one type, __DEFAULT__).
  const count = (await client.query(`select
      (select count(*) from volumes where project_id = $1) as volumes,
      (select count(*) from snapshots where project_id = $1) as snapshots,
      (select coalesce(sum(size), 0) from volumes where project_id = $1) + (select coalesce(sum(volume_size), 0) from snapshots where project_id = $1) as gigabytes`, [PROJECT])).rows[0] as Record<string, string>;
  for (const u of (await client.query('select resource, in_use from quota_usages where project_id = $1', [PROJECT])).rows as Array<{ resource: string; in_use: number }>) {
    const base = u.resource.replace(/___DEFAULT__$/, '');
    if (!(base in count)) continue;
    report.checked.quotaResources++;
    if (Number(u.in_use) !== Number(count[base])) bad(`quota usage ${u.resource} is ${u.in_use}, the rows add up to ${count[base]}`);
  }

  // Jobs: none leased by a process that is not alive.
  const jobs = (await client.query(`select j.id, j.kind, j.lease_owner, s.heartbeat_ms from jobs j left join services s on s.instance_id = j.lease_owner where j.state = 'running'`)).rows as Array<{ id: string; kind: string; lease_owner: string; heartbeat_ms: number | null }>;
  report.checked.jobs = Number(((await client.query('select count(*) as n from jobs')).rows[0] as { n: string }).n);
  for (const j of jobs) {
    if (j.heartbeat_ms === null || Number(j.heartbeat_ms) < Date.now() - Number(downSeconds) * 1000) bad(`job ${j.id} (${j.kind}) is leased by dead process ${j.lease_owner}`);
  }
  report.checked.attachments = Number(((await client.query('select count(*) as n from attachments')).rows[0] as { n: string }).n);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Files: every live volume's and snapshot's is there at its size, none without its row, no half-written copy. */
async function checkFiles(client: pg.Client, shared: string, volumes: VolumeRows, snapshots: SnapshotRows, bad: (msg: string) => void, report: ChaosReport): Promise<void> {
  const files = fs.existsSync(shared) ? fs.readdirSync(shared) : [];
  report.checked.files = files.length;
  const names = new Set(files);
  for (const v of volumes.filter((x) => x.status === 'available' || x.status === 'in-use')) {
    const f = `volume-${v.id}`;
    if (!names.has(f)) bad(`${v.status} volume ${v.id} has no file`);
    else if (fs.statSync(path.join(shared, f)).size !== Number(v.size) * GiB) bad(`volume ${v.id} file is ${fs.statSync(path.join(shared, f)).size} bytes, not ${v.size} GiB`);
  }
  for (const s of snapshots.filter((x) => x.status === 'available')) {
    if (!names.has(`snapshot-${s.id}`)) bad(`available snapshot ${s.id} has no file`);
  }
  const rows = new Set([...volumes.map((v) => `volume-${v.id}`), ...snapshots.map((s) => `snapshot-${s.id}`)]);
  for (const f of files) {
    if (f.endsWith('.partial')) {
      const id = f.replace(/^(volume|snapshot)-/, '').replace(/\.partial$/, '');
      const row = [...volumes, ...snapshots].find((x) => x.id === id);
      const jobs = (await client.query('select kind, state, attempts, last_error from jobs where resource_id = $1 order by created_at', [id])).rows;
      bad(`half-written copy ${f} left (row: ${row ? row.status : 'none'}; jobs: ${JSON.stringify(jobs)})`);
    }
    else if (/^(volume|snapshot)-/.test(f) && !rows.has(f)) bad(`file ${f} has no row`);
  }
}

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';

/**
 * RBD: every live volume's image is there at its size and every available
 * snapshot on its volume's image; no image or snapshot without its row
 * (an image renamed `.deleted` only while clones hang on it, a clone
 * snapshot only while its clone lives, or is kept `.deleted` for its own clones); every image listed opens; every
 * write a host had acknowledged reads back from its volume's image. Read
 * through a client of the test's own (the addon), read-only.
 */
async function checkImages(client: pg.Client, ceph: Ceph, writers: ReadonlyMap<string, DrillWriter>, volumes: VolumeRows, snapshots: SnapshotRows, bad: (msg: string) => void, report: ChaosReport): Promise<void> {
  const { loadRbdAddon } = await import('../../src/drivers/rbd/rbd-addon.ts');
  const rbd = loadRbdAddon();
  const cluster = await rbd.connect(ceph.confPath, ceph.user, ceph.keyringPath, TEST_CLIENT_TIMEOUTS);
  try {
    const images = new Map<string, { sizeBytes: number; snaps: string[]; parent: string | undefined }>();
    for (const name of await rbd.listImages(cluster, ceph.pool)) {
      try {
        const img = await rbd.openImage(cluster, ceph.pool, name, null, true);
        try {
          images.set(name, { sizeBytes: (await rbd.stat(img)).sizeBytes, snaps: (await rbd.snapList(img)).map((x) => (x.trashedName ? `${x.name} (in the image's trash, was ${x.trashedName})` : x.name)), parent: (await rbd.parent(img))?.image });
        } finally {
          await rbd.closeImage(img);
        }
      } catch (err) {
        const id = new RegExp(`^volume-(${UUID})`).exec(name)?.[1];
        const row = volumes.find((v) => v.id === id);
        const jobs = id ? (await client.query('select kind, state, attempts, last_error from jobs where resource_id = $1 order by created_at', [id])).rows : [];
        // A made volume that does not open may be a copy whose source's image (its RBD parent) went: say what it was copied from.
        const made = id ? (await client.query('select source_volid, snapshot_id from volumes where id = $1', [id])).rows[0] as { source_volid: string | null; snapshot_id: string | null } | undefined : undefined;
        const sourceId = made?.source_volid ?? (made?.snapshot_id ? ((await client.query('select volume_id from snapshots where id = $1', [made.snapshot_id])).rows[0] as { volume_id?: string } | undefined)?.volume_id ?? null : null);
        const source = made?.source_volid ? `volume ${made.source_volid}` : made?.snapshot_id ? `snapshot ${made.snapshot_id} of volume ${sourceId ?? '(its row is gone)'}` : 'none';
        const sourceRow = sourceId ? volumes.find((v) => v.id === sourceId)?.status ?? 'gone' : undefined;
        // rbd_list2 also lists an image in the pool's trash (a removal moves it there first): say so, and what `rbd info` says.
        const trashed = (JSON.parse(await ceph.rbd('trash', 'ls', '--all', '--format', 'json', ceph.pool).catch(() => '[]')) as Array<{ name: string; source: string }>).find((x) => x.name === name);
        const info = await ceph.rbd('info', `${ceph.pool}/${name}`).then(() => 'opens for rbd info', (e: Error) => e.message.split('\n').filter((l) => /error|failed/i.test(l)).slice(-3).join(' / '));
        bad(`image ${name} is listed but does not open (${(err as { code?: string }).code}; ${trashed ? `in the trash (${trashed.source})` : 'not in the trash'}; rbd info: ${info}; row: ${row ? row.status : 'none'}; copied from: ${source}${sourceRow ? ` (its row: ${sourceRow})` : ''}; jobs: ${JSON.stringify(jobs)})`);
      }
    }
    report.checked.files = [...images.values()].reduce((n, i) => n + 1 + i.snaps.length, 0);
    const parents = new Set([...images.values()].flatMap((i) => (i.parent ? [i.parent] : [])));
    const live = new Set<string>();
    for (const v of volumes.filter((x) => x.status === 'available' || x.status === 'in-use')) {
      live.add(v.id);
      const img = images.get(`volume-${v.id}`);
      if (!img) bad(`${v.status} volume ${v.id} has no image`);
      else if (img.sizeBytes !== Number(v.size) * GiB) bad(`volume ${v.id} image is ${img.sizeBytes} bytes, not ${v.size} GiB`);
    }
    for (const s of snapshots.filter((x) => x.status === 'available')) {
      if (!images.get(`volume-${s.volume_id}`)?.snaps.includes(`snapshot-${s.id}`)) bad(`available snapshot ${s.id} has no RBD snapshot on volume-${s.volume_id}`);
    }
    const rows = new Set([...volumes.map((v) => v.id), ...snapshots.map((s) => s.id)]);
    for (const [name, img] of images) {
      const m = new RegExp(`^volume-(${UUID})(\\.deleted)?$`).exec(name);
      if (!m) bad(`image ${name} is no volume's`);
      else if (m[2] && !parents.has(name)) bad(`image ${name} was kept for clones it no longer has`);
      else if (!m[2] && !rows.has(m[1]!)) bad(`image ${name} has no row`);
      for (const snap of img.snaps) {
        const n = new RegExp(`^(?:snapshot-(${UUID})|volume-(${UUID})\\.clone_snap)$`).exec(snap);
        if (!n) bad(`snapshot ${name}@${snap} is no snapshot's`);
        else if (n[1] && !rows.has(n[1])) bad(`snapshot ${name}@${snap} has no row`);
        // The clone may be deleted and kept as `.deleted` for clones of its own: it still hangs on this snapshot.
        else if (n[2] && !images.has(`volume-${n[2]}`) && !images.has(`volume-${n[2]}.deleted`)) bad(`clone snapshot ${name}@${snap} outlived its clone`);
      }
    }

    // The hosts' writes, read back from each live volume's image.
    for (const [volumeId, writer] of writers) {
      if (!live.has(volumeId) || writer.acked.length === 0) continue;
      const img = await rbd.openImage(cluster, ceph.pool, `volume-${volumeId}`, null, true);
      const region = Buffer.alloc(HOST_REGION.slots * DRILL_BLOCK_BYTES);
      try {
        await rbd.aioRead(img, HOST_REGION.baseBytes, region);
      } finally {
        await rbd.closeImage(img);
      }
      report.checked.writes += writer.acked.length;
      const at = (offset: number): Buffer => region.subarray(offset - HOST_REGION.baseBytes, offset - HOST_REGION.baseBytes + DRILL_BLOCK_BYTES);
      for (const why of checkBlocks(at, writer.acked, writer.sent)) bad(`volume ${volumeId}: ${why}`);
    }
  } finally {
    await rbd.shutdown(cluster);
  }
}

/**
 * Reports a chaos run through `t` (its seed, counts and evidence) and asserts
 * what every run must show: no invariant broken, no request answered 5xx, at
 * least `operations` operations and five kills.
 */
export function checkChaosReport(t: TestContext, report: ChaosReport, operations: number): void {
  t.diagnostic(`seed ${report.seed}; operations ${JSON.stringify(report.operations)}; outcomes ${JSON.stringify({ ...report.outcomes, serverErrors: report.outcomes.serverErrors.length })}`);
  t.diagnostic(`seconds ${JSON.stringify(report.seconds)}; kills ${JSON.stringify(report.kills)}; checked ${JSON.stringify(report.checked)}; failed copies deleted ${report.deletedFailedCopies}`);
  for (const line of report.evidence) t.diagnostic(`evidence: ${line}`);
  for (const line of report.aborts) t.diagnostic(`aborted by a native library (a process death like the kills): ${line}`);
  assert.deepEqual(report.violations, [], `invariants broken (seed ${report.seed})`);
  assert.deepEqual(report.outcomes.serverErrors, [], 'no request answered 5xx');
  assert.ok(Object.values(report.operations).reduce((a, b) => a + b, 0) >= operations);
  assert.ok(Object.values(report.kills).reduce((a, b) => a + b, 0) >= 5, `processes were killed: ${JSON.stringify(report.kills)}`);
}
