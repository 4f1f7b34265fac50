#!/usr/bin/env node
// Builds Basalt's optional RBD addon (native/rbd: librbd and librados for the
// `rbd` volume driver) into native/rbd/build, apart from the main addon. It is
// built only where Ceph's headers are (Debian: librbd-dev, librados-dev), so
// that `npm ci` succeeds on a machine without them; the driver then says what
// to install when a backend asks for it. Skips the build when the addon is
// newer than its sources. Run by `npm ci` (package.json's install script) and
// by scripts/test.sh (after it installed the test packages).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const dir = path.resolve(import.meta.dirname, '../native/rbd');
const headers = ['/usr/include/rbd/librbd.h', '/usr/include/rados/librados.h'];
const missing = headers.filter((h) => !fs.existsSync(h));
if (missing.length > 0) {
  console.log(`# RBD addon not built: ${missing.join(', ')} missing (install librbd-dev and librados-dev for the rbd volume driver)`);
  process.exit(0);
}
const built = path.join(dir, 'build/Release/basalt_rbd.node');
const sources = ['basalt_rbd.c', 'binding.gyp', '../nbd_backend.h'].map((f) => path.join(dir, f));
if (fs.existsSync(built) && sources.every((s) => fs.statSync(s).mtimeMs <= fs.statSync(built).mtimeMs)) process.exit(0);
// npm names its own node-gyp to the install script; elsewhere take the one npm bundles, then PATH's.
const bundled = path.join(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js');
const gyp = process.env.npm_config_node_gyp || (fs.existsSync(bundled) ? bundled : 'node-gyp');
const [cmd, args] = gyp.endsWith('.js') ? [process.execPath, [gyp]] : [gyp, []];
// Node's own headers when they are installed beside it (npm passes its nodedir setting itself),
// so that a build outside npm needs no download.
const prefix = path.resolve(path.dirname(process.execPath), '..');
const nodedir = process.env.npm_config_nodedir || (fs.existsSync(path.join(prefix, 'include/node/node_api.h')) ? prefix : undefined);
execFileSync(cmd, [...args, 'rebuild', '--directory', dir, ...(nodedir ? [`--nodedir=${nodedir}`] : [])], { stdio: 'inherit' });
