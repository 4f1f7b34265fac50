/**
 * Fault injection (issue 5): ≥ 500 operations on a PostgreSQL cluster (2 APIs,
 * 1 scheduler, 3 volume services in one cluster) while random processes are
 * SIGKILLed and restarted, once with etcd and once with file:// coordination;
 * afterwards nothing is stuck, lost, orphaned or miscounted (see
 * test/helpers/chaos.ts). `bench/chaos.ts` runs the same for longer.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { runChaos } from '../helpers/chaos.ts';
import { startEtcd } from '../helpers/etcd.ts';

for (const backend of ['etcd', 'file'] as const) {
  test(`500 operations under SIGKILLs leave a consistent cluster (${backend} coordination)`, { timeout: 300_000 }, async (t) => {
    let coordination: string;
    if (backend === 'etcd') {
      const etcd = await startEtcd();
      t.after(() => etcd.stop());
      coordination = `etcd3+http://${etcd.url.slice('http://'.length)}`;
    } else {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-chaos-locks-'));
      t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
      coordination = `file://${dir}`;
    }
    const report = await runChaos({ operations: 500, coordination });
    t.diagnostic(`seed ${report.seed}; operations ${JSON.stringify(report.operations)}; outcomes ${JSON.stringify({ ...report.outcomes, serverErrors: report.outcomes.serverErrors.length })}`);
    t.diagnostic(`kills ${JSON.stringify(report.kills)}; checked ${JSON.stringify(report.checked)}; failed copies deleted ${report.deletedFailedCopies}`);
    for (const line of report.evidence) t.diagnostic(`evidence: ${line}`);
    for (const line of report.aborts) t.diagnostic(`aborted by a native library (a process death like the kills): ${line}`);
    assert.deepEqual(report.violations, [], `invariants broken (seed ${report.seed})`);
    assert.deepEqual(report.outcomes.serverErrors, [], 'no request answered 5xx');
    assert.ok(Object.values(report.operations).reduce((a, b) => a + b, 0) >= 500);
    assert.ok(Object.values(report.kills).reduce((a, b) => a + b, 0) >= 5, `processes were killed: ${JSON.stringify(report.kills)}`);
    assert.ok(report.checked.volumes > 0 && report.checked.files > 0 && report.checked.quotaResources >= 3, 'the checks saw rows, files and quota usage');
  });
}
