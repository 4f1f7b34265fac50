/**
 * Issue 13, API input hardening: the defects found by probing the API from
 * outside (1, 2, 3, 5 and 6), each with the requests that used to get a 500,
 * a framework's own body or an error-level log line.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { test } from 'node:test';
import { POLICY } from '../../src/api/policy.ts';
import { PROJECT, startTestServer, waitFor, waitForStatus, type Reply, type TestServer } from '../helpers/server.ts';

const V = `/v3/${PROJECT}`;
const LATEST = { 'OpenStack-API-Version': 'volume 3.70' };
const MEMBER = { 'X-Auth-Token': `alice:${PROJECT}`, 'X-Roles': 'member', ...LATEST };

/** Names every plain object inherits from Object.prototype. */
const PROTOTYPE_NAMES = ['constructor', '__proto__', 'valueOf', 'hasOwnProperty', 'toLocaleString', 'toString', 'isPrototypeOf', 'propertyIsEnumerable', '__defineGetter__'];

/** A JSON object text with one key (JSON.stringify cannot make an own `__proto__` from a literal). */
const oneKey = (key: string, value: unknown): string => `{${JSON.stringify(key)}:${JSON.stringify(value)}}`;

function assertFault(r: Reply, status: number, name: string, what: string): void {
  assert.equal(r.status, status, `${what}: ${r.status} ${JSON.stringify(r.body)}`);
  assert.deepEqual(Object.keys(r.body ?? {}), [name], `${what}: ${JSON.stringify(r.body)}`);
  assert.equal(r.body[name].code, status, what);
  assert.equal(typeof r.body[name].message, 'string', what);
}

async function availableVolume(s: TestServer): Promise<string> {
  const r = await s.request('POST', `${V}/volumes`, { volume: { size: 1 } }, MEMBER);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await waitForStatus(s, r.body.volume.id, 'available');
  return r.body.volume.id;
}

/** Every route path of the policy table with ids filled in (the caller's project where one is named). */
function routes(): { method: string; path: string; action?: string }[] {
  const seen = new Set<string>();
  const out: { method: string; path: string; action?: string }[] = [];
  for (const e of POLICY) {
    const key = `${e.method} ${e.path}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ method: e.method, path: e.path.replace(/:(project|target)\b/g, PROJECT).replace(/:[a-z_]+/g, () => randomUUID()) });
  }
  return out;
}

test('issue 13 defect 1: prototype names are unknown actions, sort keys, metadata and spec keys', async (t) => {
  const s = await startTestServer(t);
  const id = await availableVolume(s);
  const type = await s.request('POST', `${V}/types`, { volume_type: { name: 'plain' } }, LATEST);
  assert.equal(type.status, 200, JSON.stringify(type.body));
  const groupType = await s.request('POST', `${V}/group_types`, { group_type: { name: 'gplain' } }, LATEST);
  assert.equal(groupType.status, 202, JSON.stringify(groupType.body));

  for (const name of PROTOTYPE_NAMES) {
    // As `{"os-bogus": {}}`: an action nobody defined.
    for (const path of [`/volumes/${id}/action`, `/snapshots/${randomUUID()}/action`, `/attachments/${randomUUID()}/action`, `/groups/${randomUUID()}/action`, `/types/${type.body.volume_type.id}/action`]) {
      const r = await s.request('POST', `${V}${path}`, oneKey(name, {}), LATEST);
      assertFault(r, 400, 'badRequest', `${name} on ${path}`);
      assert.equal(r.body.badRequest.message, `There is no such action: ${name}`);
    }
    for (const list of ['/volumes', '/volumes/detail', '/snapshots', '/snapshots/detail', '/groups/detail', '/group_snapshots/detail', '/messages', '/group_types']) {
      const byKey = await s.request('GET', `${V}${list}?sort_key=${name}`, undefined, MEMBER);
      assertFault(byKey, 400, 'badRequest', `sort_key=${name} on ${list}`);
      assert.match(byKey.body.badRequest.message, /Invalid sort key/);
      const bySort = await s.request('GET', `${V}${list}?sort=${name}:asc`, undefined, MEMBER);
      assertFault(bySort, 400, 'badRequest', `sort=${name}:asc on ${list}`);
    }
    assertFault(await s.request('GET', `${V}/volumes/${id}/metadata/${name}`, undefined, MEMBER), 404, 'itemNotFound', `metadata ${name}`);
    assertFault(await s.request('DELETE', `${V}/volumes/${id}/metadata/${name}`, undefined, MEMBER), 404, 'itemNotFound', `delete metadata ${name}`);
    assertFault(await s.request('GET', `${V}/types/${type.body.volume_type.id}/extra_specs/${name}`, undefined, LATEST), 404, 'itemNotFound', `extra spec ${name}`);
    assertFault(await s.request('GET', `${V}/group_types/${groupType.body.group_type.id}/group_specs/${name}`, undefined, LATEST), 404, 'itemNotFound', `group spec ${name}`);
    assertFault(await s.request('GET', `${V}/volumes/${id}/encryption/${name}`, undefined, MEMBER), 404, 'itemNotFound', `encryption ${name}`);
  }

  // Cinder stores any key: `__proto__` and `constructor` are keys like the others, listed everywhere.
  const stored = await s.request('POST', `${V}/volumes/${id}/metadata`, '{"metadata":{"__proto__":"p","constructor":"c","a":"b"}}', MEMBER);
  assert.equal(stored.status, 200, JSON.stringify(stored.body));
  const expect = JSON.parse('{"__proto__":"p","a":"b","constructor":"c"}');
  assert.deepEqual(Object.entries(stored.body.metadata).sort(), Object.entries(expect).sort());
  const listed = await s.request('GET', `${V}/volumes/${id}/metadata`, undefined, MEMBER);
  assert.deepEqual(Object.entries(listed.body.metadata).sort(), Object.entries(expect).sort());
  const one = await s.request('GET', `${V}/volumes/${id}/metadata/__proto__`, undefined, MEMBER);
  assert.equal(one.status, 200);
  assert.ok(Object.hasOwn(one.body.meta, '__proto__') && one.body.meta.__proto__ === 'p', JSON.stringify(one.body));
  const shown = await s.request('GET', `${V}/volumes/${id}`, undefined, MEMBER);
  assert.ok(Object.hasOwn(shown.body.volume.metadata, '__proto__'), JSON.stringify(shown.body.volume.metadata));
  const summary = await s.request('GET', `${V}/volumes/summary`, undefined, MEMBER);
  assert.equal(summary.status, 200, JSON.stringify(summary.body));
  assert.deepEqual(Object.entries(summary.body['volume-summary'].metadata).sort(), [['__proto__', ['p']], ['a', ['b']], ['constructor', ['c']]]);
  const filtered = await s.request('GET', `${V}/volumes?metadata=${encodeURIComponent('{"__proto__":"p"}')}`, undefined, MEMBER);
  assert.deepEqual(filtered.body.volumes.map((v: { id: string }) => v.id), [id]);
  assert.equal((await s.request('PUT', `${V}/volumes/${id}/metadata/__proto__`, '{"meta":{"__proto__":"q"}}', MEMBER)).status, 200);
  assert.equal((await s.request('GET', `${V}/volumes/${id}/metadata/__proto__`, undefined, MEMBER)).body.meta.__proto__, 'q');
  assert.equal((await s.request('DELETE', `${V}/volumes/${id}/metadata/__proto__`, undefined, MEMBER)).status, 200);
  assert.equal((await s.request('GET', `${V}/volumes/${id}/metadata/__proto__`, undefined, MEMBER)).status, 404);

  // Extra specs and group specs too.
  const spec = await s.request('POST', `${V}/types/${type.body.volume_type.id}/extra_specs`, '{"extra_specs":{"__proto__":"x"}}', LATEST);
  assert.equal(spec.status, 200, JSON.stringify(spec.body));
  const specs = await s.request('GET', `${V}/types/${type.body.volume_type.id}/extra_specs`, undefined, LATEST);
  assert.ok(Object.hasOwn(specs.body.extra_specs, '__proto__'), JSON.stringify(specs.body));
  assert.equal((await s.request('GET', `${V}/types/${type.body.volume_type.id}/extra_specs/__proto__`, undefined, LATEST)).body.__proto__, 'x');
});

test('issue 13 defect 2: a deeply nested body is a 400 on every route that takes one', async (t) => {
  const s = await startTestServer(t);
  const deepArray = '['.repeat(5000) + ']'.repeat(5000);
  const deepObject = '{"volume":' + '{"a":'.repeat(5000) + '1' + '}'.repeat(5001);
  let checked = 0;
  for (const r of routes().filter((x) => x.method === 'POST' || x.method === 'PUT')) {
    for (const body of [deepArray, deepObject]) {
      // Experimental routes (webhooks) exist only for requests that ask for them; the header changes nothing elsewhere.
      const answer = await s.request(r.method, `${V}${r.path}`, body, { ...LATEST, 'OpenStack-API-Experimental': 'true' });
      assertFault(answer, 400, 'badRequest', `${r.method} ${r.path}`);
      assert.match(answer.body.badRequest.message, /^Malformed request body: nested deeper than \d+ levels$/);
      checked++;
    }
  }
  assert.ok(checked > 80, `${checked} requests`);
  // Ordinary nesting still reaches validation, which names the field.
  const shallow = await s.request('POST', `${V}/volumes`, { volume: { size: 1, metadata: { a: { b: { c: [[[1]]] } } } } }, LATEST);
  assertFault(shallow, 400, 'badRequest', 'a shallow body');
  assert.match(shallow.body.badRequest.message, /field\/attribute a\b/);
  // And a list's metadata filter, which is JSON in the query.
  const filter = await s.request('GET', `${V}/volumes?metadata=${encodeURIComponent('{"a":' + '['.repeat(1000) + ']'.repeat(1000) + '}')}`, undefined, LATEST);
  assertFault(filter, 400, 'badRequest', 'a deep metadata filter');
});

test('issue 13 defect 3: bodies that are not objects are 400 on every action route', async (t) => {
  const s = await startTestServer(t);
  const actionRoutes = routes().filter((r) => r.method === 'POST' && r.path.endsWith('/action'));
  assert.ok(actionRoutes.length >= 6);
  for (const r of actionRoutes) {
    for (const [body, type] of [['true', 'application/json'], ['1', 'application/json'], ['"os-complete"', 'application/json'], ['null', 'application/json'], ['[]', 'application/json'], ['{"os-complete": {}}', 'text/plain'], ['true', 'text/plain']] as const) {
      const answer = await s.request('POST', `${V}${r.path}`, body, { ...LATEST, 'Content-Type': type });
      assertFault(answer, 400, 'badRequest', `${r.path} ${type} ${body}`);
    }
  }
});

/** Sends `text` on a raw connection and collects what comes back until the server closes it (or `ms` pass). */
function rawExchange(port: number, parts: string[], ms = 3000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    let sent = 0;
    const timer = setTimeout(() => { socket.destroy(); resolve({ text, closed: false }); }, ms);
    const next = (): void => { if (sent < parts.length) socket.write(parts[sent++]!); };
    socket.on('connect', next);
    socket.on('data', (d) => {
      text += d.toString('latin1');
      // One answer per part: send the next once this one's body is complete.
      const answers = text.split(/(?=HTTP\/1\.1 \d{3} )/);
      const last = answers[answers.length - 1]!;
      const length = /content-length: (\d+)/i.exec(last);
      const head = last.indexOf('\r\n\r\n');
      if (length && head >= 0 && last.length - head - 4 >= Number(length[1]) && answers.length === sent) next();
    });
    socket.on('close', () => { clearTimeout(timer); resolve({ text, closed: true }); });
    socket.on('error', reject);
  });
}

test('issue 13 defect 5: the router\'s and the HTTP parser\'s errors are Cinder faults; keep-alive clients are told to reconnect', async (t) => {
  const s = await startTestServer(t);
  const badUrl = await s.request('GET', `${V}/volumes/%ff`, undefined, MEMBER);
  assertFault(badUrl, 400, 'badRequest', '%ff');
  assert.match(badUrl.headers.get('x-openstack-request-id') ?? '', /^req-/);
  for (const length of [101, 300, 2000, 5000]) {
    assertFault(await s.request('GET', `${V}/volumes/${'a'.repeat(length)}`, undefined, MEMBER), 404, 'itemNotFound', `a ${length}-character id`);
  }
  // A metadata key as long as Cinder allows (255) is reachable by its own path.
  const id = await availableVolume(s);
  const key = 'k'.repeat(255);
  assert.equal((await s.request('PUT', `${V}/volumes/${id}/metadata/${key}`, { meta: { [key]: 'v' } }, MEMBER)).status, 200);
  assert.equal((await s.request('GET', `${V}/volumes/${id}/metadata/${key}`, undefined, MEMBER)).body.meta[key], 'v');
  assert.equal((await s.request('DELETE', `${V}/volumes/${id}/metadata/${key}`, undefined, MEMBER)).status, 200);
  // Also when each of its 255 characters takes 12 bytes percent-encoded.
  const wide = '😀'.repeat(255);
  assert.equal((await s.request('PUT', `${V}/volumes/${id}/metadata/${encodeURIComponent(wide)}`, { meta: { [wide]: 'v' } }, MEMBER)).status, 200);
  assert.equal((await s.request('GET', `${V}/volumes/${id}/metadata/${encodeURIComponent(wide)}`, undefined, MEMBER)).body.meta[wide], 'v');

  // A NUL in a header value, after a first answer on the same keep-alive connection.
  const port = Number(new URL(s.url).port);
  const { text, closed } = await rawExchange(port, [
    `GET /v3/ HTTP/1.1\r\nHost: basalt\r\nConnection: keep-alive\r\n\r\n`,
    `GET ${V}/volumes HTTP/1.1\r\nHost: basalt\r\nX-Auth-Token: alice\x00:${PROJECT}\r\n\r\n`,
  ]);
  const answers = text.split(/(?=HTTP\/1\.1 \d{3} )/);
  assert.equal(answers.length, 2, text);
  assert.match(answers[0]!, /^HTTP\/1\.1 200 /);
  assert.match(answers[1]!, /^HTTP\/1\.1 400 /);
  assert.match(answers[1]!, /\r\nConnection: close\r\n/i, 'the server says it closes the connection');
  const body = JSON.parse(answers[1]!.slice(answers[1]!.indexOf('\r\n\r\n') + 4));
  assert.deepEqual(Object.keys(body), ['badRequest']);
  assert.equal(body.badRequest.code, 400);
  assert.ok(closed, 'and closes it');
  // Headers too large: a fault as well.
  const big = await rawExchange(port, [`GET /v3/ HTTP/1.1\r\nHost: basalt\r\nX-Big: ${'b'.repeat(70_000)}\r\n\r\n`]);
  assert.match(big.text, /^HTTP\/1\.1 431 [^\r]*\r\nConnection: close\r\n/);
  assert.match(big.text, /"computeFault":\{"code":431,/);
  // The server still answers new connections.
  assert.equal((await s.request('GET', `${V}/volumes`, undefined, MEMBER)).status, 200);
});

test('issue 13 defect 6: aborted, oversized and malformed requests log no error and no stack', async (t) => {
  const logLines: string[] = [];
  // At debug: each client mistake's own quiet line is what the test waits for.
  const s = await startTestServer(t, { logLines, logLevel: 'debug' });
  const port = Number(new URL(s.url).port);
  const before = logLines.length;
  const head = (extra: string): string => `POST ${V}/volumes HTTP/1.1\r\nHost: basalt\r\nX-Auth-Token: alice:${PROJECT}\r\nContent-Type: application/json\r\n${extra}\r\n`;
  // A body cut short by the client.
  await new Promise<void>((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(`${head('Content-Length: 1000\r\n')}{"volume": {`);
      setTimeout(() => { socket.destroy(); resolve(); }, 200);
    });
  });
  // Too large, by its length and by its chunks.
  await rawExchange(port, [`${head(`Content-Length: ${4 * 1024 * 1024}\r\n`)}${'x'.repeat(1000)}`], 1000);
  const chunk = 'y'.repeat(256 * 1024);
  await rawExchange(port, [`${head('Transfer-Encoding: chunked\r\n')}${`${chunk.length.toString(16)}\r\n${chunk}\r\n`.repeat(6)}0\r\n\r\n`], 1000);
  // Not JSON, a NUL in a header, a bad path.
  await s.request('POST', `${V}/volumes`, '{"volume": ', MEMBER);
  await rawExchange(port, [`GET /v3/ HTTP/1.1\r\nHost: basalt\r\nX-Bad: a\x00b\r\n\r\n`], 1000);
  await s.request('GET', `${V}/volumes/%ff`, undefined, MEMBER);
  // Wait until the server has logged each mistake (bounded by the lines' arrival, not a guessed time).
  type Line = { level: number; msg: string; code?: string; status?: number; method?: string; err?: unknown };
  const expected = ['ECONNRESET', 'FST_ERR_CTP_BODY_TOO_LARGE', 'FST_ERR_CTP_BODY_TOO_LARGE', 'HPE_INVALID_HEADER_TOKEN', 'FST_ERR_BAD_URL', 'POST 400'];
  const seen = (lines: Line[]): string[] => lines.map((l) => l.msg === 'request' ? `${l.method} ${l.status}` : l.code ?? '').filter((k) => expected.includes(k)).sort();
  const lines = await waitFor('a log line for each client mistake', async () => {
    const now = logLines.slice(before).map((l) => JSON.parse(l) as Line);
    return seen(now).length >= expected.length ? now : undefined;
  }, 10_000);
  assert.deepEqual(seen(lines), [...expected].sort());
  const loud = lines.filter((l) => l.level >= 40 || l.err !== undefined || JSON.stringify(l).includes('stack'));
  assert.deepEqual(loud, [], 'client mistakes are not errors');
  // At info, at most the one request line per request; each mistake itself only at debug.
  assert.ok(lines.every((l) => l.msg === 'request' || (l.level <= 20 && l.msg.startsWith('client error'))), JSON.stringify(lines));
});

test('issue 13 API fuzzer finding: a metadata filter on a collection without metadata lists nothing instead of failing', async (t) => {
  const s = await startTestServer(t);
  const filter = `metadata=${encodeURIComponent('{"a":"b"}')}`;
  for (const list of ['/volumes', '/volumes/detail', '/snapshots/detail', '/groups/detail', '/group_snapshots', '/group_snapshots/detail', '/attachments', '/messages']) {
    const r = await s.request('GET', `${V}${list}?${filter}`, undefined, MEMBER);
    assert.equal(r.status, 200, `${list}: ${r.status} ${JSON.stringify(r.body)}`);
  }
});

test('issue 13 API fuzzer findings, raw HTTP: no Host, CONNECT, an unknown Expect and a body behind a refused path are Cinder faults with Connection: close where the connection ends', async (t) => {
  const s = await startTestServer(t);
  const port = Number(new URL(s.url).port);
  const fault = (text: string, status: number): Record<string, { code: number }> => {
    const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Record<string, { code: number }>;
    assert.equal(Object.values(body)[0]!.code, status, text);
    return body;
  };
  // HTTP/1.1 without Host: Node's own answer had an empty body.
  const noHost = await rawExchange(port, [`GET ${V}/volumes HTTP/1.1\r\nX-Auth-Token: alice:${PROJECT}\r\n\r\n`], 1000);
  assert.match(noHost.text, /^HTTP\/1\.1 400 /);
  assert.ok(fault(noHost.text, 400).badRequest);
  // CONNECT: Node dropped the connection without a word.
  const connect = await rawExchange(port, ['CONNECT basalt:443 HTTP/1.1\r\nHost: basalt:443\r\n\r\n']);
  assert.match(connect.text, /^HTTP\/1\.1 405 [^\r]*\r\nConnection: close\r\n/);
  assert.ok(fault(connect.text, 405).badMethod);
  assert.ok(connect.closed);
  // An Expect other than 100-continue: Node's 417 had no body.
  const expect = await rawExchange(port, [`GET ${V}/volumes HTTP/1.1\r\nHost: basalt\r\nX-Auth-Token: alice:${PROJECT}\r\nExpect: the-unexpected\r\n\r\n`]);
  assert.match(expect.text, /^HTTP\/1\.1 417 /);
  assert.match(expect.text, /\r\nConnection: close\r\n/i);
  assert.ok(fault(expect.text, 417).computeFault);
  // A path the router refuses, with a body (here a framing the parser refuses only after the answer).
  const refused = await rawExchange(port, [`GET ${V}/volumes/%ff HTTP/1.1\r\nHost: basalt\r\nTransfer-Encoding: identity\r\n\r\n`]);
  assert.match(refused.text, /^HTTP\/1\.1 400 /);
  assert.match(refused.text, /\r\nconnection: close\r\n/i, 'the connection ends with the answer, and says so');
  assert.ok(refused.closed);
});
