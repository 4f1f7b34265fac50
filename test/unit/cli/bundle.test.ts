/** The bundle bin/basalt.js runs (scripts/bundle.mjs): made from src/, made again when a source changes. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
// @ts-expect-error: a plain ES module without declarations
import { bundledMain } from '../../../scripts/bundle.mjs';

const ROOT = path.resolve(import.meta.dirname, '../../..');

test('the bundle is kept for unchanged sources and made again when one changes', async (t) => {
  // A copy of the checkout's sources, so that the test can change one.
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-bundle-'));
  t.after(() => fs.rmSync(copy, { recursive: true, force: true }));
  fs.cpSync(path.join(ROOT, 'src'), path.join(copy, 'src'), { recursive: true, preserveTimestamps: true });
  const first: string = await bundledMain(copy);
  assert.ok(first.startsWith(path.join(copy, 'bundle') + path.sep) && fs.existsSync(first));
  const built = fs.statSync(first).mtimeMs;
  assert.equal(await bundledMain(copy), first, 'unchanged sources: the same bundle');
  assert.equal(fs.statSync(first).mtimeMs, built, 'not made again');
  const version = path.join(copy, 'src', 'server', 'version.ts');
  fs.appendFileSync(version, '\nexport const BUNDLE_TEST_MARK = 42;\n');
  const second: string = await bundledMain(copy);
  assert.notEqual(second, first, 'a changed source: a new bundle');
  assert.match(fs.readFileSync(second, 'utf8') + fs.readdirSync(path.dirname(second)).map((f) => fs.readFileSync(path.join(path.dirname(second), f), 'utf8')).join(''), /BUNDLE_TEST_MARK/);
});

test('bin/basalt.js runs from the bundle: the CLI answers', () => {
  const out = execFileSync(process.execPath, [path.join(ROOT, 'bin', 'basalt.js'), '--version'], { encoding: 'utf8' });
  const version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  assert.equal(out.trim(), version);
});
