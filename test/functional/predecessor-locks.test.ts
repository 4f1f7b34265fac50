/**
 * A server killed while it holds etcd locks, started again on its state
 * directory: the new incarnation frees the dead one's locks at once (its
 * services row names it), not after their lease's ttl, and no other holder's.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import type * as Etcd3Module from 'etcd3';
import { startEtcd } from '../helpers/etcd.ts';
import { kill9, spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, tempStateDir, testDatabase, waitFor } from '../helpers/server.ts';

test('a restarted server frees the etcd locks its killed predecessor held, at once, and no one else\'s', { timeout: 120_000 }, async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.stop());
  const stateDir = tempStateDir(t);
  const database = await testDatabase(stateDir);
  // A minute of ttl: what the test sees freed, the lease did not.
  const env = { ...FAST_TIMINGS, BASALT_STATE_DIR: stateDir, BASALT_PORT: '0', BASALT_NBD_PORT: '0', BASALT_COORDINATION__BACKEND_URL: `etcd3+${etcd.url}?ttl=60`, ...database.env };
  const first = await spawnBasalt(env);
  t.after(() => { first.child.kill('SIGKILL'); });
  const [row] = await database.query<{ instance_id: string }>("select instance_id from services where binary = 'cinder-volume'");
  const dead = row!.instance_id;

  // Locks as the first incarnation holds them (its id as the value, on a lease of its own), and one of another process.
  const etcd3 = createRequire(import.meta.url)('etcd3') as typeof Etcd3Module;
  const client = new etcd3.Etcd3({ hosts: etcd.url });
  t.after(() => client.close());
  const lease = client.lease(60, { autoKeepAlive: false });
  await lease.put('basalt/locks/volume-a').value(dead);
  await lease.put('basalt/locks/volume-b').value(dead);
  await lease.put('basalt/locks/volume-c').value('another-process');
  await kill9(first.child);

  const second = await spawnBasalt(env);
  t.after(() => { second.child.kill('SIGKILL'); });
  const left = await waitFor('the predecessor\'s locks freed', async () => {
    const keys = Object.keys(await client.getAll().prefix('basalt/locks/').strings()).sort();
    return keys.includes('basalt/locks/volume-a') ? undefined : keys;
  }, 10_000);
  assert.deepEqual(left, ['basalt/locks/volume-c'], 'the dead incarnation\'s locks went, the other holder\'s stayed');
});
