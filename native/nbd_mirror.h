/*
 * Synchronous mirrors on the native data plane (nbd_mirror.c): a mirrored
 * volume's connections write both to its file and, over plain NBD
 * connections, to its copy on another process's export (issue 16).
 */
#ifndef BASALT_NBD_MIRROR_H
#define BASALT_NBD_MIRROR_H
#include <node_api.h>
#include <stdint.h>

/* One mirrored volume: the byte-range locks its writers share, and who hears of the copy's failures. */
typedef struct mirror_group mirror_group_t;

/* One negotiated connection to the copy's export: one request at a time on it. */
typedef struct mirror_chan mirror_chan_t;

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
 * Sends one request (payload: a WRITE's data) on a free channel of `chans`
 * and returns it, still held, for mirror_wait; NULL when every channel is
 * broken (the copy is lost: EIO).
 */
mirror_chan_t *mirror_send(mirror_chan_t *chans, int count, uint16_t type, uint16_t flags, uint64_t offset, uint32_t length, const void *payload);

/* Waits for the reply of the request sent on `ch` and lets the channel go: 0, or the errno the copy answered (EIO when the connection broke). */
int mirror_wait(mirror_chan_t *ch);

void nbd_mirror_register(napi_env env, napi_value exports);
#endif
