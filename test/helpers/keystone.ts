/**
 * Debian's Keystone for tests: keystone-manage sets up a fresh SQLite database
 * (WAL mode; bcrypt rounds at their minimum, for speed), fernet keys and the
 * bootstrap admin in a temporary folder; uwsgi serves it on a free loopback
 * port. `cloud()` then adds what a Basalt deployment needs: the service user
 * (role `service`, so it may validate tokens), a `volumev3` endpoint pointing at
 * Basalt, and a project with a member and a reader, and a second project.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './net.ts';


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

/** A running Keystone. */
export interface Keystone {
  url: string;
  /** Creates users, projects, roles and Basalt's endpoint (`basaltUrl` like http://127.0.0.1:8776). */
  cloud(basaltUrl: string): Promise<Cloud>;
  stop(): Promise<void>;
}

/** Starts Keystone; resolves once it answers. Needs Debian's python3-keystone, uwsgi-core and uwsgi-plugin-python3. */
export async function startKeystone(): Promise<Keystone> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-keystone-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const conf = path.join(dir, 'keystone.conf');
  fs.writeFileSync(conf, [
    '[DEFAULT]', `log_file = ${dir}/keystone.log`,
    '[database]', `connection = sqlite:///${dir}/keystone.db`,
    '[token]', 'provider = fernet',
    '[fernet_tokens]', `key_repository = ${dir}/fernet-keys`,
    '[fernet_receipts]', `key_repository = ${dir}/fernet-receipts`,
    '[identity]', 'password_hash_rounds = 4',
    '[cache]', 'enabled = false', '',
  ].join('\n'));
  const manage = (...args: string[]) => execFileSync('keystone-manage', ['--config-file', conf, ...args], { stdio: 'ignore' });
  manage('db_sync');
  manage('fernet_setup', '--keystone-user', 'root', '--keystone-group', 'root');
  manage('bootstrap', '--bootstrap-password', 'secret', '--bootstrap-public-url', `${url}/v3`, '--bootstrap-region-id', 'RegionOne');
  execFileSync('/usr/bin/python3', ['-c', `import sqlite3; sqlite3.connect('${dir}/keystone.db').execute('pragma journal_mode=wal')`]);
  const log = path.join(dir, 'uwsgi.log');
  const child = spawn('uwsgi', [
    '--plugin', 'python3', '--http-socket', `127.0.0.1:${port}`, '--wsgi-file', '/usr/bin/keystone-wsgi-public',
    '--env', `OS_KEYSTONE_CONFIG_FILES=${conf}`, '--master', '--processes', '2', '--threads', '2', '--die-on-term', '--logto', log,
    // As Debian's keystone uwsgi settings: clients must not reuse a connection uwsgi will close.
    '--add-header', 'Connection: close', '--buffer-size', '65535', '--lazy-apps', '--enable-threads',
  ], { stdio: 'ignore' });
  for (let i = 0; ; i++) {
    if ((await fetch(`${url}/v3`).then((r) => r.status, () => 0)) === 200) break;
    if (i > 400 || child.exitCode !== null) throw new Error(`Keystone did not start (see ${log})`);
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
      child.kill('SIGTERM');
      await new Promise((r) => child.exitCode === null ? child.once('exit', r) : r(undefined));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
