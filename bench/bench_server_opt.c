/*
 * bench_server_opt.c - one server optimizer step over P parameters for each
 * method, next to the memory traffic floor measured in the same run: a
 * memcpy-based pass touching the same number of bytes (the step reads x, d,
 * m, v and writes x, m, v: 4 + 3 floats per parameter for adam/yogi/adagrad,
 * 3 + 2 for avgm, 2 + 1 for sgd). One JSON line per method; ratio = step
 * seconds / floor seconds (1 = at memory speed).
 *
 *   bench_server_opt [params=10000000] [reps=5]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator/server_opt.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? (size_t)atol(argv[1]) : 10000000;
  int reps = argc > 2 ? atoi(argv[2]) : 5;
  float *x = malloc(n * sizeof *x), *d = malloc(n * sizeof *d), *buf = malloc(4 * n * sizeof *buf),
        *dst = malloc(4 * n * sizeof *dst);
  for (size_t i = 0; i < n; i++) {
    x[i] = (float)(i % 1000) * 1e-3f;
    d[i] = (float)((i * 7) % 1000) * 1e-6f - 5e-4f;
  }
  memset(buf, 1, 4 * n * sizeof *buf);
  memset(dst, 0, 4 * n * sizeof *dst);
  for (int kind = FC_SOPT_SGD; kind <= FC_SOPT_YOGI; kind++) {
    fc_sopt_cfg c;
    fc_sopt_cfg_defaults(&c, kind);
    c.lr = 0.01f;
    fc_sopt *o = NULL;
    if (fc_sopt_create(&c, n, &o) != 0) return 1;
    int ns = fc_sopt_nstate(kind);
    size_t rd = (size_t)(2 + ns), wr = (size_t)(1 + ns); /* floats read and written per parameter */
    double best = 1e9, floor_s = 1e9;
    for (int r = 0; r < reps; r++) {
      double t0 = now_s();
      fc_sopt_step(o, x, d);
      double s = now_s() - t0;
      if (s < best) best = s;
      /* The floor: read rd x n floats, write wr x n (memcpy of wr x n plus a read of the rest). */
      t0 = now_s();
      memcpy(dst, buf, wr * n * sizeof *buf);
      volatile float sink = 0;
      for (size_t i = 0; i < (rd - wr) * n; i += 16) sink += buf[i];
      (void)sink; /* read only through the volatile stores */
      s = now_s() - t0;
      if (s < floor_s) floor_s = s;
    }
    printf("{\"bench\":\"server_opt\",\"optimizer\":\"%s\",\"params\":%zu,\"seconds\":%.4f,\"floor_seconds\":%.4f,"
           "\"ratio\":%.2f,\"gbps\":%.2f,\"state_bytes\":%zu}\n",
           fc_sopt_name(kind), n, best, floor_s, best / floor_s, (double)(rd + wr) * n * 4 / best / 1e9,
           (size_t)ns * n * 4);
    fflush(stdout);
    fc_sopt_destroy(o);
  }
  free(x);
  free(d);
  free(buf);
  free(dst);
  return 0;
}
