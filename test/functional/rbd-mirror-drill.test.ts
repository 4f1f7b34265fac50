/**
 * The rbd-mirror failover drill (issue 16 parts 4 and 6): a Basalt whose rbd
 * backend mirrors to a second cluster (test/helpers/ceph-pair.ts, a primary
 * of its own so that it can be lost); a librbd client (the RBD addon, as a
 * hypervisor with the volume's rbd connection info) writes numbered 4 KiB
 * blocks to the volume's image one at a time and records when each was
 * acknowledged; the whole primary cluster is SIGKILLed mid-stream (monitor,
 * manager, OSD); an admin fails the backend over through the API. The
 * promoted copy must hold a prefix of the blocks (a crash-consistent point:
 * no block without every block before it), every block acknowledged before
 * the last point that reached the secondary, and the achieved RPO (kill −
 * acknowledgement of the last block there) within the configured RPO plus
 * what rbd-mirror takes to copy a point. Failover without the old primary is
 * forced (no demotion can reach it).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { after, test } from 'node:test';
import { loadRbdAddon } from '../../src/drivers/rbd/rbd-addon.ts';
import { TEST_CLIENT_TIMEOUTS } from '../helpers/ceph.ts';
import { startCephPair } from '../helpers/ceph-pair.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const BLOCK = 4096;
/** The configured RPO: a mirror snapshot each second. */
const RPO_SECONDS = 2;
/** What rbd-mirror may take to notice a point and copy it on a loaded 2-core machine, on top of the RPO. */
const COPY_SLACK_MS = 15_000;

const pair = await startCephPair({ freshPrimary: true, twoWay: false });
after(() => pair.stop());
const { primary: a, secondary: b, pool } = pair;
const rbd = loadRbdAddon();

/** A numbered block: its sequence number, repeated. */
function block(seq: number): Buffer {
  const buf = Buffer.alloc(BLOCK);
  for (let i = 0; i < BLOCK; i += 8) buf.writeUInt32LE(seq, i), buf.writeUInt32LE(0xb10c, i + 4);
  return buf;
}

async function volumeService(s: TestServer): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await s.request('GET', `${V}/os-services?binary=cinder-volume`);
  return (r.body.services as Array<{ host: string }>).find((x) => x.host.endsWith('@ceph'));
}

test('drill: the primary cluster is lost mid-stream; failover promotes a consistent copy within the RPO', async (t) => {
  const logLines: string[] = []; // why a promotion failed, should one
  const s = await startTestServer(t, {
    logLines,
    ini: [
      '[DEFAULT]', 'enabled_backends = ceph',
      '[ceph]', 'volume_driver = rbd', `rbd_pool = ${pool}`, `rbd_user = ${a.user}`, `rbd_ceph_conf = ${a.confPath}`, `rbd_keyring_conf = ${a.keyringPath}`,
      // A dead cluster answers nothing: give up on it after 5 s instead of librados's minutes.
      'rados_connect_timeout = 5',
      `replication_device = backend_id:site-b, conf:${b.confPath}, user:${b.user}, keyring:${b.keyringPath}`,
    ].join('\n'),
  });
  const bad = await s.request('POST', `${V}/types`, { volume_type: { name: 'bad', extra_specs: { replication_enabled: '<is> True', 'basalt:rbd_mirror_mode': 'sync' } } });
  assert.equal(bad.status, 400, JSON.stringify(bad.body));
  assert.match(bad.body.badRequest.message, /basalt:rbd_mirror_mode must be snapshot or journal/);
  await s.request('POST', `${V}/types`, { volume_type: { name: 'mirrored', extra_specs: { replication_enabled: '<is> True', 'basalt:replication_rpo_seconds': String(RPO_SECONDS) } } });
  const id = (await s.request('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'mirrored' } })).body.volume.id as string;
  await waitForStatus(s, id, 'available');
  const image = `volume-${id}`;
  await waitFor('replication_status enabled', async () => (await s.request('GET', `${V}/volumes/${id}`)).body.volume.replication_status === 'enabled', 120_000);

  // The host (a process of its own) writes numbered blocks, one at a time, each recorded when acknowledged.
  const writer = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'rbd-drill-writer-child.ts'), JSON.stringify({ conf: a.confPath, user: a.user, keyring: a.keyringPath, pool, image, block: BLOCK })], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => { writer.kill('SIGKILL'); });
  const acked: number[] = []; // acked[seq] = when
  const ready = new Promise<void>((resolve, reject) => {
    writer.once('exit', (code) => reject(new Error(`the writer exited (${code}) before it was ready`)));
    readline.createInterface({ input: writer.stdout! }).on('line', (line) => {
      if (line === 'ready') resolve();
      else if (Number(line) === acked.length) acked.push(Date.now());
    });
  });
  // Bounded: a writer that cannot open the image fails the test naming it, not the file's timeout.
  await Promise.race([ready, new Promise((_, reject) => setTimeout(() => reject(new Error('the writer did not open the image within 60 s')), 60_000).unref())]);
  // Long enough for several points to ship.
  await new Promise((r) => setTimeout(r, 6_000));
  const killedAt = Date.now();
  await pair.killPrimary();
  writer.kill('SIGKILL'); // what it had acknowledged is recorded; nothing more can be
  const written = acked.length;
  assert.ok(written > 50, `the writer wrote ${written} blocks before the kill`);

  // Failover through the API: forced, since no demotion can reach the lost cluster.
  const svc = await volumeService(s);
  const failover = await s.request('PUT', `${V}/os-services/failover_host`, { host: svc.host, backend_id: 'site-b' });
  assert.equal(failover.status, 202, JSON.stringify(failover.body));
  await waitFor('failed over', async () => (await volumeService(s)).replication_status === 'failed-over', 240_000);
  const failedOverMs = Date.now() - killedAt;
  assert.equal((await s.request('GET', `${V}/volumes/${id}`)).body.volume.replication_status, 'failed-over', logLines.filter((l) => /could not promote/.test(l)).join('\n'));

  // The promoted copy: a prefix of the blocks, within the RPO.
  const other = await rbd.connect(b.confPath, b.user, b.keyringPath, TEST_CLIENT_TIMEOUTS);
  const copy = await rbd.openImage(other, pool, image, null, true);
  let present = 0;
  const buf = Buffer.alloc(BLOCK);
  for (let seq = 0; seq < written + 64; seq++) {
    await rbd.aioRead(copy, seq * BLOCK, buf);
    if (buf.equals(block(seq))) {
      assert.equal(present, seq, `block ${seq} is there but block ${present} is not: not a consistent point`);
      present++;
    } else {
      assert.ok(buf.every((x) => x === 0), `block ${seq} holds neither its data nor zeros`);
    }
  }
  await rbd.closeImage(copy);
  await rbd.shutdown(other);
  const rpoMs = present === 0 ? killedAt - acked[0]! : killedAt - acked[present - 1]!;
  t.diagnostic(`blocks acknowledged ${written}, on the promoted copy ${present}; achieved RPO ${rpoMs} ms (configured ${RPO_SECONDS * 1000} ms); failover done ${failedOverMs} ms after the kill`);
  assert.ok(present > 0, 'the copy holds at least the first point');
  assert.ok(rpoMs <= RPO_SECONDS * 1000 + COPY_SLACK_MS, `achieved RPO ${rpoMs} ms`);
});
