/**
 * The peers a server depends on, restarted under load: PostgreSQL (a fast
 * shutdown ends every session, as an operator's restart or a failover of the
 * database does), with the named locks on it too; and etcd holding the named
 * locks. `basalt server` keeps running through each, answers 503 at worst
 * meanwhile, and every create it accepted ends available. (A session
 * PostgreSQL ended while Basalt held it between two queries, a transaction's
 * or a named lock's, once took the process down with it.)
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { startEtcd } from '../helpers/etcd.ts';
import { startPostgres } from '../helpers/postgres.ts';
import { spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, tempStateDir, waitFor } from '../helpers/server.ts';

/** Creates accepted at most (a bounded load: an etcd restart can take seconds, thousands of creates meanwhile). */
const MAX_CREATES = 300;

const HEADERS = { 'X-Auth-Token': `admin:${PROJECT}`, 'Content-Type': 'application/json' };

/** A server with `env` added, under creates from four clients while `restart` runs twice; then every accepted create must end available. */
async function restartedUnderLoad(t: TestContext, env: Record<string, string>, restart: () => Promise<void>): Promise<void> {
  const b = await spawnBasalt({
    ...FAST_TIMINGS, BASALT_STATE_DIR: tempStateDir(t), BASALT_PORT: '0', BASALT_QUOTA_VOLUMES: '-1', BASALT_QUOTA_GIGABYTES: '-1', ...env,
  }, undefined, 'API listening', 'pipe');
  t.after(() => b.child.kill('SIGKILL'));
  let stderr = '';
  b.child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  let exit: string | undefined;
  b.child.once('exit', (code, signal) => { exit = `exited (${code ?? signal})`; });

  // Four clients create volumes (and delete each once available) until both restarts are done.
  const accepted: string[] = [];
  const statuses = new Map<number, number>();
  const answers = new Map<number, string>(); // the first body of each status but 202
  let restarting = true;
  const client = async (): Promise<void> => {
    while (restarting && !exit && accepted.length < MAX_CREATES) {
      const r = await fetch(`${b.url}/v3/${PROJECT}/volumes`, { method: 'POST', headers: HEADERS, body: JSON.stringify({ volume: { size: 1 } }) }).catch(() => undefined);
      if (!r) continue;
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      const body = await r.json() as { volume?: { id: string } };
      if (r.status === 202) accepted.push(body.volume!.id);
      else if (!answers.has(r.status)) answers.set(r.status, JSON.stringify(body));
      if (r.status !== 202) await new Promise((res) => setTimeout(res, 50));
    }
  };
  const clients = Array.from({ length: 4 }, client);
  for (let i = 0; i < 2; i++) {
    const before = accepted.length;
    await waitFor('creates accepted', async () => accepted.length >= Math.min(before + 10, MAX_CREATES) || exit !== undefined);
    assert.equal(exit, undefined, stderr);
    await restart();
  }
  await waitFor('creates accepted after the restarts', async () => (await fetch(`${b.url}/readyz`)).status === 200 && accepted.length > 0, 60_000);
  restarting = false;
  await Promise.all(clients);
  assert.equal(exit, undefined, `the server ${exit} when its peer restarted: ${stderr.slice(-3000)}`);
  t.diagnostic(`creates accepted ${accepted.length}; answers ${JSON.stringify(Object.fromEntries(statuses))}; ${JSON.stringify(Object.fromEntries(answers))}`);

  // Every accepted create settles as available (its job outlived the restarts).
  const status = async (id: string): Promise<string> => {
    const r = await fetch(`${b.url}/v3/${PROJECT}/volumes/${id}`, { headers: HEADERS });
    return ((await r.json()) as { volume: { status: string } }).volume.status;
  };
  for (const id of accepted) {
    // A wait that times out names the status the volume was left in (and how many were available by then).
    await waitFor(`volume ${id} available`, async () => (await status(id)) === 'available', 120_000).catch(async (err: Error) => {
      const left = await Promise.all(accepted.map(status));
      throw new Error(`${err.message}: it is ${await status(id)}; of ${accepted.length} accepted, ${JSON.stringify(left.reduce<Record<string, number>>((n, x) => ({ ...n, [x]: (n[x] ?? 0) + 1 }), {}))}`);
    });
  }
  assert.deepEqual([...statuses.keys()].filter((s) => s >= 500 && s !== 503), [], 'no answer but 503 while the peer was away');
  assert.equal(exit, undefined, stderr);
}

test('a restart of PostgreSQL under load: the server keeps running, and every create it accepted ends available', { timeout: 240_000 }, async (t) => {
  const pg = await startPostgres();
  t.after(() => pg.stop());
  const database = await pg.createDatabase();
  await restartedUnderLoad(t, { BASALT_DATABASE__CONNECTION: database, BASALT_COORDINATION__BACKEND_URL: database }, () => pg.restart());
});

// Creates whose jobs run while etcd is down wait for it (COORDINATION_UNAVAILABLE does not use up a
// job's attempts): before, every one of them ended in `error` once its 5 attempts had run out.
test('a restart of etcd (the named locks) under load: the server keeps running, and every create it accepted ends available', { timeout: 240_000 }, async (t) => {
  const etcd = await startEtcd();
  t.after(() => etcd.stop());
  await restartedUnderLoad(t, { BASALT_COORDINATION__BACKEND_URL: `etcd3+${etcd.url}?ttl=2` }, () => etcd.restart());
});
