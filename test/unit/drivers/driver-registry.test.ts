/** Registration records: the loader finds a backend's driver by name, refuses an unknown contract major, and builds it behind the guard. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../../src/config/index.ts';
import {
  checkContractVersion, defineDriver, DRIVER_CONTRACT_VERSION, GuardedDriver, MemoryDriver, memoryRegistration, openDriver, option, REGISTERED_DRIVERS,
} from '../../../src/drivers/index.ts';

const backend = () => loadConfig({ env: { BASALT_BACKEND_DEFAULTS__VOLUME_DRIVER: 'memory', BASALT_FILE__TOTAL_CAPACITY_GB: '7' } }).backends[0]!;

test('every registered driver implements this contract major and documents its options', () => {
  const [major] = DRIVER_CONTRACT_VERSION.split('.');
  for (const r of REGISTERED_DRIVERS) {
    assert.equal(r.contractVersion.split('.')[0], major, r.name);
    assert.match(r.name, /^[a-z0-9_]+$/);
    for (const [name, spec] of Object.entries(r.options)) assert.ok(spec.help.length > 10, `${r.name}.${name} is documented`);
  }
  assert.equal(new Set(REGISTERED_DRIVERS.map((r) => r.name)).size, REGISTERED_DRIVERS.length, 'names are unique');
});

test('the loader builds the named driver with its own options behind the guard', async () => {
  const b = backend();
  assert.equal(b.volume_driver, 'memory');
  assert.deepEqual(b.driverOptions, { total_capacity_gb: 7 });
  const driver = openDriver(b);
  assert.ok(driver instanceof GuardedDriver);
  assert.equal((await driver.getStats()).pools[0]!.totalCapacityGiB, 7);
  assert.equal(driver.capabilities.canMultiConn, true);
});

test('the loader refuses an unknown driver and an unknown contract major; other minors run', () => {
  const b = backend();
  assert.throws(() => openDriver(b, { registrations: [] }), /Unknown volume_driver memory in \[file\]/);
  const at = (contractVersion: string) => defineDriver({ ...memoryRegistration, contractVersion });
  assert.throws(() => openDriver(b, { registrations: [at('2.0')] }), (e: { code: string; message: string }) => e.code === 'CONFIG_INVALID' && /contract 2\.0/.test(e.message));
  assert.throws(() => openDriver(b, { registrations: [at('0.9')] }), /contract 0\.9/);
  assert.throws(() => checkContractVersion({ name: 'x', contractVersion: 'one' }), /contract one/);
  assert.ok(openDriver(b, { registrations: [at('1.0')] }), 'an older minor of the same major runs');
  assert.ok(openDriver(b, { registrations: [at('1.99')] }), 'a newer minor only adds optional members the core does not call');
});

test('a registration declares its options with their types inferred', () => {
  const r = defineDriver({
    name: 'tape', contractVersion: DRIVER_CONTRACT_VERSION, description: 'tape (test)',
    options: { tape_length_m: option<number>({ type: 'int', default: 10, help: 'How long the tape is, in metres.' }) },
    create: ({ backendName, options }) => new MemoryDriver({ poolName: backendName, totalCapacityGiB: options.tape_length_m }),
  });
  assert.equal(r.create({ backendName: 'b', options: { tape_length_m: 3 } }).capabilities.vendorName, 'Basalt');
});
