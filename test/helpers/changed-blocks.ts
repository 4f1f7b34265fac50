/**
 * What the changed-blocks tests share (changed-blocks.test.ts, changed-blocks-paths.test.ts):
 * a volume with data, attach and detach through the attachments API, backups
 * waited for, restores digested, and the bytes a backup read from its log line.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileDigest } from './file-digest.ts';
import { PROJECT, waitFor } from './server.ts';


export const run = promisify(execFile);
export const BIN = path.resolve(import.meta.dirname, '../../bin/basalt.js');
export const V = `/v3/${PROJECT}`;
export const MiB = 1024 ** 2;
export const GiB = 1024 ** 3;
export const MV = { 'OpenStack-API-Version': 'volume 3.54' };
export const CONNECTOR = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' };
/** What the volumes hold before their first backup, written to the file (no backup has a base yet). */
export const DATA = 48 * MiB;

export type Call = (method: string, p: string, body?: unknown, headers?: Record<string, string>) => Promise<{ status: number; body: any }>; // eslint-disable-line @typescript-eslint/no-explicit-any

export function volumeFile(stateDir: string, id: string): string {
  return path.join(stateDir, 'volumes', 'file', `volume-${id}`);
}

/** A volume of 1 GiB holding {@link DATA} bytes of noise at its start. */
export async function volumeWithData(call: Call, stateDir: string): Promise<string> {
  const r = await call('POST', `${V}/volumes`, { volume: { size: 1, name: 'tracked' } });
  const id = r.body.volume.id as string;
  await waitFor('volume available', async () => (await call('GET', `${V}/volumes/${id}`)).body.volume.status === 'available');
  const fh = await fs.promises.open(volumeFile(stateDir, id), 'r+');
  await fh.write(randomBytes(DATA), 0, DATA, 0);
  await fh.close();
  return id;
}

export async function attach(call: Call, vol: string): Promise<{ id: string; uri: string; data: { host: string; port: number; export_name: string } }> {
  const a = await call('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector: CONNECTOR } }, MV);
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.equal((await call('POST', `${V}/attachments/${a.body.attachment.id}/action`, { 'os-complete': null }, MV)).status, 204);
  return { id: a.body.attachment.id, uri: a.body.attachment.connection_info.data.uri, data: a.body.attachment.connection_info.data };
}

export async function detach(call: Call, vol: string, attachmentId: string): Promise<void> {
  assert.equal((await call('DELETE', `${V}/attachments/${attachmentId}`, undefined, MV)).status, 200);
  await waitFor('volume available', async () => (await call('GET', `${V}/volumes/${vol}`)).body.volume.status === 'available');
}

/** Creates a backup and waits for its end; returns its row (status `available`, or `error` when `fails`). */
export async function backup(call: Call, body: Record<string, unknown>, fails = false): Promise<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await call('POST', `${V}/backups`, { backup: body });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return waitFor(`backup ${r.body.backup.id}`, async () => {
    const b = (await call('GET', `${V}/backups/${r.body.backup.id}`)).body.backup;
    if (b.status === 'error' && !fails) throw new Error(`backup failed: ${b.fail_reason}`);
    return b.status === (fails ? 'error' : 'available') && b;
  }, 90_000);
}

/** Restores a backup to a new volume; returns the digest of its first GiB. */
export async function restoredDigest(call: Call, stateDir: string, backupId: string): Promise<string> {
  const r = await call('POST', `${V}/backups/${backupId}/restore`, { restore: {} });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const vol = r.body.restore.volume_id as string;
  await waitFor('restored', async () => (await call('GET', `${V}/volumes/${vol}`)).body.volume.status === 'available', 90_000);
  return fileDigest(volumeFile(stateDir, vol), GiB);
}

/** Bytes a backup read from its volume, from its `backup stored` log line. */
export function bytesRead(lines: readonly string[], backupId: string): number {
  for (const line of lines) {
    const e = JSON.parse(line) as { msg?: string; backup_id?: string; bytes_read?: number };
    if (e.msg === 'backup stored' && e.backup_id === backupId) return e.bytes_read!;
  }
  throw new Error(`no 'backup stored' line for ${backupId}`);
}

