/*
 * Synchronous mirrors on the native data plane (nbd_mirror.c): a mirrored
 * volume's connections write both to its file and, over plain NBD
 * connections, to its copy on another process's export (issue 16).
 */
#ifndef BASALT_NBD_MIRROR_H
#define BASALT_NBD_MIRROR_H
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>

/* One mirrored volume: the byte-range locks its writers share, and who hears of the copy's failures. */
typedef struct mirror_group mirror_group_t;

/* One negotiated connection to the copy's export: requests are sent one after the other, and many may wait for their replies. */
typedef struct mirror_chan mirror_chan_t;

/* One request sent on a channel, waiting for its reply (the caller's, on its stack, from mirror_send to mirror_wait). */
typedef struct mirror_req {
  mirror_chan_t *ch;
  uint64_t cookie;
  int done, error;
  pthread_cond_t cond;
  struct mirror_req *next;
} mirror_req_t;

/* The group an nbdMirrorGroup external stands for, acquired (NULL with an exception pending when v is not one). */
mirror_group_t *mirror_group_acquire(napi_env env, napi_value v);
void mirror_group_release(mirror_group_t *g);

/* Holds [start, end) once no other holder overlaps it (waiting meanwhile); an id for mirror_release. */
uint64_t mirror_hold(mirror_group_t *g, uint64_t start, uint64_t end);
void mirror_release(mirror_group_t *g, uint64_t id);

/* Tells JavaScript (the group's onFailure) that the copy refused a request, with its errno; the first failure of a connection only. */
void mirror_failed(mirror_group_t *g, int err);

/* Channels over dup()s of the given sockets (made blocking, with a receive timeout); NULL when none could be made. */
mirror_chan_t *mirror_chans_open(const int *socks, int count);
void mirror_chans_close(mirror_chan_t *chans, int count);

/*
 * Sends one request (payload: a WRITE's data) on one of `chans` that is not
 * broken, as q: 0, then mirror_wait(q) must follow; EIO when every channel is
 * broken (the copy is lost; q is not sent).
 */
int mirror_send(mirror_chan_t *chans, int count, mirror_req_t *q, uint16_t type, uint16_t flags, uint64_t offset, uint32_t length, const void *payload);

/*
 * Waits for q's reply (polling for up to poll_ns before blocking, when this
 * thread reads the channel): 0, or the errno the copy answered (EIO when the
 * connection broke).
 */
int mirror_wait(mirror_req_t *q, int64_t poll_ns);

void nbd_mirror_register(napi_env env, napi_value exports);
#endif
