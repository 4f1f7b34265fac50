/**
 * Job throughput on PostgreSQL: completed volume creates per second with 1
 * and with 3 volume services in one cluster (separate processes sharing the
 * backend's folder), behind one api+scheduler process.
 *
 *   node --import tsx bench/jobs.ts [--n 300] [--c 20]
 *
 * Needs root (PostgreSQL runs as the postgres user) and Debian's postgresql.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startPostgres } from '../test/helpers/postgres.ts';
import { spawnBasalt } from '../test/helpers/process.ts';

const { values: args } = parseArgs({ options: { n: { type: 'string', default: '300' }, c: { type: 'string', default: '20' } } });
const N = Number(args.n);
const C = Number(args.c);
const PROJECT = 'bench';
const HEADERS = { 'X-Auth-Token': `admin:${PROJECT}`, 'Content-Type': 'application/json' };

async function run(volumeServices: number): Promise<number> {
  const postgres = await startPostgres();
  const database = await postgres.createDatabase();
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-bench-jobs-'));
  const env = {
    BASALT_STATE_DIR: stateDir, BASALT_DATABASE__CONNECTION: database, BASALT_COORDINATION__BACKEND_URL: database,
    BASALT_PORT: '0', BASALT_NBD_PORT: '0', BASALT_LOG_LEVEL: 'warn', BASALT_QUOTA_VOLUMES: '-1', BASALT_QUOTA_GIGABYTES: '-1',
    BASALT_BACKEND_DEFAULTS__CLUSTER: 'c1', BASALT_BACKEND_DEFAULTS__FILE_VOLUME_DIR: path.join(stateDir, 'shared'),
    BASALT_REPORT_INTERVAL: '1',
  };
  const procs: ChildProcess[] = [];
  try {
    const front = await spawnBasalt({ ...env, BASALT_LOG_LEVEL: 'info' }, 'api,scheduler');
    front.child.stdout!.on('data', (d: Buffer) => { if (process.env.BENCH_DEBUG && /"level":50/.test(d.toString())) process.stderr.write(d); });
    procs.push(front.child);
    for (let i = 0; i < volumeServices; i++) {
      procs.push((await spawnBasalt({ ...env, BASALT_LOG_LEVEL: 'info', BASALT_HOST: `node-${i}` }, 'volume', 'volume service started')).child);
    }
    const url = `${front.url}/v3/${PROJECT}`;
    const ids: string[] = [];
    const t = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: C }, async () => {
      while (next < N) {
        next++;
        const r = await fetch(`${url}/volumes`, { method: 'POST', headers: HEADERS, body: JSON.stringify({ volume: { size: 1 } }) });
        const body = await r.json() as { volume?: { id: string } };
        if (!body.volume) throw new Error(`create answered ${r.status}: ${JSON.stringify(body)}`);
        ids.push(body.volume.id);
      }
    }));
    for (;;) {
      const r = await fetch(`${url}/volumes/detail?status=available&with_count=true&limit=1`, { headers: { ...HEADERS, 'OpenStack-API-Version': 'volume 3.45' } });
      if (((await r.json()) as { count: number }).count >= N) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    return N / ((performance.now() - t) / 1000);
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await postgres.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
}

for (const services of [1, 3]) {
  const rate = await run(services);
  console.log(JSON.stringify({ volume_services: services, creates: N, concurrency: C, completed_creates_per_second: Math.round(rate) }));
}
