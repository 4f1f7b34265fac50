/** Extra-spec operators as Cinder's capabilities filter applies them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { capabilityKey, matchesSpec } from '../../../src/services/index.ts';

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
