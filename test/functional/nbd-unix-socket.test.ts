/**
 * The export's Unix domain socket (issue 19, part 2): a connector naming the
 * volume service's own host whose hypervisor opens volumes itself
 * (`do_local_attach: false`: no loop device) gets an `nbd+unix://` URI (and
 * `socket`), which QEMU's tools open; the socket is its owner's only; a
 * detach fences the connections made through it as it fences TCP ones;
 * another host gets TCP.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { openExport, simpleRequest } from '../helpers/nbd-raw.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus } from '../helpers/server.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };

test('a host on the service\'s own machine attaches through the Unix socket; a detach fences it', async (t) => {
  const s = await startTestServer(t);
  const volume = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, volume, 'available');
  const services = (await s.request('GET', `${V}/os-services`)).body.services as Array<{ binary: string; host: string }>;
  const ownHost = services.find((x) => x.binary === 'cinder-volume')!.host.split('@')[0]!;

  const local = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: volume, connector: { host: ownHost, do_local_attach: false } } }, MV);
  assert.equal(local.status, 200, JSON.stringify(local.body));
  const data = local.body.attachment.connection_info.data;
  const socket = path.join(s.stateDir, 'nbd', 'nbd.sock');
  assert.equal(data.socket, socket, JSON.stringify(data));
  assert.equal(data.uri, `nbd+unix:///${data.export_name}?socket=${socket}`);
  assert.equal(fs.statSync(socket).mode & 0o777, 0o600, 'the socket is its owner\'s only');
  assert.equal(fs.statSync(path.dirname(socket)).mode & 0o777, 0o700);

  const { stdout } = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', '-c', 'read -P 0x5a 1M 64k', data.uri]);
  assert.doesNotMatch(stdout, /verification failed/);

  // A host elsewhere gets TCP.
  const second = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, second, 'available');
  const other = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: second, connector: { host: 'compute-9' } } }, MV);
  assert.equal(other.status, 200, JSON.stringify(other.body));
  assert.match(other.body.attachment.connection_info.data.uri, /^nbd:\/\/127\.0\.0\.1:\d+\//);
  assert.equal(other.body.attachment.connection_info.data.socket, undefined);
  assert.equal((await s.request('DELETE', `${V}/attachments/${other.body.attachment.id}`, undefined, MV)).status, 200);

  // A connection through the socket is fenced by the detach: its next request gets no answer but the end.
  const conn = await openExport(socket, 0, data.export_name);
  assert.equal((await simpleRequest(conn, 0, 1024n * 1024n, 4096)).data?.[0], 0x5a);
  assert.equal((await s.request('DELETE', `${V}/attachments/${local.body.attachment.id}`, undefined, MV)).status, 200);
  await waitFor('the socket connection dropped', async () => conn.sock.destroyed || conn.sock.readableEnded);
  await assert.rejects(run('nbdinfo', [data.uri]), 'the detached export is gone from the socket too');
});
