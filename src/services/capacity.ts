/**
 * Whether a pool has room for more GiB: the capacity filter of placements
 * (scheduler) and of extends (volume manager), over the pools' reports.
 */

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
 * The key (`Db.lockKeys`) that serialises the capacity checks on one
 * service's pools with the changes they admit (a placement, an extend), so
 * that two of them cannot both fit in the same room.
 */
export function placementKey(serviceId: string): string {
  return `placement:${serviceId}`;
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
