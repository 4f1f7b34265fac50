/** Microversion parsing and negotiation. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiVersion, negotiate } from '../../../src/api/microversion.ts';

test('negotiation', () => {
  assert.equal(String(negotiate(undefined)), '3.0');
  assert.equal(String(negotiate('volume 3.27')), '3.27');
  assert.equal(String(negotiate('volume LATEST')), '3.70');
  assert.equal(String(negotiate('compute 2.5, volume 3.9')), '3.9');
  assert.equal(String(negotiate('compute 2.5')), '3.0');
  assert.throws(() => negotiate('volume 3.71'), (e: { status: number }) => e.status === 406);
  assert.throws(() => negotiate('volume 4.0'), (e: { status: number }) => e.status === 406);
  assert.throws(() => negotiate('volume 3.07'), (e: { status: number }) => e.status === 400);
  assert.throws(() => negotiate('volume three'), (e: { status: number }) => e.status === 400);
  assert.throws(() => negotiate('volume'), (e: { status: number }) => e.status === 400);
  assert.ok(ApiVersion.parse('3.10').atLeast('3.9'));
  assert.ok(!ApiVersion.parse('3.9').atLeast('3.10'));
});
