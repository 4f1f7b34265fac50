/* The NBD data plane (nbd_dataplane.c): adds nbdServe, nbdFence, nbdPause and nbdResume to the addon's exports. */
#ifndef BASALT_NBD_DATAPLANE_H
#define BASALT_NBD_DATAPLANE_H
#include <node_api.h>
void nbd_dataplane_register(napi_env env, napi_value exports);
#endif
