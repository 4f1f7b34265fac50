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

function findRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const manifest = path.join(dir, 'package.json');
    if (fs.existsSync(manifest) && (JSON.parse(fs.readFileSync(manifest, 'utf8')) as { name?: string }).name === 'basalt') return dir;
    if (path.dirname(dir) === dir) throw new Error(`no basalt package.json above ${from}`);
  }
}

/** The folder of Basalt's package.json. */
export const ROOT = findRoot(path.dirname(fileURLToPath(import.meta.url)));

/** A path below {@link ROOT}. */
export function rootPath(...parts: string[]): string {
  return path.join(ROOT, ...parts);
}
