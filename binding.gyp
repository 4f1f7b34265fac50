{
  "targets": [
    {
      "target_name": "basalt_io",
      "sources": ["native/basalt_io.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
