/**
 * Verification on demand (issue 15, part 4): `basalt backup verify` reads
 * every blob of a backup back from the target beside a running server,
 * reports progress on stderr, exits 0 for a whole backup; after one byte of
 * a pack is flipped it names the damaged blob, exits 1, and the backup is in
 * `error` with the reason.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { writeOverNbd } from '../helpers/nbd-write.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus } from '../helpers/server.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
const BIN = path.resolve(import.meta.dirname, '../../bin/basalt.js');

/** Runs `basalt backup verify` on the server's state directory; resolves with its exit code and output. */
async function verify(stateDir: string, id: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, 'backup', 'verify', id, '--state-dir', stateDir]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test('basalt backup verify checks every blob, names a damaged one and sets its backup to error', { timeout: 120_000 }, async (t) => {
  const s = await startTestServer(t);
  const vol = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, vol, 'available');
  await writeOverNbd(s, vol, 'write -P 0x3c 0 3M');
  const b = await s.request('POST', `${V}/backups`, { backup: { volume_id: vol } });
  assert.equal(b.status, 202, JSON.stringify(b.body));
  const id = b.body.backup.id as string;
  await waitFor('backup available', async () => (await s.request('GET', `${V}/backups/${id}`)).body.backup.status === 'available');

  const whole = await verify(s.stateDir, id);
  assert.equal(whole.code, 0, whole.stderr);
  assert.match(whole.stdout, new RegExp(`backup ${id} \\(volume ${vol}\\): all \\d+ blobs read back and checked`));
  assert.match(whole.stderr, /verifying backup .*: 100% \(\d+ of \d+ blobs\)/, 'progress on stderr');

  // One byte of the pack flipped on the target.
  const packs = path.join(s.stateDir, 'backups', 'volumes', vol, 'packs');
  const pack = (fs.readdirSync(packs, { recursive: true }) as string[]).map((f) => path.join(packs, f)).find((f) => /[0-9a-f]{64}$/.test(f) && fs.statSync(f).isFile())!;
  const bytes = fs.readFileSync(pack);
  bytes[100] = bytes[100]! ^ 0xff;
  fs.writeFileSync(pack, bytes);
  const damaged = await verify(s.stateDir, id);
  assert.equal(damaged.code, 1, damaged.stderr);
  assert.match(damaged.stdout, /1 of \d+ blobs damaged or missing; the backup is now in error:\n {2}[0-9a-f]{64}/);
  const row = (await s.request('GET', `${V}/backups/${id}`)).body.backup;
  assert.equal(row.status, 'error');
  assert.match(row.fail_reason, /Verification found 1 damaged or missing blob/);

  const unknown = await verify(s.stateDir, '00000000-0000-0000-0000-000000000000');
  assert.equal(unknown.code, 3, 'not found (src/cli/exit-codes.ts)');
  assert.match(unknown.stderr, /Backup 00000000-0000-0000-0000-000000000000 could not be found/);
});
