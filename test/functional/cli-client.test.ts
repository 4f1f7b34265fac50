/**
 * The client CLI (issue 18, part 1): a whole volume life through `basalt
 * volume|snapshot|backup|attachment|type|service` against a running server —
 * tables, `--json`, names where ids go, `--wait` — and exit codes that tell
 * not found (3), refused (4), failed (1), unreachable (5) and usage (2) apart,
 * each with one line on stderr and never a stack.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { PROJECT, startTestServer } from '../helpers/server.ts';

const run = promisify(execFile);
const BIN = path.resolve(import.meta.dirname, '../../bin/basalt.js');

interface Ran { code: number; stdout: string; stderr: string }

/** Asserts the error output is one line (no stack). */
function oneLine(r: Ran): string {
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line expected on stderr, got:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  return lines[0]!;
}

test('a volume\'s whole life through the client CLI, with exit codes that say what went wrong', { timeout: 240_000 }, async (t) => {
  const s = await startTestServer(t);
  const env: NodeJS.ProcessEnv = { ...process.env, BASALT_URL: s.url, OS_PROJECT_ID: PROJECT, OS_USER_ID: 'admin' };
  delete env.OS_AUTH_URL;
  delete env.OS_TOKEN;
  const cli = async (...args: string[]): Promise<Ran> => {
    try {
      const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { env });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };
  const ok = async (...args: string[]): Promise<string> => {
    const r = await cli(...args);
    assert.equal(r.code, 0, `basalt ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const json = async (...args: string[]): Promise<any> => JSON.parse(await ok(...args, '--json')); // eslint-disable-line @typescript-eslint/no-explicit-any

  // A type, then a volume of it created by name and waited for.
  await ok('type', 'create', 'cli-gold', '--description', 'for the CLI test', '--property', 'volume_backend_name=file');
  assert.match(await ok('type', 'list'), /cli-gold.*for the CLI test/);
  const created = await json('volume', 'create', 'cli-vol', '--size', '1', '--type', 'cli-gold', '--property', 'team=storage', '--wait');
  assert.equal(created.status, 'available');
  assert.equal(created.name, 'cli-vol');
  assert.deepEqual(created.metadata, { team: 'storage' });
  const vol = created.id as string;

  // Tables for people; names wherever ids go.
  const table = await ok('volume', 'list');
  assert.match(table, /ID\s.*Name\s.*Status\s.*Size/);
  assert.match(table, new RegExp(`${vol}.*cli-vol.*available.*1.*cli-gold`));
  const shown = await ok('volume', 'show', 'cli-vol');
  assert.match(shown, new RegExp(`id\\s*│\\s*${vol}`));
  assert.equal((await json('volume', 'show', 'cli-vol')).id, vol);

  // Attach (an NBD URI: the volume is not a file on this host as the connector names it), extend while attached.
  const attached = await ok('attach', 'cli-vol', '--host', 'elsewhere');
  assert.match(attached, /^nbd:\/\//);
  const attachments = await json('attachment', 'list', '--volume', 'cli-vol');
  assert.equal(attachments.length, 1);
  assert.equal((await json('volume', 'show', vol)).status, 'in-use');

  // A snapshot and a backup, waited for.
  const snap = await json('snapshot', 'create', 'cli-vol', '--name', 'cli-snap', '--force', '--wait');
  assert.equal(snap.status, 'available');
  assert.match(await ok('snapshot', 'list', '--volume', 'cli-vol'), /cli-snap.*available/);
  const backupId = (await ok('backup', 'create', vol, '--name', 'cli-backup', '--force', '--wait')).trim();
  assert.equal((await json('backup', 'show', 'cli-backup')).id, backupId);
  assert.match(await ok('backup', 'list'), new RegExp(`${backupId}.*cli-backup.*available`));

  // Detach: without --all an NBD attachment of another host stays, and doing nothing is said (exit 3); then everything.
  const kept = await cli('detach', 'cli-vol');
  assert.equal(kept.code, 3);
  assert.match(oneLine(kept), /no local attachment on this host; its 1 other attachment\(s\) .* --all deletes them/);
  assert.match(await ok('detach', 'cli-vol', '--all'), /^detached /);
  const again = await cli('detach', 'cli-vol');
  assert.equal(again.code, 3);
  assert.match(oneLine(again), /has no attachments/);
  assert.equal((await json('volume', 'show', vol)).status, 'available');
  const grown = await json('volume', 'extend', 'cli-vol', '2', '--wait');
  assert.equal(grown.size, 2);
  assert.equal(grown.status, 'available');

  // Exit codes, one line each.
  const missing = await cli('volume', 'show', 'no-such-volume');
  assert.equal(missing.code, 3);
  assert.match(oneLine(missing), new RegExp(`no volume has the id or name "no-such-volume" in project ${PROJECT}`));
  const shrink = await cli('volume', 'extend', 'cli-vol', '1');
  assert.equal(shrink.code, 4, shrink.stderr);
  assert.match(oneLine(shrink), /HTTP 400/);
  const usage = await cli('volume', 'create', '--size', 'big');
  assert.equal(usage.code, 2);
  const nothing = await cli('volume', 'create', 'unsized');
  assert.equal(nothing.code, 2);
  assert.match(oneLine(nothing), /--size/);
  await ok('type', 'create', 'cli-nowhere', '--property', 'volume_backend_name=nowhere');
  const failed = await cli('volume', 'create', 'too-big', '--size', '1', '--type', 'cli-nowhere', '--wait');
  assert.equal(failed.code, 1, failed.stderr);
  assert.match(oneLine(failed), /volume .* failed: it is error \(.*\)/, 'with the user message saying why');
  const down = await cli('volume', 'list', '--url', 'http://127.0.0.1:9');
  assert.equal(down.code, 5);
  assert.match(oneLine(down), /cannot reach the API at http:\/\/127\.0\.0\.1:9/);
  await ok('volume', 'delete', 'too-big', '--wait');

  // Two volumes of one name: a name must name one.
  await ok('volume', 'create', 'twin', '--size', '1', '--wait');
  await ok('volume', 'create', 'twin', '--size', '1', '--wait');
  const twins = await cli('volume', 'delete', 'twin');
  assert.equal(twins.code, 4);
  assert.match(oneLine(twins), /2 volumes are named "twin": name one by its id/);
  for (const v of await json('volume', 'list')) if (v.name === 'twin') await ok('volume', 'delete', v.id, '--wait');

  // Tear down in order, each waited for; then nothing is left.
  assert.match(await ok('snapshot', 'delete', 'cli-snap', '--wait'), /^deleted /);
  assert.match(await ok('backup', 'delete', 'cli-backup', '--wait'), /^deleted /);
  assert.match(await ok('volume', 'delete', 'cli-vol', '--wait'), /^deleted /);
  assert.deepEqual(await json('volume', 'list'), []);
  assert.deepEqual(await json('backup', 'list'), []);
  await ok('type', 'delete', 'cli-gold', 'cli-nowhere');

  // The project's events, from the first kept: the volume's creation and its statuses, in order, as JSON lines.
  const events = (await ok('event', 'watch', '--from', '0', '--count', '3', '--json')).trim().split('\n').map((l) => JSON.parse(l) as { id: number; resource_id: string; event: string });
  assert.equal(events.length, 3);
  assert.ok(events[0]!.id < events[1]!.id && events[1]!.id < events[2]!.id, 'in stream order');
  assert.ok(events.every((e) => e.resource_id === vol), `the first events are cli-vol's: ${JSON.stringify(events)}`);
  assert.match(await ok('event', 'watch', '--from', String(events[0]!.id), '--count', '1'), new RegExp(`^${events[1]!.id}\\t\\S+\\t\\S+\\tvolume ${vol}`), 'a line for people, resuming after the id given');
  assert.match(await ok('service', 'list'), /cinder-volume.*up/);
});
