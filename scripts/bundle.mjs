// Bundles made by esbuild, ES modules under bundle/:
//
// - the one `bin/basalt.js` runs: src/cli/main.ts, all of src/ it imports and the packages
//   they import (one file, plus a chunk for each module src/ imports lazily), but for the
//   packages named in UNBUNDLED. Every process start pays for loading it: a server, each CLI
//   command, every restart of a killed member. Loading the sources through tsx's loader hooks
//   cost 2.3 s of CPU here, a bundle of src/ alone 1.1 s (more than half of it Node's module
//   loader resolving and reading some 600 package files one by one); with the packages in it a
//   volume service is ready in 0.75 s instead of 1.2 s;
// - the test files (their packages left to node_modules), for scripts/test.sh (`node
//   scripts/bundle.mjs tests FILE…` prints the bundled files, in the same order): each test
//   file's process saves some 1.5 s of CPU against tsx, about 150 files a run. In them
//   `import.meta.dirname`, `.filename` and `.url` are the source file's, as when run through
//   tsx, so that a test finds its fixtures and the helper scripts it starts in their own
//   processes.
//
// A bundle is made again whenever a file it is made from (or this script) changed: its folder
// is named by a hash of their paths, sizes and modification times, so an edited tree never
// runs stale code, and processes starting at once either find it or build it aside and rename
// it into place.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = fileURLToPath(import.meta.url);
const checkout = path.resolve(path.dirname(here), '..');

/** A hash of what a bundle is made from: the files under `dirs`, this script and `extra`. */
function sourcesKey(root, dirs, extra = '') {
  const h = createHash('sha256');
  const add = (file) => {
    const st = fs.statSync(file);
    h.update(`${path.relative(root, file)}\0${st.size}\0${st.mtimeMs}\n`);
  };
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else add(p);
    }
  };
  for (const dir of dirs) walk(dir);
  add(here);
  h.update(extra);
  return h.digest('hex').slice(0, 16);
}

/**
 * Builds `options` (esbuild's) into `dir` unless `done` (a file in it) is
 * there already: aside first, then renamed into place. Prunes the other
 * bundles of `out` a day old, which no process is still loading chunks from.
 */
async function bundleInto(out, dir, done, options) {
  if (fs.existsSync(done)) return;
  const { build } = await import('esbuild');
  fs.mkdirSync(out, { recursive: true });
  const building = fs.mkdtempSync(`${dir}.building-`);
  try {
    await build({
      bundle: true, splitting: true, format: 'esm', platform: 'node', target: 'node20',
      packages: 'external', outdir: building, outExtension: { '.js': '.mjs' },
      // Stack traces name the sources' files and lines (`node --enable-source-maps`).
      sourcemap: 'linked', logLevel: 'warning',
      ...options,
    });
    fs.renameSync(building, dir);
  } catch (err) {
    fs.rmSync(building, { recursive: true, force: true });
    if (!fs.existsSync(done)) throw err; // else another process's build won the race: use it
  }
  const dayAgo = Date.now() - 24 * 3600 * 1000;
  for (const e of fs.readdirSync(out)) {
    const p = path.join(out, e);
    if (p !== dir && fs.statSync(p).mtimeMs < dayAgo) fs.rmSync(p, { recursive: true, force: true });
  }
}

/**
 * The bundle's entry (built first if the sources changed since the last one).
 * `root`: the checkout whose src/ to bundle into its bundle/ (this one's by default).
 */
export async function bundledMain(root = checkout) {
  const out = path.join(root, 'bundle');
  // The installed packages are in it too: a bundle is made again after `npm ci` changed them.
  const lock = path.join(root, 'node_modules', '.package-lock.json');
  const installed = fs.existsSync(lock) ? `${fs.statSync(lock).mtimeMs}` : '';
  const dir = path.join(out, sourcesKey(root, [path.join(root, 'src')], installed));
  const main = path.join(dir, 'main.mjs');
  await bundleInto(out, dir, main, {
    entryPoints: { main: path.join(root, 'src', 'cli', 'main.ts') },
    packages: 'bundle', external: UNBUNDLED,
    // The packages written as CommonJS call require(); in an ES module it has to be made.
    banner: { js: "import { createRequire as __basaltCreateRequire } from 'node:module'; const require = __basaltCreateRequire(import.meta.url);" },
  });
  return main;
}

/**
 * The packages the `basalt` bundle leaves to node_modules: native code
 * (better-sqlite3), packages that read their own files at run time (etcd3 and
 * gRPC load `.proto` files), the S3 client (large, loaded only for an S3
 * backup target), an optional one pg looks for (pg-native), and the tools.
 */
const UNBUNDLED = ['better-sqlite3', 'etcd3', '@grpc/*', '@aws-sdk/*', '@smithy/*', 'pg-native', 'esbuild', 'tsx'];

/**
 * Gives each module the `import.meta.dirname`, `.filename` and `.url` of its
 * source file rather than of the bundle (what tsx gives it).
 */
const sourceImportMeta = {
  name: 'source-import-meta',
  setup(b) {
    b.onLoad({ filter: /\.[cm]?ts$/ }, async (args) => {
      const text = await fs.promises.readFile(args.path, 'utf8');
      return {
        loader: 'ts',
        contents: !text.includes('import.meta.') ? text : text
          .replace(/\bimport\.meta\.dirname\b/g, JSON.stringify(path.dirname(args.path)))
          .replace(/\bimport\.meta\.filename\b/g, JSON.stringify(args.path))
          .replace(/\bimport\.meta\.url\b/g, JSON.stringify(pathToFileURL(args.path).href)),
      };
    });
  },
};

/**
 * The bundled test files for `files` (paths relative to `root`), in their
 * order, at the same relative paths under the bundle's folder (so that a
 * path still says which kind of test it is). The folder's name covers the
 * checkout's place too: the bundle names the sources' absolute paths.
 */
export async function bundledTests(files, root = checkout) {
  const out = path.join(root, 'bundle');
  const dir = path.join(out, `tests-${sourcesKey(root, [path.join(root, 'src'), path.join(root, 'test')], `${root}\0${files.join('\0')}`)}`);
  const outputs = files.map((f) => path.join(dir, f.replace(/\.ts$/, '.mjs')));
  await bundleInto(out, dir, outputs[0], {
    entryPoints: files.map((f) => ({ in: path.join(root, f), out: f.replace(/\.ts$/, '') })),
    plugins: [sourceImportMeta],
  });
  return outputs;
}

if (process.argv[1] === here && process.argv[2] === 'tests') {
  process.stdout.write((await bundledTests(process.argv.slice(3))).map((f) => `${f}\n`).join(''));
}
