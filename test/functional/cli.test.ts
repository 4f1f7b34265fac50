/** The basalt command: config show, db migrate, db status. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { tempStateDir, testDatabase } from '../helpers/server.ts';

const run = promisify(execFile);
const BIN = path.resolve(import.meta.dirname, '../../bin/basalt.js');

test('config show, db migrate and db status', async (t) => {
  const dir = tempStateDir(t);
  const db = { env: { ...process.env, ...(await testDatabase(dir)).env } };
  const env = { ...db.env, BASALT_PORT: '9999' };
  const shown = (await run(process.execPath, [BIN, 'config', 'show', '--state-dir', dir], { env })).stdout;
  assert.match(shown, new RegExp(`^DEFAULT\\.state_dir = ${dir} {2}# --state-dir$`, 'm'));
  assert.match(shown, /^DEFAULT\.osapi_volume_listen_port = 9999 {2}# env BASALT_PORT$/m);
  assert.match(shown, /^file\.volume_driver = file {2}# default$/m);

  assert.match((await run(process.execPath, [BIN, 'db', 'status', '--state-dir', dir], db)).stdout, /^pending {2}0001-initial$/m);
  assert.match((await run(process.execPath, [BIN, 'db', 'migrate', '--state-dir', dir], db)).stdout, /applied: 0001-initial/);
  assert.match((await run(process.execPath, [BIN, 'db', 'migrate', '--state-dir', dir], db)).stdout, /up to date/);
  assert.match((await run(process.execPath, [BIN, 'db', 'status', '--state-dir', dir], db)).stdout, /^applied {2}0001-initial$/m);

  await assert.rejects(run(process.execPath, [BIN, 'config', 'show', '--state-dir', dir], { env: { ...process.env, BASALT_JOB_MAX_ATTEMPTS: 'many' } }),
    (e: { stderr: string; code: number }) => /Invalid value "many" for option job_max_attempts/.test(e.stderr) && e.code === 1);
});

test('a port in use stops the server with one line naming the option that moves it, and nothing left running', async (t) => {
  const dir = tempStateDir(t);
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.after(() => taken.close());
  const port = (taken.address() as net.AddressInfo).port;
  const env = { ...process.env, ...(await testDatabase(dir)).env, BASALT_STATE_DIR: dir, BASALT_NBD_PORT: '0', BASALT_LOG_LEVEL: 'warn' };
  await assert.rejects(run(process.execPath, [BIN, 'server', '--port', String(port)], { env, timeout: 60_000 }), (e: { stderr: string; code: number }) => {
    assert.equal(e.code, 1);
    assert.equal(e.stderr.trim().split('\n').length, 1, e.stderr);
    assert.match(e.stderr, new RegExp(`^basalt: cannot listen on 127\\.0\\.0\\.1:${port}: another process is listening there\\. Choose another with --port or BASALT_PORT`));
    return true;
  });
});

test('config show flags a section nothing reads, an enabled backend without a section, and says what a default is derived from', async (t) => {
  const dir = tempStateDir(t);
  const ini = path.join(dir, 'basalt.conf');
  fs.writeFileSync(ini, '[DEFAULT]\nenabled_backends = file,fast\n[file]\nvolume_driver = file\n[lvm]\nvolume_driver = file\n');
  const shown = (await run(process.execPath, [BIN, 'config', 'show', '--config', ini, '--state-dir', dir])).stdout;
  const lines = shown.split('\n');
  assert.equal(lines[0], '# NOTE: [lvm] is not a backend named in enabled_backends (file, fast): nothing reads its options');
  assert.equal(lines[1], '# NOTE: backend fast in enabled_backends has no [fast] section: it runs on [backend_defaults] and the defaults');
  assert.match(shown, new RegExp(`^database\\.connection = sqlite://${dir}/basalt\\.sqlite {2}# default, from DEFAULT\\.state_dir$`, 'm'));
  assert.match(shown, /^fast\.volume_backend_name = fast {2}# default, from the section name$/m);
  assert.match(shown, /^file\.volume_driver = file {2}# .*basalt\.conf/m);
  // A configuration without such things has no notes.
  fs.writeFileSync(ini, '[DEFAULT]\nenabled_backends = file\n[file]\nvolume_driver = file\n');
  assert.doesNotMatch((await run(process.execPath, [BIN, 'config', 'show', '--config', ini, '--state-dir', dir])).stdout, /NOTE/);
});
