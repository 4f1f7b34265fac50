/*
 * Synchronous mirrors on the native data plane (issue 16).
 *
 * A volume under synchronous replication is served through a mirror
 * (src/volume/live-move.ts): reads from its file, every write, zero and trim
 * to both the file and its copy, acknowledged once both have it. When the
 * copy's export is reachable over a plain connection (a Unix socket on the
 * same machine), the mirror's connections are served here instead of on the
 * event loop: the worker that read a WRITE sends it on one of the
 * connection's channels to the copy, writes its file meanwhile, then waits
 * for the copy's reply, so one round trip to the copy is all a write costs
 * over an unmirrored one.
 *
 * Group: one per mirrored volume (nbdMirrorGroup), shared by its
 * connections and by the event loop's side of the mirror (the first copy and
 * connections served there), which hold byte ranges through
 * nbdMirrorHold/nbdMirrorRelease without waiting. A write holds its range
 * from before either side is written until both are, so overlapping writes
 * land in the same order on both copies, and a chunk the first copy reads
 * and writes is never overtaken by a write.
 *
 * Channels: negotiated NBD connections to the copy's export (simple
 * replies), dup()ed from the sockets JavaScript negotiated. Requests are sent
 * one after the other on a channel, and many may wait for their replies: the
 * first waiter to find nobody reading reads replies for all of them until its
 * own comes, then hands the reading on (leader and followers), so at queue
 * depth 1 the thread that sent a request reads its reply itself. A channel
 * that fails (a send or receive error, a reply to no request sent, no reply
 * within MIRROR_TIMEOUT_S) is broken for good and its waiting requests are
 * answered EIO; when every channel is broken, every mirrored request fails
 * with EIO. The copy's own errors (ENOSPC from a full one) are the request's.
 * Any failure is reported once per group to JavaScript (onFailure(errno)),
 * which rebuilds the mirror.
 *
 *   nbdMirrorGroup(onFailure)            -> group
 *   nbdMirrorHold(group, start, end)     -> id, or 0 when another holder overlaps (try again); throws ENOMEM
 *   nbdMirrorRelease(group, id)
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "nbd_dataplane.h"
#include "nbd_mirror.h"

#define REQUEST_MAGIC 0x25609513u
#define SIMPLE_REPLY_MAGIC 0x67446698u
#define CMD_DISC 2
/* The longest a channel waits to send a request or for its reply. */
#define MIRROR_TIMEOUT_S 30
#define MAX_CHANNELS 16

static const napi_type_tag MIRROR_TAG = { 0x6e62646d6972726fULL, 0x7267726f75703031ULL };

typedef struct held {
  uint64_t id, start, end;
} held_t;

struct mirror_group {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  held_t *held;
  size_t count, cap;
  uint64_t next_id;
  atomic_int refs;   /* the JavaScript external + each connection + on_failure until it is finalized */
  atomic_int failed; /* a failure was reported */
  /* Acquired by the external and each connection; Node may also finalize it at its exit, before them: then tsfn_alive is 0. */
  napi_threadsafe_function on_failure;
  atomic_int tsfn_alive;
};

struct mirror_chan {
  int sock;
  pthread_mutex_t send_lock; /* one request on the wire at a time */
  pthread_mutex_t lock;      /* guards what follows */
  int broken;
  int reading;               /* a waiter is reading replies (the leader) */
  uint64_t cookie;
  mirror_req_t *waiting;     /* requests sent and not yet answered */
};

/* ---- the group: byte-range locks ---- */

static int clashes(const mirror_group_t *g, uint64_t start, uint64_t end) {
  for (size_t i = 0; i < g->count; i++) {
    if (g->held[i].start < end && start < g->held[i].end) return 1;
  }
  return 0;
}

/* Adds a holder (lock held); 0 when out of memory. */
static uint64_t add_held(mirror_group_t *g, uint64_t start, uint64_t end) {
  if (g->count == g->cap) {
    size_t cap = g->cap ? g->cap * 2 : 64;
    held_t *h = realloc(g->held, cap * sizeof *h);
    if (!h) return 0;
    g->held = h;
    g->cap = cap;
  }
  uint64_t id = ++g->next_id;
  g->held[g->count++] = (held_t){ id, start, end };
  return id;
}

/* Waits until no holder overlaps [start, end), then holds it: its id, or 0 when out of memory. */
uint64_t mirror_hold(mirror_group_t *g, uint64_t start, uint64_t end) {
  pthread_mutex_lock(&g->lock);
  while (clashes(g, start, end)) pthread_cond_wait(&g->cond, &g->lock);
  uint64_t id = add_held(g, start, end);
  pthread_mutex_unlock(&g->lock);
  return id;
}

void mirror_release(mirror_group_t *g, uint64_t id) {
  pthread_mutex_lock(&g->lock);
  for (size_t i = 0; i < g->count; i++) {
    if (g->held[i].id == id) {
      g->held[i] = g->held[--g->count];
      pthread_cond_broadcast(&g->cond);
      break;
    }
  }
  pthread_mutex_unlock(&g->lock);
}

void mirror_failed(mirror_group_t *g, int err) {
  if (atomic_exchange(&g->failed, 1) || !atomic_load(&g->tsfn_alive)) return;
  napi_call_threadsafe_function(g->on_failure, (void *)(intptr_t)err, napi_tsfn_nonblocking);
}

static void unref_group(mirror_group_t *g) {
  if (atomic_fetch_sub(&g->refs, 1) != 1) return;
  pthread_mutex_destroy(&g->lock);
  pthread_cond_destroy(&g->cond);
  free(g->held);
  free(g);
}

/* on_failure's end: once every holder released it, or at Node's exit (before the holders, maybe). */
static void tsfn_finalized(napi_env env, void *data, void *hint) {
  mirror_group_t *g = data;
  atomic_store(&g->tsfn_alive, 0);
  unref_group(g);
}

void mirror_group_release(mirror_group_t *g) {
  if (atomic_load(&g->tsfn_alive)) napi_release_threadsafe_function(g->on_failure, napi_tsfn_release);
  unref_group(g);
}

mirror_group_t *mirror_group_acquire(napi_env env, napi_value v) {
  bool tagged = false;
  void *g = NULL;
  if (napi_check_object_type_tag(env, v, &MIRROR_TAG, &tagged) != napi_ok || !tagged || napi_get_value_external(env, v, &g) != napi_ok || !g) {
    napi_throw_type_error(env, NULL, "mirror must be a group made by nbdMirrorGroup");
    return NULL;
  }
  mirror_group_t *mg = g;
  atomic_fetch_add(&mg->refs, 1);
  if (atomic_load(&mg->tsfn_alive)) napi_acquire_threadsafe_function(mg->on_failure);
  return mg;
}

/* ---- channels ---- */

mirror_chan_t *mirror_chans_open(const int *socks, int count) {
  if (count < 1 || count > MAX_CHANNELS) return NULL;
  mirror_chan_t *chans = calloc((size_t)count, sizeof *chans);
  if (!chans) return NULL;
  struct timeval tv = { MIRROR_TIMEOUT_S, 0 };
  for (int i = 0; i < count; i++) {
    mirror_chan_t *ch = &chans[i];
    pthread_mutex_init(&ch->send_lock, NULL);
    pthread_mutex_init(&ch->lock, NULL);
    ch->sock = fcntl(socks[i], F_DUPFD_CLOEXEC, 0);
    if (ch->sock < 0) {
      ch->broken = 1;
      continue;
    }
    int fl = fcntl(ch->sock, F_GETFL);
    if (fl >= 0) fcntl(ch->sock, F_SETFL, fl & ~O_NONBLOCK);
    setsockopt(ch->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(ch->sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  return chans;
}

static void put_header(uint8_t h[28], uint16_t flags, uint16_t type, uint64_t cookie, uint64_t offset, uint32_t length) {
  uint32_t magic = htobe32(REQUEST_MAGIC);
  uint16_t f = htobe16(flags), t = htobe16(type);
  uint64_t c = htobe64(cookie), o = htobe64(offset);
  uint32_t l = htobe32(length);
  memcpy(h, &magic, 4);
  memcpy(h + 4, &f, 2);
  memcpy(h + 6, &t, 2);
  memcpy(h + 8, &c, 8);
  memcpy(h + 16, &o, 8);
  memcpy(h + 24, &l, 4);
}

/* Breaks a channel (its lock held): every request waiting on it is answered EIO, and every later one fails at once. */
static void break_chan(mirror_chan_t *ch) {
  if (!ch->broken) shutdown(ch->sock, SHUT_RDWR);
  ch->broken = 1;
  for (mirror_req_t *q = ch->waiting; q; q = q->next) {
    q->done = 1;
    q->error = EIO;
    pthread_cond_signal(&q->cond);
  }
  ch->waiting = NULL;
}

/* Takes q off its channel's list (lock held). */
static void unlist(mirror_chan_t *ch, mirror_req_t *q) {
  for (mirror_req_t **p = &ch->waiting; *p; p = &(*p)->next) {
    if (*p == q) {
      *p = q->next;
      return;
    }
  }
}

void mirror_chans_close(mirror_chan_t *chans, int count) {
  for (int i = 0; i < count; i++) {
    mirror_chan_t *ch = &chans[i];
    if (ch->sock >= 0) {
      if (!ch->broken) { /* a clean end: the copy's server flushes on NBD_CMD_DISC */
        uint8_t h[28];
        put_header(h, 0, CMD_DISC, 0, 0, 0);
        (void)send(ch->sock, h, sizeof h, MSG_NOSIGNAL);
      }
      close(ch->sock);
    }
    pthread_mutex_destroy(&ch->send_lock);
    pthread_mutex_destroy(&ch->lock);
  }
  free(chans);
}

int mirror_send(mirror_chan_t *chans, int count, mirror_req_t *q, uint16_t type, uint16_t flags, uint64_t offset, uint32_t length, const void *payload) {
  static atomic_uint next;
  unsigned first = atomic_fetch_add(&next, 1);
  for (int i = 0; i < count; i++) {
    mirror_chan_t *ch = &chans[(first + (unsigned)i) % (unsigned)count];
    pthread_mutex_lock(&ch->send_lock);
    pthread_mutex_lock(&ch->lock);
    if (ch->broken) {
      pthread_mutex_unlock(&ch->lock);
      pthread_mutex_unlock(&ch->send_lock);
      continue;
    }
    /* Listed before it is sent: its reply may come before the send returns. */
    q->ch = ch;
    q->cookie = ++ch->cookie;
    q->done = 0;
    q->error = 0;
    pthread_cond_init(&q->cond, NULL);
    q->next = ch->waiting;
    ch->waiting = q;
    pthread_mutex_unlock(&ch->lock);
    uint8_t h[28];
    put_header(h, flags, type, q->cookie, offset, length);
    struct iovec iov[2] = { { h, sizeof h }, { (void *)payload, payload ? length : 0 } };
    int failed = nbd_send_iov(ch->sock, iov, payload && length ? 2 : 1, 0) != 0;
    pthread_mutex_unlock(&ch->send_lock);
    if (failed) {
      pthread_mutex_lock(&ch->lock);
      break_chan(ch); /* answers q too: mirror_wait returns EIO */
      pthread_mutex_unlock(&ch->lock);
    }
    return 0;
  }
  return EIO;
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Reads one simple reply (polling for up to poll_ns first): 0, or -1 when the connection broke. */
static int read_reply(int sock, uint8_t r[16], int64_t poll_ns) {
  size_t got = 0;
  /* Polling first: the copy answers in a few tens of microseconds, less than waking a blocked thread costs on a VM. */
  for (int64_t start = poll_ns > 0 ? now_ns() : 0; poll_ns > 0 && got < 16;) {
    ssize_t n = recv(sock, r + got, 16 - got, MSG_DONTWAIT);
    if (n > 0) got += (size_t)n;
    else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return -1;
    else if (now_ns() - start > poll_ns) break;
  }
  while (got < 16) {
    ssize_t n = recv(sock, r + got, 16 - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    got += (size_t)n;
  }
  uint32_t magic;
  memcpy(&magic, r, 4);
  return be32toh(magic) == SIMPLE_REPLY_MAGIC ? 0 : -1;
}

/*
 * Leader and followers: the waiter that finds nobody reading the channel
 * reads its replies, handing each to its request, until its own comes; then
 * it passes the reading on to another waiter, if any. At queue depth 1 the
 * thread that sent a request reads its reply itself, with no hand-off.
 */
int mirror_wait(mirror_req_t *q, int64_t poll_ns) {
  mirror_chan_t *ch = q->ch;
  pthread_mutex_lock(&ch->lock);
  while (!q->done) {
    if (ch->reading) {
      pthread_cond_wait(&q->cond, &ch->lock);
      continue;
    }
    ch->reading = 1;
    while (!q->done) {
      pthread_mutex_unlock(&ch->lock);
      uint8_t r[16];
      int bad = read_reply(ch->sock, r, poll_ns);
      pthread_mutex_lock(&ch->lock);
      uint64_t cookie;
      uint32_t error;
      memcpy(&cookie, r + 8, 8);
      memcpy(&error, r + 4, 4);
      mirror_req_t *t = NULL;
      if (!bad) {
        for (t = ch->waiting; t && t->cookie != be64toh(cookie); t = t->next) {}
      }
      if (!t) { /* broken, or a reply to no request of ours */
        break_chan(ch);
        break;
      }
      unlist(ch, t);
      t->done = 1;
      /* NBD's error values are Linux's errno values; ESHUTDOWN (the copy's server is closing) is a lost copy. */
      t->error = (int)be32toh(error) == ESHUTDOWN ? EIO : (int)be32toh(error);
      if (t != q) pthread_cond_signal(&t->cond);
    }
    ch->reading = 0;
    if (ch->waiting) pthread_cond_signal(&ch->waiting->cond); /* the next leader */
  }
  int e = q->error;
  pthread_mutex_unlock(&ch->lock);
  pthread_cond_destroy(&q->cond);
  return e;
}

/* ---- JavaScript ---- */

static void call_on_failure(napi_env env, napi_value fn, void *context, void *data) {
  if (!env || !fn) return;
  napi_value arg, undef;
  napi_create_int32(env, (int32_t)(intptr_t)data, &arg);
  napi_get_undefined(env, &undef);
  napi_call_function(env, undef, fn, 1, &arg, NULL);
}

static void finalize_group(napi_env env, void *data, void *hint) { mirror_group_release(data); }

static napi_value nbd_mirror_group(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  mirror_group_t *g = calloc(1, sizeof *g);
  if (!g) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  napi_value name;
  napi_create_string_utf8(env, "nbd-mirror", NAPI_AUTO_LENGTH, &name);
  if (argc < 1 || napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, g, tsfn_finalized, NULL, call_on_failure, &g->on_failure) != napi_ok) {
    free(g);
    napi_throw_type_error(env, NULL, "nbdMirrorGroup needs onFailure, a function");
    return NULL;
  }
  napi_unref_threadsafe_function(env, g->on_failure); /* a group keeps no process alive */
  pthread_mutex_init(&g->lock, NULL);
  pthread_cond_init(&g->cond, NULL);
  atomic_init(&g->refs, 2);
  atomic_init(&g->tsfn_alive, 1);
  napi_value ext;
  napi_create_external(env, g, finalize_group, NULL, &ext);
  napi_type_tag_object(env, ext, &MIRROR_TAG);
  return ext;
}

/* The group and range arguments of nbdMirrorHold / nbdMirrorRelease; NULL with an exception pending. */
static mirror_group_t *group_arg(napi_env env, napi_callback_info info, double *a, double *b) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool tagged = false;
  void *g = NULL;
  if (argc < 2 || napi_check_object_type_tag(env, argv[0], &MIRROR_TAG, &tagged) != napi_ok || !tagged || napi_get_value_external(env, argv[0], &g) != napi_ok ||
      napi_get_value_double(env, argv[1], a) != napi_ok || (b && (argc < 3 || napi_get_value_double(env, argv[2], b) != napi_ok))) {
    napi_throw_type_error(env, NULL, "expected a mirror group and numbers");
    return NULL;
  }
  return g;
}

static napi_value nbd_mirror_hold(napi_env env, napi_callback_info info) {
  double start, end;
  mirror_group_t *g = group_arg(env, info, &start, &end);
  if (!g) return NULL;
  pthread_mutex_lock(&g->lock);
  int clash = clashes(g, (uint64_t)start, (uint64_t)end);
  uint64_t id = clash ? 0 : add_held(g, (uint64_t)start, (uint64_t)end);
  pthread_mutex_unlock(&g->lock);
  if (!clash && !id) {
    napi_throw_error(env, "ENOMEM", "out of memory holding a mirror range");
    return NULL;
  }
  napi_value out;
  napi_create_double(env, (double)id, &out);
  return out;
}

static napi_value nbd_mirror_release(napi_env env, napi_callback_info info) {
  double id;
  mirror_group_t *g = group_arg(env, info, &id, NULL);
  if (!g) return NULL;
  mirror_release(g, (uint64_t)id);
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

void nbd_mirror_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "nbdMirrorGroup", NULL, nbd_mirror_group, NULL, NULL, NULL, napi_enumerable, NULL },
    { "nbdMirrorHold", NULL, nbd_mirror_hold, NULL, NULL, NULL, napi_enumerable, NULL },
    { "nbdMirrorRelease", NULL, nbd_mirror_release, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
