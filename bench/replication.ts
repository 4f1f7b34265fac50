/**
 * Replication drill as a benchmark (issue 16 part 6): two Basalt processes on
 * one PostgreSQL (the drill test's setup, test/postgres/replication-drill.test.ts),
 * their state directories on an XFS reflink image; alpha's backend replicates
 * to beta's. Prints:
 *
 * 1. 4k random writes through the attachment's export with fio's nbd engine
 *    (as bench/nbd.ts drives it) on a synchronously replicated volume against
 *    an unreplicated one on the same backend, at QD1 and QD32: IOPS and mean
 *    completion latency, the two volumes taking turns round after round,
 *    medians, and the ratio (the issue's goal: sync ≤ 1.3× the latency at QD1),
 *    with the floor this machine puts under that ratio: a 4 KiB write's round
 *    trip to another process and back (bench/roundtrip.c);
 * 2. the RPO an asynchronous volume achieves under write load (fio at QD4):
 *    the age of its last point, sampled every 100 ms, median and max, against
 *    the configured RPO;
 * 3. the drill: the drill writer (test/helpers/drill-writer.ts) on a sync and
 *    an async volume, alpha's process SIGKILLed and its state directory renamed
 *    away, failover through beta's API; the time from the failover request
 *    until each client writes again through its attachment's new connection
 *    info, the async RPO at the kill, the writes checked on beta; then more
 *    writes, alpha back, failback, and per volume the bytes shipped to alpha
 *    (beta's log) against the bytes changed while failed over;
 * 4. the same for an rbd backend replicating through Ceph's rbd-mirror, on two
 *    Ceph clusters (test/helpers/ceph-pair.ts), one Basalt whose attachments go
 *    through its NBD export (`rbd_connection = nbd`): the RPO achieved under
 *    write load (fio at QD4), as the age of the newest point the secondary
 *    holds in full (the primary's mirror snapshot its newest complete copy
 *    was made from; Ceph's timestamps are whole seconds), and the backend's
 *    failover (`os-services/failover_host`) and failback: the time from the
 *    request until fio writes again through the attachment, and until the
 *    backend reports it done.
 *
 *   flock /tmp/basalt-bench.lock node --import tsx bench/replication.ts [--runtime 3] [--rounds 3] [--rpo 2] [--only file|rbd] [--hosts one|two] [--latency-only]
 *
 * `--latency-only` stops after the first table (the file backend's sync
 * against unreplicated latency), for tuning the synchronous write path.
 *
 * `--hosts two` gives the two processes the host names of two machines, so
 * that the primary reaches the secondary's export over TCP with TLS-PSK, as
 * between machines; by default they share this machine's, and each reaches
 * the other through its Unix socket (no TLS, the native data plane).
 *
 * Needs root (the XFS loop mount), fio with its nbd engine, and PostgreSQL's
 * binaries (test/helpers/postgres.ts); the rbd rows Ceph (scripts/install-test-tools.sh).
 * Everything it starts is stopped by pid.
 */
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs, promisify } from 'node:util';
import { fileOf } from '../test/helpers/backends.ts';
import { checkCopy, DRILL_BLOCK_BYTES, DrillWriter, type NbdConnectionData } from '../test/helpers/drill-writer.ts';
import { startCephPair, type CephPair } from '../test/helpers/ceph-pair.ts';
import { startPostgres } from '../test/helpers/postgres.ts';
import { kill9, spawnBasalt, type Spawned } from '../test/helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, waitFor } from '../test/helpers/server.ts';
import { replicatingPair } from '../test/helpers/two-processes.ts';
import { xfsReflinkMount } from '../test/helpers/xfs.ts';

const { values: args } = parseArgs({ options: {
  runtime: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' }, rpo: { type: 'string', default: '2' }, only: { type: 'string', default: '' },
  hosts: { type: 'string', default: 'one' },
  'latency-only': { type: 'boolean', default: false },
} });
if (!['one', 'two'].includes(args.hosts)) throw new Error('--hosts is one (the two processes share a host name: each reaches the other through its Unix socket) or two (TCP with TLS-PSK, as between machines)');
const RUNTIME = Number(args.runtime);
const ROUNDS = Number(args.rounds);
const RPO_SECONDS = Number(args.rpo);
const V = `/v3/${PROJECT}`;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };
const CONNECTOR = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.bench', mode: 'rw' };
const MiB = 1024 ** 2;
const run = promisify(execFile);

interface FioRow { iops: number; latUs: number }

/**
 * Prints the floor under the sync row on this machine (bench/roundtrip.c): a
 * 4 KiB write's round trip to another process and back, with nothing done on
 * either side. A synchronous replica's write is an unreplicated one plus at
 * least that, whatever the server does, so `(plain + round trip) / plain` is
 * the best latency ratio this machine allows.
 */
function floorOfSync(plainUs: number): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-roundtrip-'));
  try {
    const bin = path.join(dir, 'roundtrip');
    execFileSync('cc', ['-O2', '-o', bin, path.join(import.meta.dirname, 'roundtrip.c')]);
    const f = JSON.parse(execFileSync(bin).toString()) as Record<string, number>;
    const best = (rt: number): string => ((plainUs + rt) / plainUs).toFixed(2);
    console.log(`cross-process round trip of a 4 KiB write (bench/roundtrip.c): blocking p50 ${f.blocking_p50_us} µs, both sides polling ${f.polling_p50_us} µs;`
      + ` so a sync write is at best ${best(f.blocking_p50_us!)}× (${best(f.polling_p50_us!)}× polling) the ${plainUs} µs of an unreplicated one here`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
/** One fio run of `rw` at `qd` against an NBD URI: IOPS and mean completion latency. */
async function fio(uri: string, qd: number, seconds = RUNTIME): Promise<FioRow> {
  const { stdout: out } = await run('fio', ['--name=r', '--output-format=json', '--time_based', `--runtime=${seconds}`, '--ioengine=nbd', `--uri=${uri}`,
    '--size=256M', '--rw=randwrite', '--bs=4k', `--iodepth=${qd}`], { maxBuffer: 64 * MiB });
  const w = JSON.parse(out.slice(out.indexOf('{'))).jobs[0].write;
  return { iops: Math.round(w.iops), latUs: Math.round(w.clat_ns.mean / 1000) };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Bytes each volume shipped by a process's log ('replication point shipped', 'synchronous mirror in step'). */
function shipLog(p: Spawned): Map<string, number> {
  const bytes = new Map<string, number>();
  readline.createInterface({ input: p.child.stdout! }).on('line', (line) => {
    try {
      const e = JSON.parse(line) as { msg?: string; bytes?: number; volume_id?: string };
      if ((e.msg === 'replication point shipped' || e.msg === 'synchronous mirror in step') && e.volume_id && typeof e.bytes === 'number') {
        bytes.set(e.volume_id, (bytes.get(e.volume_id) ?? 0) + e.bytes);
      }
    } catch { /* not a log line */ }
  });
  return bytes;
}

async function main(): Promise<void> {
  const load = [os.loadavg()[0]!];
  const pg = await startPostgres();
  const xfs = xfsReflinkMount(8);
  const procs: ChildProcess[] = [];
  try {
    const database = await pg.createDatabase();
    const common = { ...FAST_TIMINGS, BASALT_DATABASE__CONNECTION: database, BASALT_PORT: '0', BASALT_NBD_PORT: '0', BASALT_LOG_LEVEL: 'info' };
    const pair = await replicatingPair(common, procs, xfs.dir, args.hosts === 'two' ? { hosts: ['node-a', 'node-b'] } : {});
    const { stateA, stateB, b, startAlpha } = pair;
    let { a } = pair;
    const shipped = shipLog(b);
    const onA = (method: string, url: string, body?: unknown, h?: Record<string, string>) => request(a.url!, method, url, body, h);
    const onB = (method: string, url: string, body?: unknown, h?: Record<string, string>) => request(b.url!, method, url, body, h);

    const types: Record<string, Record<string, string>> = {
      plain: { volume_backend_name: 'alpha' },
      sync: { replication_enabled: '<is> True', 'basalt:replication_mode': 'sync' },
      async: { replication_enabled: '<is> True', 'basalt:replication_mode': 'async', 'basalt:replication_rpo_seconds': String(RPO_SECONDS) },
    };
    const ids: Record<string, string> = {};
    const conn: Record<string, NbdConnectionData & { uri: string }> = {};
    const attachments: Record<string, string> = {};
    for (const [name, extra_specs] of Object.entries(types)) {
      const t = await onA('POST', `${V}/types`, { volume_type: { name, extra_specs } });
      if (t.status !== 200) throw new Error(JSON.stringify(t.body));
    }
    // `load` is the async volume written under load for the RPO row; the drill's async volume gets only the drill's writes.
    for (const [name, type] of Object.entries({ plain: 'plain', sync: 'sync', async: 'async', load: 'async' })) {
      const v = await onA('POST', `${V}/volumes`, { volume: { size: 1, volume_type: type } });
      ids[name] = v.body.volume.id as string;
    }
    for (const [name, id] of Object.entries(ids)) {
      await waitFor(`${name} ready`, async () => {
        const v = (await onA('GET', `${V}/volumes/${id}`)).body.volume;
        return v.status === 'available' && (name === 'plain' || v.replication_status === 'enabled');
      }, 120_000);
      const att = await waitFor(`${name} attached`, async () => {
        const r = await onA('POST', `${V}/attachments`, { attachment: { volume_uuid: id, connector: CONNECTOR } }, MV);
        return r.status === 200 ? r.body.attachment : undefined;
      });
      await onA('POST', `${V}/attachments/${att.id}/action`, { 'os-complete': null }, MV);
      attachments[name] = att.id as string;
      conn[name] = att.connection_info.data;
    }
    // The export serves a synchronous volume once its mirror is in step: wait until fio gets through.
    await waitFor('the sync export', async () => { try { await fio(conn.sync!.uri, 1, 1); return true; } catch { return false; } });

    // 1. Write latency and IOPS, sync against unreplicated, alternating.
    const rows: Array<Record<string, unknown>> = [];
    for (const qd of [1, 32]) {
      const runs: Record<string, FioRow[]> = { plain: [], sync: [] };
      for (let i = 0; i < ROUNDS; i++) for (const name of i % 2 ? ['sync', 'plain'] : ['plain', 'sync']) runs[name]!.push(await fio(conn[name]!.uri, qd));
      const m = (name: string, k: keyof FioRow): number => median(runs[name]!.map((r) => r[k]));
      rows.push({
        job: `4k randwrite QD${qd}`, plain_iops: m('plain', 'iops'), sync_iops: m('sync', 'iops'), plain_lat_us: m('plain', 'latUs'), sync_lat_us: m('sync', 'latUs'),
        latency_ratio: +(m('sync', 'latUs') / m('plain', 'latUs')).toFixed(2),
      });
    }
    console.table(rows);
    floorOfSync(rows[0]!.plain_lat_us as number);
    load.push(os.loadavg()[0]!);
    if (args['latency-only']) return;

    // 2. The async volume's RPO under write load: the age of its last point, sampled while fio writes,
    // and where each point's time went (alpha's log: snapshot with the writes held, the driver's changes,
    // the temporary volume and the connection, the copy, the secondary's flush, the commit).
    const steps: Array<Record<string, number>> = [];
    const failures = new Map<string, number>();
    const pointLog = readline.createInterface({ input: a.child.stdout! });
    pointLog.on('line', (line) => {
      try {
        const e = JSON.parse(line) as { msg?: string; volume_id?: string; bytes?: number; ms?: Record<string, number>; err?: { message?: string } };
        if (e.volume_id !== ids.load) return;
        if (e.msg === 'replication point shipped' && e.ms) steps.push({ ...e.ms, MiB: +((e.bytes ?? 0) / MiB).toFixed(1) });
        else if (e.msg === 'replication point not shipped') failures.set(e.err?.message ?? '?', (failures.get(e.err?.message ?? '?') ?? 0) + 1);
      } catch { /* not a log line */ }
    });
    const ages: number[] = [];
    const sampler = setInterval(() => {
      void onA('GET', `${V}/volumes/${ids.load}/replication`).then((r) => {
        const at = r.body.replication?.last_point_at as string | undefined;
        if (at) ages.push(Date.now() - Date.parse(`${at}Z`));
      });
    }, 100);
    const underLoad = await fio(conn.load!.uri, 4, RUNTIME * 3);
    clearInterval(sampler);
    // The point under way when the writes stopped says what a point under load costs: wait for it (bounded).
    const shippedUnderLoad = steps.length;
    await waitFor('the point under way', async () => steps.length > shippedUnderLoad, 60_000).catch(() => undefined);
    pointLog.close();
    console.log(`async RPO under load (fio 4k randwrite QD4, ${underLoad.iops} IOPS): last point age median ${median(ages)} ms, max ${Math.max(...ages)} ms, configured ${RPO_SECONDS * 1000} ms (${ages.length} samples)`);
    const keys = [...new Set(steps.flatMap((x) => Object.keys(x)))];
    console.log(`its ${shippedUnderLoad} points during the writes and the next (${steps.length} in all), median per step (ms; MiB shipped): ${keys.map((k) => `${k} ${median(steps.map((x) => x[k] ?? 0))}`).join(', ')}; the last: ${JSON.stringify(steps.at(-1) ?? {})}`);
    if (failures.size > 0) console.log(`points not shipped: ${[...failures].map(([m, n]) => `${n}× ${m}`).join('; ')}`);

    // 3. The drill on the sync and async volumes together.
    const writers = { sync: new DrillWriter(), async: new DrillWriter() };
    const phase1 = { baseBytes: 512 * MiB, slots: 64 };
    const phase2 = { baseBytes: 600 * MiB, slots: 32 };
    const running = Object.entries(writers).map(([name, w]) => w.run(conn[name]!, phase1));
    await new Promise((r) => setTimeout(r, 1500));
    const alphaHost = ((await onB('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string }>).find((s) => s.host.endsWith('@alpha'))!.host;
    const killedAt = Date.now();
    await kill9(a.child);
    fs.renameSync(stateA, `${stateA}.gone`);
    await Promise.all(running);
    const sent1 = { sync: writers.sync.sent, async: writers.async.sent };
    const failoverAt = Date.now();
    const fo = await onB('PUT', `${V}/os-services/failover_host`, { host: alphaHost, backend_id: 'beta' });
    if (fo.status !== 202) throw new Error(JSON.stringify(fo.body));
    const writable: Record<string, number> = {};
    await Promise.all(Object.entries(writers).map(async ([name, w]) => {
      const before = conn[name]!;
      const after = await waitFor(`${name}: connection info naming beta`, async () => {
        const x = (await onB('GET', `${V}/attachments/${attachments[name]}`, undefined, MV)).body.attachment?.connection_info?.data as NbdConnectionData | undefined;
        return x && `${x.host}:${x.port}` !== `${before.host}:${before.port}` && x;
      });
      const n = w.acked.length;
      await waitFor(`${name}: a write on beta`, async () => { await w.run(after, phase2, 1); return w.acked.length > n; });
      writable[name] = Date.now() - failoverAt;
      conn[name] = { ...after, uri: '' };
    }));
    const events = await fetch(`${b.url}/v3/${PROJECT}/events/stream?timeout=0&last_event_id=0`, { headers: { 'X-Auth-Token': `admin:${PROJECT}`, 'OpenStack-API-Experimental': 'true' } }).then((r) => r.text());
    const failoverEvent = events.split('\n\n').map((f) => f.split('\n').find((l) => l.startsWith('data:'))?.slice(5)).filter((d): d is string => !!d).map((d) => JSON.parse(d))
      .find((e) => e.event === 'volume.failover' && e.resource_id === ids.async);
    const lastPointAt = Date.parse(failoverEvent?.detail?.last_point_at);
    const lost = {
      sync: checkCopy(fileOf(stateB, 'beta', ids.sync!), writers.sync.acked.filter((x) => x.seq <= sent1.sync), sent1.sync).length,
      async: checkCopy(fileOf(stateB, 'beta', ids.async!), writers.async.acked.filter((x) => x.seq <= sent1.async && x.ackedAtMs < lastPointAt), sent1.async).length,
    };
    console.log(`failover: request to client writing again: sync ${writable.sync} ms, async ${writable.async} ms; async RPO at the kill ${killedAt - lastPointAt} ms (configured ${RPO_SECONDS * 1000}); acknowledged writes missing on beta: sync ${lost.sync}, async ${lost.async} (of those counted)`);

    // More writes while failed over, then alpha back and the failback.
    for (const [name, w] of Object.entries(writers)) await w.run(conn[name]!, phase2, 200);
    const changed = Object.fromEntries(Object.entries(writers).map(([name, w]) => [name, new Set(w.acked.filter((x) => x.seq > sent1[name as 'sync']).map((x) => x.offset)).size * DRILL_BLOCK_BYTES]));
    const before = { sync: shipped.get(ids.sync!) ?? 0, async: shipped.get(ids.async!) ?? 0 };
    fs.renameSync(`${stateA}.gone`, stateA);
    a = await startAlpha();
    for (const name of ['sync', 'async']) {
      await waitFor(`${name}: alpha in step`, async () => {
        const x = (await onB('GET', `${V}/volumes/${ids[name]}/replication`)).body.replication;
        return x.state === 'enabled' && /@alpha/.test(x.secondary?.cluster ?? '');
      }, 120_000);
    }
    const backAt = Date.now();
    await onB('PUT', `${V}/os-services/failover_host`, { host: alphaHost, backend_id: 'default' });
    for (const name of ['sync', 'async']) {
      await waitFor(`${name}: failed back`, async () => /@alpha#/.test((await onB('GET', `${V}/volumes/${ids[name]}`)).body.volume['os-vol-host-attr:host']), 120_000);
    }
    const backMs = Date.now() - backAt;
    const allocated = ['sync', 'async'].map((name) => [name, Number(execFileSync('du', ['-B1', fileOf(stateA, 'alpha', ids[name]!)]).toString().split('\t')[0])] as const);
    for (const [name, alloc] of allocated) {
      console.log(`failback ${name}: shipped ${(((shipped.get(ids[name]!) ?? 0) - before[name as 'sync']) / MiB).toFixed(1)} MiB to alpha for ${changed[name]! / MiB} MiB changed while failed over (the volume holds ${(alloc / MiB).toFixed(0)} MiB)`);
    }
    console.log(`failback request to both volumes back on alpha: ${backMs} ms`);
    load.push(os.loadavg()[0]!);
    console.log(`load average (1 min) before, after the fio rows, at the end: ${load.map((x) => x.toFixed(2)).join(', ')}; ${os.cpus().length} CPUs`);
  } finally {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) await kill9(p);
    await pg.stop();
    xfs.remove();
  }
}

/** Mirror snapshots of an image on one cluster (`rbd snap ls --all`), oldest first. */
async function mirrorSnaps(c: CephPair['primary'], pool: string, image: string): Promise<Array<{ id: number; at: number; copyOf?: number; complete?: boolean }>> {
  const all = JSON.parse(await c.rbd('snap', 'ls', '--all', '--format', 'json', `${pool}/${image}`)) as Array<{
    id: number; timestamp: string; namespace?: { type?: string; state?: string; complete?: boolean; primary_snap_id?: number };
  }>;
  return all.filter((x) => x.namespace?.type === 'mirror').sort((x, y) => x.id - y.id).map((x) => ({
    id: x.id, at: Date.parse(x.timestamp),
    ...(x.namespace?.state === 'non-primary' ? { copyOf: x.namespace.primary_snap_id!, complete: x.namespace.complete === true } : {}),
  }));
}

/** 4. The rbd-mirror rows (see the module comment). */
async function rbdRows(): Promise<void> {
  const load = [os.loadavg()[0]!];
  const pair = await startCephPair();
  const procs: ChildProcess[] = [];
  const dir = fs.mkdtempSync(`${os.tmpdir()}/basalt-bench-rbd-`);
  const stop = async (): Promise<void> => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) await kill9(p);
    await pair.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  // A bounded run (`timeout`) that ends it still stops the clusters and the server it started.
  const onSignal = (): void => { void stop().finally(() => process.exit(1)); };
  process.once('SIGTERM', onSignal);
  try {
    const { primary: a, secondary: b } = pair;
    const pool = await pair.newPool();
    const ini = `${dir}/basalt.conf`;
    fs.writeFileSync(ini, [
      '[DEFAULT]', 'enabled_backends = ceph',
      '[ceph]', 'volume_driver = rbd', 'rbd_connection = nbd', `rbd_pool = ${pool}`, `rbd_user = ${a.user}`, `rbd_ceph_conf = ${a.confPath}`, `rbd_keyring_conf = ${a.keyringPath}`,
      `replication_device = backend_id:site-b, conf:${b.confPath}, user:${b.user}, keyring:${b.keyringPath}`,
    ].join('\n'));
    fs.mkdirSync(`${dir}/state`);
    const s = await spawnBasalt({ ...FAST_TIMINGS, BASALT_STATE_DIR: `${dir}/state`, BASALT_CONFIG: ini, BASALT_PORT: '0', BASALT_NBD_PORT: '0', BASALT_LOG_LEVEL: 'info' });
    procs.push(s.child);
    const on = (method: string, url: string, body?: unknown, h?: Record<string, string>) => request(s.url!, method, url, body, h);
    const t = await on('POST', `${V}/types`, { volume_type: { name: 'mirrored', extra_specs: { replication_enabled: '<is> True', 'basalt:replication_rpo_seconds': String(RPO_SECONDS) } } });
    if (t.status !== 200) throw new Error(JSON.stringify(t.body));
    const id = (await on('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'mirrored' } })).body.volume.id as string;
    const image = `volume-${id}`;
    await waitFor('the volume mirrored', async () => (await on('GET', `${V}/volumes/${id}`)).body.volume.replication_status === 'enabled', 180_000);
    const att = await waitFor('attached', async () => {
      const r = await on('POST', `${V}/attachments`, { attachment: { volume_uuid: id, connector: CONNECTOR } }, MV);
      return r.status === 200 ? r.body.attachment : undefined;
    });
    await on('POST', `${V}/attachments/${att.id}/action`, { 'os-complete': null }, MV);
    const uri = () => on('GET', `${V}/attachments/${att.id}`, undefined, MV).then((r) => r.body.attachment.connection_info.data.uri as string);

    // RPO under load: the primary's mirror snapshots are noted as they appear (rbd-mirror prunes old ones),
    // and each sample looks up the one the secondary's newest complete copy was made from.
    const pointAt = new Map<number, number>();
    const ages: number[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const mine = await mirrorSnaps(a, pool, image).catch(() => []);
        for (const x of mine) if (x.copyOf === undefined) pointAt.set(x.id, x.at);
        const copy = (await mirrorSnaps(b, pool, image).catch(() => [])).filter((x) => x.complete).at(-1);
        const at = copy ? pointAt.get(copy.copyOf!) : undefined;
        if (at !== undefined) ages.push(Date.now() - at);
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    const underLoad = await fio(await uri(), 4, RUNTIME * 5);
    sampling = false;
    await sampler;
    load.push(os.loadavg()[0]!);
    console.log(`rbd-mirror RPO under load (fio 4k randwrite QD4 through the export, ${underLoad.iops} IOPS, ${RUNTIME * 5} s): newest point on the secondary aged median ${median(ages)} ms, max ${Math.max(...ages)} ms (whole-second timestamps), configured ${RPO_SECONDS * 1000} ms (${ages.length} samples, ${pointAt.size} points seen)`);

    // Failover and failback of the backend, each timed until fio writes again through the attachment.
    const host = ((await on('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string }>).find((x) => x.host.endsWith('@ceph'))!.host;
    const service = async () => ((await on('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string; replication_status: string }>).find((x) => x.host === host)!;
    const move = async (backendId: string, done: string): Promise<{ writableMs: number; doneMs: number }> => {
      const at = Date.now();
      const r = await on('PUT', `${V}/os-services/failover_host`, { host, backend_id: backendId });
      if (r.status !== 202) throw new Error(JSON.stringify(r.body));
      let doneMs = 0;
      const reported = waitFor(`${backendId}: ${done}`, async () => (await service()).replication_status === done, 300_000).then(() => { doneMs = Date.now() - at; });
      await waitFor(`${backendId}: a write through the export`, async () => { try { await fio(await uri(), 1, 1); return true; } catch { return false; } }, 300_000);
      const writableMs = Date.now() - at;
      await reported;
      return { writableMs, doneMs };
    };
    const over = await move('site-b', 'failed-over');
    await fio(await uri(), 4, RUNTIME); // writes while failed over, for the failback to bring home
    const back = await move('default', 'enabled');
    load.push(os.loadavg()[0]!);
    console.log(`rbd-mirror failover (failover_host to site-b, orderly): fio writing again after ${over.writableMs} ms, reported failed-over after ${over.doneMs} ms`);
    console.log(`rbd-mirror failback (default): fio writing again after ${back.writableMs} ms, reported enabled after ${back.doneMs} ms`);
    console.log(`load average (1 min) before the rbd rows, after the RPO row, at the end: ${load.map((x) => x.toFixed(2)).join(', ')}; ${os.cpus().length} CPUs`);
  } finally {
    process.off('SIGTERM', onSignal);
    await stop();
  }
}

if (args.only !== 'rbd') await main();
if (args.only !== 'file') await rbdRows();
