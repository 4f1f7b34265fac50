/** Runs `basalt server` as a child process and waits until a given log line says it is ready. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

const BIN = path.resolve(import.meta.dirname, '../../bin/basalt.js');

/** A started child, with the API URL when the api role runs. */
export interface Spawned { child: ChildProcess; url?: string }

/**
 * Starts `basalt server --roles ROLES` (all roles without `roles`) with `env`
 * added to this process's, and resolves when a JSON log line's `msg` equals
 * `ready` (default: "API listening").
 */
export function spawnBasalt(env: Record<string, string>, roles?: string, ready = 'API listening'): Promise<Spawned> {
  const args = [BIN, 'server', ...(roles ? ['--roles', roles] : [])];
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const e = JSON.parse(line) as { msg?: string; url?: string };
        if (e.msg === ready) resolve({ child, ...(e.url ? { url: e.url } : {}) });
      } catch { /* not a log line */ }
    });
    child.once('exit', (code) => reject(new Error(`basalt server ${roles ?? ''} exited with ${code} before "${ready}"`)));
  });
}

/** Kills a child with SIGKILL (a crash: no clean-up runs) and resolves once it has exited. */
export function kill9(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** Whether a process of this pid is alive (signal 0 reaches it): for daemons started by pid and stopped by pid. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
