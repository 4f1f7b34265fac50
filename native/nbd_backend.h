/*
 * An asynchronous block backend the NBD data plane (nbd_dataplane.c) serves
 * instead of a file: the interface between the main addon and an optional
 * one (native/rbd: librbd's images) that the main addon does not link.
 *
 * The optional addon hands JavaScript an external tagged NBD_BACKEND_TAG
 * whose pointer is an nbd_backend_t; nbdServe({ backend }) checks the tag and
 * NBD_BACKEND_VERSION and calls through the table from its own threads, so no
 * request crosses the event loop.
 *
 * Contract of every member (ctx is the table's own):
 *  - acquire(ctx): called on the JavaScript thread by nbdServe, before any
 *    other call; the backend stays valid (its image open) until release.
 *  - release(ctx): called once per acquire, on a data-plane thread, after
 *    every submitted request has completed and nothing else will be called.
 *  - aio_*: submit one request; return 0 (io->done will be called exactly
 *    once, on any thread, maybe before the call returns) or a negative errno
 *    (nothing was submitted; io->done is never called). io->done receives the
 *    request's result: >= 0 on success (a read: the bytes read; the rest of
 *    the buffer is then undefined), else a negative errno. io->done must not
 *    block for long (it runs on the backend's own threads): the data plane
 *    only queues the request there. Calls may overlap, from any threads.
 *  - aio_flush covers every write submitted before it (completed or not).
 *  - aio_write_zeroes with may_punch 0 keeps the range allocated.
 *  - block_status: synchronous (a data-plane worker waits for it); calls
 *    extent(arg, offset, length, allocated) for the runs it knows in
 *    [offset, offset+length), in increasing order (they may start before
 *    offset or end past it; gaps are unallocated and read as zeros).
 *    0 or a negative errno.
 *  - flush_sync: synchronous flush (the end of a connection the client
 *    closed cleanly). 0 or a negative errno.
 */
#ifndef BASALT_NBD_BACKEND_H
#define BASALT_NBD_BACKEND_H
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

#define NBD_BACKEND_VERSION 1

/* Tells a backend's external from any other (both addons compile this). */
static const napi_type_tag NBD_BACKEND_TAG = { 0x6e62646261636b65ULL, 0x6e64766572303031ULL };

/* One request in flight; the data plane embeds it in its own request. */
typedef struct nbd_backend_io {
  void (*done)(struct nbd_backend_io *io, int64_t result);
} nbd_backend_io_t;

typedef struct nbd_backend {
  uint32_t version; /* NBD_BACKEND_VERSION */
  void *ctx;
  void (*acquire)(void *ctx);
  void (*release)(void *ctx);
  int (*aio_read)(void *ctx, uint64_t offset, size_t length, void *buf, nbd_backend_io_t *io);
  int (*aio_write)(void *ctx, uint64_t offset, size_t length, const void *buf, nbd_backend_io_t *io);
  int (*aio_flush)(void *ctx, nbd_backend_io_t *io);
  int (*aio_discard)(void *ctx, uint64_t offset, uint64_t length, nbd_backend_io_t *io);
  int (*aio_write_zeroes)(void *ctx, uint64_t offset, uint64_t length, int may_punch, nbd_backend_io_t *io);
  int (*block_status)(void *ctx, uint64_t offset, uint64_t length, int (*extent)(void *arg, uint64_t offset, uint64_t length, int allocated), void *arg);
  int (*flush_sync)(void *ctx);
} nbd_backend_t;

#endif
