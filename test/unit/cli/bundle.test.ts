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
  // Its packages (bundled too): the checkout's, each linked, beside a record of the install of its own.
  fs.mkdirSync(path.join(copy, 'node_modules'));
  for (const name of fs.readdirSync(path.join(ROOT, 'node_modules'))) {
    if (name !== '.package-lock.json') fs.symlinkSync(path.join(ROOT, 'node_modules', name), path.join(copy, 'node_modules', name));
  }
  const installed = path.join(copy, 'node_modules', '.package-lock.json');
  fs.copyFileSync(path.join(ROOT, 'node_modules', '.package-lock.json'), installed);
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
  // `npm ci` again (other versions, say): the record of the install changes, and so does the bundle.
  fs.utimesSync(installed, new Date(), new Date(Date.now() + 5000));
  const third: string = await bundledMain(copy);
  assert.notEqual(third, second, 'packages installed again: a new bundle');
});

test('the bundle holds the packages but for the ones left to node_modules', async () => {
  const main: string = await bundledMain(ROOT);
  const text = fs.readdirSync(path.dirname(main)).filter((f) => f.endsWith('.mjs')).map((f) => fs.readFileSync(path.join(path.dirname(main), f), 'utf8')).join('');
  // What a bundle leaves out, it imports at the top of a file: the Node modules and the packages left to node_modules.
  const imported = new Set([...text.matchAll(/^import [^;]* from "([^"]+)";$/gm)].map((m) => m[1]!).filter((m) => !m.startsWith('node:') && !m.startsWith('./') && m !== 'crypto'));
  assert.deepEqual([...imported].sort(), ['@aws-sdk/client-s3', 'better-sqlite3'],
    'imported from node_modules: better-sqlite3 (native code) and the S3 client (by the chunk of an S3 backup target, loaded when one is used)');
});

test('bin/basalt.js runs from the bundle: the CLI answers', () => {
  const out = execFileSync(process.execPath, [path.join(ROOT, 'bin', 'basalt.js'), '--version'], { encoding: 'utf8' });
  const version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  assert.equal(out.trim(), version);
});
