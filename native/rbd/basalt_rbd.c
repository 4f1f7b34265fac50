/*
 * Basalt's optional RBD addon: librados and librbd (Ceph's block device
 * library) as a Node-API module, for the `rbd` volume driver. It is built
 * apart from the main addon (native/rbd/binding.gyp, by scripts/build-rbd-addon.mjs)
 * and only where librbd-dev's headers are present, so that a machine without
 * Ceph's libraries still installs Basalt.
 *
 * Every call returns a promise and never blocks the event loop:
 *
 * - Management calls (connect, create, clone, remove, list, pool stats, open,
 *   close, stat, resize, flatten, snapshots, diff_iterate, monitor commands)
 *   block in librados, so each runs on a thread of its own, and its result
 *   comes back to the event loop through the addon's thread-safe function. Not on
 *   libuv's pool (Node-API async work): a flatten or a removal of a large
 *   image takes minutes, and four of them would hold every pool thread of the
 *   process, stalling the file driver's I/O, fs and crypto meanwhile.
 * - Block I/O uses librbd's own asynchronous calls (rbd_aio_*): the request
 *   is submitted from the event loop and its completion, which librbd calls on
 *   one of its own threads, comes back through the image's thread-safe
 *   function, which resolves the promise on the event loop. No thread
 *   waits for the cluster.
 *
 * A full pool fails writes at once: every I/O context is set to "full try"
 * (rados_set_pool_full_try), so a write to a pool at its quota answers
 * EDQUOT and one on a full cluster ENOSPC, where librados would otherwise
 * hold it until there is room — a hang for the NBD client and for a create.
 * Removing an image needs room too (librbd first moves it to the pool's
 * trash): it fails in a pool at its quota, and the driver checks the result.
 *
 * Errors reject with an Error whose `errno` is the positive errno librados
 * returned and whose `code` is its name (ENOENT, EEXIST, EBUSY …); the
 * message names the call only, never a path or a key.
 *
 * The NBD data plane (native/nbd_dataplane.c, in the main addon) serves an
 * open image from its own threads through the table dataPlaneBackend gives
 * (native/nbd_backend.h): rbd_aio_* submitted from the data plane's workers,
 * completions handed straight to its replier, never to the event loop.
 *
 * Lifetimes: an image keeps its cluster's object alive; shutting a cluster
 * down with images still open, or closing an image with I/O in flight or a
 * data-plane connection on it, is refused (EBUSY): the TypeScript side orders them. An object collected while
 * still open leaks its librados handle on purpose: closing it would block the
 * event loop in a finalizer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <node_api.h>
#include <pthread.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nbd_backend.h"

typedef struct cluster {
  rados_t rados;
  int connected;
  atomic_int images; /* images open on it */
  int jobs;          /* calls running on job threads; only touched on the event loop */
} cluster_t;

typedef struct image {
  rbd_image_t rbd;
  rados_ioctx_t io;
  cluster_t *cl;
  napi_ref cluster_ref; /* keeps the cluster's object alive */
  napi_threadsafe_function tsfn; /* delivers aio completions to the event loop */
  int pending; /* aio in flight; only touched on the event loop */
  int jobs;    /* management calls running on job threads; only touched on the event loop */
  int closing; /* close was called: no new call starts */
  int closed;
  nbd_backend_t plane; /* what the NBD data plane serves the image through */
  atomic_int planes;   /* data-plane connections holding the image */
} image_t;

/* ---- small helpers ---- */

static napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static napi_value number(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

static napi_value string(napi_env env, const char *s) {
  napi_value out;
  if (!s) {
    napi_get_null(env, &out);
    return out;
  }
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &out);
  return out;
}

static void set(napi_env env, napi_value obj, const char *key, napi_value v) {
  napi_set_named_property(env, obj, key, v);
}

/* The Error a failed call rejects with: `errno` (positive) and `code` (its name). */
static napi_value errno_error(napi_env env, const char *what, int rc) {
  int e = rc < 0 ? -rc : rc;
  const char *name = strerrorname_np(e);
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(e));
  napi_value err, code_v, msg_v;
  napi_create_string_utf8(env, name ? name : "EIO", NAPI_AUTO_LENGTH, &code_v);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &msg_v);
  napi_create_error(env, code_v, msg_v, &err);
  set(env, err, "errno", number(env, e));
  return err;
}

/* A string argument, malloc'ed; NULL for null or undefined (and for anything else not a string). */
static char *string_arg(napi_env env, napi_value v) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_string) return NULL;
  size_t len = 0;
  napi_get_value_string_utf8(env, v, NULL, 0, &len);
  char *s = malloc(len + 1);
  if (!s) return NULL;
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

static uint64_t u64_arg(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d > 0 ? (uint64_t)d : 0;
}

static int args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "missing arguments");
    return 0;
  }
  return 1;
}

static void cluster_finalize(napi_env env, void *data, void *hint) {
  cluster_t *cl = data;
  if (!cl->connected) free(cl); /* else leaked on purpose: see the file comment */
}

static void image_finalize(napi_env env, void *data, void *hint) {
  image_t *img = data;
  if (img->closed) free(img);
}

/* Tags that tell a cluster's external from an image's (and from any other addon's). */
static const napi_type_tag CLUSTER_TAG = { 0x6261736174726264ULL, 0x636c757374657231ULL };
static const napi_type_tag IMAGE_TAG = { 0x6261736174726264ULL, 0x696d616765303031ULL };

/* An external of `tag` holding `p`. */
static napi_value tagged_external(napi_env env, void *p, napi_finalize fin, const napi_type_tag *tag) {
  napi_value v;
  napi_create_external(env, p, fin, NULL, &v);
  napi_type_tag_object(env, v, tag);
  return v;
}

/* The pointer an external of `tag` holds; throws (and returns NULL) for anything else. */
static void *external_of(napi_env env, napi_value v, const napi_type_tag *tag, const char *what) {
  void *p = NULL;
  bool ok = false;
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_external) napi_check_object_type_tag(env, v, tag, &ok);
  if (!ok || napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, what);
    return NULL;
  }
  return p;
}

static cluster_t *cluster_of(napi_env env, napi_value v) { return external_of(env, v, &CLUSTER_TAG, "not a cluster"); }
static image_t *image_of(napi_env env, napi_value v) { return external_of(env, v, &IMAGE_TAG, "not an image"); }

/* ---- management calls: async work on libuv's pool ---- */

typedef enum {
  OP_CONNECT, OP_SHUTDOWN, OP_MON_COMMAND, OP_CREATE, OP_CLONE, OP_REMOVE, OP_RENAME, OP_LIST,
  OP_OPEN, OP_CLOSE, OP_STAT, OP_RESIZE, OP_FLATTEN, OP_SNAP_CREATE, OP_SNAP_REMOVE,
  OP_SNAP_ROLLBACK, OP_SNAP_RENAME, OP_SNAP_PROTECT, OP_SNAP_UNPROTECT, OP_SNAP_IS_PROTECTED, OP_SNAP_LIST,
  OP_SNAP_REMOVE_BY_ID, OP_PARENT, OP_CHILDREN, OP_DIFF, OP_POOL_STATS,
  OP_META_SET, OP_META_REMOVE, OP_META_LIST, OP_IMAGE_ID, OP_REMOVE_OBJECT, OP_STAT_OBJECT,
  /* mirroring (rbd-mirror): pool and site calls on a cluster, image calls on an open image */
  OP_MIRROR_MODE_SET, OP_MIRROR_MODE_GET, OP_MIRROR_SITE_NAME_SET, OP_MIRROR_BOOTSTRAP_CREATE, OP_MIRROR_BOOTSTRAP_IMPORT,
  OP_MIRROR_PEER_LIST, OP_MIRROR_ENABLE, OP_MIRROR_DISABLE, OP_MIRROR_PROMOTE, OP_MIRROR_DEMOTE, OP_MIRROR_RESYNC,
  OP_MIRROR_INFO, OP_MIRROR_SNAPSHOT, OP_MIRROR_STATUS,
} op_t;

/* One entry of a list result (images, snapshots, children, diff extents). */
typedef struct entry {
  uint64_t x, y;
  int flag;
  char *a, *b, *c;
} entry_t;

typedef struct job {
  op_t op;
  const char *what;
  napi_deferred deferred;
  napi_threadsafe_function done; /* the addon's: brings the job back to the event loop */
  napi_ref keep; /* the cluster or image object the job uses */
  cluster_t *cl;
  image_t *img;
  char *s[4];
  uint64_t n[3];
  char **conf_keys, **conf_values; /* OP_CONNECT: extra settings */
  size_t conf_count;
  int rc;
  /* results */
  rbd_image_info_t info;
  uint64_t features, overlap;
  uint64_t images, provisioned; /* OP_POOL_STATS */
  uint64_t object_size;         /* OP_STAT_OBJECT */
  time_t object_mtime;          /* OP_STAT_OBJECT */
  int flag;
  char *out, *outs;
  size_t outlen, outslen;
  entry_t *list;
  size_t count, cap;
} job_t;

static int push(job_t *j, entry_t e) {
  if (j->count == j->cap) {
    size_t cap = j->cap ? j->cap * 2 : 16;
    entry_t *l = realloc(j->list, cap * sizeof *l);
    if (!l) return -ENOMEM;
    j->list = l;
    j->cap = cap;
  }
  j->list[j->count++] = e;
  return 0;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static int diff_cb(uint64_t off, size_t len, int exists, void *arg) {
  return push(arg, (entry_t){ .x = off, .y = len, .flag = exists });
}

/* Runs `fn` with an I/O context on the pool `s[0]`, failing writes to a full pool at once (see the file comment). */
static int with_ioctx(job_t *j, int (*fn)(job_t *, rados_ioctx_t)) {
  rados_ioctx_t io;
  int rc = rados_ioctx_create(j->cl->rados, j->s[0], &io);
  if (rc < 0) return rc;
  rados_set_pool_full_try(io);
  rc = fn(j, io);
  rados_ioctx_destroy(io);
  return rc;
}

static int image_options(rbd_image_options_t *opts, uint64_t features, uint64_t order) {
  rbd_image_options_create(opts);
  int rc = rbd_image_options_set_uint64(*opts, RBD_IMAGE_OPTION_FEATURES, features);
  if (rc == 0 && order) rc = rbd_image_options_set_uint64(*opts, RBD_IMAGE_OPTION_ORDER, order);
  return rc;
}

static int do_create(job_t *j, rados_ioctx_t io) {
  rbd_image_options_t opts;
  int rc = image_options(&opts, j->n[1], j->n[2]);
  if (rc == 0) rc = rbd_create4(io, j->s[1], j->n[0], opts);
  rbd_image_options_destroy(opts);
  return rc;
}

static int do_clone(job_t *j, rados_ioctx_t io) {
  rbd_image_options_t opts;
  int rc = image_options(&opts, j->n[1], j->n[2]);
  if (rc == 0) rc = rbd_clone3(io, j->s[1], j->s[2], io, j->s[3], opts);
  rbd_image_options_destroy(opts);
  return rc;
}

static int do_remove(job_t *j, rados_ioctx_t io) { return rbd_remove(io, j->s[1]); }

/*
 * The pool's image count and the sum of its images' sizes: librbd lists the
 * directory and reads each image's size from its header object (a few reads
 * in flight at once), without opening any image.
 */
static int do_pool_stats(job_t *j, rados_ioctx_t io) {
  rbd_pool_stats_t stats;
  rbd_pool_stats_create(&stats);
  int rc = rbd_pool_stats_option_add_uint64(stats, RBD_POOL_STAT_OPTION_IMAGES, &j->images);
  if (rc == 0) rc = rbd_pool_stats_option_add_uint64(stats, RBD_POOL_STAT_OPTION_IMAGE_PROVISIONED_BYTES, &j->provisioned);
  if (rc == 0) rc = rbd_pool_stats_get(io, stats);
  rbd_pool_stats_destroy(stats);
  return rc;
}
static int do_rename(job_t *j, rados_ioctx_t io) { return rbd_rename(io, j->s[1], j->s[2]); }
static int do_remove_object(job_t *j, rados_ioctx_t io) { return rados_remove(io, j->s[1]); }
static int do_stat_object(job_t *j, rados_ioctx_t io) {
  return rados_stat(io, j->s[1], &j->object_size, &j->object_mtime);
}

/* The image's id (format 2: the name its header and data objects carry) into j->outs. */
static int do_image_id(job_t *j) {
  char *buf = calloc(1, 64);
  if (!buf) return -ENOMEM;
  int rc = rbd_get_id(j->img->rbd, buf, 64);
  if (rc < 0) {
    free(buf);
    return rc;
  }
  j->outs = buf; /* freed with free(), see job_complete */
  j->outslen = strnlen(buf, 64);
  return 0;
}

static int do_list(job_t *j, rados_ioctx_t io) {
  size_t max = 64;
  rbd_image_spec_t *specs = NULL;
  int rc;
  for (;;) {
    specs = calloc(max, sizeof *specs);
    if (!specs) return -ENOMEM;
    rc = rbd_list2(io, specs, &max);
    if (rc != -ERANGE) break;
    free(specs);
  }
  if (rc >= 0) {
    for (size_t i = 0; i < max && rc >= 0; i++) rc = push(j, (entry_t){ .a = strdup(specs[i].name) });
    rbd_image_spec_list_cleanup(specs, max);
  }
  free(specs);
  return rc < 0 ? rc : 0;
}

static int do_open(job_t *j) {
  image_t *img = j->img;
  int rc = rados_ioctx_create(j->cl->rados, j->s[0], &img->io);
  if (rc < 0) return rc;
  rados_set_pool_full_try(img->io);
  rc = j->s[2] || j->n[0] ? rbd_open_read_only(img->io, j->s[1], &img->rbd, j->s[2]) : rbd_open(img->io, j->s[1], &img->rbd, NULL);
  if (rc < 0) rados_ioctx_destroy(img->io);
  return rc;
}

static int do_snap_list(job_t *j) {
  int max = 16, rc;
  rbd_snap_info_t *snaps;
  for (;;) {
    snaps = calloc(max, sizeof *snaps);
    if (!snaps) return -ENOMEM;
    rc = rbd_snap_list(j->img->rbd, snaps, &max);
    if (rc != -ERANGE) break;
    free(snaps);
  }
  if (rc >= 0) {
    int n = rc;
    rc = 0;
    for (int i = 0; i < n && rc >= 0; i++) {
      /* The namespace (user, group, trash, mirror) in `flag`; a trashed snapshot's name before it was trashed in `b`. */
      /* A mirror snapshot's state and whether rbd-mirror finished copying it, above the namespace's
       * 8 bits of `flag`: bit 8 set when known, bits 9-11 the rbd_snap_mirror_state_t, bit 12 complete. */
      rbd_snap_namespace_type_t ns = RBD_SNAP_NAMESPACE_TYPE_USER;
      char trashed[256] = "";
      int mirror = 0;
      if (rbd_snap_get_namespace_type(j->img->rbd, snaps[i].id, &ns) == 0) {
        if (ns == RBD_SNAP_NAMESPACE_TYPE_TRASH) rbd_snap_get_trash_namespace(j->img->rbd, snaps[i].id, trashed, sizeof trashed);
        if (ns == RBD_SNAP_NAMESPACE_TYPE_MIRROR) {
          rbd_snap_mirror_namespace_t m;
          if (rbd_snap_get_mirror_namespace(j->img->rbd, snaps[i].id, &m, sizeof m) == 0) {
            mirror = 1 | ((int)m.state & 7) << 1 | (m.complete ? 1 : 0) << 4;
            rbd_snap_mirror_namespace_cleanup(&m, sizeof m);
          }
        }
      }
      rc = push(j, (entry_t){ .x = snaps[i].id, .y = snaps[i].size, .flag = (int)ns | mirror << 8, .a = strdup(snaps[i].name), .b = trashed[0] ? strdup(trashed) : NULL });
    }
    rbd_snap_list_end(snaps);
  }
  free(snaps);
  return rc;
}

static int do_children(job_t *j) {
  size_t max = 16;
  rbd_linked_image_spec_t *kids;
  int rc;
  for (;;) {
    kids = calloc(max, sizeof *kids);
    if (!kids) return -ENOMEM;
    rc = rbd_list_children3(j->img->rbd, kids, &max);
    if (rc != -ERANGE) break;
    free(kids);
  }
  if (rc >= 0) {
    rc = 0;
    for (size_t i = 0; i < max && rc >= 0; i++)
      rc = push(j, (entry_t){ .flag = kids[i].trash, .a = dup_or_null(kids[i].pool_name), .b = dup_or_null(kids[i].image_name) });
    rbd_linked_image_spec_list_cleanup(kids, max);
  }
  free(kids);
  return rc;
}

/* The image's metadata (rbd image-meta), every key with its value. */
static int do_meta_list(job_t *j) {
  size_t klen = 1024, vlen = 1024;
  char *keys, *vals;
  int rc;
  for (;;) {
    keys = malloc(klen);
    vals = malloc(vlen);
    if (!keys || !vals) {
      free(keys);
      free(vals);
      return -ENOMEM;
    }
    rc = rbd_metadata_list(j->img->rbd, "", 0, keys, &klen, vals, &vlen);
    if (rc != -ERANGE) break; /* klen and vlen now say what it takes */
    free(keys);
    free(vals);
  }
  if (rc >= 0) {
    rc = 0;
    /* NUL-separated keys and values, in the same order */
    for (size_t k = 0, v = 0; k < klen && v < vlen && keys[k] && rc >= 0;) {
      rc = push(j, (entry_t){ .a = dup_or_null(keys + k), .b = dup_or_null(vals + v) });
      k += strlen(keys + k) + 1;
      v += strlen(vals + v) + 1;
    }
  }
  free(keys);
  free(vals);
  return rc;
}

static int do_parent(job_t *j) {
  rbd_linked_image_spec_t p;
  rbd_snap_spec_t s;
  int rc = rbd_get_parent(j->img->rbd, &p, &s);
  if (rc == -ENOENT) return 0; /* no parent: an empty list */
  if (rc < 0) return rc;
  rc = push(j, (entry_t){ .a = dup_or_null(p.pool_name), .b = dup_or_null(p.image_name), .c = dup_or_null(s.name) });
  rbd_linked_image_spec_cleanup(&p);
  rbd_snap_spec_cleanup(&s);
  return rc;
}

/* ---- mirroring ---- */

static int do_mirror_mode_set(job_t *j, rados_ioctx_t io) { return rbd_mirror_mode_set(io, (rbd_mirror_mode_t)j->n[0]); }

static int do_mirror_mode_get(job_t *j, rados_ioctx_t io) {
  rbd_mirror_mode_t mode;
  int rc = rbd_mirror_mode_get(io, &mode);
  j->flag = (int)mode;
  return rc;
}

/* A bootstrap token (base64 text, a few hundred bytes) into j->out. */
static int do_mirror_bootstrap_create(job_t *j, rados_ioctx_t io) {
  size_t len = 4096;
  for (;;) {
    char *buf = malloc(len);
    if (!buf) return -ENOMEM;
    int rc = rbd_mirror_peer_bootstrap_create(io, buf, &len);
    if (rc == -ERANGE) {
      free(buf);
      continue;
    }
    if (rc < 0) {
      free(buf);
      return rc;
    }
    j->outs = buf; /* freed with free(), see job_complete */
    j->outslen = strnlen(buf, len);
    j->flag = 1;
    return 0;
  }
}

static int do_mirror_bootstrap_import(job_t *j, rados_ioctx_t io) {
  return rbd_mirror_peer_bootstrap_import(io, (rbd_mirror_peer_direction_t)j->n[0], j->s[1]);
}

static int do_mirror_peer_list(job_t *j, rados_ioctx_t io) {
  int max = 8, rc;
  rbd_mirror_peer_site_t *peers;
  for (;;) {
    peers = calloc(max, sizeof *peers);
    if (!peers) return -ENOMEM;
    rc = rbd_mirror_peer_site_list(io, peers, &max);
    if (rc != -ERANGE) break;
    free(peers);
  }
  if (rc >= 0) {
    for (int i = 0; i < max && rc >= 0; i++)
      rc = push(j, (entry_t){ .flag = peers[i].direction, .a = dup_or_null(peers[i].uuid), .b = dup_or_null(peers[i].site_name), .c = dup_or_null(peers[i].mirror_uuid) });
    rbd_mirror_peer_site_list_cleanup(peers, max);
  }
  free(peers);
  return rc < 0 ? rc : 0;
}

/* The image's mirroring (global id, state, primary) as the first entry; its sites' statuses after it (OP_MIRROR_STATUS). */
static int do_mirror_status(job_t *j, int with_sites) {
  if (!with_sites) {
    rbd_mirror_image_info_t info;
    int rc = rbd_mirror_image_get_info(j->img->rbd, &info, sizeof info);
    if (rc < 0) return rc;
    rc = push(j, (entry_t){ .x = (uint64_t)info.state, .flag = info.primary, .a = dup_or_null(info.global_id) });
    rbd_mirror_image_get_info_cleanup(&info);
    if (rc == 0) {
      rbd_mirror_image_mode_t mode = RBD_MIRROR_IMAGE_MODE_JOURNAL;
      if (info.state == RBD_MIRROR_IMAGE_ENABLED && rbd_mirror_image_get_mode(j->img->rbd, &mode) == 0) j->list[0].y = (uint64_t)mode;
    }
    return rc;
  }
  rbd_mirror_image_global_status_t st;
  int rc = rbd_mirror_image_get_global_status(j->img->rbd, &st, sizeof st);
  if (rc < 0) return rc;
  rc = push(j, (entry_t){ .x = (uint64_t)st.info.state, .flag = st.info.primary, .a = dup_or_null(st.info.global_id) });
  for (uint32_t i = 0; i < st.site_statuses_count && rc >= 0; i++) {
    rbd_mirror_image_site_status_t *site = &st.site_statuses[i];
    rc = push(j, (entry_t){ .x = (uint64_t)site->state, .y = (uint64_t)site->last_update, .flag = site->up,
                            .a = dup_or_null(site->mirror_uuid), .b = dup_or_null(site->description) });
  }
  rbd_mirror_image_global_status_cleanup(&st);
  return rc < 0 ? rc : 0;
}

static void job_execute(job_t *j) {
  rbd_image_t rbd = j->img ? j->img->rbd : NULL;
  switch (j->op) {
    case OP_CONNECT: {
      char name[256];
      snprintf(name, sizeof name, "client.%s", j->s[1]);
      j->rc = rados_create2(&j->cl->rados, "ceph", name, 0);
      if (j->rc < 0) break;
      j->rc = rados_conf_read_file(j->cl->rados, j->s[0]); /* NULL: the default places (/etc/ceph/ceph.conf …) */
      /* CEPH_ARGS, as every Ceph client honours it (the keyring and settings below still win). */
      if (j->rc == 0) j->rc = rados_conf_parse_env(j->cl->rados, NULL);
      if (j->rc == 0 && j->s[2]) j->rc = rados_conf_set(j->cl->rados, "keyring", j->s[2]);
      for (size_t i = 0; j->rc == 0 && i < j->conf_count; i++) j->rc = rados_conf_set(j->cl->rados, j->conf_keys[i], j->conf_values[i]);
      if (j->rc == 0) j->rc = rados_connect(j->cl->rados);
      if (j->rc < 0) rados_shutdown(j->cl->rados);
      break;
    }
    case OP_SHUTDOWN: rados_shutdown(j->cl->rados); break;
    case OP_MON_COMMAND: {
      const char *cmd[1] = { j->s[0] };
      j->rc = rados_mon_command(j->cl->rados, cmd, 1, "", 0, &j->out, &j->outlen, &j->outs, &j->outslen);
      break;
    }
    case OP_CREATE: j->rc = with_ioctx(j, do_create); break;
    case OP_CLONE: j->rc = with_ioctx(j, do_clone); break;
    case OP_REMOVE: j->rc = with_ioctx(j, do_remove); break;
    case OP_RENAME: j->rc = with_ioctx(j, do_rename); break;
    case OP_LIST: j->rc = with_ioctx(j, do_list); break;
    case OP_POOL_STATS: j->rc = with_ioctx(j, do_pool_stats); break;
    case OP_OPEN: j->rc = do_open(j); break;
    case OP_CLOSE:
      j->rc = rbd_close(rbd);
      rados_ioctx_destroy(j->img->io);
      break;
    case OP_STAT:
      j->rc = rbd_stat(rbd, &j->info, sizeof j->info);
      if (j->rc == 0) j->rc = rbd_get_features(rbd, &j->features);
      if (j->rc == 0) {
        int r = rbd_get_overlap(rbd, &j->overlap);
        if (r < 0) j->overlap = 0; /* no parent */
      }
      break;
    case OP_RESIZE: j->rc = rbd_resize(rbd, j->n[0]); break;
    case OP_FLATTEN: j->rc = rbd_flatten(rbd); break;
    case OP_SNAP_CREATE: j->rc = rbd_snap_create(rbd, j->s[0]); break;
    case OP_SNAP_REMOVE: j->rc = rbd_snap_remove(rbd, j->s[0]); break;
    case OP_SNAP_REMOVE_BY_ID: j->rc = rbd_snap_remove_by_id(rbd, j->n[0]); break;
    case OP_SNAP_ROLLBACK: j->rc = rbd_snap_rollback(rbd, j->s[0]); break;
    case OP_SNAP_RENAME: j->rc = rbd_snap_rename(rbd, j->s[0], j->s[1]); break;
    case OP_SNAP_PROTECT: j->rc = rbd_snap_protect(rbd, j->s[0]); break;
    case OP_SNAP_UNPROTECT: j->rc = rbd_snap_unprotect(rbd, j->s[0]); break;
    case OP_SNAP_IS_PROTECTED: j->rc = rbd_snap_is_protected(rbd, j->s[0], &j->flag); break;
    case OP_SNAP_LIST: j->rc = do_snap_list(j); break;
    case OP_PARENT: j->rc = do_parent(j); break;
    case OP_CHILDREN: j->rc = do_children(j); break;
    case OP_META_SET: j->rc = rbd_metadata_set(rbd, j->s[0], j->s[1]); break;
    case OP_META_REMOVE: j->rc = rbd_metadata_remove(rbd, j->s[0]); break;
    case OP_META_LIST: j->rc = do_meta_list(j); break;
    case OP_IMAGE_ID: j->rc = do_image_id(j); break;
    case OP_REMOVE_OBJECT: j->rc = with_ioctx(j, do_remove_object); break;
    case OP_STAT_OBJECT: j->rc = with_ioctx(j, do_stat_object); break;
    case OP_DIFF:
      j->rc = rbd_diff_iterate2(rbd, j->s[0], j->n[0], j->n[1], 1, (uint8_t)j->n[2], diff_cb, j);
      break;
    case OP_MIRROR_MODE_SET: j->rc = with_ioctx(j, do_mirror_mode_set); break;
    case OP_MIRROR_MODE_GET: j->rc = with_ioctx(j, do_mirror_mode_get); break;
    case OP_MIRROR_SITE_NAME_SET: j->rc = rbd_mirror_site_name_set(j->cl->rados, j->s[0]); break;
    case OP_MIRROR_BOOTSTRAP_CREATE: j->rc = with_ioctx(j, do_mirror_bootstrap_create); break;
    case OP_MIRROR_BOOTSTRAP_IMPORT: j->rc = with_ioctx(j, do_mirror_bootstrap_import); break;
    case OP_MIRROR_PEER_LIST: j->rc = with_ioctx(j, do_mirror_peer_list); break;
    case OP_MIRROR_ENABLE: j->rc = rbd_mirror_image_enable2(rbd, (rbd_mirror_image_mode_t)j->n[0]); break;
    case OP_MIRROR_DISABLE: j->rc = rbd_mirror_image_disable(rbd, j->n[0] != 0); break;
    case OP_MIRROR_PROMOTE: j->rc = rbd_mirror_image_promote(rbd, j->n[0] != 0); break;
    case OP_MIRROR_DEMOTE: j->rc = rbd_mirror_image_demote(rbd); break;
    case OP_MIRROR_RESYNC: j->rc = rbd_mirror_image_resync(rbd); break;
    case OP_MIRROR_INFO: j->rc = do_mirror_status(j, 0); break;
    case OP_MIRROR_STATUS: j->rc = do_mirror_status(j, 1); break;
    case OP_MIRROR_SNAPSHOT: {
      uint64_t id = 0;
      j->rc = rbd_mirror_image_create_snapshot(rbd, &id);
      j->overlap = id;
      break;
    }
  }
}

/* One mirroring entry as an object: the image's (global id, state, primary, mode) or a site's status. */
static napi_value mirror_entry(napi_env env, entry_t *e, int site) {
  napi_value v, b;
  napi_create_object(env, &v);
  napi_get_boolean(env, e->flag, &b);
  if (!site) {
    static const char *states[] = { "disabling", "enabled", "disabled" };
    set(env, v, "globalId", string(env, e->a ? e->a : ""));
    set(env, v, "state", string(env, e->x < 3 ? states[e->x] : "unknown"));
    set(env, v, "primary", b);
    set(env, v, "mode", string(env, e->x == RBD_MIRROR_IMAGE_ENABLED ? (e->y == RBD_MIRROR_IMAGE_MODE_SNAPSHOT ? "snapshot" : "journal") : NULL));
    return v;
  }
  static const char *states[] = { "unknown", "error", "syncing", "starting_replay", "replaying", "stopping_replay", "stopped" };
  set(env, v, "mirrorUuid", string(env, e->a ? e->a : ""));
  set(env, v, "state", string(env, e->x < 7 ? states[e->x] : "unknown"));
  set(env, v, "description", string(env, e->b ? e->b : ""));
  set(env, v, "lastUpdate", number(env, (double)e->y));
  set(env, v, "up", b);
  return v;
}

static napi_value list_value(napi_env env, job_t *j) {
  napi_value arr;
  napi_create_array_with_length(env, j->count, &arr);
  for (size_t i = 0; i < j->count; i++) {
    entry_t *e = &j->list[i];
    napi_value v;
    napi_create_object(env, &v);
    switch (j->op) {
      case OP_LIST: v = string(env, e->a); break;
      case OP_SNAP_LIST: {
        static const char *namespaces[] = { "user", "group", "trash", "mirror" };
        static const char *mirror_states[] = { "primary", "primary-demoted", "non-primary", "non-primary-demoted" };
        int ns = e->flag & 0xff, mirror = e->flag >> 8;
        set(env, v, "id", number(env, (double)e->x));
        set(env, v, "name", string(env, e->a));
        set(env, v, "sizeBytes", number(env, (double)e->y));
        set(env, v, "namespace", string(env, ns < 4 ? namespaces[ns] : "unknown"));
        if (e->b) set(env, v, "trashedName", string(env, e->b));
        if (mirror & 1) {
          napi_value m, complete;
          napi_create_object(env, &m);
          int state = mirror >> 1 & 7;
          set(env, m, "state", string(env, state < 4 ? mirror_states[state] : "unknown"));
          napi_get_boolean(env, (mirror >> 4) & 1, &complete);
          set(env, m, "complete", complete);
          set(env, v, "mirror", m);
        }
        break;
      }
      case OP_CHILDREN: {
        napi_value b;
        napi_get_boolean(env, e->flag, &b);
        set(env, v, "pool", string(env, e->a));
        set(env, v, "image", string(env, e->b));
        set(env, v, "trash", b);
        break;
      }
      case OP_META_LIST:
        set(env, v, "key", string(env, e->a));
        set(env, v, "value", string(env, e->b));
        break;
      case OP_PARENT:
        set(env, v, "pool", string(env, e->a));
        set(env, v, "image", string(env, e->b));
        set(env, v, "snap", string(env, e->c));
        break;
      case OP_DIFF: {
        napi_value b;
        napi_get_boolean(env, e->flag, &b);
        set(env, v, "offset", number(env, (double)e->x));
        set(env, v, "length", number(env, (double)e->y));
        set(env, v, "exists", b);
        break;
      }
      default: break;
    }
    napi_set_element(env, arr, (uint32_t)i, v);
  }
  return arr;
}

static napi_value result_value(napi_env env, job_t *j) {
  napi_value v;
  switch (j->op) {
    case OP_CONNECT: return tagged_external(env, j->cl, cluster_finalize, &CLUSTER_TAG);
    case OP_OPEN: napi_get_reference_value(env, j->keep, &v); return v; /* the image object made at the call */
    case OP_MON_COMMAND: {
      napi_value out, outs;
      napi_create_object(env, &v);
      napi_create_string_utf8(env, j->out ? j->out : "", j->outlen, &out);
      napi_create_string_utf8(env, j->outs ? j->outs : "", j->outslen, &outs);
      set(env, v, "out", out);
      set(env, v, "status", outs);
      return v;
    }
    case OP_STAT:
      napi_create_object(env, &v);
      set(env, v, "sizeBytes", number(env, (double)j->info.size));
      set(env, v, "objectSizeBytes", number(env, (double)j->info.obj_size));
      set(env, v, "order", number(env, j->info.order));
      set(env, v, "features", number(env, (double)j->features));
      set(env, v, "overlapBytes", number(env, (double)j->overlap));
      return v;
    case OP_SNAP_IS_PROTECTED: napi_get_boolean(env, j->flag, &v); return v;
    case OP_MIRROR_MODE_GET: {
      static const char *modes[] = { "disabled", "image", "pool" };
      return string(env, j->flag >= 0 && j->flag < 3 ? modes[j->flag] : "disabled");
    }
    case OP_MIRROR_BOOTSTRAP_CREATE: case OP_IMAGE_ID: napi_create_string_utf8(env, j->outs, j->outslen, &v); return v;
    case OP_MIRROR_SNAPSHOT: return number(env, (double)j->overlap);
    case OP_MIRROR_INFO: return j->count > 0 ? mirror_entry(env, &j->list[0], 0) : undefined(env);
    case OP_MIRROR_STATUS: {
      napi_value sites;
      v = j->count > 0 ? mirror_entry(env, &j->list[0], 0) : undefined(env);
      napi_create_array_with_length(env, j->count ? j->count - 1 : 0, &sites);
      for (size_t i = 1; i < j->count; i++) napi_set_element(env, sites, (uint32_t)(i - 1), mirror_entry(env, &j->list[i], 1));
      if (j->count > 0) set(env, v, "sites", sites);
      return v;
    }
    case OP_MIRROR_PEER_LIST: {
      static const char *dirs[] = { "rx-only", "tx-only", "rx-tx" };
      napi_create_array_with_length(env, j->count, &v);
      for (size_t i = 0; i < j->count; i++) {
        napi_value p;
        napi_create_object(env, &p);
        set(env, p, "uuid", string(env, j->list[i].a));
        set(env, p, "siteName", string(env, j->list[i].b));
        set(env, p, "mirrorUuid", string(env, j->list[i].c));
        set(env, p, "direction", string(env, j->list[i].flag >= 0 && j->list[i].flag < 3 ? dirs[j->list[i].flag] : "rx-tx"));
        napi_set_element(env, v, (uint32_t)i, p);
      }
      return v;
    }
    case OP_STAT_OBJECT:
      napi_create_object(env, &v);
      set(env, v, "sizeBytes", number(env, (double)j->object_size));
      set(env, v, "mtimeMs", number(env, (double)j->object_mtime * 1000));
      return v;
    case OP_POOL_STATS:
      napi_create_object(env, &v);
      set(env, v, "images", number(env, (double)j->images));
      set(env, v, "provisionedBytes", number(env, (double)j->provisioned));
      return v;
    case OP_LIST: case OP_SNAP_LIST: case OP_CHILDREN: case OP_DIFF: case OP_META_LIST: return list_value(env, j);
    case OP_PARENT: {
      if (j->count == 0) {
        napi_get_null(env, &v);
        return v;
      }
      napi_value arr = list_value(env, j);
      napi_get_element(env, arr, 0, &v);
      return v;
    }
    default: return undefined(env);
  }
}

static void job_complete(napi_env env, job_t *j) {
  int rc = j->rc;
  if (j->op != OP_CONNECT) j->cl->jobs--;
  if (j->img) j->img->jobs--;
  switch (j->op) {
    case OP_CONNECT:
      if (rc == 0) j->cl->connected = 1;
      else free(j->cl);
      break;
    case OP_SHUTDOWN: j->cl->connected = 0; break;
    case OP_OPEN:
      if (rc == 0) {
        j->img->closed = 0;
        atomic_fetch_add(&j->img->cl->images, 1);
      }
      break;
    case OP_CLOSE:
      j->img->closed = 1;
      atomic_fetch_sub(&j->img->cl->images, 1);
      napi_delete_reference(env, j->img->cluster_ref);
      napi_release_threadsafe_function(j->img->tsfn, napi_tsfn_release);
      break;
    default: break;
  }
  if (rc < 0) napi_reject_deferred(env, j->deferred, errno_error(env, j->what, rc));
  else napi_resolve_deferred(env, j->deferred, result_value(env, j));
  if (j->op == OP_OPEN && rc < 0) {
    napi_delete_reference(env, j->img->cluster_ref);
    napi_release_threadsafe_function(j->img->tsfn, napi_tsfn_release);
    j->img->closed = 1; /* freed with its object */
  }
  if (j->keep) napi_delete_reference(env, j->keep);
  for (int i = 0; i < 4; i++) free(j->s[i]);
  for (size_t i = 0; i < j->conf_count; i++) {
    free(j->conf_keys[i]);
    free(j->conf_values[i]);
  }
  free(j->conf_keys);
  free(j->conf_values);
  for (size_t i = 0; i < j->count; i++) {
    free(j->list[i].a);
    free(j->list[i].b);
    free(j->list[i].c);
  }
  free(j->list);
  if (j->out) rados_buffer_free(j->out);
  if (j->outs && (j->op == OP_MIRROR_BOOTSTRAP_CREATE || j->op == OP_IMAGE_ID)) free(j->outs); /* ours, not librados's */
  else if (j->outs) rados_buffer_free(j->outs);
  free(j);
}

/* The addon's state in one environment (a worker thread loads its own). */
typedef struct addon_state {
  napi_threadsafe_function done; /* job threads hand their job back through it */
  int running;                   /* jobs started and not completed; only touched on the event loop */
} addon_state_t;

/* On the event loop (env NULL: the environment is going away; the job is dropped). */
static void job_done(napi_env env, napi_value js_cb, void *context, void *data) {
  addon_state_t *st = context;
  if (!env) return;
  job_complete(env, data);
  if (--st->running == 0) napi_unref_threadsafe_function(env, st->done); /* idle: the process may exit */
}

static void *job_thread(void *data) {
  job_t *j = data;
  job_execute(j);
  napi_call_threadsafe_function(j->done, j, napi_tsfn_blocking);
  return NULL;
}

/*
 * Starts `j` on a thread of its own; `keep` (may be NULL) stays alive until it
 * ends. The counts of calls running on a cluster and on an image let shutdown
 * and close refuse to free what a job thread still uses.
 */
static napi_value start(napi_env env, job_t *j, napi_value keep) {
  addon_state_t *st = NULL;
  napi_value promise;
  napi_get_instance_data(env, (void **)&st);
  if (j->op != OP_CONNECT) j->cl->jobs++;
  if (j->img) j->img->jobs++;
  napi_create_promise(env, &j->deferred, &promise);
  if (keep) napi_create_reference(env, keep, 1, &j->keep);
  j->done = st->done;
  if (st->running++ == 0) napi_ref_threadsafe_function(env, st->done);
  pthread_attr_t attr;
  pthread_t thread;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int e = pthread_create(&thread, &attr, job_thread, j);
  pthread_attr_destroy(&attr);
  if (e != 0) { /* no thread: the call fails at once, as librados would with EAGAIN */
    j->rc = -e;
    job_complete(env, j);
    if (--st->running == 0) napi_unref_threadsafe_function(env, st->done);
  }
  return promise;
}

/* A promise rejected at once (a call refused before it reached librados). */
static napi_value rejected(napi_env env, const char *what, int rc) {
  napi_deferred d;
  napi_value promise;
  napi_create_promise(env, &d, &promise);
  napi_reject_deferred(env, d, errno_error(env, what, rc));
  return promise;
}

static job_t *new_job(napi_env env, op_t op, const char *what) {
  job_t *j = calloc(1, sizeof *j);
  if (!j) napi_throw_error(env, NULL, "out of memory");
  else {
    j->op = op;
    j->what = what;
  }
  return j;
}

/* connect(conf, user, keyring, settings): settings is an object of librados options (strings). */
static napi_value js_connect(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!args(env, info, 4, argv)) return NULL;
  job_t *j = new_job(env, OP_CONNECT, "rados_connect");
  if (!j) return NULL;
  j->cl = calloc(1, sizeof *j->cl);
  j->s[0] = string_arg(env, argv[0]);
  j->s[1] = string_arg(env, argv[1]);
  j->s[2] = string_arg(env, argv[2]);
  if (!j->cl || !j->s[1]) {
    free(j->cl);
    free(j);
    napi_throw_type_error(env, NULL, "user must be a string");
    return NULL;
  }
  napi_valuetype t;
  napi_typeof(env, argv[3], &t);
  if (t == napi_object) {
    napi_value keys;
    uint32_t n = 0;
    napi_get_property_names(env, argv[3], &keys);
    napi_get_array_length(env, keys, &n);
    j->conf_keys = calloc(n ? n : 1, sizeof(char *));
    j->conf_values = calloc(n ? n : 1, sizeof(char *));
    for (uint32_t i = 0; i < n; i++) {
      napi_value k, v;
      napi_get_element(env, keys, i, &k);
      napi_get_property(env, argv[3], k, &v);
      char *ks = string_arg(env, k), *vs = string_arg(env, v);
      if (!ks || !vs) {
        free(ks);
        free(vs);
        continue;
      }
      j->conf_keys[j->conf_count] = ks;
      j->conf_values[j->conf_count++] = vs;
    }
  }
  return start(env, j, NULL);
}

static napi_value js_shutdown(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!args(env, info, 1, argv)) return NULL;
  cluster_t *cl = cluster_of(env, argv[0]);
  if (!cl) return NULL;
  if (!cl->connected) return rejected(env, "rados_shutdown", -ENOTCONN);
  if (atomic_load(&cl->images) > 0 || cl->jobs > 0) return rejected(env, "rados_shutdown", -EBUSY);
  job_t *j = new_job(env, OP_SHUTDOWN, "rados_shutdown");
  if (!j) return NULL;
  j->cl = cl;
  return start(env, j, argv[0]);
}

/* A job on a connected cluster with `nstr` string arguments then `nnum` numbers after the cluster. */
static napi_value cluster_job(napi_env env, napi_callback_info info, op_t op, const char *what, size_t nstr, size_t nnum) {
  napi_value argv[8];
  if (!args(env, info, 1 + nstr + nnum, argv)) return NULL;
  cluster_t *cl = cluster_of(env, argv[0]);
  if (!cl) return NULL;
  if (!cl->connected) return rejected(env, what, -ENOTCONN);
  job_t *j = new_job(env, op, what);
  if (!j) return NULL;
  j->cl = cl;
  for (size_t i = 0; i < nstr; i++) j->s[i] = string_arg(env, argv[1 + i]);
  for (size_t i = 0; i < nnum; i++) j->n[i] = u64_arg(env, argv[1 + nstr + i]);
  return start(env, j, argv[0]);
}

static napi_value js_mon_command(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_MON_COMMAND, "rados_mon_command", 1, 0); }
/* createImage(cluster, pool, name, sizeBytes, features, order) */
static napi_value js_create(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_CREATE, "rbd_create4", 2, 3); }
/* cloneImage(cluster, pool, parent, parentSnap, child, features, order): parent and child in one pool. */
static napi_value js_clone(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!args(env, info, 7, argv)) return NULL;
  cluster_t *cl = cluster_of(env, argv[0]);
  if (!cl) return NULL;
  if (!cl->connected) return rejected(env, "rbd_clone3", -ENOTCONN);
  job_t *j = new_job(env, OP_CLONE, "rbd_clone3");
  if (!j) return NULL;
  j->cl = cl;
  for (int i = 0; i < 4; i++) j->s[i] = string_arg(env, argv[1 + i]);
  j->n[1] = u64_arg(env, argv[5]);
  j->n[2] = u64_arg(env, argv[6]);
  return start(env, j, argv[0]);
}
static napi_value js_remove(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_REMOVE, "rbd_remove", 2, 0); }
static napi_value js_rename(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_RENAME, "rbd_rename", 3, 0); }
static napi_value js_list(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_LIST, "rbd_list2", 1, 0); }
/* removeObject(cluster, pool, oid): one RADOS object (an interrupted rename's leftover name, see the driver) */
static napi_value js_remove_object(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_REMOVE_OBJECT, "rados_remove", 2, 0); }
/* statObject(cluster, pool, oid) → { sizeBytes, mtimeMs } (whole seconds) */
static napi_value js_stat_object(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_STAT_OBJECT, "rados_stat", 2, 0); }
/* poolStats(cluster, pool) → { images, provisionedBytes } */
static napi_value js_pool_stats(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_POOL_STATS, "rbd_pool_stats_get", 1, 0); }

static void aio_deliver(napi_env env, napi_value js_cb, void *context, void *data);

/*
 * openImage(cluster, pool, name, snap, readOnly): the head read-write (snap null,
 * readOnly false), else read-only (the head, or the snapshot `snap`).
 */
static napi_value js_open(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!args(env, info, 5, argv)) return NULL;
  cluster_t *cl = cluster_of(env, argv[0]);
  if (!cl) return NULL;
  if (!cl->connected) return rejected(env, "rbd_open", -ENOTCONN);
  job_t *j = new_job(env, OP_OPEN, "rbd_open");
  if (!j) return NULL;
  image_t *img = calloc(1, sizeof *img);
  if (!img) {
    free(j);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  img->cl = cl;
  img->closed = 1; /* until the open succeeds */
  napi_create_reference(env, argv[0], 1, &img->cluster_ref);
  napi_value name, obj;
  napi_create_string_utf8(env, "rbd-aio", NAPI_AUTO_LENGTH, &name);
  napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, img, aio_deliver, &img->tsfn);
  napi_unref_threadsafe_function(env, img->tsfn); /* an idle open image does not keep the process alive */
  obj = tagged_external(env, img, image_finalize, &IMAGE_TAG);
  j->cl = cl;
  j->img = img;
  for (int i = 0; i < 3; i++) j->s[i] = string_arg(env, argv[1 + i]);
  bool read_only = false;
  napi_get_value_bool(env, argv[4], &read_only);
  j->n[0] = read_only;
  return start(env, j, obj);
}

/* A job on an open image with `nstr` string arguments then `nnum` numbers after the image. */
static napi_value image_job(napi_env env, napi_callback_info info, op_t op, const char *what, size_t nstr, size_t nnum) {
  napi_value argv[8];
  if (!args(env, info, 1 + nstr + nnum, argv)) return NULL;
  image_t *img = image_of(env, argv[0]);
  if (!img) return NULL;
  if (img->closed || img->closing) return rejected(env, what, -EBADF);
  if (op == OP_CLOSE) {
    if (img->pending > 0 || img->jobs > 0 || atomic_load(&img->planes) > 0) return rejected(env, what, -EBUSY);
    img->closing = 1;
  }
  job_t *j = new_job(env, op, what);
  if (!j) return NULL;
  j->cl = img->cl;
  j->img = img;
  for (size_t i = 0; i < nstr; i++) j->s[i] = string_arg(env, argv[1 + i]);
  for (size_t i = 0; i < nnum; i++) j->n[i] = u64_arg(env, argv[1 + nstr + i]);
  return start(env, j, argv[0]);
}

static napi_value js_close(napi_env env, napi_callback_info info) { return image_job(env, info, OP_CLOSE, "rbd_close", 0, 0); }
static napi_value js_stat(napi_env env, napi_callback_info info) { return image_job(env, info, OP_STAT, "rbd_stat", 0, 0); }
static napi_value js_resize(napi_env env, napi_callback_info info) { return image_job(env, info, OP_RESIZE, "rbd_resize", 0, 1); }
static napi_value js_flatten(napi_env env, napi_callback_info info) { return image_job(env, info, OP_FLATTEN, "rbd_flatten", 0, 0); }
static napi_value js_snap_create(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_CREATE, "rbd_snap_create", 1, 0); }
static napi_value js_snap_remove(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_REMOVE, "rbd_snap_remove", 1, 0); }
/* snapRemoveById(image, id): any namespace's snapshot (a trashed one has no name of its own) */
static napi_value js_snap_remove_by_id(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_REMOVE_BY_ID, "rbd_snap_remove_by_id", 0, 1); }
static napi_value js_snap_rollback(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_ROLLBACK, "rbd_snap_rollback", 1, 0); }
static napi_value js_snap_rename(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_RENAME, "rbd_snap_rename", 2, 0); }
static napi_value js_snap_protect(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_PROTECT, "rbd_snap_protect", 1, 0); }
static napi_value js_snap_unprotect(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_UNPROTECT, "rbd_snap_unprotect", 1, 0); }
static napi_value js_snap_is_protected(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_IS_PROTECTED, "rbd_snap_is_protected", 1, 0); }
static napi_value js_snap_list(napi_env env, napi_callback_info info) { return image_job(env, info, OP_SNAP_LIST, "rbd_snap_list", 0, 0); }
static napi_value js_parent(napi_env env, napi_callback_info info) { return image_job(env, info, OP_PARENT, "rbd_get_parent", 0, 0); }
static napi_value js_children(napi_env env, napi_callback_info info) { return image_job(env, info, OP_CHILDREN, "rbd_list_children3", 0, 0); }
/* metadataSet(image, key, value), metadataRemove(image, key), metadataList(image) → [{ key, value }] (rbd image-meta) */
static napi_value js_meta_set(napi_env env, napi_callback_info info) { return image_job(env, info, OP_META_SET, "rbd_metadata_set", 2, 0); }
static napi_value js_meta_remove(napi_env env, napi_callback_info info) { return image_job(env, info, OP_META_REMOVE, "rbd_metadata_remove", 1, 0); }
static napi_value js_meta_list(napi_env env, napi_callback_info info) { return image_job(env, info, OP_META_LIST, "rbd_metadata_list", 0, 0); }
static napi_value js_image_id(napi_env env, napi_callback_info info) { return image_job(env, info, OP_IMAGE_ID, "rbd_get_id", 0, 0); }
/* diffIterate(image, fromSnap, offset, length, wholeObject) */
static napi_value js_diff(napi_env env, napi_callback_info info) { return image_job(env, info, OP_DIFF, "rbd_diff_iterate2", 1, 3); }

/* mirrorModeSet(cluster, pool, mode): 0 disabled, 1 image, 2 pool (rbd_mirror_mode_t). */
static napi_value js_mirror_mode_set(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_MIRROR_MODE_SET, "rbd_mirror_mode_set", 1, 1); }
/* mirrorModeGet(cluster, pool) → 'disabled' | 'image' | 'pool' */
static napi_value js_mirror_mode_get(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_MIRROR_MODE_GET, "rbd_mirror_mode_get", 1, 0); }
/* mirrorSiteNameSet(cluster, name): the cluster's site name, as peers see it. */
static napi_value js_mirror_site_name_set(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_MIRROR_SITE_NAME_SET, "rbd_mirror_site_name_set", 1, 0); }
/* mirrorBootstrapCreate(cluster, pool) → a token another cluster imports (it holds a key: never logged). */
static napi_value js_mirror_bootstrap_create(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_MIRROR_BOOTSTRAP_CREATE, "rbd_mirror_peer_bootstrap_create", 1, 0); }
/* mirrorBootstrapImport(cluster, pool, token, direction): 0 rx-only, 1 tx-only, 2 rx-tx. */
static napi_value js_mirror_bootstrap_import(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_MIRROR_BOOTSTRAP_IMPORT, "rbd_mirror_peer_bootstrap_import", 2, 1); }
/* mirrorPeers(cluster, pool) → [{ uuid, siteName, mirrorUuid, direction }] */
static napi_value js_mirror_peer_list(napi_env env, napi_callback_info info) { return cluster_job(env, info, OP_MIRROR_PEER_LIST, "rbd_mirror_peer_site_list", 1, 0); }
/* mirrorEnable(image, mode): 0 journal, 1 snapshot (rbd_mirror_image_mode_t). */
static napi_value js_mirror_enable(napi_env env, napi_callback_info info) { return image_job(env, info, OP_MIRROR_ENABLE, "rbd_mirror_image_enable2", 0, 1); }
/* mirrorDisable(image, force) */
static napi_value js_mirror_disable(napi_env env, napi_callback_info info) { return image_job(env, info, OP_MIRROR_DISABLE, "rbd_mirror_image_disable", 0, 1); }
/* mirrorPromote(image, force) */
static napi_value js_mirror_promote(napi_env env, napi_callback_info info) { return image_job(env, info, OP_MIRROR_PROMOTE, "rbd_mirror_image_promote", 0, 1); }
static napi_value js_mirror_demote(napi_env env, napi_callback_info info) { return image_job(env, info, OP_MIRROR_DEMOTE, "rbd_mirror_image_demote", 0, 0); }
static napi_value js_mirror_resync(napi_env env, napi_callback_info info) { return image_job(env, info, OP_MIRROR_RESYNC, "rbd_mirror_image_resync", 0, 0); }
/* mirrorInfo(image) → { globalId, state, primary, mode } */
static napi_value js_mirror_info(napi_env env, napi_callback_info info) { return image_job(env, info, OP_MIRROR_INFO, "rbd_mirror_image_get_info", 0, 0); }
/* mirrorStatus(image) → { globalId, state, primary, mode, sites: [{ mirrorUuid, state, description, lastUpdate, up }] } */
static napi_value js_mirror_status(napi_env env, napi_callback_info info) { return image_job(env, info, OP_MIRROR_STATUS, "rbd_mirror_image_get_global_status", 0, 0); }
/* mirrorSnapshot(image) → the new mirror snapshot's id */
static napi_value js_mirror_snapshot(napi_env env, napi_callback_info info) { return image_job(env, info, OP_MIRROR_SNAPSHOT, "rbd_mirror_image_create_snapshot", 0, 0); }

/* ---- block I/O: librbd's aio, completions through the image's thread-safe function ---- */

typedef struct aio {
  image_t *img;
  napi_deferred deferred;
  napi_ref buffer; /* the Buffer read into or written from, alive until the completion */
  rbd_completion_t c;
  ssize_t rc;
  const char *what;
  int returns_count; /* a read resolves with the bytes read */
} aio_t;

/* librbd's callback, on one of its threads: hand the request to the event loop. */
static void aio_done(rbd_completion_t c, void *arg) {
  aio_t *a = arg;
  a->rc = rbd_aio_get_return_value(c);
  napi_call_threadsafe_function(a->img->tsfn, a, napi_tsfn_nonblocking);
}

/* Settles a request's promise and frees it, on the event loop. */
static void aio_finish(napi_env env, aio_t *a) {
  rbd_aio_release(a->c);
  if (a->rc < 0) napi_reject_deferred(env, a->deferred, errno_error(env, a->what, (int)a->rc));
  else napi_resolve_deferred(env, a->deferred, a->returns_count ? number(env, (double)a->rc) : undefined(env));
  if (a->buffer) napi_delete_reference(env, a->buffer);
  if (--a->img->pending == 0) napi_unref_threadsafe_function(env, a->img->tsfn);
  free(a);
}

/* The thread-safe function's call (env NULL: the environment is going away; only free). */
static void aio_deliver(napi_env env, napi_value js_cb, void *context, void *data) {
  aio_t *a = data;
  if (env) return aio_finish(env, a);
  rbd_aio_release(a->c);
  free(a);
}

typedef enum { AIO_READ, AIO_WRITE, AIO_FLUSH, AIO_DISCARD, AIO_WRITE_ZEROES } aio_op_t;

/*
 * aioRead(image, offset, buffer) → bytes read; aioWrite(image, offset, buffer);
 * aioFlush(image); aioDiscard(image, offset, length); aioWriteZeroes(image, offset, length).
 */
static napi_value aio_submit(napi_env env, napi_callback_info info, aio_op_t op, size_t want, const char *what) {
  napi_value argv[3];
  if (!args(env, info, want, argv)) return NULL;
  image_t *img = image_of(env, argv[0]);
  if (!img) return NULL;
  if (img->closed || img->closing) return rejected(env, what, -EBADF);
  void *data = NULL;
  size_t len = 0;
  if (op == AIO_READ || op == AIO_WRITE) {
    if (napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok) {
      napi_throw_type_error(env, NULL, "buffer must be a Buffer");
      return NULL;
    }
  }
  aio_t *a = calloc(1, sizeof *a);
  if (!a) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  a->img = img;
  a->what = what;
  a->returns_count = op == AIO_READ;
  int rc = rbd_aio_create_completion(a, aio_done, &a->c);
  if (rc < 0) {
    free(a);
    return rejected(env, what, rc);
  }
  uint64_t off = want > 1 ? u64_arg(env, argv[1]) : 0;
  napi_value promise;
  napi_create_promise(env, &a->deferred, &promise);
  if (data) napi_create_reference(env, argv[2], 1, &a->buffer);
  if (img->pending++ == 0) napi_ref_threadsafe_function(env, img->tsfn);
  switch (op) {
    case AIO_READ: rc = rbd_aio_read(img->rbd, off, len, data, a->c); break;
    case AIO_WRITE: rc = rbd_aio_write(img->rbd, off, len, data, a->c); break;
    case AIO_FLUSH: rc = rbd_aio_flush(img->rbd, a->c); break;
    case AIO_DISCARD: rc = rbd_aio_discard(img->rbd, off, u64_arg(env, argv[2]), a->c); break;
    case AIO_WRITE_ZEROES: rc = rbd_aio_write_zeroes(img->rbd, off, u64_arg(env, argv[2]), a->c, 0, 0); break;
  }
  if (rc < 0) { /* not submitted: the callback never runs */
    a->rc = rc;
    aio_finish(env, a);
  }
  return promise;
}

static napi_value js_aio_read(napi_env env, napi_callback_info info) { return aio_submit(env, info, AIO_READ, 3, "rbd_aio_read"); }
static napi_value js_aio_write(napi_env env, napi_callback_info info) { return aio_submit(env, info, AIO_WRITE, 3, "rbd_aio_write"); }
static napi_value js_aio_flush(napi_env env, napi_callback_info info) { return aio_submit(env, info, AIO_FLUSH, 1, "rbd_aio_flush"); }
static napi_value js_aio_discard(napi_env env, napi_callback_info info) { return aio_submit(env, info, AIO_DISCARD, 3, "rbd_aio_discard"); }
static napi_value js_aio_write_zeroes(napi_env env, napi_callback_info info) { return aio_submit(env, info, AIO_WRITE_ZEROES, 3, "rbd_aio_write_zeroes"); }

/* ---- the NBD data plane's backend (native/nbd_backend.h) ---- */

static void plane_acquire(void *ctx) { atomic_fetch_add(&((image_t *)ctx)->planes, 1); }
static void plane_release(void *ctx) { atomic_fetch_sub(&((image_t *)ctx)->planes, 1); }

/* librbd's callback: hand the result to the data plane (which only queues it). */
static void plane_done(rbd_completion_t c, void *arg) {
  nbd_backend_io_t *io = arg;
  int64_t rc = rbd_aio_get_return_value(c);
  rbd_aio_release(c);
  io->done(io, rc);
}

/* A completion for io, or a negative errno. */
static int plane_completion(nbd_backend_io_t *io, rbd_completion_t *c) { return rbd_aio_create_completion(io, plane_done, c); }

/* Submits with `rc` the result of the rbd_aio_* call: on failure the completion is released (its callback never runs). */
static int plane_submitted(int rc, rbd_completion_t c) {
  if (rc < 0) rbd_aio_release(c);
  return rc < 0 ? rc : 0;
}

static int plane_read(void *ctx, uint64_t off, size_t len, void *buf, nbd_backend_io_t *io) {
  rbd_completion_t c;
  int rc = plane_completion(io, &c);
  return rc < 0 ? rc : plane_submitted(rbd_aio_read(((image_t *)ctx)->rbd, off, len, buf, c), c);
}

static int plane_write(void *ctx, uint64_t off, size_t len, const void *buf, nbd_backend_io_t *io) {
  rbd_completion_t c;
  int rc = plane_completion(io, &c);
  return rc < 0 ? rc : plane_submitted(rbd_aio_write(((image_t *)ctx)->rbd, off, len, buf, c), c);
}

static int plane_flush(void *ctx, nbd_backend_io_t *io) {
  rbd_completion_t c;
  int rc = plane_completion(io, &c);
  return rc < 0 ? rc : plane_submitted(rbd_aio_flush(((image_t *)ctx)->rbd, c), c);
}

static int plane_discard(void *ctx, uint64_t off, uint64_t len, nbd_backend_io_t *io) {
  rbd_completion_t c;
  int rc = plane_completion(io, &c);
  return rc < 0 ? rc : plane_submitted(rbd_aio_discard(((image_t *)ctx)->rbd, off, len, c), c);
}

/* Without may_punch, thick-provisioned zeros: the objects stay allocated. */
static int plane_write_zeroes(void *ctx, uint64_t off, uint64_t len, int may_punch, nbd_backend_io_t *io) {
  rbd_completion_t c;
  int rc = plane_completion(io, &c);
  int flags = may_punch ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;
  return rc < 0 ? rc : plane_submitted(rbd_aio_write_zeroes(((image_t *)ctx)->rbd, off, len, c, flags, 0), c);
}

typedef struct plane_extents {
  int (*extent)(void *arg, uint64_t offset, uint64_t length, int allocated);
  void *arg;
} plane_extents_t;

static int plane_extent(uint64_t off, size_t len, int exists, void *arg) {
  plane_extents_t *p = arg;
  return p->extent(p->arg, off, len, exists);
}

/* Allocated objects (the object map, as the driver's blockStatus reads it) are data; the rest reads as zeros. */
static int plane_block_status(void *ctx, uint64_t off, uint64_t len, int (*extent)(void *, uint64_t, uint64_t, int), void *arg) {
  plane_extents_t p = { extent, arg };
  return rbd_diff_iterate2(((image_t *)ctx)->rbd, NULL, off, len, 1, 1, plane_extent, &p);
}

static int plane_flush_sync(void *ctx) { return rbd_flush(((image_t *)ctx)->rbd); }

/*
 * dataPlaneBackend(image) → the external nbdServe({ backend }) serves the
 * image through. The image must stay open while a connection uses it: closing
 * it is refused (EBUSY) until the data plane has released it.
 */
static napi_value js_data_plane_backend(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!args(env, info, 1, argv)) return NULL;
  image_t *img = image_of(env, argv[0]);
  if (!img) return NULL;
  if (img->closed || img->closing) {
    napi_throw_error(env, "EBADF", "dataPlaneBackend: the image is closed");
    return NULL;
  }
  img->plane = (nbd_backend_t){
    .version = NBD_BACKEND_VERSION, .ctx = img, .acquire = plane_acquire, .release = plane_release,
    .aio_read = plane_read, .aio_write = plane_write, .aio_flush = plane_flush, .aio_discard = plane_discard,
    .aio_write_zeroes = plane_write_zeroes, .block_status = plane_block_status, .flush_sync = plane_flush_sync,
  };
  return tagged_external(env, &img->plane, NULL, &NBD_BACKEND_TAG);
}

/*
 * clientAddress(cluster) → this client's address as the cluster's blocklist
 * names it (`ip:port/nonce`, rados_getaddrs: local, no round trip). A client
 * whose exclusive lock another broke is blocklisted under it.
 */
static napi_value js_client_address(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!args(env, info, 1, argv)) return NULL;
  cluster_t *cl = cluster_of(env, argv[0]);
  if (!cl) return NULL;
  if (!cl->connected) {
    napi_throw_error(env, "ENOTCONN", "rados_getaddrs: not connected");
    return NULL;
  }
  char *addrs = NULL;
  int rc = rados_getaddrs(cl->rados, &addrs);
  if (rc < 0) {
    napi_throw(env, errno_error(env, "rados_getaddrs", rc));
    return NULL;
  }
  napi_value out = string(env, addrs);
  rados_buffer_free(addrs);
  return out;
}

static void state_finalize(napi_env env, void *data, void *hint) { free(data); }

static napi_value init(napi_env env, napi_value exports) {
  addon_state_t *st = calloc(1, sizeof *st);
  napi_value name;
  if (!st) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  napi_create_string_utf8(env, "rbd-call", NAPI_AUTO_LENGTH, &name);
  napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, st, job_done, &st->done);
  napi_unref_threadsafe_function(env, st->done);
  napi_set_instance_data(env, st, state_finalize, NULL);
#define FN(name, fn) { name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL }
  napi_property_descriptor props[] = {
    FN("connect", js_connect), FN("shutdown", js_shutdown), FN("monCommand", js_mon_command),
    FN("createImage", js_create), FN("cloneImage", js_clone), FN("removeImage", js_remove),
    FN("renameImage", js_rename), FN("removeObject", js_remove_object), FN("statObject", js_stat_object), FN("imageId", js_image_id), FN("listImages", js_list), FN("poolStats", js_pool_stats), FN("openImage", js_open),
    FN("closeImage", js_close), FN("stat", js_stat), FN("resize", js_resize), FN("flatten", js_flatten),
    FN("snapCreate", js_snap_create), FN("snapRemove", js_snap_remove), FN("snapRemoveById", js_snap_remove_by_id),
    FN("snapRollback", js_snap_rollback),
    FN("snapRename", js_snap_rename),
    FN("snapProtect", js_snap_protect), FN("snapUnprotect", js_snap_unprotect),
    FN("snapIsProtected", js_snap_is_protected), FN("snapList", js_snap_list), FN("parent", js_parent),
    FN("children", js_children), FN("diffIterate", js_diff),
    FN("metadataSet", js_meta_set), FN("metadataRemove", js_meta_remove), FN("metadataList", js_meta_list),
    FN("aioRead", js_aio_read), FN("aioWrite", js_aio_write), FN("aioFlush", js_aio_flush),
    FN("aioDiscard", js_aio_discard), FN("aioWriteZeroes", js_aio_write_zeroes),
    FN("dataPlaneBackend", js_data_plane_backend), FN("clientAddress", js_client_address),
    FN("mirrorModeSet", js_mirror_mode_set), FN("mirrorModeGet", js_mirror_mode_get), FN("mirrorSiteNameSet", js_mirror_site_name_set),
    FN("mirrorBootstrapCreate", js_mirror_bootstrap_create), FN("mirrorBootstrapImport", js_mirror_bootstrap_import),
    FN("mirrorPeers", js_mirror_peer_list), FN("mirrorEnable", js_mirror_enable), FN("mirrorDisable", js_mirror_disable),
    FN("mirrorPromote", js_mirror_promote), FN("mirrorDemote", js_mirror_demote), FN("mirrorResync", js_mirror_resync),
    FN("mirrorInfo", js_mirror_info), FN("mirrorStatus", js_mirror_status), FN("mirrorSnapshot", js_mirror_snapshot),
  };
#undef FN
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
