/**
 * A real S3 endpoint for tests: Ceph's radosgw (Debian's `radosgw`) on a
 * cluster from {@link startCeph} (the run's shared one, or the file's own),
 * with the beast frontend on a free loopback port and one S3 user. Ready when
 * the endpoint answers HTTP and the user exists; stopped by pid.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Ceph } from './ceph.ts';
import { freePort } from './net.ts';
import { endsWithThisProcess, kill9 } from './process.ts';

const run = promisify(execFile);

/** A running radosgw and the credentials of its user. */
export interface Radosgw {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  stop(): Promise<void>;
}

/**
 * Starts radosgw on `ceph`. Its pools get 8 placement groups each (set in the
 * cluster's configuration first: the default of 32 for each of radosgw's pools
 * would pass a one-OSD cluster's limit of placement groups).
 * @throws Error when the endpoint does not answer within 90 s (with radosgw's log).
 */
export async function startRadosgw(ceph: Ceph): Promise<Radosgw> {
  if (!fs.existsSync('/usr/bin/radosgw')) await run('bash', [path.resolve(import.meta.dirname, '../../scripts/install-test-tools.sh')], { maxBuffer: 64 * 1024 * 1024 });
  await ceph.ceph('config', 'set', 'global', 'osd_pool_default_pg_num', '8');
  await ceph.ceph('config', 'set', 'global', 'osd_pool_default_pgp_num', '8');
  await ceph.ceph('config', 'set', 'global', 'mon_max_pg_per_osd', '2000');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-rgw-'));
  const name = `client.rgw.${randomBytes(4).toString('hex')}`;
  const keyring = path.join(dir, 'keyring');
  fs.writeFileSync(keyring, await ceph.ceph('auth', 'get-or-create', name, 'mon', 'allow rw', 'osd', 'allow rwx', 'mgr', 'allow rw'));
  const log = path.join(dir, 'radosgw.log');
  let child: ChildProcess | undefined;
  const stop = async (): Promise<void> => {
    if (child) await kill9(child);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  let endpoint = '';
  try {
    const deadline = Date.now() + 90_000;
    // A free port can be taken by another process before radosgw binds it (exit 98): then another port.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      endpoint = `http://127.0.0.1:${port}`;
      const out = fs.openSync(path.join(dir, 'radosgw.stderr'), 'a');
      const started: ChildProcess = endsWithThisProcess(spawn('radosgw', [
        '-f', '-c', ceph.confPath, '-n', name, '--keyring', keyring,
        '--rgw-frontends', `beast endpoint=127.0.0.1:${port}`,
        '--rgw-data', dir, '--run-dir', dir, '--admin-socket', path.join(dir, 'asok'), '--log-file', log, '--pid-file', path.join(dir, 'pid'),
      ], { stdio: ['ignore', out, out] }));
      child = started;
      fs.closeSync(out);
      let answered = false;
      while (!answered && started.exitCode === null) {
        if (Date.now() > deadline) throw new Error('radosgw did not answer within 90 s');
        await new Promise((r) => setTimeout(r, 200));
        // Answered by radosgw, not by whoever took the port: radosgw is still running once it answers.
        answered = await fetch(endpoint).then((r) => r.status > 0, () => false) && started.exitCode === null;
      }
      if (answered) break;
      const taken = fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('Address already in use');
      if (!taken || attempt >= 5) throw new Error(`radosgw exited with ${started.exitCode}`);
    }
    const accessKeyId = randomBytes(10).toString('hex').toUpperCase();
    const secretAccessKey = randomBytes(20).toString('hex');
    await run('radosgw-admin', ['-c', ceph.confPath, 'user', 'create', '--uid', `basalt-${randomBytes(4).toString('hex')}`, '--display-name', 'Basalt tests',
      '--access-key', accessKeyId, '--secret', secretAccessKey], { timeout: 60_000 });
    return { endpoint, accessKeyId, secretAccessKey, stop };
  } catch (err) {
    const tail = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').slice(-20).join('\n') : '';
    await stop();
    throw new Error(`${(err as Error).message}\n${tail}`);
  }
}
