/**
 * The fault-injection run of test/helpers/cluster-chaos.ts, longer and with a
 * choice of coordination backend: PostgreSQL, 2 API processes, 1 scheduler,
 * 3 volume services in one cluster; random SIGKILLs and restarts under a
 * random operation mix; then the invariant checks. Prints the report as JSON
 * and exits 1 on any violation.
 *
 *   node --import tsx bench/chaos.ts [--ops 2000] [--coordination etcd|file|postgresql] [--seed N]
 *
 * Needs root (PostgreSQL runs as the postgres user), Debian's postgresql and, for etcd, etcd-server.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runChaos } from '../test/helpers/chaos.ts';
import { startEtcd } from '../test/helpers/etcd.ts';

const { values: args } = parseArgs({
  options: { ops: { type: 'string', default: '2000' }, coordination: { type: 'string', default: 'etcd' }, seed: { type: 'string' }, concurrency: { type: 'string', default: '6' } },
});
const etcd = args.coordination === 'etcd' ? await startEtcd() : undefined;
const lockDir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-chaos-locks-'));
const coordination = etcd ? `etcd3+http://${etcd.url.slice('http://'.length)}?ttl=4` : args.coordination === 'file' ? `file://${lockDir}` : 'postgresql';
const t = performance.now();
try {
  const report = await runChaos({
    operations: Number(args.ops), coordination, concurrency: Number(args.concurrency),
    ...(args.seed ? { seed: Number(args.seed) } : {}), log: (l) => process.stderr.write(`${l}\n`),
  });
  console.log(JSON.stringify({ coordination: args.coordination, ...report, wallSeconds: Math.round((performance.now() - t) / 1000) }, null, 2));
  process.exitCode = report.violations.length || report.outcomes.serverErrors.length ? 1 : 0;
} finally {
  await etcd?.stop();
  fs.rmSync(lockDir, { recursive: true, force: true });
}
