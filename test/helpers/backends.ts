/**
 * Two file backends in one server, for the tests that move volumes between
 * them (migration, retype with migration, attached moves).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { PROJECT, waitFor, waitForStatus, type TestServer } from './server.ts';

const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;

/** A configuration with backends `alpha` and `beta` on the file driver, both served by the one process. */
export const TWO_FILE_BACKENDS = [
  '[DEFAULT]',
  'enabled_backends = alpha, beta',
  '[backend_defaults]',
  'volume_driver = file',
  '[alpha]',
  'volume_backend_name = alpha',
  '[beta]',
  'volume_backend_name = beta',
].join('\n');

/** {@link TWO_FILE_BACKENDS} with `alpha` replicating to `beta` (`replication_device`, issue 16). */
export const REPLICATING_BACKENDS = TWO_FILE_BACKENDS.replace('volume_backend_name = alpha', 'volume_backend_name = alpha\nreplication_device = backend_id:beta');

/** Reads `length` bytes of a file at `offset` (a volume's file, to see what a backend holds). */
export function bytesOf(file: string, offset: number, length: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(length);
    fs.readSync(fd, b, 0, length, offset);
    return b;
  } finally { fs.closeSync(fd); }
}

export const fileOf = (stateDir: string, backend: string, id: string): string => path.join(stateDir, 'volumes', backend, `volume-${id}`);

/** Writes a recognisable pattern at a few offsets of a volume's file (the file driver's storage), leaving holes between. */
export function writePattern(file: string, offsets: readonly number[], bytes = MiB): void {
  const fd = fs.openSync(file, 'r+');
  try {
    for (const at of offsets) fs.writeSync(fd, Buffer.alloc(bytes, (at / MiB) % 251 + 1), 0, bytes, at);
  } finally { fs.closeSync(fd); }
}

/** Writes `bytes` random bytes (they neither compress nor repeat) at the start of `file`, e.g. a detached volume's file, so that a backup or restore of it takes a while. */
export function writeRandom(file: string, bytes: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    for (let at = 0; at < bytes; at += 16 * MiB) fs.writeSync(fd, randomBytes(Math.min(16 * MiB, bytes - at)), 0, Math.min(16 * MiB, bytes - at), at);
  } finally { fs.closeSync(fd); }
}

export async function typeNamed(s: TestServer, name: string): Promise<void> {
  const r = await s.request('POST', `${V}/types`, { volume_type: { name, extra_specs: { volume_backend_name: name } } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

export async function volumeOn(s: TestServer, type: string, size = 1): Promise<{ id: string; host: string }> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size, volume_type: type } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const v = await waitForStatus(s, r.body.volume.id, 'available');
  return { id: v.id, host: v['os-vol-host-attr:host'] };
}

/** The host string of a backend's pool, from the scheduler stats. */
export async function poolOf(s: TestServer, backend: string): Promise<string> {
  return waitFor(`a pool of ${backend}`, async () => {
    const pools = (await s.request('GET', `${V}/scheduler-stats/get_pools`)).body.pools as Array<{ name: string }>;
    return pools.find((p) => p.name.includes(`@${backend}#`))?.name;
  });
}

