/*
 * bench_dp_noise.c - the cost of differential-privacy noise for P parameters
 * next to a memcpy of the same bytes in the same run (best of R each):
 *   gaussian   the coordinator's N(0, sigma^2) on float32 (central DP-FedAvg);
 *   discrete   one client's discrete Gaussian share on the u32 quantized input
 *              (distributed DP under secure aggregation), at sigma 1e6 and at
 *              sigma 3e7 (what 50 clients with z = 1 draw per coordinate);
 *   keystream  the AES-CTR randomness alone, 16 bytes per value (the
 *              discrete sampler's draws).
 * One JSON line per kind: seconds, GB/s of the vector, ratio to memcpy.
 *
 *   bench_dp_noise [params=1000000] [reps=5]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/dp_noise.h"
#include "crypto/sa_crypto.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void line(const char *kind, size_t n, double sigma, double s, double base) {
  printf("{\"bench\":\"dp_noise\",\"kind\":\"%s\",\"params\":%zu,\"sigma\":%g,\"seconds\":%.6f,\"gb_per_s\":%.3f,"
         "\"memcpy_seconds\":%.6f,\"ratio_to_memcpy\":%.1f}\n",
         kind, n, sigma, s, (double)n * 4 / s / 1e9, base, s / base);
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? (size_t)atol(argv[1]) : 1000000;
  int reps = argc > 2 ? atoi(argv[2]) : 5;
  float *x = calloc(n, sizeof *x), *y = calloc(n, sizeof *y);
  uint32_t *q = calloc(n, sizeof *q);
  uint8_t *ks = malloc(16 * n);
  if (!x || !y || !q || !ks) return 1;
  double mc = 1e9, g = 1e9, d1 = 1e9, d2 = 1e9, k = 1e9;
  for (int r = 0; r < reps; r++) {
    double t = now_s();
    memcpy(y, x, n * sizeof *x);
    t = now_s() - t;
    if (t < mc) mc = t;
    x[r % n] += y[(r * 7) % n]; /* keep the copy observable */
    t = now_s();
    if (fc_dp_add_gaussian(x, n, 1.0, NULL) != 0) return 1;
    t = now_s() - t;
    if (t < g) g = t;
    t = now_s();
    if (fc_dp_add_discrete_gaussian(q, n, 1e6, NULL) != 0) return 1;
    t = now_s() - t;
    if (t < d1) d1 = t;
    t = now_s();
    if (fc_dp_add_discrete_gaussian(q, n, 3e7, NULL) != 0) return 1;
    t = now_s() - t;
    if (t < d2) d2 = t;
    uint8_t key[16] = {1}, iv[16] = {0};
    fc_ctr c;
    if (fc_ctr_init(&c, key, iv) != 0) return 1;
    t = now_s();
    if (fc_ctr_keystream(&c, ks, 16 * n) != 0) return 1;
    t = now_s() - t;
    fc_ctr_free(&c);
    if (t < k) k = t;
  }
  line("gaussian", n, 1.0, g, mc);
  line("discrete", n, 1e6, d1, mc);
  line("discrete", n, 3e7, d2, mc);
  line("keystream", n, 0, k, mc);
  fprintf(stderr, "checksum %u %g\n", q[n / 2], (double)x[n / 3]);
  free(x);
  free(y);
  free(q);
  free(ks);
  return 0;
}
