/**
 * Starts a real Basalt (all roles, in this process) on a free loopback port
 * with a fresh temporary state directory, and talks HTTP to it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import SQLite from 'better-sqlite3';
import pg from 'pg';
import pino from 'pino';
import { loadConfig } from '../../src/config/index.ts';
import type { KeyManager } from '../../src/keymgr/index.ts';
import { startServer, type RunningServer } from '../../src/server/index.ts';
import { createDatabase, createMigratedDatabase } from './postgres.ts';
import { checkResponse } from '../schemas/response-check.ts';

/** Fast timings for tests: short leases and heartbeats, quick polling. */
export const FAST_TIMINGS = {
  BASALT_REPORT_INTERVAL: '1',
  BASALT_SERVICE_DOWN_TIME: '5',
  BASALT_JOB_POLL_INTERVAL_SECONDS: '0.25',
  BASALT_JOB_LEASE_SECONDS: '2',
  BASALT_JOB_RETRY_DELAY_SECONDS: '0.05',
  BASALT_NBD_PORT: '0',
};

/** A project id used by most tests. */
export const PROJECT = '0123456789abcdef0123456789abcdef';

/** Answer of {@link TestServer.request}. */
export interface Reply {
  status: number;
  headers: Headers;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** Options of {@link startTestServer}. */
export interface TestServerOptions {
  /** INI text written to a file and passed as the configuration. */
  ini?: string;
  /** Extra `BASALT_*` variables. */
  env?: Record<string, string>;
  /** Reuse this state directory (restarts). */
  stateDir?: string;
  /** Receives the server's JSON log lines (at `logLevel`) instead of silence. */
  logLines?: string[];
  /** The level of the lines {@link logLines} receives; default info. */
  logLevel?: 'debug' | 'info';
  /** A key manager instead of the configured one. */
  keyManager?: KeyManager;
}

/** A running test server. */
export interface TestServer {
  url: string;
  stateDir: string;
  server: RunningServer;
  /** One HTTP request; `headers` default to the admin of {@link PROJECT}. See {@link request}. */
  request(method: string, path: string, body?: unknown, headers?: Record<string, string>, options?: RequestOptions): Promise<Reply>;
  close(): Promise<void>;
}

/** The servers each test started, closed before its state directories are removed. */
const servers = new WeakMap<TestContext, Array<() => Promise<void>>>();

/**
 * Makes a temporary state directory removed after the test — after the test's
 * servers have stopped (hooks run in the order they were added, and a server
 * still writing lock files would make the removal fail).
 */
export function tempStateDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-test-'));
  t.after(async () => {
    for (const close of servers.get(t) ?? []) await close();
    await fs.promises.rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
  });
  return dir;
}

/** A test's own database: env naming it for child processes, and a way to query it from the test. */
export interface TestDatabase {
  /** `BASALT_DATABASE__CONNECTION` on PostgreSQL runs; empty on SQLite (the state dir's file). */
  env: Record<string, string>;
  /** Runs one read query (`?` placeholders; cast counts `as integer` for both dialects) and returns its rows. */
  query<T = Record<string, unknown>>(sqlText: string, params?: unknown[]): Promise<T[]>;
}

/**
 * The database a test's child processes use: a fresh PostgreSQL database when
 * TEST_BASALT_PG_URL is set (the PostgreSQL runs), else `basalt.sqlite` in `stateDir`.
 */
export async function testDatabase(stateDir: string): Promise<TestDatabase> {
  if (process.env.TEST_BASALT_PG_URL) {
    const url = await createDatabase(process.env.TEST_BASALT_PG_URL);
    return {
      env: { BASALT_DATABASE__CONNECTION: url },
      async query<T>(sqlText: string, params: unknown[] = []) {
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        try {
          let n = 0;
          return (await c.query(sqlText.replace(/\?/g, () => `$${++n}`), params)).rows as T[];
        } finally {
          await c.end();
        }
      },
    };
  }
  return {
    env: {},
    async query<T>(sqlText: string, params: unknown[] = []) {
      const db = new SQLite(path.join(stateDir, 'basalt.sqlite'), { readonly: true });
      try {
        return db.prepare(sqlText).all(...params) as T[];
      } finally {
        db.close();
      }
    },
  };
}

/** Starts the server; it is closed after the test. */
export async function startTestServer(t: TestContext, o: TestServerOptions = {}): Promise<TestServer> {
  const stateDir = o.stateDir ?? tempStateDir(t);
  let configFile: string | undefined;
  if (o.ini) {
    configFile = path.join(stateDir, 'basalt.conf');
    fs.writeFileSync(configFile, o.ini);
  }
  // With TEST_BASALT_PG_URL (set by the PostgreSQL runs), each server gets a fresh copy of a migrated database there.
  const pgDatabase = process.env.TEST_BASALT_PG_URL ? await createMigratedDatabase(process.env.TEST_BASALT_PG_URL) : undefined;
  const config = loadConfig({
    configFile,
    env: { ...FAST_TIMINGS, BASALT_PORT: '0', BASALT_STATE_DIR: stateDir, ...(pgDatabase ? { BASALT_DATABASE__CONNECTION: pgDatabase } : {}), ...o.env },
  });
  const logger = o.logLines
    ? pino({ level: o.logLevel ?? 'info' }, { write: (line: string) => { o.logLines!.push(line); } })
    : pino({ level: process.env.BASALT_TEST_LOG ?? 'silent' });
  const server = await startServer({ config, logger, ...(o.keyManager ? { keyManager: o.keyManager } : {}) });
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await server.close();
  };
  t.after(close);
  servers.set(t, [...(servers.get(t) ?? []), close]);
  const url = server.url!;
  return {
    url, stateDir, server, close,
    request: (method, p, body, headers, options) => request(url, method, p, body, headers, options),
  };
}

/** Options of {@link request}. */
export interface RequestOptions {
  /**
   * Skips the tempest schema check of this one response, saying why — for a
   * request that is malformed on purpose and whose answer is not even a Cinder
   * fault. (4xx/5xx answers are already judged only as Cinder fault bodies.)
   */
  unchecked?: string;
}

/**
 * Whether responses are judged against tempest's schemas: in the files of
 * test/functional (each runs in its own process, named in its argv).
 */
const CHECK_SCHEMAS = process.argv.slice(1).some((a) => /(^|[\\/])test[\\/]functional[\\/]/.test(a));

/**
 * One HTTP request against `url`. In the functional tests, the response of a
 * Basalt API route is judged against tempest's schema for the route
 * (test/schemas/route-schemas.ts): a violation, or a route the table lacks,
 * throws a SchemaViolation naming the route, the microversion and the problem.
 */
export async function request(url: string, method: string, p: string, body?: unknown, headers: Record<string, string> = {}, options: RequestOptions = {}): Promise<Reply> {
  const h: Record<string, string> = { 'X-Auth-Token': `admin:${PROJECT}`, ...headers };
  let payload: string | undefined;
  if (body !== undefined) {
    payload = typeof body === 'string' ? body : JSON.stringify(body);
    h['Content-Type'] ??= 'application/json';
  }
  const res = await fetch(url + p, { method, headers: h, body: payload });
  const text = await res.text();
  let parsed: unknown = text;
  try { parsed = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
  if (CHECK_SCHEMAS && options.unchecked === undefined) {
    let requestBody: unknown = body;
    if (typeof body === 'string') try { requestBody = JSON.parse(body); } catch { /* sent as is */ }
    const requestVersion = Object.entries(h).find(([k]) => k.toLowerCase() === 'openstack-api-version')?.[1];
    checkResponse({ method, url: p, requestBody, requestVersion, status: res.status, responseVersion: res.headers.get('openstack-api-version'), body: parsed });
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/**
 * Polls `fn` until it returns a truthy value, or fails after `timeoutMs`. The
 * wait ends when what it waits for happens; the bound (default 60 s) only
 * catches what never will, so it is generous: a busy machine makes a test
 * slower, not red (issue 13).
 */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false | null>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Waits until the volume has `status` and returns it. */
export async function waitForStatus(s: TestServer, id: string, status: string, timeoutMs?: number): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  let last = '';
  try {
    return await waitFor(`volume ${id} to be ${status}`, async () => {
      const r = await s.request('GET', `/v3/${PROJECT}/volumes/${id}`);
      last = r.body?.volume?.status;
      return last === status ? r.body.volume : undefined;
    }, timeoutMs);
  } catch (err) {
    // What the volume's user messages say (why a create failed, say): the evidence a CI log keeps.
    const messages = await s.request('GET', `/v3/${PROJECT}/messages?resource_uuid=${id}`, undefined, { 'OpenStack-API-Version': 'volume 3.3' })
      .then((r) => ((r.body?.messages ?? []) as Array<{ event_id: string; user_message: string }>).map((m) => `${m.event_id}: ${m.user_message}`), () => []);
    throw new Error(`${(err as Error).message} (last status ${last}${messages.length ? `; its messages: ${messages.join(' | ')}` : ''})`);
  }
}
