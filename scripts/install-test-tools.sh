#!/usr/bin/env bash
# Installs the Debian packages the tests use, if missing. Idempotent; waits for
# the apt lock when another process holds it. Needs root (or the tools present).
set -euo pipefail
# xfsprogs: the file driver's conformance run on a loop-mounted XFS with reflink=1.
# postgresql: the functional suite runs again on a real PostgreSQL; etcd-server: the etcd lock backend.
# strace: the driver conformance suite kills a driver mid-create at a chosen system call (fault injection).
# qemu-utils, libnbd-bin: real NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy); fio and nbdkit for bench/nbd.
# restic: the peer bench/backup measures Basalt's backup repository against.
# qemu-block-extra: qemu-img/qemu-io open `rbd:` URLs (the rbd connection info test, as a librbd hypervisor would).
# python3-keystone + uwsgi: a real Keystone for the auth tests; python3-openstackclient drives Basalt through its catalog.
# tempest: OpenStack Tempest's volume API tests judge API fidelity (test/tempest).
# ceph-mon, ceph-mgr, ceph-osd, ceph-common: the one-node Ceph cluster of the rbd driver's tests
# (test/helpers/ceph.ts); librbd-dev, librados-dev: the headers the optional RBD addon (native/rbd) builds with;
# rbd-mirror: Ceph's mirroring daemon, on both clusters of the rbd-mirror replication tests (test/helpers/ceph-pair.ts).
# radosgw: Ceph's S3 endpoint, the real store of the s3 backup target's tests (test/helpers/radosgw.ts).
# chromium, chromium-driver: the browser Playwright (playwright-core) drives in the dashboard's test; Debian's,
# since a test tool's own browser download does not work here.
PKGS=(python3-cinderclient xfsprogs strace qemu-utils qemu-block-extra libnbd-bin fio nbdkit restic postgresql etcd-server
  python3-keystone uwsgi-core uwsgi-plugin-python3 python3-openstackclient
  tempest python3-tempest
  ceph-mon ceph-mgr ceph-osd ceph-common librbd-dev librados-dev radosgw rbd-mirror
  chromium chromium-driver)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "# installing ${missing[*]}"
# Lock::Timeout waits for dpkg's lock; a run that still fails (the lists' lock held by an
# update elsewhere, a mirror hiccup) is tried again a few times before giving up.
for attempt in 1 2 3 4 5; do
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -q || { sleep $((attempt * 10)); continue; }
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" && exit 0
  sleep $((attempt * 10))
done
echo "# could not install ${missing[*]}" >&2
exit 1
