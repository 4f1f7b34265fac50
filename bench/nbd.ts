/**
 * Data-path benchmark: fio's nbd engine against Basalt's NBD server,
 * qemu-nbd and nbdkit's file plugin serving the same file in the same run,
 * plus fio directly on the file as the limit; then an nbdcopy of a 4 GiB file
 * holding 1% data through each server. Prints IOPS, MB/s, server CPU and the
 * ratio of Basalt to the faster of qemu-nbd and nbdkit. Each row is the median
 * of --rounds runs, the servers taking turns job by job.
 *
 *   node --import tsx bench/nbd.ts [--runtime 5] [--rounds 3] [--jobs name,…] [--placement none|same|split]
 *                                  [--servers basalt,nbdkit,…] [--transport tcp|unix|both] [--no-limit] [--no-copy]
 *
 * --qos '{"total_iops_sec":"5000"}' adds basalt-qos, the same server with a volume type's QoS specs,
 * and prints what it achieved against each limit (the limits should hold within 5%; the
 * basalt row, without specs, shows what QoS costs when unset).
 *
 * --threads N adds basalt-threads, the same server with N workers per connection (NBD_THREADS).
 *
 * --addon PATH adds basalt-addon, the same server loading another build of the native addon
 * (BASALT_ADDON_PATH): the A/B of a data-plane change in the same run.
 *
 * --transport: TCP on loopback (default), each server's Unix domain socket (Basalt's
 * `listenUnix`, qemu-nbd -k, nbdkit -U: what a host on the volume service's own machine
 * uses), or both, one table each.
 *
 * --placement pins every server and fio alike with taskset: `same` puts both on CPU 0,
 * `split` the server on CPU 0 and fio on CPU 1, `none` (default) lets the scheduler choose.
 * On a small VM the QD1 rows depend on it more than on any server's code: a wake-up across
 * vCPUs costs tens of microseconds, and a server with many threads (nbdkit) gets some of them
 * placed beside fio when unpinned.
 *
 * The page cache is warmed before each job and fio runs with --invalidate=0,
 * so the rows measure the servers, not the disk.
 *
 * --backend rbd measures an RBD image instead (see {@link mainRbd}): Basalt against qemu-nbd
 * on the same image, `rbd bench` as the limit, then snapshot and clone times against
 * Cinder's RBD driver's calls. Run it under `flock /tmp/basalt-bench.lock`, with
 * TEST_CEPH_DIR naming a running cluster (test/helpers/ceph-shared.ts start) or none.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({ options: { runtime: { type: 'string', default: '5' }, rounds: { type: 'string', default: '3' }, jobs: { type: 'string' }, placement: { type: 'string', default: 'none' }, servers: { type: 'string' }, transport: { type: 'string', default: 'tcp' }, qos: { type: 'string' }, threads: { type: 'string' }, addon: { type: 'string' }, copy: { type: 'boolean', default: true }, limit: { type: 'boolean', default: true }, backend: { type: 'string', default: 'file' } }, allowNegative: true });
if (!['file', 'rbd'].includes(args.backend!)) throw new Error('--backend is file or rbd');
if (!['none', 'same', 'split'].includes(args.placement!)) throw new Error('--placement is none, same or split');
if (!['tcp', 'unix', 'both'].includes(args.transport!)) throw new Error('--transport is tcp, unix or both');
const TRANSPORTS: Transport[] = args.transport === 'both' ? ['tcp', 'unix'] : [args.transport as Transport];
/** taskset prefixes of the server and of fio. */
const PIN = args.placement === 'same' ? { server: ['taskset', '-c', '0'], fio: ['taskset', '-c', '0'] }
  : args.placement === 'split' ? { server: ['taskset', '-c', '0'], fio: ['taskset', '-c', '1'] } : { server: [], fio: [] };
/** Spawns `cmd args` under the server's placement. */
function spawnPinned(cmd: string, cmdArgs: string[]): ChildProcess {
  const [bin, ...rest] = [...PIN.server, cmd, ...cmdArgs];
  return spawn(bin!, rest, { stdio: 'ignore' });
}
const RUNTIME = Number(args.runtime);
const ROUNDS = Number(args.rounds);
const GiB = 1024 ** 3;

interface Job { name: string; fio: string[] }
const JOBS: Job[] = [
  { name: '4k randread QD1', fio: ['--rw=randread', '--bs=4k', '--iodepth=1'] },
  { name: '4k randread QD32', fio: ['--rw=randread', '--bs=4k', '--iodepth=32'] },
  { name: '4k randwrite QD1', fio: ['--rw=randwrite', '--bs=4k', '--iodepth=1'] },
  { name: '4k randwrite QD32', fio: ['--rw=randwrite', '--bs=4k', '--iodepth=32'] },
  { name: '64k randrw 70/30 QD16', fio: ['--rw=randrw', '--rwmixread=70', '--bs=64k', '--iodepth=16'] },
  { name: '1M seq read QD8', fio: ['--rw=read', '--bs=1M', '--iodepth=8'] },
  { name: '1M seq write QD8', fio: ['--rw=write', '--bs=1M', '--iodepth=8'] },
].filter((j) => !args.jobs || args.jobs.split(',').some((n) => j.name.includes(n)));

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

type Transport = 'tcp' | 'unix';
/** Where a server listens: a loopback port, or a Unix socket. */
type Address = { port: number; socket?: undefined } | { socket: string; port?: undefined };

/** A free address of the transport (a new socket path in `dir` for Unix). */
async function freeAddress(transport: Transport, dir: string, name: string): Promise<Address> {
  return transport === 'unix' ? { socket: path.join(dir, `${name}.sock`) } : { port: await freePort() };
}

/** The NBD URI of export `bench` at `a`. */
function uriOf(a: Address): string {
  return a.socket ? `nbd+unix:///bench?socket=${a.socket}` : `nbd://127.0.0.1:${a.port}/bench`;
}

async function waitListening(a: Address): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((r) => {
      const c = a.socket !== undefined ? net.connect(a.socket, () => { c.destroy(); r(true); }) : net.connect(a.port, '127.0.0.1', () => { c.destroy(); r(true); });
      c.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${a.socket ?? a.port}`);
}

/** CPU seconds (user+system) used so far by a process. */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // clock ticks (USER_HZ = 100 on Linux)
}

interface Server { name: string; start(file: string, a: Address): ChildProcess }
/** Basalt's NBD server (bench/nbd-serve.ts) on `file`, with `env` (e.g. NBD_SPLICE_MIN) set for it. */
function basaltServe(file: string, a: Address, env: string[] = []): ChildProcess {
  return spawnPinned('env', [...env, process.execPath,
    '--import', 'tsx', path.join(import.meta.dirname, 'nbd-serve.ts'), path.dirname(file), path.basename(file).replace(/^volume-/, ''),
    String(Math.ceil(fs.statSync(file).size / GiB)), a.socket ? '0' : String(a.port), ...a.socket ? [a.socket] : [],
  ]);
}
const SERVERS = ([
  { name: 'basalt', start: (file, a) => basaltServe(file, a) },
  // The same server splicing READs of 64 KiB and more, on both transports (by default every READ is copied):
  // the A/B of the zero-copy read path, in the same run (--servers basalt,basalt-splice,…).
  { name: 'basalt-splice', start: (file, a) => basaltServe(file, a, ['NBD_SPLICE_MIN=65536', 'NBD_SPLICE_TCP=1']) },
  // The same server copying every READ (by default READs from 64 KiB to 256 KiB are spliced over a Unix socket).
  { name: 'basalt-copyr', start: (file, a) => basaltServe(file, a, ['NBD_SPLICE_MIN=0']) },
  // The same server copying every WRITE payload (no splice into the file): the A/B of the zero-copy write path.
  { name: 'basalt-copyw', start: (file, a) => basaltServe(file, a, ['NBD_SPLICE_WRITE_MIN=0']) },
  // The same server with --threads workers per connection (NBD_THREADS; the default is the server's own): the A/B of the thread count.
  { name: 'basalt-threads', start: (file, a) => basaltServe(file, a, [`NBD_THREADS=${args.threads ?? ''}`]) },
  // The same server on another build of the addon (--addon): a native change's A/B.
  { name: 'basalt-addon', start: (file, a) => basaltServe(file, a, [`BASALT_ADDON_PATH=${args.addon ?? ''}`]) },
  // The same server with --qos's specs on the volume.
  { name: 'basalt-qos', start: (file, a) => basaltServe(file, a, [`NBD_QOS=${args.qos ?? '{}'}`]) },
  {
    name: 'qemu-nbd',
    start: (file, a) => spawnPinned('qemu-nbd', ['-f', 'raw', '-x', 'bench', ...a.socket ? ['-k', a.socket] : ['-p', String(a.port), '-b', '127.0.0.1'], '-t', '--cache=writeback', '--aio=threads', '-e', '16', file]),
  },
  { name: 'nbdkit', start: (file, a) => spawnPinned('nbdkit', ['-f', ...a.socket ? ['-U', a.socket] : ['-p', String(a.port), '-i', '127.0.0.1'], '-e', 'bench', 'file', file]) },
] satisfies Server[]).filter((s) => (args.servers ? args.servers.split(',').includes(s.name) : !['basalt-splice', 'basalt-copyr', 'basalt-copyw'].includes(s.name) && (s.name !== 'basalt-qos' || args.qos !== undefined) && (s.name !== 'basalt-threads' || args.threads !== undefined) && (s.name !== 'basalt-addon' || args.addon !== undefined)));
/** The other servers Basalt is compared with (not its own variants). */
const PEERS = SERVERS.filter((s) => !s.name.startsWith('basalt'));

interface Row { iops: number; mbps: number; cpu: number }

function runFio(target: string[], job: Job): { iops: number; mbps: number } {
  const [fio, ...pre] = [...PIN.fio, 'fio'];
  const out = execFileSync(fio!, [...pre, '--name=b', '--output-format=json', '--time_based', `--runtime=${RUNTIME}`, '--invalidate=0', ...target, ...job.fio], { maxBuffer: 64 * 1024 * 1024 }).toString();
  const j = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  const iops = j.read.iops + j.write.iops;
  const mbps = (j.read.bw_bytes + j.write.bw_bytes) / 1e6;
  return { iops: Math.round(iops), mbps: Math.round(mbps) };
}

/** The run with the median IOPS. */
function median(rows: Row[]): Row {
  return [...rows].sort((a, b) => a.iops - b.iops)[Math.floor(rows.length / 2)]!;
}

/** Reads the file into the page cache and writes dirty pages back, so that no run pays for the last one's writes. */
function warm(file: string): void {
  execFileSync('sh', ['-c', `cat '${file}' > /dev/null; sync`]);
}

/**
 * What basalt-qos achieved against each of its IOPS and byte limits that binds
 * the job (a read job: total_* and read_*; a write job: total_* and write_*),
 * as achieved / limit: at most 1.05 is a limit that holds within 5%.
 */
function qosReport(rows: Map<string, Row> | undefined, specs: Record<string, string>): void {
  console.log('\nbasalt-qos against its limits (achieved / limit):\n');
  for (const job of JOBS) {
    const r = rows?.get(job.name);
    if (!r) continue;
    const rw = job.fio.join(' ');
    const kinds = rw.includes('randrw') ? ['total'] : /rw=(rand)?write/.test(rw) ? ['total', 'write'] : ['total', 'read'];
    const lines = kinds.flatMap((k) => [
      specs[`${k}_iops_sec`] ? `${k}_iops_sec ${specs[`${k}_iops_sec`]}: ${r.iops} IOPS = ${(r.iops / Number(specs[`${k}_iops_sec`])).toFixed(3)}` : undefined,
      specs[`${k}_bytes_sec`] ? `${k}_bytes_sec ${specs[`${k}_bytes_sec`]}: ${r.mbps * 1e6} B/s = ${((r.mbps * 1e6) / Number(specs[`${k}_bytes_sec`])).toFixed(3)}` : undefined,
    ]).filter(Boolean);
    if (lines.length) console.log(`- ${job.name}: ${lines.join('; ')}`);
  }
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(process.cwd(), '.bench-nbd-'));
  const file = path.join(dir, 'volume-bench');
  try {
    // 1 GiB of random data: reads return real bytes, not holes.
    execFileSync('dd', ['if=/dev/urandom', `of=${file}`, 'bs=1M', 'count=1024', 'status=none']);
    const direct = new Map<string, Row>();
    for (const job of args.limit ? JOBS : []) {
      warm(file);
      const r = runFio(['--ioengine=libaio', `--filename=${file}`, '--size=1G'], job);
      direct.set(job.name, { ...r, cpu: 0 });
    }
    // Every server runs at once, each on its own port, and each job runs on each in turn, round
    // after round: drift of this VM (often 10-30% over minutes) then hits every server alike.
    for (const transport of TRANSPORTS) {
      const results = new Map<string, Map<string, Row>>();
      const running: Array<{ server: Server; address: Address; child: ChildProcess }> = [];
      try {
        for (const server of SERVERS) { // each is stopped in the finally below, even if a later one fails to start
          const address = await freeAddress(transport, dir, server.name);
          running.push({ server, address, child: server.start(file, address) });
          await waitListening(address);
        }
        for (const job of JOBS) {
          const samples = new Map<string, Row[]>(SERVERS.map((s) => [s.name, []]));
          for (let round = 0; round < ROUNDS; round++) {
            // Each round starts with the next server, so no server always runs right after another's writes.
            for (const { server, address, child } of running.map((_, i) => running[(i + round) % running.length]!)) {
              warm(file);
              const before = cpuSeconds(child.pid!);
              const t = performance.now();
              const r = runFio(['--ioengine=nbd', `--uri=${uriOf(address)}`, '--size=1G'], job);
              const seconds = (performance.now() - t) / 1000;
              samples.get(server.name)!.push({ ...r, cpu: Math.round(((cpuSeconds(child.pid!) - before) / seconds) * 100) });
            }
          }
          for (const [name, rows] of samples) {
            if (!results.has(name)) results.set(name, new Map());
            results.get(name)!.set(job.name, median(rows));
          }
        }
      } finally {
        for (const { child } of running) {
          child.kill('SIGTERM');
          await new Promise((r) => child.once('exit', r));
        }
      }

      console.log(`\n${transport === 'unix' ? 'Unix domain socket' : 'TCP on loopback'}:\n`);
      const header = ['job', 'file (limit)', ...SERVERS.map((s) => s.name), 'basalt / best peer'];
      console.log(`| ${header.join(' | ')} |`);
      console.log(`|${header.map(() => '---').join('|')}|`);
      for (const job of JOBS) {
        const cell = (r: Row | undefined): string => r ? `${r.iops} IOPS, ${r.mbps} MB/s${r.cpu ? `, ${r.cpu}% CPU` : ''}` : '-';
        const b = results.get('basalt')?.get(job.name);
        const best = Math.max(...PEERS.map((s) => results.get(s.name)!.get(job.name)!.iops));
        const ratio = b && PEERS.length ? (b.iops / best).toFixed(2) : '-';
        console.log(`| ${job.name} | ${cell(direct.get(job.name))} | ${SERVERS.map((s) => cell(results.get(s.name)!.get(job.name))).join(' | ')} | ${ratio} |`);
      }
      if (args.qos !== undefined) qosReport(results.get('basalt-qos'), JSON.parse(args.qos) as Record<string, string>);
    }

    if (!args.copy) return;
    // nbdcopy of a 4 GiB file holding 1% data (41 MiB in 1 MiB extents).
    const sparse = path.join(dir, 'volume-sparse');
    fs.writeFileSync(sparse, '');
    fs.truncateSync(sparse, 4 * GiB);
    const fd = fs.openSync(sparse, 'r+');
    const block = Buffer.alloc(1024 * 1024, 0x5a);
    for (let i = 0; i < 41; i++) fs.writeSync(fd, block, 0, block.length, Math.floor((i * 4 * GiB) / 41));
    fs.closeSync(fd);
    warm(sparse);
    // One copy takes 30-50 ms here, nbdcopy's own start included: one sample per server moved
    // by a tenth between runs. So the servers take turns, --rounds times, and the medians count.
    // Each server copies twice: the first copy after its start (Basalt's JavaScript is still being
    // compiled then), and a second one, as a long-running server serves each new attachment.
    const copyMs = new Map<string, { first: number[]; next: number[] }>(SERVERS.map((s) => [s.name, { first: [], next: [] }]));
    const timedCopy = (address: Address): number => {
      const t = performance.now();
      execFileSync('nbdcopy', [uriOf(address), 'null:']);
      return performance.now() - t;
    };
    for (let round = 0; round < ROUNDS; round++) {
      for (const server of round % 2 === 0 ? SERVERS : [...SERVERS].reverse()) {
        const address = await freeAddress('tcp', dir, server.name);
        const child = server.start(sparse, address);
        try {
          await waitListening(address);
          copyMs.get(server.name)!.first.push(timedCopy(address));
          copyMs.get(server.name)!.next.push(timedCopy(address));
        } finally {
          child.kill('SIGTERM');
          await new Promise((r) => child.once('exit', r));
        }
      }
    }
    const medianMs = (xs: number[]): number => Math.round([...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!);
    for (const which of ['first', 'next'] as const) {
      console.log(`\nnbdcopy of a 4 GiB volume with 1% data to null, ${which === 'first' ? 'the first copy after the server started' : 'the second copy'}, median of ${ROUNDS} alternating rounds: ${SERVERS.map((s) => `${s.name} ${medianMs(copyMs.get(s.name)![which])} ms`).join(', ')}`);
      console.log(`  every round: ${SERVERS.map((s) => `${s.name} ${copyMs.get(s.name)![which].map((x) => Math.round(x)).join('/')}`).join(', ')}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The arguments of `rbd bench` for a fio job: the same pattern, size, mix and queue depth (threads). */
function rbdBenchArgs(job: Job): string[] {
  const opt = (k: string): string | undefined => job.fio.find((a) => a.startsWith(`--${k}=`))?.split('=')[1];
  const rw = opt('rw')!;
  const type = rw.includes('rw') ? 'readwrite' : rw.includes('write') ? 'write' : 'read';
  return ['--io-type', type, '--io-pattern', rw.startsWith('rand') ? 'rand' : 'seq', '--io-size', opt('bs')!.toUpperCase(), '--io-threads', opt('iodepth')!,
    ...opt('rwmixread') ? ['--rw-mix-read', opt('rwmixread')!] : []];
}

/** Bytes of a size such as 4k or 1M. */
function bytesOf(size: string): number {
  return Number(size.slice(0, -1)) * (size.toUpperCase().endsWith('M') ? 1024 * 1024 : 1024);
}

/**
 * `rbd bench` of `job` on `spec` for about RUNTIME seconds: it stops after a
 * number of bytes, not a time, so a short run first measures the rate.
 */
async function rbdBench(rbd: (...a: string[]) => Promise<string>, spec: string, job: Job): Promise<Row> {
  const a = rbdBenchArgs(job);
  const size = bytesOf(a[a.indexOf('--io-size') + 1]!);
  const once = async (total: number): Promise<number> => {
    const out = await rbd('bench', ...a, '--io-total', String(total), spec);
    return Number(/ops\/sec: ([\d.]+)/.exec(out.slice(out.lastIndexOf('elapsed')))![1]);
  };
  const rate = await once(size * 512);
  const iops = await once(Math.max(size * 512, Math.round(rate * RUNTIME) * size));
  return { iops: Math.round(iops), mbps: Math.round((iops * size) / 1e6), cpu: 0 };
}

/**
 * --backend rbd: Basalt's export of an RBD image (the rbd driver, served by
 * the native data plane through librbd's aio calls) against qemu-nbd serving
 * the same image through QEMU's librbd driver (an `rbd:` URL), fio's nbd
 * engine on each in turn, round after round, with `rbd bench` on the image as
 * the limit; then snapshot and clone times on 1 GiB and 100 GiB images
 * against the same librbd calls made as Cinder's RBD driver makes them
 * (bench/cinder-rbd-snap.py, python3-rbd). The cluster is the one
 * TEST_CEPH_DIR names (test/helpers/ceph.ts; a pool of its own), else one
 * started for the run and stopped at its end.
 */
async function mainRbd(): Promise<void> {
  const { startCeph } = await import('../test/helpers/ceph.ts');
  const ceph = await startCeph();
  const dir = fs.mkdtempSync(path.join(process.cwd(), '.bench-nbd-'));
  const load = [os.loadavg()[0]!];
  try {
    const pool = ceph.pool;
    const spec = `${pool}/volume-bench`;
    await ceph.rbd('create', '--size', '1G', spec);
    // Every object written: reads return data, not holes.
    await ceph.rbd('bench', '--io-type', 'write', '--io-pattern', 'seq', '--io-size', '4M', '--io-threads', '4', '--io-total', '1G', spec);
    const options = { rbd_pool: pool, rbd_user: ceph.user, rbd_ceph_conf: ceph.confPath, rbd_keyring_conf: ceph.keyringPath };
    const url = `rbd:${spec}:conf=${ceph.confPath}:id=${ceph.user}:keyring=${ceph.keyringPath}`;
    const servers: Array<{ name: string; start(a: Address): ChildProcess }> = [
      { name: 'basalt', start: (a) => spawnPinned('env', [`NBD_RBD=${JSON.stringify(options)}`, process.execPath, '--import', 'tsx', path.join(import.meta.dirname, 'nbd-serve.ts'), dir, 'bench', '1', String(a.port)]) },
      // QEMU's rbd driver with librbd's cache on (what --cache=writeback asks of it), as librbd's default is for Basalt.
      { name: 'qemu-nbd', start: (a) => spawnPinned('qemu-nbd', ['-f', 'raw', '-x', 'bench', '-p', String(a.port), '-b', '127.0.0.1', '-t', '--cache=writeback', '-e', '16', url]) },
    ];
    const limit = new Map<string, Row>();
    for (const job of args.limit ? JOBS : []) limit.set(job.name, await rbdBench(ceph.rbd, spec, job));
    const results = new Map<string, Map<string, Row>>(servers.map((s) => [s.name, new Map()]));
    const running: Array<{ name: string; address: Address; child: ChildProcess }> = [];
    try {
      for (const server of servers) {
        const address = await freeAddress('tcp', dir, server.name);
        running.push({ name: server.name, address, child: server.start(address) });
        await waitListening(address);
      }
      for (const job of JOBS) {
        const samples = new Map<string, Row[]>(servers.map((s) => [s.name, []]));
        for (let round = 0; round < ROUNDS; round++) {
          for (const { name, address, child } of running.map((_, i) => running[(i + round) % running.length]!)) {
            const before = cpuSeconds(child.pid!);
            const t = performance.now();
            const r = runFio(['--ioengine=nbd', `--uri=${uriOf(address)}`, '--size=1G'], job);
            samples.get(name)!.push({ ...r, cpu: Math.round(((cpuSeconds(child.pid!) - before) / ((performance.now() - t) / 1000)) * 100) });
          }
        }
        for (const [name, rows] of samples) results.get(name)!.set(job.name, median(rows));
      }
    } finally {
      for (const { child } of running) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    }
    load.push(os.loadavg()[0]!);
    console.log('\nRBD image (1 GiB, one OSD), TCP on loopback:\n');
    console.log('| job | rbd bench (limit) | basalt | qemu-nbd | basalt / qemu-nbd | basalt / limit |');
    console.log('|---|---|---|---|---|---|');
    const cell = (r: Row | undefined): string => r ? `${r.iops} IOPS, ${r.mbps} MB/s${r.cpu ? `, ${r.cpu}% CPU` : ''}` : '-';
    for (const job of JOBS) {
      const b = results.get('basalt')!.get(job.name)!;
      const q = results.get('qemu-nbd')!.get(job.name)!;
      const l = limit.get(job.name);
      console.log(`| ${job.name} | ${cell(l)} | ${cell(b)} | ${cell(q)} | ${(b.iops / q.iops).toFixed(2)} | ${l ? (b.iops / l.iops).toFixed(2) : '-'} |`);
    }
    await snapshotRows(ceph, options);
    load.push(os.loadavg()[0]!);
    console.log(`\nload average (1 min) at the start, after the NBD rows, at the end: ${load.map((l) => l.toFixed(2)).join(', ')}`);
  } finally {
    await ceph.rbd('rm', `${ceph.pool}/volume-bench`).catch(() => undefined);
    await ceph.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Snapshot, volume-from-snapshot and clone times of the rbd driver against
 * bench/cinder-rbd-snap.py, on a 1 GiB and a 100 GiB image with 64 MiB
 * written (thin: the cluster holds only that), A and B taking turns, medians.
 * Every timed operation of either side starts {@link SETTLE_MS} after the
 * last call to the cluster: a snapshot's id is an OSD map change, which the
 * monitor commits at most once per paxos_propose_interval (0.1 s on the test
 * cluster), so a snapshot right after another map change (the previous
 * round's removals) waits out the rest of that interval. Without the pause
 * the side that runs in a fresh process (Python's start-up is longer than
 * the interval) was measured on an idle monitor and the other was not.
 */
async function snapshotRows(ceph: { pool: string; confPath: string; keyringPath: string; user: string; rbd(...a: string[]): Promise<string> }, options: Record<string, unknown>): Promise<void> {
  const { benchRbdDriver } = await import('./rbd-bench-driver.ts');
  const driver = benchRbdDriver(options);
  await driver.init!();
  const python = (args: string[]): Record<string, number> => {
    const env = { ...process.env };
    for (const k of ['PYTHONPATH', 'PYTHONHOME', 'CEPH_ARGS', 'CEPH_CONF']) delete env[k];
    return JSON.parse(execFileSync('/usr/bin/python3', [path.join(import.meta.dirname, 'cinder-rbd-snap.py'), ...args, String(SETTLE_MS / 1000)], { env }).toString()) as Record<string, number>;
  };
  const OPS = ['snapshot', 'from_snapshot', 'clone'] as const;
  const SETTLE_MS = 300;
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log('\nSnapshot and clone (ms, median of', ROUNDS, 'rounds; cinder: Cinder\'s RBD driver\'s librbd calls, connecting per operation as it does):\n');
  console.log('| image | operation | basalt | cinder | cinder without its connect | basalt / cinder |');
  console.log('|---|---|---|---|---|---|');
  try {
    for (const sizeGiB of [1, 100]) {
      const source = { id: `snapsrc-${sizeGiB}`, sizeGiB };
      await driver.createVolume(source);
      await ceph.rbd('bench', '--io-type', 'write', '--io-pattern', 'rand', '--io-size', '4M', '--io-threads', '4', '--io-total', '64M', `${ceph.pool}/volume-${source.id}`);
      const basalt = new Map<string, number[]>(OPS.map((o) => [o, []]));
      const cinder = new Map<string, number[]>([...OPS, 'connect'].map((o) => [o, []]));
      for (let round = 0; round < ROUNDS; round++) {
        const runBasalt = async (): Promise<void> => {
          const snap = { id: `b${sizeGiB}-${round}`, volumeId: source.id, sizeGiB };
          const fromSnap = { id: `b${sizeGiB}-${round}-fromsnap`, sizeGiB };
          const clone = { id: `b${sizeGiB}-${round}-clone`, sizeGiB };
          const timed = async (op: typeof OPS[number], fn: () => Promise<void>): Promise<void> => {
            await sleep(SETTLE_MS);
            const t = performance.now();
            await fn();
            basalt.get(op)!.push(performance.now() - t);
          };
          await timed('snapshot', () => driver.createSnapshot!(snap));
          await timed('from_snapshot', () => driver.createVolumeFromSnapshot!(fromSnap, snap));
          await timed('clone', () => driver.cloneVolume!(clone, source));
          await driver.deleteVolume(fromSnap);
          await driver.deleteVolume(clone);
          await driver.deleteSnapshot!(snap);
        };
        const runCinder = (): void => {
          const r = python([ceph.confPath, ceph.user, ceph.pool, `volume-${source.id}`, String(sizeGiB), `c${sizeGiB}-${round}`]);
          for (const [k, v] of Object.entries(r)) cinder.get(k)!.push(v);
        };
        if (round % 2 === 0) {
          await runBasalt();
          runCinder();
        } else {
          runCinder();
          await runBasalt();
        }
      }
      const connect = med(cinder.get('connect')!);
      for (const op of OPS) {
        const b = med(basalt.get(op)!);
        const c = med(cinder.get(op)!);
        console.log(`| ${sizeGiB} GiB | ${op} | ${b.toFixed(1)} | ${c.toFixed(1)} | ${(c - connect).toFixed(1)} | ${(b / c).toFixed(2)} |`);
      }
      await driver.deleteVolume(source);
    }
  } finally {
    await driver.close!();
  }
}

(args.backend === 'rbd' ? mainRbd() : main()).catch((err) => {
  console.error(err);
  process.exit(1);
});
