{
  "targets": [
    {
      "target_name": "basalt_rbd",
      "sources": ["basalt_rbd.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-pthread"],
      "ldflags": ["-pthread"],
      "libraries": ["-lrbd", "-lrados"]
    }
  ]
}
