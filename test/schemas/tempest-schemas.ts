/**
 * Tempest's volume response schemas, read from Debian's python3-tempest (never
 * copied here) through dump-tempest-schemas.py, and judged the way tempest's
 * rest client judges a response (`RestClient.validate_response`): a 2xx/3xx
 * status must be one of the schema's `status_code`s, and the body must match
 * `response_body` — or be empty when the schema has none.
 *
 * The dump runs once per machine (test/helpers/machine-cache.ts) and each schema
 * is compiled once per process, so checking every response of a test file costs next to nothing.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { debianVersion, fileHash, machineCache } from '../helpers/machine-cache.ts';
import { TEMPEST_GAPS } from './tempest-gaps.ts';

/** One tempest response schema (a module-level dict with `status_code`). */
export interface TempestSchema {
  status_code: number[];
  response_body?: Record<string, unknown>;
}

/** One row of a client's `schema_versions_info`: the module that judges `min`..`max` (inclusive; null is open). */
export interface VersionRow {
  min: string | null;
  max: string | null;
  /** Module below `tempest.lib.api_schema.response.volume`, e.g. `v3_61.volumes`. */
  module: string;
}

/** What dump-tempest-schemas.py prints. */
export interface TempestDump {
  /** Every schema, keyed `<module>.<attr>`, e.g. `volumes.show_volume`, `v3_61.volumes.show_volume`. */
  schemas: Record<string, TempestSchema>;
  /** Each v3 client (`volumes_client.VolumesClient`): its base schema module and, if it has one, its microversion table. */
  clients: Record<string, { base: string; versions?: VersionRow[] }>;
  /** The `format`s tempest's draft-4 validator checks; it leaves every other format unchecked. */
  formats: string[];
}

/** Debian's interpreter: python3-tempest is installed for it, not for another python3 on PATH. */
const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const DUMP_SCRIPT = fileURLToPath(new URL('./dump-tempest-schemas.py', import.meta.url));

let dump: TempestDump | undefined;

/**
 * The dump, made once per machine for this tempest and this script (kept in the
 * temporary folder: about 0.7 s of CPU, which every test file paid before), read
 * once per process.
 */
export function tempestDump(): TempestDump {
  if (dump) return dump;
  const dir = machineCache(`basalt-tempest-schemas-${debianVersion('python3-tempest')}-${fileHash(DUMP_SCRIPT)}`, (building) => {
    let text: string;
    try {
      text = execFileSync(PYTHON, [DUMP_SCRIPT], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      const stderr = String((err as { stderr?: unknown }).stderr ?? '').trim().split('\n').pop();
      throw new Error(`cannot read tempest's response schemas (Debian's python3-tempest, installed by scripts/install-test-tools.sh): ${stderr || (err as Error).message}`, { cause: err });
    }
    fs.writeFileSync(path.join(building, 'dump.json'), text);
  });
  dump = JSON.parse(fs.readFileSync(path.join(dir, 'dump.json'), 'utf8')) as TempestDump;
  return dump;
}

/** `3.61` → [3, 61], for comparisons. */
function parseVersion(v: string): [number, number] {
  const [major, minor] = v.split('.').map(Number);
  return [major ?? 0, minor ?? 0];
}

function compareVersions(a: string, b: string): number {
  const [am, an] = parseVersion(a);
  const [bm, bn] = parseVersion(b);
  return am - bm || an - bn;
}

/**
 * The dump key of the schema that judges `ref` (`module/attr`, e.g.
 * `volumes/show_volume`) at `microversion`: the versioned module a client's
 * table picks for it (as the client's `get_schema` does), or the base module
 * when the versioned one has no such attribute (the client then uses the base,
 * as tempest's clients do for the calls they never version).
 * @throws Error when tempest has no such schema (a typo in the route table).
 */
export function resolveSchema(ref: string, microversion: string): string {
  const d = tempestDump();
  const [module, attr] = ref.split('/');
  const base = `${module}.${attr}`;
  if (!d.schemas[base]) throw new Error(`tempest has no schema ${base} (test/schemas/route-schemas.ts)`);
  const table = Object.values(d.clients).find((c) => c.base === module && c.versions)?.versions ?? [];
  const row = table.find((r) => (r.min === null || compareVersions(microversion, r.min) >= 0) && (r.max === null || compareVersions(microversion, r.max) <= 0));
  const versioned = row ? `${row.module}.${attr}` : base;
  return d.schemas[versioned] ? versioned : base;
}

/**
 * `iso8601-date-time`, tempest's own format: whatever oslo_utils'
 * `parse_isotime` (the iso8601 package) parses — this is its regular
 * expression, followed by the datetime construction that rejects month 13.
 */
const ISO8601 = new RegExp(
  '^(?<year>[0-9]{4})(((-(?<monthdash>[0-9]{1,2}))|(?<month>[0-9]{2})(?!$))' +
  '(((-(?<daydash>[0-9]{1,2}))|(?<day>[0-9]{2}))' +
  '(((?<separator>[ T])(?<hour>[0-9]{2})(:?(?<minute>[0-9]{2}))?(:?(?<second>[0-9]{1,2})([.,](?<fraction>[0-9]+))?)?' +
  '(?<timezone>Z|((?<sign>[-+])(?<tzhour>[0-9]{2}):?(?<tzminute>[0-9]{2})?))?)?))?)?$',
);

function isIso8601(s: string): boolean {
  const m = ISO8601.exec(s);
  if (!m) return false;
  const g = m.groups ?? {};
  const n = (v: string | undefined, dflt: number): number => (v === undefined ? dflt : Number(v));
  const year = n(g.year, 0);
  const month = n(g.month ?? g.monthdash, 1);
  const day = n(g.day ?? g.daydash, 1);
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > daysInMonth) return false;
  if (n(g.hour, 0) > 23 || n(g.minute, 0) > 59 || n(g.second, 0) > 59) return false;
  // Python's timezone() accepts offsets strictly within a day.
  return n(g.tzhour, 0) * 60 + n(g.tzminute, 0) < 24 * 60;
}

/** Checkers for the formats tempest checks, as its validator checks them (jsonschema's draft-4 checker and tempest's own). */
const FORMAT_CHECKS: Record<string, (s: string) => boolean> = {
  'iso8601-date-time': isIso8601,
  ipv4: (s) => net.isIPv4(s),
  ipv6: (s) => net.isIPv6(s),
  email: (s) => s.includes('@'),
  'idn-email': (s) => s.includes('@'),
  regex: (s) => { try { new RegExp(s, 'u'); return true; } catch { return false; } },
};

let ajv: Ajv | undefined;
const compiled = new Map<string, ValidateFunction>();

/**
 * The ajv instance: draft-4 style schemas need no `$schema` handling beyond
 * ajv's defaults (tempest's volume schemas use no draft-4-only keyword), and
 * every format tempest leaves unchecked (`uuid`, `uri`, `date-time`: its
 * draft-4 checker has no uuid check and lacks the optional modules for the
 * others) passes here too, so this test judges exactly as tempest does.
 */
function validator(): Ajv {
  if (ajv) return ajv;
  const d = tempestDump();
  ajv = new Ajv({ strict: false, allErrors: false, validateFormats: true });
  const used = new Set<string>();
  JSON.stringify(d.schemas, (k, v) => { if (k === 'format' && typeof v === 'string') used.add(v); return v; });
  for (const format of used) {
    const check = FORMAT_CHECKS[format];
    if (d.formats.includes(format) && !check) throw new Error(`tempest checks format ${format}: teach test/schemas/tempest-schemas.ts to check it too`);
    ajv.addFormat(format, d.formats.includes(format) ? { type: 'string', validate: check! } : true);
  }
  return ajv;
}

/**
 * The body schema for `key` at `microversion`: tempest's, plus the keys Cinder
 * adds by then that tempest does not describe yet (tempest-gaps.ts); and an id
 * for the compiled-validator cache.
 */
function bodySchema(key: string, body: Record<string, unknown>, microversion: string): { id: string; schema: Record<string, unknown> } {
  const ref = key.replace(/^v3_\d+\./, '').replace('.', '/');
  const gaps = TEMPEST_GAPS.filter((g) => g.schemas.includes(ref) && compareVersions(microversion, g.since) >= 0);
  if (gaps.length === 0) return { id: key, schema: body };
  type Node = { properties?: Record<string, unknown>; items?: Node };
  const schema = structuredClone(body) as Node & Record<string, unknown>;
  for (const g of gaps) {
    let node: Node | undefined = schema;
    if (g.at) node = (node.properties?.[g.at.replace(/\[\]$/, '')]) as Node | undefined;
    if (node && g.at.endsWith('[]')) node = node.items;
    if (!node?.properties) throw new Error(`tempest-gaps.ts: ${key} has no object at ${g.at || 'its top'}`);
    node.properties[g.key] = g.type;
  }
  return { id: `${key}+${gaps.map((g) => `${g.at}.${g.key}`).join(',')}`, schema };
}

/** A verdict at `microversion`: why a response fails its schema, or undefined when it passes. */
export function judge(key: string, status: number, body: unknown, microversion = '3.0'): string | undefined {
  const schema = tempestDump().schemas[key];
  if (!schema) throw new Error(`no tempest schema ${key}`);
  if (!schema.status_code.includes(status)) return `status ${status} is not one of ${JSON.stringify(schema.status_code)}`;
  if (!schema.response_body) {
    // Tempest refuses any truthy body (an empty object or array is falsy in Python).
    const empty = body === undefined || body === '' || body === null
      || (typeof body === 'object' && Object.keys(body as object).length === 0);
    return empty ? undefined : `the schema has no body, but got ${JSON.stringify(body).slice(0, 200)}`;
  }
  const { id, schema: extended } = bodySchema(key, schema.response_body, microversion);
  let fn = compiled.get(id);
  if (!fn) compiled.set(id, (fn = validator().compile(extended)));
  return fn(body) ? undefined : describe(fn.errors ?? []);
}

/** ajv's first error as one line, e.g. `/volume must NOT have additional properties (os-vol-host-attr:host)`. */
export function describe(errors: ErrorObject[]): string {
  return errors.map((e) => {
    const extra = e.keyword === 'additionalProperties' ? ` (${(e.params as { additionalProperty: string }).additionalProperty})`
      : e.keyword === 'required' ? '' : ` (${JSON.stringify(e.params)})`;
    return `${e.instancePath || '/'} ${e.message}${extra}`;
  }).join('; ');
}
