/**
 * The memory driver after a restart (issue 18, rough edge): its volumes are
 * gone with the process that held them, while the database still lists them.
 * The new volume service says so at start, naming how many; a clean start
 * says nothing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROJECT, startTestServer, tempStateDir, waitForStatus } from '../helpers/server.ts';

const INI = ['[DEFAULT]', 'enabled_backends = mem', '[mem]', 'volume_driver = memory'].join('\n');

test('a memory backend restarted says how many recorded volumes it no longer holds', { timeout: 120_000 }, async (t) => {
  const stateDir = tempStateDir(t);
  const firstLines: string[] = [];
  const first = await startTestServer(t, { ini: INI, stateDir, logLines: firstLines });
  for (let i = 0; i < 2; i++) {
    const v = await first.request('POST', `/v3/${PROJECT}/volumes`, { volume: { size: 1 } });
    assert.equal(v.status, 202);
    await waitForStatus(first, v.body.volume.id, 'available');
  }
  await first.close();
  assert.ok(!firstLines.some((l) => l.includes('memory driver')), 'a first start has nothing to say');

  const lines: string[] = [];
  await startTestServer(t, { ini: INI, stateDir, logLines: lines });
  const warning = lines.map((l) => JSON.parse(l) as { level: number; msg: string; volumes?: number }).find((l) => l.msg.includes('uses the memory driver'));
  assert.ok(warning, `a warning at start; got:\n${lines.join('\n')}`);
  assert.equal(warning.level, 40);
  assert.equal(warning.volumes, 2);
  assert.match(warning.msg, /2 volume\(s\) recorded on it have no data in this process/);
});
