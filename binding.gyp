{
  "targets": [
    {
      "target_name": "basalt_io",
      "sources": ["native/basalt_io.c", "native/nbd_dataplane.c", "native/nbd_mirror.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-pthread"],
      "ldflags": ["-pthread"],
      "libraries": ["-lm"]
    }
  ]
}
