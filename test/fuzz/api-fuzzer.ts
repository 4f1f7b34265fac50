/**
 * The API fuzzer (issue 13): property-based sequences of malformed requests
 * (bodies, query strings, headers, microversions, ids and Object's own names)
 * against every route of the policy table, as an admin, a member and a reader
 * of one project and a member of another. Used by test/fuzz/api-fuzz.test.ts
 * (a fixed seed, bounded runs) and bench/fuzz-api.ts (longer runs, counts).
 *
 * Invariants, checked on every answer or after every sequence:
 * - no 5xx;
 * - a bad token (when the run is given some) is never accepted;
 * - every error is a Cinder fault body (`{"badRequest": {"code": 400, "message": …}}`);
 * - no answer to a non-admin names an object of the other project the request did not name;
 * - nothing half-created: when no changing request (POST, PUT, DELETE) of a
 *   sequence succeeded, every table's rows (quota usage included) and the files
 *   of the state directory are as before it.
 */
import fs from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import fc from 'fast-check';
import { POLICY, type PolicyEntry } from '../../src/api/policy.ts';
import { faultProblem } from '../schemas/response-check.ts';

/** A running server to fuzz. */
export interface FuzzTarget {
  url: string;
  /** Its state directory, with `basalt.sqlite` (the fuzzer reads SQLite only). */
  stateDir: string;
}

/** The project the admin, member and reader belong to. */
export const OWN_PROJECT = '0123456789abcdef0123456789abcdef';
/** The other project (the foreign caller's). */
export const OTHER_PROJECT = 'fedcba9876543210fedcba9876543210';

/** Who sends a request: its headers and project. */
export interface Persona {
  name: 'admin' | 'member' | 'reader' | 'foreign';
  project: string;
  headers: Record<string, string>;
  isAdmin: boolean;
}

/** The four callers, in this order: an admin, a member and a reader of one project, and a member of another. */
export type Cast = readonly [admin: Persona, member: Persona, reader: Persona, foreign: Persona];

/** The four callers under noauth (the default {@link Cast}). */
export const PERSONAS: Cast = [
  { name: 'admin', project: OWN_PROJECT, headers: { 'X-Auth-Token': `boss:${OWN_PROJECT}`, 'X-Roles': 'admin' }, isAdmin: true },
  { name: 'member', project: OWN_PROJECT, headers: { 'X-Auth-Token': `alice:${OWN_PROJECT}`, 'X-Roles': 'member' }, isAdmin: false },
  { name: 'reader', project: OWN_PROJECT, headers: { 'X-Auth-Token': `rita:${OWN_PROJECT}`, 'X-Roles': 'reader' }, isAdmin: false },
  { name: 'foreign', project: OTHER_PROJECT, headers: { 'X-Auth-Token': `mallory:${OTHER_PROJECT}`, 'X-Roles': 'member' }, isAdmin: false },
];

/** Objects made before fuzzing, so that requests also reach real rows. */
export interface Fixtures {
  /** Ids of the own project's objects (volume, snapshot, group, attachment …). */
  own: string[];
  /** Ids of the other project's objects. */
  other: string[];
  /** Ids everyone may name (volume and group types, QoS specs). */
  shared: string[];
}

/** One generated request. */
export interface FuzzRequest {
  persona: Persona;
  method: string;
  /** Path and query, already encoded (or deliberately not). */
  url: string;
  headers: Record<string, string>;
  body?: string;
  /** The policy entry it was made from. */
  route: string;
  /** Whether `X-Auth-Token` was replaced by one of {@link FuzzOptions.badTokens}. */
  badToken?: boolean;
}

/** One answer. */
export interface FuzzAnswer {
  status: number;
  text: string;
  body: unknown;
}

/** Counts a run produced. */
export interface FuzzStats {
  sequences: number;
  requests: number;
  byStatus: Record<string, number>;
  /** Sequences whose changing requests all failed, after which the state was compared. */
  stateChecks: number;
  /** Policy routes (`METHOD path [action]`) the run reached. */
  routes: Set<string>;
}

/** Names every plain object inherits. */
export const PROTOTYPE_NAMES = ['constructor', '__proto__', 'prototype', 'valueOf', 'hasOwnProperty', 'toLocaleString', 'toString', 'isPrototypeOf', 'propertyIsEnumerable', '__defineGetter__', '__lookupSetter__'];

/** Sends one request. */
export async function send(target: FuzzTarget, r: FuzzRequest): Promise<FuzzAnswer> {
  const res = await fetch(target.url + r.url, { method: r.method, headers: { ...r.persona.headers, ...r.headers }, body: r.body });
  const text = await res.text();
  let body: unknown = text;
  try { body = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
  return { status: res.status, text, body };
}

async function call(target: FuzzTarget, persona: Persona, method: string, p: string, body?: unknown, version = '3.70'): Promise<FuzzAnswer> {
  return send(target, {
    persona, method, url: `/v3/${persona.project}${p}`, route: 'fixture',
    headers: { 'OpenStack-API-Version': `volume ${version}`, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

async function waitUntil(what: string, fn: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function must(a: FuzzAnswer, status: number, what: string): Record<string, any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  if (a.status !== status) throw new Error(`fixture ${what}: ${a.status} ${a.text.slice(0, 300)}`);
  return a.body as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** Makes the fixtures: in each project a volume with metadata, its snapshot and an attachment; a type, a group type, a group and a QoS spec. */
export async function makeFixtures(target: FuzzTarget, cast: Cast = PERSONAS): Promise<Fixtures> {
  const [admin, member, , foreign] = cast;
  const type = must(await call(target, admin, 'POST', '/types', { volume_type: { name: 'fuzz-type' } }), 200, 'type').volume_type.id as string;
  const groupType = must(await call(target, admin, 'POST', '/group_types', { group_type: { name: 'fuzz-group-type' } }), 202, 'group type').group_type.id as string;
  const qos = must(await call(target, admin, 'POST', '/qos-specs', { qos_specs: { name: 'fuzz-qos', consumer: 'back-end' } }), 200, 'qos').qos_specs.id as string;
  const made = async (p: Persona): Promise<string[]> => {
    const volume = must(await call(target, p, 'POST', '/volumes', { volume: { size: 1, volume_type: type, metadata: { fuzz: 'yes' } } }), 202, 'volume').volume.id as string;
    const status = async (kind: string, id: string): Promise<string> => ((await call(target, p, 'GET', `/${kind}s/${id}`)).body as Record<string, { status: string }>)[kind]!.status;
    await waitUntil(`volume ${volume}`, async () => (await status('volume', volume)) === 'available');
    const snapshot = must(await call(target, p, 'POST', '/snapshots', { snapshot: { volume_id: volume, name: 'fuzz' } }), 202, 'snapshot').snapshot.id as string;
    await waitUntil(`snapshot ${snapshot}`, async () => (await status('snapshot', snapshot)) === 'available');
    const attachment = must(await call(target, p, 'POST', '/attachments', { attachment: { volume_uuid: volume } }), 200, 'attachment').attachment.id as string;
    const group = must(await call(target, p, 'POST', '/groups', { group: { group_type: groupType, volume_types: [type], name: 'fuzz' } }), 202, 'group').group.id as string;
    await waitUntil(`group ${group}`, async () => ((await call(target, p, 'GET', `/groups/${group}`)).body as { group: { status: string } }).group.status === 'available');
    return [volume, snapshot, attachment, group];
  };
  return { own: await made(member), other: await made(foreign), shared: [type, groupType, qos] };
}

// ---- generation ----

/** Text a path segment or query value may carry: ids, Object's names, junk, long strings, bad encodings. */
function segmentArb(f: Fixtures): fc.Arbitrary<string> {
  // Lone surrogates cannot be percent-encoded: they become `?` first.
  const enc = (a: fc.Arbitrary<string>): fc.Arbitrary<string> => a.map((x) => encodeURIComponent(x.replace(/[\uD800-\uDFFF]/g, '?')));
  return fc.oneof(
    { weight: 10, arbitrary: fc.constantFrom(...f.own, ...f.other, ...f.shared) },
    { weight: 2, arbitrary: fc.uuid() },
    { weight: 3, arbitrary: enc(fc.constantFrom(...PROTOTYPE_NAMES)) },
    { weight: 2, arbitrary: enc(fc.string({ minLength: 1, maxLength: 40, unit: 'binary' })) },
    { weight: 1, arbitrary: fc.constantFrom('%ff', '%00', '%2F', '%', '..', '.', 'detail', 'summary', 'action', 'a'.repeat(101), 'b'.repeat(300), 'c'.repeat(1100), '%E2%82', '%C0%AF') },
  );
}

/** Field names bodies carry: Cinder's, Object's and random ones. */
const FIELD_NAMES = [
  'size', 'name', 'description', 'display_name', 'metadata', 'volume_type', 'snapshot_id', 'source_volid', 'availability_zone',
  'group_id', 'backup_id', 'imageRef', 'multiattach', 'bootable', 'new_size', 'status', 'attach_status', 'migration_status',
  'force', 'host', 'cluster', 'connector', 'volume_uuid', 'instance_uuid', 'mode', 'project', 'new_type', 'migration_policy',
  'readonly', 'extra_specs', 'group_type', 'volume_types', 'add_volumes', 'remove_volumes', 'group_specs', 'is_public',
  'os-volume-type-access:is_public', 'volume_id', 'auth_key', 'ref', 'service_host', 'volumes', 'gigabytes', 'snapshots',
  'consumer', 'keys', 'provider', 'cipher', 'key_size', 'control_location', 'binary', 'disabled_reason', 'delete-volumes',
  'group_snapshot_id', 'source_group_id', 'attachment_id', 'mountpoint', 'instance_uuid', 'progress', 'new_volume', 'lock_volume',
];

/** A JSON value: scalars at the edges (huge, negative, empty, Object's names), nested a little. */
function valueArb(f: Fixtures): fc.Arbitrary<unknown> {
  const scalar = fc.oneof(
    fc.constantFrom(0, -1, 1, 2, 1.5, 2147483647, 2147483648, 1e308, -1e308, '', ' ', '1', '-1', 'true', 'null', null, true, false),
    fc.constantFrom(...PROTOTYPE_NAMES),
    fc.constantFrom(...f.own, ...f.other, ...f.shared),
    fc.string({ maxLength: 30, unit: 'binary' }),
    fc.constantFrom('x'.repeat(256), 'available', 'error', 'in-use', 'rw', 'ro', 'on-demand', 'never', 'volume', 'detached'),
    fc.integer(),
  );
  return fc.oneof({ weight: 4, arbitrary: scalar }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) }, { weight: 1, arbitrary: fc.array(scalar, { maxLength: 3 }) });
}

/** An object with Cinder's field names (and Object's), random values. */
function objectArb(f: Fixtures): fc.Arbitrary<Record<string, unknown>> {
  return fc.dictionary(fc.oneof(fc.constantFrom(...FIELD_NAMES), fc.constantFrom(...PROTOTYPE_NAMES), fc.string({ maxLength: 12 })), valueArb(f), { maxKeys: 5 });
}

/** The key a route's body wraps its object in (`volume`, `snapshot`, `metadata` …). */
function wrapperKey(entry: PolicyEntry): string {
  const literal = entry.path.split('/').filter((s) => s && !s.startsWith(':'));
  const last = literal[literal.length - 1] ?? '';
  const byLast: Record<string, string> = {
    volumes: 'volume', snapshots: 'snapshot', types: 'volume_type', group_types: 'group_type', groups: 'group', group_snapshots: 'group_snapshot',
    attachments: 'attachment', 'qos-specs': 'qos_specs', 'os-quota-sets': 'quota_set', 'os-quota-class-sets': 'quota_class_set', metadata: 'metadata',
    extra_specs: 'extra_specs', group_specs: 'group_specs', 'os-volume-transfer': 'transfer', 'volume-transfers': 'transfer', accept: 'accept',
    'os-volume-manage': 'volume', manageable_volumes: 'volume', 'os-snapshot-manage': 'snapshot', manageable_snapshots: 'snapshot',
    'default-types': 'default_type', encryption: 'encryption', cleanup: 'cluster_name', delete_keys: 'keys',
  };
  return Object.hasOwn(byLast, last) ? byLast[last]! : last;
}

/** The fields Cinder's bodies carry under each wrapper or action name, to get past the first checks more often. */
const TEMPLATE_FIELDS: Readonly<Record<string, readonly string[]>> = {
  volume: ['size', 'name', 'volume_type', 'snapshot_id', 'source_volid', 'metadata', 'availability_zone', 'group_id', 'multiattach', 'host', 'ref'],
  snapshot: ['volume_id', 'name', 'force', 'metadata', 'ref'],
  volume_type: ['name', 'description', 'extra_specs', 'os-volume-type-access:is_public'],
  group_type: ['name', 'group_specs', 'is_public'],
  group: ['group_type', 'volume_types', 'name', 'add_volumes', 'remove_volumes', 'availability_zone'],
  group_snapshot: ['group_id', 'name'],
  attachment: ['volume_uuid', 'instance_uuid', 'connector', 'mode'],
  qos_specs: ['name', 'consumer'],
  quota_set: ['volumes', 'gigabytes', 'snapshots', 'groups', 'per_volume_gigabytes'],
  quota_class_set: ['volumes', 'gigabytes'],
  transfer: ['volume_id', 'name', 'no_snapshots'],
  accept: ['auth_key'],
  encryption: ['provider', 'cipher', 'key_size', 'control_location'],
  default_type: ['volume_type'],
  'os-extend': ['new_size'],
  'os-reset_status': ['status', 'attach_status', 'migration_status'],
  'os-retype': ['new_type', 'migration_policy'],
  'os-update_readonly_flag': ['readonly'],
  'os-set_bootable': ['bootable'],
  'os-migrate_volume': ['host', 'cluster', 'force_host_copy', 'lock_volume'],
  'os-migrate_volume_completion': ['new_volume', 'error'],
  'os-attach': ['instance_uuid', 'mountpoint', 'host_name', 'mode'],
  'os-detach': ['attachment_id'],
  'os-force_detach': ['attachment_id', 'connector'],
  'os-initialize_connection': ['connector'],
  'os-terminate_connection': ['connector'],
  'os-update_snapshot_status': ['status', 'progress'],
  revert: ['snapshot_id'],
  addProjectAccess: ['project'],
  removeProjectAccess: ['project'],
  delete: ['delete-volumes'],
  reset_status: ['status'],
  'create-from-src': ['group_snapshot_id', 'source_group_id', 'name'],
};

/** An object for `wrapper` with (some of) its own fields, or any fields when it has no template. */
function shapedArb(wrapper: string, f: Fixtures): fc.Arbitrary<unknown> {
  const fields = Object.hasOwn(TEMPLATE_FIELDS, wrapper) ? TEMPLATE_FIELDS[wrapper]! : undefined;
  if (!fields) return objectArb(f);
  return fc.tuple(fc.subarray([...fields]), fc.array(valueArb(f), { minLength: fields.length, maxLength: fields.length }))
    .map(([keys, values]) => Object.fromEntries(keys.map((k, i) => [k, values[i]])));
}

/** Raw body texts: not objects, not JSON, deep, prototype pollution attempts. */
const RAW_BODIES = [
  'true', 'false', '1', '-1', '0', 'null', '[]', '[{}]', '""', '"x"', '{', '}', '{"a":1,}', '{"a":}', "{'a': 1}", 'NaN', '\u0000', ' ',
  '{"__proto__":{"isAdmin":true,"roles":["admin"]}}', '{"constructor":{"prototype":{"polluted":1}}}', '{"a":1,"a":2}',
  '['.repeat(5000) + ']'.repeat(5000), '{"v":'.repeat(150) + '1' + '}'.repeat(150), '[' + '1,'.repeat(50_000) + '1]',
  JSON.stringify({ metadata: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`k${i}`, 'v'])) }),
];

/** A body for a route: wrapped objects, action bodies, raw texts, nothing. */
function bodyArb(entry: PolicyEntry, f: Fixtures): fc.Arbitrary<string | undefined> {
  const actionNames = [...new Set(POLICY.filter((p) => p.path === entry.path && p.action).map((p) => p.action!))];
  const one = (k: string, v: unknown): string => `{${JSON.stringify(k)}:${JSON.stringify(v)}}`;
  const wrapper = wrapperKey(entry);
  const wrapped = fc.oneof(
    { weight: 3, arbitrary: shapedArb(wrapper, f).map((v) => one(wrapper, v)) },
    { weight: 2, arbitrary: fc.tuple(fc.oneof(fc.constant(wrapper), fc.constant('meta'), fc.constantFrom(...PROTOTYPE_NAMES)), fc.oneof(objectArb(f), valueArb(f))).map(([k, v]) => one(k, v)) },
  );
  const action = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...(actionNames.length ? actionNames : ['os-bogus'])).chain((k) => shapedArb(k, f).map((v) => one(k, v))) },
    { weight: 2, arbitrary: fc.tuple(fc.oneof(fc.constantFrom(...(actionNames.length ? actionNames : ['os-bogus'])), fc.constantFrom(...PROTOTYPE_NAMES), fc.string({ maxLength: 12 })), fc.oneof(objectArb(f), valueArb(f))).map(([k, v]) => one(k, v)) },
  );
  return fc.oneof(
    { weight: entry.path.endsWith('/action') ? 6 : 1, arbitrary: action },
    { weight: entry.path.endsWith('/action') ? 1 : 6, arbitrary: wrapped },
    { weight: 2, arbitrary: objectArb(f).map((o) => JSON.stringify(o)) },
    { weight: 2, arbitrary: fc.constantFrom(...RAW_BODIES) },
    { weight: 1, arbitrary: fc.constant(undefined) },
  );
}

/** Query parameters: paging, sorting, filters, flags, Object's names, bad values. */
function queryArb(f: Fixtures): fc.Arbitrary<string> {
  const key = fc.oneof(
    fc.constantFrom('limit', 'marker', 'offset', 'sort', 'sort_key', 'sort_dir', 'all_tenants', 'project_id', 'metadata', 'name', 'status',
      'with_count', 'force', 'cascade', 'usage', 'volume_id', 'instance_id', 'bootable', 'availability_zone', 'group_id', 'host', 'binary',
      'resource_uuid', 'event_id', 'is_public', 'detailed', 'list_volume', 'fields'),
    fc.constantFrom(...PROTOTYPE_NAMES),
  );
  const value = fc.oneof(
    segmentArb(f),
    fc.constantFrom('1', '0', '-1', 'true', 'false', '99999999999999999999', '1e3', 'asc', 'desc', 'name:asc', 'created_at:desc,id', ':', ',',
      'constructor:asc', 'toString', '__proto__:desc', '{"fuzz":"yes"}', "{'fuzz': 'yes'}", '{"constructor":"x"}', '[]', '{'),
    fc.constantFrom(encodeURIComponent('{"a":' + '['.repeat(200) + ']'.repeat(200) + '}')),
  );
  return fc.array(fc.tuple(key, value), { maxLength: 4 }).map((pairs) => pairs.length ? '?' + pairs.map(([k, v]) => `${encodeURIComponent(k)}=${v}`).join('&') : '');
}

/** `OpenStack-API-Version` values, and none. */
const versionArb: fc.Arbitrary<string | undefined> = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 75 }).map((n) => `volume 3.${n}`) },
  { weight: 2, arbitrary: fc.constant('volume 3.70') },
  { weight: 1, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: fc.constantFrom('volume latest', 'volume LATEST', 'volume 3.x', 'volume 4.0', 'volume 2.0', 'volume 3.01', 'volume', 'volume ', 'compute 2.1', 'volume 3.0, compute 2.1', 'volume 3.999999999999999999', 'volume 3.-1', 'volume constructor', 'volume 3.0 3.1', ',,,') },
);

const contentTypeArb: fc.Arbitrary<string | undefined> = fc.oneof(
  { weight: 8, arbitrary: fc.constant('application/json') },
  { weight: 1, arbitrary: fc.constantFrom('text/plain', 'application/xml', 'application/vnd.openstack.volume+json', 'application/json; charset=utf-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonx', '*/*', 'constructor') },
  { weight: 1, arbitrary: fc.constant(undefined) },
);

/**
 * A request: a policy entry, a persona of `cast`, its ids, query, headers and
 * body; with `badTokens`, one request in six carries one of them as its
 * `X-Auth-Token` instead of the persona's.
 */
export function requestArb(f: Fixtures, cast: Cast = PERSONAS, badTokens: readonly string[] = []): fc.Arbitrary<FuzzRequest> {
  const entries = POLICY;
  const [own, other] = [cast[1].project, cast[3].project];
  return fc.record({
    entry: fc.constantFrom(...entries),
    // Admins and members get past the policy most: they reach the handlers.
    persona: fc.oneof({ weight: 3, arbitrary: fc.constant(cast[0]) }, { weight: 3, arbitrary: fc.constant(cast[1]) }, { weight: 1, arbitrary: fc.constantFrom(cast[2], cast[3]) }),
    badToken: badTokens.length ? fc.oneof({ weight: 5, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constantFrom(...badTokens) }) : fc.constant(undefined),
    wrongProject: fc.integer({ min: 0, max: 19 }).map((n) => n === 0),
    noProject: fc.integer({ min: 0, max: 19 }).map((n) => n === 0),
    junkProjectParam: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
    segments: fc.array(segmentArb(f), { minLength: 4, maxLength: 4 }),
    query: queryArb(f),
    version: versionArb,
    contentType: contentTypeArb,
    methodSwap: fc.integer({ min: 0, max: 29 }).map((n) => (n === 0 ? 'PATCH' : n === 1 ? 'DELETE' : n === 2 ? 'HEAD' : undefined)),
  }).chain((r) => bodyArb(r.entry, f).map((body) => ({ ...r, body }))).map((r) => {
    let k = 0;
    const project = r.wrongProject ? (r.persona.project === own ? other : own) : r.persona.project;
    // A route naming a project (quotas, default types) mostly names the caller's.
    const p = r.entry.path.replace(/:([a-z_]+)/g, (_, name: string) => ((name === 'project' || name === 'target') && !r.junkProjectParam ? project : r.segments[k++ % 4]!));
    const method = r.methodSwap ?? r.entry.method;
    const headers: Record<string, string> = {};
    if (r.version !== undefined) headers['OpenStack-API-Version'] = r.version;
    const body = method === 'GET' || method === 'HEAD' ? undefined : r.body;
    if (body !== undefined && r.contentType !== undefined) headers['Content-Type'] = r.contentType;
    if (r.badToken !== undefined) headers['X-Auth-Token'] = r.badToken;
    return {
      persona: r.persona, method, headers, ...(body === undefined ? {} : { body }), ...(r.badToken === undefined ? {} : { badToken: true }),
      url: `${r.noProject ? '/v3' : `/v3/${project}`}${p}${r.query}`,
      route: `${r.entry.method} ${r.entry.path}${r.entry.action ? ` ${r.entry.action}` : ''}`,
    };
  });
}

// ---- invariants ----

/** What is wrong with an answer, or undefined. */
export function problemOf(r: FuzzRequest, a: FuzzAnswer, f: Fixtures): string | undefined {
  if (a.status >= 500) return `a ${a.status}`;
  if (a.status >= 400 && r.method !== 'HEAD') {
    const p = faultProblem(a.status, a.body);
    if (p) return `not a Cinder fault: ${p}`;
  }
  if (r.badToken && a.status < 400) return `a bad token was accepted (${a.status})`;
  if (!r.persona.isAdmin) {
    const secrets = r.persona.name === 'foreign' ? f.own : f.other;
    const asked = `${r.url} ${r.body ?? ''}`;
    const leaked = secrets.filter((id) => a.text.includes(id) && !asked.includes(id));
    if (leaked.length) return `names another project's ${leaked.join(', ')}`;
  }
  return undefined;
}

/** Tables whose rows change without any request (service heartbeats). */
const LIVE_TABLES = new Set(['services']);

/** The state a failed request must not change: every table's rows and the state directory's files with their sizes. */
export function stateOf(target: FuzzTarget): string {
  const db = new SQLite(path.join(target.stateDir, 'basalt.sqlite'), { readonly: true, fileMustExist: true });
  const out: string[] = [];
  try {
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as { name: string }[];
    for (const { name } of tables) {
      if (LIVE_TABLES.has(name)) continue;
      const rows = db.prepare(`SELECT * FROM "${name}"`).all().map((r) => JSON.stringify(r)).sort();
      out.push(`# ${name} (${rows.length})`, ...rows);
    }
  } finally {
    db.close();
  }
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, e.name);
      const rel = path.relative(target.stateDir, full);
      if (/^basalt\.sqlite/.test(rel) || /(^|\/)locks?(\/|$)|\.lock$/.test(rel)) continue;
      if (e.isDirectory()) walk(full);
      else { try { out.push(`file ${rel} ${fs.statSync(full).size}`); } catch { /* removed meanwhile */ } }
    }
  };
  walk(target.stateDir);
  return out.join('\n');
}

/** Waits until no job is queued or running (what a successful request started has ended). */
export async function quiesce(target: FuzzTarget): Promise<void> {
  const db = new SQLite(path.join(target.stateDir, 'basalt.sqlite'), { readonly: true, fileMustExist: true });
  try {
    await waitUntil('jobs to end', async () => (db.prepare("SELECT count(*) AS n FROM jobs WHERE state IN ('queued', 'running')").get() as { n: number }).n === 0, 60_000);
  } finally {
    db.close();
  }
}

/** A long text's start and end. */
function clip(text: string | undefined): string | undefined {
  return text === undefined || text.length <= 600 ? text : `${text.slice(0, 200)}…(${text.length} characters)…${text.slice(-400)}`;
}

/** The first lines where two states differ. */
function difference(before: string, after: string): string {
  const a = before.split('\n');
  const b = after.split('\n');
  const gone = a.filter((l) => !b.includes(l)).slice(0, 5);
  const added = b.filter((l) => !a.includes(l)).slice(0, 5);
  return `gone: ${JSON.stringify(gone)}; added: ${JSON.stringify(added)}`;
}

/** Options of {@link runApiFuzz}. */
export interface FuzzOptions {
  seed: number;
  /** Sequences to run. */
  numRuns: number;
  /** Requests per sequence, at most. Default 6. */
  maxRequests?: number;
  /** Whether a sequence's requests are sent all at once (races) instead of one after another. Default false. */
  concurrent?: boolean;
  /** The callers; default {@link PERSONAS} (noauth). */
  cast?: Cast;
  /** `X-Auth-Token` values that must never be accepted, sent in place of a persona's token now and then; default none. */
  badTokens?: readonly string[];
}

/**
 * Runs the fuzzer against `target` (fixtures already made) and returns its counts.
 * @throws the fast-check failure (seed, path and the counterexample) when an invariant breaks.
 */
export async function runApiFuzz(target: FuzzTarget, f: Fixtures, o: FuzzOptions): Promise<FuzzStats> {
  const stats: FuzzStats = { sequences: 0, requests: 0, byStatus: {}, stateChecks: 0, routes: new Set() };
  await quiesce(target);
  let baseline = stateOf(target);
  await fc.assert(fc.asyncProperty(fc.array(requestArb(f, o.cast, o.badTokens), { minLength: 1, maxLength: o.maxRequests ?? 6 }), async (requests) => {
    stats.sequences++;
    let changed = false;
    const answers = o.concurrent ? await Promise.all(requests.map((r) => send(target, r))) : undefined;
    for (const [i, r] of requests.entries()) {
      const a = answers ? answers[i]! : await send(target, r);
      stats.requests++;
      stats.byStatus[a.status] = (stats.byStatus[a.status] ?? 0) + 1;
      stats.routes.add(r.route);
      const problem = problemOf(r, a, f);
      if (problem) throw new Error(`${r.persona.name} ${r.method} ${clip(r.url)} ${JSON.stringify(r.headers)} body ${JSON.stringify(clip(r.body))}: ${problem}; answer ${a.status} ${a.text.slice(0, 300)}`);
      if (a.status < 400 && r.method !== 'GET' && r.method !== 'HEAD') changed = true;
    }
    if (changed) {
      await quiesce(target);
      baseline = stateOf(target);
      return;
    }
    stats.stateChecks++;
    const after = stateOf(target);
    if (after !== baseline) {
      // A job started by an earlier success may still have been finishing: settle and look again once.
      await quiesce(target);
      await new Promise((r) => setTimeout(r, 200));
      const settled = stateOf(target);
      if (settled !== baseline) throw new Error(`failed requests changed the state: ${difference(baseline, settled)}; requests: ${requests.map((r) => `${r.method} ${r.url.slice(0, 120)}`).join(' | ')}`);
    }
  }), { seed: o.seed, numRuns: o.numRuns, endOnFailure: true });
  return stats;
}
