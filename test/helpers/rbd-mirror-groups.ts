/**
 * What the group replication tests on an rbd backend with rbd-mirror share
 * (test/functional/rbd-mirror-group*.test.ts): the API calls they make and a
 * server whose backend names the pair's secondary as `site-b`.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { CephPair } from './ceph-pair.ts';
import { PROJECT, startTestServer, type TestServer } from './server.ts';

type Cluster = CephPair['primary'];

export const V = `/v3/${PROJECT}`;
/** 3.38 for the group actions, 3.44 for completing an attachment. */
export const MV = { 'OpenStack-API-Version': 'volume 3.44' };

/** `rbd info`'s mirroring of an image (undefined: not mirrored). */
export async function mirroring(c: Cluster, pool: string, image: string): Promise<{ mode: string; state: string; primary: boolean } | undefined> {
  return (JSON.parse(await c.rbd('info', '--format', 'json', `${pool}/${image}`)) as { mirroring?: { mode: string; state: string; primary: boolean } }).mirroring;
}

export async function post(s: TestServer, p: string, body: unknown, status: number, headers: Record<string, string> = MV): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await s.request('POST', `${V}${p}`, body, headers);
  assert.equal(r.status, status, `${p} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
  return r.body;
}

export const action = (s: TestServer, g: string, body: unknown, status: number) => post(s, `/groups/${g}/action`, body, status);
export const group = async (s: TestServer, id: string) => (await s.request('GET', `${V}/groups/${id}`, undefined, MV)).body.group;
export const volume = async (s: TestServer, id: string) => (await s.request('GET', `${V}/volumes/${id}`)).body.volume;

/** Attaches `vol` through the attachments API (the volume ends in-use) and returns its connection info's `data` and the attachment's id. */
export async function attach(s: TestServer, vol: string): Promise<Record<string, unknown> & { attachment: string }> {
  const id = (await post(s, '/attachments', { attachment: { volume_uuid: vol, instance_uuid: '11111111-2222-3333-4444-555555555555' } }, 200)).attachment.id as string;
  const r = await s.request('PUT', `${V}/attachments/${id}`, { attachment: { connector: { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' } } }, MV);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal((await s.request('POST', `${V}/attachments/${id}/action`, { 'os-complete': null }, MV)).status, 204);
  return { ...r.body.attachment.connection_info.data, attachment: id };
}

/** A Basalt whose rbd backend `ceph` (on the primary, pool `pool`, with `extra` options) names the secondary as replication target `site-b`. */
export async function mirroredServer(t: Parameters<typeof startTestServer>[0], pair: CephPair, pool: string, extra: string[] = []): Promise<TestServer> {
  const { primary: a, secondary: b } = pair;
  return startTestServer(t, {
    ini: [
      '[DEFAULT]', 'enabled_backends = ceph',
      '[ceph]', 'volume_driver = rbd', `rbd_pool = ${pool}`, `rbd_user = ${a.user}`, `rbd_ceph_conf = ${a.confPath}`, `rbd_keyring_conf = ${a.keyringPath}`, ...extra,
      `replication_device = backend_id:site-b, conf:${b.confPath}, user:${b.user}, keyring:${b.keyringPath}`,
    ].join('\n'),
  });
}


/** The `ceph` backend's volume service as `os-services` shows it (its replication status and active backend). */
export async function volumeService(s: TestServer): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await s.request('GET', `${V}/os-services?binary=cinder-volume`);
  return (r.body.services as Array<{ host: string }>).find((x) => x.host.endsWith('@ceph'));
}

/**
 * The sha256 of an image's head, exported whole through `rbd export`; read
 * as a stream, for the server shares this process: hashing 1 GiB at once
 * would hold its heartbeats past the service's down time.
 */
export async function imageDigest(c: Cluster, pool: string, image: string): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-mirror-group-'));
  try {
    const file = path.join(dir, 'image');
    await c.rbd('export', '--no-progress', `${pool}/${image}`, file);
    const hash = createHash('sha256');
    await pipeline(fs.createReadStream(file), hash);
    return hash.digest('hex');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Random 4 KiB writes to an image through librbd (`rbd bench`'s own bytes). */
export async function scribble(c: Cluster, pool: string, image: string, size = '4K'): Promise<void> {
  await c.rbd('bench', '--io-type', 'write', '--io-size', size, '--io-total', '2M', '--io-pattern', 'rand', `${pool}/${image}`);
}
