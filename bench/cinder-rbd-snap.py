#!/usr/bin/python3
"""The peer of bench/nbd.ts --backend rbd's snapshot and clone rows: the librbd
calls OpenStack Cinder's RBD driver makes for create_snapshot,
create_volume_from_snapshot and create_cloned_volume, in its order, through
python3-rbd (Debian's), timed.

    cinder-rbd-snap.py CONF USER POOL IMAGE SIZE_GIB TAG [SETTLE_S]

As Cinder does, each operation connects to the cluster (a new rados client
and I/O context) and shuts the connection down at its end; the time of a bare
connect and shutdown is printed apart ("connect"), so that the calls alone can
be compared too. Each operation starts SETTLE_S seconds (default 0) after the
last one ended, so that the monitor has no proposal pending: a snapshot's id
comes from an OSD map change, which the monitor commits at most once per
paxos_propose_interval. Prints one JSON object of milliseconds; removes what it made.

What each operation is here (Cinder's sequence, not its code):
- snapshot: open the volume's image, create the snapshot, protect it.
- from_snapshot: clone volume@snapshot (layering, exclusive-lock, object-map,
  fast-diff, deep-flatten), open the new image to read its size and resize it
  when smaller than the volume (Cinder's _resize check), read the parent chain
  depth against rbd_max_clone_depth.
- clone: read the source's clone depth, open the source, create a clone
  snapshot and protect it, clone it, then the same size check as above.
"""
import json
import sys
import time

import rados
import rbd

conf, user, pool, image, size_gib, tag = sys.argv[1:7]
settle = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
size = int(size_gib) * 1024 ** 3
FEATURES = 61  # layering, exclusive-lock, object-map, fast-diff, deep-flatten


class Connection:
    """A rados client and an I/O context on POOL, closed on exit (Cinder's RADOSClient)."""

    def __enter__(self):
        self.cluster = rados.Rados(conffile=conf, rados_id=user)
        self.cluster.connect()
        self.ioctx = self.cluster.open_ioctx(pool)
        return self.ioctx

    def __exit__(self, *exc):
        self.ioctx.close()
        self.cluster.shutdown()


def depth(ioctx, name):
    """How many parents the chain above NAME has."""
    d = 0
    while True:
        with rbd.Image(ioctx, name, read_only=True) as img:
            try:
                parent = img.parent_info()
            except rbd.ImageNotFound:
                return d
        name = parent[1]
        d += 1


def grow(ioctx, name):
    with rbd.Image(ioctx, name) as img:
        if img.size() < size:
            img.resize(size)


def timed(fn):
    time.sleep(settle)
    start = time.perf_counter()
    fn()
    return round((time.perf_counter() - start) * 1000, 1)


snap = f'snapshot-{tag}'
from_snap = f'volume-{tag}-fromsnap'
clone = f'volume-{tag}-clone'
clone_snap = f'{clone}.clone_snap'


def snapshot():
    with Connection() as ioctx:
        with rbd.Image(ioctx, image) as img:
            img.create_snap(snap)
            img.protect_snap(snap)


def volume_from_snapshot():
    with Connection() as ioctx:
        rbd.RBD().clone(ioctx, image, snap, ioctx, from_snap, features=FEATURES)
        grow(ioctx, from_snap)
        depth(ioctx, from_snap)


def cloned_volume():
    with Connection() as ioctx:
        depth(ioctx, image)
        with rbd.Image(ioctx, image) as img:
            img.create_snap(clone_snap)
            img.protect_snap(clone_snap)
        rbd.RBD().clone(ioctx, image, clone_snap, ioctx, clone, features=FEATURES)
        grow(ioctx, clone)


def connect_only():
    with Connection():
        pass


result = {
    'connect': timed(connect_only),
    'snapshot': timed(snapshot),
    'from_snapshot': timed(volume_from_snapshot),
    'clone': timed(cloned_volume),
}
# Clean-up, not timed.
with Connection() as ioctx:
    for name in (from_snap, clone):
        rbd.RBD().remove(ioctx, name)
    with rbd.Image(ioctx, image) as img:
        for s in (snap, clone_snap):
            img.unprotect_snap(s)
            img.remove_snap(s)
print(json.dumps(result))
