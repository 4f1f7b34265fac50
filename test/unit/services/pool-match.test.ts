/** Extra-spec operators as Cinder's capabilities filter applies them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { capabilityKey, matchesSpec, unmetSpecs, type PoolReport, type ServiceReport } from '../../../src/services/index.ts';

test('operators', () => {
  const yes: Array<[unknown, string]> = [
    [true, '<is> True'], [false, '<is> False'], ['fast', 'fast'], ['nbd', '<in> nb'], ['a', '<or> b <or> a'],
    ['x y z', '<all-in> x z'], [100, '= 50'], [100, '== 100'], [100, '!= 5'], [10, '>= 10'], [10, '<= 11'],
    ['abc', 's== abc'], ['abc', 's!= abd'], ['abc', 's< abd'], ['abd', 's> abc'], ['abc', 's<= abc'], ['abc', 's>= abc'],
  ];
  for (const [cap, req] of yes) assert.ok(matchesSpec(cap, req), `${String(cap)} ~ ${req}`);
  const no: Array<[unknown, string]> = [
    [false, '<is> True'], ['fast', 'slow'], ['nbd', '<in> iscsi'], ['c', '<or> b <or> a'], ['x', '<all-in> x z'],
    [10, '= 50'], [10, '== 11'], ['ten', '>= 1'], [undefined, 'anything'], [null, '<is> False'],
  ];
  for (const [cap, req] of no) assert.ok(!matchesSpec(cap, req), `${String(cap)} !~ ${req}`);
});

test('scopes', () => {
  assert.equal(capabilityKey('volume_backend_name'), 'volume_backend_name');
  assert.equal(capabilityKey('capabilities:storage_protocol'), 'storage_protocol');
  assert.equal(capabilityKey('qos:maxIOPS'), undefined);
  assert.equal(capabilityKey('RESKEY:availability_zones'), undefined);
});

test('a type asking for synchronous replication does not fit a backend that replicates through its storage (rbd-mirror: asynchronous)', () => {
  const pool = { pool_name: 'p', total_capacity_gb: 10, free_capacity_gb: 10 } as PoolReport;
  const mirror = { replication_enabled: true, replication_in_driver: true, pools: [pool] } as unknown as ServiceReport;
  const file = { replication_enabled: true, pools: [pool] } as unknown as ServiceReport;
  const sync = { replication_enabled: '<is> True', 'basalt:replication_mode': 'sync' };
  assert.deepEqual(unmetSpecs(mirror, pool, sync), ['basalt:replication_mode (sync: this backend replicates through its storage, asynchronously)']);
  assert.deepEqual(unmetSpecs(file, pool, sync), [], 'a backend whose copies Basalt ships takes it');
  assert.deepEqual(unmetSpecs(mirror, pool, { ...sync, 'basalt:replication_mode': 'async' }), []);
  assert.deepEqual(unmetSpecs(mirror, pool, { replication_enabled: '<is> True' }), [], 'asynchronous is the default');
});
