/**
 * The compatibility oracle: Debian's python3-cinderclient in noauth mode drives
 * create, list, show, extend (the file grows), metadata and delete.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { startTestServer, waitFor, type TestServer } from '../helpers/server.ts';

const run = promisify(execFile);
const CINDER = '/usr/bin/cinder';
const PROJECT = 'cafe0000000000000000000000000001';

async function cinder(s: TestServer, ...args: string[]): Promise<string> {
  const { stdout } = await run(CINDER, [
    '--os-auth-type', 'noauth', '--os-user-id', 'admin', '--os-project-id', PROJECT,
    '--os-endpoint', `${s.url}/v3`, ...args,
  ], { env: { PATH: '/usr/bin:/bin', HOME: s.stateDir }, timeout: 60_000 });
  return stdout;
}

/** Reads a `cinder show`-style property table into an object. */
function table(out: string): Record<string, string> {
  const props: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^\|\s*(\S[^|]*?)\s*\|\s*(.*?)\s*\|$/.exec(line);
    if (m && m[1] !== 'Property') props[m[1]!] = m[2]!;
  }
  return props;
}

test('python3-cinderclient: create, list, show, extend, metadata, delete', async (t) => {
  assert.ok(fs.existsSync(CINDER), 'python3-cinderclient is installed by scripts/install-test-tools.sh');
  const s = await startTestServer(t);
  const created = table(await cinder(s, 'create', '--name', 'oracle', '--metadata', 'team=storage', '1'));
  const id = created.id!;
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.equal(created.name, 'oracle');

  await waitFor('available', async () => table(await cinder(s, 'show', id)).status === 'available', 20_000);
  const list = await cinder(s, 'list');
  assert.match(list, new RegExp(`${id} \\| available \\| oracle \\| 1 `));

  await cinder(s, 'extend', id, '2');
  const shown = await waitFor('extended', async () => {
    const p = table(await cinder(s, 'show', id));
    return p.status === 'available' && p.size === '2' ? p : undefined;
  }, 20_000);
  assert.match(shown.metadata!, /team.*storage/);
  const file = path.join(s.stateDir, 'volumes', 'file', `volume-${id}`);
  assert.equal(fs.statSync(file).size, 2 * 1024 ** 3, 'the volume file grew');

  await cinder(s, 'metadata', id, 'set', 'tier=gold', 'zone=a');
  let md = table(await cinder(s, 'metadata-show', id));
  assert.equal(md.tier, 'gold');
  await cinder(s, 'metadata', id, 'unset', 'zone');
  md = table(await cinder(s, 'metadata-show', id));
  assert.equal(md.zone, undefined);
  assert.match(await cinder(s, 'list', '--metadata', 'tier=gold'), new RegExp(id));
  assert.doesNotMatch(await cinder(s, 'list', '--metadata', 'tier=silver'), new RegExp(id));

  assert.match(await cinder(s, 'service-list'), /cinder-volume .*\| up /);
  assert.match(await cinder(s, 'absolute-limits'), /totalVolumesUsed\s*\|\s*1/);

  await cinder(s, 'delete', id);
  await waitFor('deleted', async () => !(await cinder(s, 'list')).includes(id), 20_000);
  assert.equal(fs.existsSync(file), false);
});
