/**
 * Fault injection for a Basalt cluster (issue 5): PostgreSQL, 2 API
 * processes, 1 scheduler and 3 volume services of one cluster sharing a file
 * backend's folder. Clients run a bounded random mix of creates, extends,
 * snapshots, clones, attaches, detaches and deletes while random processes are
 * SIGKILLed and restarted; then every process is brought back, the cluster
 * settles, and the invariants are checked against the database and the files:
 *
 * - no volume or snapshot in a transitional status;
 * - every available / in-use volume's file exists with its size, every
 *   available snapshot's file exists;
 * - no volume or snapshot file without its row, no half-written copy left
 *   (a copy that failed for good leaves its data to its error row: such rows
 *   are deleted first, through the API, and must take it with them);
 * - quota usage equal to what the rows add up to;
 * - no job leased by a dead process.
 *
 * Used by test/postgres/chaos.test.ts and bench/chaos.ts.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startPostgres } from './postgres.ts';
import { spawnBasalt } from './process.ts';

/** How to run. */
export interface ChaosOptions {
  /** Client operations to issue (≥ 500 for the test). */
  operations: number;
  /** `etcd3+http://…`, `file://DIR` or `postgresql` (the database itself). */
  coordination: string;
  /** Clients issuing operations at once. */
  concurrency?: number;
  /** Mean pause between kills, ms. */
  killEveryMs?: number;
  /** Random seed (printed, so that a failing run can be repeated). */
  seed?: number;
  log?: (line: string) => void;
}

/** What one run did and found. */
export interface ChaosReport {
  seed: number;
  operations: Record<string, number>;
  outcomes: { accepted: number; refused: number; serverErrors: string[]; cutOff: number };
  kills: Record<string, number>;
  checked: { volumes: number; snapshots: number; files: number; quotaResources: number; jobs: number; attachments: number };
  violations: string[];
  /** Error rows that held a failed copy's half-written data and were deleted before the checks. */
  deletedFailedCopies: number;
}

const PROJECT = 'chaos';
const HEADERS = { 'X-Auth-Token': `admin:${PROJECT}`, 'Content-Type': 'application/json', 'OpenStack-API-Version': 'volume 3.44' };
const VOLUME_TRANSITIONAL = ['creating', 'extending', 'deleting', 'reverting', 'reserved', 'attaching', 'detaching'];
const SNAPSHOT_TRANSITIONAL = ['creating', 'deleting', 'restoring'];
const OPS = ['create', 'create', 'create', 'extend', 'snapshot', 'snapshot', 'clone', 'clone', 'attach', 'attach', 'detach', 'detach', 'deleteSnapshot', 'delete', 'delete', 'delete'] as const;
type Op = (typeof OPS)[number];

/** A small deterministic PRNG (mulberry32). */
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
  const seed = o.seed ?? Math.floor(Math.random() * 2 ** 31);
  const random = prng(seed);
  const pick = <T>(xs: readonly T[]): T | undefined => xs.length ? xs[Math.floor(random() * xs.length)] : undefined;
  const log = o.log ?? (() => undefined);
  const report: ChaosReport = {
    seed, operations: {}, outcomes: { accepted: 0, refused: 0, serverErrors: [], cutOff: 0 }, kills: {},
    checked: { volumes: 0, snapshots: 0, files: 0, quotaResources: 0, jobs: 0, attachments: 0 }, violations: [], deletedFailedCopies: 0,
  };
  const postgres = await startPostgres();
  const database = await postgres.createDatabase();
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-chaos-'));
  const shared = path.join(stateDir, 'shared');
  const coordination = o.coordination === 'postgresql' ? database : o.coordination;
  const env = {
    BASALT_STATE_DIR: stateDir, BASALT_DATABASE__CONNECTION: database, BASALT_COORDINATION__BACKEND_URL: coordination,
    BASALT_PORT: '0', BASALT_NBD_PORT: '0', BASALT_LOG_LEVEL: 'info',
    BASALT_REPORT_INTERVAL: '0.5', BASALT_SERVICE_DOWN_TIME: '3', BASALT_JOB_LEASE_SECONDS: '4',
    BASALT_JOB_POLL_INTERVAL_SECONDS: '0.2', BASALT_JOB_RETRY_DELAY_SECONDS: '0.1', BASALT_JOB_MAX_ATTEMPTS: '10',
    BASALT_COORDINATION__LOCK_TIMEOUT_SECONDS: '20',
    BASALT_BACKEND_DEFAULTS__CLUSTER: 'c1', BASALT_BACKEND_DEFAULTS__FILE_VOLUME_DIR: shared,
    BASALT_QUOTA_VOLUMES: '10000', BASALT_QUOTA_SNAPSHOTS: '10000', BASALT_QUOTA_GIGABYTES: '100000',
  };
  const members: Member[] = [
    { name: 'api-1', roles: 'api', ready: 'API listening', env: { BASALT_HOST: 'api-1' } },
    { name: 'api-2', roles: 'api', ready: 'API listening', env: { BASALT_HOST: 'api-2' } },
    { name: 'scheduler', roles: 'scheduler', ready: 'scheduler started', env: { BASALT_HOST: 'sched' } },
    ...[0, 1, 2].map((i) => ({ name: `volume-${i}`, roles: 'volume', ready: 'volume service started', env: { BASALT_HOST: `node-${i}` } })),
  ];
  const start = async (m: Member): Promise<void> => {
    const s = await spawnBasalt({ ...env, ...m.env }, m.roles, m.ready);
    s.child.stdout!.resume(); // keep draining its log
    m.child = s.child;
    if (s.url) m.url = s.url;
  };
  const client = new pg.Client({ connectionString: database });
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
          const r = await fetch(`${api.url}/v3/${PROJECT}${p}`, { method, headers: HEADERS, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
          const text = await r.text();
          return { status: r.status, body: text ? JSON.parse(text) : undefined };
        } catch {
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
          if (r?.status === 200) await call('POST', `/attachments/${r.body.attachment.id}/action`, { 'os-complete': null });
          return r;
        }
        case 'detach': {
          const a = pick(((await call('GET', '/attachments'))?.body?.attachments ?? []) as Array<{ id: string }>);
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

    // The killer: a random live process dies every so often and comes back
    // shortly after (several may be down at once; one API always stays up).
    let loading = true;
    const restarts: Array<Promise<void>> = [];
    const killer = (async () => {
      while (loading) {
        await sleep((o.killEveryMs ?? 700) * (0.5 + random()));
        if (!loading) break;
        const victim = pick(members.filter((m) => m.child && (m.roles !== 'api' || apis().length > 1)));
        if (!victim) continue;
        const child = victim.child!;
        delete victim.child;
        child.kill('SIGKILL');
        report.kills[victim.name] = (report.kills[victim.name] ?? 0) + 1;
        log(`killed ${victim.name}`);
        const restart = (async () => {
          await new Promise((r) => child.exitCode === null ? child.once('exit', r) : r(undefined));
          await sleep(200 + random() * 1500);
          // A process that fails to start is a finding; like a supervisor, try again.
          for (let attempt = 1; ; attempt++) {
            try {
              await start(victim);
              return;
            } catch (err) {
              report.violations.push(`restart of ${victim.name} failed: ${(err as Error).message}`);
              if (attempt === 3) throw err;
            }
          }
        })();
        restart.catch(() => undefined); // handled here; Promise.all below still reports it
        restarts.push(restart);
      }
      await Promise.all(restarts);
    })();
    let issued = 0;
    await Promise.all(Array.from({ length: o.concurrency ?? 6 }, async () => {
      while (issued < o.operations) {
        const op = OPS[Math.floor(random() * OPS.length)]!;
        const r = await one(op);
        if (r === 'skip') continue;
        issued++;
        report.operations[op] = (report.operations[op] ?? 0) + 1;
        if (r === undefined) report.outcomes.cutOff++;
        else if (r.status < 400) report.outcomes.accepted++;
        else if (r.status < 500) report.outcomes.refused++;
        else report.outcomes.serverErrors.push(`${op}: ${r.status} ${JSON.stringify((r as { body?: unknown }).body)}`);
      }
    }));
    loading = false;
    await killer;
    log(`load done: ${JSON.stringify(report.operations)}`);

    // Attachments the clients left half-made (their API died between create and complete) are finished, as a client would.
    for (const a of (await client.query(`select id from attachments where attach_status in ('reserved', 'attaching')`)).rows as Array<{ id: string }>) {
      await call('POST', `/attachments/${a.id}/action`, { 'os-complete': null });
    }
    // Settle: every transitional status is left (by the jobs, or by the sweeper failing them).
    const deadline = Date.now() + 120_000;
    for (;;) {
      const busy = (await client.query(`select (select count(*) from volumes where status = any($1)) + (select count(*) from snapshots where status = any($2)) as n`, [VOLUME_TRANSITIONAL, SNAPSHOT_TRANSITIONAL])).rows[0] as { n: string };
      if (Number(busy.n) === 0) break;
      if (Date.now() > deadline) break;
      await sleep(250);
    }
    // A copy that failed for good (its job ran out of attempts, each cut by a kill) leaves its
    // half-written data to its error row, as any failed create does; deleting the row must take it.
    const partials = new Set((fs.existsSync(shared) ? fs.readdirSync(shared) : []).filter((f) => f.endsWith('.partial')).map((f) => f.replace(/^(volume|snapshot)-/, '').replace(/\.partial$/, '')));
    const owners = [
      ...((await client.query(`select id from snapshots where status = 'error'`)).rows as Array<{ id: string }>).filter((r) => partials.has(r.id)).map((r) => `/snapshots/${r.id}`),
      ...((await client.query(`select id from volumes where status = 'error'`)).rows as Array<{ id: string }>).filter((r) => partials.has(r.id)).map((r) => `/volumes/${r.id}`),
    ];
    for (const owner of owners) {
      report.deletedFailedCopies++;
      await call('DELETE', owner);
      for (const until = Date.now() + 60_000; Date.now() < until && (await call('GET', owner))?.status !== 404;) await sleep(250);
    }
    await check(client, shared, env.BASALT_SERVICE_DOWN_TIME, report);
    return report;
  } finally {
    for (const m of members) m.child?.kill('SIGKILL');
    await Promise.all(members.map((m) => m.child && m.child.exitCode === null ? new Promise((r) => m.child!.once('exit', r)) : undefined));
    await client.end().catch(() => undefined);
    await postgres.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
}

async function check(client: pg.Client, shared: string, downSeconds: string, report: ChaosReport): Promise<void> {
  const bad = (msg: string) => report.violations.push(msg);
  const volumes = (await client.query('select id, status, size from volumes')).rows as Array<{ id: string; status: string; size: number }>;
  const snapshots = (await client.query('select id, status, volume_size from snapshots')).rows as Array<{ id: string; status: string; volume_size: number }>;
  report.checked.volumes = volumes.length;
  report.checked.snapshots = snapshots.length;
  for (const v of volumes.filter((x) => VOLUME_TRANSITIONAL.includes(x.status))) bad(`volume ${v.id} is still ${v.status}`);
  for (const s of snapshots.filter((x) => SNAPSHOT_TRANSITIONAL.includes(x.status))) bad(`snapshot ${s.id} is still ${s.status}`);

  const files = fs.existsSync(shared) ? fs.readdirSync(shared) : [];
  report.checked.files = files.length;
  const names = new Set(files);
  for (const v of volumes.filter((x) => x.status === 'available' || x.status === 'in-use')) {
    const f = `volume-${v.id}`;
    if (!names.has(f)) bad(`${v.status} volume ${v.id} has no file`);
    else if (fs.statSync(path.join(shared, f)).size !== Number(v.size) * 1024 ** 3) bad(`volume ${v.id} file is ${fs.statSync(path.join(shared, f)).size} bytes, not ${v.size} GiB`);
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
