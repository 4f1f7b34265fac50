/** Debian's etcd-server for tests: a single member in a temporary folder on free loopback ports. */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './net.ts';
import { endsWithThisProcess, exited, hasExited } from './process.ts';


/** Starts etcd; resolves with its client URL, a restart (same data, same ports) and a stop function once it answers. */
export async function startEtcd(): Promise<{ url: string; restart(): Promise<void>; stop(): Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-etcd-'));
  const [client, peer] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${client}`;
  const launch = async (): Promise<ChildProcess> => {
    const child = endsWithThisProcess(spawn('etcd', [
      '--name', 'test', '--data-dir', dir, '--listen-client-urls', url, '--advertise-client-urls', url,
      '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
      '--initial-cluster', `test=http://127.0.0.1:${peer}`, '--unsafe-no-fsync',
    ], { stdio: 'ignore' }));
    for (let i = 0; ; i++) {
      const ok = await fetch(`${url}/health`).then((r) => r.ok, () => false);
      if (ok) return child;
      if (i > 200 || hasExited(child)) throw new Error('etcd did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const stop = async (child: ChildProcess): Promise<void> => {
    const done = exited(child);
    child.kill('SIGTERM');
    await done;
  };
  let child = await launch();
  return {
    url,
    async restart() {
      await stop(child);
      child = await launch();
    },
    async stop() {
      await stop(child);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
