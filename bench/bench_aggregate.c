/*
 * bench_aggregate.c - FedAvg aggregation throughput through the real
 * aggregator (coordinator/aggregate_fedavg.c): K updates of N float32
 * parameters, each streamed in 1 MiB chunks into a staging slot, checked
 * (NaN/Inf + L2 norm) and folded with BLAS saxpy, as the upload handler does.
 *
 * Baselines measured in the same run on the same sizes:
 *   memcpy      of each update (4 MB: cache-resident), the upper bound of one pass
 *   dram        memcpy of 256 MiB: main-memory bandwidth
 *   naive_fold  the same fold with plain C loops (no BLAS)
 * One JSON line per result; "ratio" = aggregation GB/s / memcpy GB/s.
 *
 *   bench_aggregate [updates=100] [params=1000000] [reps=3]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/blas.h"
#include "coordinator/aggregate.h"
#include "fedc/error.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  int k = argc > 1 ? atoi(argv[1]) : 100;
  size_t n = argc > 2 ? (size_t)atol(argv[2]) : 1000000;
  int reps = argc > 3 ? atoi(argv[3]) : 3;
  fc_blas_set_threads(1);
  size_t bytes = n * sizeof(float);
  /* A few distinct source updates, reused round robin (the fold never
   * mutates them), so the bench does not need K x N memory. */
  enum { SRC = 4 };
  float *src[SRC];
  for (int s = 0; s < SRC; s++) {
    src[s] = malloc(bytes);
    for (size_t i = 0; i < n; i++) src[s][i] = (float)((i * 2654435761u + (size_t)s) % 1000) * 1e-6f;
  }
  float *dst = malloc(bytes), *acc = calloc(n, sizeof *acc), *out = malloc(bytes);
  const size_t chunk = 1 << 20;
  double best_agg = 1e9, best_copy = 1e9, best_naive = 1e9, norm_sum = 0;
  fc_agg *agg = NULL;
  if (fc_agg_fedavg_create(n, 1, &agg) != FEDC_OK) return 1;
  for (int r = 0; r < reps; r++) {
    fprintf(stderr, "bench_aggregate: rep %d/%d\n", r + 1, reps);
    /* aggregation through the real interface */
    double t0 = now_s();
    agg->ops->round_begin(agg);
    for (int u = 0; u < k; u++) {
      fc_agg_update *up = NULL;
      if (agg->ops->update_begin(agg, 1000, &up) != FEDC_OK) return 1;
      const uint8_t *p = (const uint8_t *)src[u % SRC];
      for (size_t off = 0; off < bytes; off += chunk)
        agg->ops->update_chunk(agg, up, off, p + off, off + chunk <= bytes ? chunk : bytes - off);
      fc_agg_check chk;
      if (agg->ops->update_check(agg, up, &chk) != FEDC_OK) return 1;
      agg->ops->update_commit(agg, up, 1.0 + u % 7);
    }
    uint32_t count = 0;
    agg->ops->round_finish(agg, out, &count);
    double t = now_s() - t0;
    if (t < best_agg) best_agg = t;
    /* baseline: memcpy of the same bytes (one pass per update) */
    t0 = now_s();
    for (int u = 0; u < k; u++) memcpy(dst, src[u % SRC], bytes);
    t = now_s() - t0;
    if (t < best_copy) best_copy = t;
    /* baseline: naive C fold with the same steps (copy, check, axpy) */
    t0 = now_s();
    memset(acc, 0, bytes);
    double wsum = 0;
    for (int u = 0; u < k; u++) {
      const float *s = src[u % SRC];
      double ss = 0;
      for (size_t i = 0; i < n; i++) dst[i] = s[i];
      for (size_t i = 0; i < n; i++) {
        if (!isfinite(dst[i])) return 1;
        ss += (double)dst[i] * dst[i];
      }
      float w = (float)(1.0 + u % 7);
      for (size_t i = 0; i < n; i++) acc[i] += w * dst[i];
      wsum += w;
      norm_sum += sqrt(ss); /* keeps the check from being optimized away */
    }
    for (size_t i = 0; i < n; i++) out[i] = acc[i] / (float)wsum;
    t = now_s() - t0;
    if (t < best_naive) best_naive = t;
  }
  /* DRAM bandwidth: memcpy of a 256 MiB buffer (far larger than any cache). */
  size_t big = (size_t)256 << 20;
  char *bs = malloc(big), *bd = malloc(big);
  memset(bs, 1, big);
  memset(bd, 2, big);
  double best_dram = 1e9;
  for (int r = 0; r < reps; r++) {
    double t0 = now_s();
    memcpy(bd, bs, big);
    double t = now_s() - t0;
    if (t < best_dram) best_dram = t;
  }
  double dram_gbs = (double)big / 1e9 / best_dram;
  free(bs);
  free(bd);
  double gb = (double)k * bytes / 1e9;
  printf("{\"bench\":\"aggregate_fedavg\",\"updates\":%d,\"params\":%zu,\"seconds\":%.4f,\"gb_per_s\":%.3f,"
         "\"memcpy_gb_per_s\":%.3f,\"ratio_vs_memcpy\":%.3f,\"dram_memcpy_gb_per_s\":%.3f,"
         "\"ratio_vs_dram\":%.3f}\n",
         k, n, best_agg, gb / best_agg, gb / best_copy, best_copy / best_agg, dram_gbs, gb / best_agg / dram_gbs);
  printf("{\"bench\":\"aggregate_naive\",\"updates\":%d,\"params\":%zu,\"seconds\":%.4f,\"gb_per_s\":%.3f,"
         "\"speedup_of_fedc\":%.3f,\"norm_check\":%.3g}\n",
         k, n, best_naive, gb / best_naive, best_naive / best_agg, norm_sum);
  agg->ops->destroy(agg);
  for (int s = 0; s < SRC; s++) free(src[s]);
  free(dst);
  free(acc);
  free(out);
  return 0;
}
