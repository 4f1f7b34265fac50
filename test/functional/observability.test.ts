/**
 * Health and metrics (issue 18, part 3): `/healthz` and `/readyz` answer
 * without credentials, `/metrics` is Prometheus' text format and counts what
 * happened — requests by route template and status, jobs by kind and state,
 * pools, services, NBD connections — and names no project or resource.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openExport } from '../helpers/nbd-raw.ts';
import { PROJECT, startTestServer, waitForStatus } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;

/** A sample of the text format: name, labels, value. */
interface Sample { name: string; labels: Record<string, string>; value: number }

/** Parses Prometheus' text exposition format (0.0.4): every sample line, checking each line's shape. */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of m[2] ? m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g) : []) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

const find = (samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

test('/healthz, /readyz and /metrics answer without credentials and count what happened', async (t) => {
  const s = await startTestServer(t);
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
  const total = find(samples, 'basalt_pool_capacity_gib', { kind: 'total' });
  assert.ok(total.length >= 1 && total[0]!.value > 0, `pool capacity: ${JSON.stringify(find(samples, 'basalt_pool_capacity_gib'))}`);
  assert.equal(find(samples, 'basalt_pool_capacity_gib', { kind: 'provisioned' }).length, total.length, 'provisioned capacity per pool (as last reported)');
  assert.ok(find(samples, 'basalt_service_heartbeat_age_seconds', { binary: 'cinder-volume' }).length >= 1);
  assert.equal(find(samples, 'basalt_nbd_connections')[0]?.value, 1, 'the open NBD connection');
  assert.ok(find(samples, 'basalt_process_resident_memory_bytes')[0]!.value > 0);
  // Counts and capacities only: no project, volume or attachment shows.
  for (const secret of [PROJECT, id, a.body.attachment.id as string, info.export_name as string]) assert.ok(!text.includes(secret), `metrics name ${secret}`);
});
