/** Configuration: file sections and inheritance, env overrides, provenance, errors with lines. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { describeConfig, loadConfig } from '../../../src/config/index.ts';

function iniFile(t: TestContext, text: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'basalt-config-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'basalt.conf');
  fs.writeFileSync(file, text);
  return file;
}

test('defaults with no file', () => {
  const c = loadConfig({ env: {} });
  assert.equal(c.DEFAULT.osapi_volume_listen, '127.0.0.1');
  assert.equal(c.DEFAULT.osapi_volume_listen_port, 8776);
  assert.equal(c.DEFAULT.auth_strategy, 'noauth');
  assert.deepEqual(c.backends.map((b) => b.name), ['file']);
  assert.equal(c.backends[0]!.volume_driver, 'file');
  assert.equal(c.backends[0]!.driverOptions.file_volume_dir, path.join(path.resolve('./state'), 'volumes', 'file'));
  assert.equal(c.database.connection, `sqlite://${path.join(path.resolve('./state'), 'basalt.sqlite')}`);
  assert.equal(c.sources.get('DEFAULT.osapi_volume_listen_port'), 'default');
});

test('backend sections inherit [backend_defaults]; env beats file; flags beat env', (t) => {
  const file = iniFile(t, [
    '[DEFAULT]',
    'enabled_backends = fast, slow',
    'storage_availability_zone = az1',
    '',
    '[backend_defaults]',
    'reserved_percentage = 5',
    'volume_driver = memory',
    '',
    '[fast]',
    'reserved_percentage = 10',
    'backend_availability_zone = az2',
    '',
    '[slow]',
    'volume_backend_name = spinning',
  ].join('\n'));
  const c = loadConfig({ configFile: file, env: { BASALT_PORT: '9000', BASALT_SLOW__RESERVED_PERCENTAGE: '7', BASALT_STATE_DIR: '/tmp/x' }, flags: { stateDir: '/tmp/y' } });
  const [fast, slow] = c.backends;
  assert.equal(fast!.reserved_percentage, 10);
  assert.equal(fast!.backend_availability_zone, 'az2');
  assert.equal(fast!.volume_driver, 'memory');
  assert.equal(fast!.volume_backend_name, 'fast');
  assert.equal(slow!.reserved_percentage, 7);
  assert.equal(slow!.volume_backend_name, 'spinning');
  assert.equal(slow!.backend_availability_zone, 'az1');
  assert.equal(c.DEFAULT.default_availability_zone, 'az1');
  assert.equal(c.DEFAULT.osapi_volume_listen_port, 9000);
  assert.equal(c.DEFAULT.state_dir, '/tmp/y');
  assert.equal(c.sources.get('fast.reserved_percentage'), `[fast] ${file}:10`);
  assert.equal(c.sources.get('fast.volume_driver'), `[backend_defaults] ${file}:7`);
  assert.equal(c.sources.get('slow.reserved_percentage'), 'env BASALT_SLOW__RESERVED_PERCENTAGE');
  assert.equal(c.sources.get('DEFAULT.osapi_volume_listen_port'), 'env BASALT_PORT');
  assert.equal(c.sources.get('DEFAULT.state_dir'), '--state-dir');
  const shown = describeConfig(c);
  assert.match(shown, /^fast\.reserved_percentage = 10 {2}# \[fast\] .*:10$/m);
  assert.match(shown, /^DEFAULT\.osapi_volume_listen_port = 9000 {2}# env BASALT_PORT$/m);
});

test('unknown options and wrong types name the option and the file line', (t) => {
  const unknown = iniFile(t, '[DEFAULT]\nhost = a\nsnazzy = yes\n');
  assert.throws(() => loadConfig({ configFile: unknown, env: {} }), (e: Error) => {
    assert.match(e.message, /Unknown option snazzy in \[DEFAULT\]/);
    assert.match(e.message, /basalt\.conf:3/);
    return true;
  });
  const wrongType = iniFile(t, '[DEFAULT]\n\nosapi_volume_listen_port = eighty\n');
  assert.throws(() => loadConfig({ configFile: wrongType, env: {} }), /Invalid value "eighty" for option osapi_volume_listen_port in \[DEFAULT\] \(\[DEFAULT\] .*basalt\.conf:3\): expected an integer/);
  const badBackend = iniFile(t, '[DEFAULT]\nenabled_backends = b1\n[b1]\nreserved_percentage = 150\n');
  assert.throws(() => loadConfig({ configFile: badBackend, env: {} }), /reserved_percentage in \[b1\] .*:4\): must be at most 100/);
  const badChoice = iniFile(t, '[backend_defaults]\nvolume_driver = tape\n');
  assert.throws(() => loadConfig({ configFile: badChoice, env: {} }), /volume_driver .* must be one of file, memory/);
  assert.throws(() => loadConfig({ env: { BASALT_NO_SUCH_OPTION: '1' } }), /Unknown option no_such_option in \[DEFAULT\] \(env BASALT_NO_SUCH_OPTION\)/);
  assert.throws(() => loadConfig({ env: { BASALT_PORT: '99999' } }), /must be at most 65535/);
  assert.throws(() => loadConfig({ configFile: '/nonexistent/basalt.conf', env: {} }), /Cannot read configuration file/);
});

test('[keystone_authtoken]: keystone needs auth_url and password; config show masks the password', () => {
  assert.throws(() => loadConfig({ env: { BASALT_AUTH_STRATEGY: 'keystone' } }), /auth_strategy = keystone needs auth_url and password in \[keystone_authtoken\]/);
  const config = loadConfig({ env: {
    BASALT_AUTH_STRATEGY: 'keystone', BASALT_KEYSTONE_AUTHTOKEN__AUTH_URL: 'http://ks:5000', BASALT_KEYSTONE_AUTHTOKEN__PASSWORD: 's3cret',
  } });
  assert.equal(config.keystone_authtoken.username, 'cinder');
  const shown = describeConfig(config);
  assert.match(shown, /^keystone_authtoken\.password = \*\*\*\* {2}# env BASALT_KEYSTONE_AUTHTOKEN__PASSWORD$/m);
  assert.doesNotMatch(shown, /s3cret/);
});

test('each driver reads its own options; a backend section refuses options its driver lacks', (t) => {
  const file = iniFile(t, [
    '[DEFAULT]', 'enabled_backends = disk, mem',
    '[backend_defaults]', 'file_volume_dir = /srv/volumes', 'total_capacity_gb = 5',
    '[mem]', 'volume_driver = memory',
  ].join('\n'));
  const [disk, mem] = loadConfig({ configFile: file, env: {} }).backends;
  assert.deepEqual(disk!.driverOptions, { file_volume_dir: '/srv/volumes', total_capacity_gb: 5 });
  assert.deepEqual(mem!.driverOptions, { total_capacity_gb: 5 }, '[backend_defaults] may hold options of other drivers');
  const wrong = iniFile(t, '[DEFAULT]\nenabled_backends = mem\n[mem]\nvolume_driver = memory\nfile_volume_dir = /srv\n');
  assert.throws(() => loadConfig({ configFile: wrong, env: {} }), /Unknown option file_volume_dir in \[mem\] .*basalt\.conf:5\): driver memory has no such option/);
  assert.throws(() => loadConfig({ configFile: iniFile(t, '[backend_defaults]\nsnazzy = 1\n'), env: {} }), /Unknown option snazzy in \[backend_defaults\]/);
});

test('config show documents every option it lists, driver options included', () => {
  const lines = describeConfig(loadConfig({ env: {} })).split('\n');
  const options = lines.filter((l) => !l.startsWith('#'));
  assert.ok(options.length > 40);
  for (const l of options) {
    const doc = lines[lines.indexOf(l) - 1]!;
    assert.match(doc, /^# \S.{10,}/, `${l.split(' ')[0]} has its documentation above it`);
  }
  const at = lines.findIndex((l) => l.startsWith('file.file_volume_dir = '));
  assert.match(lines[at - 1]!, /^# Folder holding the volume and snapshot files/);
  assert.match(lines[lines.findIndex((l) => l.startsWith('file.volume_driver = ')) - 1]!, /file \(sparse raw files.*memory \(the test double/);
});
