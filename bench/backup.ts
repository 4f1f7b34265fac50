/**
 * Backup benchmark (issue 15, part 6), peers in the same run: a 4 GiB volume
 * of the `file` driver holding 1 GiB of written data, backed up in full, then
 * 1% of the written data rewritten at random places (4 KiB writes) and backed
 * up incrementally, then restored to a new volume. Basalt's backup repository
 * on the posix target (what the backup role runs, without the API around it)
 * beside `restic` (Debian's) backing up and restoring the same file, in
 * alternating rounds. Prints per step: seconds, MiB/s, bytes read from the
 * volume (Basalt: counted at the handle; restic: the file's bytes it read, from
 * /proc/<pid>/io rchar), bytes stored, CPU seconds; medians over the rounds.
 *
 *   node --import tsx bench/backup.ts [--rounds 3] [--dir /var/tmp] [--data-mib 1024] [--size-gib 4]
 *
 * Basalt's incremental backup takes the changed ranges when it is given them
 * (changed-block tracking, issue 15 part 3, gives them to the backup role);
 * this bench passes the exact ranges it wrote (`incremental (ranges known)`)
 * and also measures `incremental (no ranges)`, which reads every data block
 * and stores only the changed ones. The restore is of the incremental backup.
 * The end of the output checks the targets.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { duBytes } from './disk-usage.ts';
import { BackupRepository, PosixTarget, type BackupSource, type ByteRange, type CreateBackupInput, type Manifest } from '../src/backup/index.ts';
import { fileRegistration, type VolumeHandle } from '../src/drivers/index.ts';

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    dir: { type: 'string', default: os.tmpdir() },
    'data-mib': { type: 'string', default: '1024' },
    'size-gib': { type: 'string', default: '4' },
  },
});
const MiB = 1024 * 1024;
const ROUNDS = Number(args.rounds);
const DATA = Number(args['data-mib']) * MiB;
const SIZE_GIB = Number(args['size-gib']);

interface Step { s: number; readBytes: number; storedBytes: number; cpuS: number }

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/**
 * Writes every dirty page back before a timed step (untimed), so that no step
 * pays for the writeback of the one before: restic does not flush what it
 * writes, and its restore leaves a 4 GiB file dirty.
 */
function settle(): void {
  execFileSync('sync');
}

/** Runs restic, returning wall seconds, CPU seconds and bytes it read (rchar). */
async function restic(argv: string[], env: NodeJS.ProcessEnv): Promise<{ s: number; cpuS: number; rchar: number }> {
  settle();
  const t = performance.now();
  const child = spawn('restic', argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => { err += d; });
  let rchar = 0;
  let ticks = 0;
  // Sampled from /proc while it runs (the last sample is at most 20 ms before it ends).
  const sample = setInterval(() => {
    try {
      rchar = Number(/rchar: (\d+)/.exec(fs.readFileSync(`/proc/${child.pid}/io`, 'utf8'))![1]);
      const stat = fs.readFileSync(`/proc/${child.pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks = Number(f[11]) + Number(f[12]);
    } catch { /* ended */ }
  }, 20);
  const code = await new Promise<number>((resolve) => child.once('exit', (c) => resolve(c ?? 1)));
  clearInterval(sample);
  if (code !== 0) throw new Error(`restic ${argv[0]} failed: ${err}`);
  return { s: (performance.now() - t) / 1000, cpuS: ticks / 100, rchar };
}

function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
}

/** Runs two steps in the given order (peers alternate who goes first from one round to the next). */
async function pair(first: () => Promise<void>, second: () => Promise<void>, swap: boolean): Promise<void> {
  if (swap) { await second(); await first(); } else { await first(); await second(); }
}

async function round(base: string, swap: boolean): Promise<Record<string, Step>> {
  const dir = fs.mkdtempSync(path.join(base, 'basalt-bench-backup-'));
  try {
    const volumes = path.join(dir, 'volumes');
    fs.mkdirSync(volumes);
    const driver = fileRegistration.create({ backendName: 'file', options: { file_volume_dir: volumes, total_capacity_gb: 0 } });
    await driver.init?.();
    await driver.createVolume({ id: 'v', sizeGiB: SIZE_GIB });
    const vol = await driver.openVolume({ id: 'v', sizeGiB: SIZE_GIB });
    // 1 GiB of data in 64 MiB runs spread over the volume; incompressible, as most volume data is.
    const runs = DATA / (64 * MiB);
    const stride = Math.floor((SIZE_GIB * 1024 * MiB) / runs / MiB) * MiB;
    for (let r = 0; r < runs; r++) for (let o = 0; o < 64 * MiB; o += 4 * MiB) await vol.write(r * stride + o, randomBytes(4 * MiB));
    await vol.flush();
    const file = path.join(volumes, fs.readdirSync(volumes).find((n) => n.includes('v'))!);

    const counted = (h: VolumeHandle): BackupSource & { read_: number } => {
      const s = { read_: 0, sizeBytes: h.sizeBytes, read: async (o: number, n: number) => { s.read_ += n; return h.read(o, n); }, blockStatus: (o: number, n: number) => h.blockStatus!(o, n) };
      return s;
    };
    const out: Record<string, Step> = {};
    const target = path.join(dir, 'basalt-repo');
    const repo = new BackupRepository(new PosixTarget(target));
    const env = { ...process.env, RESTIC_REPOSITORY: path.join(dir, 'restic-repo'), RESTIC_PASSWORD: 'bench', RESTIC_CACHE_DIR: path.join(dir, 'restic-cache') };
    await restic(['init'], env);

    /** Times one Basalt backup; bytes stored are what the repository grew by. */
    const basaltBackup = async (name: string, input: Omit<CreateBackupInput, 'source' | 'volumeId' | 'createdAt'>): Promise<Manifest> => {
      const before = duBytes(target);
      const src = counted(vol);
      settle();
      const t = performance.now(); const c = cpuSeconds();
      const b = await repo.create({ volumeId: 'v', source: src, createdAt: new Date().toISOString(), ...input });
      out[name] = { s: (performance.now() - t) / 1000, readBytes: src.read_, storedBytes: duBytes(target) - before, cpuS: cpuSeconds() - c };
      return b.manifest;
    };
    const resticBackup = async (name: string): Promise<void> => {
      const before = duBytes(env.RESTIC_REPOSITORY);
      const r = await restic(['backup', '--quiet', file], env);
      out[name] = { s: r.s, readBytes: r.rchar, storedBytes: duBytes(env.RESTIC_REPOSITORY) - before, cpuS: r.cpuS };
    };

    let full: Manifest | undefined;
    await pair(async () => { full = await basaltBackup('basalt full', { backupId: 'full' }); }, () => resticBackup('restic full'), swap);

    // 1% of the written data rewritten in 4 KiB writes at random places within the data runs.
    const changed: ByteRange[] = [];
    for (let i = 0; i < DATA / 100 / 4096; i++) {
      const run = Math.floor(Math.random() * runs);
      const at = run * stride + Math.floor(Math.random() * (64 * MiB / 4096)) * 4096;
      await vol.write(at, randomBytes(4096));
      changed.push({ offset: at, length: 4096 });
    }
    await vol.flush();

    let inc: Manifest | undefined;
    await pair(async () => {
      inc = await basaltBackup('basalt incremental (ranges known)', { backupId: 'inc', parent: full!, changed });
      await basaltBackup('basalt incremental (no ranges)', { backupId: 'inc2', parent: full! });
    }, () => resticBackup('restic incremental'), swap);

    // Restores: Basalt's incremental onto a new volume (flushed); restic's latest snapshot to a folder.
    await driver.createVolume({ id: 'r', sizeGiB: SIZE_GIB });
    const dest = await driver.openVolume({ id: 'r', sizeGiB: SIZE_GIB });
    await pair(async () => {
      settle();
      const t = performance.now(); const c = cpuSeconds();
      const restored = await repo.restore(inc!, dest, { zeroed: true });
      out['basalt restore'] = { s: (performance.now() - t) / 1000, readBytes: duBytes(target), storedBytes: restored.bytesWritten, cpuS: cpuSeconds() - c };
    }, async () => {
      const r = await restic(['restore', 'latest', '--target', path.join(dir, 'restic-out')], env);
      out['restic restore'] = { s: r.s, readBytes: r.rchar, storedBytes: duBytes(path.join(dir, 'restic-out')), cpuS: r.cpuS };
    }, swap);
    for (let r = 0; r < runs; r++) {
      const at = r * stride;
      if (!(await dest.read(at, 64 * MiB)).equals(await vol.read(at, 64 * MiB))) throw new Error(`restored volume differs in run ${r}`);
    }
    await dest.close();
    await vol.close();
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

try {
  execFileSync('restic', ['version'], { stdio: 'ignore' });
} catch {
  console.error('bench/backup: restic is not installed (the peer this bench measures against): bash scripts/install-test-tools.sh, or apt-get install restic');
  process.exit(2);
}
const loadBefore = os.loadavg();
const all: Record<string, Step[]> = {};
for (let i = 0; i < ROUNDS; i++) {
  const r = await round(args.dir!, i % 2 === 1);
  for (const [k, v] of Object.entries(r)) (all[k] ??= []).push(v);
  process.stderr.write(`round ${i + 1}/${ROUNDS} done\n`);
}
const rows = Object.entries(all).map(([step, xs]) => {
  const s = median(xs.map((x) => x.s));
  return {
    step, seconds: +s.toFixed(2), data_mib_per_s: +((DATA / MiB) / s).toFixed(0),
    read_mib: +(median(xs.map((x) => x.readBytes)) / MiB).toFixed(1), stored_mib: +(median(xs.map((x) => x.storedBytes)) / MiB).toFixed(1),
    cpu_s: Number.isNaN(median(xs.map((x) => x.cpuS))) ? null : +median(xs.map((x) => x.cpuS)).toFixed(2),
  };
});
const at = (step: string) => rows.find((r) => r.step === step)!;
const fullS = at('basalt full').seconds;
const targets = {
  full_vs_restic: `${(at('restic full').seconds / fullS).toFixed(2)}x restic's speed (target >= 1)`,
  incremental_read_of_volume: `${((at('basalt incremental (ranges known)').read_mib / (SIZE_GIB * 1024)) * 100).toFixed(2)}% (target <= 2%)`,
  incremental_time_of_full: `${((at('basalt incremental (ranges known)').seconds / fullS) * 100).toFixed(1)}% (target <= 10%)`,
  restore_vs_full: `${(fullS / at('basalt restore').seconds).toFixed(2)}x the full backup's speed (target >= 1)`,
};
console.log(JSON.stringify({
  volume_gib: SIZE_GIB, data_mib: DATA / MiB, rounds: ROUNDS, load_average_1_5_15: { before: loadBefore.map((x) => +x.toFixed(2)), after: os.loadavg().map((x) => +x.toFixed(2)) },
  placement: 'same machine, same file; Basalt and restic alternate which goes first in each pair of steps from one round to the next', rows, targets,
}, null, 2));
