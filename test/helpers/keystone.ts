/**
 * Debian's Keystone for tests: a copy, in a temporary folder, of the SQLite
 * database (WAL mode; bcrypt rounds at their minimum, for speed), fernet keys
 * and bootstrap admin that keystone-manage set up once (`keystoneTemplate`);
 * uwsgi serves it on a free loopback port. `cloud()` then adds what a Basalt
 * deployment needs: the service user (role `service`, so it may validate
 * tokens), a `volumev3` endpoint pointing at Basalt, and a project with a
 * member and a reader, and a second project.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import SQLite from 'better-sqlite3';
import { debianVersion, machineCache } from './machine-cache.ts';
import { freePort } from './net.ts';
import { endsWithThisProcess, exited } from './process.ts';


/** The users and projects of a test cloud. */
export interface Cloud {
  /** Keystone's URL, e.g. http://127.0.0.1:PORT/v3 */
  authUrl: string;
  adminPassword: string;
  service: { user: string; password: string; project: string };
  demo: { id: string; name: string };
  rival: { id: string; name: string };
  adminProject: { id: string };
  /** Password for every user made here. */
  password: string;
  /** A project-scoped token for `user` in `project` (names). */
  token(user: string, project: string): Promise<string>;
  /** Request lines uwsgi logged (to count validations). */
  requestLog(): string[];
  /** Adds a service of `type` with a public endpoint at `url` to the catalog. */
  addService(type: string, name: string, url: string): Promise<void>;
}

/**
 * The `BASALT_*` variables of a Basalt that validates tokens against `cloud`
 * with its service user: `authUrl` is where Basalt calls Keystone (Keystone
 * itself, or a {@link KeystoneDoor} in front of it); clients are sent to the
 * cloud's own URL.
 */
export function basaltKeystoneEnv(cloud: Cloud, authUrl: string = cloud.authUrl): Record<string, string> {
  return {
    BASALT_AUTH_STRATEGY: 'keystone',
    BASALT_KEYSTONE_AUTHTOKEN__AUTH_URL: authUrl, BASALT_KEYSTONE_AUTHTOKEN__WWW_AUTHENTICATE_URI: cloud.authUrl,
    BASALT_KEYSTONE_AUTHTOKEN__USERNAME: cloud.service.user, BASALT_KEYSTONE_AUTHTOKEN__PASSWORD: cloud.service.password,
    BASALT_KEYSTONE_AUTHTOKEN__PROJECT_NAME: cloud.service.project,
  };
}

/** A running Keystone. */
export interface Keystone {
  url: string;
  /** Creates users, projects, roles and Basalt's endpoint (`basaltUrl` like http://127.0.0.1:8776). */
  cloud(basaltUrl: string): Promise<Cloud>;
  stop(): Promise<void>;
}

/** One Keystone and its cloud for the tests of a file, with the port its Basalt is to listen on. */
export interface KeystoneForFile {
  readonly keystone: Keystone;
  readonly cloud: Cloud;
  /** Where the file's Basalt listens: the catalog's volumev3 endpoint names it. */
  readonly port: number;
}

/**
 * Starts a Keystone before the file's tests and stops it after them (the
 * `before`/`after` hooks of the calling file); its fields are set once they run.
 */
export function keystoneForFile(): KeystoneForFile {
  const fixture = {} as { keystone: Keystone; cloud: Cloud; port: number };
  before(async () => {
    fixture.keystone = await startKeystone();
    fixture.port = await freePort();
    fixture.cloud = await fixture.keystone.cloud(`http://127.0.0.1:${fixture.port}`);
  });
  after(() => fixture.keystone?.stop());
  return fixture;
}

/** The identity endpoint a set-up template carries until a start names its own port. */
const TEMPLATE_ENDPOINT = 'http://127.0.0.1:1/v3';

/** Keystone's configuration for the database, keys and log kept in `dir`. */
function keystoneConf(dir: string): string {
  const conf = path.join(dir, 'keystone.conf');
  fs.writeFileSync(conf, [
    '[DEFAULT]', `log_file = ${dir}/keystone.log`,
    '[database]', `connection = sqlite:///${dir}/keystone.db`,
    '[token]', 'provider = fernet',
    '[fernet_tokens]', `key_repository = ${dir}/fernet-keys`,
    '[fernet_receipts]', `key_repository = ${dir}/fernet-receipts`,
    '[identity]', 'password_hash_rounds = 4',
    // Keystone's own cache, in its one process's memory (a deployment's is memcached): without it a
    // token's validation recomputed the token's roles a dozen times, about 1.4 s of CPU each, and
    // tempest's Keystone alone burnt some 12 minutes of CPU in a run. One process, so that every
    // invalidation reaches the cache; one thread: with four, uwsgi closed about a third of the
    // connections of concurrent project deletes without an answer (the delete done), which failed a
    // tempest cleanup; with one, none in the same load.
    '[cache]', 'enabled = true', 'backend = dogpile.cache.memory', '',
  ].join('\n'));
  return conf;
}

/**
 * A set-up Keystone (migrated database, fernet keys, bootstrap admin, WAL mode)
 * kept in the temporary folder for every start on this machine with this
 * Keystone version: keystone-manage's three steps cost about 11 s of CPU, paid
 * once instead of by each test file.
 */
function keystoneTemplate(): string {
  return machineCache(`basalt-keystone-template-${debianVersion('python3-keystone')}`, (building) => {
    const conf = keystoneConf(building);
    const manage = (...args: string[]) => execFileSync('keystone-manage', ['--config-file', conf, ...args], { stdio: 'ignore' });
    manage('db_sync');
    manage('fernet_setup', '--keystone-user', 'root', '--keystone-group', 'root');
    manage('bootstrap', '--bootstrap-password', 'secret', '--bootstrap-public-url', TEMPLATE_ENDPOINT, '--bootstrap-region-id', 'RegionOne');
    const db = new SQLite(path.join(building, 'keystone.db'));
    db.pragma('journal_mode = wal');
    db.close();
    fs.rmSync(path.join(building, 'keystone.log'), { force: true });
  });
}

/** Starts Keystone; resolves once it answers. Needs Debian's python3-keystone, uwsgi-core and uwsgi-plugin-python3. */
export async function startKeystone(): Promise<Keystone> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-keystone-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  fs.cpSync(keystoneTemplate(), dir, { recursive: true });
  const conf = keystoneConf(dir);
  const db = new SQLite(path.join(dir, 'keystone.db'));
  db.prepare('update endpoint set url = ? where url = ?').run(`${url}/v3`, TEMPLATE_ENDPOINT);
  db.close();
  const log = path.join(dir, 'uwsgi.log');
  const child = endsWithThisProcess(spawn('uwsgi', [
    '--plugin', 'python3', '--http-socket', `127.0.0.1:${port}`, '--wsgi-file', '/usr/bin/keystone-wsgi-public',
    '--env', `OS_KEYSTONE_CONFIG_FILES=${conf}`, '--master', '--processes', '1', '--threads', '1', '--die-on-term', '--logto', log,
    // As Debian's keystone uwsgi settings: clients must not reuse a connection uwsgi will close.
    '--add-header', 'Connection: close', '--buffer-size', '65535', '--lazy-apps', '--enable-threads',
  ], { stdio: 'ignore', detached: true }), true); // its own process group: `stop` can end the workers with the master
  // Bounded by Keystone's readiness (or its exit), not by a guess of how long
  // a start takes on a busy machine; five minutes of a live uwsgi that never
  // answers is a Keystone that will not.
  for (const deadline = Date.now() + 300_000; ;) {
    if ((await fetch(`${url}/v3`).then((r) => r.status, () => 0)) === 200) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`Keystone did not start (see ${log})`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const api = async (token: string, method: string, p: string, body?: unknown): Promise<any> => { // eslint-disable-line @typescript-eslint/no-explicit-any
    const r = await fetch(`${url}/v3${p}`, { method, headers: { 'X-Auth-Token': token, 'Content-Type': 'application/json' }, ...(body ? { body: JSON.stringify(body) } : {}) });
    if (r.status >= 400) throw new Error(`Keystone ${method} ${p}: ${r.status} ${await r.text()}`);
    return r.status === 204 ? undefined : r.json();
  };
  const token = async (user: string, password: string, project: string): Promise<string> => {
    const r = await fetch(`${url}/v3/auth/tokens`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: user, domain: { id: 'default' }, password } } }, scope: { project: { name: project, domain: { id: 'default' } } } } }),
    });
    if (r.status !== 201) throw new Error(`no token for ${user}: ${r.status} ${await r.text()}`);
    return r.headers.get('x-subject-token')!;
  };
  return {
    url,
    async cloud(basaltUrl) {
      const admin = await token('admin', 'secret', 'admin');
      const roles = new Map<string, string>(((await api(admin, 'GET', '/roles')).roles as Array<{ id: string; name: string }>).map((r) => [r.name, r.id]));
      roles.set('service', (await api(admin, 'POST', '/roles', { role: { name: 'service' } })).role.id);
      const project = async (name: string) => (await api(admin, 'POST', '/projects', { project: { name, domain_id: 'default' } })).project as { id: string; name: string };
      const password = 'pw-' + Math.random().toString(36).slice(2);
      const user = async (name: string, p: { id: string }, role: string) => {
        const u = (await api(admin, 'POST', '/users', { user: { name, password, domain_id: 'default' } })).user as { id: string };
        await api(admin, 'PUT', `/projects/${p.id}/users/${u.id}/roles/${roles.get(role)}`);
      };
      const service = await project('service');
      await user('basalt', service, 'service');
      const demo = await project('demo');
      await user('alice', demo, 'member');
      await user('rita', demo, 'reader');
      const rival = await project('rival');
      await user('mallory', rival, 'member');
      const addService = async (type: string, name: string, endpoint: string): Promise<void> => {
        const svc = (await api(admin, 'POST', '/services', { service: { name, type } })).service as { id: string };
        await api(admin, 'POST', '/endpoints', { endpoint: { service_id: svc.id, interface: 'public', region_id: 'RegionOne', url: endpoint } });
      };
      await addService('volumev3', 'cinderv3', `${basaltUrl}/v3/$(project_id)s`);
      const adminProject = ((await api(admin, 'GET', '/projects?name=admin')).projects as Array<{ id: string }>)[0]!;
      return {
        authUrl: `${url}/v3`, adminPassword: 'secret', service: { user: 'basalt', password, project: 'service' }, demo, rival, adminProject, password,
        token: (u, p) => token(u, u === 'admin' ? 'secret' : password, p),
        addService,
        requestLog: () => fs.readFileSync(log, 'utf8').split('\n').filter((l) => / (GET|POST|PUT|DELETE|HEAD) \//.test(l)),
      };
    },
    async stop() {
      // SIGTERM, then SIGKILL to the whole group after 10 s: uwsgi's master sometimes waited on its
      // threaded workers for good, and the test file's process with it (two CI runs, 300 s timeouts).
      const group = (signal: NodeJS.Signals): void => { try { process.kill(-child.pid!, signal); } catch { /* gone */ } };
      const done = exited(child);
      group('SIGTERM');
      const timer = setTimeout(() => group('SIGKILL'), 10_000);
      await done;
      clearTimeout(timer);
      group('SIGKILL'); // workers the master left behind
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * An HTTP receiver in front of a Keystone: forwards every request, counts the
 * ones Basalt makes, and can hold requests without ever answering them (a
 * Keystone too slow for Basalt's timeout) until Basalt gives up on them.
 * Counting here is exact: Basalt's call has reached Keystone's door once its
 * answer comes back, whatever Keystone's own log says and when.
 */
export interface KeystoneDoor {
  /** Base URL to give Basalt as `auth_url`. */
  url: string;
  /** Requests seen so far, as "METHOD /path" (query left off), held ones included. */
  seen: string[];
  /** How many requests seen were token validations (`GET /v3/auth/tokens`). */
  validations(): number;
  /** Holds the next `n` requests matching "METHOD /path" unanswered; resolves with how many were held once each was abandoned by its client. */
  hold(match: string, n: number): Promise<number>;
  close(): Promise<void>;
}

/** Opens a {@link KeystoneDoor} to the Keystone at `target` (no /v3). */
export async function keystoneDoor(target: string): Promise<KeystoneDoor> {
  const seen: string[] = [];
  const holds: Array<{ match: string; n: number; left: number; abandoned: number; done: () => void }> = [];
  const server = http.createServer((req, res) => {
    const key = `${req.method} ${(req.url ?? '/').split('?')[0]}`;
    seen.push(key);
    const hold = holds.find((h) => h.match === key && h.left > 0);
    if (hold) {
      hold.left--;
      // Never answered: the client's timeout ends it.
      res.on('close', () => { if (++hold.abandoned === hold.n) hold.done(); });
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => !['host', 'connection', 'content-length'].includes(k))) as Record<string, string>;
      fetch(`${target}${req.url}`, { method: req.method, headers, ...(chunks.length ? { body: Buffer.concat(chunks) } : {}) }).then(async (r) => {
        const body = Buffer.from(await r.arrayBuffer());
        const out: Record<string, string> = {};
        r.headers.forEach((v, k) => { if (!['connection', 'content-length', 'transfer-encoding', 'content-encoding'].includes(k)) out[k] = v; });
        res.writeHead(r.status, out).end(body);
      }, () => res.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    seen,
    validations: () => seen.filter((k) => k === 'GET /v3/auth/tokens').length,
    hold: (match, n) => new Promise<number>((resolve) => {
      const h = { match, n, left: n, abandoned: 0, done: () => resolve(h.abandoned) };
      holds.push(h);
    }),
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
