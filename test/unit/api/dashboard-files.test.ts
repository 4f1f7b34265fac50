/**
 * The dashboard's files: served below /dashboard/ with a policy that admits
 * only Basalt's own scripts, and, when the page was never built, a 503 that
 * names the command building it (not a 404 that would look like the option is off).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import Fastify from 'fastify';
import { dashboardFiles } from '../../../src/api/dashboard.ts';

test('a dashboard that was never built answers 503 naming the build command', async (t) => {
  const app = Fastify();
  t.after(() => app.close());
  await app.register(dashboardFiles(path.join(os.tmpdir(), 'basalt-no-such-dist')));
  for (const url of ['/dashboard', '/dashboard/', '/dashboard/assets/index.js']) {
    const r = await app.inject({ url });
    assert.equal(r.statusCode, 503, url);
    assert.match(r.body, /npm run build:dashboard/);
  }
});

test('the built files are served with their type and the content security policy', async (t) => {
  const dist = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-dist-'));
  t.after(() => fs.promises.rm(dist, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dist, 'index.html'), '<!doctype html><div id="root"></div>');
  fs.mkdirSync(path.join(dist, 'assets'));
  fs.writeFileSync(path.join(dist, 'assets', 'app.js'), 'export {};');
  const app = Fastify({ routerOptions: { ignoreTrailingSlash: true } });
  t.after(() => app.close());
  await app.register(dashboardFiles(dist));
  for (const url of ['/dashboard', '/dashboard/']) {
    const r = await app.inject({ url });
    assert.equal(r.statusCode, 200, url);
    assert.match(String(r.headers['content-type']), /text\/html/);
    assert.match(String(r.headers['content-security-policy']), /default-src 'self'/);
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    assert.equal(r.headers['cache-control'], 'no-cache', 'the page names the current assets: asked for again');
  }
  const js = await app.inject({ url: '/dashboard/assets/app.js' });
  assert.equal(js.statusCode, 200);
  assert.match(String(js.headers['content-type']), /javascript/);
  assert.match(String(js.headers['cache-control']), /immutable/, 'assets are named by their content: kept');
  assert.equal((await app.inject({ url: '/dashboard/assets/missing.js' })).statusCode, 404);
});
