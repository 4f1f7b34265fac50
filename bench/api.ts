/**
 * Control-plane benchmark: after a warm-up (W volumes created and deleted),
 * creates N volumes at concurrency C until all are available, lists them M times (detail), deletes them all until the list is
 * empty; prints each phase's wall time and request p50/p99, and the server's
 * RSS (the process and its children).
 *
 * Without --url it starts Basalt itself (all roles, temporary state dir, free
 * port). With --url it measures any Cinder-compatible endpoint, e.g. the real
 * Cinder from ../shared/peers/cinder (pass --pid-dir /tmp/cinder-peer/pids).
 *
 * With `--rounds R` it runs the three phases R times on the same warm server and
 * prints each figure's median over the rounds (and every round's p50s): one
 * round's p50 moves by a third between runs on this noisy machine.
 *
 *   node --import tsx bench/api.ts [--n 100] [--c 10] [--gets 200] [--warmup 20] [--rounds 1] [--url URL --pid-dir DIR] [--no-floor]
 *   node --import tsx bench/api.ts --auth keystone   # noauth, then the same against Debian's Keystone
 *
 * Then (unless --no-floor) the floor under the create p50: the same client, warm-up and
 * concurrency against an empty Fastify route (bench/api-floor.ts).
 *
 * With `--auth keystone` it runs twice in one go: Basalt with noauth, then Basalt with
 * auth_strategy = keystone against a real Keystone (test/helpers/keystone.ts), every request
 * carrying a real token; it prints both and the ratio (the validation cache keeps it small).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '100' },
    c: { type: 'string', default: '10' },
    gets: { type: 'string', default: '200' },
    warmup: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '1' },
    url: { type: 'string' },
    'pid-dir': { type: 'string' },
    project: { type: 'string', default: 'bec0000000000000000000000000000b' },
    label: { type: 'string' },
    auth: { type: 'string', default: 'noauth' },
    floor: { type: 'boolean', default: true },
  },
  allowNegative: true,
});
const N = Number(args.n);
const C = Number(args.c);
const GETS = Number(args.gets);
const WARMUP = Number(args.warmup);
const ROUNDS = Number(args.rounds);
let PROJECT = args.project!;
const HEADERS = { 'X-Auth-Token': `admin:${PROJECT}`, 'Content-Type': 'application/json', 'OpenStack-API-Version': 'volume 3.0' };

/** `pids` and all their descendants. */
function processTree(pids: number[]): Set<number> {
  const children = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch { /* process went away */ }
  }
  const seen = new Set<number>();
  const walk = (p: number): void => {
    if (seen.has(p)) return;
    seen.add(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  pids.forEach(walk);
  return seen;
}

/** CPU seconds (user + system) used so far by `pids` and their descendants: on a noisy machine, steadier than wall time. */
function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const p of processTree(pids)) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of proc(5))
    } catch { /* gone */ }
  }
  return ticks / 100; // USER_HZ
}

/** RSS in MiB of `pids` and all their descendants. */
function rssMiB(pids: number[]): number {
  let kb = 0;
  for (const p of processTree(pids)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) kb += Number(m[1]);
    } catch { /* gone */ }
  }
  return Math.round(kb / 1024);
}

/**
 * The client: node:http over kept-alive connections, one per concurrent caller.
 * Node's fetch (undici) costs about 0.2-0.4 ms of this machine's CPU per request
 * and added 2-3 ms to a p50 at concurrency 10 against a server answering at once
 * (0.4 ms with node:http), so it measured itself more than the server.
 */
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

async function call(url: string, method: string, p: string, body?: unknown): Promise<{ status: number; body: any; ms: number }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const t = performance.now();
  const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = http.request(url + p, { method, headers: HEADERS, agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode!, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
  return { status, body: text ? JSON.parse(text) : undefined, ms: performance.now() - t };
}

/**
 * Every volume a list returns, page by page: a server answers at most its
 * `osapi_max_limit` items (Cinder's default 1000) and links the next page.
 * A page whose marker was deleted meanwhile is a 404 (Cinder's "Marker …
 * could not be found"), as it is while the bench deletes: the list starts over.
 */
async function listAll(url: string, p: string): Promise<Array<{ id: string; status: string }>> {
  let all: Array<{ id: string; status: string }> = [];
  for (let page = p, restarts = 0; ;) {
    const r = await call(url, 'GET', page);
    if (r.status === 404 && page !== p && restarts++ < 100) {
      [all, page] = [[], p];
      continue;
    }
    if (r.status !== 200) throw new Error(`list answered ${r.status}: ${JSON.stringify(r.body)}`);
    const body = r.body as { volumes: Array<{ id: string; status: string }>; volumes_links?: Array<{ rel: string; href: string }> };
    all.push(...body.volumes);
    const next = body.volumes_links?.find((l) => l.rel === 'next')?.href;
    if (!next || body.volumes.length === 0) return all;
    const u = new URL(next);
    page = u.pathname + u.search;
  }
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! * 10) / 10 : 0;
}

async function pool<T>(items: T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (i < items.length) await fn(items[i++]!);
  }));
}

/** Servers this run started and has not stopped: a failed run stops them before it exits. */
const running = new Set<() => Promise<void>>();

/**
 * Starts `node args` and resolves once a JSON line of its stdout has a `url` (and, if given,
 * `msg` equal to `ready`): its URL, pid and `stop` (SIGTERM, then `cleanUp` once it exited).
 * A failed run stops it before it exits (`running`).
 */
async function startServer(args: string[], o: { env?: NodeJS.ProcessEnv; ready?: string; cleanUp?: () => void } = {}): Promise<{ url: string; pids: number[]; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, args, { env: o.env ?? process.env, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const stop = async (): Promise<void> => {
    running.delete(stop);
    child.kill('SIGTERM');
    await exited;
    o.cleanUp?.();
  };
  running.add(stop);
  const url = await new Promise<string>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const e = JSON.parse(line) as { msg?: string; url?: string };
        if (e.url && (o.ready === undefined || e.msg === o.ready)) resolve(e.url);
      } catch { /* not a log line */ }
    });
    child.once('exit', (code) => reject(new Error(`${args.at(-1)} exited with ${code}`)));
  });
  child.stdout!.resume();
  return { url, pids: [child.pid!], stop };
}

/** Basalt with every role, a temporary state directory (removed once it has exited: it writes there until then) and free ports. */
async function startBasalt(env: Record<string, string> = {}): Promise<{ url: string; pids: number[]; stop: () => Promise<void> }> {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-bench-'));
  return startServer([path.resolve(import.meta.dirname, '../bin/basalt.js'), 'server'], {
    env: { ...process.env, BASALT_STATE_DIR: stateDir, BASALT_PORT: '0', BASALT_NBD_PORT: '0', BASALT_LOG_LEVEL: 'info', ...env },
    ready: 'API listening',
    cleanUp: () => fs.rmSync(stateDir, { recursive: true, force: true }),
  });
}

/** The middle value (the upper one of an even count), unrounded. */
const middle = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function measure(label: string, env?: Record<string, string>): Promise<Record<string, unknown>> {
  let url = args.url;
  let pids: number[] = [];
  let stop = async (): Promise<void> => undefined;
  if (!url || env) {
    const b = await startBasalt(env);
    ({ url, pids, stop } = b);
  } else if (args['pid-dir']) {
    pids = fs.readdirSync(args['pid-dir']).filter((f) => f.endsWith('.pid'))
      .map((f) => Number(fs.readFileSync(path.join(args['pid-dir']!, f), 'utf8').trim()));
  }
  const V = `/v3/${PROJECT}`;
  const rssIdle = rssMiB(pids);
  let rssPeak = rssIdle;
  const sample = setInterval(() => { rssPeak = Math.max(rssPeak, rssMiB(pids)); }, 250);

  // Lift the project's quotas where the server has quota sets (Cinder's default is 10 volumes).
  await call(url, 'PUT', `${V}/os-quota-sets/${PROJECT}`, { quota_set: { volumes: -1, gigabytes: -1, snapshots: -1 } });

  /** Creates `n` at concurrency C until all are available (or in error); their ids, POST times and errors. */
  const createAll = async (n: number, tag: string): Promise<{ ids: string[]; ms: number[]; errors: number }> => {
    const ms: number[] = [];
    const ids: string[] = [];
    await pool(Array.from({ length: n }, (_, i) => i), C, async (i) => {
      const r = await call(url!, 'POST', `${V}/volumes`, { volume: { size: 1, name: `${tag}-${i}` } });
      if (r.status !== 202) throw new Error(`create answered ${r.status}: ${JSON.stringify(r.body)}`);
      ms.push(r.ms);
      ids.push(r.body.volume.id);
    });
    for (;;) {
      const mine = new Set(ids);
      const vs = (await listAll(url!, `${V}/volumes/detail`)).filter((v) => mine.has(v.id));
      const errors = vs.filter((v) => v.status.startsWith('error')).length;
      if (vs.filter((v) => v.status === 'available').length + errors >= n) return { ids, ms, errors };
      await new Promise((res) => setTimeout(res, 50));
    }
  };
  /** Deletes `ids` at concurrency C until none is listed; the DELETE times. */
  const deleteAll = async (ids: string[]): Promise<number[]> => {
    const ms: number[] = [];
    await pool(ids, C, async (id) => {
      const r = await call(url!, 'DELETE', `${V}/volumes/${id}`);
      if (r.status !== 202) throw new Error(`delete answered ${r.status}`);
      ms.push(r.ms);
    });
    for (;;) {
      const mine = new Set(ids);
      if (!(await listAll(url!, `${V}/volumes`)).some((v) => mine.has(v.id))) return ms;
      await new Promise((res) => setTimeout(res, 50));
    }
  };

  // Warm-up, the same for every endpoint: a server that just started is still
  // loading and compiling code its first requests need; measure what it does after.
  if (WARMUP > 0) await deleteAll((await createAll(WARMUP, 'warmup')).ids);

  /** One round of the three phases. */
  const round = async () => {
    // Phase 1: create N at concurrency C, until all available.
    const t1 = performance.now();
    const cpu1 = cpuSeconds(pids);
    const { ids, ms: createMs, errors } = await createAll(N, 'bench');
    const createPhase = performance.now() - t1;
    const createCpu = cpuSeconds(pids) - cpu1;

    // Phase 2: M sequential detail lists.
    const listMs: number[] = [];
    const t2 = performance.now();
    for (let i = 0; i < GETS; i++) listMs.push((await call(url!, 'GET', `${V}/volumes/detail`)).ms);
    const listPhase = performance.now() - t2;

    // Phase 3: delete all at concurrency C, until the list is empty.
    const t3 = performance.now();
    const deleteMs = await deleteAll(ids);
    const deletePhase = performance.now() - t3;
    return {
      errors,
      create: { total_s: +(createPhase / 1000).toFixed(2), p50_ms: pct(createMs, 50), p99_ms: pct(createMs, 99), cpu_s: +createCpu.toFixed(2) },
      list_detail: { total_s: +(listPhase / 1000).toFixed(2), p50_ms: pct(listMs, 50), p99_ms: pct(listMs, 99) },
      delete: { total_s: +(deletePhase / 1000).toFixed(2), p50_ms: pct(deleteMs, 50), p99_ms: pct(deleteMs, 99) },
      end_to_end_s: +((createPhase + listPhase + deletePhase) / 1000).toFixed(2),
    };
  };
  const rounds: Array<Awaited<ReturnType<typeof round>>> = [];
  for (let r = 0; r < ROUNDS; r++) rounds.push(await round());
  clearInterval(sample);
  rssPeak = Math.max(rssPeak, rssMiB(pids));

  /** The median over the rounds of each figure of a phase. */
  const median = <K extends 'create' | 'list_detail' | 'delete'>(phase: K): Record<string, number> => Object.fromEntries(
    Object.keys(rounds[0]![phase]).map((k) => [k, middle(rounds.map((r) => (r[phase] as Record<string, number>)[k]!))]));
  const result = {
    label,
    n: N, concurrency: C, gets: GETS, warmup: WARMUP, rounds: ROUNDS, errors: rounds.reduce((a, r) => a + r.errors, 0),
    create: median('create'),
    list_detail: median('list_detail'),
    delete: median('delete'),
    end_to_end_s: middle(rounds.map((r) => r.end_to_end_s)),
    ...(ROUNDS > 1 ? { create_p50s_ms: rounds.map((r) => r.create.p50_ms), create_totals_s: rounds.map((r) => r.create.total_s) } : {}),
    rss_mib: { idle: rssIdle, peak: rssPeak },
  };
  await stop();
  return result;
}

/**
 * The same client, warm-up and concurrency against an empty Fastify route
 * (bench/api-floor.ts): the create p50 any Node HTTP server gets here, which
 * Basalt's cannot go below (the client shares the machine's two vCPUs).
 */
async function floor(): Promise<Record<string, unknown>> {
  const { url, stop } = await startServer(['--import', 'tsx', path.join(import.meta.dirname, 'api-floor.ts')]);
  const posts = async (n: number): Promise<number[]> => {
    const ms: number[] = [];
    await pool(Array.from({ length: n }, (_, i) => i), C, async (i) => {
      const r = await call(url, 'POST', `/v3/${PROJECT}/volumes`, { volume: { size: 1, name: `floor-${i}` } });
      if (r.status !== 202) throw new Error(`the floor's route answered ${r.status}`);
      ms.push(r.ms);
    });
    return ms;
  };
  if (WARMUP > 0) await posts(WARMUP);
  const p50s: number[] = [];
  for (let r = 0; r < ROUNDS; r++) p50s.push(pct(await posts(N), 50));
  await stop();
  return { label: 'floor: empty Fastify route, same client', n: N, concurrency: C, warmup: WARMUP, create_p50_ms: middle(p50s), ...(ROUNDS > 1 ? { create_p50s_ms: p50s } : {}) };
}

async function main(): Promise<void> {
  if (args.auth !== 'keystone') {
    console.log(JSON.stringify(await measure(args.label ?? (args.url ? args.url : 'basalt')), null, 2));
    if (args.floor) console.log(JSON.stringify(await floor(), null, 2));
    return;
  }
  const plain = await measure('basalt noauth');
  console.log(JSON.stringify(plain, null, 2));
  const { startKeystone } = await import('../test/helpers/keystone.ts');
  const { freePort } = await import('../test/helpers/net.ts');
  const keystone = await startKeystone();
  try {
    const port = await freePort();
    const cloud = await keystone.cloud(`http://127.0.0.1:${port}`);
    PROJECT = cloud.adminProject.id;
    HEADERS['X-Auth-Token'] = await cloud.token('admin', 'admin');
    const withKeystone = await measure('basalt keystone', {
      BASALT_PORT: String(port), BASALT_AUTH_STRATEGY: 'keystone', BASALT_KEYSTONE_AUTHTOKEN__AUTH_URL: keystone.url,
      BASALT_KEYSTONE_AUTHTOKEN__USERNAME: cloud.service.user, BASALT_KEYSTONE_AUTHTOKEN__PASSWORD: cloud.service.password,
    });
    console.log(JSON.stringify(withKeystone, null, 2));
    const e2e = (r: Record<string, unknown>) => r.end_to_end_s as number;
    console.log(JSON.stringify({ keystone_over_noauth_end_to_end: +(e2e(withKeystone) / e2e(plain)).toFixed(2) }));
  } finally {
    await keystone.stop();
  }
}

main().catch(async (err) => {
  console.error(err);
  for (const stop of [...running]) await stop();
  process.exit(1);
});
