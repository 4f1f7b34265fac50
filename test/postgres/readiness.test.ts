/**
 * `/readyz` on PostgreSQL (issue 18, part 3): ready while the database
 * answers; 503 naming the database while a partition holds every byte to it,
 * while `/healthz` (the process is alive) stays 200; ready again once healed.
 * And a SIGTERM meanwhile ends the process after `graceful_shutdown_timeout`.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { startPgProxy } from '../helpers/pg-proxy.ts';
import { startPostgres } from '../helpers/postgres.ts';
import { spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, tempStateDir, waitFor } from '../helpers/server.ts';

/** A `basalt server` on a fresh database reached through a relay the test can cut ({@link startPgProxy}), with `env` added. */
async function behindRelay(t: TestContext, env: Record<string, string>, stderr: 'inherit' | 'pipe' = 'inherit') {
  const pg = await startPostgres();
  t.after(() => pg.stop());
  const proxy = await startPgProxy(Number(new URL(pg.url).port));
  t.after(() => proxy.close());
  const database = proxy.url(await pg.createDatabase());
  const b = await spawnBasalt({
    ...FAST_TIMINGS, BASALT_DATABASE__CONNECTION: database, BASALT_STATE_DIR: tempStateDir(t), BASALT_PORT: '0', BASALT_NBD_PORT: '0', ...env,
  }, undefined, 'API listening', stderr);
  t.after(() => b.child.kill('SIGKILL'));
  return { proxy, ...b };
}

test('/readyz says not ready, naming the database, while PostgreSQL cannot be reached; /healthz stays up', { timeout: 120_000 }, async (t) => {
  const b = await behindRelay(t, { BASALT_LOG_LEVEL: 'info' });
  const { proxy } = b;
  const ready = async () => {
    const r = await fetch(`${b.url}/readyz`);
    return { status: r.status, body: await r.json() as { checks: Record<string, string> } };
  };
  assert.equal((await ready()).status, 200);
  proxy.partition();
  const down = await waitFor('not ready', async () => { const r = await ready(); return r.status === 503 ? r : undefined; });
  assert.match(down.body.checks.database!, /^unreachable: /);
  assert.equal((await fetch(`${b.url}/healthz`)).status, 200);
  proxy.heal();
  await waitFor('ready again', async () => (await ready()).status === 200);
});

test('SIGTERM while PostgreSQL cannot be reached: the server exits after graceful_shutdown_timeout, saying so, instead of waiting for the database', { timeout: 120_000 }, async (t) => {
  const b = await behindRelay(t, { BASALT_GRACEFUL_SHUTDOWN_TIMEOUT: '3' }, 'pipe');
  const { proxy } = b;
  let stderr = '';
  b.child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  // A create in flight when the partition comes: its transaction waits on the database.
  proxy.partition();
  const pending = fetch(`${b.url}/v3/${PROJECT}/volumes`, { method: 'POST', headers: { 'X-Auth-Token': `admin:${PROJECT}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ volume: { size: 1 } }) }).catch(() => undefined);
  await waitFor('not ready', async () => (await fetch(`${b.url}/readyz`)).status === 503);
  const code = new Promise<number | null>((resolve) => b.child.once('exit', (c) => resolve(c)));
  const sent = Date.now();
  b.child.kill('SIGTERM');
  assert.equal(await code, 1, stderr);
  const tookMs = Date.now() - sent;
  assert.ok(tookMs >= 3000 && tookMs < 20_000, `exited ${tookMs} ms after SIGTERM`);
  assert.match(stderr, /not stopped within graceful_shutdown_timeout \(3 s\)/);
  void pending;
});
