/**
 * What the tests make once per machine instead of once per test file: a folder in
 * the temporary folder, named after what made it (a Debian package's version, a
 * script's hash), so that an upgrade or an edit makes a new one. Built aside and
 * renamed into place: files that need it at the same moment never see half of one.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * The folder `name` in the temporary folder, made by `build` (which fills the
 * folder it is given) when this machine does not have it yet.
 */
export function machineCache(name: string, build: (dir: string) => void): string {
  const dir = path.join(os.tmpdir(), name);
  if (fs.existsSync(dir)) return dir;
  const building = fs.mkdtempSync(`${dir}.building-`);
  try {
    build(building);
  } catch (err) {
    fs.rmSync(building, { recursive: true, force: true });
    throw err;
  }
  try {
    fs.renameSync(building, dir);
  } catch {
    fs.rmSync(building, { recursive: true, force: true }); // another file won the race: use its folder
  }
  return dir;
}

/** The installed version of a Debian package, for a cache's name. */
export function debianVersion(pkg: string): string {
  return execFileSync('dpkg-query', ['-W', '-f', '${Version}', pkg], { encoding: 'utf8' }).trim();
}

/** A short hash of a file's bytes, for a cache's name. */
export function fileHash(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex').slice(0, 12);
}
