/**
 * Builds the effective {@link BasaltConfig} from, in rising precedence: the
 * defaults in `schema.ts`, the INI file, `BASALT_*` environment variables and
 * command-line flags. Every value remembers where it came from.
 */
import fs from 'node:fs';
import path from 'node:path';
import ini from 'ini';
import { findDriver, REGISTERED_DRIVERS } from '../drivers/index.ts';
import { ConfigError } from '../errors/index.ts';
import {
  BACKEND_OPTIONS, COORDINATION_OPTIONS, DATABASE_OPTIONS, DEFAULT_OPTIONS, KEY_MANAGER_OPTIONS, KEYSTONE_OPTIONS, NOVA_OPTIONS, WEBHOOK_OPTIONS, replicationDevices,
  type BackendOptions, type BasaltConfig, type DefaultContext, type OptionSpec,
} from './schema.ts';

/** Inputs to {@link loadConfig}. */
export interface LoadConfigInput {
  /** Path of the INI file; none by default. */
  configFile?: string | undefined;
  /** Environment to read `BASALT_*` from. Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Command-line flags, strongest of all. */
  flags?: { port?: number | undefined; stateDir?: string | undefined };
}

type Group = Record<string, OptionSpec>;

/** A raw value with its provenance. */
interface RawValue { value: string; source: string }

/** Section name → option name → raw value. */
type RawConfig = Map<string, Map<string, RawValue>>;

/** Environment variables that are not option names. */
const ENV_ALIASES: Record<string, [section: string, option: string]> = {
  BASALT_PORT: ['DEFAULT', 'osapi_volume_listen_port'],
  BASALT_STATE_DIR: ['DEFAULT', 'state_dir'],
};
/** `BASALT_*` variables read elsewhere, not options. */
const ENV_NOT_OPTIONS = new Set(['BASALT_CONFIG']);

function put(raw: RawConfig, section: string, option: string, value: RawValue): void {
  let sec = raw.get(section);
  if (!sec) raw.set(section, (sec = new Map()));
  sec.set(option, value);
}

/**
 * Reads the INI file into raw values, each tagged `[section] file:line`.
 * The `ini` package parses; this only finds line numbers for messages.
 */
function readFile(file: string, raw: RawConfig): void {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`Cannot read configuration file ${file}: ${(err as Error).message}`, { cause: err });
  }
  const lines = new Map<string, number>();
  let section = 'DEFAULT';
  text.split(/\r?\n/).forEach((line, i) => {
    const header = /^\s*\[([^\]]+)\]\s*$/.exec(line);
    if (header) { section = header[1]!.trim(); lines.set(`[${section}]`, i + 1); return; }
    const kv = /^\s*([^=;#\s][^=]*?)\s*=/.exec(line);
    if (kv && !lines.has(`${section}.${kv[1]}`)) lines.set(`${section}.${kv[1]}`, i + 1);
  });
  const parsed = ini.parse(text) as Record<string, unknown>;
  const where = (sec: string, key?: string): string => {
    const n = key === undefined ? lines.get(`[${sec}]`) : lines.get(`${sec}.${key}`);
    return `[${sec}] ${file}:${n ?? '?'}`;
  };
  const addSection = (sec: string, values: Record<string, unknown>): void => {
    for (const [key, value] of Object.entries(values)) {
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
        // ini nests dotted section names; Basalt has none, so name the line.
        throw new ConfigError(`Unsupported section [${sec}.${key}] at ${where(`${sec}.${key}`)}`);
      }
      put(raw, sec, key, { value: Array.isArray(value) ? value.join(',') : String(value), source: where(sec, key) });
    }
  };
  const root: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) addSection(key, value as Record<string, unknown>);
    else root[key] = value; // keys before any header belong to [DEFAULT]
  }
  addSection('DEFAULT', root);
}

/** Reads `BASALT_*` variables: `BASALT_OPTION` for [DEFAULT], `BASALT_SECTION__OPTION` otherwise. */
function readEnv(env: NodeJS.ProcessEnv, raw: RawConfig): void {
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('BASALT_') || value === undefined || ENV_NOT_OPTIONS.has(name)) continue;
    const alias = ENV_ALIASES[name];
    if (alias) { put(raw, alias[0], alias[1], { value, source: `env ${name}` }); continue; }
    const rest = name.slice('BASALT_'.length);
    const split = rest.indexOf('__');
    const [section, option] = split < 0
      ? ['DEFAULT', rest.toLowerCase()]
      : [rest.slice(0, split).toLowerCase(), rest.slice(split + 2).toLowerCase()];
    put(raw, section, option, { value, source: `env ${name}` });
  }
}

/** Converts a raw string to the option's type, or throws naming option and source. */
function convert(section: string, option: string, spec: OptionSpec, raw: RawValue): unknown {
  const fail = (why: string): never => {
    throw new ConfigError(`Invalid value "${raw.value}" for option ${option} in [${section}] (${raw.source}): ${why}`);
  };
  const text = raw.value.trim();
  let value: unknown;
  switch (spec.type) {
    case 'string': value = text; break;
    case 'int':
      if (!/^-?\d+$/.test(text)) fail('expected an integer');
      value = Number(text);
      break;
    case 'float': {
      const n = Number(text);
      if (text === '' || !Number.isFinite(n)) fail('expected a number');
      value = n;
      break;
    }
    case 'bool': {
      const t = text.toLowerCase();
      if (['true', 'yes', 'on', '1'].includes(t)) value = true;
      else if (['false', 'no', 'off', '0'].includes(t)) value = false;
      else fail('expected true or false');
      break;
    }
    case 'list': value = text.split(',').map((s) => s.trim()).filter((s) => s !== ''); break;
  }
  if (typeof value === 'number') {
    if (spec.min !== undefined && value < spec.min) fail(`must be at least ${spec.min}`);
    if (spec.max !== undefined && value > spec.max) fail(`must be at most ${spec.max}`);
  }
  if (spec.choices && !spec.choices.includes(value as string)) fail(`must be one of ${spec.choices.join(', ')}`);
  return value;
}

/** What each part of the default context stands for, as `config show` names it. */
const DERIVED_FROM: Record<keyof DefaultContext, string> = {
  stateDir: 'DEFAULT.state_dir',
  storageAvailabilityZone: 'DEFAULT.storage_availability_zone',
  backend: 'the section name',
};

/**
 * Resolves one group of options from the given sections, first match wins,
 * falling back to the default. Records provenance in `sources` under `label`.
 */
function resolveGroup(
  group: Group, sections: string[], raw: RawConfig, ctx: DefaultContext,
  sources: Map<string, string>, label: string, order: string[] = Object.keys(group),
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const name of order) {
    const spec = group[name]!;
    let found: { section: string; raw: RawValue } | undefined;
    for (const section of sections) {
      const r = raw.get(section)?.get(name);
      if (r) { found = { section, raw: r }; break; }
    }
    if (found) {
      out[name] = convert(found.section, name, spec, found.raw);
      sources.set(`${label}.${name}`, found.raw.source);
    } else if (typeof spec.default === 'function') {
      // A default computed from other options says which: a changed state_dir moves it too.
      const read = new Set<string>();
      const tracked = new Proxy(ctx, { get: (t, k) => { read.add(String(k)); return Reflect.get(t, k); } });
      out[name] = (spec.default as (c: DefaultContext) => unknown)(tracked);
      const from = [...read].map((k) => DERIVED_FROM[k as keyof DefaultContext]).filter(Boolean);
      sources.set(`${label}.${name}`, from.length ? `default, from ${from.join(' and ')}` : 'default');
    } else {
      out[name] = spec.default;
      sources.set(`${label}.${name}`, 'default');
    }
    if (label === 'DEFAULT' && name === 'state_dir') ctx.stateDir = path.resolve(out[name] as string);
    if (label === 'DEFAULT' && name === 'storage_availability_zone') ctx.storageAvailabilityZone = out[name] as string;
  }
  return out;
}

/** Throws for any raw option that no group declares. */
function rejectUnknown(raw: RawConfig, known: Map<string, Group>, backendGroup: Group): void {
  for (const [section, values] of raw) {
    const group = known.get(section) ?? backendGroup; // any other section is a backend section
    for (const [option, r] of values) {
      if (!(option in group)) {
        throw new ConfigError(`Unknown option ${option} in [${section}] (${r.source})`);
      }
    }
  }
}

/**
 * The options every backend has, with `volume_driver`'s choices and
 * documentation taken from the registered drivers.
 */
function backendGroup(): Group {
  return {
    ...BACKEND_OPTIONS,
    volume_driver: {
      ...BACKEND_OPTIONS.volume_driver,
      choices: REGISTERED_DRIVERS.map((r) => r.name),
      help: `Driver serving this backend: ${REGISTERED_DRIVERS.map((r) => r.description).join('; ')}.`,
    },
  };
}

/** Every driver's own options: what `[backend_defaults]` may hold beside the common ones. */
function anyDriverOptions(): Group {
  return Object.assign({}, ...REGISTERED_DRIVERS.map((r) => r.options)) as Group;
}

/**
 * Loads and validates the configuration.
 * @throws ConfigError naming the option and its file line (or variable) for an
 *   unknown option, a wrong type, or an unreadable file.
 */
export function loadConfig(input: LoadConfigInput = {}): BasaltConfig {
  const raw: RawConfig = new Map();
  if (input.configFile) readFile(input.configFile, raw);
  readEnv(input.env ?? process.env, raw);
  if (input.flags?.port !== undefined) put(raw, 'DEFAULT', 'osapi_volume_listen_port', { value: String(input.flags.port), source: '--port' });
  if (input.flags?.stateDir !== undefined) put(raw, 'DEFAULT', 'state_dir', { value: input.flags.stateDir, source: '--state-dir' });

  const common = backendGroup();
  // A backend section may hold any driver's options until its driver is known (checked below).
  const anyBackend = { ...anyDriverOptions(), ...common };
  const groups = new Map<string, Group>([
    ['DEFAULT', DEFAULT_OPTIONS], ['database', DATABASE_OPTIONS], ['coordination', COORDINATION_OPTIONS], ['keystone_authtoken', KEYSTONE_OPTIONS],
    ['key_manager', KEY_MANAGER_OPTIONS], ['nova', NOVA_OPTIONS], ['webhooks', WEBHOOK_OPTIONS], ['backend_defaults', anyBackend],
  ]);
  rejectUnknown(raw, groups, anyBackend);

  const sources = new Map<string, string>();
  const ctx: DefaultContext = { stateDir: '', storageAvailabilityZone: '' };
  // state_dir and the storage zone first: other defaults are derived from them.
  const order = ['state_dir', 'storage_availability_zone',
    ...Object.keys(DEFAULT_OPTIONS).filter((k) => k !== 'state_dir' && k !== 'storage_availability_zone')];
  const DEFAULT = resolveGroup(DEFAULT_OPTIONS, ['DEFAULT'], raw, ctx, sources, 'DEFAULT', order);
  DEFAULT.state_dir = ctx.stateDir;
  const database = resolveGroup(DATABASE_OPTIONS, ['database'], raw, ctx, sources, 'database');
  const coordination = resolveGroup(COORDINATION_OPTIONS, ['coordination'], raw, ctx, sources, 'coordination');
  const keystone = resolveGroup(KEYSTONE_OPTIONS, ['keystone_authtoken'], raw, ctx, sources, 'keystone_authtoken');
  const keyManager = resolveGroup(KEY_MANAGER_OPTIONS, ['key_manager'], raw, ctx, sources, 'key_manager');
  const nova = resolveGroup(NOVA_OPTIONS, ['nova'], raw, ctx, sources, 'nova');
  const webhooks = resolveGroup(WEBHOOK_OPTIONS, ['webhooks'], raw, ctx, sources, 'webhooks');
  if (nova.auth_type === 'none' && nova.auth_url === '' && nova.endpoint_override === '' && raw.has('nova')) {
    throw new ConfigError('auth_type = none in [nova] needs endpoint_override (Nova\'s URL)');
  }
  if (DEFAULT.auth_strategy === 'keystone' && (!keystone.auth_url || !keystone.password)) {
    throw new ConfigError('auth_strategy = keystone needs auth_url and password in [keystone_authtoken]');
  }

  const names = DEFAULT.enabled_backends as string[];
  if (names.length === 0) throw new ConfigError('Option enabled_backends in [DEFAULT] names no backend');
  const dupe = names.find((n, i) => names.indexOf(n) !== i);
  if (dupe) throw new ConfigError(`Option enabled_backends in [DEFAULT] names backend ${dupe} twice`);
  const backends = names.map((name) => {
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
      throw new ConfigError(`Option enabled_backends in [DEFAULT] has an invalid backend name "${name}" (letters, digits, _ . - only)`);
    }
    const backendCtx = { ...ctx, backend: name };
    const values = resolveGroup(common, [name, 'backend_defaults'], raw, backendCtx, sources, name);
    const driver = findDriver(values.volume_driver as string)!; // a choice of volume_driver
    for (const [option, r] of raw.get(name) ?? []) {
      if (!(option in common) && !(option in driver.options)) {
        throw new ConfigError(`Unknown option ${option} in [${name}] (${r.source}): driver ${driver.name} has no such option`);
      }
    }
    // [backend_defaults] may hold options of other drivers; only this driver's are read.
    const driverOptions = resolveGroup(driver.options, [name, 'backend_defaults'], raw, backendCtx, sources, name);
    const backend = { ...values, name, driverOptions } as unknown as BackendOptions;
    replicationDevices(backend, driver.replicationDeviceKeys ?? []); // refuses a malformed replication_device at start, naming it
    return backend;
  });
  const notes = [
    // A section nothing reads is most often a backend left out of enabled_backends, or a misspelt name.
    ...[...raw.keys()].filter((section) => !groups.has(section) && !names.includes(section))
      .map((section) => `[${section}] is not a backend named in enabled_backends (${names.join(', ')}): nothing reads its options`),
    ...names.filter((name) => !raw.has(name))
      .map((name) => `backend ${name} in enabled_backends has no [${name}] section: it runs on [backend_defaults] and the defaults`),
  ];
  return {
    notes,
    DEFAULT: DEFAULT as BasaltConfig['DEFAULT'], database: database as BasaltConfig['database'],
    coordination: coordination as BasaltConfig['coordination'], keystone_authtoken: keystone as BasaltConfig['keystone_authtoken'],
    key_manager: keyManager as BasaltConfig['key_manager'], nova: nova as BasaltConfig['nova'], webhooks: webhooks as BasaltConfig['webhooks'], backends, sources,
  };
}

/**
 * Renders every effective option as `section.option = value  # source`, each
 * after a comment line with its documentation (the `help` of its
 * declaration). Used by `basalt config show`; secrets are masked.
 */
export function describeConfig(config: BasaltConfig): string {
  // What deserves a look comes first.
  const lines: string[] = config.notes.map((n) => `# NOTE: ${n}`);
  const emit = (label: string, values: object, specs: Group): void => {
    for (const [k, v] of Object.entries(values)) {
      const spec = specs[k];
      if (spec) lines.push(`# ${spec.help}`);
      const shown = spec?.secret && v !== '' ? '****' : Array.isArray(v) ? v.join(',') : String(v);
      lines.push(`${label}.${k} = ${shown}  # ${config.sources.get(`${label}.${k}`) ?? 'default'}`);
    }
  };
  emit('DEFAULT', config.DEFAULT, DEFAULT_OPTIONS);
  emit('database', config.database, DATABASE_OPTIONS);
  emit('coordination', config.coordination, COORDINATION_OPTIONS);
  emit('keystone_authtoken', config.keystone_authtoken, KEYSTONE_OPTIONS);
  emit('key_manager', config.key_manager, KEY_MANAGER_OPTIONS);
  emit('nova', config.nova, NOVA_OPTIONS);
  emit('webhooks', config.webhooks, WEBHOOK_OPTIONS);
  const common = backendGroup();
  for (const b of config.backends) {
    const { name, driverOptions, ...values } = b;
    emit(name, values, common);
    emit(name, driverOptions, findDriver(b.volume_driver)?.options ?? {});
  }
  return lines.join('\n');
}
