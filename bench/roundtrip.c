/*
 * The floor under a synchronous replica's write on this machine: the round
 * trip of a 4 KiB NBD WRITE (28-byte header and payload) and its 16-byte reply
 * between two processes over a Unix socket pair, with nothing else done on
 * either side. bench/replication.ts builds and runs it beside its latency
 * table: a synchronously replicated write costs an unreplicated one plus at
 * least this (the copy's side runs in another process).
 *
 *   cc -O2 -o roundtrip bench/roundtrip.c && ./roundtrip [count]
 *
 * Prints one JSON line: the median and 90th percentile in microseconds with
 * both sides blocking in recv (each request wakes the other process) and with
 * both sides polling (MSG_DONTWAIT in a loop: no wake-up, two CPUs spinning).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REQUEST (28 + 4096)
#define REPLY 16

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* Receives exactly n bytes; polling: never sleeps in recv. 0, or -1 when the peer went away or the socket failed. */
static int recv_all(int s, char *buf, size_t n, int polling) {
  for (size_t got = 0; got < n;) {
    ssize_t r = recv(s, buf + got, n - got, polling ? MSG_DONTWAIT : 0);
    if (r > 0) got += (size_t)r;
    else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return -1;
  }
  return 0;
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Times `count` round trips; fills p50 and p90. 0, or -1 on failure. */
static int measure(int count, int polling, double *p50, double *p90) {
  int sv[2];
  static char buf[REQUEST];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return -1;
  pid_t child = fork();
  if (child < 0) return -1;
  if (child == 0) { /* the copy: answers every request */
    close(sv[0]);
    char in[REQUEST];
    while (recv_all(sv[1], in, REQUEST, polling) == 0) send(sv[1], in, REPLY, MSG_NOSIGNAL);
    _exit(0);
  }
  close(sv[1]);
  double *t = malloc(sizeof *t * (size_t)count);
  if (!t) return -1;
  memset(buf, 0xab, sizeof buf);
  for (int i = 0; i < count; i++) {
    double start = now_us();
    if (send(sv[0], buf, REQUEST, MSG_NOSIGNAL) != REQUEST || recv_all(sv[0], buf, REPLY, polling) != 0) return -1;
    t[i] = now_us() - start;
  }
  close(sv[0]);
  waitpid(child, NULL, 0);
  qsort(t, (size_t)count, sizeof *t, compare);
  *p50 = t[count / 2];
  *p90 = t[count * 9 / 10];
  free(t);
  return 0;
}

int main(int argc, char **argv) {
  int count = argc > 1 ? atoi(argv[1]) : 20000;
  double b50, b90, p50, p90;
  if (count <= 0 || measure(count, 0, &b50, &b90) != 0 || measure(count, 1, &p50, &p90) != 0) {
    perror("roundtrip");
    return 1;
  }
  printf("{\"blocking_p50_us\":%.1f,\"blocking_p90_us\":%.1f,\"polling_p50_us\":%.1f,\"polling_p90_us\":%.1f}\n", b50, b90, p50, p90);
  return 0;
}
