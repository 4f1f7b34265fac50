// The bundle `bin/basalt.js` runs: src/cli/main.ts and all of src/ it imports, made by
// esbuild into ES modules under bundle/ (one file, plus a chunk for each module src/
// imports lazily), packages left to node_modules. Loading it costs about half the CPU of
// loading the sources through tsx's loader hooks (1.1 s against 2.3 s here), paid by every
// process start: a server, each CLI command, every restart of a killed member.
//
// It is made again whenever a file under src/ (or this script) changed: its folder is named
// by a hash of their paths, sizes and modification times, so an edited tree never runs
// stale code, and processes starting at once either find it or build it aside and rename
// it into place.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(import.meta.url);

/** A hash of what the bundle is made from. */
function sourcesKey(root, src) {
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
  walk(src);
  add(here);
  return h.digest('hex').slice(0, 16);
}

/**
 * The bundle's entry (built first if the sources changed since the last one).
 * `root`: the checkout whose src/ to bundle into its bundle/ (this one's by default).
 */
export async function bundledMain(root = path.resolve(path.dirname(here), '..')) {
  const src = path.join(root, 'src');
  const out = path.join(root, 'bundle');
  const dir = path.join(out, sourcesKey(root, src));
  const main = path.join(dir, 'main.mjs');
  if (fs.existsSync(main)) return main;
  const { build } = await import('esbuild');
  fs.mkdirSync(out, { recursive: true });
  const building = fs.mkdtempSync(`${dir}.building-`);
  try {
    await build({
      entryPoints: { main: path.join(src, 'cli', 'main.ts') },
      bundle: true, splitting: true, format: 'esm', platform: 'node', target: 'node20',
      packages: 'external', outdir: building, outExtension: { '.js': '.mjs' },
      // Stack traces name the sources' files and lines (`node --enable-source-maps`).
      sourcemap: 'linked', logLevel: 'warning',
    });
    fs.renameSync(building, dir);
  } catch (err) {
    fs.rmSync(building, { recursive: true, force: true });
    if (!fs.existsSync(main)) throw err; // else another process's build won the race: use it
  }
  // Earlier bundles a day old: no process started from them is still loading chunks.
  const dayAgo = Date.now() - 24 * 3600 * 1000;
  for (const e of fs.readdirSync(out)) {
    const p = path.join(out, e);
    if (p !== dir && fs.statSync(p).mtimeMs < dayAgo) fs.rmSync(p, { recursive: true, force: true });
  }
  return main;
}
