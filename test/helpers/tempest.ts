/**
 * OpenStack Tempest's volume API tests against a running Basalt: writes a
 * workspace (in a temporary HOME, so nothing lands in the user's
 * ~/.tempest) with a `tempest.conf` taken from what Basalt reports, runs
 * `tempest run`, and reads the outcome of every test id from the subunit
 * stream. Needs Debian's `tempest` package.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** What tempest needs to know of the cloud it tests. */
export interface TempestTarget {
  /** Keystone's v3 URL. */
  authUrl: string;
  admin: { user: string; password: string; project: string };
  /** `volume_backend_name`s of the backends (the multi-backend classes use two). */
  backendNames: string[];
  storageProtocol: string;
  vendorName: string;
  minMicroversion: string;
  maxMicroversion: string;
  /** `[volume-feature-enabled]` flags; unnamed ones keep tempest's defaults. */
  features: Record<string, boolean>;
  /** More `[volume]` options (e.g. `manage_volume_ref`); unnamed ones keep tempest's defaults. */
  volume?: Record<string, string>;
}

/** Options of {@link runTempest}. */
export interface TempestRun {
  /** Tests to run (tempest's `--regex`). */
  regex: string;
  /** File of regexes (one a line, `#` comments) of tests not run. */
  excludeList?: string;
  concurrency: number;
  /** Seconds tempest waits for a status (its `build_timeout`). */
  buildTimeoutSeconds: number;
  /** Receives tempest's console output line by line. */
  onLine?: (line: string) => void;
}

/** Outcome of one test id. */
export type Outcome = 'success' | 'fail' | 'skip';

/** What a run found. */
export interface TempestResult {
  /** Every test id tempest listed for the regex (exclusions removed), with its outcome; `fail` for tests whose class set-up failed. */
  outcomes: Map<string, Outcome>;
  /** Class set-ups and tear-downs that failed (their tests are failed too). */
  fixtureFailures: string[];
  /** Where the workspace is (kept for reading its tempest.log). */
  workspace: string;
}

/** Strips tempest's `[id-…,smoke]` attribute tail from a test id. */
const bare = (id: string): string => id.replace(/\[.*\]$/, '');

/** The `tempest.conf` for `target`. */
export function tempestConf(target: TempestTarget, buildTimeoutSeconds: number, logDir: string): string {
  const features = Object.entries(target.features).map(([k, v]) => `${k} = ${v}`);
  return [
    '[DEFAULT]', `log_dir = ${logDir}`, 'log_file = tempest.log', 'use_stderr = false',
    '[auth]', 'use_dynamic_credentials = true', `admin_username = ${target.admin.user}`,
    `admin_password = ${target.admin.password}`, `admin_project_name = ${target.admin.project}`,
    'admin_domain_name = Default', 'tempest_roles = member',
    '[identity]', `uri_v3 = ${target.authUrl}`, 'auth_version = v3', 'region = RegionOne',
    '[identity-feature-enabled]', 'api_v2 = false',
    '[service_available]', 'cinder = true', 'nova = false', 'glance = false', 'neutron = false', 'swift = false', 'horizon = false',
    '[volume]', 'catalog_type = volumev3', `backend_names = ${target.backendNames.join(',')}`,
    `storage_protocol = ${target.storageProtocol}`, `vendor_name = ${target.vendorName}`,
    `min_microversion = ${target.minMicroversion}`, `max_microversion = ${target.maxMicroversion}`,
    `build_timeout = ${buildTimeoutSeconds}`, 'build_interval = 1',
    ...Object.entries(target.volume ?? {}).map(([k, v]) => `${k} = ${v}`),
    '[volume-feature-enabled]', ...features, '',
  ].join('\n');
}

/** Runs tempest against `target`; resolves when it has finished, whatever its outcome. */
export async function runTempest(target: TempestTarget, o: TempestRun): Promise<TempestResult> {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-tempest-'));
  const workspace = path.join(home, 'ws');
  const env = { ...process.env, HOME: home, OS_CLOUD: '' };
  // `tempest init` writes a tempest.log into the current directory: run it from the scratch one.
  await run('tempest', ['init', workspace], { cwd: home, env });
  fs.writeFileSync(path.join(workspace, 'etc', 'tempest.conf'), tempestConf(target, o.buildTimeoutSeconds, path.join(workspace, 'logs')));
  // The stock logging.conf opens tempest.log with mode w+ in every worker: they would truncate each other's log.
  const logging = path.join(workspace, 'etc', 'logging.conf');
  if (fs.existsSync(logging)) fs.writeFileSync(logging, fs.readFileSync(logging, 'utf8').replace(/'w\+'/g, "'a'"));

  const select = ['--regex', o.regex, ...(o.excludeList ? ['--exclude-list', o.excludeList] : [])];
  const listed = (await run('tempest', ['run', '--list-tests', ...select], { cwd: workspace, env, maxBuffer: 16 << 20 })).stdout
    .split('\n').map((l) => l.trim()).filter((l) => /^tempest\.\S+\.test_/.test(l)).map(bare);

  await new Promise<void>((resolve, reject) => {
    const child = spawn('tempest', ['run', ...select, '--concurrency', String(o.concurrency)], { cwd: workspace, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let buffered = '';
    const onData = (chunk: Buffer): void => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) o.onLine?.(line);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('error', reject);
    child.once('close', () => resolve());
  });

  // subunit2csv exits 1 when the stream holds a failure: its output is what counts.
  const csv = (await run('bash', ['-c', 'stestr last --subunit | subunit2csv --no-passthrough; true'], { cwd: workspace, env, maxBuffer: 64 << 20 })).stdout;
  const reported = new Map<string, Outcome>();
  const fixtureFailures: string[] = [];
  for (const line of csv.split('\n').slice(1)) {
    // Ids holding a comma (`[id-…,negative]`) are quoted.
    const m = /^(?:"([^"]*)"|([^,]*)),(\w+),/.exec(line);
    if (!m) continue;
    const id = m[1] ?? m[2]!;
    const status = m[3]!;
    const outcome: Outcome = status === 'success' ? 'success' : status === 'skip' ? 'skip' : 'fail';
    const fixture = /^(setUpClass|tearDownClass) \((.+)\)$/.exec(id);
    if (fixture) {
      if (outcome === 'fail') fixtureFailures.push(id);
      // A class skipped in its set-up (a feature flag, a missing service) skips all its tests.
      if (fixture[1] === 'setUpClass') for (const t of listed) if (t.startsWith(fixture[2]! + '.') && !reported.has(t)) reported.set(t, outcome);
      continue;
    }
    reported.set(bare(id), outcome);
  }
  // Count per test id: a test the stream never named ran under a failed class set-up.
  const outcomes = new Map<string, Outcome>(listed.map((t) => [t, reported.get(t) ?? 'fail']));
  return { outcomes, fixtureFailures, workspace };
}

/** Tempest's own account of a failed test (the traceback in its log), for a failure message. */
export async function failureDetails(workspace: string, ids: string[]): Promise<string> {
  const { stdout } = await run('bash', ['-c', 'stestr last --subunit | subunit-trace --no-summary --failonly 2>/dev/null || true'], { cwd: workspace, maxBuffer: 64 << 20, env: { ...process.env, HOME: path.dirname(workspace) } });
  return ids.length ? stdout.slice(0, 200_000) : '';
}
