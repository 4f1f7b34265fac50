/**
 * Cinder's own backup service as the peer of bench/backup.ts (issue 15, part
 * 6): the same volume shape — a 4 GiB volume holding 1 GiB in 64 MiB runs of
 * incompressible data, then 1% of it rewritten in 4 KiB writes at random
 * places — backed up in full, then incrementally, then restored to a new
 * volume, through the real Cinder 21 (`../shared/peers/cinder`, started with
 * `CINDER_PEER_BACKUP=1`: cinder-backup with its POSIX driver, Cinder's
 * default chunk size, zlib and SHA block size) and its NFS driver's volume
 * files. Prints per step: seconds until the backup (or restore) is available,
 * MiB/s of data, bytes cinder-backup read (its /proc io `rchar`, children
 * included), bytes stored (the backup directory's growth) and cinder-backup's
 * CPU seconds.
 *
 *   CINDER_PEER_DB=postgres CINDER_PEER_BACKUP=1 ../shared/peers/cinder/start.sh
 *   node --import tsx bench/backup-cinder.ts [--state /tmp/cinder-peer] [--url http://127.0.0.1:8776] [--data-mib 1024] [--size-gib 4]
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { duBytes } from './disk-usage.ts';

const { values: args } = parseArgs({
  options: {
    state: { type: 'string', default: '/tmp/cinder-peer' },
    url: { type: 'string', default: 'http://127.0.0.1:8776' },
    'data-mib': { type: 'string', default: '1024' },
    'size-gib': { type: 'string', default: '4' },
  },
});
const MiB = 1024 * 1024;
const DATA = Number(args['data-mib']) * MiB;
const SIZE_GIB = Number(args['size-gib']);
const PROJECT = '0123456789abcdef0123456789abcdef';
const HEADERS = { 'X-Auth-Token': `admin:${PROJECT}`, 'Content-Type': 'application/json', 'OpenStack-API-Version': 'volume 3.0' };

async function api(method: string, p: string, body?: unknown): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await fetch(`${args.url}/v3/${PROJECT}${p}`, { method, headers: HEADERS, ...(body ? { body: JSON.stringify(body) } : {}) });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 1_800_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const statusOf = async (kind: 'volumes' | 'backups', id: string): Promise<string> => (await api('GET', `/${kind}/${id}`))[kind === 'volumes' ? 'volume' : 'backup'].status;

/** Waits for a volume or backup to be available; fails on an error status. */
async function available(kind: 'volumes' | 'backups', id: string): Promise<void> {
  await until(`${kind} ${id} available`, async () => {
    const s = await statusOf(kind, id);
    if (s.startsWith('error')) throw new Error(`${kind} ${id} is ${s}`);
    return s === 'available' ? true : undefined;
  });
}

/** The pids of cinder-backup and its children. */
function backupPids(): number[] {
  const root = Number(fs.readFileSync(path.join(args.state!, 'pids', 'cinder-backup.pid'), 'utf8'));
  const all = new Set([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const e of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(e) || all.has(Number(e))) continue;
      try {
        const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
        if (all.has(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))) { all.add(Number(e)); grew = true; }
      } catch { /* gone */ }
    }
  }
  return [...all];
}

/** Bytes read (rchar) and CPU seconds of cinder-backup so far. */
function usage(): { rchar: number; cpuS: number } {
  let rchar = 0;
  let ticks = 0;
  for (const pid of backupPids()) {
    try {
      rchar += Number(/rchar: (\d+)/.exec(fs.readFileSync(`/proc/${pid}/io`, 'utf8'))![1]);
      const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch { /* gone */ }
  }
  return { rchar, cpuS: ticks / 100 };
}

/** Times `fn` (which ends when Cinder says available), with cinder-backup's reads, CPU and the stored growth. */
async function step(name: string, dataBytes: number, fn: () => Promise<void>): Promise<void> {
  const store = path.join(args.state!, 'backup');
  const before = { ...usage(), stored: duBytes(store) };
  const t = performance.now();
  await fn();
  const s = (performance.now() - t) / 1000;
  const after = usage();
  console.log(`| cinder ${name} | ${s.toFixed(2)} | ${(dataBytes / MiB / s).toFixed(0)} | ${((after.rchar - before.rchar) / MiB).toFixed(0)} | ${((duBytes(store) - before.stored) / MiB).toFixed(0)} | ${(after.cpuS - before.cpuS).toFixed(2)} |`);
}

async function main(): Promise<void> {
  const { volume } = await api('POST', '/volumes', { volume: { size: SIZE_GIB, name: 'bench-backup' } });
  await available('volumes', volume.id);
  const file = path.join(args.state!, 'export', `volume-${volume.id}`);
  const fd = fs.openSync(file, 'r+');
  const runs = DATA / (64 * MiB);
  const stride = Math.floor((SIZE_GIB * 1024 * MiB) / runs / MiB) * MiB;
  for (let r = 0; r < runs; r++) for (let o = 0; o < 64 * MiB; o += 4 * MiB) fs.writeSync(fd, randomBytes(4 * MiB), 0, 4 * MiB, r * stride + o);
  fs.fsyncSync(fd);
  console.log('| step | s | MiB/s | read MiB | stored MiB | CPU s |');
  console.log('|---|---|---|---|---|---|');
  let full = '';
  await step('full', DATA, async () => {
    full = (await api('POST', '/backups', { backup: { volume_id: volume.id, name: 'full' } })).backup.id;
    await available('backups', full);
  });
  for (let i = 0; i < DATA / 100 / 4096; i++) {
    const run = Math.floor(Math.random() * runs);
    fs.writeSync(fd, randomBytes(4096), 0, 4096, run * stride + Math.floor(Math.random() * (64 * MiB / 4096)) * 4096);
  }
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  let inc = '';
  await step('incremental', DATA, async () => {
    inc = (await api('POST', '/backups', { backup: { volume_id: volume.id, name: 'inc', incremental: true } })).backup.id;
    await available('backups', inc);
  });
  await step('restore', DATA, async () => {
    const { restore } = await api('POST', `/backups/${inc}/restore`, { restore: {} });
    await available('volumes', restore.volume_id);
    await available('backups', inc);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
