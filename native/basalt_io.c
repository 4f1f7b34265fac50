/*
 * The file driver's system calls that Node's fs lacks or makes slow, as a
 * Node-API addon built from source at install (node-gyp):
 *
 *   preadNowait(fd, buf, offset)   preadv2(RWF_NOWAIT): bytes read from the page cache, or -1
 *   pwriteNowait(fd, bufs, offset) pwritev2(RWF_NOWAIT) of one Buffer or an array: bytes written, or -1
 *   seekData(fd, offset)           lseek(SEEK_DATA): next data offset, or -errno (-ENXIO: no data past offset)
 *   seekHole(fd, offset)           lseek(SEEK_HOLE): next hole offset, or -errno
 *   fallocate(fd, mode, offset, length)  0 or the errno
 *   fiemap(fd, offset, length)     FS_IOC_FIEMAP: Float64Array of [logical, physical, length, flags] per extent, or -errno
 *   tryLockExclusive(fd)           flock(LOCK_EX | LOCK_NB): 0, or the errno (EWOULDBLOCK: another open file holds it)
 *
 * The NOWAIT calls are the data path's fast path: they serve a request on the
 * event loop when it needs no disk wait, and say "would block" otherwise (the
 * caller then goes through the thread pool). A direct call costs a fraction of
 * an FFI call's argument marshalling, which dominated the NBD server's profile.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <node_api.h>
#include <sys/uio.h>
#include <unistd.h>

#include "nbd_dataplane.h"
#include "nbd_mirror.h"

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

#define MAX_IOV 64

static napi_value number(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

static int args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "missing arguments");
    return 0;
  }
  return 1;
}

static int64_t int_arg(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return (int64_t)d;
}

static napi_value pread_nowait(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!args(env, info, 3, argv)) return NULL;
  void *data;
  size_t len;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "buf must be a Buffer");
    return NULL;
  }
  struct iovec iov = { data, len };
  ssize_t n = preadv2((int)int_arg(env, argv[0]), &iov, 1, int_arg(env, argv[2]), RWF_NOWAIT);
  return number(env, n >= 0 ? (double)n : -1);
}

static napi_value pwrite_nowait(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!args(env, info, 3, argv)) return NULL;
  struct iovec iov[MAX_IOV];
  int count = 0;
  bool is_array = false;
  napi_is_array(env, argv[1], &is_array);
  if (is_array) {
    uint32_t n = 0;
    napi_get_array_length(env, argv[1], &n);
    if (n > MAX_IOV) return number(env, -1);
    for (uint32_t i = 0; i < n; i++) {
      napi_value el;
      napi_get_element(env, argv[1], i, &el);
      if (napi_get_buffer_info(env, el, &iov[count].iov_base, &iov[count].iov_len) != napi_ok) {
        napi_throw_type_error(env, NULL, "bufs must hold Buffers");
        return NULL;
      }
      count++;
    }
  } else {
    if (napi_get_buffer_info(env, argv[1], &iov[0].iov_base, &iov[0].iov_len) != napi_ok) {
      napi_throw_type_error(env, NULL, "bufs must be a Buffer or an array of Buffers");
      return NULL;
    }
    count = 1;
  }
  ssize_t n = pwritev2((int)int_arg(env, argv[0]), iov, count, int_arg(env, argv[2]), RWF_NOWAIT);
  if (n >= 0) return number(env, (double)n);
  /* EAGAIN: would block; anything else (EOPNOTSUPP on kernels or filesystems without it): -2. */
  return number(env, errno == EAGAIN ? -1 : -2);
}

/*
 * The errno comes back negated, never folded into one "none": only ENXIO
 * means there is no data past the offset. Any other failure (ESPIPE, EINVAL
 * from a filesystem without SEEK_DATA, EIO) says nothing about the data, and
 * the caller must treat the range as data, never as a hole that reads zeros.
 */
static napi_value seek(napi_env env, napi_callback_info info, int whence) {
  napi_value argv[2];
  if (!args(env, info, 2, argv)) return NULL;
  off_t r = lseek((int)int_arg(env, argv[0]), int_arg(env, argv[1]), whence);
  return number(env, r >= 0 ? (double)r : -(double)errno);
}

static napi_value seek_data(napi_env env, napi_callback_info info) { return seek(env, info, SEEK_DATA); }
static napi_value seek_hole(napi_env env, napi_callback_info info) { return seek(env, info, SEEK_HOLE); }

static napi_value do_fallocate(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!args(env, info, 4, argv)) return NULL;
  int r = fallocate((int)int_arg(env, argv[0]), (int)int_arg(env, argv[1]), int_arg(env, argv[2]), int_arg(env, argv[3]));
  return number(env, r == 0 ? 0 : errno);
}

/*
 * posix_fadvise(fd, offset, length, advice): 0 or the error number (the call
 * returns it rather than setting errno). DONTNEED starts writeback of the
 * range's dirty pages and drops its clean ones from the page cache.
 */
static napi_value do_fadvise(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!args(env, info, 4, argv)) return NULL;
  return number(env, posix_fadvise((int)int_arg(env, argv[0]), (off_t)int_arg(env, argv[1]), (off_t)int_arg(env, argv[2]), (int)int_arg(env, argv[3])));
}

/*
 * An exclusive lock on the open file, without waiting. The kernel drops it
 * when the last descriptor of that open file closes, and so when its process
 * dies however it dies: what the file coordinator's locks need.
 */
static napi_value try_lock_exclusive(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!args(env, info, 1, argv)) return NULL;
  return number(env, flock((int)int_arg(env, argv[0]), LOCK_EX | LOCK_NB) == 0 ? 0 : errno);
}

/* Extents asked for per FS_IOC_FIEMAP call. */
#define FIEMAP_BATCH 512

/*
 * The extent map of [offset, offset+length) of a file, as FS_IOC_FIEMAP gives
 * it (no FIEMAP_FLAG_SYNC: the caller flushes the file first, off the event
 * loop). Two files whose extents sit at the same physical place share those
 * blocks (a reflink): their bytes there are the same. A metadata walk only.
 */
static napi_value do_fiemap(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!args(env, info, 3, argv)) return NULL;
  int fd = (int)int_arg(env, argv[0]);
  uint64_t pos = (uint64_t)int_arg(env, argv[1]);
  uint64_t end = pos + (uint64_t)int_arg(env, argv[2]);
  struct fiemap *fm = calloc(1, sizeof *fm + FIEMAP_BATCH * sizeof(struct fiemap_extent));
  double *out = NULL;
  size_t count = 0, cap = 0;
  int err = fm ? 0 : ENOMEM;
  while (!err && pos < end) {
    memset(fm, 0, sizeof *fm);
    fm->fm_start = pos;
    fm->fm_length = end - pos;
    fm->fm_extent_count = FIEMAP_BATCH;
    if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0) { err = errno; break; }
    if (fm->fm_mapped_extents == 0) break;
    if (count + fm->fm_mapped_extents > cap) {
      size_t want = (count + fm->fm_mapped_extents) * 2;
      double *grown = realloc(out, want * 4 * sizeof(double));
      if (!grown) { err = ENOMEM; break; }
      out = grown;
      cap = want;
    }
    struct fiemap_extent *last = NULL;
    for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
      struct fiemap_extent *e = &fm->fm_extents[i];
      out[4 * count] = (double)e->fe_logical;
      out[4 * count + 1] = (double)e->fe_physical;
      out[4 * count + 2] = (double)e->fe_length;
      out[4 * count + 3] = (double)e->fe_flags;
      count++;
      last = e;
    }
    if ((last->fe_flags & FIEMAP_EXTENT_LAST) || last->fe_logical + last->fe_length <= pos) break;
    pos = last->fe_logical + last->fe_length;
  }
  free(fm);
  if (err) {
    free(out);
    return number(env, -(double)err);
  }
  void *data;
  napi_value buffer, array;
  napi_create_arraybuffer(env, count * 4 * sizeof(double), &data, &buffer);
  if (count) memcpy(data, out, count * 4 * sizeof(double));
  free(out);
  napi_create_typedarray(env, napi_float64_array, count * 4, buffer, 0, &array);
  return array;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "preadNowait", NULL, pread_nowait, NULL, NULL, NULL, napi_enumerable, NULL },
    { "pwriteNowait", NULL, pwrite_nowait, NULL, NULL, NULL, napi_enumerable, NULL },
    { "seekData", NULL, seek_data, NULL, NULL, NULL, napi_enumerable, NULL },
    { "seekHole", NULL, seek_hole, NULL, NULL, NULL, napi_enumerable, NULL },
    { "fallocate", NULL, do_fallocate, NULL, NULL, NULL, napi_enumerable, NULL },
    { "fiemap", NULL, do_fiemap, NULL, NULL, NULL, napi_enumerable, NULL },
    { "fadvise", NULL, do_fadvise, NULL, NULL, NULL, napi_enumerable, NULL },
    { "tryLockExclusive", NULL, try_lock_exclusive, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  nbd_dataplane_register(env, exports);
  nbd_mirror_register(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
