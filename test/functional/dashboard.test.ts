/**
 * The web dashboard (issue 18 part 2), in Debian's Chromium driven by
 * Playwright (playwright-core; scripts/install-test-tools.sh installs the
 * browser): it signs in with a token, clicks through every page and checks
 * what each shows against the API's own answers for the same token — pool
 * capacity (plotted), volumes, snapshots, backups and attachments with their
 * state and the reason of an error, services and clusters with their
 * heartbeat, and events arriving live (the project's event stream). Each page's screenshot is saved and its
 * path printed (TEST_OUTPUT_DIR, else a temporary folder that is kept).
 * Disabled (the default), /dashboard and its routes are the API's plain 404.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { Page } from 'playwright-core';
import { browser, cell, cellIs, open, rowIds, screenshotDir } from '../helpers/dashboard-page.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const MV = { 'OpenStack-API-Version': 'volume 3.70' };
const EXPERIMENTAL = { ...MV, 'OpenStack-API-Experimental': 'true' };
/** Creates a volume and waits for `status`. */
async function volume(s: TestServer, body: Record<string, unknown>, status: string): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: body }, MV);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitForStatus(s, r.body.volume.id, status);
  return r.body.volume.id;
}

test('the dashboard shows what the API says, page by page, with live events', async (t) => {
  const s = await startTestServer(t, {
    env: {
      BASALT_DASHBOARD_ENABLED: 'true',
      // A small pool, so a large volume fits nowhere and ends in error with a user message.
      BASALT_BACKEND_DEFAULTS__TOTAL_CAPACITY_GB: '20', BASALT_BACKEND_DEFAULTS__MAX_OVER_SUBSCRIPTION_RATIO: '1',
    },
  });
  // What there is to see: a volume with a snapshot, a backup and an attachment, and one that failed.
  const vol = await volume(s, { size: 1, name: 'dash-data' }, 'available');
  const snap = await s.request('POST', `${V}/snapshots`, { snapshot: { volume_id: vol, name: 'dash-snap' } }, MV);
  assert.equal(snap.status, 202, JSON.stringify(snap.body));
  const snapId = snap.body.snapshot.id as string;
  await waitFor('snapshot available', async () => (await s.request('GET', `${V}/snapshots/${snapId}`)).body.snapshot.status === 'available');
  const backup = await s.request('POST', `${V}/backups`, { backup: { volume_id: vol, name: 'dash-backup' } }, MV);
  assert.equal(backup.status, 202, JSON.stringify(backup.body));
  const backupId = backup.body.backup.id as string;
  await waitFor('backup available', async () => (await s.request('GET', `${V}/backups/${backupId}`)).body.backup.status === 'available');
  const failed = await volume(s, { size: 500, name: 'dash-too-big' }, 'error');
  const attachment = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, instance_uuid: '11111111-2222-3333-4444-555555555555' } }, MV);
  assert.equal(attachment.status, 200, JSON.stringify(attachment.body));
  const attachmentId = attachment.body.attachment.id as string;

  const shots = screenshotDir();
  let n = 0;
  const shoot = async (page: Page, name: string): Promise<void> => {
    const file = path.join(shots, `${String(++n).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    t.diagnostic(`screenshot: ${file}`);
  };

  const context = await browser(t);
  const page = await context.newPage();
  const consoleErrors: string[] = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  const failedRequests: string[] = [];
  page.on('response', (r) => { if (r.status() >= 400) failedRequests.push(`${r.status()} ${new URL(r.url()).pathname}`); });

  // Sign in as the admin of the project, as the API's noauth strategy takes it.
  const response = await page.goto(`${s.url}/dashboard/`);
  assert.equal(response?.status(), 200);
  assert.match(response?.headers()['content-security-policy'] ?? '', /default-src 'self'/);
  await page.locator('[data-testid="token"]').waitFor();
  await shoot(page, 'sign-in');
  await page.fill('[data-testid="token"]', `admin:${PROJECT}`);
  await page.click('[data-testid="sign-in"]');

  // Capacity: every pool get_pools lists, its latest sample as the API reports it, plotted once two samples exist.
  await open(page, 'capacity');
  const pools = (await s.request('GET', `${V}/scheduler-stats/get_pools?detail=true`, undefined, MV)).body.pools as Array<{ name: string; capabilities: Record<string, number> }>;
  assert.ok(pools.length > 0);
  for (const p of pools) {
    await cellIs(page, 'pools', p.name, 'total', `${p.capabilities.total_capacity_gb} GiB`);
    await waitFor(`a plotted line for ${p.name}`, async () => (await page.locator(`[data-testid="capacity-chart"][data-pool="${p.name}"] polyline`).count()) === 3, 30_000);
  }
  const history = (await s.request('GET', `${V}/dashboard/pool-history`, undefined, EXPERIMENTAL)).body.pools as Array<{ name: string; samples: Array<Record<string, number>> }>;
  assert.deepEqual(history.map((h) => h.name).sort(), pools.map((p) => p.name).sort());
  for (const h of history) {
    const latest = h.samples[h.samples.length - 1]!;
    await cellIs(page, 'pools', h.name, 'free', `${latest.free_capacity_gb} GiB`);
  }
  await shoot(page, 'capacity');

  // Volumes: each one the API lists, with its status; the failed one with the API's user message for it.
  await open(page, 'volumes');
  const volumes = (await s.request('GET', `${V}/volumes/detail?all_tenants=1`, undefined, MV)).body.volumes as Array<{ id: string; status: string; size: number; name: string }>;
  assert.deepEqual(new Set(volumes.map((v) => v.id)), new Set([vol, failed]));
  for (const v of volumes) {
    await cellIs(page, 'volumes', v.id, 'status', v.status);
    await cellIs(page, 'volumes', v.id, 'name', v.name);
    await cellIs(page, 'volumes', v.id, 'size', `${v.size} GiB`);
  }
  assert.deepEqual(new Set(await rowIds(page, 'volumes')), new Set(volumes.map((v) => v.id)));
  const messages = (await s.request('GET', `${V}/messages?resource_uuid=${failed}`, undefined, MV)).body.messages as Array<{ user_message: string }>;
  assert.ok(messages.length > 0, 'the failed volume has a user message');
  await cellIs(page, 'volumes', failed, 'reason', messages[0]!.user_message);
  await cellIs(page, 'volumes', vol, 'reason', '—');
  await shoot(page, 'volumes');

  // Snapshots, backups, attachments: as listed, with their states.
  await open(page, 'snapshots');
  const snapshots = (await s.request('GET', `${V}/snapshots/detail?all_tenants=1`, undefined, MV)).body.snapshots as Array<{ id: string; status: string }>;
  assert.deepEqual(snapshots.map((x) => x.id), [snapId]);
  await cellIs(page, 'snapshots', snapId, 'status', snapshots[0]!.status);
  await cellIs(page, 'snapshots', snapId, 'name', 'dash-snap');
  await shoot(page, 'snapshots');

  await open(page, 'backups');
  const backups = (await s.request('GET', `${V}/backups/detail?all_tenants=1`, undefined, MV)).body.backups as Array<{ id: string; status: string; size: number }>;
  assert.deepEqual(backups.map((x) => x.id), [backupId]);
  await cellIs(page, 'backups', backupId, 'status', backups[0]!.status);
  await cellIs(page, 'backups', backupId, 'size', `${backups[0]!.size} GiB`);
  await cellIs(page, 'backups', backupId, 'incremental', 'no');
  await shoot(page, 'backups');

  await open(page, 'attachments');
  const attachments = (await s.request('GET', `${V}/attachments/detail?all_tenants=1`, undefined, MV)).body.attachments as Array<{ id: string; status: string; instance: string }>;
  assert.deepEqual(attachments.map((x) => x.id), [attachmentId]);
  await cellIs(page, 'attachments', attachmentId, 'status', attachments[0]!.status);
  await cellIs(page, 'attachments', attachmentId, 'instance', attachments[0]!.instance);
  await shoot(page, 'attachments');

  // Services and clusters: every one the API lists, up, with a heartbeat as recent as the API's.
  await open(page, 'services');
  const services = (await s.request('GET', `${V}/os-services`, undefined, MV)).body.services as Array<{ binary: string; host: string; state: string; status: string }>;
  assert.ok(services.length >= 3, JSON.stringify(services));
  for (const svc of services) {
    const id = `${svc.binary}@${svc.host}`;
    await cellIs(page, 'services', id, 'state', svc.state);
    await cellIs(page, 'services', id, 'status', svc.status);
    const shown = await cell(page, 'services', id, 'heartbeat').locator('time').getAttribute('datetime');
    assert.ok(shown && Math.abs(Date.now() - Date.parse(shown)) < 30_000, `${id} heartbeat ${shown}`);
  }
  assert.deepEqual(new Set(await rowIds(page, 'services')), new Set(services.map((x) => `${x.binary}@${x.host}`)));
  const clusters = (await s.request('GET', `${V}/clusters/detail`, undefined, MV)).body.clusters as Array<{ name: string; binary: string; state: string; num_hosts: number }>;
  for (const c of clusters) {
    await cellIs(page, 'clusters', `${c.binary}@${c.name}`, 'state', c.state);
    await cellIs(page, 'clusters', `${c.binary}@${c.name}`, 'hosts', String(c.num_hosts));
  }
  await shoot(page, 'services');

  // Events: the project's newest as the API lists them, then, pushed by the project's event stream,
  // one that happens while the page is open.
  await open(page, 'events');
  await waitFor('the event stream open', async () => (await page.locator('[data-testid="live"]').textContent())?.includes('live'));
  const events = (await s.request('GET', `${V}/dashboard/events?limit=10`, undefined, EXPERIMENTAL)).body.events as Array<{ id: string; event: string; to_status: string | null }>;
  assert.ok(events.length > 0);
  for (const e of events) await cellIs(page, 'events', e.id, 'event', e.event);
  const live = await volume(s, { size: 1, name: 'dash-live' }, 'available');
  const liveEvents = (await s.request('GET', `${V}/dashboard/events?limit=100`, undefined, EXPERIMENTAL)).body.events as Array<{ id: string; resource_id: string; to_status: string | null }>;
  const became = liveEvents.find((e) => e.resource_id === live && e.to_status === 'available');
  assert.ok(became, JSON.stringify(liveEvents));
  await cellIs(page, 'events', became.id, 'to', 'available');
  await shoot(page, 'events');
  // Every project's (the admin's all_tenants), polled: the same events, each with its project.
  await page.click('[data-testid="all-projects"]');
  await cellIs(page, 'events', became.id, 'project', PROJECT.slice(0, 8));
  const all = (await s.request('GET', `${V}/dashboard/events?all_tenants=1&limit=10`, undefined, EXPERIMENTAL)).body.events as Array<{ id: string; event: string }>;
  for (const e of all) await cellIs(page, 'events', e.id, 'event', e.event);

  // The same pages with a member's token: what the API refuses a member, the dashboard cannot show either.
  await page.click('[data-testid="sign-out"]');
  await page.fill('[data-testid="token"]', `alice:${PROJECT}`);
  await page.click('[data-testid="sign-in"]');
  await open(page, 'capacity');
  const refused = await s.request('GET', `${V}/dashboard/pool-history`, undefined, { ...EXPERIMENTAL, 'X-Auth-Token': `alice:${PROJECT}` });
  assert.equal(refused.status, 403);
  assert.equal((await page.locator('[data-testid="page-error"]').textContent())?.trim(), refused.body.forbidden.message);
  await shoot(page, 'member-capacity-refused');
  await open(page, 'volumes');
  const asMember = (await s.request('GET', `${V}/volumes/${vol}`, undefined, { ...MV, 'X-Auth-Token': `alice:${PROJECT}` })).body.volume;
  await cellIs(page, 'volumes', vol, 'status', asMember.status);

  // Nothing failed but the member's refusals (the pool history, services and clusters are the admin's).
  assert.deepEqual(failedRequests.filter((r) => !r.startsWith('403 ')), []);
  assert.deepEqual(consoleErrors.filter((e) => !/status of 403/.test(e)), []);
});

test('a failed backup shows the reason the API gives for it', async (t) => {
  // A backup target that cannot be written (its folder's parent is a file): every backup fails.
  const notADir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-dash-')), 'file');
  fs.writeFileSync(notADir, '');
  t.after(() => fs.promises.rm(path.dirname(notADir), { recursive: true, force: true }));
  const s = await startTestServer(t, { env: { BASALT_DASHBOARD_ENABLED: 'true', BASALT_BACKUP_POSIX_PATH: path.join(notADir, 'backups') } });
  const vol = await volume(s, { size: 1 }, 'available');
  const b = await s.request('POST', `${V}/backups`, { backup: { volume_id: vol, name: 'doomed' } }, MV);
  assert.equal(b.status, 202, JSON.stringify(b.body));
  const id = b.body.backup.id as string;
  await waitFor('backup in error', async () => (await s.request('GET', `${V}/backups/${id}`)).body.backup.status === 'error');
  const messages = (await s.request('GET', `${V}/messages?resource_uuid=${id}`, undefined, MV)).body.messages as Array<{ user_message: string }>;
  assert.ok(messages.length > 0, 'the failed backup has a user message');

  const page = await (await browser(t)).newPage();
  await page.goto(`${s.url}/dashboard/#/backups`);
  await page.fill('[data-testid="token"]', `admin:${PROJECT}`);
  await page.click('[data-testid="sign-in"]');
  await page.locator('main[data-page="backups"]').waitFor();
  await cellIs(page, 'backups', id, 'status', 'error');
  await cellIs(page, 'backups', id, 'reason', messages[0]!.user_message);
  const file = path.join(screenshotDir(), 'failed-backup.png');
  await page.screenshot({ path: file, fullPage: true });
  t.diagnostic(`screenshot: ${file}`);
});

test('without dashboard_enabled, /dashboard and its routes are the API\'s plain 404', async (t) => {
  const s = await startTestServer(t);
  for (const p of ['/dashboard', '/dashboard/', '/dashboard/index.html']) {
    const r = await fetch(`${s.url}${p}`);
    assert.equal(r.status, 404, p);
    assert.deepEqual(await r.json(), { itemNotFound: { code: 404, message: 'The resource could not be found.' } });
  }
  for (const p of ['/dashboard/pool-history', '/dashboard/events']) {
    const r = await s.request('GET', `${V}${p}`, undefined, EXPERIMENTAL);
    assert.equal(r.status, 404, p);
  }
  const versions = (await s.request('GET', '/v3/', undefined, MV)).body;
  assert.ok(!JSON.stringify(versions).includes('/dashboard/'), 'no dashboard route is announced');
});

test('enabled, the dashboard\'s routes are experimental and announced as such', async (t) => {
  const s = await startTestServer(t, { env: { BASALT_DASHBOARD_ENABLED: 'true' } });
  assert.equal((await s.request('GET', `${V}/dashboard/events`, undefined, MV)).status, 404, 'without the experimental header');
  const r = await s.request('GET', `${V}/dashboard/events?limit=0`, undefined, EXPERIMENTAL);
  assert.equal(r.status, 400);
  const versions = JSON.stringify((await s.request('GET', '/v3/', undefined, MV)).body);
  for (const route of ['GET /v3/{project_id}/dashboard/pool-history', 'GET /v3/{project_id}/dashboard/events']) assert.ok(versions.includes(route), route);
  // The files are served with the policy that keeps other origins' scripts out.
  const index = await fetch(`${s.url}/dashboard/`);
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type') ?? '', /text\/html/);
  assert.match(await index.text(), /<div id="root">/);
});
