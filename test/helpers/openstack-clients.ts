/**
 * Debian's `cinder` (python3-cinderclient) and `openstack` (python3-openstackclient)
 * commands for tests, with execFile's promise interface. Each command runs as
 * /usr/bin/cinder or /usr/bin/openstack would, in a process of its own with
 * its argv and environment, but forked from one Python process per test file
 * that imported both clients once (`openstack-clients.py`): starting Python
 * and importing a client cost about 1.1 s of CPU per command here, and the
 * test suite runs a few hundred of them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { endsWithThisProcess } from './process.ts';

/** What a command printed; a failed one rejects with these and its exit `code`, as execFile does. */
export interface ClientOutput { stdout: string; stderr: string }

interface Pending { resolve(out: ClientOutput & { code: number }): void; reject(err: Error): void }

const SCRIPT = path.join(import.meta.dirname, 'openstack-clients.py');

/** The Python process and the commands sent to it, answered in order. */
let runner: { child: ChildProcess; answers: Socket; pending: Pending[] } | undefined;

function start(): NonNullable<typeof runner> {
  // A process group of its own: a timeout or the file's end kills the command's fork with it.
  const child = endsWithThisProcess(spawn('/usr/bin/python3', [SCRIPT], { stdio: ['pipe', 'ignore', 'inherit', 'pipe'], detached: true }), true);
  const answers = child.stdio[3] as Socket; // pipes are sockets: they can be unref'd
  const r = { child, answers, pending: [] as Pending[] };
  readline.createInterface({ input: answers }).on('line', (line) => {
    r.pending.shift()?.resolve(JSON.parse(line) as ClientOutput & { code: number });
    idle(r);
  });
  child.once('exit', (code, signal) => {
    if (runner === r) runner = undefined;
    for (const p of r.pending.splice(0)) p.reject(new Error(`the client process exited (${signal ?? code}) before answering`));
  });
  return r;
}

/** Lets the test file's process end while no command waits for an answer. */
function idle(r: NonNullable<typeof runner>): void {
  const refs = [r.child, r.answers, r.child.stdin as Socket];
  for (const x of refs) if (r.pending.length) x.ref(); else x.unref();
}

/**
 * Runs `command args` with exactly `env` as its environment; rejects after
 * `timeout` ms (the Python process and the command's fork are killed, and
 * the next command starts a new one) or when the command exits non-zero.
 */
export async function openstackClient(command: 'cinder' | 'openstack', args: string[], o: { env: Record<string, string>; timeout?: number }): Promise<ClientOutput> {
  const r = runner ??= start();
  const answer = new Promise<ClientOutput & { code: number }>((resolve, reject) => r.pending.push({ resolve, reject }));
  idle(r);
  r.child.stdin!.write(JSON.stringify({ command, args, env: o.env }) + '\n');
  const timeout = o.timeout ?? 60_000;
  const timer = setTimeout(() => { try { process.kill(-r.child.pid!, 'SIGKILL'); } catch { /* gone */ } }, timeout);
  try {
    const out = await answer.catch((err: Error) => { throw new Error(`${command} ${args.join(' ')}: no answer (${err.message}; a command has ${timeout} ms)`); });
    if (out.code !== 0) {
      throw Object.assign(new Error(`Command failed: ${command} ${args.join(' ')}\n${out.stderr}`), out);
    }
    return { stdout: out.stdout, stderr: out.stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** The Basalt a noauth command is sent to: its URL, and its state directory as the client's HOME. */
interface Target { url: string; stateDir: string }

/** `cinder ARGS` as the admin of `project` in noauth mode against `s`; resolves with what it printed. */
export async function noauthCinder(s: Target, project: string, ...args: string[]): Promise<string> {
  return (await openstackClient('cinder', [
    '--os-auth-type', 'noauth', '--os-user-id', 'admin', '--os-project-id', project, '--os-endpoint', `${s.url}/v3`, ...args,
  ], { env: { PATH: '/usr/bin:/bin', HOME: s.stateDir } })).stdout;
}

/** `openstack ARGS` as the admin of `project` with a noauth admin token against `s`; resolves with what it printed. */
export async function noauthOpenstack(s: Target, project: string, ...args: string[]): Promise<string> {
  return (await openstackClient('openstack', [
    '--os-auth-type', 'admin_token', '--os-token', `admin:${project}`, '--os-endpoint', `${s.url}/v3/${project}`, ...args,
  ], { env: { PATH: '/usr/bin:/bin', HOME: s.stateDir } })).stdout;
}
