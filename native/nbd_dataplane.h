/* The NBD data plane (nbd_dataplane.c): adds nbdServe, nbdFence, nbdPause and nbdResume to the addon's exports. */
#ifndef BASALT_NBD_DATAPLANE_H
#define BASALT_NBD_DATAPLANE_H
#include <node_api.h>
#include <sys/uio.h>
void nbd_dataplane_register(napi_env env, napi_value exports);
/* Sends the iovecs whole (MSG_NOSIGNAL | flags), consuming them; 0, or -1 with errno when the socket failed. */
int nbd_send_iov(int sock, struct iovec *iov, int count, int flags);
#endif
