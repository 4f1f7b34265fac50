/**
 * Replication between backends that no one process serves (issue 16): two
 * Basalt processes on one PostgreSQL, each with its own state directory and
 * one file backend; alpha replicates to beta. The points travel through
 * beta's process's NBD export (TLS-PSK over TCP: the processes have the host
 * names of two machines); then alpha's process is killed
 * (SIGKILL) and an admin fails alpha over through beta's API: the volume is
 * served from beta's copy, with the data of its last point.
 */
import assert from 'node:assert/strict';
import readline from 'node:readline';
import { test } from 'node:test';
import { bytesOf, fileOf, writePattern } from '../helpers/backends.ts';
import { backendConfig, twoProcesses } from '../helpers/two-processes.ts';
import { kill9, spawnBasalt } from '../helpers/process.ts';
import { PROJECT, request, waitFor } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;

test('points ship to a backend another process serves, and it takes over when the primary\'s process dies', { timeout: 180_000 }, async (t) => {
  const { stateA, stateB, common, procs } = await twoProcesses(t);
  // Host names of two machines: alpha reaches beta's export over TCP with TLS-PSK, not through beta's Unix socket.
  const a = await spawnBasalt({ ...common, BASALT_HOST: 'node-a', BASALT_STATE_DIR: stateA, BASALT_CONFIG: backendConfig(stateA, 'alpha', ['replication_device = backend_id:beta']) });
  procs.push(a.child);
  const shippedVia: string[] = [];
  readline.createInterface({ input: a.child.stdout! }).on('line', (line) => {
    try {
      const e = JSON.parse(line) as { msg?: string; via?: string };
      if (e.msg === 'replication point shipped') shippedVia.push(e.via ?? '');
    } catch { /* not a log line */ }
  });
  const b = await spawnBasalt({ ...common, BASALT_HOST: 'node-b', BASALT_STATE_DIR: stateB, BASALT_CONFIG: backendConfig(stateB, 'beta') }, 'api,volume');
  procs.push(b.child);
  const onA = (method: string, url: string, body?: unknown) => request(a.url!, method, url, body);
  const onB = (method: string, url: string, body?: unknown) => request(b.url!, method, url, body);

  assert.equal((await onA('POST', `${V}/types`, { volume_type: { name: 'repl', extra_specs: { replication_enabled: '<is> True', 'basalt:replication_rpo_seconds': '1' } } })).status, 200);
  const created = await onA('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'repl' } });
  assert.equal(created.status, 202, JSON.stringify(created.body));
  const id = created.body.volume.id as string;
  await waitFor('available', async () => (await onA('GET', `${V}/volumes/${id}`)).body.volume.status === 'available');
  writePattern(fileOf(stateA, 'alpha', id), [0, 300 * MiB], MiB);
  const written = Date.now();
  const shipped = await waitFor('a point after the writes', async () => {
    const r = (await onA('GET', `${V}/volumes/${id}/replication`)).body.replication;
    return r.state === 'enabled' && Date.parse(`${r.last_point_at}Z`) > written && r;
  });
  assert.match(shipped.secondary.host, /^node-b@beta#/);
  // The log line follows the point's commit, which the API may show first.
  await waitFor('the shipment logged', async () => shippedVia.length > 0);
  assert.ok(shippedVia.every((via) => /on 127\.0\.0\.1:\d+$/.test(via)), `shipped over TCP: ${shippedVia.join(', ')}`);
  for (const at of [0, 300 * MiB]) assert.ok(bytesOf(fileOf(stateB, 'beta', id), at, MiB).equals(bytesOf(fileOf(stateA, 'alpha', id), at, MiB)), 'the copy in beta\'s directory');
  const alpha = ((await onB('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string }>).find((s) => s.host.endsWith('@alpha'))!;

  // The primary's process dies; beta's API and volume service fail it over.
  await kill9(a.child);
  const r = await onB('PUT', `${V}/os-services/failover_host`, { host: alpha.host, backend_id: 'beta' });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitFor('failed over', async () => {
    const v = (await onB('GET', `${V}/volumes/${id}`)).body.volume;
    return v.replication_status === 'failed-over' && /@beta#/.test(v['os-vol-host-attr:host']);
  });
  // The job marks the service failed over once every volume has moved: a moment after the volume shows it.
  const alphaService = async () => ((await onB('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string; replication_status: string; active_backend_id: string }>)
    .filter((s) => s.host === alpha.host).map((s) => [s.replication_status, s.active_backend_id]);
  await waitFor('alpha\'s service failed over', async () => (await alphaService())[0]?.[0] !== 'failing-over');
  assert.deepEqual(await alphaService(), [['failed-over', 'beta']]);
  // A failback while alpha is unreachable (counted down: no heartbeat for service_down_time) is refused, saying why.
  await waitFor('alpha counted down', async () => {
    const all = (await onB('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string; state: string }>;
    return all.find((s) => s.host === alpha.host)?.state === 'down';
  });
  const back = await onB('PUT', `${V}/os-services/failover_host`, { host: alpha.host, backend_id: 'default' });
  assert.equal(back.status, 400);
  assert.match(back.body.badRequest.message, /unreachable/);
});
