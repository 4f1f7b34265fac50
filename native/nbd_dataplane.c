/*
 * The NBD data plane: serves the transmission phase of one negotiated,
 * non-TLS connection to a file-backed export (or one served by an
 * asynchronous backend: see "Backends" below) from native threads, so that
 * no request crosses the JavaScript event loop.
 *
 * TypeScript keeps everything else: the handshake and option haggling, TLS,
 * which exports exist, fencing (it calls fence, which shuts the socket down)
 * and quiescing (pause/resume). This file only speaks READ, WRITE (+FUA),
 * FLUSH, TRIM, WRITE_ZEROES (+NO_HOLE, FAST_ZERO), CACHE, BLOCK_STATUS
 * (base:allocation) and DISC, with simple or structured replies, and answers
 * exactly as the TypeScript transmission phase does (nbd-server.ts): the same
 * range checks and the same error for each of them.
 *
 * Threads: each connection has N workers that take turns reading the socket
 * (the read lock), then serve the request they read and send its reply (the
 * write lock), as nbdkit's parallel thread model does. At queue depth 1 one
 * worker does everything with no hand-off; deeper queues spread over the
 * workers. A small read buffer lets one recv pick up many request headers.
 * On a file, only two workers (plus one for each that sleeps on the disk,
 * a quiesce or QoS) take part at once; the rest wait to replace one that
 * sleeps (see "Engaged workers").
 *
 * A worker that finds no further request buffered keeps the read lock and
 * serves a short request that cannot block (a READ of at most 64 KiB the page
 * cache holds, a WRITE as short without FUA, CACHE, BLOCK_STATUS) itself
 * before reading the next: at queue depth 1 one thread then does everything,
 * with no wake-up of another per request. Whatever may block (a cache miss,
 * a flush, FUA, a quiesced write) lets the lock go first, so it holds up no
 * other request.
 *
 * Polling (as QEMU's iothreads poll before they block): the worker waiting
 * for the next request header first polls the socket for up to pollMicros.
 * Blocking in recv costs a wake-up when the request comes, and on a VM a
 * wake-up across vCPUs (an IPI to a halted vCPU) costs tens of microseconds,
 * more than serving a 4k read from the page cache. Polling stops while the
 * client is idle, so an idle connection never spins. At most half the CPUs
 * (at least one) poll at once, process-wide, so polling never starves the
 * clients or the other workers.
 *
 *   nbdServe(options, onClose) -> connection   starts the workers (options.file, or options.backend)
 *   nbdFence(connection)        -> Promise: shuts the socket down (in-flight replies fail, queued writes
 *                                  are dropped); resolves once no write is in flight
 *   nbdPause(connection)        -> Promise: new writes wait; resolves once none is in flight
 *   nbdResume(connection)       lets writes go on
 *   nbdStats(connection)        -> [count, bytes, nanoseconds] per operation (read, write, flush,
 *                                  trim, zero, other), from each request read to its reply sent
 *
 * Changed-block tracking: with changedBits (the volume's Uint32Array from
 * src/export/changed-blocks.ts, shared by all its connections), every WRITE,
 * WRITE_ZEROES and TRIM sets the bits of its blocks with atomic ORs once it
 * has passed the write gate and before it touches the file, so a quiesce
 * (pause) leaves the bits complete and still.
 *
 * Zero-copy reads (spliceMinBytes): a READ at least that large, and no larger
 * than SPLICE_READ_MAX, is served by splice(2) instead of pread + sendmsg: the
 * file's page-cache pages go into the worker's pipe (an error there is still
 * answered as an NBD error: nothing has been sent), then the reply header and
 * the pipe go to the socket under the write lock. Two copies of the payload
 * per reply are saved (file to buffer, buffer to socket); a socket that fails
 * midway ends the connection, as a failed send always does. 0 turns it off.
 *
 * Zero-copy writes (spliceWriteMinBytes): a plain WRITE (no FUA) at least that
 * large has its payload spliced from the socket into the worker's pipe while
 * the worker holds the read lock (the socket's pages are moved, not copied),
 * then from the pipe into the file once it let the lock go: one copy of the
 * payload instead of two (socket to buffer, buffer to file). A pipe holds
 * a limited number of pieces, not bytes: when the socket's data comes in
 * pieces too small for the payload to fit, what the pipe took is read back
 * into the buffer and the rest is received there, as without splicing.
 *
 * Backends (nbd_backend.h): instead of a file, nbdServe may be given an
 * asynchronous backend that another addon implements (the RBD addon's open
 * images, on librbd's rbd_aio_* calls). A worker then submits each request
 * and goes on reading the socket; the backend's completion, on its own
 * thread, only queues the request for the connection's replier thread, which
 * sends the reply (and for FUA submits the flush first). The replier, not the
 * backend's thread, sends because a send may block on a client that reads
 * slowly, and a blocked completion thread would stall every image of the
 * cluster connection (QEMU's rbd driver hands its completions back to its
 * own thread too). Writes hold their write-gate place until they complete,
 * so fencing and quiescing wait for the backend as they wait for pwrite; QoS,
 * the bounds, changed-block bits and stats are the same as for a file.
 *
 * Mirrors (nbd_mirror.c): with mirror (a group) and mirrorSockets, a file
 * connection is a synchronous mirror's: every WRITE, TRIM and WRITE_ZEROES
 * holds its byte range in the group, is sent to the copy on a channel, is
 * done on the file meanwhile, and is answered once both are done (the copy's
 * error, when only it failed); a FLUSH flushes both. Reads stay the file's.
 * The worker sends to the copy before it writes the file, so the copy works
 * meanwhile, and polls for the copy's reply as for the next request. A short
 * WRITE with nothing else buffered is served holding the read lock, as any
 * short request is (at queue depth 1 one thread does everything); the others
 * let it go first, as they may wait for the copy long. A mirrored WRITE's
 * payload is never spliced (both sides need it).
 *
 * The socket and the file are dup()ed: the caller may close its own
 * descriptors at once. onClose(reason) is called once on the JavaScript
 * thread when the last worker has gone: reason is "disconnect" (NBD_CMD_DISC
 * or the client went away), "fenced", or "protocol" (a malformed frame).
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <node_api.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "nbd_backend.h"
#include "nbd_dataplane.h"
#include "nbd_mirror.h"

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif
#ifndef RWF_DSYNC
#define RWF_DSYNC 0x00000002
#endif
#define FALLOC_FL_KEEP_SIZE 0x01
#define FALLOC_FL_PUNCH_HOLE 0x02
#define FALLOC_FL_ZERO_RANGE 0x10

#define REQUEST_MAGIC 0x25609513u
#define SIMPLE_REPLY_MAGIC 0x67446698u
#define STRUCTURED_REPLY_MAGIC 0x668e33efu

enum { CMD_READ = 0, CMD_WRITE = 1, CMD_DISC = 2, CMD_FLUSH = 3, CMD_TRIM = 4, CMD_CACHE = 5, CMD_WRITE_ZEROES = 6, CMD_BLOCK_STATUS = 7 };
enum { FLAG_FUA = 1 << 0, FLAG_NO_HOLE = 1 << 1, FLAG_REQ_ONE = 1 << 3, FLAG_FAST_ZERO = 1 << 4 };
enum { REPLY_FLAG_DONE = 1 };
enum { REPLY_TYPE_OFFSET_DATA = 1, REPLY_TYPE_BLOCK_STATUS = 5, REPLY_TYPE_ERROR = 0x8001 };
enum { NBD_EPERM = 1, NBD_EIO = 5, NBD_ENOMEM = 12, NBD_EINVAL = 22, NBD_ENOSPC = 28, NBD_EOVERFLOW = 75, NBD_ENOTSUP = 95 };
enum { STATE_HOLE = 1, STATE_ZERO = 2 };

/* Largest READ/WRITE payload (as nbd-protocol.ts MAX_PAYLOAD). */
#define MAX_PAYLOAD (32u * 1024 * 1024)
/* Most block status descriptors in one reply (as nbd-server.ts). */
#define MAX_EXTENTS 1024
/* The socket read buffer: request headers and small payloads. */
#define READ_BUFFER (64 * 1024)
/* A worker keeps a payload buffer up to this size between requests. */
#define KEEP_BUFFER (4u * 1024 * 1024)
#define MAX_THREADS 64
#define WORKER_STACK (256 * 1024)

typedef enum { END_NONE = 0, END_DISCONNECT, END_FENCED, END_PROTOCOL } end_reason;

/* The operations nbdStats counts, in its order (as src/export/nbd-stats.ts NBD_OPS). */
enum { OP_READ, OP_WRITE, OP_FLUSH, OP_TRIM, OP_ZERO, OP_OTHER, OPS };

/* QoS lanes, in src/export/qos.ts QOS_LANES order. */
enum { QOS_TOTAL_IOPS, QOS_READ_IOPS, QOS_WRITE_IOPS, QOS_TOTAL_BYTES, QOS_READ_BYTES, QOS_WRITE_BYTES, QOS_LANES };

struct backend_req;

typedef struct conn {
  int sock;
  int file;            /* -1 when a backend is served */
  nbd_backend_t *be;   /* the asynchronous backend served instead of a file (see "Backends"), else NULL */
  uint64_t size;
  int read_only;
  int structured;
  uint32_t meta_id; /* base:allocation context id, 0 when not negotiated */
  uint32_t splice_min; /* READs of at least this many bytes are spliced; 0: never */
  uint32_t splice_write_min; /* WRITE payloads of at least this many bytes are spliced; 0: never */

  pthread_mutex_t read_lock; /* one worker reads the socket at a time */
  uint8_t *rbuf;
  size_t rsize, rstart, rend;
  int64_t poll_max_ns; /* how long a worker polls at most; 0: never */
  int polling;         /* the client is busy: poll (guarded by read_lock) */

  pthread_mutex_t write_lock; /* one reply at a time: replies never interleave */

  pthread_mutex_t lock; /* guards everything below */
  pthread_cond_t cond;
  int done;         /* no more requests are read */
  end_reason why;   /* the first reason to stop */
  int disc;         /* the client sent NBD_CMD_DISC: flush before closing */
  int paused;       /* quiesced: writes wait */
  unsigned pauses, resumes; /* how many of each were asked: a pause's wait for writes ends at the next resume */
  int writes;       /* writes in flight (between the gate and their end) */
  int running;      /* workers alive */
  int sock_closed;  /* the socket fd is closed: never shut it down again */
  uint64_t max_bytes;  /* the most payload bytes the workers may hold at once (maxBufferBytes) */
  uint64_t held_bytes; /* payload bytes held: WRITE payloads read and not yet written, READ data not yet sent */
  int engaged;      /* file workers reading or serving a request (see "Engaged workers") */
  int blocked;      /* of those, the ones in a call that may sleep (the disk, a quiesce, QoS) */
  pthread_cond_t engage_cond; /* a file worker waits here, with lock, for its turn to read */
  int max_requests; /* the most requests in flight at once (maxRequests) */
  int requests;     /* requests in flight: read (or being read) and not yet answered */

  /* Changed-block bits (the JavaScript tracker's Uint32Array, kept alive by a
     reference the on_close function's finalizer drops): bit b of word b/32 is
     block b of 2^changed_shift bytes. NULL: nothing is recorded. */
  uint32_t *changed;
  uint64_t changed_blocks;
  unsigned changed_shift;

  /* QoS (src/export/qos.ts): each lane's theoretical arrival time, ns of CLOCK_MONOTONIC, in memory shared
     with the event loop and the volume's other connections (NULL: no limits); per lane ns per unit and
     burst tolerance in ns (0 ns per unit: no limit on that lane); the IOPS accounting size. */
  int64_t *qos_tat;
  double qos_params[2 * QOS_LANES];
  double qos_size_iops;

  /* Per operation: requests answered, payload bytes, nanoseconds from read to reply (relaxed atomics: read at a scrape). */
  _Atomic uint64_t stats[OPS][3];

  /* Backends only: requests submitted and not yet answered, and those the backend completed, for the replier. */
  int inflight;
  int readers; /* workers alive (the replier not counted) */
  struct backend_req *done_head, *done_tail;
  pthread_cond_t done_cond; /* the replier waits here, with lock */

  /* Mirrors only (see "Mirrors"): the volume's group and this connection's channels to its copy. */
  mirror_group_t *mg;
  mirror_chan_t *mchans;
  int nmchans;

  atomic_int refs;  /* the workers (as one) + the JavaScript object + pending pauses */
  napi_threadsafe_function on_close;
} conn_t;

typedef struct request {
  uint16_t flags;
  uint16_t type;
  uint8_t cookie[8];
  uint64_t offset;
  uint32_t length;
  uint32_t held; /* bytes reserved against max_bytes for this request */
  int spliced;   /* a WRITE whose payload waits in the worker's pipe, not in its buffer */
} request_t;

/* A worker's payload buffer. */
typedef struct buffer {
  uint8_t *data;
  size_t capacity;
  int pipe_r, pipe_w; /* the worker's pipe for spliced READs; -1 until the first */
  size_t pipe_cap;    /* what the pipe holds */
} buffer_t;

/* The pipe size asked for: the 1 MiB reads of sequential workloads fit whole. */
#define SPLICE_PIPE (1024 * 1024)
/*
 * The largest READ spliced: a larger reply waits on the socket's buffer
 * while it holds the write lock, and copying measured faster (bench/nbd.ts,
 * Unix socket, 8 December: 1M reads 4328 MB/s copied against 4092 spliced,
 * 64k randrw 3006 copied against 3516 spliced).
 */
#define SPLICE_READ_MAX (256 * 1024)

static uint8_t *zero_block; /* 1 MiB of zeros for WRITE_ZEROES without fallocate */
#define ZERO_BLOCK (1024 * 1024)

static void unref(conn_t *c) {
  if (atomic_fetch_sub(&c->refs, 1) != 1) return;
  pthread_mutex_destroy(&c->read_lock);
  pthread_mutex_destroy(&c->write_lock);
  pthread_mutex_destroy(&c->lock);
  pthread_cond_destroy(&c->cond);
  pthread_cond_destroy(&c->done_cond);
  pthread_cond_destroy(&c->engage_cond);
  free(c->rbuf);
  free(c);
}

/* Stops reading; with `abrupt` also shuts the socket so every worker and the client see it at once. */
static void stop(conn_t *c, end_reason why, int abrupt) {
  pthread_mutex_lock(&c->lock);
  c->done = 1;
  if (c->why == END_NONE) c->why = why;
  if (abrupt && !c->sock_closed) shutdown(c->sock, SHUT_RDWR);
  pthread_cond_broadcast(&c->cond);
  pthread_cond_broadcast(&c->engage_cond);
  pthread_mutex_unlock(&c->lock);
}

/*
 * Engaged workers (files only). A connection has many workers so that
 * requests that sleep (a read the page cache does not hold, a flush, a
 * quiesced write) do not hold up the others; but requests that only copy
 * gain nothing from more workers than CPUs, and lose: with eight workers on
 * 1M reads at QD8 from the page cache every request woke another thread
 * (2.8 GB/s against 3.3 GB/s with two workers; bench/nbd.ts on a 2-vCPU VM).
 * So ENGAGED_BASE workers, plus one for each that sleeps, read and serve
 * requests; the others wait on engage_cond. An engaged worker stays engaged
 * from request to request, and one that sleeps wakes a waiting one to take
 * its place; back from sleeping, it waits again once its request is done if
 * more are engaged than that.
 */
#define ENGAGED_BASE 2

/* Waits for a turn to read and serve a request; 0, or -1 once the connection is done. */
static int engage(conn_t *c) {
  pthread_mutex_lock(&c->lock);
  while (!c->done && c->engaged >= ENGAGED_BASE + c->blocked) pthread_cond_wait(&c->engage_cond, &c->lock);
  int done = c->done;
  if (!done) c->engaged++;
  pthread_mutex_unlock(&c->lock);
  return done ? -1 : 0;
}

/* A worker that stops: another may take its place. */
static void disengage(conn_t *c) {
  pthread_mutex_lock(&c->lock);
  c->engaged--;
  pthread_cond_signal(&c->engage_cond);
  pthread_mutex_unlock(&c->lock);
}

/* After a request: 1 when this worker is one too many engaged and stops being engaged (no one can take its place). */
static int over_engaged(conn_t *c) {
  pthread_mutex_lock(&c->lock);
  int over = c->engaged > ENGAGED_BASE + c->blocked;
  if (over) c->engaged--;
  pthread_mutex_unlock(&c->lock);
  return over;
}

/* An engaged worker is about to sleep (on: 1) or is done sleeping (0): while it sleeps another may read. */
static void sleeping(conn_t *c, int on) {
  if (c->be) return;
  pthread_mutex_lock(&c->lock);
  c->blocked += on ? 1 : -1;
  if (on) pthread_cond_signal(&c->engage_cond);
  pthread_mutex_unlock(&c->lock);
}

static int is_done(conn_t *c) {
  pthread_mutex_lock(&c->lock);
  int d = c->done;
  pthread_mutex_unlock(&c->lock);
  return d;
}

/* The NBD error of an errno. */
static uint32_t nbd_error(int e) {
  switch (e) {
    case EPERM: case EROFS: return NBD_EPERM;
    case ENOMEM: return NBD_ENOMEM;
    case EINVAL: return NBD_EINVAL;
    case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
    case EOVERFLOW: return NBD_EOVERFLOW;
    case ENOTSUP: return NBD_ENOTSUP;
    default: return NBD_EIO;
  }
}

/* ---- socket input (called with read_lock held) ---- */

/* How many workers poll at once, process-wide, and the most that may. */
static atomic_int pollers;
static int max_pollers = 1;

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* A wait longer than this many polling bounds means the client is idle: stop polling. */
#define IDLE_BOUNDS 20

/*
 * recv() into the read buffer, polling first while the client is busy. A
 * wait for the next request longer than IDLE_BOUNDS polling bounds (1 ms at
 * 50 µs) turns polling off for the connection; a shorter one turns it on
 * again. The wait a blocked worker measures includes its own wake-up, so a
 * busy client must not be judged by the polling bound alone: that would turn
 * polling off for good once the first wait went over it.
 */
static ssize_t recv_buffered(conn_t *c) {
  if (c->poll_max_ns == 0) return recv(c->sock, c->rbuf, c->rsize, 0);
  int64_t start = now_ns();
  if (c->polling) {
    if (atomic_fetch_add(&pollers, 1) < max_pollers) {
      for (;;) {
        ssize_t r = recv(c->sock, c->rbuf, c->rsize, MSG_DONTWAIT);
        if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
          atomic_fetch_sub(&pollers, 1);
          return r;
        }
        if (now_ns() - start > c->poll_max_ns) break;
      }
    }
    atomic_fetch_sub(&pollers, 1);
  }
  ssize_t r = recv(c->sock, c->rbuf, c->rsize, 0);
  c->polling = now_ns() - start <= IDLE_BOUNDS * c->poll_max_ns;
  return r;
}

static void flush_batch(void);
static int batch_held(void);

/* Reads exactly n bytes into dst: from the buffer first, large rests straight from the socket. 0, or -1 at EOF/error. */
static int read_exact(conn_t *c, uint8_t *dst, size_t n) {
  while (n > 0) {
    size_t have = c->rend - c->rstart;
    if (have > 0) {
      size_t k = have < n ? have : n;
      memcpy(dst, c->rbuf + c->rstart, k);
      c->rstart += k;
      dst += k;
      n -= k;
      continue;
    }
    c->rstart = c->rend = 0;
    flush_batch(); /* about to wait for the client: what it waits for goes first */
    ssize_t r;
    if (n >= c->rsize / 2) {
      r = recv(c->sock, dst, n, MSG_WAITALL);
      if (r > 0) { dst += r; n -= (size_t)r; continue; }
    } else {
      r = recv_buffered(c);
      if (r > 0) { c->rend = (size_t)r; continue; }
    }
    if (r < 0 && errno == EINTR) continue;
    return -1;
  }
  return 0;
}

static int ensure(buffer_t *b, size_t n) {
  if (b->capacity >= n) return 0;
  uint8_t *p = malloc(n < 4096 ? 4096 : n);
  if (!p) return -1;
  free(b->data);
  b->data = p;
  b->capacity = n < 4096 ? 4096 : n;
  return 0;
}

/* Reads the next request (and a WRITE's payload). 0 to serve it, else why to stop. */
/*
 * The memory bound: a worker reserves a request's payload bytes before it
 * takes a buffer for them and waits while the others hold too much. One
 * request alone always runs (the bound cannot starve it), and holders never
 * wait for the bound themselves, so the wait ends: at the latest when a
 * client that reads no replies goes away and their sends fail. While a
 * worker waits here with the read lock, nobody reads the socket: the client's
 * TCP window fills, as on the event loop.
 */
static void reserve(conn_t *c, request_t *r, uint32_t n) {
  pthread_mutex_lock(&c->lock);
  if (c->held_bytes > 0 && c->held_bytes + n > c->max_bytes && c->why != END_FENCED && batch_held()) { /* no wait with replies held back */
    pthread_mutex_unlock(&c->lock);
    flush_batch();
    pthread_mutex_lock(&c->lock);
  }
  while (c->held_bytes > 0 && c->held_bytes + n > c->max_bytes && c->why != END_FENCED) pthread_cond_wait(&c->cond, &c->lock);
  c->held_bytes += n;
  pthread_mutex_unlock(&c->lock);
  r->held = n;
}

static void release(conn_t *c, request_t *r) {
  if (!r->held) return;
  pthread_mutex_lock(&c->lock);
  c->held_bytes -= r->held;
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->lock);
  r->held = 0;
}

/*
 * The request bound (nbd_max_requests_per_connection, as on the event loop):
 * a worker takes a place before it reads a request and gives it back once the
 * request's reply is on the socket. While the bound is in flight the worker
 * holding the read lock waits here, so nobody reads the socket (the client's
 * TCP window then holds what it sends) until a reply goes out. Holders of a
 * place never wait for one, so the wait ends; fencing and the end of the
 * connection end it too. Without it, only the number of workers would bound
 * the requests in flight.
 */
static void admit(conn_t *c) {
  pthread_mutex_lock(&c->lock);
  if (c->requests >= c->max_requests && !c->done && batch_held()) { /* the batch's replies give places back */
    pthread_mutex_unlock(&c->lock);
    flush_batch();
    pthread_mutex_lock(&c->lock);
  }
  while (c->requests >= c->max_requests && !c->done) pthread_cond_wait(&c->cond, &c->lock);
  c->requests++;
  pthread_mutex_unlock(&c->lock);
}

static void retire(conn_t *c) {
  pthread_mutex_lock(&c->lock);
  c->requests--;
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->lock);
}

static int splice_payload(conn_t *c, request_t *r, buffer_t *b);
static size_t worker_pipe(buffer_t *b);
static void drop_pipe(buffer_t *b);

static end_reason read_request(conn_t *c, request_t *r, buffer_t *payload) {
  uint8_t h[28];
  if (read_exact(c, h, sizeof h) != 0) return END_DISCONNECT;
  uint32_t magic;
  memcpy(&magic, h, 4);
  if (be32toh(magic) != REQUEST_MAGIC) return END_PROTOCOL;
  uint16_t u16;
  memcpy(&u16, h + 4, 2);
  r->flags = be16toh(u16);
  memcpy(&u16, h + 6, 2);
  r->type = be16toh(u16);
  memcpy(r->cookie, h + 8, 8);
  uint64_t u64;
  memcpy(&u64, h + 16, 8);
  r->offset = be64toh(u64);
  uint32_t u32;
  memcpy(&u32, h + 24, 4);
  r->length = be32toh(u32);
  if (r->type == CMD_DISC) return END_DISCONNECT;
  if (r->type == CMD_WRITE) {
    /* Too large to buffer: the stream cannot be resynchronised cheaply, so end it. */
    if (r->length > MAX_PAYLOAD) return END_PROTOCOL;
    reserve(c, r, r->length);
    if (c->splice_write_min && r->length >= c->splice_write_min && !(r->flags & FLAG_FUA) && worker_pipe(payload) >= r->length) {
      int got = splice_payload(c, r, payload);
      if (got < 0) {
        drop_pipe(payload);
        return END_DISCONNECT;
      }
      return END_NONE; /* in the pipe, or (1) in the buffer */
    }
    if (ensure(payload, r->length) != 0) return END_PROTOCOL;
    if (read_exact(c, payload->data, r->length) != 0) return END_DISCONNECT;
  }
  return END_NONE;
}

/* ---- replies ---- */

int nbd_send_iov(int sock, struct iovec *iov, int count, int flags) {
  while (count > 0) {
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)count };
    ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL | flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    while (count > 0 && (size_t)n >= iov->iov_len) {
      n -= (ssize_t)iov->iov_len;
      iov++;
      count--;
    }
    if (count > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + n;
      iov->iov_len -= (size_t)n;
    }
  }
  return 0;
}

/* Sends the iovecs whole; the caller holds the write lock. Returns -1 when the socket failed (the caller ends the connection). */
static int send_locked(conn_t *c, struct iovec *iov, int count, int flags) { return nbd_send_iov(c->sock, iov, count, flags); }

/*
 * A payload at least this large is sent by a call of its own after its
 * header (sent with MSG_MORE), as nbdkit does. Sent in one sendmsg with its
 * 16- or 28-byte header in front, each segment's data started that far off
 * the page, and a 1M READ over TCP cost about a fifth more CPU in the
 * kernel's send and ACK paths: bench/nbd.ts 1M reads at QD8 went from 0.84
 * to 1.1 of nbdkit with the server pinned to one vCPU, 1.03 to 1.2 unpinned.
 */
#define SEPARATE_PAYLOAD (64u * 1024)

/*
 * Replies a worker holds back while it serves requests already in the read
 * buffer, sent together in one call before it could block (a read from the
 * socket, handing the reading to another worker, its end): at queue depth
 * 32 one sendmsg for a run of 4k writes instead of one each. Small replies
 * only; a larger one sends the batch first, then itself.
 */
#define BATCH_BYTES (64u * 1024)
#define BATCH_MAX_REPLY 32u
/* The largest WRITE a worker serves itself, its ack batched, rather than hand the buffered requests to another (64k writes of a 70/30 mix measured 5-9% slower that way). */
#define BATCH_WRITE_MAX (8u * 1024)
typedef struct batch {
  conn_t *c;
  size_t len;
  int on;      /* the request being served is served holding the read lock: its reply may wait in the batch */
  int took;    /* the reply of the request being served went into the batch */
  int retires; /* requests whose replies the batch holds: their places are given back once sent */
  uint8_t data[BATCH_BYTES];
} batch_t;
static __thread batch_t *tl_batch;
static int batching = -1; /* BASALT_NBD_BATCH=0 turns it off (A/B) */

/* Whether the calling worker's batch holds replies. */
static int batch_held(void) { return tl_batch && tl_batch->len > 0; }

/* Sends what the calling worker's batch holds. */
static void flush_batch(void) {
  batch_t *bt = tl_batch;
  if (!bt || bt->len == 0) return;
  struct iovec iov = { bt->data, bt->len };
  bt->len = 0;
  pthread_mutex_lock(&bt->c->write_lock);
  int failed = send_locked(bt->c, &iov, 1, 0);
  pthread_mutex_unlock(&bt->c->write_lock);
  if (failed) stop(bt->c, END_DISCONNECT, 1);
  for (; bt->retires > 0; bt->retires--) retire(bt->c);
}

/* Sends the iovecs whole (the last one the payload), under the write lock. A failed send ends the connection. */
static void send_all(conn_t *c, struct iovec *iov, int count) {
  batch_t *bt = tl_batch;
  if (bt && bt->c == c && bt->on) {
    size_t total = 0;
    for (int i = 0; i < count; i++) total += iov[i].iov_len;
    if (total <= BATCH_MAX_REPLY) {
      if (bt->len + total > BATCH_BYTES) flush_batch();
      for (int i = 0; i < count; i++) {
        memcpy(bt->data + bt->len, iov[i].iov_base, iov[i].iov_len);
        bt->len += iov[i].iov_len;
      }
      bt->took = 1;
      return;
    }
    flush_batch();
  }
  pthread_mutex_lock(&c->write_lock);
  int failed;
  if (count > 1 && iov[count - 1].iov_len >= SEPARATE_PAYLOAD) {
    failed = send_locked(c, iov, count - 1, MSG_MORE);
    if (!failed) failed = send_locked(c, iov + count - 1, 1, 0);
  } else {
    failed = send_locked(c, iov, count, 0);
  }
  pthread_mutex_unlock(&c->write_lock);
  if (failed) stop(c, END_DISCONNECT, 1);
}

/* A simple reply's 16-byte header. */
static void simple_header(uint8_t h[16], const request_t *r, uint32_t error) {
  uint32_t v = htobe32(SIMPLE_REPLY_MAGIC);
  memcpy(h, &v, 4);
  v = htobe32(error);
  memcpy(h + 4, &v, 4);
  memcpy(h + 8, r->cookie, 8);
}

/* A structured reply chunk's 20-byte header, with the DONE flag, for `length` bytes of chunk data. */
static void chunk_header(uint8_t h[20], const request_t *r, uint16_t type, uint32_t length) {
  uint32_t v = htobe32(STRUCTURED_REPLY_MAGIC);
  memcpy(h, &v, 4);
  uint16_t s = htobe16(REPLY_FLAG_DONE);
  memcpy(h + 4, &s, 2);
  s = htobe16(type);
  memcpy(h + 6, &s, 2);
  memcpy(h + 8, r->cookie, 8);
  v = htobe32(length);
  memcpy(h + 16, &v, 4);
}

static void simple_reply(conn_t *c, const request_t *r, uint32_t error, const void *data, size_t length) {
  uint8_t h[16];
  simple_header(h, r, error);
  struct iovec iov[2] = { { h, 16 }, { (void *)data, length } };
  send_all(c, iov, length ? 2 : 1);
}

/* One structured reply chunk with the DONE flag: header, then `a` and `b`. */
static void chunk(conn_t *c, const request_t *r, uint16_t type, const void *a, size_t alen, const void *b, size_t blen) {
  uint8_t h[20];
  chunk_header(h, r, type, (uint32_t)(alen + blen));
  struct iovec iov[3] = { { h, 20 }, { (void *)a, alen }, { (void *)b, blen } };
  send_all(c, iov, blen ? 3 : 2);
}

/*
 * An error with a message for people: a structured ERROR chunk (for any
 * command) once structured replies are negotiated, else a simple reply,
 * which has no room for text. `message` may be NULL: structured for READ and
 * BLOCK_STATUS only then, as before.
 */
static void error_reply_message(conn_t *c, const request_t *r, uint32_t error, const char *message) {
  if (c->structured && (message || r->type == CMD_READ || r->type == CMD_BLOCK_STATUS)) {
    size_t len = message ? strlen(message) : 0;
    uint8_t p[6];
    uint32_t v = htobe32(error);
    uint16_t l = htobe16((uint16_t)len);
    memcpy(p, &v, 4);
    memcpy(p + 4, &l, 2);
    chunk(c, r, REPLY_TYPE_ERROR, p, sizeof p, message, len);
  } else {
    simple_reply(c, r, error, NULL, 0);
  }
}

/* An error: structured for READ and BLOCK_STATUS once negotiated, simple otherwise. */
static void error_reply(conn_t *c, const request_t *r, uint32_t error) { error_reply_message(c, r, error, NULL); }

/*
 * A request past the end of the size this connection negotiated (an online
 * extend shows only to new negotiations): the event-loop plane's words
 * (`pastTheEnd` in src/export/nbd-server.ts), so a client learns to reconnect.
 */
static void beyond_reply(conn_t *c, const request_t *r, uint32_t error) {
  char message[256];
  snprintf(message, sizeof message,
           "Request past the end of the export (%llu bytes when this connection was negotiated). If the volume was extended, connect again to see its new size.",
           (unsigned long long)c->size);
  error_reply_message(c, r, error, message);
}

static void ok_reply(conn_t *c, const request_t *r) { simple_reply(c, r, 0, NULL, 0); }

/* A READ's data: a simple reply, or one OFFSET_DATA chunk. */
static void data_reply(conn_t *c, const request_t *r, const uint8_t *data) {
  if (!c->structured) return simple_reply(c, r, 0, data, r->length);
  uint64_t off = htobe64(r->offset);
  chunk(c, r, REPLY_TYPE_OFFSET_DATA, &off, 8, data, r->length);
}

/* Lets the read lock go if this worker still holds it: before anything that may block. */
static void let_go(conn_t *c, int *holding) {
  flush_batch();
  if (tl_batch) tl_batch->on = 0; /* no longer reading: replies go out at once */
  if (!*holding) return;
  *holding = 0;
  pthread_mutex_unlock(&c->read_lock);
}

/* The largest READ or WRITE served while holding the read lock: copying more takes long enough for the next request to come. */
#define HOLD_MAX (64u * 1024)

/* Whether a request may be served while holding the read lock (it is short and cannot block for long). */
static int may_serve_holding(const conn_t *c, const request_t *r) {
  /*
   * A mirror's TRIM, WRITE_ZEROES and FLUSH may be long; its short WRITE
   * waits one round trip to the copy, which one thread best does alone at
   * queue depth 1 (no other request in flight: a racy read, a hint only),
   * and which must not hold up the reading of the others at a deeper one.
   */
  if (c->mg && r->type != CMD_READ && r->type != CMD_CACHE && r->type != CMD_BLOCK_STATUS && (r->type != CMD_WRITE || __atomic_load_n(&c->requests, __ATOMIC_RELAXED) > 1)) return 0;
  if (r->type == CMD_READ || (r->type == CMD_WRITE && !(r->flags & FLAG_FUA))) return r->length <= HOLD_MAX;
  return r->type == CMD_CACHE || r->type == CMD_BLOCK_STATUS;
}

/* ---- the write gate (quiesce) ---- */

/* Waits while paused; -1 when the connection was fenced meanwhile (the write is dropped). */
static int gate_enter(conn_t *c, int *holding) {
  pthread_mutex_lock(&c->lock);
  if (c->paused && *holding) { /* waiting must not stop the reads */
    pthread_mutex_unlock(&c->lock);
    let_go(c, holding);
    pthread_mutex_lock(&c->lock);
  }
  if (c->paused && c->why != END_FENCED) { /* sleeping: another worker may read meanwhile */
    c->blocked++;
    pthread_cond_signal(&c->engage_cond);
    while (c->paused && c->why != END_FENCED) pthread_cond_wait(&c->cond, &c->lock);
    c->blocked--;
  }
  if (c->why == END_FENCED) {
    pthread_mutex_unlock(&c->lock);
    return -1;
  }
  c->writes++;
  pthread_mutex_unlock(&c->lock);
  return 0;
}

static void gate_leave(conn_t *c) {
  pthread_mutex_lock(&c->lock);
  if (--c->writes == 0) pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->lock);
}

/*
 * Records [offset, offset+length) in the changed-block bits, before the file
 * is touched: a crash after the write cannot leave it unrecorded, and the
 * TypeScript side reads the bits only while no write is in flight (quiesced)
 * or ORs them (a save), so relaxed atomic ORs suffice.
 */
static void mark_changed(conn_t *c, const request_t *r) {
  if (!c->changed || r->length == 0) return;
  uint64_t first = r->offset >> c->changed_shift;
  uint64_t last = (r->offset + r->length - 1) >> c->changed_shift;
  if (last >= c->changed_blocks) last = c->changed_blocks - 1;
  for (uint64_t b = first; b <= last && b < c->changed_blocks; b++) {
    __atomic_fetch_or(&c->changed[b >> 5], (uint32_t)1 << (b & 31), __ATOMIC_RELAXED);
  }
}

/* ---- commands ---- */

static int write_all(conn_t *c, const uint8_t *data, size_t n, uint64_t offset, int fua) {
  static atomic_int dsync_works = 1;
  while (n > 0) {
    struct iovec iov = { (void *)data, n };
    ssize_t w = fua && atomic_load(&dsync_works) ? pwritev2(c->file, &iov, 1, (off_t)offset, RWF_DSYNC) : pwrite(c->file, data, n, (off_t)offset);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (fua && (errno == EOPNOTSUPP || errno == ENOSYS) && atomic_load(&dsync_works)) { atomic_store(&dsync_works, 0); continue; }
      return errno;
    }
    data += w;
    n -= (size_t)w;
    offset += (uint64_t)w;
  }
  if (fua && !atomic_load(&dsync_works) && fdatasync(c->file) != 0) return errno;
  return 0;
}

/* The worker's pipe, made on first use; its capacity, 0 when none can be made. */
static size_t worker_pipe(buffer_t *b) {
  if (b->pipe_w >= 0) return b->pipe_cap;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return 0;
  int cap = fcntl(p[1], F_SETPIPE_SZ, SPLICE_PIPE);
  if (cap < 0) cap = fcntl(p[1], F_GETPIPE_SZ);
  if (cap <= 0) {
    close(p[0]);
    close(p[1]);
    return 0;
  }
  b->pipe_r = p[0];
  b->pipe_w = p[1];
  b->pipe_cap = (size_t)cap;
  return b->pipe_cap;
}

/* Closes the worker's pipe (what it still holds goes with it); the next spliced READ makes another. */
static void drop_pipe(buffer_t *b) {
  if (b->pipe_w < 0) return;
  close(b->pipe_r);
  close(b->pipe_w);
  b->pipe_r = b->pipe_w = -1;
  b->pipe_cap = 0;
}

/*
 * Receives a WRITE's payload into the worker's pipe, which holds that many
 * bytes (see "Zero-copy writes"):
 * first what the read buffer already holds (copied), then the
 * rest from the socket. 0 when the pipe holds it all (r->spliced set); 1 when
 * the payload is in the buffer instead (a socket that cannot splice, or a
 * pipe out of room: what it took was read back); -1 when the
 * client went away.
 */
static int splice_payload(conn_t *c, request_t *r, buffer_t *b) {
  flush_batch(); /* it may wait for the client */
  size_t in = 0;
  size_t have = c->rend - c->rstart;
  if (have > r->length) have = r->length;
  while (in < have) {
    /* write(2) copies; vmsplice would lend the read buffer's pages, which the next recv overwrites. */
    ssize_t n = write(b->pipe_w, c->rbuf + c->rstart, have - in);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* cannot happen with the room checked above; copied instead below */
    c->rstart += (size_t)n;
    in += (size_t)n;
  }
  int fallback = in < have;
  while (!fallback && in < r->length) {
    ssize_t n = splice(c->sock, NULL, b->pipe_w, NULL, r->length - in, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      in += (size_t)n;
      continue;
    }
    if (n == 0) return -1;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) { fallback = 1; break; }
    /* Nothing to read yet, or no room in the pipe: the socket tells which. */
    struct pollfd p = { .fd = c->sock, .events = POLLIN };
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) {
      n = splice(c->sock, NULL, b->pipe_w, NULL, r->length - in, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) { in += (size_t)n; continue; }
      if (n == 0) return -1;
      if (errno == EINTR) continue;
      fallback = 1; /* readable yet refused (EAGAIN): the pipe is full */
      break;
    }
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {}
    if (p.revents & (POLLERR | POLLNVAL)) return -1;
  }
  if (!fallback) {
    r->spliced = 1;
    return 0;
  }
  /* Back to the buffer: what the pipe took, then the rest from the socket. */
  if (ensure(b, r->length) != 0) return -1;
  for (size_t out = 0; out < in;) {
    ssize_t n = read(b->pipe_r, b->data + out, in - out);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    out += (size_t)n;
  }
  return read_exact(c, b->data + in, r->length - in) == 0 ? 1 : -1;
}

/*
 * Writes a spliced WRITE's payload from the worker's pipe into the file at
 * its offset. 0, or the errno (the pipe is dropped then: it may still hold
 * part of the payload).
 */
static int spliced_write(conn_t *c, const request_t *r, buffer_t *b) {
  loff_t off = (loff_t)r->offset;
  for (size_t out = 0; out < r->length;) {
    ssize_t n = splice(b->pipe_r, NULL, c->file, &off, r->length - out, SPLICE_F_MOVE);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      if (out == 0 && (e == EINVAL || e == ENOSYS) && ensure(b, r->length) == 0) {
        /* A file that cannot take a splice: through the buffer after all. */
        size_t got = 0;
        while (got < r->length) {
          ssize_t k = read(b->pipe_r, b->data + got, r->length - got);
          if (k < 0 && errno == EINTR) continue;
          if (k <= 0) break;
          got += (size_t)k;
        }
        if (got == r->length) return write_all(c, b->data, r->length, r->offset, 0);
      }
      drop_pipe(b);
      return e;
    }
    out += (size_t)n;
  }
  return 0;
}

/*
 * Serves a READ with splice: file -> pipe, then header + pipe -> socket under
 * the write lock. Returns 0 when it answered (data or an error), -1 when the
 * copying path must serve it instead (no pipe, a file that cannot splice, a
 * file shorter than the export: the tail reads as zeros).
 */
static int spliced_read(conn_t *c, const request_t *r, buffer_t *b) {
  if (worker_pipe(b) < r->length) return -1;
  loff_t off = (loff_t)r->offset;
  size_t in = 0;
  while (in < r->length) {
    ssize_t n = splice(c->file, &off, b->pipe_w, NULL, r->length - in, SPLICE_F_MOVE);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) {
      in += (size_t)n;
      continue;
    }
    int e = n < 0 ? errno : 0;
    drop_pipe(b);
    if (e == 0 || e == EINVAL || e == ENOSYS) return -1;
    error_reply(c, r, nbd_error(e));
    return 0;
  }
  /* The reply header (structured: with the data chunk's offset), sent ahead of the pipe's pages. */
  uint8_t h[28];
  size_t hlen = 16;
  if (c->structured) {
    chunk_header(h, r, REPLY_TYPE_OFFSET_DATA, 8 + r->length);
    uint64_t o = htobe64(r->offset);
    memcpy(h + 20, &o, 8);
    hlen = 28;
  } else {
    simple_header(h, r, 0);
  }
  pthread_mutex_lock(&c->write_lock);
  struct iovec iov = { h, hlen };
  int failed = send_locked(c, &iov, 1, MSG_MORE);
  for (size_t out = 0; !failed && out < r->length;) {
    ssize_t n = splice(b->pipe_r, NULL, c->sock, NULL, r->length - out, SPLICE_F_MOVE);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) failed = 1;
    else out += (size_t)n;
  }
  pthread_mutex_unlock(&c->write_lock);
  if (failed) {
    drop_pipe(b); /* it may still hold part of the payload */
    stop(c, END_DISCONNECT, 1);
  }
  return 0;
}

static void do_read(conn_t *c, const request_t *r, buffer_t *b, int *holding) {
  if (!*holding && c->splice_min && r->length >= c->splice_min && r->length <= SPLICE_READ_MAX) {
    /* file -> pipe may wait for the disk: counted as sleeping, so spliced reads are never held back (see engage). */
    sleeping(c, 1);
    int spliced = spliced_read(c, r, b) == 0;
    sleeping(c, 0);
    if (spliced) return;
  }
  if (ensure(b, r->length) != 0) return error_reply(c, r, NBD_ENOMEM);
  size_t done = 0;
  /* What the page cache holds first: never wait for the disk with the lock, nor unannounced (see engage). */
  struct iovec iov = { b->data, r->length };
  ssize_t cached = preadv2(c->file, &iov, 1, (off_t)r->offset, RWF_NOWAIT);
  if (cached > 0) done = (size_t)cached;
  if (done < r->length) let_go(c, holding);
  int slept = done < r->length && cached != 0;
  if (slept) sleeping(c, 1);
  while (done < r->length) {
    ssize_t n = pread(c->file, b->data + done, r->length - done, (off_t)(r->offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      if (slept) sleeping(c, 0);
      return error_reply(c, r, nbd_error(e));
    }
    if (n == 0) { /* past the end of the file reads as zeros */
      memset(b->data + done, 0, r->length - done);
      break;
    }
    done += (size_t)n;
  }
  if (slept) sleeping(c, 0);
  data_reply(c, r, b->data);
}

static int zero_range(conn_t *c, const request_t *r) {
  if (r->length == 0) return 0;
  int mode = (r->flags & FLAG_NO_HOLE) ? FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  if (fallocate(c->file, mode, (off_t)r->offset, (off_t)r->length) == 0) return 0;
  /* FAST_ZERO: the client would rather write zeros itself than wait for us to. */
  if (r->flags & FLAG_FAST_ZERO) return ENOTSUP;
  for (uint64_t done = 0; done < r->length;) {
    size_t n = r->length - done < ZERO_BLOCK ? (size_t)(r->length - done) : ZERO_BLOCK;
    int e = write_all(c, zero_block, n, r->offset + done, 0);
    if (e) return e;
    done += n;
  }
  return 0;
}

/* The base:allocation extents of [offset, offset+length), as SEEK_DATA/SEEK_HOLE see them. */
static void block_status(conn_t *c, const request_t *r) {
  uint32_t desc[1 + 2 * MAX_EXTENTS];
  int count = 0;
  int max = (r->flags & FLAG_REQ_ONE) ? 1 : MAX_EXTENTS;
  uint64_t pos = r->offset, end = r->offset + r->length;
  while (pos < end && count < max) {
    off_t data = lseek(c->file, (off_t)pos, SEEK_DATA);
    /*
     * Only ENXIO means no data past pos. Any other failure says nothing about
     * the data: report it as data (the SEEK_HOLE below fails alike and runs
     * to the end), never as a hole a client would skip.
     */
    if (data < 0 && errno != ENXIO) data = (off_t)pos;
    uint64_t d = (data < 0 || (uint64_t)data >= c->size) ? end : ((uint64_t)data < end ? (uint64_t)data : end);
    uint64_t length;
    uint32_t state;
    if (d > pos) {
      length = d - pos;
      state = STATE_HOLE | STATE_ZERO;
    } else {
      off_t hole = lseek(c->file, (off_t)pos, SEEK_HOLE);
      uint64_t h = hole < 0 ? end : ((uint64_t)hole < end ? (uint64_t)hole : end);
      if (h <= pos) break;
      length = h - pos;
      state = 0;
    }
    desc[1 + 2 * count] = htobe32((uint32_t)length);
    desc[2 + 2 * count] = htobe32(state);
    count++;
    pos += length;
  }
  if (count == 0) { /* nothing known: one data extent, as the guard answers */
    desc[1] = htobe32(r->length);
    desc[2] = 0;
    count = 1;
  }
  desc[0] = htobe32(c->meta_id);
  chunk(c, r, REPLY_TYPE_BLOCK_STATUS, desc, 4 + 8 * (size_t)count, NULL, 0);
}

static void serve_request(conn_t *c, const request_t *r, buffer_t *b, int *holding);

/* ---- changes: the file's side, and a mirror's ---- */

typedef int (*local_fn)(conn_t *c, const request_t *r, buffer_t *b);

static int local_write(conn_t *c, const request_t *r, buffer_t *b) {
  return r->spliced ? spliced_write(c, r, b) : write_all(c, b->data, r->length, r->offset, r->flags & FLAG_FUA);
}

static int local_trim(conn_t *c, const request_t *r, buffer_t *b) {
  /* Discard is advisory: a filesystem without hole punching keeps the data. */
  if (r->length) (void)fallocate(c->file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)r->offset, (off_t)r->length);
  return (r->flags & FLAG_FUA) && fdatasync(c->file) != 0 ? errno : 0;
}

static int local_zero(conn_t *c, const request_t *r, buffer_t *b) {
  int e = zero_range(c, r);
  if (!e && (r->flags & FLAG_FUA) && fdatasync(c->file) != 0) e = errno;
  return e;
}

/* The copy's reply to a request sent on `ch`, polled for as the next request is (within the process's polling budget). */
static int mirror_reply(conn_t *c, mirror_req_t *q) {
  int poll = c->poll_max_ns > 0 && atomic_fetch_add(&pollers, 1) < max_pollers;
  if (c->poll_max_ns > 0 && !poll) atomic_fetch_sub(&pollers, 1);
  int e = mirror_wait(q, poll ? c->poll_max_ns : 0);
  if (poll) atomic_fetch_sub(&pollers, 1);
  return e;
}

/*
 * A mirror's change (see "Mirrors"): its range held, sent to the copy, done
 * on the file meanwhile, then the copy's reply awaited. A failure on either
 * side is reported (the copies may differ there now: JavaScript rebuilds the
 * mirror, which copies what changed); the file's error is answered first.
 * A FAST_ZERO the file cannot do fast is refused before the copy is asked,
 * as the client then writes the zeros itself.
 */
static int mirrored(conn_t *c, const request_t *r, buffer_t *b, local_fn local) {
  int fast_zero = r->type == CMD_WRITE_ZEROES && (r->flags & FLAG_FAST_ZERO);
  uint16_t flags = r->flags & (r->type == CMD_WRITE_ZEROES ? FLAG_FUA | FLAG_NO_HOLE : FLAG_FUA);
  uint64_t id = r->length ? mirror_hold(c->mg, r->offset, r->offset + r->length) : 0;
  if (r->length && !id) return ENOMEM; /* unheld, the copy could take an overlapping change in another order */
  int e = 0, remote;
  if (fast_zero && (e = local(c, r, b)) != 0) {
    if (id) mirror_release(c->mg, id);
    return e;
  }
  mirror_req_t q;
  int lost = mirror_send(c->mchans, c->nmchans, &q, r->type, flags, r->offset, r->length, r->type == CMD_WRITE ? b->data : NULL);
  if (!fast_zero) e = local(c, r, b);
  remote = lost ? lost : mirror_reply(c, &q);
  if (id) mirror_release(c->mg, id);
  if (e || remote) mirror_failed(c->mg, e ? e : remote);
  return e ? e : remote;
}

/* A WRITE, TRIM or WRITE_ZEROES: through the write gate, recorded, done; 0, the errno to answer, or -1 when dropped (fenced). `sleeps`: it may wait for the disk. */
static int change(conn_t *c, const request_t *r, buffer_t *b, int *holding, local_fn local, int sleeps) {
  if (gate_enter(c, holding) != 0) return -1;
  mark_changed(c, r);
  if (c->mg && !*holding) sleeps = 1; /* the copy's round trip: another worker may read meanwhile */
  if (sleeps) sleeping(c, 1);
  int e = c->mg ? mirrored(c, r, b, local) : local(c, r, b);
  if (sleeps) sleeping(c, 0);
  gate_leave(c);
  return e;
}

/* FLUSH: the file's, and a mirror's copy's at the same time. */
static int flush_both(conn_t *c) {
  mirror_req_t q;
  int lost = c->mg ? mirror_send(c->mchans, c->nmchans, &q, CMD_FLUSH, 0, 0, 0, NULL) : 0;
  int e = fdatasync(c->file) == 0 ? 0 : errno;
  if (!c->mg) return e;
  int remote = lost ? lost : mirror_reply(c, &q);
  if (remote) mirror_failed(c->mg, remote);
  return e ? e : remote;
}

/* Serves a request; a spliced WRITE answered without being written (refused, fenced) leaves its payload in the pipe: dropped with it. */
static void serve(conn_t *c, request_t *r, buffer_t *b, int *holding) {
  serve_request(c, r, b, holding);
  if (r->spliced && b->pipe_r >= 0) {
    int left = 0;
    if (ioctl(b->pipe_r, FIONREAD, &left) != 0 || left > 0) drop_pipe(b);
  }
}

static void serve_request(conn_t *c, const request_t *r, buffer_t *b, int *holding) {
  int outside = r->offset > c->size || r->length > c->size - r->offset;
  int is_write = r->type == CMD_WRITE || r->type == CMD_TRIM || r->type == CMD_WRITE_ZEROES;
  if (is_write && c->read_only) return error_reply(c, r, NBD_EPERM);
  int e;
  switch (r->type) {
    case CMD_READ:
      if (outside) return beyond_reply(c, r, NBD_EINVAL);
      if (r->length > MAX_PAYLOAD) return error_reply(c, r, NBD_EINVAL);
      return do_read(c, r, b, holding);
    case CMD_WRITE:
      if (outside) return beyond_reply(c, r, NBD_ENOSPC);
      e = change(c, r, b, holding, local_write, r->flags & FLAG_FUA);
      return e < 0 ? (void)0 : e ? error_reply(c, r, nbd_error(e)) : ok_reply(c, r);
    case CMD_FLUSH:
      sleeping(c, 1);
      e = flush_both(c);
      sleeping(c, 0);
      return e ? error_reply(c, r, nbd_error(e)) : ok_reply(c, r);
    case CMD_TRIM:
      if (outside) return beyond_reply(c, r, NBD_EINVAL);
      e = change(c, r, b, holding, local_trim, 1);
      return e < 0 ? (void)0 : e ? error_reply(c, r, nbd_error(e)) : ok_reply(c, r);
    case CMD_WRITE_ZEROES:
      if (outside) return beyond_reply(c, r, NBD_ENOSPC);
      e = change(c, r, b, holding, local_zero, 1);
      return e < 0 ? (void)0 : e ? error_reply(c, r, nbd_error(e)) : ok_reply(c, r);
    case CMD_CACHE:
      if (outside) return beyond_reply(c, r, NBD_EINVAL);
      if (r->length) (void)posix_fadvise(c->file, (off_t)r->offset, (off_t)r->length, POSIX_FADV_WILLNEED);
      return ok_reply(c, r);
    case CMD_BLOCK_STATUS:
      if (outside) return beyond_reply(c, r, NBD_EINVAL);
      if (r->length == 0) return error_reply(c, r, NBD_EINVAL);
      if (!c->structured || c->meta_id == 0) return error_reply(c, r, NBD_EINVAL);
      return block_status(c, r);
    default:
      return error_reply(c, r, NBD_EINVAL);
  }
}

/* ---- workers ---- */

/*
 * How long a closing connection waits for its client to close its side (see close_after_replies).
 */
#define LINGER_MS 2000

/*
 * Closes the socket once the client has every reply queued to it. A close()
 * with bytes still unread (a client that sent more after NBD_CMD_DISC) makes
 * the kernel reset the connection and drop what it had not sent yet: the tail
 * of a large READ reply was lost so (bench/fuzz-nbd.ts). So the replies are
 * followed by a FIN, and what the client still sends is read and dropped
 * until it closes its side too, for at most LINGER_MS. A socket shut already
 * (a fence, a broken stream) reads its end at once.
 */
static void close_after_replies(int sock) {
  if (shutdown(sock, SHUT_WR) == 0) {
    char scratch[4096];
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
      clock_gettime(CLOCK_MONOTONIC, &now);
      int64_t left = LINGER_MS - ((now.tv_sec - start.tv_sec) * 1000LL + (now.tv_nsec - start.tv_nsec) / 1000000);
      if (left <= 0) break;
      struct pollfd p = { .fd = sock, .events = POLLIN };
      int n = poll(&p, 1, (int)left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      ssize_t got = recv(sock, scratch, sizeof scratch, MSG_DONTWAIT);
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (got <= 0) break;
    }
  }
  close(sock);
}

/* Ends the connection (by its last thread): flushes after a clean disconnect, closes, tells JavaScript. `linger`: see close_after_replies. */
static void finish(conn_t *c, int linger) {
  pthread_mutex_lock(&c->lock);
  int disc = c->disc;
  end_reason why = c->why == END_NONE ? END_DISCONNECT : c->why;
  c->sock_closed = 1;
  pthread_mutex_unlock(&c->lock);
  /* A clean disconnect leaves the data durable. */
  if (disc) (void)(c->be ? c->be->flush_sync(c->be->ctx) : fdatasync(c->file));
  if (linger) close_after_replies(c->sock);
  else close(c->sock);
  if (c->be) c->be->release(c->be->ctx);
  else close(c->file);
  if (c->mchans) mirror_chans_close(c->mchans, c->nmchans);
  if (c->mg) mirror_group_release(c->mg);
  napi_call_threadsafe_function(c->on_close, (void *)(intptr_t)why, napi_tsfn_blocking);
  napi_release_threadsafe_function(c->on_close, napi_tsfn_release);
  unref(c);
}

static int64_t monotonic_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Whether QoS counts a request: data and its changes, not flushes or metadata. */
static int qos_counts(const request_t *r) {
  return r->type == CMD_READ || r->type == CMD_WRITE || r->type == CMD_WRITE_ZEROES || r->type == CMD_TRIM;
}

/*
 * Takes r's place in the volume's QoS lanes (GCRA, as QosLimiter.admit):
 * returns when it may start, ns of CLOCK_MONOTONIC. Lock-free: the lanes are
 * moved by compare-and-swap, as the event loop and other connections move them.
 */
static int64_t qos_admit(conn_t *c, const request_t *r) {
  int write = r->type != CMD_READ;
  double bytes = (r->type == CMD_READ || r->type == CMD_WRITE) ? (double)r->length : 0;
  double ops = c->qos_size_iops > 0 ? ceil(bytes / c->qos_size_iops) : 1;
  if (ops < 1) ops = 1;
  double cost[QOS_LANES] = { ops, write ? 0 : ops, write ? ops : 0, bytes, write ? 0 : bytes, write ? bytes : 0 };
  int64_t now = monotonic_ns(), start = now;
  for (int i = 0; i < QOS_LANES; i++) {
    if (!c->qos_params[2 * i] || !cost[i]) continue;
    int64_t earliest = __atomic_load_n(&c->qos_tat[i], __ATOMIC_SEQ_CST) - llround(c->qos_params[2 * i + 1]);
    if (earliest > start) start = earliest;
  }
  for (int i = 0; i < QOS_LANES; i++) {
    if (!c->qos_params[2 * i] || !cost[i]) continue;
    int64_t step = llround(cost[i] * c->qos_params[2 * i]);
    int64_t tat = __atomic_load_n(&c->qos_tat[i], __ATOMIC_SEQ_CST);
    for (;;) {
      int64_t next = (tat > start ? tat : start) + step;
      if (__atomic_compare_exchange_n(&c->qos_tat[i], &tat, next, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) break;
    }
  }
  return start;
}

/* Sleeps until `at` (ns of CLOCK_MONOTONIC). */
static void sleep_until(int64_t at) {
  struct timespec ts = { .tv_sec = at / 1000000000LL, .tv_nsec = at % 1000000000LL };
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
}

/* Counts an answered request for nbdStats. */
static void count_request(conn_t *c, const request_t *r, uint64_t ns) {
  int op;
  switch (r->type) {
    case CMD_READ: op = OP_READ; break;
    case CMD_WRITE: op = OP_WRITE; break;
    case CMD_FLUSH: op = OP_FLUSH; break;
    case CMD_TRIM: op = OP_TRIM; break;
    case CMD_WRITE_ZEROES: op = OP_ZERO; break;
    default: op = OP_OTHER;
  }
  uint64_t bytes = (op == OP_READ || op == OP_WRITE) ? r->length : 0;
  atomic_fetch_add_explicit(&c->stats[op][0], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&c->stats[op][1], bytes, memory_order_relaxed);
  atomic_fetch_add_explicit(&c->stats[op][2], ns, memory_order_relaxed);
}

/* ---- backends (nbd_backend.h): requests submitted, answered by the replier ---- */

/* A request submitted to the backend: lives from its submission to its reply. */
typedef struct backend_req {
  nbd_backend_io_t io; /* first: the backend's done gives it back */
  struct backend_req *next;
  conn_t *c;
  request_t r;
  uint8_t *data;  /* a READ's data, a WRITE's payload */
  int64_t result; /* the backend's: >= 0, or a negative errno */
  int flushing;   /* the FUA flush after the write is in flight */
  int gated;      /* holds a place in the write gate */
  int64_t t0;     /* when it was started, for nbdStats */
} backend_req_t;

/* The backend's completion, on its thread: queue the request for the replier, nothing that may block. */
static void backend_done(nbd_backend_io_t *io, int64_t result) {
  backend_req_t *q = (backend_req_t *)io;
  conn_t *c = q->c;
  q->result = result;
  q->next = NULL;
  pthread_mutex_lock(&c->lock);
  if (c->done_tail) c->done_tail->next = q;
  else c->done_head = q;
  c->done_tail = q;
  pthread_cond_signal(&c->done_cond);
  pthread_mutex_unlock(&c->lock);
}

static int needs_fua_flush(const request_t *r) {
  return (r->flags & FLAG_FUA) && (r->type == CMD_WRITE || r->type == CMD_TRIM || r->type == CMD_WRITE_ZEROES);
}

/* Answers a completed request (on the replier), or submits its FUA flush first. */
static void backend_answer(backend_req_t *q) {
  conn_t *c = q->c;
  request_t *r = &q->r;
  if (q->result >= 0 && !q->flushing && needs_fua_flush(r)) {
    q->flushing = 1;
    int rc = c->be->aio_flush(c->be->ctx, &q->io);
    if (rc == 0) return; /* back through the queue */
    q->result = rc;
  }
  if (q->gated) gate_leave(c);
  if (q->result < 0) {
    error_reply(c, r, nbd_error((int)-q->result));
  } else if (r->type == CMD_READ) {
    /* Never past the end (checked), but never stale bytes either. */
    if ((uint64_t)q->result < r->length) memset(q->data + q->result, 0, r->length - (size_t)q->result);
    data_reply(c, r, q->data);
  } else {
    ok_reply(c, r);
  }
  count_request(c, r, (uint64_t)(monotonic_ns() - q->t0));
  release(c, r);
  retire(c);
  free(q->data);
  free(q);
  pthread_mutex_lock(&c->lock);
  c->inflight--;
  pthread_mutex_unlock(&c->lock);
}

/*
 * The replier: answers what the backend completed, in completion order. It
 * ends once no worker reads any more and every submitted request is answered;
 * the last thread to go closes the connection.
 */
static void *replier(void *arg) {
  conn_t *c = arg;
  pthread_mutex_lock(&c->lock);
  for (;;) {
    while (!c->done_head && (c->readers > 0 || c->inflight > 0)) pthread_cond_wait(&c->done_cond, &c->lock);
    backend_req_t *q = c->done_head;
    if (!q) break;
    c->done_head = c->done_tail = NULL;
    pthread_mutex_unlock(&c->lock);
    while (q) {
      backend_req_t *next = q->next;
      backend_answer(q);
      q = next;
    }
    pthread_mutex_lock(&c->lock);
  }
  int last = --c->running == 0;
  pthread_mutex_unlock(&c->lock);
  if (last) finish(c, 1);
  return NULL;
}

/* Block status from the backend: the runs it reports, clipped to the request, gaps as holes, equal neighbours merged. */
typedef struct extents {
  uint32_t *desc; /* pairs (length, state), host order */
  int count, max, full;
  uint64_t pos, end;
} extents_t;

static void extents_add(extents_t *s, uint64_t upto, uint32_t state) {
  if (upto <= s->pos || s->full) return;
  uint64_t len = upto - s->pos;
  if (s->count > 0 && s->desc[2 * s->count - 1] == state) {
    s->desc[2 * s->count - 2] += (uint32_t)len; /* within one request: fits */
  } else if (s->count < s->max) {
    s->desc[2 * s->count] = (uint32_t)len;
    s->desc[2 * s->count + 1] = state;
    s->count++;
  } else {
    s->full = 1;
    return;
  }
  s->pos = upto;
}

static int extents_run(void *arg, uint64_t offset, uint64_t length, int allocated) {
  extents_t *s = arg;
  uint64_t from = offset > s->pos ? offset : s->pos;
  uint64_t to = offset + length < s->end ? offset + length : s->end;
  if (to <= from) return 0;
  extents_add(s, from, STATE_HOLE | STATE_ZERO);
  extents_add(s, to, allocated ? 0 : STATE_HOLE | STATE_ZERO);
  return 0;
}

static void backend_block_status(conn_t *c, const request_t *r) {
  uint32_t desc[1 + 2 * MAX_EXTENTS];
  extents_t s = { desc + 1, 0, (r->flags & FLAG_REQ_ONE) ? 1 : MAX_EXTENTS, 0, r->offset, r->offset + r->length };
  int rc = c->be->block_status(c->be->ctx, r->offset, r->length, extents_run, &s);
  if (rc < 0) return error_reply(c, r, nbd_error(-rc));
  extents_add(&s, s.end, STATE_HOLE | STATE_ZERO);
  for (int i = 0; i < 2 * s.count; i++) desc[1 + i] = htobe32(desc[1 + i]);
  desc[0] = htobe32(c->meta_id);
  chunk(c, r, REPLY_TYPE_BLOCK_STATUS, desc, 4 + 8 * (size_t)s.count, NULL, 0);
}

/*
 * Serves r from the backend: answers at once what needs no backend I/O (range
 * errors, CACHE, empty requests, BLOCK_STATUS), else submits it and returns 1:
 * the replier then answers it and gives back its bounds (the worker must not).
 * A WRITE's payload moves from the worker's buffer to the request.
 */
static int serve_backend(conn_t *c, request_t *r, buffer_t *b, int *holding, int64_t t0) {
  int outside = r->offset > c->size || r->length > c->size - r->offset;
  int is_write = r->type == CMD_WRITE || r->type == CMD_TRIM || r->type == CMD_WRITE_ZEROES;
  if (is_write && c->read_only) return error_reply(c, r, NBD_EPERM), 0;
  switch (r->type) {
    case CMD_READ:
      if (outside) return beyond_reply(c, r, NBD_EINVAL), 0;
      if (r->length > MAX_PAYLOAD) return error_reply(c, r, NBD_EINVAL), 0;
      if (r->length == 0) return data_reply(c, r, NULL), 0;
      break;
    case CMD_WRITE:
    case CMD_WRITE_ZEROES:
      if (outside) return beyond_reply(c, r, NBD_ENOSPC), 0;
      /* Zeros that stay allocated are written in full: slower than the client writing them itself. */
      if (r->type == CMD_WRITE_ZEROES && (r->flags & FLAG_NO_HOLE) && (r->flags & FLAG_FAST_ZERO)) return error_reply(c, r, NBD_ENOTSUP), 0;
      break;
    case CMD_TRIM:
      if (outside) return beyond_reply(c, r, NBD_EINVAL), 0;
      break;
    case CMD_FLUSH:
      break;
    case CMD_CACHE:
      if (outside) return beyond_reply(c, r, NBD_EINVAL), 0;
      return ok_reply(c, r), 0;
    case CMD_BLOCK_STATUS:
      if (outside) return beyond_reply(c, r, NBD_EINVAL), 0;
      if (r->length == 0) return error_reply(c, r, NBD_EINVAL), 0;
      if (!c->structured || c->meta_id == 0) return error_reply(c, r, NBD_EINVAL), 0;
      return backend_block_status(c, r), 0;
    default:
      return error_reply(c, r, NBD_EINVAL), 0;
  }
  if (is_write) {
    if (gate_enter(c, holding) != 0) return 0; /* fenced: dropped unanswered */
    if (r->length == 0 && !(r->flags & FLAG_FUA)) { /* nothing to do */
      gate_leave(c);
      return ok_reply(c, r), 0;
    }
    mark_changed(c, r);
  }
  backend_req_t *q = calloc(1, sizeof *q);
  if (q && r->type == CMD_WRITE) {
    q->data = b->data; /* the payload read_request put there */
    b->data = NULL;
    b->capacity = 0;
  } else if (q && r->type == CMD_READ && !(q->data = malloc(r->length))) {
    free(q);
    q = NULL;
  }
  if (!q) {
    if (is_write) gate_leave(c);
    return error_reply(c, r, NBD_ENOMEM), 0;
  }
  q->io.done = backend_done;
  q->c = c;
  q->r = *r;
  q->gated = is_write;
  q->t0 = t0;
  pthread_mutex_lock(&c->lock);
  c->inflight++;
  pthread_mutex_unlock(&c->lock);
  nbd_backend_t *be = c->be;
  int rc;
  if (is_write && r->length == 0) { /* nothing to write: only FUA's flush */
    q->flushing = 1;
    rc = be->aio_flush(be->ctx, &q->io);
  } else switch (r->type) {
    case CMD_READ: rc = be->aio_read(be->ctx, r->offset, r->length, q->data, &q->io); break;
    case CMD_WRITE: rc = be->aio_write(be->ctx, r->offset, r->length, q->data, &q->io); break;
    case CMD_TRIM: rc = be->aio_discard(be->ctx, r->offset, r->length, &q->io); break;
    case CMD_WRITE_ZEROES: rc = be->aio_write_zeroes(be->ctx, r->offset, r->length, !(r->flags & FLAG_NO_HOLE), &q->io); break;
    default: rc = be->aio_flush(be->ctx, &q->io); break;
  }
  if (rc < 0) backend_done(&q->io, rc); /* not submitted: answered as an error all the same */
  return 1;
}

static void *worker(void *arg) {
  conn_t *c = arg;
  buffer_t b = { NULL, 0, -1, -1, 0 };
  if (batching < 0) {
    const char *e = getenv("BASALT_NBD_BATCH");
    batching = !(e && strcmp(e, "0") == 0);
  }
  batch_t *batch = batching && !c->be ? malloc(sizeof *batch) : NULL;
  if (batch) {
    batch->c = c;
    batch->len = 0;
    batch->on = 0;
    batch->took = 0;
    batch->retires = 0;
  }
  tl_batch = batch;
  int holding = 0; /* this worker holds the read lock */
  int engaged = 0;  /* this worker counts in c->engaged (files only; see engage) */
  for (;;) {
    request_t r = { .type = UINT16_MAX };
    if (!c->be && !engaged) {
      if (engage(c) != 0) {
        let_go(c, &holding);
        break;
      }
      engaged = 1;
    }
    if (!holding) pthread_mutex_lock(&c->read_lock);
    holding = 1;
    if (is_done(c)) {
      let_go(c, &holding);
      break;
    }
    admit(c);
    if (is_done(c)) { /* ended while this worker waited for a place */
      retire(c);
      let_go(c, &holding);
      break;
    }
    end_reason why = read_request(c, &r, &b);
    if (why != END_NONE) {
      flush_batch(); /* answered before the connection ends */
      if (r.spliced) drop_pipe(&b);
      release(c, &r); /* a WRITE whose payload never came */
      retire(c);
      pthread_mutex_lock(&c->lock);
      if (why == END_DISCONNECT && r.type == CMD_DISC) c->disc = 1;
      pthread_mutex_unlock(&c->lock);
      /* The requests in flight finish and are answered; then the socket closes. */
      stop(c, why, 0);
      let_go(c, &holding);
      break;
    }
    /*
     * More requests buffered: let another worker read them while this one serves.
     * A backend's requests are only submitted, which is quick: the worker keeps
     * reading, except for block status (a synchronous round trip).
     */
    if (c->be ? r.type == CMD_BLOCK_STATUS : ((!batch || r.type != CMD_WRITE || r.length > BATCH_WRITE_MAX) && c->rend > c->rstart) || !may_serve_holding(c, &r)) let_go(c, &holding);
    if (r.type == CMD_READ && r.length <= MAX_PAYLOAD) reserve(c, &r, r.length);
    if (c->qos_tat && qos_counts(&r)) {
      int64_t at = qos_admit(c, &r);
      if (at > monotonic_ns()) { /* over the volume's limits: wait, holding up no other request */
        let_go(c, &holding);
        sleeping(c, 1);
        sleep_until(at);
        sleeping(c, 0);
      }
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (batch) {
      /* Only a worker that goes on reading may hold replies back: it sends them before it could wait. */
      batch->on = holding;
      batch->took = 0;
    }
    if (c->be) {
      if (serve_backend(c, &r, &b, &holding, (int64_t)t0.tv_sec * 1000000000LL + t0.tv_nsec)) continue; /* the replier answers it */
    } else {
      serve(c, &r, &b, &holding);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    count_request(c, &r, (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec)));
    release(c, &r);
    if (batch && batch->took && batch->len > 0) batch->retires++; /* its place goes back once its reply is sent */
    else retire(c);
    /* One too many engaged (back from sleeping) waits again; one that kept the read lock goes on reading. */
    if (engaged && !holding && over_engaged(c)) engaged = 0;
    if (b.capacity > KEEP_BUFFER) {
      free(b.data);
      b.data = NULL;
      b.capacity = 0;
    }
  }
  flush_batch();
  tl_batch = NULL;
  free(batch);
  if (engaged) disengage(c);
  free(b.data);
  drop_pipe(&b);
  pthread_mutex_lock(&c->lock);
  int last = --c->running == 0;
  if (c->be && --c->readers == 0) pthread_cond_signal(&c->done_cond); /* the replier may end */
  pthread_mutex_unlock(&c->lock);
  if (last) finish(c, 1);
  return NULL;
}

/* ---- the JavaScript side ---- */

static napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static int get_number(napi_env env, napi_value obj, const char *name, double *out) {
  napi_value v;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return 0;
  return napi_get_value_double(env, v, out) == napi_ok;
}

static int get_bool(napi_env env, napi_value obj, const char *name) {
  napi_value v;
  bool b = false;
  if (napi_get_named_property(env, obj, name, &v) == napi_ok) napi_get_value_bool(env, v, &b);
  return b;
}

/* options[name] when it is a typed array of type `want`: its data, and its length in `count`; NULL when absent. Sets *bad when it is there but something else. */
static void *typed_option(napi_env env, napi_value options, const char *name, napi_typedarray_type want, size_t *count, int *bad) {
  napi_value v;
  bool typed = false;
  if (napi_get_named_property(env, options, name, &v) != napi_ok) return NULL;
  if (napi_is_typedarray(env, v, &typed) != napi_ok || !typed) {
    napi_valuetype t = napi_undefined;
    napi_typeof(env, v, &t);
    if (t != napi_undefined && t != napi_null) *bad = 1;
    return NULL;
  }
  napi_typedarray_type type;
  void *data = NULL;
  if (napi_get_typedarray_info(env, v, &type, count, &data, NULL, NULL) != napi_ok || type != want) {
    *bad = 1;
    return NULL;
  }
  return data;
}

static void call_on_close(napi_env env, napi_value fn, void *context, void *data) {
  if (!env || !fn) return;
  const char *names[] = { "disconnect", "disconnect", "fenced", "protocol" };
  napi_value reason, result;
  napi_create_string_utf8(env, names[(intptr_t)data], NAPI_AUTO_LENGTH, &reason);
  napi_call_function(env, undefined(env), fn, 1, &reason, &result);
}

static void finalize_conn(napi_env env, void *data, void *hint) { unref(data); }

/* The on_close function's finalizer (on the JavaScript thread, once every worker has gone): lets the changed-block bits go. */
static void release_changed(napi_env env, void *data, void *hint) {
  if (data) napi_delete_reference(env, (napi_ref)data);
}

static conn_t *conn_of(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "not an NBD data-plane connection");
    return NULL;
  }
  return p;
}

/* The backend an options object names (an external tagged NBD_BACKEND_TAG); NULL when absent. Sets *bad when it is there but something else. */
static nbd_backend_t *backend_option(napi_env env, napi_value options, int *bad) {
  napi_value v;
  napi_valuetype t = napi_undefined;
  if (napi_get_named_property(env, options, "backend", &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) return NULL;
  if (t == napi_undefined || t == napi_null) return NULL;
  bool tagged = false;
  void *p = NULL;
  if (t == napi_external) napi_check_object_type_tag(env, v, &NBD_BACKEND_TAG, &tagged);
  if (!tagged || napi_get_value_external(env, v, &p) != napi_ok || !p || ((nbd_backend_t *)p)->version != NBD_BACKEND_VERSION) {
    *bad = 1;
    return NULL;
  }
  return p;
}

/* nbdServe({ socket, file | backend, sizeBytes, readOnly, structured, metaContextId, threads, pollMicros, spliceMinBytes, maxBufferBytes, maxRequests, paused, buffered, changedBits, changedBlockShift, qosTat, qosParams, qosSizeIops }, onClose) */
static napi_value nbd_serve(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  double sock, file = -1, size, meta = 0, threads = 8, poll_us = 0;
  int bad_backend = 0;
  nbd_backend_t *be = argc >= 1 ? backend_option(env, argv[0], &bad_backend) : NULL;
  if (bad_backend) {
    napi_throw_type_error(env, NULL, "backend must be an NBD data-plane backend (nbd_backend.h) of this version");
    return NULL;
  }
  if (argc < 2 || !get_number(env, argv[0], "socket", &sock) || (!be && !get_number(env, argv[0], "file", &file)) || !get_number(env, argv[0], "sizeBytes", &size)) {
    napi_throw_type_error(env, NULL, "nbdServe needs { socket, file or backend, sizeBytes } and onClose");
    return NULL;
  }
  get_number(env, argv[0], "metaContextId", &meta);
  get_number(env, argv[0], "threads", &threads);
  get_number(env, argv[0], "pollMicros", &poll_us);
  double splice_min = 0, splice_write_min = 0;
  get_number(env, argv[0], "spliceMinBytes", &splice_min);
  if (splice_min < 0 || splice_min > MAX_PAYLOAD) splice_min = 0;
  get_number(env, argv[0], "spliceWriteMinBytes", &splice_write_min);
  if (splice_write_min < 0 || splice_write_min > MAX_PAYLOAD) splice_write_min = 0;
  double max_bytes = 64.0 * 1024 * 1024;
  get_number(env, argv[0], "maxBufferBytes", &max_bytes);
  if (max_bytes < 1) max_bytes = 1;
  double max_requests = 64;
  get_number(env, argv[0], "maxRequests", &max_requests);
  if (max_requests < 1) max_requests = 1;
  if (max_requests > 1e9) max_requests = 1e9;
  if (poll_us < 0) poll_us = 0;
  if (threads < 1) threads = 1;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  void *buffered = NULL;
  size_t buffered_len = 0;
  napi_value bv;
  bool is_buffer = false;
  if (napi_get_named_property(env, argv[0], "buffered", &bv) == napi_ok && napi_is_buffer(env, bv, &is_buffer) == napi_ok && is_buffer) {
    napi_get_buffer_info(env, bv, &buffered, &buffered_len);
  }
  /* changedBits: a Uint32Array the workers OR into, held by a reference until the last one has gone. */
  int bad = 0;
  size_t count = 0;
  uint32_t *changed = typed_option(env, argv[0], "changedBits", napi_uint32_array, &count, &bad);
  uint64_t changed_blocks = (uint64_t)count * 32;
  double shift = 0;
  if (bad || (changed && (!get_number(env, argv[0], "changedBlockShift", &shift) || shift < 9 || shift > 40))) {
    napi_throw_type_error(env, NULL, "changedBits must be a Uint32Array with changedBlockShift");
    return NULL;
  }
  /* QoS: the lanes' shared TATs (a BigInt64Array on a SharedArrayBuffer, kept alive with the options) and their parameters (copied). */
  size_t lanes = 0, nparams = 0;
  int64_t *qos_tat = typed_option(env, argv[0], "qosTat", napi_bigint64_array, &lanes, &bad);
  double *params = typed_option(env, argv[0], "qosParams", napi_float64_array, &nparams, &bad);
  if (bad || (qos_tat && (lanes != QOS_LANES || !params || nparams != 2 * QOS_LANES))) {
    napi_throw_type_error(env, NULL, "qosTat must be a BigInt64Array of 6 lanes with qosParams, a Float64Array of 12");
    return NULL;
  }
  double qos_params[2 * QOS_LANES] = { 0 };
  if (qos_tat) memcpy(qos_params, params, sizeof qos_params);
  double qos_size_iops = 0;
  get_number(env, argv[0], "qosSizeIops", &qos_size_iops);
  if (!zero_block) { /* the first connection (always on the JavaScript thread) */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    max_pollers = cpus >= 4 ? (int)(cpus / 2) : 1;
    if (!(zero_block = calloc(1, ZERO_BLOCK))) {
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
  }

  /* mirror + mirrorSockets: a synchronous mirror's connection (files only; see "Mirrors"). */
  mirror_group_t *mg = NULL;
  mirror_chan_t *mchans = NULL;
  int nmchans = 0;
  napi_value mv;
  napi_valuetype mt = napi_undefined;
  if (napi_get_named_property(env, argv[0], "mirror", &mv) == napi_ok && napi_typeof(env, mv, &mt) == napi_ok && mt != napi_undefined) {
    int socks[16];
    napi_value arr;
    bool is_array = false;
    uint32_t n = 0;
    if (be || napi_get_named_property(env, argv[0], "mirrorSockets", &arr) != napi_ok || napi_is_array(env, arr, &is_array) != napi_ok || !is_array ||
        napi_get_array_length(env, arr, &n) != napi_ok || n < 1 || n > 16) {
      napi_throw_type_error(env, NULL, "mirror needs a file and mirrorSockets, 1 to 16 sockets");
      return NULL;
    }
    for (uint32_t i = 0; i < n; i++) {
      napi_value e;
      double fd = -1;
      if (napi_get_element(env, arr, i, &e) != napi_ok || napi_get_value_double(env, e, &fd) != napi_ok || fd < 0) {
        napi_throw_type_error(env, NULL, "mirrorSockets must be descriptors");
        return NULL;
      }
      socks[i] = (int)fd;
    }
    if (!(mg = mirror_group_acquire(env, mv))) return NULL;
    if (!(mchans = mirror_chans_open(socks, (int)n))) {
      mirror_group_release(mg);
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
    nmchans = (int)n;
  }

  conn_t *c = calloc(1, sizeof *c);
  size_t rsize = buffered_len > READ_BUFFER ? buffered_len : READ_BUFFER;
  if (!c || !(c->rbuf = malloc(rsize))) {
    free(c);
    if (mchans) mirror_chans_close(mchans, nmchans);
    if (mg) mirror_group_release(mg);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  c->sock = fcntl((int)sock, F_DUPFD_CLOEXEC, 0);
  c->file = be ? -1 : fcntl((int)file, F_DUPFD_CLOEXEC, 0);
  if (c->sock < 0 || (!be && c->file < 0)) {
    int e = errno;
    if (c->sock >= 0) close(c->sock);
    if (c->file >= 0) close(c->file);
    free(c->rbuf);
    free(c);
    if (mchans) mirror_chans_close(mchans, nmchans);
    if (mg) mirror_group_release(mg);
    napi_throw_error(env, NULL, strerror(e));
    return NULL;
  }
  /* The event loop made the socket non-blocking; the workers block. */
  int fl = fcntl(c->sock, F_GETFL);
  if (fl >= 0) fcntl(c->sock, F_SETFL, fl & ~O_NONBLOCK);
  if (buffered_len) memcpy(c->rbuf, buffered, buffered_len);
  c->rsize = rsize;
  c->rend = buffered_len;
  c->size = (uint64_t)size;
  c->read_only = get_bool(env, argv[0], "readOnly");
  c->structured = get_bool(env, argv[0], "structured");
  c->paused = get_bool(env, argv[0], "paused");
  c->meta_id = (uint32_t)meta;
  c->poll_max_ns = (int64_t)(poll_us * 1000);
  c->splice_min = (uint32_t)splice_min;
  c->splice_write_min = be || mg ? 0 : (uint32_t)splice_write_min;
  c->mg = mg;
  c->mchans = mchans;
  c->nmchans = nmchans;
  c->max_bytes = (uint64_t)max_bytes;
  c->max_requests = (int)max_requests;
  c->polling = 1;
  /* What the threads point into (the changed-block bits, the QoS lanes) stays alive with the options object until the last thread has gone. */
  napi_ref changed_ref = NULL;
  if ((changed && changed_blocks) || qos_tat) {
    if (napi_create_reference(env, argv[0], 1, &changed_ref) != napi_ok) changed_ref = NULL;
  }
  if (qos_tat) {
    c->qos_tat = qos_tat;
    memcpy(c->qos_params, qos_params, sizeof qos_params);
    c->qos_size_iops = qos_size_iops;
  }
  if (changed && changed_blocks) {
    c->changed = changed;
    c->changed_blocks = changed_blocks;
    c->changed_shift = (unsigned)shift;
  }
  pthread_mutex_init(&c->read_lock, NULL);
  pthread_mutex_init(&c->write_lock, NULL);
  pthread_mutex_init(&c->lock, NULL);
  pthread_cond_init(&c->cond, NULL);
  pthread_cond_init(&c->done_cond, NULL);
  pthread_cond_init(&c->engage_cond, NULL);
  atomic_init(&c->refs, 2);
  if (be) { /* valid from here until finish releases it */
    be->acquire(be->ctx);
    c->be = be;
  }

  napi_value name;
  napi_create_string_utf8(env, "nbd-data-plane", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, changed_ref, release_changed, NULL, call_on_close, &c->on_close) != napi_ok) {
    if (changed_ref) napi_delete_reference(env, changed_ref);
    close(c->sock);
    if (be) be->release(be->ctx);
    else close(c->file);
    if (mchans) mirror_chans_close(mchans, nmchans);
    if (mg) mirror_group_release(mg);
    c->refs = 1;
    unref(c);
    napi_throw_type_error(env, NULL, "onClose must be a function");
    return NULL;
  }

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, WORKER_STACK);
  pthread_mutex_lock(&c->lock); /* no worker may finish before all are counted */
  pthread_t t;
  /* A backend's replies come from the replier: without it, no worker may start. */
  int can_start = !be || pthread_create(&t, &attr, replier, c) == 0;
  if (be && can_start) c->running++;
  for (int i = 0; can_start && i < (int)threads; i++) {
    if (pthread_create(&t, &attr, worker, c) == 0) {
      c->running++;
      if (be) c->readers++;
    }
  }
  int started = c->running;
  if (be && started > 0 && c->readers == 0) c->why = END_PROTOCOL; /* the replier alone ends at once */
  pthread_mutex_unlock(&c->lock);
  pthread_attr_destroy(&attr);
  if (started == 0) {
    c->why = END_PROTOCOL;
    finish(c, 0); /* calls onClose and drops the workers' reference (on the JavaScript thread: no waiting) */
  }

  napi_value ext;
  napi_create_external(env, c, finalize_conn, NULL, &ext);
  return ext;
}

static napi_value one_conn(napi_env env, napi_callback_info info, conn_t **out) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "missing connection");
    return NULL;
  }
  *out = conn_of(env, argv[0]);
  return *out ? argv[0] : NULL;
}

typedef struct pause_work {
  conn_t *c;
  napi_deferred deferred;
  napi_async_work work;
  int pause;        /* a pause's wait (not a fence's): it also ends at the next resume */
  unsigned pauses;  /* c->pauses when it was asked */
} pause_work_t;

static napi_value wait_for_writes(napi_env env, conn_t *c, const char *what, int pause);

/*
 * Fencing must be complete when its promise resolves: a write that passed
 * the gate before the fence is still in its system call, so the promise
 * waits for the write count to reach zero (gate_enter refuses every write
 * once why is END_FENCED, so the count only falls).
 */
static napi_value nbd_fence(napi_env env, napi_callback_info info) {
  conn_t *c;
  if (!one_conn(env, info, &c)) return NULL;
  pthread_mutex_lock(&c->lock);
  c->done = 1;
  c->why = END_FENCED; /* queued writes are dropped even after a clean disconnect began */
  if (!c->sock_closed) shutdown(c->sock, SHUT_RDWR);
  pthread_cond_broadcast(&c->cond);
  pthread_cond_broadcast(&c->engage_cond);
  pthread_mutex_unlock(&c->lock);
  return wait_for_writes(env, c, "nbd-fence", 0);
}

/*
 * Waits on libuv's thread pool until no write is in flight. A pause's wait
 * also ends when the connection is resumed: a quiesce that gave up on a write
 * stuck in its backend resumes the connection, and must not leave a pool
 * thread waiting for that write for good (four such waits would stop every
 * file and addon call of the process).
 */
static void pause_execute(napi_env env, void *data) {
  pause_work_t *p = data;
  conn_t *c = p->c;
  pthread_mutex_lock(&c->lock);
  while (c->writes > 0 && !(p->pause && c->resumes >= p->pauses)) pthread_cond_wait(&c->cond, &c->lock);
  pthread_mutex_unlock(&c->lock);
}

static void pause_complete(napi_env env, napi_status status, void *data) {
  pause_work_t *p = data;
  napi_resolve_deferred(env, p->deferred, undefined(env));
  napi_delete_async_work(env, p->work);
  unref(p->c);
  free(p);
}

static napi_value nbd_pause(napi_env env, napi_callback_info info) {
  conn_t *c;
  if (!one_conn(env, info, &c)) return NULL;
  pthread_mutex_lock(&c->lock);
  c->paused = 1;
  c->pauses++;
  pthread_mutex_unlock(&c->lock);
  return wait_for_writes(env, c, "nbd-pause", 1);
}

/* A promise that resolves once c has no write in flight (waited for on libuv's thread pool). */
static napi_value wait_for_writes(napi_env env, conn_t *c, const char *what, int pause) {
  pause_work_t *p = calloc(1, sizeof *p);
  napi_value promise, name;
  if (!p) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  p->c = c;
  p->pause = pause;
  if (pause) {
    pthread_mutex_lock(&c->lock);
    p->pauses = c->pauses;
    pthread_mutex_unlock(&c->lock);
  }
  atomic_fetch_add(&c->refs, 1);
  napi_create_promise(env, &p->deferred, &promise);
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, pause_execute, pause_complete, p, &p->work);
  napi_queue_async_work(env, p->work);
  return promise;
}

static napi_value nbd_resume(napi_env env, napi_callback_info info) {
  conn_t *c;
  if (!one_conn(env, info, &c)) return NULL;
  pthread_mutex_lock(&c->lock);
  c->paused = 0;
  c->resumes = c->pauses;
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->lock);
  return undefined(env);
}

static napi_value nbd_stats(napi_env env, napi_callback_info info) {
  conn_t *c;
  if (!one_conn(env, info, &c)) return NULL;
  napi_value out;
  napi_create_array_with_length(env, OPS * 3, &out);
  for (int op = 0; op < OPS; op++) {
    for (int k = 0; k < 3; k++) {
      napi_value v;
      napi_create_double(env, (double)atomic_load_explicit(&c->stats[op][k], memory_order_relaxed), &v);
      napi_set_element(env, out, (uint32_t)(op * 3 + k), v);
    }
  }
  return out;
}

void nbd_dataplane_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "nbdServe", NULL, nbd_serve, NULL, NULL, NULL, napi_enumerable, NULL },
    { "nbdFence", NULL, nbd_fence, NULL, NULL, NULL, napi_enumerable, NULL },
    { "nbdPause", NULL, nbd_pause, NULL, NULL, NULL, napi_enumerable, NULL },
    { "nbdResume", NULL, nbd_resume, NULL, NULL, NULL, napi_enumerable, NULL },
    { "nbdStats", NULL, nbd_stats, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
