/**
 * A real HTTP server standing in for Nova's `POST /os-server-external-events`
 * (and, optionally, for the Keystone that hands out its token and catalog).
 * Every request is checked as Nova checks it: the body against Nova's JSON
 * schema for external events (nova/api/openstack/compute/schemas/
 * server_external_events.py, with the event names of microversion 2.51 and
 * later), the microversion header (volume-extended needs 2.51), and the token.
 * Answers are Nova's: 200 with each event's code and status, 400 for a body the
 * schema refuses, 404 when no server is known; `behave` can make it slow or
 * refuse.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';

/** Nova's request schema for `POST /os-server-external-events`, event names as of 2.93. */
const NOVA_EXTERNAL_EVENTS_SCHEMA = {
  type: 'object',
  properties: {
    events: {
      type: 'array', minItems: 1,
      items: {
        type: 'object',
        properties: {
          server_uuid: { type: 'string', format: 'uuid' },
          name: {
            type: 'string',
            enum: ['network-changed', 'network-vif-plugged', 'network-vif-unplugged', 'network-vif-deleted', 'volume-extended', 'power-update', 'accelerator-request-bound', 'volume-reimaged'],
          },
          status: { type: 'string', enum: ['failed', 'completed', 'in-progress'] },
          tag: { type: 'string', maxLength: 255 },
        },
        required: ['server_uuid', 'name'],
        additionalProperties: false,
      },
    },
  },
  required: ['events'],
  additionalProperties: false,
} as const;

/** The microversion each event name needs (Nova's api-ref). */
const EVENT_MICROVERSION: Readonly<Record<string, number>> = { 'volume-extended': 51, 'power-update': 76, 'accelerator-request-bound': 82, 'volume-reimaged': 93 };

/** One request that passed every check. */
export interface ReceivedEvents {
  events: Array<{ server_uuid: string; name: string; tag?: string; status?: string }>;
  requestId: string | undefined;
}

/** What to do with the n-th events request (1-based): answer, hang for ms first, or answer a status. */
export type Behaviour = { kind: 'answer' } | { kind: 'slow'; ms: number } | { kind: 'status'; status: number };

/** Options of {@link startNovaReceiver}. */
export interface NovaReceiverOptions {
  /** Port to listen on (a test that starts it late names one). Default: any free one. */
  port?: number;
  behave?: (n: number) => Behaviour;
  /** Servers Nova knows; events for others get code 404 (Nova's 207 or 404). Default: any. */
  knownServers?: readonly string[];
  /** Also serve Keystone's `POST /v3/auth/tokens` (password, project scope) with a catalog naming this server as compute. */
  keystone?: { username: string; password: string; region: string };
}

/** A running stand-in. */
export interface NovaReceiver {
  /** Nova's endpoint (`http://127.0.0.1:PORT/v2.1`). */
  readonly url: string;
  /** Keystone's URL, when it serves one. */
  readonly keystoneUrl: string;
  readonly port: number;
  /** Requests that passed every check, in order. */
  readonly received: ReceivedEvents[];
  /** Requests refused by a check, with why. */
  readonly invalid: string[];
  /** Events requests seen, valid or not. */
  requests: number;
  close(): Promise<void>;
}

const ISSUED_TOKEN = 'gAAAA-nova-receiver-token';

/** Starts a stand-in for Nova on 127.0.0.1. */
export async function startNovaReceiver(o: NovaReceiverOptions = {}): Promise<NovaReceiver> {
  const ajv = new Ajv({ allErrors: true });
  (addFormats as unknown as (a: Ajv) => void)(ajv);
  const validate = ajv.compile(NOVA_EXTERNAL_EVENTS_SCHEMA);
  const received: ReceivedEvents[] = [];
  const invalid: string[] = [];
  let port = 0;
  const state = { requests: 0 };
  const reply = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const server = http.createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => { text += c; });
    req.on('end', () => {
      res.on('error', () => undefined);
      if (o.keystone && req.method === 'POST' && req.url === '/identity/v3/auth/tokens') {
        const body = JSON.parse(text) as { auth: { identity: { password: { user: { name: string; password: string } } }; scope?: unknown } };
        const user = body.auth.identity.password.user;
        if (user.name !== o.keystone.username || user.password !== o.keystone.password || !body.auth.scope) return reply(res, 401, { error: { code: 401 } });
        const base = `http://127.0.0.1:${port}`;
        return reply(res, 201, {
          token: {
            expires_at: new Date(Date.now() + 3600_000).toISOString(),
            catalog: [
              { type: 'identity', endpoints: [{ interface: 'public', region_id: o.keystone.region, url: `${base}/identity` }] },
              {
                type: 'compute', endpoints: [
                  { interface: 'public', region_id: 'elsewhere', url: `${base}/wrong-region/v2.1` },
                  { interface: 'public', region_id: o.keystone.region, url: `${base}/v2.1` },
                  { interface: 'internal', region_id: o.keystone.region, url: `${base}/wrong-interface/v2.1` },
                ],
              },
            ],
          },
        }, { 'X-Subject-Token': ISSUED_TOKEN });
      }
      if (req.method !== 'POST' || req.url !== '/v2.1/os-server-external-events') {
        invalid.push(`${req.method} ${req.url}`);
        return reply(res, 404, { itemNotFound: { code: 404, message: 'The resource could not be found.' } });
      }
      const n = ++state.requests;
      if (o.keystone && req.headers['x-auth-token'] !== ISSUED_TOKEN) {
        invalid.push(`token ${String(req.headers['x-auth-token'])}`);
        return reply(res, 401, { error: { code: 401 } });
      }
      const behaviour = o.behave?.(n) ?? { kind: 'answer' };
      if (behaviour.kind === 'status') return reply(res, behaviour.status, { computeFault: { code: behaviour.status, message: 'stand-in told to fail' } });
      const answer = (): void => {
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          invalid.push('not JSON');
          return reply(res, 400, { badRequest: { code: 400, message: 'Malformed request body' } });
        }
        if (!validate(body)) {
          invalid.push(ajv.errorsText(validate.errors));
          return reply(res, 400, { badRequest: { code: 400, message: `Invalid input for field/attribute events: ${ajv.errorsText(validate.errors)}` } });
        }
        const version = /compute (\d+)\.(\d+)/.exec(String(req.headers['openstack-api-version'] ?? ''));
        const legacy = /^(\d+)\.(\d+)$/.exec(String(req.headers['x-openstack-nova-api-version'] ?? ''));
        const minor = version ? Number(version[2]) : legacy ? Number(legacy[2]) : 1;
        const events = (body as { events: ReceivedEvents['events'] }).events;
        const tooNew = events.find((e) => (EVENT_MICROVERSION[e.name] ?? 0) > minor);
        if (tooNew) {
          invalid.push(`${tooNew.name} at 2.${minor}`);
          return reply(res, 400, { badRequest: { code: 400, message: `Invalid input for field/attribute name. Value: ${tooNew.name}.` } });
        }
        received.push({ events, requestId: req.headers['x-openstack-request-id'] as string | undefined });
        const answered = events.map((e) => {
          const known = !o.knownServers || o.knownServers.includes(e.server_uuid);
          return { ...e, status: known ? 'completed' : 'failed', code: known ? 200 : 404 };
        });
        const ok = answered.filter((e) => e.code === 200).length;
        if (ok === 0) return reply(res, 404, { itemNotFound: { code: 404, message: 'No instances found for any event' } });
        return reply(res, ok === answered.length ? 200 : 207, { events: answered });
      };
      if (behaviour.kind === 'slow') setTimeout(answer, behaviour.ms);
      else answer();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, '127.0.0.1', () => resolve());
  });
  port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/v2.1`,
    keystoneUrl: `http://127.0.0.1:${port}/identity/v3`,
    port, received, invalid,
    get requests() { return state.requests; },
    set requests(v: number) { state.requests = v; },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
