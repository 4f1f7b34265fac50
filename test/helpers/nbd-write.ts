/** Writing to a volume the way a host does: through an attachment's NBD export, which records what changed for incremental backups. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { PROJECT, waitForStatus, type TestServer } from './server.ts';

const run = promisify(execFile);
const MV = { 'OpenStack-API-Version': 'volume 3.54' };

/**
 * Attaches a volume over NBD, runs one qemu-io command on it (e.g. `write -P 0x63 0 4k`),
 * and detaches it. A write to the volume's file itself, behind Basalt's back, is one no
 * incremental backup can know of.
 */
export async function writeOverNbd(s: TestServer, vol: string, command: string): Promise<void> {
  const V = `/v3/${PROJECT}`;
  const connector = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' };
  const a = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: vol, connector } }, MV);
  assert.equal(a.status, 200, JSON.stringify(a.body));
  await run('qemu-io', ['-f', 'raw', '-c', command, a.body.attachment.connection_info.data.uri as string]);
  assert.equal((await s.request('DELETE', `${V}/attachments/${a.body.attachment.id}`, undefined, MV)).status, 200);
  await waitForStatus(s, vol, 'available');
}
