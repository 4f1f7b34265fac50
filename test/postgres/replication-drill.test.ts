/**
 * Replication drills (issue 16 part 6), between two Basalt processes on one
 * PostgreSQL: alpha's backend replicates to beta's. A block client writes
 * numbered blocks through an attachment's export on alpha, recording each
 * write when it is acknowledged; alpha's process is SIGKILLed mid-stream and
 * its state directory made unreachable (renamed away); an admin fails alpha
 * over through beta's API. Beta's copy must hold every acknowledged write
 * (synchronous mode) or every write acknowledged before the last point, with
 * the achieved RPO within the configured one plus one tick (asynchronous
 * mode). The client then reconnects with the attachment's new connection
 * info (beta's export) and writes more; alpha's process comes back on its
 * state directory, alpha is failed back, and alpha's copy must hold every
 * write of both phases.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import readline from 'node:readline';
import { test } from 'node:test';
import { fileOf } from '../helpers/backends.ts';
import { checkCopy, DRILL_BLOCK_BYTES, DrillWriter, type AckedWrite, type NbdConnectionData } from '../helpers/drill-writer.ts';
import { kill9, type Spawned } from '../helpers/process.ts';
import { PROJECT, request, waitFor } from '../helpers/server.ts';
import { replicatingPair, twoProcesses } from '../helpers/two-processes.ts';
import { xfsReflinkMount } from '../helpers/xfs.ts';

const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };
const CONNECTOR = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' };
/** The configured RPO of the asynchronous drill, and the replicator's tick (its default). */
const RPO_SECONDS = 2;
const TICK_MS = 1000;
/** Where each phase writes: phase 1 (on alpha) and phase 2 (failed over, on beta); ballast the failback must not ship again. */
const PHASE1 = { baseBytes: 0, slots: 64 };
const PHASE2 = { baseBytes: 8 * MiB, slots: 32 };
const BALLAST = { baseBytes: 64 * MiB, slots: 256 };

/** Bytes each process's log says it shipped for a volume (points and mirror copies), from its JSON log lines. */
function shipLog(p: Spawned): { bytes: number; lines: Array<{ msg: string; bytes: number; full?: boolean; via?: string }> } {
  const out = { bytes: 0, lines: [] as Array<{ msg: string; bytes: number; full?: boolean; via?: string }> };
  readline.createInterface({ input: p.child.stdout! }).on('line', (line) => {
    try {
      const e = JSON.parse(line) as { msg?: string; bytes?: number; full?: boolean; via?: string };
      if ((e.msg === 'replication point shipped' || e.msg === 'synchronous mirror in step') && typeof e.bytes === 'number') {
        out.bytes += e.bytes;
        out.lines.push({ msg: e.msg, bytes: e.bytes, full: e.full, via: e.via });
      }
    } catch { /* not a log line */ }
  });
  return out;
}

async function drill(t: import('node:test').TestContext, mode: 'sync' | 'async'): Promise<void> {
  const { common, procs } = await twoProcesses(t);
  // Both state directories on a reflink filesystem: the file driver's points then hold only what changed (on
  // ext4 every snapshot is a copy and every point, and failback, ships every allocated extent).
  const xfs = xfsReflinkMount();
  t.after(async () => {
    for (const p of procs) await kill9(p);
    xfs.remove();
  });
  const pair = await replicatingPair(common, procs, xfs.dir);
  const { stateA, stateB, b, startAlpha } = pair;
  let { a } = pair;
  const betaLog = shipLog(b);
  const onA = (method: string, url: string, body?: unknown, h?: Record<string, string>) => request(a.url!, method, url, body, h);
  const onB = (method: string, url: string, body?: unknown, h?: Record<string, string>) => request(b.url!, method, url, body, h);
  const replication = async (on: typeof onA, id: string) => (await on('GET', `${V}/volumes/${id}/replication`)).body.replication;

  const specs = { replication_enabled: '<is> True', 'basalt:replication_mode': mode, 'basalt:replication_rpo_seconds': String(RPO_SECONDS) };
  assert.equal((await onA('POST', `${V}/types`, { volume_type: { name: 'drill', extra_specs: specs } })).status, 200);
  const created = await onA('POST', `${V}/volumes`, { volume: { size: 1, volume_type: 'drill' } });
  assert.equal(created.status, 202, JSON.stringify(created.body));
  const id = created.body.volume.id as string;
  await waitFor('the copy in step', async () => {
    const v = (await onA('GET', `${V}/volumes/${id}`)).body.volume;
    return v.status === 'available' && v.replication_status === 'enabled';
  }, 120_000);

  // The host attaches through alpha (a synchronous volume is refused until its mirror is ready: try again later).
  const att = await waitFor('an attachment', async () => {
    const r = await onA('POST', `${V}/attachments`, { attachment: { volume_uuid: id, connector: CONNECTOR } }, MV);
    if (r.status === 400 && /try again later/.test(r.body.badRequest?.message)) return undefined;
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.attachment;
  });
  assert.equal((await onA('POST', `${V}/attachments/${att.id}/action`, { 'os-complete': null }, MV)).status, 204);
  const before = att.connection_info.data as NbdConnectionData;

  // Ballast first (acknowledged, shipped): what a failback must not ship again.
  const w = new DrillWriter();
  const ballastErr = await waitFor('the ballast written', async () => {
    const err = await w.run(before, BALLAST, BALLAST.slots);
    return err && /refused|closed|ECONNRESET/.test(err.message) ? undefined : { err };
  });
  assert.equal(ballastErr.err, undefined);
  const ballast = [...w.acked];

  // Phase 1: the writer runs; once a point (async) or enough writes (sync) are behind it, alpha's process dies.
  const started = Date.now();
  const phase1 = w.run(before, PHASE1);
  if (mode === 'async') {
    await waitFor('two points during the writes', async () => {
      const r = await replication(onA, id);
      return r.last_point_at && Date.parse(`${r.last_point_at}Z`) > started + TICK_MS;
    });
  } else {
    // And an anchor of the mirror after the ballast: what alpha may diverge in counts from it.
    await waitFor('writes acknowledged and an anchor during them', async () => {
      if (w.acked.length < ballast.length + 200) return false;
      const r = await replication(onA, id);
      return r.last_point_at && Date.parse(`${r.last_point_at}Z`) > started;
    }, 60_000);
  }
  const alphaHost = ((await onB('GET', `${V}/os-services?binary=cinder-volume`)).body.services as Array<{ host: string }>).find((s) => s.host.endsWith('@alpha'))!.host;
  const killedAt = Date.now();
  await kill9(a.child);
  fs.renameSync(stateA, `${stateA}.gone`);
  t.after(() => { if (fs.existsSync(`${stateA}.gone`)) fs.renameSync(`${stateA}.gone`, stateA); });
  const ended = await phase1;
  assert.ok(ended, 'the writes stop when the primary dies');
  const sentPhase1 = w.sent;
  const acked1 = [...w.acked];

  const failoverAt = Date.now();
  const r = await onB('PUT', `${V}/os-services/failover_host`, { host: alphaHost, backend_id: 'beta' });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitFor('failed over', async () => {
    const v = (await onB('GET', `${V}/volumes/${id}`)).body.volume;
    return v.replication_status === 'failed-over' && /@beta#/.test(v['os-vol-host-attr:host']);
  });

  // Beta's copy: every acknowledged write (sync), or every one acknowledged before the last point (async).
  let counted: AckedWrite[] = acked1;
  if (mode === 'async') {
    const event = await waitFor('the failover event', async () => (await events(b.url!)).find((e) => e.event === 'volume.failover' && e.data.resource_id === id));
    const lastPointAt = Date.parse(event.data.detail.last_point_at as string); // the row's ISO time, with its Z
    assert.ok(Number.isFinite(lastPointAt), JSON.stringify(event.data.detail));
    counted = acked1.filter((x) => x.ackedAtMs < lastPointAt);
    const rpoMs = killedAt - lastPointAt;
    t.diagnostic(`async: RPO achieved ${rpoMs} ms (configured ${RPO_SECONDS} s); ${counted.length - ballast.length} of ${acked1.length - ballast.length} acknowledged writes in the last point`);
    assert.ok(rpoMs <= RPO_SECONDS * 1000 + TICK_MS, `RPO ${rpoMs} ms within ${RPO_SECONDS} s + one tick`);
    assert.ok(counted.length > ballast.length, 'the last point holds writes of the drill');
  }
  assert.deepEqual(checkCopy(fileOf(stateB, 'beta', id), counted, sentPhase1), [], 'beta\'s copy holds the acknowledged writes');

  // The client reconnects with the attachment's new connection info (beta's export) and writes on.
  const after = await waitFor('connection info naming beta\'s export', async () => {
    const x = (await onB('GET', `${V}/attachments/${att.id}`, undefined, MV)).body.attachment?.connection_info?.data as NbdConnectionData | undefined;
    return x && `${x.host}:${x.port}` !== `${before.host}:${before.port}` && x;
  });
  const phase2Acked = w.acked.length;
  await waitFor('a write through beta\'s export', async () => { await w.run(after, PHASE2, 1); return w.acked.length > phase2Acked; });
  const writableMs = Date.now() - failoverAt;
  t.diagnostic(`${mode}: failover request to the client writing again: ${writableMs} ms`);
  assert.equal(await w.run(after, PHASE2, 200), undefined);
  const all = [...w.acked];
  assert.deepEqual(checkCopy(fileOf(stateB, 'beta', id), all.filter((x) => x.seq > sentPhase1), w.sent), [], 'beta has the writes made on it');
  const changedBytes = new Set(all.filter((x) => x.seq > sentPhase1).map((x) => x.offset)).size * DRILL_BLOCK_BYTES;

  // Alpha's process comes back on its state directory; beta's copy ships back; alpha fails back.
  fs.renameSync(`${stateA}.gone`, stateA);
  const shippedBefore = betaLog.bytes;
  a = await startAlpha();
  const alphaLog = shipLog(a);
  await waitFor('alpha in step as the secondary', async () => {
    const x = await replication(onB, id);
    return x.state === 'enabled' && /@alpha/.test(x.secondary?.cluster ?? '');
  }, 120_000);
  const back = await onB('PUT', `${V}/os-services/failover_host`, { host: alphaHost, backend_id: 'default' });
  assert.equal(back.status, 202, JSON.stringify(back.body));
  await waitFor('failed back', async () => {
    const v = (await onB('GET', `${V}/volumes/${id}`)).body.volume;
    return v.replication_status === 'enabled' && /@alpha#/.test(v['os-vol-host-attr:host']);
  }, 120_000);
  const shippedBack = betaLog.bytes - shippedBefore;
  t.diagnostic(`${mode}: failback shipped ${shippedBack} bytes for ${changedBytes} bytes changed while failed over (ballast ${BALLAST.slots * DRILL_BLOCK_BYTES})`);

  // Alpha's copy: every write of both phases (the first phase's as beta had them).
  const onAlpha = checkCopy(fileOf(stateA, 'alpha', id), [...counted, ...all.filter((x) => x.seq > sentPhase1)], w.sent);
  assert.deepEqual(onAlpha, [], 'alpha\'s copy holds every acknowledged write of both phases');
  // Only what changed while failed over (and what alpha diverged in past its last point, or a synchronous
  // mirror's last anchor) ships back, not the ballast: the asynchronous shipment and the synchronous mirror's copy alike.
  assert.ok(shippedBack >= changedBytes, `failback shipped at least the ${changedBytes} bytes changed`);
  assert.ok(shippedBack <= changedBytes + PHASE1.slots * DRILL_BLOCK_BYTES, `failback shipped ${shippedBack} bytes: no more than the ${changedBytes} bytes changed and the ${PHASE1.slots * DRILL_BLOCK_BYTES} alpha may have diverged in`);

  // Beta is alpha's secondary again: its copy, alike when the volume moved back (alpha's checkpoint of it then),
  // is brought in step from what changed, not made whole again.
  await waitFor('beta in step as the secondary again, and alpha\'s log saying what it shipped', async () => {
    const x = await replication(onA, id);
    return x.state === 'enabled' && /@beta/.test(x.secondary?.cluster ?? '') && alphaLog.lines.length > 0;
  }, 120_000);
  t.diagnostic(`${mode}: after the failback alpha shipped ${alphaLog.bytes} bytes to beta's copy (${alphaLog.lines.map((l) => `${l.bytes}${l.full ? ' whole' : ''}`).join(', ')})`);
  assert.ok(alphaLog.lines.every((l) => !l.full), 'no whole copy');
  // The two processes share this machine (and its host name): each reached the other's export through its Unix socket.
  for (const l of [...alphaLog.lines, ...betaLog.lines]) assert.match(l.via ?? '', /nbd\.sock$/, `${l.msg} through the peer's Unix socket`);
  assert.ok(alphaLog.bytes <= changedBytes + PHASE1.slots * DRILL_BLOCK_BYTES, `alpha shipped ${alphaLog.bytes} bytes to beta, less than the ${BALLAST.slots * DRILL_BLOCK_BYTES} of ballast`);
}

/** The events of PROJECT so far, through the event stream (`timeout=0`: what there is, then the end). */
async function events(url: string): Promise<Array<{ event: string; data: any }>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await fetch(`${url}/v3/${PROJECT}/events/stream?timeout=0&last_event_id=0`, { headers: { 'X-Auth-Token': `admin:${PROJECT}`, 'OpenStack-API-Experimental': 'true' } });
  const out: Array<{ event: string; data: any }> = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  for (const frame of (await res.text()).split('\n\n')) {
    const lines = frame.split('\n');
    const event = lines.find((l) => l.startsWith('event:'))?.slice(6).trim();
    const data = lines.find((l) => l.startsWith('data:'))?.slice(5).trim();
    if (event && data) out.push({ event, data: JSON.parse(data) });
  }
  return out;
}

test('synchronous drill: no acknowledged write is lost when the primary\'s process dies; failover, writes on the secondary, failback', { timeout: 300_000 }, (t) => drill(t, 'sync'));

test('asynchronous drill: every write acknowledged before the last point survives, within the RPO; failover, writes, failback', { timeout: 300_000 }, (t) => drill(t, 'async'));
