/**
 * An acknowledged create survives a power cut (issue 12, part 6): traced with
 * strace, the server flushes its SQLite write-ahead log (`fdatasync`) after it
 * wrote the create to it and before the `202` leaves on the socket; and a
 * delete's job removes the file only after the `deleting` status is flushed.
 * SQLite runs with `synchronous=NORMAL`, which alone would flush only at
 * checkpoints: without the group commit's waits this test fails.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { test } from 'node:test';
import { FAST_TIMINGS, PROJECT } from '../helpers/server.ts';

const BIN = path.resolve(import.meta.dirname, '../../bin/basalt.js');

interface Call { line: number; pid: string; name: string; args: string; done: number | undefined; ok: boolean }

/** The calls of an `strace -f -y` log, each with the line where it started and the line where it returned. */
function parseTrace(text: string): Call[] {
  const calls: Call[] = [];
  const open = new Map<string, Call>();
  text.split('\n').forEach((raw, line) => {
    const m = /^(\d+)\s+(.*)$/.exec(raw);
    if (!m) return;
    const [, pid, rest] = m as unknown as [string, string, string];
    const resumed = /^<\.\.\. (\w+) resumed>(.*)= (-?\d+)/.exec(rest);
    if (resumed) {
      const c = open.get(pid);
      if (c) { c.args += resumed[2]; c.done = line; c.ok = Number(resumed[3]) >= 0; open.delete(pid); }
      return;
    }
    const call = /^(\w+)\((.*)$/.exec(rest);
    if (!call) return;
    const c: Call = { line, pid, name: call[1]!, args: call[2]!, done: undefined, ok: false };
    if (rest.endsWith('<unfinished ...>')) open.set(pid, c);
    else {
      const ret = /= (-?\d+)/.exec(rest);
      c.done = line;
      c.ok = !!ret && Number(ret[1]) >= 0;
    }
    calls.push(c);
  });
  return calls;
}

test('a create is answered, and a delete acts, only after the write-ahead log holding them is flushed to disk', { timeout: 120_000 }, async (t) => {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-durability-'));
  const trace = path.join(stateDir, 'trace');
  t.after(() => fs.rmSync(stateDir, { recursive: true, force: true }));
  const child = spawn('strace', ['-f', '-y', '-qq', '-s', '48', '-o', trace, '-e', 'trace=pwrite64,fdatasync,fsync,read,writev,write,unlink,unlinkat',
    process.execPath, BIN, 'server'], {
    env: { ...process.env, ...FAST_TIMINGS, BASALT_STATE_DIR: stateDir, BASALT_PORT: '0', BASALT_LOG_LEVEL: 'info', BASALT_REPORT_INTERVAL: '30' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // strace killed alone would leave the server running, detached: stop both, by pid.
  const serverPid = (): number | undefined => {
    try {
      return Number(fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(' ')[0]) || undefined;
    } catch {
      return undefined;
    }
  };
  t.after(() => {
    const server = serverPid();
    if (server) try { process.kill(server, 'SIGKILL'); } catch { /* already gone */ }
    child.kill('SIGKILL');
  });
  const url = await new Promise<string>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const e = JSON.parse(line) as { msg?: string; url?: string };
        if (e.msg === 'API listening' && e.url) resolve(e.url);
      } catch { /* not a log line */ }
    });
    child.once('exit', (code) => reject(new Error(`strace/basalt exited with ${code} before listening`)));
  });
  child.stdout!.resume();
  const headers = { 'X-Auth-Token': `admin:${PROJECT}`, 'Content-Type': 'application/json' };
  const r = await fetch(`${url}/v3/${PROJECT}/volumes`, { method: 'POST', headers, body: JSON.stringify({ volume: { size: 1 } }) });
  assert.equal(r.status, 202);
  const id = ((await r.json()) as { volume: { id: string } }).volume.id;
  const statusNow = async () => { const g = await fetch(`${url}/v3/${PROJECT}/volumes/${id}`, { headers }); return g.status === 404 ? 'gone' : ((await g.json()) as { volume: { status: string } }).volume.status; };
  while (await statusNow() !== 'available') await new Promise((res) => setTimeout(res, 50));
  assert.equal((await fetch(`${url}/v3/${PROJECT}/volumes/${id}`, { method: 'DELETE', headers })).status, 202);
  while (await statusNow() !== 'gone') await new Promise((res) => setTimeout(res, 50));
  // Stop the server itself (strace's child); strace ends with it, its log complete.
  const server = serverPid();
  assert.ok(server, 'the server runs under strace');
  await new Promise((resolve) => { child.once('exit', resolve); process.kill(server, 'SIGTERM'); });

  const calls = parseTrace(fs.readFileSync(trace, 'utf8'));
  const request = calls.find((c) => c.name === 'read' && c.args.includes('POST /v3/'));
  assert.ok(request, 'the request was read');
  const answer = calls.find((c) => (c.name === 'writev' || c.name === 'write') && c.line > request.done! && c.args.includes('HTTP/1.1 202'));
  assert.ok(answer, 'the 202 was written');
  const isLog = (c: Call) => /-wal>/.test(c.args.split(',')[0]!);
  const logWrite = calls.find((c) => c.name === 'pwrite64' && isLog(c) && c.line > request.done! && c.line < answer.line);
  assert.ok(logWrite, 'the create was written to the write-ahead log before the answer');
  const flush = calls.find((c) => (c.name === 'fdatasync' || c.name === 'fsync') && isLog(c) && c.line > logWrite.line && c.ok && c.done !== undefined && c.done < answer.line);
  assert.ok(flush, 'a flush of the log started after the write and returned before the answer');

  // The delete's job removes the file only once the status that asked for it is on disk.
  const deleteRequest = calls.find((c) => c.name === 'read' && c.args.includes('DELETE /v3/'));
  assert.ok(deleteRequest, 'the delete was read');
  const deleting = calls.find((c) => c.name === 'pwrite64' && isLog(c) && c.line > deleteRequest.done!);
  assert.ok(deleting, 'the delete was written to the log');
  const unlink = calls.find((c) => (c.name === 'unlink' || c.name === 'unlinkat') && c.line > deleting.line && c.args.includes(`volume-${id}"`));
  assert.ok(unlink, "the volume's file was removed");
  assert.ok(calls.some((c) => (c.name === 'fdatasync' || c.name === 'fsync') && isLog(c) && c.line > deleting.line && c.ok && c.done !== undefined && c.done < unlink.line),
    'a flush of the log that started after the delete was written returned before the file was removed');
});
