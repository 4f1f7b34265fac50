/**
 * A move between backends that no one process serves (issue 12, part 5):
 * two Basalt processes on one PostgreSQL, each serving one file backend.
 * The destination's process reads the source through the source process's
 * NBD export (TLS-PSK, an export made for the move), the row moves, the
 * source's file goes last and the move's export stops resolving; an attached
 * volume cannot move so, and is refused with a message saying why.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import pg from 'pg';
import { fileOf, writePattern } from '../helpers/backends.ts';
import { backendConfig, twoProcesses } from '../helpers/two-processes.ts';
import { spawnBasalt } from '../helpers/process.ts';
import { PROJECT, request, waitFor } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };

test('a volume moves to a backend another process serves, read through the source process\'s export', { timeout: 180_000 }, async (t) => {
  const { database, stateA, stateB, common, procs } = await twoProcesses(t);
  const a = await spawnBasalt({ ...common, BASALT_STATE_DIR: stateA, BASALT_CONFIG: backendConfig(stateA, 'alpha') });
  procs.push(a.child);
  const b = await spawnBasalt({ ...common, BASALT_STATE_DIR: stateB, BASALT_CONFIG: backendConfig(stateB, 'beta') }, 'volume', 'volume service started');
  procs.push(b.child);
  const api = (method: string, url: string, body?: unknown, headers?: Record<string, string>) => request(a.url!, method, url, body, headers);

  for (const name of ['alpha', 'beta']) {
    assert.equal((await api('POST', `${V}/types`, { volume_type: { name, extra_specs: { volume_backend_name: name } } })).status, 200);
  }
  const created = await api('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'alpha' } });
  assert.equal(created.status, 202, JSON.stringify(created.body));
  const id = created.body.volume.id as string;
  await waitFor('available', async () => (await api('GET', `${V}/volumes/${id}`)).body.volume.status === 'available');
  const source = fileOf(stateA, 'alpha', id);
  writePattern(source, [0, 300 * MiB, 1024 * MiB - MiB]);
  const original = fs.readFileSync(source);
  const dest = await waitFor('the beta pool reported', async () => {
    const pools = (await api('GET', `${V}/scheduler-stats/get_pools`)).body.pools as Array<{ name: string }>;
    return pools.find((p) => p.name.includes('@beta#'))?.name;
  });

  const r = await api('POST', `${V}/volumes/${id}/action`, { 'os-migrate_volume': { host: dest } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const moved = await waitFor('moved and the source file gone', async () => {
    const row = (await api('GET', `${V}/volumes/${id}`)).body.volume;
    assert.notEqual(row.migration_status, 'error', 'the move failed');
    return row.migration_status === 'success' && !fs.existsSync(source) ? row : undefined;
  });
  assert.equal(moved.status, 'available');
  assert.equal(moved['os-vol-host-attr:host'], dest);
  assert.ok(fs.readFileSync(fileOf(stateB, 'beta', id)).equals(original), 'the data arrived byte for byte through the export');
  const db = new pg.Client({ connectionString: database });
  await db.connect();
  const exportsLeft = (await db.query('select count(*)::int as n from volume_exports')).rows[0].n;
  await db.end();
  assert.equal(exportsLeft, 0, 'the move\'s export is gone');

  // Attached, it cannot move across processes: the mirror must live where its host's connection is.
  const att = await api('POST', `${V}/attachments`, { attachment: { volume_uuid: id, connector: { host: 'compute-1' } } }, MV);
  assert.equal(att.status, 200, JSON.stringify(att.body));
  assert.equal((await api('POST', `${V}/attachments/${att.body.attachment.id}/action`, { 'os-complete': null }, MV)).status, 204);
  const back = await waitFor('the alpha pool', async () => {
    const pools = (await api('GET', `${V}/scheduler-stats/get_pools`)).body.pools as Array<{ name: string }>;
    return pools.find((p) => p.name.includes('@alpha#'))?.name;
  });
  const refused = await api('POST', `${V}/volumes/${id}/action`, { 'os-migrate_volume': { host: back } });
  assert.equal(refused.status, 400);
  assert.match(refused.body.badRequest.message, /not served by one process: an attached volume moves only between backends one process serves/);
});
