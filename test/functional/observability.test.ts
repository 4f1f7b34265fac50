/**
 * Health and metrics (issue 18, part 3): `/healthz` and `/readyz` answer
 * without credentials, `/metrics` is Prometheus' text format and counts what
 * happened — requests by route template and status, jobs by kind and state,
 * pools, services, NBD connections — and names no project or resource.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nbd } from '../../src/export/index.ts';
import { find, parseMetrics, type Sample } from '../helpers/metrics.ts';
import { openExport, simpleRequest } from '../helpers/nbd-raw.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;

test('/healthz, /readyz and /metrics answer without credentials and count what happened', async (t) => {
  // Leases long enough that no stall of a busy machine lets one run out: the test counts take-overs.
  const s = await startTestServer(t, { env: { BASALT_JOB_LEASE_SECONDS: '60' } });
  const raw = (path: string) => fetch(`${s.url}${path}`);

  assert.equal((await raw('/healthz')).status, 200);
  const ready = await raw('/readyz');
  assert.equal(ready.status, 200);
  const readyBody = await ready.json() as { status: string; checks: Record<string, string>; roles: string[] };
  assert.equal(readyBody.status, 'ready');
  assert.deepEqual(readyBody.checks, { database: 'ok', exports: 'ok' });
  assert.ok(readyBody.roles.includes('volume'));

  const created = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
  assert.equal(created.status, 202);
  const id = created.body.volume.id as string;
  await waitForStatus(s, id, 'available');
  assert.equal((await s.request('GET', `${V}/volumes/nope`)).status, 404);
  const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: id, connector: { host: 'h' } } }, { 'OpenStack-API-Version': 'volume 3.54' });
  const info = a.body.attachment.connection_info.data;
  const conn = await openExport(info.host, info.port, info.export_name);
  t.after(() => conn.sock.destroy());

  const res = await raw('/metrics');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  const samples = parseMetrics(text);
  const posts = find(samples, 'basalt_api_requests_total', { method: 'POST', route: '/v3/:project_id/volumes', status: '202' });
  assert.equal(posts.length, 1);
  assert.equal(posts[0]!.value, 1);
  assert.equal(find(samples, 'basalt_api_requests_total', { method: 'GET', route: '/v3/:project_id/volumes/:id', status: '404' })[0]?.value, 1);
  assert.ok(find(samples, 'basalt_api_request_duration_seconds_count', { method: 'POST', route: '/v3/:project_id/volumes' })[0]!.value >= 1);
  assert.ok(find(samples, 'basalt_jobs', { kind: 'volume.create', state: 'done' })[0]!.value >= 1, 'the create job is counted');
  assert.equal(find(samples, 'basalt_job_lease_takeovers_total')[0]?.value, 0, 'no lease ran out');
  const total = find(samples, 'basalt_pool_capacity_gib', { kind: 'total' });
  assert.ok(total.length >= 1 && total[0]!.value > 0, `pool capacity: ${JSON.stringify(find(samples, 'basalt_pool_capacity_gib'))}`);
  assert.equal(find(samples, 'basalt_pool_capacity_gib', { kind: 'provisioned' }).length, total.length, 'provisioned capacity per pool (as last reported)');
  assert.ok(find(samples, 'basalt_service_heartbeat_age_seconds', { binary: 'cinder-volume' }).length >= 1);
  assert.equal(find(samples, 'basalt_nbd_connections')[0]?.value, 1, 'the open NBD connection');
  assert.ok(find(samples, 'basalt_process_resident_memory_bytes')[0]!.value > 0);
  // Counts and capacities only: no project, attachment or export name shows; a volume id only as the NBD series' label.
  for (const secret of [PROJECT, a.body.attachment.id as string, info.export_name as string]) assert.ok(!text.includes(secret), `metrics name ${secret}`);
  for (const line of text.split('\n').filter((l) => l.includes(id))) assert.match(line, new RegExp(`^basalt_nbd_\\w+\\{volume="${id}",op="\\w+"\\} `), line);
});

for (const plane of ['native', 'event-loop'] as const) {
  test(`${plane}: /metrics counts each volume's NBD requests, bytes and time by operation`, async (t) => {
    const s = await startTestServer(t, { env: { BASALT_NBD_DATA_PLANE: plane } });
    const created = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } });
    const id = created.body.volume.id as string;
    await waitForStatus(s, id, 'available');
    const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: id, connector: { host: 'h' } } }, { 'OpenStack-API-Version': 'volume 3.54' });
    const info = a.body.attachment.connection_info.data;
    const scrape = async (): Promise<Sample[]> => parseMetrics(await (await fetch(`${s.url}/metrics`)).text());
    const value = (samples: Sample[], name: string, op: string): number => find(samples, name, { volume: id, op })[0]?.value ?? 0;

    const conn = await openExport(info.host, info.port, info.export_name);
    for (let i = 0; i < 3; i++) assert.equal((await simpleRequest(conn, nbd.CMD.WRITE, BigInt(i * 65536), 65536, Buffer.alloc(65536, i + 1))).error, 0);
    assert.equal((await simpleRequest(conn, nbd.CMD.READ, 0n, 131072)).error, 0);
    assert.equal((await simpleRequest(conn, nbd.CMD.FLUSH, 0n, 0)).error, 0);
    // The native plane counts a request just after sending its reply: a scrape may come between the two.
    const counted = (what: string, done: (samples: Sample[]) => boolean): Promise<Sample[]> =>
      waitFor(what, async () => { const samples = await scrape(); return done(samples) ? samples : undefined; }, 10_000).catch(async () => scrape());
    // While the connection is open (native: read from its threads' counters) ...
    let samples = await counted('the first requests counted', (x) => value(x, 'basalt_nbd_requests_total', 'flush') === 1);
    assert.equal(value(samples, 'basalt_nbd_requests_total', 'write'), 3);
    assert.equal(value(samples, 'basalt_nbd_bytes_total', 'write'), 3 * 65536);
    assert.equal(value(samples, 'basalt_nbd_requests_total', 'read'), 1);
    assert.equal(value(samples, 'basalt_nbd_bytes_total', 'read'), 131072);
    assert.equal(value(samples, 'basalt_nbd_requests_total', 'flush'), 1);
    assert.ok(value(samples, 'basalt_nbd_request_seconds_total', 'write') > 0);
    // ... and after it ended: the totals never go back.
    conn.sock.destroy();
    await waitFor('the connection to end', async () => find(await scrape(), 'basalt_nbd_connections')[0]?.value === 0);
    const again = await openExport(info.host, info.port, info.export_name);
    t.after(() => again.sock.destroy());
    assert.equal((await simpleRequest(again, nbd.CMD.READ, 0n, 4096)).error, 0);
    samples = await counted('the last read counted', (x) => value(x, 'basalt_nbd_requests_total', 'read') === 2);
    assert.equal(value(samples, 'basalt_nbd_requests_total', 'write'), 3);
    assert.equal(value(samples, 'basalt_nbd_requests_total', 'read'), 2);
    assert.equal(value(samples, 'basalt_nbd_bytes_total', 'read'), 131072 + 4096);
  });
}
