/**
 * The rbd driver as the benchmarks make it: Cinder's option names from
 * `options` (rbd_pool, rbd_user, rbd_ceph_conf, rbd_keyring_conf) over the
 * defaults of a backend section that sets nothing else.
 */
import { rbdRegistration, type VolumeDriver } from '../src/drivers/index.ts';

export function benchRbdDriver(options: Record<string, unknown>): VolumeDriver {
  return rbdRegistration.create({
    backendName: 'bench',
    options: {
      rbd_secret_uuid: '', rbd_flatten_volume_from_snapshot: false, rbd_max_clone_depth: 5, rbd_store_chunk_size: 4,
      report_discard_supported: false, rados_connect_timeout: 30, ...options,
    } as never,
  });
}
