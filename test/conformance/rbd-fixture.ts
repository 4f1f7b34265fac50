/**
 * The Ceph cluster and rbd backends of the rbd driver's test files: the
 * run's shared cluster or one of the file's own (test/helpers/ceph.ts), and a
 * driver over a fresh pool per test, so that a test's leak check and pool
 * stats see only its own images. Drivers and the cluster are closed after the
 * file's tests (after each test's own clean-up: its handles are closed then).
 */
import { after } from 'node:test';
import { rbdRegistration, type VolumeDriver } from '../../src/drivers/index.ts';
import { startCeph, type Ceph } from '../helpers/ceph.ts';

/** What a test file gets. */
export interface RbdFixture {
  ceph: Ceph;
  /** A driver (not initialised) over a fresh pool, with Cinder's options as a backend section gives them, `overrides` applied. */
  rbdBackend(overrides?: Record<string, unknown>): Promise<{ driver: VolumeDriver; pool: string; options: Record<string, unknown> }>;
  /** Every image and snapshot of `pool`, as `image` and `image@snap`. */
  objects(pool: string): Promise<string[]>;
  /** `rbd info` of an image of `pool`. */
  info(pool: string, image: string): Promise<{ features: string[]; parent?: { image: string; snapshot: string } }>;
}

/** Starts (or attaches to) the cluster for the calling file; see the module comment. */
export async function rbdFixture(): Promise<RbdFixture> {
  const ceph = await startCeph();
  const drivers: VolumeDriver[] = [];
  after(async () => {
    for (const d of drivers) await d.close?.().catch(() => undefined);
    await ceph.stop();
  });
  return {
    ceph,
    async rbdBackend(overrides = {}) {
      const pool = await ceph.newPool();
      const options = {
        rbd_pool: pool, rbd_user: ceph.user, rbd_ceph_conf: ceph.confPath, rbd_keyring_conf: ceph.keyringPath, rbd_secret_uuid: '',
        rbd_flatten_volume_from_snapshot: false, rbd_max_clone_depth: 5, rbd_store_chunk_size: 4, report_discard_supported: false,
        rados_connect_timeout: 30, ...overrides,
      };
      const driver = rbdRegistration.create({ backendName: 'ceph', options: options as never });
      drivers.push(driver);
      return { driver, pool, options };
    },
    async objects(pool) {
      const listed = JSON.parse(await ceph.rbd('ls', '-l', '--format', 'json', pool)) as Array<{ image: string; snapshot?: string }>;
      return listed.map((e) => (e.snapshot ? `${e.image}@${e.snapshot}` : e.image)).sort();
    },
    async info(pool, image) {
      return JSON.parse(await ceph.rbd('info', '--format', 'json', `${pool}/${image}`)) as { features: string[]; parent?: { image: string; snapshot: string } };
    },
  };
}
