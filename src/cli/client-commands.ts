/**
 * The client commands: `basalt volume|snapshot|backup|attachment|type|service …`
 * over the REST API of any Basalt or Cinder endpoint. Tables by default,
 * `--json` for scripts; names wherever ids are; `--wait` follows an
 * asynchronous operation to its end (a status line on a terminal) and says
 * how it ended; exit codes in exit-codes.ts.
 */
import { Command, InvalidArgumentError } from 'commander';
import { type ApiClient, connect } from './api-client.ts';
import { CliError, EXIT } from './exit-codes.ts';
import { watchEvents } from './event-watch.ts';
import { type Column, printList, printObject } from './output.ts';

type Row = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Flags every client command has. */
export interface ClientFlags {
  url?: string;
  project: string;
  user: string;
  token?: string;
  apiVersion?: string;
  json: boolean;
}

/** The connection and output flags of a client command. */
export function withClient(cmd: Command): Command {
  return cmd
    .option('--url <url>', 'API endpoint (default $BASALT_URL, $OS_ENDPOINT, the Keystone catalog\'s, or http://127.0.0.1:$BASALT_PORT)')
    .option('--token <token>', 'a Keystone token (default $OS_TOKEN); without one, $OS_AUTH_URL and a password, else noauth')
    .option('--project <id>', 'project (noauth)', process.env.OS_PROJECT_ID ?? 'admin')
    .option('--user <id>', 'user (noauth)', process.env.OS_USER_ID ?? 'admin')
    .option('--api-version <3.N>', 'microversion to ask for (default $OS_VOLUME_API_VERSION or 3.54)')
    .option('--json', 'print the API\'s objects as JSON instead of tables', false);
}

/** A kind of resource as the API names it. */
interface Kind {
  /** Singular, as said in messages. */
  noun: string;
  /** Collection path. */
  path: string;
  /** Body key of one. */
  one: string;
  /** Body key of a list. */
  many: string;
  /** Whether `GET path?name=` filters by name. */
  nameFilter: boolean;
  columns: Column[];
}

const VOLUME: Kind = {
  noun: 'volume', path: '/volumes', one: 'volume', many: 'volumes', nameFilter: true,
  columns: [['ID', (r) => r.id], ['Name', (r) => r.name], ['Status', (r) => r.status], ['Size', (r) => r.size], ['Type', (r) => r.volume_type],
    ['Attached to', (r) => (r.attachments as Row[] | undefined)?.map((a) => a.server_id ?? a.host_name ?? a.attachment_id)]],
};
const SNAPSHOT: Kind = {
  noun: 'snapshot', path: '/snapshots', one: 'snapshot', many: 'snapshots', nameFilter: true,
  columns: [['ID', (r) => r.id], ['Name', (r) => r.name], ['Status', (r) => r.status], ['Size', (r) => r.size], ['Volume', (r) => r.volume_id]],
};
const BACKUP: Kind = {
  noun: 'backup', path: '/backups', one: 'backup', many: 'backups', nameFilter: true,
  columns: [['ID', (r) => r.id], ['Name', (r) => r.name], ['Status', (r) => r.status], ['Size', (r) => r.size], ['Volume', (r) => r.volume_id],
    ['Incremental', (r) => r.is_incremental]],
};
const ATTACHMENT: Kind = {
  noun: 'attachment', path: '/attachments', one: 'attachment', many: 'attachments', nameFilter: false,
  columns: [['ID', (r) => r.id], ['Volume', (r) => r.volume_id], ['Status', (r) => r.status], ['Instance', (r) => r.instance], ['Mode', (r) => r.attach_mode]],
};
const TYPE: Kind = {
  noun: 'volume type', path: '/types', one: 'volume_type', many: 'volume_types', nameFilter: false,
  columns: [['ID', (r) => r.id], ['Name', (r) => r.name], ['Public', (r) => r.is_public], ['Description', (r) => r.description]],
};

/** The detail list path of a kind (types have none). */
function detailPath(k: Kind): string {
  return k === TYPE ? k.path : `${k.path}/detail`;
}

/**
 * A resource by id or by name: the id is tried first; a name must name exactly one.
 * @throws CliError notFound when nothing has that id or name, refused when several share the name.
 */
async function resolve(api: ApiClient, k: Kind, ref: string): Promise<Row> {
  try {
    return (await api.call<Row>('GET', `${k.path}/${encodeURIComponent(ref)}`))[k.one];
  } catch (err) {
    if (!(err instanceof CliError) || err.exitCode !== EXIT.notFound) throw err;
  }
  const query = k.nameFilter ? `?name=${encodeURIComponent(ref)}` : '';
  const named = ((await api.call<Row>('GET', `${detailPath(k)}${query}`))[k.many] as Row[]).filter((r) => r.name === ref);
  if (named.length === 1) return named[0]!;
  if (named.length === 0) throw new CliError(`no ${k.noun} has the id or name "${ref}" in project ${api.project} (--project or OS_PROJECT_ID choose another)`, EXIT.notFound);
  throw new CliError(`${named.length} ${k.noun}s are named "${ref}": name one by its id (${named.map((r) => r.id).join(', ')})`, EXIT.refused);
}

/** How a polled resource stands: still moving, done, or failed (with why). */
type Settled = { ok: true } | { ok: false; why: string } | undefined;

/** Default bound of `--wait`. */
const WAIT_TIMEOUT_S = 600;

/**
 * Polls `k`'s resource `id` until `settle` says it is done; a status line on
 * a terminal meanwhile. A resource that vanishes is passed as undefined
 * (what a delete waits for).
 * @throws CliError failed when it ends failed or does not settle in time.
 */
async function waitUntil(api: ApiClient, k: Kind, id: string, what: string, settle: (row: Row | undefined) => Settled, timeoutS = WAIT_TIMEOUT_S): Promise<Row | undefined> {
  const started = Date.now();
  const tty = process.stderr.isTTY;
  let delay = 100;
  try {
    for (;;) {
      let row: Row | undefined;
      try {
        row = (await api.call<Row>('GET', `${k.path}/${id}`))[k.one];
      } catch (err) {
        if (!(err instanceof CliError) || err.exitCode !== EXIT.notFound) throw err;
      }
      const s = settle(row);
      if (s?.ok) return row;
      if (s && !s.ok) throw new CliError(`${what} failed: ${s.why}${await reasonOf(api, id)}`, EXIT.failed);
      const elapsed = (Date.now() - started) / 1000;
      if (elapsed > timeoutS) throw new CliError(`${what}: still ${row?.status ?? 'there'} after ${timeoutS} s (raise --wait-timeout, or look at the ${k.noun} with show)`, EXIT.failed);
      if (tty) process.stderr.write(`\r${what}: ${row?.status ?? '…'} (${Math.round(elapsed)} s)\x1b[K`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(1000, delay * 1.5);
    }
  } finally {
    if (tty) process.stderr.write('\r\x1b[K');
  }
}

/** The latest user message about a resource (Cinder 3.3 messages), as a sentence tail; empty when there is none. */
async function reasonOf(api: ApiClient, id: string): Promise<string> {
  try {
    const { messages } = await api.call<{ messages: Row[] }>('GET', `/messages?resource_uuid=${id}`);
    const last = messages.sort((a, b) => String(a.created_at).localeCompare(String(b.created_at))).at(-1);
    return last ? ` (${last.user_message})` : '';
  } catch {
    return ''; // an endpoint older than 3.3: the status alone says it
  }
}

/** A volume's id from its id or name (for `attach`, `detach`, `backup create`). */
export async function volumeId(api: ApiClient, ref: string): Promise<string> {
  return (await resolve(api, VOLUME, ref)).id;
}

/** Settles on `ok` statuses, fails on `bad` ones. */
function statusIs(ok: string[], bad: string[]): (row: Row | undefined) => Settled {
  return (row) => {
    if (!row) return { ok: false, why: 'it is gone' };
    if (ok.includes(row.status)) return { ok: true };
    if (bad.includes(row.status)) return { ok: false, why: `it is ${row.status}` };
    return undefined;
  };
}

/** Settles when the resource is gone; fails on `bad` statuses. */
function gone(bad: string[]): (row: Row | undefined) => Settled {
  return (row) => (!row ? { ok: true } : bad.includes(row.status) ? { ok: false, why: `it is ${row.status}` } : undefined);
}

function positiveInt(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError('expected a whole number of at least 1');
  return Number(v);
}

/** `key=value` pairs gathered from a repeated option. */
function property(v: string, acc: Record<string, string>): Record<string, string> {
  const i = v.indexOf('=');
  if (i < 1) throw new InvalidArgumentError(`expected key=value, got "${v}"`);
  return { ...acc, [v.slice(0, i)]: v.slice(i + 1) };
}

type Action<F> = (api: ApiClient, args: string[], flags: F & ClientFlags) => Promise<void>;

/** A client subcommand: connects, then runs `fn` with the positional arguments. */
function command<F>(parent: Command, spec: string, description: string, fn: Action<F>, options: (c: Command) => Command = (c) => c): void {
  const cmd = withClient(options(parent.command(spec).description(description)));
  cmd.action(async (...all: unknown[]) => {
    const flags = all[all.length - 2] as F & ClientFlags;
    const args = all.slice(0, all.length - 2).flat() as string[];
    await fn(await connect(flags), args, flags);
  });
}

const waitOptions = (c: Command): Command => c
  .option('--wait', 'wait until the operation has ended (exit 1 if it failed)', false)
  .option('--wait-timeout <seconds>', `give up waiting after this long (default ${WAIT_TIMEOUT_S})`, positiveInt, WAIT_TIMEOUT_S);
type WaitFlags = { wait: boolean; waitTimeout: number };

/** Adds the client commands to `program`. */
export function addClientCommands(program: Command): void {
  const volume = program.command('volume').description('volumes (Cinder\'s /volumes)');
  command<{ allProjects: boolean }>(volume, 'list', 'list volumes', async (api, _a, f) => {
    printList((await api.call('GET', `/volumes/detail${f.allProjects ? '?all_tenants=1' : ''}`)).volumes, VOLUME.columns, f.json);
  }, (c) => c.option('--all-projects', 'every project\'s (admin)', false));
  command(volume, 'show <volume>', 'show a volume (id or name)', async (api, [ref], f) => printObject(await resolve(api, VOLUME, ref!), f.json));
  command<WaitFlags & { size?: number; name?: string; description?: string; type?: string; snapshot?: string; source?: string; backup?: string; property: Record<string, string> }>(
    volume, 'create [name]', 'create a volume: empty (--size), or from --snapshot, --source (a volume) or --backup', async (api, [name], f) => {
      const from = {
        ...(f.snapshot ? { snapshot_id: (await resolve(api, SNAPSHOT, f.snapshot)).id } : {}),
        ...(f.source ? { source_volid: (await resolve(api, VOLUME, f.source)).id } : {}),
        ...(f.backup ? { backup_id: (await resolve(api, BACKUP, f.backup)).id } : {}),
      };
      if (f.size === undefined && Object.keys(from).length === 0) throw new CliError('say how large the volume is (--size GiB), or what it is made from (--snapshot, --source, --backup)', EXIT.usage);
      const body = {
        volume: {
          ...(f.size !== undefined ? { size: f.size } : {}), ...from, ...(name ? { name } : {}), ...(f.description ? { description: f.description } : {}),
          ...(f.type ? { volume_type: f.type } : {}), ...(Object.keys(f.property).length ? { metadata: f.property } : {}),
        },
      };
      let v = (await api.call('POST', '/volumes', body)).volume as Row;
      if (f.wait) v = (await waitUntil(api, VOLUME, v.id, `volume ${v.id}`, statusIs(['available'], ['error']), f.waitTimeout))!;
      printObject(v, f.json);
    }, (c) => waitOptions(c.option('--size <GiB>', 'size in GiB', positiveInt).option('--description <text>', 'description').option('--type <type>', 'volume type (id or name)')
      .option('--snapshot <snapshot>', 'from this snapshot').option('--source <volume>', 'a clone of this volume').option('--backup <backup>', 'restored from this backup (3.47)')
      .option('--property <key=value>', 'metadata (repeat)', property, {})));
  command<WaitFlags & { force: boolean }>(volume, 'delete <volume...>', 'delete volumes (ids or names)', async (api, refs, f) => {
    for (const ref of refs) {
      const v = await resolve(api, VOLUME, ref);
      await api.call('DELETE', `/volumes/${v.id}${f.force ? '?force=true' : ''}`);
      if (f.wait) await waitUntil(api, VOLUME, v.id, `deleting volume ${v.id}`, gone(['error_deleting']), f.waitTimeout);
      if (!f.json) console.log(`deleted ${v.id}`);
    }
  }, (c) => waitOptions(c.option('--force', 'delete whatever its status (admin; 3.23)', false)));
  command<WaitFlags>(volume, 'extend <volume> <GiB>', 'grow a volume to a new size', async (api, [ref, size], f) => {
    const v = await resolve(api, VOLUME, ref!);
    const newSize = positiveInt(size!);
    await api.call('POST', `/volumes/${v.id}/action`, { 'os-extend': { new_size: newSize } });
    let after: Row = v;
    if (f.wait) {
      after = (await waitUntil(api, VOLUME, v.id, `extending volume ${v.id}`, (row) => (row?.status === 'extending' ? undefined
        : row && row.size === newSize && ['available', 'in-use'].includes(row.status) ? { ok: true } : row?.status === 'error_extending' || !row ? { ok: false, why: `it is ${row?.status ?? 'gone'}` } : undefined), f.waitTimeout))!;
    }
    printObject(f.wait ? after : { ...v, status: 'extending', size: newSize }, f.json);
  }, waitOptions);

  const snapshot = program.command('snapshot').description('snapshots (Cinder\'s /snapshots)');
  command<{ volume?: string }>(snapshot, 'list', 'list snapshots', async (api, _a, f) => {
    const q = f.volume ? `?volume_id=${(await resolve(api, VOLUME, f.volume)).id}` : '';
    printList((await api.call('GET', `/snapshots/detail${q}`)).snapshots, SNAPSHOT.columns, f.json);
  }, (c) => c.option('--volume <volume>', 'only this volume\'s'));
  command(snapshot, 'show <snapshot>', 'show a snapshot (id or name)', async (api, [ref], f) => printObject(await resolve(api, SNAPSHOT, ref!), f.json));
  command<WaitFlags & { name?: string; force: boolean }>(snapshot, 'create <volume>', 'snapshot a volume', async (api, [ref], f) => {
    const v = await resolve(api, VOLUME, ref!);
    let s = (await api.call('POST', '/snapshots', { snapshot: { volume_id: v.id, force: f.force, ...(f.name ? { name: f.name } : {}) } })).snapshot as Row;
    if (f.wait) s = (await waitUntil(api, SNAPSHOT, s.id, `snapshot ${s.id}`, statusIs(['available'], ['error']), f.waitTimeout))!;
    printObject(s, f.json);
  }, (c) => waitOptions(c.option('--name <name>', 'the snapshot\'s name').option('--force', 'snapshot an in-use volume', false)));
  command<WaitFlags>(snapshot, 'delete <snapshot...>', 'delete snapshots (ids or names)', async (api, refs, f) => {
    for (const ref of refs) {
      const s = await resolve(api, SNAPSHOT, ref);
      await api.call('DELETE', `/snapshots/${s.id}`);
      if (f.wait) await waitUntil(api, SNAPSHOT, s.id, `deleting snapshot ${s.id}`, gone(['error_deleting']), f.waitTimeout);
      if (!f.json) console.log(`deleted ${s.id}`);
    }
  }, waitOptions);

  const backup = program.commands.find((c) => c.name() === 'backup') ?? program.command('backup');
  command(backup, 'list', 'list backups', async (api, _a, f) => printList((await api.call('GET', '/backups/detail')).backups, BACKUP.columns, f.json));
  command(backup, 'show <backup>', 'show a backup (id or name)', async (api, [ref], f) => printObject(await resolve(api, BACKUP, ref!), f.json));
  command<WaitFlags & { force: boolean }>(backup, 'delete <backup...>', 'delete backups (ids or names)', async (api, refs, f) => {
    for (const ref of refs) {
      const b = await resolve(api, BACKUP, ref);
      await api.call(f.force ? 'POST' : 'DELETE', `/backups/${b.id}${f.force ? '/action' : ''}`, f.force ? { 'os-force_delete': {} } : undefined);
      if (f.wait) await waitUntil(api, BACKUP, b.id, `deleting backup ${b.id}`, gone(['error', 'error_deleting']), f.waitTimeout);
      if (!f.json) console.log(`deleted ${b.id}`);
    }
  }, (c) => waitOptions(c.option('--force', 'delete whatever its status (admin)', false)));

  const attachment = program.command('attachment').description('attachments (Cinder\'s /attachments, 3.27)');
  command<{ volume?: string }>(attachment, 'list', 'list attachments', async (api, _a, f) => {
    const q = f.volume ? `?volume_id=${(await resolve(api, VOLUME, f.volume)).id}` : '';
    printList((await api.call('GET', `/attachments/detail${q}`)).attachments, ATTACHMENT.columns, f.json);
  }, (c) => c.option('--volume <volume>', 'only this volume\'s'));
  command(attachment, 'show <attachment>', 'show an attachment', async (api, [ref], f) => printObject(await resolve(api, ATTACHMENT, ref!), f.json));
  command(attachment, 'delete <attachment...>', 'delete attachments (the volume is detached when none is left)', async (api, refs, f) => {
    for (const ref of refs) {
      await api.call('DELETE', `/attachments/${encodeURIComponent(ref)}`);
      if (!f.json) console.log(`deleted ${ref}`);
    }
  });

  const type = program.command('type').description('volume types (Cinder\'s /types)');
  command(type, 'list', 'list volume types', async (api, _a, f) => printList((await api.call('GET', '/types')).volume_types, TYPE.columns, f.json));
  command(type, 'show <type>', 'show a volume type (id or name) with its extra specs', async (api, [ref], f) => printObject(await resolve(api, TYPE, ref!), f.json));
  command<{ description?: string; private: boolean; property: Record<string, string> }>(type, 'create <name>', 'create a volume type (admin)', async (api, [name], f) => {
    const t = (await api.call('POST', '/types', {
      volume_type: { name, ...(f.description ? { description: f.description } : {}), 'os-volume-type-access:is_public': !f.private, ...(Object.keys(f.property).length ? { extra_specs: f.property } : {}) },
    })).volume_type as Row;
    printObject(t, f.json);
  }, (c) => c.option('--description <text>', 'description').option('--private', 'visible only to projects given access', false).option('--property <key=value>', 'extra spec (repeat)', property, {}));
  command(type, 'delete <type...>', 'delete volume types (ids or names; admin)', async (api, refs, f) => {
    for (const ref of refs) {
      const t = await resolve(api, TYPE, ref);
      await api.call('DELETE', `/types/${t.id}`);
      if (!f.json) console.log(`deleted ${t.id}`);
    }
  });

  const event = program.command('event').description('the project\'s events (the experimental GET /events/stream)');
  command<{ from?: number; count?: number }>(event, 'watch', 'print the project\'s events as they happen (id, time, event, resource, status change); picks up where it was after a dropped connection',
    async (api, _a, f) => watchEvents(api, { json: f.json, ...(f.from !== undefined ? { from: f.from } : {}), ...(f.count !== undefined ? { count: f.count } : {}) }),
    (c) => c.option('--from <id>', 'start after this event id (0: every event kept); default: from now on', (v) => {
      if (!/^\d+$/.test(v)) throw new InvalidArgumentError('expected an event id');
      return Number(v);
    }).option('--count <n>', 'stop after this many events', positiveInt));

  const service = program.command('service').description('services (Cinder\'s /os-services, admin)');
  command(service, 'list', 'list services with their state and last heartbeat', async (api, _a, f) => {
    printList((await api.call('GET', '/os-services')).services, [['Binary', (r) => r.binary], ['Host', (r) => r.host], ['Zone', (r) => r.zone],
      ['Status', (r) => r.status], ['State', (r) => r.state], ['Updated at', (r) => r.updated_at]], f.json);
  });
}
