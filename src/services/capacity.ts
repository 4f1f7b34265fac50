/**
 * Whether a pool has room for more GiB: the capacity filter of placements
 * (scheduler), extends (volume manager) and moves, over the pools' reports.
 */
import type { Db, Tx, VolumeRepository } from '../db/index.ts';

/** The capacity fields of a pool's reported capabilities. */
export interface PoolCapacity {
  total_capacity_gb: number;
  free_capacity_gb: number;
  reserved_percentage: number;
  max_over_subscription_ratio: number;
  thin_provisioning_support: boolean;
  thick_provisioning_support: boolean;
}

/**
 * Whether `at.host`'s pool, as its service `at.serviceId` reported it, holds
 * `sizeGiB` more beside what its volumes are promised already: the
 * capacity filter of a placement, an extend and a move. It first takes the
 * service's placement key (`Db.lockKeys`) until the end of `tx`, in which the
 * caller makes the change it admits, so that two changes cannot both fit in
 * the same room.
 */
export async function roomFor(tx: Tx, deps: { db: Pick<Db, 'lockKeys'>; volumes: Pick<VolumeRepository, 'provisionedGiB'> }, at: { serviceId: string; host: string; pool: PoolCapacity }, sizeGiB: number): Promise<boolean> {
  await deps.db.lockKeys(tx, [`placement:${at.serviceId}`]);
  return fits(at.pool, await deps.volumes.provisionedGiB(tx, at.host), sizeGiB);
}

/** Whether `sizeGiB` more fits, thinly or thickly, on a pool with `provisionedGiB` promised already. */
export function fits(pool: PoolCapacity, provisionedGiB: number, sizeGiB: number): boolean {
  return fitsThin(pool, provisionedGiB, sizeGiB) || fitsThick(pool, sizeGiB);
}

/**
 * Thin provisioning: what is promised stays within usable capacity ×
 * over-subscription ratio, and the free space beyond the reserve,
 * over-subscribed, still holds the volume (Cinder's CapacityFilter: a full
 * pool, such as a Ceph pool at its quota, takes no new volume however little
 * is promised on it).
 */
function fitsThin(pool: PoolCapacity, provisionedGiB: number, sizeGiB: number): boolean {
  const reservedGiB = pool.total_capacity_gb * pool.reserved_percentage / 100;
  const ratio = pool.max_over_subscription_ratio;
  return pool.thin_provisioning_support && provisionedGiB + sizeGiB <= (pool.total_capacity_gb - reservedGiB) * ratio
    && (pool.free_capacity_gb - reservedGiB) * ratio >= sizeGiB;
}

/** Thick provisioning: the free space beyond the reserve holds the whole volume. */
function fitsThick(pool: PoolCapacity, sizeGiB: number): boolean {
  return pool.thick_provisioning_support && pool.free_capacity_gb - pool.total_capacity_gb * pool.reserved_percentage / 100 >= sizeGiB;
}
