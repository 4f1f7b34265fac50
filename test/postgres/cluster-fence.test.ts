/**
 * Issue 13, defect 10, cluster-wide: after a fence completes, no write of the
 * deleted attachment reaches the volume from any member of its cluster. Two
 * volume services of one cluster on PostgreSQL (node-a also runs the API and
 * the scheduler); node-b reaches the database through a relay the test
 * controls. A host's NBD connections go to node-b, which keeps writing:
 *
 * - node-b misses the fence notification (its LISTEN session is silenced):
 *   its own durable fence job drops the connections, and the fence (every
 *   member's job) completes only after that — plain (native threads) and TLS
 *   (event loop) connections alike;
 * - node-b is cut off from the database: it drops its connections by itself
 *   within `service_down_time` (self-fencing), refuses new ones, and serves
 *   again once its heartbeat is recorded;
 * - node-b is SIGKILLed with its fence job queued: the job goes to the
 *   cluster once node-b counts as dead, and the volume's delete, which waits
 *   for every fence of the volume, completes; or node-b comes back at once,
 *   completes its own fence and does not resolve the deleted export.
 */
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { openExport, requestFrame, type ByteReader } from '../helpers/nbd-raw.ts';
import { startPgProxy, type PgProxy } from '../helpers/pg-proxy.ts';
import { startPostgres } from '../helpers/postgres.ts';
import { kill9, spawnBasalt } from '../helpers/process.ts';
import { FAST_TIMINGS, PROJECT, request, tempStateDir, waitFor } from '../helpers/server.ts';
import { readReport } from '../../src/services/index.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };
const DOWN_MS = 5_000;
const WRITE_BYTES = 256 * 1024;
const SLOTS = 16;
const MEMBER_A = 'node-a@file';
const MEMBER_B = 'node-b@file';

const postgres = await startPostgres();
after(() => postgres.stop());

/** A cluster of two members: node-a (api, scheduler, volume) and node-b (volume, through the relay). */
interface Cluster {
  url: string;
  db: pg.Client;
  proxy: PgProxy;
  shared: string;
  /** node-b's NBD port. */
  portB: number;
  b: ChildProcess;
  /** Starts node-b again (same host, a new incarnation); resolves with its new NBD port. */
  restartB(): Promise<number>;
}

async function startCluster(t: TestContext): Promise<Cluster> {
  const procs: ChildProcess[] = [];
  // Registered before the state directory's removal, so they run first.
  t.after(async () => { for (const p of procs) await kill9(p); });
  const database = await postgres.createDatabase();
  const proxy = await startPgProxy(Number(new URL(postgres.url).port));
  t.after(() => proxy.close());
  const stateDir = tempStateDir(t);
  const shared = path.join(stateDir, 'shared-storage');
  const env = {
    ...FAST_TIMINGS, BASALT_SERVICE_DOWN_TIME: String(DOWN_MS / 1000), BASALT_STATE_DIR: stateDir, BASALT_DATABASE__CONNECTION: database,
    BASALT_PORT: '0', BASALT_LOG_LEVEL: 'info', BASALT_BACKEND_DEFAULTS__CLUSTER: 'c1', BASALT_BACKEND_DEFAULTS__FILE_VOLUME_DIR: shared,
    BASALT_QUOTA_VOLUMES: '-1', BASALT_QUOTA_GIGABYTES: '-1',
  };
  const a = await spawnBasalt({ ...env, BASALT_HOST: 'node-a' });
  procs.push(a.child);
  const startB = async (): Promise<ChildProcess> => {
    const b = await spawnBasalt({ ...env, BASALT_HOST: 'node-b', BASALT_DATABASE__CONNECTION: proxy.url(database) }, 'volume', 'volume service started');
    procs.push(b.child);
    return b.child;
  };
  const b = await startB();
  const db = new pg.Client({ connectionString: database });
  await db.connect();
  t.after(() => db.end());
  // Read once the service has started: its first beat has published its report.
  const portB = async (): Promise<number> => {
    const row = (await db.query(`select capabilities from services where host = $1`, [MEMBER_B])).rows[0] as { capabilities: string };
    return readReport(row)!.nbd_port!;
  };
  return { url: a.url!, db, proxy, shared, portB: await portB(), b, restartB: async () => { await startB(); return portB(); } };
}

/** An available volume attached to a host: its id, attachment id, export name and TLS-PSK credentials. */
async function attachedVolume(c: Cluster): Promise<{ id: string; attachment: string; exportName: string; psk: { identity: string; key: Buffer } }> {
  const created = await request(c.url, 'POST', `${V}/volumes`, { volume: { size: 1 } });
  assert.equal(created.status, 202, JSON.stringify(created.body));
  const id = created.body.volume.id as string;
  await waitFor(`${id} available`, async () => (await request(c.url, 'GET', `${V}/volumes/${id}`)).body.volume.status === 'available');
  const a = await request(c.url, 'POST', `${V}/attachments`, { attachment: { volume_uuid: id, connector: { host: 'compute-1' } } }, MV);
  assert.equal(a.status, 200, JSON.stringify(a.body));
  const data = a.body.attachment.connection_info.data;
  return { id, attachment: a.body.attachment.id, exportName: data.export_name, psk: { identity: data.tls.psk_identity, key: Buffer.from(data.tls.psk_key, 'hex') } };
}

/**
 * A host writing without pause through one connection: eight writes in
 * flight, each a new pattern over {@link SLOTS} slots, until the connection
 * ends. `acked` counts the answered writes; `ended` resolves at the end.
 */
function writer(conn: { sock: net.Socket; reader: ByteReader }): { acked: () => number; ended: Promise<void> } {
  let acked = 0;
  let next = 0;
  const send = (): void => {
    const i = next++;
    const frame = requestFrame(1, BigInt(i + 1), BigInt((i % SLOTS) * WRITE_BYTES), WRITE_BYTES, Buffer.alloc(WRITE_BYTES, (i % 251) + 1));
    if (!conn.sock.destroyed) conn.sock.write(frame);
  };
  for (let i = 0; i < 8; i++) send();
  const ended = (async () => {
    try {
      for (;;) {
        const reply = await conn.reader.read(16);
        if (reply.readUInt32BE(4) !== 0) throw new Error(`write failed with NBD error ${reply.readUInt32BE(4)}`);
        acked++;
        send();
      }
    } catch (err) {
      if (!/connection closed/.test((err as Error).message)) throw err;
    }
  })();
  return { acked: () => acked, ended };
}

/** A digest of the written slots of a volume's file. */
function digest(c: Cluster, volumeId: string): string {
  const fd = fs.openSync(path.join(c.shared, `volume-${volumeId}`), 'r');
  try {
    const buf = Buffer.alloc(SLOTS * WRITE_BYTES);
    fs.readSync(fd, buf, 0, buf.length, 0);
    return createHash('sha256').update(buf).digest('hex');
  } finally {
    fs.closeSync(fd);
  }
}

/** The fence jobs of a volume: target and state. */
async function fences(c: Cluster, volumeId: string): Promise<Array<{ target: string; state: string; updated_at: string }>> {
  return (await c.db.query(`select target, state, updated_at from jobs where kind = 'export.fence' and resource_id = $1 order by target`, [volumeId])).rows;
}

/**
 * A volume attached to a host writing through node-b, node-b SIGKILLed, then
 * the attachment deleted while node-b still counts as live: node-b gets a
 * fence job it will not run (the detach answers after its bounded wait, the
 * fence pending or not).
 */
async function detachedWhileDead(c: Cluster): Promise<Awaited<ReturnType<typeof attachedVolume>>> {
  const v = await attachedVolume(c);
  const w = writer(await openExport('127.0.0.1', c.portB, v.exportName));
  await waitFor('the host writing', async () => w.acked() >= 32);
  await kill9(c.b);
  await within('the host\'s connection ends with node-b', w.ended, 10_000);
  assert.equal((await request(c.url, 'DELETE', `${V}/attachments/${v.attachment}`, undefined, MV)).status, 200);
  return v;
}

/** Resolves with how long `p` took, or rejects after `ms`. */
async function within(what: string, p: Promise<unknown>, ms: number): Promise<number> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms); })]).finally(() => clearTimeout(timer));
  return Date.now() - started;
}

test('issue 13 defect 10: a member that missed the fence notification fences its own connections before the fence completes, on both planes', { timeout: 180_000 }, async (t) => {
  const c = await startCluster(t);
  const plain = await attachedVolume(c);
  const secure = await attachedVolume(c);
  // node-b serves both hosts: one plain connection (native threads), one over TLS (the event loop).
  const writers = [
    writer(await openExport('127.0.0.1', c.portB, plain.exportName)),
    writer(await openExport('127.0.0.1', c.portB, secure.exportName, secure.psk)),
  ];
  await waitFor('both hosts writing', async () => writers.every((w) => w.acked() >= 32));
  c.proxy.mute('basalt-listen-basalt_fence');

  const atFence = new Map<string, string>();
  for (const v of [plain, secure]) {
    assert.equal((await request(c.url, 'DELETE', `${V}/attachments/${v.attachment}`, undefined, MV)).status, 200);
    const jobs = await fences(c, v.id);
    assert.deepEqual(jobs.map((j) => j.target), [`member:${MEMBER_A}`, `member:${MEMBER_B}`], 'one fence per live member');
    assert.ok(jobs.every((j) => j.state === 'done'), `the detach answered once every member had fenced: ${JSON.stringify(jobs)}`);
    atFence.set(v.id, digest(c, v.id));
  }
  for (const v of [plain, secure]) {
    // Either the host's connection ends (node-b dropped it before its job
    // completed), or it goes on: then more writes are answered than were in
    // flight at the fence, and they landed.
    const w = writers[v === plain ? 0 : 1]!;
    const ackedAtFence = w.acked();
    let ended = false;
    void w.ended.finally(() => { ended = true; });
    await waitFor('the host\'s connection to end or more writes to land', async () => ended || w.acked() > ackedAtFence + 16);
    assert.equal(digest(c, v.id), atFence.get(v.id), `no write landed on ${v === plain ? 'the plain' : 'the TLS'} export's volume after the fence completed`);
    await w.ended;
  }
  await assert.rejects(run('nbdinfo', [`nbd://127.0.0.1:${c.portB}/${plain.exportName}`]), 'the export is gone from node-b');

  // What waits for the fence is not stuck: the volume's delete completes.
  assert.equal((await request(c.url, 'DELETE', `${V}/volumes/${plain.id}`)).status, 202);
  await waitFor('deleted', async () => (await request(c.url, 'GET', `${V}/volumes/${plain.id}`)).status === 404);
});

test('issue 13 defect 10: a member cut off from the database drops its connections within service_down_time and serves again once its heartbeat is recorded', { timeout: 180_000 }, async (t) => {
  const c = await startCluster(t);
  const v = await attachedVolume(c);
  const uri = `nbd://127.0.0.1:${c.portB}/${v.exportName}`;
  await run('nbdinfo', [uri]);
  const plainWriter = writer(await openExport('127.0.0.1', c.portB, v.exportName));
  const tlsWriter = writer(await openExport('127.0.0.1', c.portB, v.exportName, v.psk));
  await waitFor('the host writing', async () => plainWriter.acked() >= 32 && tlsWriter.acked() >= 32);

  c.proxy.partition();
  const tookMs = await within('node-b drops its connections', Promise.all([plainWriter.ended, tlsWriter.ended]), 30_000);
  assert.ok(tookMs < DOWN_MS, `dropped ${tookMs} ms after the partition, within service_down_time (${DOWN_MS} ms)`);
  const atFence = digest(c, v.id);
  await assert.rejects(run('nbdinfo', [uri]), 'a self-fenced member refuses new connections');
  assert.equal(digest(c, v.id), atFence, 'nothing landed after the self-fence');

  c.proxy.heal();
  await waitFor('node-b serves again', async () => run('nbdinfo', [uri]).then(() => true, () => false));
});

test('issue 13 defect 10: a member SIGKILLed with its fence job queued leaves neither the fence nor the volume\'s delete stuck', { timeout: 180_000 }, async (t) => {
  const c = await startCluster(t);
  const v = await detachedWhileDead(c);
  assert.equal((await request(c.url, 'DELETE', `${V}/volumes/${v.id}`)).status, 202);

  await waitFor('deleted', async () => (await request(c.url, 'GET', `${V}/volumes/${v.id}`)).status === 404, 60_000);
  const jobs = await fences(c, v.id);
  assert.ok(jobs.every((j) => j.state === 'done'), JSON.stringify(jobs));
  assert.deepEqual(jobs.map((j) => j.target).sort(), [`member:${MEMBER_A}`, 'volume:c1'], 'the dead member\'s fence went to the cluster');
  const del = (await c.db.query(`select updated_at from jobs where kind = 'volume.delete' and resource_id = $1`, [v.id])).rows[0] as { updated_at: string };
  assert.ok(jobs.every((j) => j.updated_at <= del.updated_at), 'the delete ran after every fence of the volume');
});

test('issue 13 defect 10: a member restarted after SIGKILL completes its own fence and never serves the deleted attachment\'s export', { timeout: 180_000 }, async (t) => {
  const c = await startCluster(t);
  const v = await detachedWhileDead(c);
  const port = await c.restartB();
  await waitFor('every fence of the volume done', async () => (await fences(c, v.id)).every((j) => j.state === 'done'));
  await assert.rejects(run('nbdinfo', [`nbd://127.0.0.1:${port}/${v.exportName}`]), 'the restarted member does not resolve the deleted attachment\'s export');
  // It serves the volume's next attachment.
  const again = await request(c.url, 'POST', `${V}/attachments`, { attachment: { volume_uuid: v.id, connector: { host: 'compute-2' } } }, MV);
  assert.equal(again.status, 200, JSON.stringify(again.body));
  await run('nbdinfo', [`nbd://127.0.0.1:${port}/${again.body.attachment.connection_info.data.export_name}`]);
});
