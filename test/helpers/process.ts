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
 * `ready` (default: "API listening"). With `stderr: 'pipe'` the caller reads
 * the child's stderr (what a native library prints before an abort, say).
 */
export function spawnBasalt(env: Record<string, string>, roles?: string, ready = 'API listening', stderr: 'inherit' | 'pipe' = 'inherit'): Promise<Spawned> {
  const args = [BIN, 'server', ...(roles ? ['--roles', roles] : [])];
  const child = endsWithThisProcess(spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', stderr] }));
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

/**
 * Resolves once `child` has exited, at once if it already has: a child ended
 * by a signal keeps `exitCode` null, so `exitCode === null` alone would wait
 * for an 'exit' event that has been emitted already.
 */
export function exited(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Children SIGKILLed when this process ends (see {@link endsWithThisProcess}), with whether each leads a process group. */
const owned = new Map<ChildProcess, boolean>();
let killsOwnedAtExit = false;

/** SIGKILLs every child still owned (synchronously: it also runs on 'exit'). */
function killOwned(): void {
  for (const [child, group] of owned) {
    try {
      if (group) process.kill(-child.pid!, 'SIGKILL');
      else child.kill('SIGKILL');
    } catch { /* gone already */ }
  }
  owned.clear();
}

/**
 * Makes `child` (its whole process group with `group`, for a child spawned
 * `detached`) end with this test process however that ends. A file's
 * `after` hooks do not run when the test runner stops it at its timeout
 * (SIGTERM): a cluster of Basalt processes and its PostgreSQL went on
 * running through the rest of a CI run after one did. Returns `child`.
 */
export function endsWithThisProcess<C extends ChildProcess>(child: C, group = false): C {
  if (!killsOwnedAtExit) {
    killsOwnedAtExit = true;
    process.on('exit', killOwned);
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      process.once(signal, () => { killOwned(); process.kill(process.pid, signal); });
    }
  }
  owned.set(child, group);
  child.once('exit', () => owned.delete(child));
  return child;
}

/** Whether `child` has exited already (by itself or by a signal). */
export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Kills a child with SIGKILL (a crash: no clean-up runs) and resolves once it has exited; at once if it has already. */
export async function kill9(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return;
  const done = exited(child);
  child.kill('SIGKILL');
  await done;
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
