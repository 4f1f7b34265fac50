/**
 * Where Basalt's own files are (package.json, the native addons' builds, the
 * dashboard's build, the sources): the folder of the `basalt` package.json,
 * found upwards from this module. Paths written relative to one source file
 * would be wrong from the bundle `bin/basalt.js` runs (`scripts/bundle.mjs`),
 * which lives elsewhere in the tree; this is right from both.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** What Basalt's package.json says that the code reads. */
export interface Manifest {
  name: string;
  version: string;
}

function findRoot(from: string): { root: string; manifest: Manifest } {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    const manifest = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) as Manifest : undefined;
    if (manifest?.name === 'basalt') return { root: dir, manifest };
    if (path.dirname(dir) === dir) throw new Error(`no basalt package.json above ${from}`);
  }
}

const found = findRoot(path.dirname(fileURLToPath(import.meta.url)));

/** The folder of Basalt's package.json. */
export const ROOT = found.root;

/** Basalt's package.json, read once where {@link ROOT} was found. */
export const MANIFEST: Manifest = found.manifest;

/** A path below {@link ROOT}. */
export function rootPath(...parts: string[]): string {
  return path.join(ROOT, ...parts);
}
