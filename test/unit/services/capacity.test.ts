/**
 * The capacity rule of placements and extends (src/services/capacity.ts) on
 * thin pools, as Cinder's CapacityFilter: promises stay within total ×
 * over-subscription ratio, and a pool with no free space (a Ceph pool at its
 * quota) takes no new volume however little is promised on it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fits, type PoolCapacity } from '../../../src/services/index.ts';

const thin = (free: number, total = 10): PoolCapacity => ({
  total_capacity_gb: total, free_capacity_gb: free, reserved_percentage: 0, max_over_subscription_ratio: 20,
  thin_provisioning_support: true, thick_provisioning_support: false,
});

test('a thin pool takes promises up to total × the over-subscription ratio', () => {
  assert.equal(fits(thin(10), 199, 1), true);
  assert.equal(fits(thin(10), 200, 1), false);
});

test('a full thin pool takes no volume, though little is promised on it; free space over-subscribed must hold the volume', () => {
  assert.equal(fits(thin(0), 1, 1), false);
  assert.equal(fits(thin(0.04), 1, 1), false, '0.04 GiB × 20 is under 1 GiB');
  assert.equal(fits(thin(0.05), 1, 1), true, '0.05 GiB × 20 holds 1 GiB');
  assert.equal(fits({ ...thin(1), reserved_percentage: 10 }, 1, 1), false, 'the reserve (1 of 10 GiB) is not free space');
});
