/**
 * The server's two log formats (issue 18, part 3): `--log-format pretty` gives
 * one readable line per event (local time, level, the request id first, the
 * message, its fields), `json` one JSON object per line with an ISO time; the
 * request id is in both. Not a terminal here, so json is the default.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { test, type TestContext } from 'node:test';
import { tempStateDir } from '../helpers/server.ts';

const BIN = path.resolve(import.meta.dirname, '../../bin/basalt.js');

/** Starts `basalt server` with `args`; gives its stdout lines as they come and a way to wait for one. */
function start(t: TestContext, args: string[]): { lines: string[]; until(re: RegExp): Promise<RegExpMatchArray> } {
  const child = spawn(process.execPath, [BIN, 'server', '--port', '0', ...args], {
    env: { ...process.env, BASALT_STATE_DIR: tempStateDir(t), BASALT_NBD_PORT: '0', BASALT_LOG_FORMAT: '' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => new Promise<void>((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  }));
  const lines: string[] = [];
  const waiting: Array<() => void> = [];
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    for (const w of waiting.splice(0)) w();
  });
  return {
    lines,
    async until(re) {
      for (;;) {
        const m = lines.map((l) => re.exec(l)).find(Boolean);
        if (m) return m;
        if (child.exitCode !== null) throw new Error(`the server exited before a line matched ${re}:\n${lines.join('\n')}`);
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          child.once('exit', () => resolve());
        });
      }
    },
  };
}

async function createVolume(url: string): Promise<string> {
  const res = await fetch(`${url}/v3/p1/volumes`, { method: 'POST', headers: { 'X-Auth-Token': 'admin:p1', 'Content-Type': 'application/json' }, body: '{"volume":{"size":1}}' });
  assert.equal(res.status, 202);
  return res.headers.get('x-openstack-request-id')!;
}

test('pretty: one readable line per event, the request id first', { timeout: 60_000 }, async (t) => {
  const s = start(t, ['--log-format', 'pretty']);
  const [, url] = await s.until(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: API listening \{"url":"(http:\/\/[^"]+)"\}$/);
  const requestId = await createVolume(url!);
  const [line] = await s.until(new RegExp(`^\\[\\d\\d:\\d\\d:\\d\\d\\.\\d{3}\\] INFO: \\[${requestId}\\] request \\{.*"method":"POST".*"status":202`));
  assert.doesNotMatch(line!, /"service"|"pid"|"request_id"/, 'what is said once is not repeated in the fields');
  assert.ok(s.lines.every((l) => !l.startsWith('{')), 'no JSON lines');
});

test('json (the default off a terminal): ISO times and the request id as a field', { timeout: 60_000 }, async (t) => {
  const s = start(t, []);
  const ready = JSON.parse((await s.until(/"msg":"API listening"/)).input!) as { time: string; url: string };
  assert.match(ready.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const requestId = await createVolume(ready.url);
  const line = (await s.until(new RegExp(`"request_id":"${requestId}".*"msg":"request"`))).input!;
  assert.equal((JSON.parse(line) as { status: number }).status, 202);
});

test('an unknown format is a usage error', async (t) => {
  const child = spawn(process.execPath, [BIN, 'server', '--log-format', 'xml'], { env: { ...process.env, BASALT_STATE_DIR: tempStateDir(t) }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  assert.equal(code, 2);
  assert.match(stderr, /--log-format.*expected json or pretty/);
});
