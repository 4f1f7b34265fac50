/** The registration of the `rbd` driver: its options (Cinder's names) and its factory. */
import { defineDriver, option } from '../driver-registration.ts';
import { RbdDriver } from './rbd-driver.ts';

/** `volume_driver = rbd`: RBD images in a Ceph pool, through librbd (the optional RBD addon). */
export const rbdRegistration = defineDriver({
  name: 'rbd',
  contractVersion: '1.10',
  // Cinder's RBD keys of a replication_device entry (conf, user, secret_uuid), and keyring for Basalt's own connection there.
  replicationDeviceKeys: ['conf', 'user', 'keyring', 'secret_uuid'],
  description: 'rbd (Ceph RBD images in one pool through librbd: copy-on-write snapshots and clones, storage shared by every member of a cluster)',
  options: {
    rbd_pool: option<string>({
      type: 'string', default: 'rbd',
      help: 'The Ceph pool holding the volumes\' images (Cinder: rbd_pool).',
    }),
    rbd_user: option<string>({
      type: 'string', default: 'admin',
      help: 'The cephx user Basalt connects as, without "client." (Cinder: rbd_user).',
    }),
    rbd_ceph_conf: option<string>({
      type: 'string', default: '',
      help: 'Path of the ceph.conf naming the monitors; empty: librados\'s default places (/etc/ceph/ceph.conf …) (Cinder: rbd_ceph_conf).',
    }),
    rbd_keyring_conf: option<string>({
      type: 'string', default: '',
      help: 'Path of the keyring holding rbd_user\'s key, for Basalt\'s own connection to the cluster; empty: the keyring ceph.conf names (Cinder: rbd_keyring_conf). '
        + 'Its contents never go to hosts unless rbd_send_keyring_to_hosts is set.',
    }),
    rbd_send_keyring_to_hosts: option<boolean>({
      type: 'bool', default: false,
      help: 'Put the contents of rbd_keyring_conf in every rbd connection info (`keyring`), as Cinder did before OSSN-0085 removed its rbd_keyring_conf (cinderlib still does): '
        + 'every user who attaches a volume of this backend, and whoever reads the service reports in the database, then holds rbd_user\'s key. '
        + 'Only for deployments whose users are trusted with that key; requires rbd_keyring_conf. Default false: no secret leaves Basalt, and hosts authenticate with '
        + 'their own Ceph configuration and keyring, or the libvirt secret rbd_secret_uuid names, as with Cinder.',
    }),
    rbd_secret_uuid: option<string>({
      type: 'string', default: '',
      help: 'The UUID of the libvirt secret holding rbd_user\'s key on compute hosts, passed in rbd connection info (`secret_uuid`); empty: the cluster\'s fsid, as Cinder defaults it (Cinder: rbd_secret_uuid).',
    }),
    rbd_cluster_name: option<string>({
      type: 'string', default: 'ceph',
      help: 'The name of the Ceph cluster, passed in rbd connection info (`cluster_name`) for hosts that find its configuration by name (/etc/ceph/<name>.conf) (Cinder: rbd_cluster_name).',
    }),
    rbd_connection: option<string>({
      type: 'string', default: 'rbd', choices: ['rbd', 'nbd'],
      help: 'What attachments of this backend\'s volumes hand to hosts. rbd (the default, what Cinder\'s RBD driver gives): Cinder\'s rbd connection info '
        + '(driver_volume_type rbd: pool/image name, monitors, cephx user, libvirt secret), for hypervisors that open RBD themselves (QEMU with librbd, os-brick\'s RBD connector). '
        + 'nbd: Basalt\'s NBD export with TLS-PSK, for hosts without Ceph\'s client or its key. Hosts on the volume service\'s own machine still get a local path where the driver has one (rbd has none).',
    }),
    rbd_flatten_volume_from_snapshot: option<boolean>({
      type: 'bool', default: false,
      help: 'Copy every volume made from a snapshot in full (flatten) instead of leaving it a copy-on-write clone of the snapshot (Cinder: rbd_flatten_volume_from_snapshot).',
    }),
    rbd_max_clone_depth: option<number>({
      type: 'int', default: 5, min: 0,
      help: 'The most parents a copy-on-write clone may have above it; a clone that would have more is flattened at once. 0 flattens every clone (Cinder: rbd_max_clone_depth).',
    }),
    rbd_store_chunk_size: option<number>({
      type: 'int', default: 4, min: 1, max: 32,
      help: 'Object size of new images in MiB, a power of two (Cinder: rbd_store_chunk_size).',
    }),
    report_discard_supported: option<boolean>({
      type: 'bool', default: false,
      help: 'Tell hosts that volumes of this backend take discard (TRIM/UNMAP) in connection info (Cinder: report_discard_supported).',
    }),
    rbd_blocklist_check_interval: option<number>({
      type: 'int', default: 5,
      help: 'Seconds between looks at the Ceph blocklist for this process\'s client (0: never). A client is blocklisted when another member broke its exclusive lock on an image (it stopped answering): the backend then connects a fresh client and drops the exports of the volumes it had open, so hosts reconnect.',
    }),
    rados_connect_timeout: option<number>({
      type: 'int', default: 30,
      help: 'Seconds librados waits for the cluster when connecting and for each operation; ≤ 0: librados\'s own defaults (Cinder: rados_connect_timeout, whose default -1 would let a dead cluster hold a call for minutes).',
    }),
  },
  create: ({ backendName, options, replicationDevices, stateDirectory }) => new RbdDriver({
    poolName: backendName,
    cephPool: options.rbd_pool,
    user: options.rbd_user,
    confPath: options.rbd_ceph_conf,
    keyringPath: options.rbd_keyring_conf,
    sendKeyringToHosts: options.rbd_send_keyring_to_hosts,
    flattenVolumeFromSnapshot: options.rbd_flatten_volume_from_snapshot,
    maxCloneDepth: options.rbd_max_clone_depth,
    chunkSizeMiB: options.rbd_store_chunk_size,
    connectTimeoutSeconds: options.rados_connect_timeout,
    blocklistCheckSeconds: options.rbd_blocklist_check_interval,
    nativeConnection: options.rbd_connection === 'rbd',
    clusterName: options.rbd_cluster_name,
    secretUuid: options.rbd_secret_uuid,
    reportDiscard: options.report_discard_supported,
    ...(stateDirectory ? { stateDirectory } : {}),
    // Cinder's defaults: /etc/ceph/<backend_id>.conf and the backend's own user.
    replicationTargets: (replicationDevices ?? []).map((d) => ({
      backendId: d.backendId, confPath: d.options.conf ?? `/etc/ceph/${d.backendId}.conf`, user: d.options.user ?? options.rbd_user,
      keyringPath: d.options.keyring ?? '', secretUuid: d.options.secret_uuid ?? '',
    })),
  }),
});
