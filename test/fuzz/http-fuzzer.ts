/**
 * The API fuzzer's raw HTTP part (issue 13): requests an HTTP client library
 * would not send — NUL, CR or LF in header values, folded, nameless or huge
 * headers, bad or conflicting lengths, broken chunks, odd methods, versions
 * and request targets — written byte for byte on a keep-alive connection.
 *
 * Invariants, for every exchange:
 * - no 5xx, and every error answer is a Cinder fault body;
 * - a connection the server ends carried `Connection: close` on its last
 *   answer (a keep-alive client is told, instead of meeting a reset);
 * - a connection the server keeps open still serves a next request.
 */
import net from 'node:net';
import fc from 'fast-check';
import { faultProblem } from '../schemas/response-check.ts';

/** One raw request: its bytes (latin1) and what it was made of. */
export interface RawRequest {
  bytes: string;
  /** Whether a complete request was sent (the server should answer it, not wait). */
  complete: boolean;
}

/** One parsed answer. */
interface RawAnswer {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** Counts of a raw run. */
export interface RawFuzzStats {
  exchanges: number;
  byStatus: Record<string, number>;
  /** Connections the server ended (with `Connection: close`). */
  closed: number;
  /** Connections that served a next request after the fuzzed one. */
  keptAlive: number;
}

/** Parses the complete answers at the start of `text`; the rest stays. */
function parseAnswers(text: string, headRequest: boolean): { answers: RawAnswer[]; rest: string } {
  const answers: RawAnswer[] = [];
  for (;;) {
    const end = text.indexOf('\r\n\r\n');
    if (end < 0) break;
    const lines = text.slice(0, end).split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1] ?? NaN);
    const headers = new Map<string, string>();
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i > 0) headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
    }
    const length = headRequest || status === 204 || status === 304 ? 0 : Number(headers.get('content-length') ?? 0);
    if (text.length < end + 4 + length) break;
    answers.push({ status, headers, body: text.slice(end + 4, end + 4 + length) });
    text = text.slice(end + 4 + length);
  }
  return { answers, rest: text };
}

/**
 * Sends `r` on a new connection, then (if the server keeps it open) a plain
 * `GET /v3/`; returns what went wrong, or undefined.
 */
export async function exchange(port: number, r: RawRequest, stats: RawFuzzStats, waitMs = 1500): Promise<string | undefined> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => { /* a reset shows as a close below */ });
  let text = '';
  let closed = false;
  let wake: () => void = () => {};
  socket.on('data', (d) => { text += d.toString('latin1'); wake(); });
  socket.on('close', () => { closed = true; wake(); });
  const until = async (done: () => boolean, ms: number): Promise<void> => {
    const deadline = Date.now() + ms;
    while (!done() && !closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => { wake = resolve; setTimeout(resolve, Math.max(1, deadline - Date.now())); });
    }
  };
  try {
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
    socket.write(Buffer.from(r.bytes, 'latin1'));
    const head = r.bytes.startsWith('HEAD ');
    // The first answer (or the end of the connection); an incomplete request may get neither.
    await until(() => parseAnswers(text, head).answers.length > 0, r.complete ? waitMs : 200);
    // Anything else the request's bytes make (an excess body read as a next request) comes right after.
    await new Promise((resolve) => setTimeout(resolve, 30));
    const first = parseAnswers(text, head).answers;
    for (const a of first) {
      stats.byStatus[a.status] = (stats.byStatus[a.status] ?? 0) + 1;
      if (!(a.status >= 100 && a.status < 500)) return `answered ${a.status}: ${a.body.slice(0, 200)}`;
      if (a.status >= 400 && !head) {
        let body: unknown;
        try { body = JSON.parse(a.body); } catch { return `a ${a.status} whose body is not JSON: ${JSON.stringify(a.body.slice(0, 200))}`; }
        const problem = faultProblem(a.status, body);
        if (problem) return `a ${a.status} that is not a Cinder fault: ${problem}`;
      }
    }
    const last = first[first.length - 1];
    const saysClose = last?.headers.get('connection')?.toLowerCase() === 'close';
    if (saysClose) {
      await until(() => false, waitMs);
      if (!closed) return 'said Connection: close but kept the connection open';
      stats.closed++;
      return undefined;
    }
    if (closed) {
      return first.length ? `closed the connection after a ${last!.status} without Connection: close` : (r.complete ? 'closed the connection without an answer' : undefined);
    }
    // An incomplete request still owes the connection body bytes: a next request would be read as them.
    if (!r.complete) return undefined;
    // Kept open: a keep-alive client's next request must be served.
    const before = first.length;
    socket.write('GET /v3/ HTTP/1.1\r\nHost: basalt\r\n\r\n');
    await until(() => parseAnswers(text, head).answers.length > before, waitMs);
    const after = parseAnswers(text, head).answers;
    if (after.length <= before) {
      return closed ? 'closed a kept-alive connection on the next request without an answer' : 'did not answer the next request on a kept-alive connection';
    }
    stats.keptAlive++;
    return undefined;
  } finally {
    socket.destroy();
  }
}

/** A header line's name and value (either may be malformed). */
function headerArb(project: string): fc.Arbitrary<[string, string]> {
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom<[string, string]>(['Content-Type', 'application/json'], ['Content-Type', 'text/plain'], ['OpenStack-API-Version', 'volume 3.70'], ['Accept', 'application/json'], ['X-Auth-Token', `alice:${project}`]) },
    {
      weight: 4, arbitrary: fc.constantFrom<[string, string]>(
        ['X-Junk', 'a\x00b'], ['X-Auth-Token', `alice\x00:${project}`], ['X-Junk', 'a\rb'], ['X-Junk', 'a\nb'], [' X-Folded', 'x'], ['X-Junk', '\x7f\x01'],
        ['X-Latin1', '\xe9\xff'], ['Bad Name', 'x'], ['', 'x'], ['X-No-Colon\r\nX-Then', 'y'], ['Content-Length', '-1'], ['Content-Length', 'abc'],
        ['Content-Length', '5, 6'], ['Content-Length', '99999999999999999999'], ['Transfer-Encoding', 'gzip'], ['Transfer-Encoding', 'chunked, chunked'],
        ['Transfer-Encoding', 'identity'], ['Expect', '100-continue'], ['Expect', 'the-unexpected'], ['Connection', 'close'], ['Connection', 'upgrade'],
        ['Upgrade', 'websocket'], ['OpenStack-API-Version', 'volume 3.70\x00'], ['OpenStack-API-Version', 'volume 3.\xff'], ['Host', 'a b'],
        ['X-Long', 'v'.repeat(20_000)], ['X-Roles', 'admin\x00'], ['X-Project-Id', project],
      ),
    },
  );
}

/** Bodies and the framing that carries them. */
function framedBodyArb(): fc.Arbitrary<{ headers: [string, string][]; body: string; complete: boolean }> {
  const text = fc.constantFrom('{"volume": {"size": 0}}', '{"os-bogus": {}}', 'true', '{', '[[[[[[', '\x00\x01\x02', '{"constructor": {}}', '');
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant({ headers: [] as [string, string][], body: '', complete: true }) },
    { weight: 4, arbitrary: text.map((b) => ({ headers: [['Content-Length', String(b.length)] as [string, string]], body: b, complete: true })) },
    { weight: 2, arbitrary: text.map((b) => ({ headers: [['Transfer-Encoding', 'chunked'] as [string, string]], body: `${b.length ? `${b.length.toString(16)}\r\n${b}\r\n` : ''}0\r\n\r\n`, complete: true })) },
    {
      weight: 2, arbitrary: fc.constantFrom(
        { headers: [['Transfer-Encoding', 'chunked']] as [string, string][], body: 'zz\r\nhello\r\n0\r\n\r\n', complete: true },
        { headers: [['Transfer-Encoding', 'chunked']] as [string, string][], body: '5\r\nhelloXX\r\n0\r\n\r\n', complete: true },
        { headers: [['Transfer-Encoding', 'chunked']] as [string, string][], body: 'ffffffffffffffff\r\nx\r\n', complete: false },
        { headers: [['Transfer-Encoding', 'chunked'], ['Content-Length', '3']] as [string, string][], body: '3\r\nabc\r\n0\r\n\r\n', complete: true },
        { headers: [['Content-Length', '2'], ['Content-Length', '3']] as [string, string][], body: 'abc', complete: true },
        { headers: [['Content-Length', '2']] as [string, string][], body: '{}GARBAGE / HTTP/1.1\r\n\r\n', complete: true },
        { headers: [['Content-Length', '50']] as [string, string][], body: '{"short":', complete: false },
      ),
    },
  );
}

/** A raw request: method, target, version, headers (some malformed) and a framed body. */
export function rawRequestArb(project: string, volumeId: string): fc.Arbitrary<RawRequest> {
  const method = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE') },
    { weight: 1, arbitrary: fc.constantFrom('HEAD', 'OPTIONS', 'PATCH', 'TRACE', 'CONNECT', 'get', 'FOO', 'G\x00T', '') },
  );
  const target = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(`/v3/${project}/volumes`, `/v3/${project}/volumes/detail?limit=1`, `/v3/${project}/volumes/${volumeId}`, `/v3/${project}/volumes/${volumeId}/action`, '/', '/v3/') },
    {
      weight: 2, arbitrary: fc.constantFrom('*', `http://basalt/v3/${project}/volumes`, `/v3/${project}/volumes/%ff`, `/v3/${project}/volumes/${'a'.repeat(2000)}`,
        `/v3/${'x'.repeat(20_000)}`, `/v3/${project}/volumes/a b`, `/v3/${project}/volumes/\x00`, `/v3/${project}/vol\tumes`, `/v3/${project}/volumes?\xff=\xfe`,
        `/v3/${project}/volumes/constructor`, `/v3/${project}/volumes?sort=__proto__`, '//v3//', '/v3/../../etc/passwd', ''),
    },
  );
  const version = fc.oneof({ weight: 8, arbitrary: fc.constant('HTTP/1.1') }, { weight: 1, arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.2', 'http/1.1', 'HTTP/1.1 junk', '') });
  return fc.record({
    method, target, version,
    host: fc.integer({ min: 0, max: 9 }).map((n) => n !== 0),
    headers: fc.array(headerArb(project), { maxLength: 3 }),
    many: fc.integer({ min: 0, max: 19 }).map((n) => n === 0),
    framed: framedBodyArb(),
  }).map((r) => {
    const headers: [string, string][] = [...(r.host ? [['Host', 'basalt'] as [string, string]] : []), ['X-Auth-Token', `alice:${project}`], ...r.headers, ...r.framed.headers];
    if (r.many) for (let i = 0; i < 300; i++) headers.push([`X-Many-${i}`, 'v']);
    const lines = headers.map(([k, v]) => `${k}: ${v}`).join('\r\n');
    return { bytes: `${r.method} ${r.target} ${r.version}\r\n${lines}\r\n\r\n${r.framed.body}`, complete: r.framed.complete };
  });
}

/**
 * Runs `numRuns` raw exchanges against the server on `port`.
 * @throws fast-check's failure report (seed, counterexample) when an invariant breaks.
 */
export async function runRawHttpFuzz(port: number, project: string, volumeId: string, o: { seed: number; numRuns: number }): Promise<RawFuzzStats> {
  const stats: RawFuzzStats = { exchanges: 0, byStatus: {}, closed: 0, keptAlive: 0 };
  await fc.assert(fc.asyncProperty(rawRequestArb(project, volumeId), async (r) => {
    stats.exchanges++;
    const problem = await exchange(port, r, stats);
    if (problem) throw new Error(`${problem}; request ${JSON.stringify(r.bytes.length > 600 ? `${r.bytes.slice(0, 300)}…${r.bytes.slice(-300)}` : r.bytes)}`);
  }), { seed: o.seed, numRuns: o.numRuns, endOnFailure: true });
  return stats;
}
