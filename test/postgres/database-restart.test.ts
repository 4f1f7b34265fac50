/**
 * PostgreSQL restarted under load (a fast shutdown ends every session, as an
 * operator's restart or a failover of the database does): `basalt server`,
 * with its named locks on PostgreSQL too, keeps running through it, and every
 * create it accepted ends available. A session the server ends while Basalt
 * holds it between two queries (a transaction's, a named lock's) must not take
 * the process down with it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startPostgres } from '../helpers/postgres.ts';
import { spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, tempStateDir, waitFor } from '../helpers/server.ts';

const HEADERS = { 'X-Auth-Token': `admin:${PROJECT}`, 'Content-Type': 'application/json' };

test('a restart of PostgreSQL under load: the server keeps running, and every create it accepted ends available', { timeout: 240_000 }, async (t) => {
  const pg = await startPostgres();
  t.after(() => pg.stop());
  const database = await pg.createDatabase();
  const b = await spawnBasalt({
    ...FAST_TIMINGS, BASALT_DATABASE__CONNECTION: database, BASALT_COORDINATION__BACKEND_URL: database,
    BASALT_STATE_DIR: tempStateDir(t), BASALT_PORT: '0', BASALT_QUOTA_VOLUMES: '-1', BASALT_QUOTA_GIGABYTES: '-1',
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
    while (restarting && !exit) {
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
    await waitFor('creates accepted', async () => accepted.length >= before + 10 || exit !== undefined);
    assert.equal(exit, undefined, stderr);
    await pg.restart();
  }
  await waitFor('creates accepted after the restarts', async () => (await fetch(`${b.url}/readyz`)).status === 200 && accepted.length > 0, 60_000);
  restarting = false;
  await Promise.all(clients);
  assert.equal(exit, undefined, `the server ${exit} when PostgreSQL restarted: ${stderr.slice(-3000)}`);
  t.diagnostic(`creates accepted ${accepted.length}; answers ${JSON.stringify(Object.fromEntries(statuses))}; ${JSON.stringify(Object.fromEntries(answers))}`);

  // Every accepted create settles as available (its job outlived the restarts).
  const status = async (id: string): Promise<string> => {
    const r = await fetch(`${b.url}/v3/${PROJECT}/volumes/${id}`, { headers: HEADERS });
    return ((await r.json()) as { volume: { status: string } }).volume.status;
  };
  for (const id of accepted) await waitFor(`volume ${id} available`, async () => (await status(id)) === 'available', 120_000);
  assert.deepEqual([...statuses.keys()].filter((s) => s >= 500 && s !== 503), [], 'no answer but 503 while the database was away');
  assert.equal(exit, undefined, stderr);
});
