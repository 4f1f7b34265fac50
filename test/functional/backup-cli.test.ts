/**
 * The backup commands of the CLI and the progress they follow (issue 15,
 * part 4): `GET /backups/{id}/progress` (an experimental API, issue 17) shows a running backup's bytes and
 * percent and nothing once it is done; `basalt backup create --wait` and
 * `basalt backup restore --wait` follow them to the end (exit 0, the ids on
 * stdout) and a failure is one line and exit 1; the progress they show is a
 * bar with the server's percent and rate on a terminal, plain lines otherwise.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { fileOf, writeRandom } from '../helpers/backends.ts';
import { fileDigest } from '../helpers/file-digest.ts';
import { writeOverNbd } from '../helpers/nbd-write.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus } from '../helpers/server.ts';

const run = promisify(execFile);
const V = `/v3/${PROJECT}`;
/** The progress route is an experimental API. */
const EXPERIMENTAL = { 'OpenStack-API-Experimental': 'true' };
const BIN = path.resolve(import.meta.dirname, '../../bin/basalt.js');

test('a running backup shows its progress; basalt backup create and restore --wait follow them to the end', { timeout: 180_000 }, async (t) => {
  const s = await startTestServer(t);
  const cli = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    try {
      const { stdout, stderr } = await run(process.execPath, [BIN, ...args, '--url', s.url, '--project', PROJECT, '--user', 'admin']);
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };
  const vol = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, vol, 'available');
  await writeOverNbd(s, vol, 'write -P 0x7e 0 256M');

  // The API: progress while the backup runs, none after.
  const b = await s.request('POST', `${V}/backups`, { backup: { volume_id: vol, name: 'watched' } });
  assert.equal(b.status, 202, JSON.stringify(b.body));
  const id = b.body.backup.id as string;
  const seen = await waitFor('progress of the running backup', async () => {
    const p = (await s.request('GET', `${V}/backups/${id}/progress`, undefined, EXPERIMENTAL)).body.progress;
    if (p) return p;
    assert.notEqual((await s.request('GET', `${V}/backups/${id}`)).body.backup.status, 'available', 'the backup ended before any progress was seen');
    return undefined;
  });
  assert.equal(seen.operation, 'backup');
  assert.equal(seen.status, 'creating');
  assert.ok(seen.total_bytes > 0 && seen.done_bytes <= seen.total_bytes && seen.percent >= 0 && seen.percent <= 100, JSON.stringify(seen));
  await waitFor('backup available', async () => (await s.request('GET', `${V}/backups/${id}`)).body.backup.status === 'available');
  assert.deepEqual((await s.request('GET', `${V}/backups/${id}/progress`, undefined, EXPERIMENTAL)).body, { progress: null });
  assert.equal((await s.request('GET', `${V}/backups/00000000-0000-0000-0000-000000000000/progress`, undefined, EXPERIMENTAL)).status, 404);

  // The CLI.
  const created = await cli('backup', 'create', vol, '--incremental', '--wait');
  assert.equal(created.code, 0, created.stderr);
  const incremental = created.stdout.trim();
  assert.equal((await s.request('GET', `${V}/backups/${incremental}`)).body.backup.status, 'available');
  const restored = await cli('backup', 'restore', incremental, '--wait');
  assert.equal(restored.code, 0, restored.stderr);
  const copy = restored.stdout.trim();
  assert.equal((await s.request('GET', `${V}/volumes/${copy}`)).body.volume.status, 'available');
  const file = (id: string) => path.join(s.stateDir, 'volumes', 'file', `volume-${id}`);
  assert.equal(await fileDigest(file(copy), 1024 ** 3), await fileDigest(file(vol), 1024 ** 3), 'the restored volume holds the data');

  const failed = await cli('backup', 'create', '00000000-0000-0000-0000-000000000000', '--wait');
  assert.equal(failed.code, 3, 'not found (exit codes: src/cli/exit-codes.ts)');
  assert.match(failed.stderr, /^basalt: no volume has the id or name "0{8}-0{4}-0{4}-0{4}-0{12}" in project \w+ .*\n$/);
});

test('--wait shows the server\'s percent and rate: a bar on a terminal (through a pseudo-terminal), plain lines otherwise', { timeout: 180_000 }, async (t) => {
  const s = await startTestServer(t);
  const vol = (await s.request('POST', `${V}/volumes`, { volume: { size: 1 } })).body.volume.id as string;
  await waitForStatus(s, vol, 'available');
  // Random data: a backup of it takes seconds, long enough for the CLI's polls to see it run.
  writeRandom(fileOf(s.stateDir, 'file', vol), 768 * 1024 ** 2);
  const args = ['--url', s.url, '--project', PROJECT, '--user', 'admin'];

  // Not a terminal: lines on stderr, each with the percent, the bytes and the rate; the id alone on stdout; no bar.
  const piped = await run(process.execPath, [BIN, 'backup', 'create', vol, '--wait', ...args]);
  assert.match(piped.stdout, /^[0-9a-f-]{36}\n$/);
  const lines = piped.stderr.trim().split('\n');
  assert.ok(lines.length >= 1, 'at least one progress line');
  for (const line of lines) assert.match(line, /^backup [0-9a-f-]{36}: \d*0% \(\d+ of \d+ bytes, (\d+(\.\d)?|…) MiB\/s\)$/);
  assert.ok(!/[\u2588\u2591\u001b]/.test(piped.stderr), 'no bar and no escape sequences in a pipe');
  assert.ok(lines.some((l) => /, \d+(\.\d)? MiB\/s\)$/.test(l)), `a rate the server reported: ${piped.stderr}`);

  // A terminal (script(1) gives the CLI a pseudo-terminal): cli-progress draws the bar, with the rate.
  writeRandom(fileOf(s.stateDir, 'file', vol), 768 * 1024 ** 2); // new blocks: none is stored already
  const quoted = [process.execPath, BIN, 'backup', 'create', vol, '--wait', ...args].map((a) => `'${a}'`).join(' ');
  const tty = await run('script', ['-qec', quoted, '/dev/null'], { maxBuffer: 16 * 1024 ** 2 });
  const screen = tty.stdout.replace(/\u001b(\[[0-9;?]*[A-Za-z]|[78])/g, '');
  assert.match(screen, /backup [0-9a-f-]{36} [\u2588\u2591]{40} \d+% \| \d+ of 768 MiB \| \d+(\.\d)? MiB\/s/, screen);
  const id = /^([0-9a-f-]{36})\r?$/m.exec(screen)?.[1];
  assert.ok(id, 'the id on its own line');
  assert.equal((await s.request('GET', `${V}/backups/${id}`)).body.backup.status, 'available');
});
