/**
 * Consumers of Basalt's events for tests: a webhook receiver (a real HTTP
 * server on 127.0.0.1 that checks each delivery's signature as a consumer
 * should) and a reader of a project's event stream (server-sent events).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';
import type { TestServer } from './server.ts';

/** The secret the tests register webhooks with. */
export const WEBHOOK_SECRET = 'a-secret-of-at-least-16-characters';

/** An event as the stream and webhooks send it (webhooks add `project_id`). */
export interface SentEventBody {
  id: number;
  event_id: string;
  event: string;
  resource_type: string;
  resource_id: string;
  from_status: string | null;
  to_status: string | null;
  project_id: string;
  detail: Record<string, any> | null; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** One delivery the receiver took. */
export interface Received { event: string; body: SentEventBody; delivery: string }

/** A receiver on 127.0.0.1 that checks each delivery's signature as a consumer should; `slowFirstMs` delays its first answer. */
export async function startReceiver(t: TestContext, o: { port?: number; slowFirstMs?: number; secret?: string } = {}): Promise<{ url: string; received: Received[]; refused: string[]; requests: number }> {
  const secret = o.secret ?? WEBHOOK_SECRET;
  const state = { received: [] as Received[], refused: [] as string[], requests: 0 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.on('error', () => undefined);
      const n = ++state.requests;
      const body = Buffer.concat(chunks).toString();
      const timestamp = String(req.headers['x-basalt-timestamp'] ?? '');
      const expected = Buffer.from(`sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`);
      const given = Buffer.from(String(req.headers['x-basalt-signature'] ?? ''));
      const fresh = Math.abs(Date.now() / 1000 - Number(timestamp)) < 300;
      if (given.length !== expected.length || !timingSafeEqual(given, expected) || !fresh) {
        state.refused.push(`bad signature on ${body}`);
        res.writeHead(401).end();
        return;
      }
      const answer = (): void => {
        state.received.push({ event: String(req.headers['x-basalt-event']), body: JSON.parse(body), delivery: String(req.headers['x-basalt-delivery']) });
        res.writeHead(204).end();
      };
      if (n === 1 && o.slowFirstMs) setTimeout(answer, o.slowFirstMs);
      else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(o.port ?? 0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    get received() { return state.received; },
    get refused() { return state.refused; },
    get requests() { return state.requests; },
  };
}

/**
 * Every event of `project` kept in the event stream after place `after`, as
 * the stream sends them now (`timeout=0`: what is there, then the end).
 */
export async function streamedEvents(s: TestServer, project: string, after = 0): Promise<Array<{ id: number; event: string; data: SentEventBody }>> {
  const res = await fetch(`${s.url}/v3/${project}/events/stream?timeout=0&last_event_id=${after}`, {
    headers: { 'X-Auth-Token': `admin:${project}`, 'OpenStack-API-Experimental': 'true' },
  });
  if (res.status !== 200) throw new Error(`the event stream answered ${res.status}`);
  const out: Array<{ id: number; event: string; data: SentEventBody }> = [];
  for (const frame of (await res.text()).split('\n\n')) {
    const fields = Object.fromEntries(frame.split('\n').filter((l) => !l.startsWith(':') && l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trimStart()]));
    if (fields.data) out.push({ id: Number(fields.id), event: fields.event!, data: JSON.parse(fields.data) });
  }
  return out;
}
