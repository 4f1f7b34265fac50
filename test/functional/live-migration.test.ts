/**
 * Moving an attached volume (issue 12, part 5): `os-migrate_volume` of an
 * in-use volume copies it to another backend while a host keeps writing
 * through its NBD export. The export serves a mirror during the copy, the
 * host's connection is dropped when the mirror starts and when it ends, and
 * a host that reconnects to the same export name writes on, ending on the
 * destination; every acknowledged write is there, the attachment never left.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { fileOf, poolOf, TWO_FILE_BACKENDS, typeNamed, volumeOn, writePattern } from '../helpers/backends.ts';
import { openExport, simpleRequest } from '../helpers/nbd-raw.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type TestServer } from '../helpers/server.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const MiB = 1024 ** 2;
const BLOCK = 64 * 1024;
const MV = { 'OpenStack-API-Version': 'volume 3.54' };
const CONNECTOR = { host: 'compute-1', ip: '127.0.0.1', initiator: 'iqn.test', mode: 'rw' };
const NBD_WRITE = 1;
const NBD_FLUSH = 3;

interface NbdData { host: string; port: number; export_name: string; uri: string }

/** Attaches `volumeId` through the attachments API (3.54) and completes it: the volume is in-use. */
async function attach(s: TestServer, volumeId: string): Promise<{ id: string; data: NbdData }> {
  // A busy machine can make the volume service's heartbeat late: the API then says to try again later.
  const a = await waitFor('an attachment', async () => {
    const r = await s.request('POST', `${V}/attachments`, { attachment: { volume_uuid: volumeId, connector: CONNECTOR } }, MV);
    if (r.status === 400 && /try again later/.test(r.body.badRequest?.message)) return undefined;
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r;
  });
  assert.equal(a.body.attachment.connection_info.driver_volume_type, 'nbd');
  assert.equal((await s.request('POST', `${V}/attachments/${a.body.attachment.id}/action`, { 'os-complete': null }, MV)).status, 204);
  await waitForStatus(s, volumeId, 'in-use');
  return { id: a.body.attachment.id, data: a.body.attachment.connection_info.data };
}

/**
 * A host writing 64 KiB blocks in a loop until stopped, reconnecting to the
 * same export whenever its connection drops and writing again what was not
 * acknowledged. `written` holds the byte of every acknowledged block.
 */
function hostWriter(data: NbdData, blocks: number) {
  const written = new Map<number, number>();
  let reconnects = 0;
  /** Writes acknowledged, counted apart from `written` (which holds at most one entry per block). */
  let acknowledged = 0;
  let stop = false;
  /** What the host is doing now, and the last error it saw (for a failure's message). */
  const state = { doing: 'starting', lastError: '' };
  const connect = async () => {
    // A busy machine may keep the export from answering for a while: give up only after a minute.
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        state.doing = 'connecting';
        const c = await openExport(data.host, data.port, data.export_name);
        // A refusal (a server fencing itself on a busy machine answers NBD_REP_ERR_SHUTDOWN) is no export: try again.
        if (c.sizeBytes === BigInt(1024 * MiB)) return c;
        c.sock.destroy();
        throw new Error(`export refused (read ${c.sizeBytes} as its size)`);
      } catch (err) {
        state.lastError = String(err);
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  };
  const done = (async () => {
    let c = await connect();
    for (let i = 0; !stop; i++) {
      const block = (i * 7919) % blocks;
      const byte = (i % 250) + 1;
      for (;;) {
        try {
          state.doing = `writing block ${block}`;
          const r = await simpleRequest(c, NBD_WRITE, BigInt(block * BLOCK), BLOCK, Buffer.alloc(BLOCK, byte));
          assert.equal(r.error, 0, `write of block ${block} failed with NBD error ${r.error}`);
          written.set(block, byte);
          acknowledged++;
          break;
        } catch (err) {
          if (err instanceof assert.AssertionError) throw err;
          state.lastError = String(err);
          c.sock.destroy();
          reconnects++;
          c = await connect();
        }
      }
    }
    assert.equal((await simpleRequest(c, NBD_FLUSH, 0n, 0)).error, 0);
    c.sock.destroy();
  })();
  done.catch(() => undefined); // its failure is reported by stop(), not as an unhandled rejection meanwhile
  return {
    written, reconnects: () => reconnects, acknowledged: () => acknowledged, stop: async () => { stop = true; await done; },
    describe: () => `the host is ${state.doing} after ${acknowledged} writes (${written.size} blocks) and ${reconnects} reconnects; last error: ${state.lastError || 'none'}`,
  };
}

test('an attached volume moves to another backend while its host writes; the host reconnects to the same export, now on the destination', { timeout: 120_000 }, async (t) => {
  const s = await startTestServer(t, { ini: TWO_FILE_BACKENDS });
  await typeNamed(s, 'alpha');
  const v = await volumeOn(s, 'alpha', 1);
  const source = fileOf(s.stateDir, 'alpha', v.id);
  // Data from before the attachment, outside the blocks the host writes.
  writePattern(source, [512 * MiB, 1024 * MiB - MiB]);
  // Read off the event loop: the server under test shares it, and seconds of synchronous
  // work on a busy machine outlast its heartbeat's bound (on PostgreSQL it then fences
  // itself and drops every connection).
  const before = (await fs.promises.readFile(source)).subarray(512 * MiB);
  const attachment = await attach(s, v.id);

  const host = hostWriter(attachment.data, 2048); // the first 128 MiB
  await waitFor('the host writing', async () => host.acknowledged() > 50);
  const dest = await poolOf(s, 'beta');
  const r = await s.request('POST', `${V}/volumes/${v.id}/action`, { 'os-migrate_volume': { host: dest } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const moved = await waitFor('the move done and the source file gone', async () => {
    const row = (await s.request('GET', `${V}/volumes/${v.id}`)).body.volume;
    assert.notEqual(row.migration_status, 'error', 'the move failed');
    return row.migration_status === 'success' && !fs.existsSync(source) ? row : undefined;
  });
  const afterMove = host.acknowledged();
  await waitFor('the host writing on the destination', async () => host.acknowledged() > afterMove + 50);
  await host.stop();

  assert.equal(moved.status, 'in-use');
  assert.equal(moved['os-vol-host-attr:host'], dest);
  assert.ok(host.reconnects() >= 2, `the host reconnected ${host.reconnects()} times: once onto the mirror, once onto the destination`);
  const a = await s.request('GET', `${V}/attachments/${attachment.id}`, undefined, MV);
  assert.equal(a.body.attachment.status, 'attached');

  // Every acknowledged write is on the destination's file, and the data from before the attachment too.
  const copy = await fs.promises.readFile(fileOf(s.stateDir, 'beta', v.id));
  const filled = new Map<number, Buffer>();
  for (const [block, byte] of host.written) {
    const got = copy.subarray(block * BLOCK, (block + 1) * BLOCK);
    if (!filled.has(byte)) filled.set(byte, Buffer.alloc(BLOCK, byte));
    assert.ok(got.equals(filled.get(byte)!), `block ${block}: expected 0x${byte.toString(16)}, found 0x${got[0]!.toString(16)}`);
  }
  assert.ok(copy.subarray(512 * MiB).equals(before), 'the data written before the attachment arrived');

  // A real client reads through the same export on the destination.
  const [block, byte] = [...host.written][0]!;
  const { stdout } = await run('qemu-io', ['-f', 'raw', '-c', `read -P ${byte} ${block * BLOCK} ${BLOCK}`, attachment.data.uri]);
  assert.doesNotMatch(stdout, /verification failed/);
});

test('an attached volume goes back to in-use where it was when its move fails', { timeout: 120_000 }, async (t) => {
  const logLines: string[] = [];
  const s = await startTestServer(t, { ini: TWO_FILE_BACKENDS, logLines });
  await typeNamed(s, 'alpha');
  const v = await volumeOn(s, 'alpha', 1);
  const attachment = await attach(s, v.id);
  const host = hostWriter(attachment.data, 256);
  await waitFor('the host writing', async () => host.acknowledged() > 20);
  // A directory where the destination's file would go: that volume cannot be made there (the backend itself stays well).
  const destFile = fileOf(s.stateDir, 'beta', v.id);
  fs.mkdirSync(destFile, { recursive: true });
  t.after(() => fs.rmSync(destFile, { recursive: true, force: true }));
  const r = await s.request('POST', `${V}/volumes/${v.id}/action`, { 'os-migrate_volume': { host: await poolOf(s, 'beta') } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const failed = await waitFor('the move failed', async () => {
    const row = (await s.request('GET', `${V}/volumes/${v.id}`)).body.volume;
    return row.migration_status === 'error' ? row : undefined;
  });
  assert.equal(failed.status, 'in-use');
  assert.match(failed['os-vol-host-attr:host'], /@alpha#/);
  const count = host.acknowledged();
  await waitFor('the host still writing', async () => host.acknowledged() > count + 20).catch((err: Error) => {
    throw new Error(`${err.message}: ${host.describe()}\n${logLines.slice(-40).join('')}`);
  });
  await host.stop();
  const file = await fs.promises.readFile(fileOf(s.stateDir, 'alpha', v.id));
  for (const [block, byte] of host.written) assert.equal(file[block * BLOCK], byte, `block ${block} on the source`);
});
