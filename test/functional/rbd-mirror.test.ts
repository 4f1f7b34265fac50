/**
 * RBD backends replicate through Ceph's own rbd-mirror (issue 16 part 4), on
 * two real clusters with an rbd-mirror daemon each (test/helpers/ceph-pair.ts).
 *
 * - The pair itself: pools peered with Ceph's bootstrap tokens and an image
 *   mirrored in snapshot mode through the `rbd` CLI reach the secondary, data
 *   and all (compared against the image itself, not `rbd mirror image
 *   status`, which lags about 30 s on a fresh daemon).
 * - Basalt: an rbd backend whose `replication_device` names the second
 *   cluster peers the pools itself; a volume of a replicated type is
 *   mirrored (snapshot mode, a mirror snapshot each half RPO), its data
 *   reaches the secondary and its `replication_status` goes from `copying`
 *   to `enabled`; a plain volume stays unmirrored. Failover through
 *   `os-services/failover_host` demotes the primary's image and promotes the
 *   secondary's (the data there is the volume's); writes there come back
 *   with failback (`default`), which promotes the primary's image again.
 *   A type with `basalt:rbd_mirror_mode = journal` is mirrored in journal
 *   mode (librbd turns the image's journaling on), its writes reaching the
 *   secondary with no point.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { startCephPair } from '../helpers/ceph-pair.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const pair = await startCephPair();
after(() => pair.stop());
const { primary: a, secondary: b } = pair;

/** The sha256 of an image's head, exported whole through `rbd export`. */
async function imageDigest(c: typeof a, pool: string, image: string): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-mirror-'));
  try {
    const file = path.join(dir, 'image');
    await c.rbd('export', '--no-progress', `${pool}/${image}`, file);
    return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Polls `probe` every 500 ms until it returns true; fails naming `what` after `timeoutMs`. */
async function until(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

test('an image mirrored in snapshot mode reaches the secondary cluster with its data', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-mirror-'));
  const pool = await pair.newPool();
  try {
    // Peering as an operator does it by hand: both pools in image mode, the primary's token imported on the secondary.
    await a.rbd('mirror', 'pool', 'enable', pool, 'image', '--site-name', 'cli-a');
    await b.rbd('mirror', 'pool', 'enable', pool, 'image', '--site-name', 'cli-b');
    const token = path.join(dir, 'token');
    fs.writeFileSync(token, await a.rbd('mirror', 'pool', 'peer', 'bootstrap', 'create', '--site-name', 'cli-a', pool));
    await b.rbd('mirror', 'pool', 'peer', 'bootstrap', 'import', '--site-name', 'cli-b', '--direction', 'rx-tx', pool, token);

    const image = `cli-${randomBytes(4).toString('hex')}`;
    await a.rbd('create', '--size', '32M', `${pool}/${image}`);
    await a.rbd('mirror', 'image', 'enable', `${pool}/${image}`, 'snapshot');
    // Writes at random 4 KiB offsets (rbd bench's own bytes), then a mirror snapshot to ship them.
    await a.rbd('bench', '--io-type', 'write', '--io-size', '4K', '--io-total', '2M', '--io-pattern', 'rand', `${pool}/${image}`);
    await a.rbd('mirror', 'image', 'snapshot', `${pool}/${image}`);
    const want = await imageDigest(a, pool, image);
    assert.notEqual(want, createHash('sha256').update(Buffer.alloc(32 * 1024 * 1024)).digest('hex'), 'the primary holds what was written');
    await until('the secondary image equal to the primary', 120_000, async () => (await imageDigest(b, pool, image)) === want);
    // Each side knows which is which: the secondary's copy is non-primary (it refuses writes until promoted).
    const mirroring = async (c: typeof a) => (JSON.parse(await c.rbd('info', '--format', 'json', `${pool}/${image}`)) as { mirroring?: { mode: string; primary: boolean } }).mirroring;
    assert.deepEqual(await mirroring(a), { ...(await mirroring(a)), mode: 'snapshot', primary: true });
    assert.deepEqual(await mirroring(b), { ...(await mirroring(b)), mode: 'snapshot', primary: false });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

const V = `/v3/${PROJECT}`;

/** `rbd info`'s mirroring of an image (undefined: not mirrored). */
async function mirroring(c: typeof a, pool: string, image: string): Promise<{ mode: string; state: string; primary: boolean } | undefined> {
  return (JSON.parse(await c.rbd('info', '--format', 'json', `${pool}/${image}`)) as { mirroring?: { mode: string; state: string; primary: boolean } }).mirroring;
}

/** A Basalt whose rbd backend `ceph` (on the primary, pool `pool`) names the secondary as replication target `site-b`. */
async function mirroredServer(t: Parameters<typeof startTestServer>[0], pool: string): Promise<TestServer> {
  return startTestServer(t, {
    ini: [
      '[DEFAULT]', 'enabled_backends = ceph',
      '[ceph]', 'volume_driver = rbd', `rbd_pool = ${pool}`, `rbd_user = ${a.user}`, `rbd_ceph_conf = ${a.confPath}`, `rbd_keyring_conf = ${a.keyringPath}`,
      `replication_device = backend_id:site-b, conf:${b.confPath}, user:${b.user}, keyring:${b.keyringPath}`,
    ].join('\n'),
  });
}

async function volume(s: TestServer, id: string): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return (await s.request('GET', `${V}/volumes/${id}`)).body.volume;
}

async function volumeService(s: TestServer): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await s.request('GET', `${V}/os-services?binary=cinder-volume`);
  return (r.body.services as Array<{ host: string }>).find((x) => x.host.endsWith('@ceph'));
}

test('a replicated volume on rbd is mirrored by rbd-mirror, shows its mirror state, fails over and back through the API', async (t) => {
  const pool = await pair.newPool();
  const s = await mirroredServer(t, pool);
  const type = await s.request('POST', `${V}/types`, { volume_type: { name: 'mirrored', extra_specs: { replication_enabled: '<is> True', 'basalt:replication_rpo_seconds': '2' } } });
  assert.equal(type.status, 200, JSON.stringify(type.body));
  const created = await s.request('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'mirrored' } });
  assert.equal(created.status, 202, JSON.stringify(created.body));
  const id = created.body.volume.id as string;
  const plain = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, id, 'available');
  await waitForStatus(s, plain, 'available');
  const image = `volume-${id}`;

  // Basalt peered the pools and mirrors the replicated volume's image in snapshot mode; the plain one is not mirrored.
  await waitFor('the image mirrored', async () => (await mirroring(a, pool, image))?.state === 'enabled', 60_000);
  assert.deepEqual(await mirroring(a, pool, image), { ...(await mirroring(a, pool, image)), mode: 'snapshot', primary: true });
  assert.equal((await mirroring(a, pool, `volume-${plain}`))?.state ?? 'disabled', 'disabled');
  assert.ok(['copying', 'enabled'].includes((await volume(s, id)).replication_status));
  assert.equal((await volume(s, plain)).replication_status, 'disabled');

  // Writes on the primary reach the secondary with the next point (a mirror snapshot each second).
  await a.rbd('bench', '--io-type', 'write', '--io-size', '4K', '--io-total', '2M', '--io-pattern', 'rand', `${pool}/${image}`);
  const written = await imageDigest(a, pool, image);
  await until('the secondary image equal to the primary', 120_000, async () => (await imageDigest(b, pool, image)) === written);
  assert.equal((await mirroring(b, pool, image))?.primary, false);
  // rbd-mirror's status reaches Basalt (it lags about 30 s on a fresh daemon).
  await waitFor('replication_status enabled', async () => (await volume(s, id)).replication_status === 'enabled', 120_000);

  // Failover to site-b: the secondary's image is promoted (the primary's demoted), and holds the volume's data.
  const put = (body: unknown) => s.request('PUT', `${V}/os-services/failover_host`, body);
  const svc = await volumeService(s);
  assert.match((await put({ host: svc.host, backend_id: 'site-c' })).body.badRequest.message, /site-c is not a replication target/);
  assert.equal((await put({ host: svc.host, backend_id: 'site-b' })).status, 202);
  await waitFor('failed over', async () => (await volumeService(s)).replication_status === 'failed-over', 180_000);
  assert.equal((await volumeService(s)).active_backend_id, 'site-b');
  assert.equal((await volume(s, id)).replication_status, 'failed-over');
  assert.deepEqual([(await volume(s, plain)).status, (await volume(s, plain)).replication_status], ['error', 'not-capable']);
  assert.equal((await mirroring(b, pool, image))?.primary, true);
  assert.equal((await mirroring(a, pool, image))?.primary, false);
  assert.equal(await imageDigest(b, pool, image), written, 'the promoted copy holds every write of the last point');

  // Written while failed over (as a host with the secondary's connection info would), then failback brings it home.
  await b.rbd('bench', '--io-type', 'write', '--io-size', '64K', '--io-total', '4M', '--io-pattern', 'rand', `${pool}/${image}`);
  const later = await imageDigest(b, pool, image);
  assert.notEqual(later, written);
  assert.equal((await put({ host: svc.host, backend_id: 'default' })).status, 202);
  await waitFor('failed back', async () => (await volumeService(s)).replication_status === 'enabled', 240_000);
  assert.equal((await volume(s, id)).replication_status, 'enabled');
  assert.equal((await mirroring(a, pool, image))?.primary, true);
  assert.equal((await mirroring(b, pool, image))?.primary, false);
  assert.equal(await imageDigest(a, pool, image), later, 'the primary holds every write made while failed over');
});

test('a type asking for journal mode has its volumes mirrored write by write through the image journal', async (t) => {
  const pool = await pair.newPool();
  const s = await mirroredServer(t, pool);
  const type = await s.request('POST', `${V}/types`, { volume_type: { name: 'journaled', extra_specs: { replication_enabled: '<is> True', 'basalt:rbd_mirror_mode': 'journal' } } });
  assert.equal(type.status, 200, JSON.stringify(type.body));
  const id = (await s.request('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'journaled' } })).body.volume.id as string;
  await waitForStatus(s, id, 'available');
  const image = `volume-${id}`;
  await waitFor('the image mirrored', async () => (await mirroring(a, pool, image))?.state === 'enabled', 60_000);
  assert.equal((await mirroring(a, pool, image))?.mode, 'journal');
  // Journal mode needs no point: the writes reach the secondary by themselves (the RPO's points are snapshot mode's).
  await a.rbd('bench', '--io-type', 'write', '--io-size', '4K', '--io-total', '1M', '--io-pattern', 'rand', `${pool}/${image}`);
  const written = await imageDigest(a, pool, image);
  await until('the secondary image equal to the primary', 120_000, async () => (await imageDigest(b, pool, image)) === written);
  assert.equal((await mirroring(b, pool, image))?.primary, false);
});
