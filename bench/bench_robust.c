/*
 * bench_robust.c - the robust aggregators on N updates of P float32
 * parameters (default 100 x 1M), each next to a baseline measured in the
 * same run. One JSON line per result.
 *   bandwidth        memcpy of the N x P arena: bytes read + written per second
 *   median, trimmed  seconds and GB/s of the arena read, ratio to the bandwidth
 *                    (goal >= 0.25)
 *   sgemm            the SGEMM rate of this machine: a 2000^3 product
 *   sqdist           Krum's pairwise distances through Gram blocks: GFLOP/s
 *                    (2 N^2 P) and ratio to the SGEMM rate (goal >= 0.5), and
 *                    seconds next to the plain-C reference (all pairs, direct)
 *   krum, multikrum, bulyan   the whole rule through the aggregator interface
 *                    (round_finish: packing, distances, scores, the result)
 *   with_loading     every rule (median and trimmed mean too) through the
 *                    aggregator as the coordinator runs it: loading the N
 *                    updates (1 MiB chunks into a staging slot with the
 *                    NaN/Inf and norm check, then the copy into the arena),
 *                    then the rule; "seconds" is the rule alone, as above, and
 *                    "seconds_with_loading" both, as Flower's functions are
 *                    timed (they get the updates as arrays and build theirs);
 *                    median and trimmed mean also as GB/s of updates and the
 *                    ratio to the bandwidth
 *
 *   bench_robust [updates=100] [params=1000000] [threads=2] [ref=1]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/blas.h"
#include "coordinator/aggregate.h"
#include "kernels/robust.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The rule's round_finish in seconds (or < 0); *load gets the seconds the
 * N updates took to load: chunks of 1 MiB into a staging slot (with the
 * check), update_check, commit (the copy into the arena). Best of reps, on a
 * second round of the same aggregator (its arena already touched). */
static double rule_seconds(int kind, uint32_t f, const float *X, size_t n, size_t d, int threads, int reps,
                           double *load) {
  fc_robust_cfg c = {kind, f, 0.1, 0, 1.0, 1, threads};
  fc_agg *a = NULL;
  double best = 1e30;
  *load = 1e30;
  if (fc_agg_robust_create(d, (uint32_t)n, 2, &c, &a) != 0) return -1;
  float *out = malloc(d * sizeof *out);
  memset(out, 0, d * sizeof *out);
  for (int r = 0; r <= reps; r++) {
    a->ops->round_begin(a);
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
      fc_agg_update *u = NULL;
      if (a->ops->update_begin(a, 0, &u) != 0) return -1;
      const uint8_t *p = (const uint8_t *)(X + i * d);
      size_t bytes = d * sizeof *X;
      for (size_t off = 0; off < bytes; off += 1u << 20)
        a->ops->update_chunk(a, u, off, p + off, off + (1u << 20) <= bytes ? 1u << 20 : bytes - off);
      fc_agg_check chk;
      if (a->ops->update_check(a, u, &chk) != 0) return -1;
      a->ops->update_commit(a, u, 1);
    }
    double t1 = now_s();
    uint32_t count = 0;
    int rc = a->ops->round_finish(a, out, &count);
    double t2 = now_s();
    if (rc != 0) return -1;
    if (r > 0 && t2 - t1 < best) best = t2 - t1; /* round 0 touches the arena */
    if (r > 0 && t1 - t0 < *load) *load = t1 - t0;
  }
  free(out);
  a->ops->destroy(a);
  return best;
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? (size_t)atol(argv[1]) : 100, d = argc > 2 ? (size_t)atol(argv[2]) : 1000000;
  int threads = argc > 3 ? atoi(argv[3]) : 2, ref = argc > 4 ? atoi(argv[4]) : 1;
  fc_blas_set_threads(threads);
  float *X = malloc(n * d * sizeof *X), *Y = malloc(n * d * sizeof *Y), *out = malloc(d * sizeof *out);
  double *D = malloc(n * n * sizeof *D);
  if (!X || !Y || !out || !D) return 1;
  unsigned s = 1;
  for (size_t i = 0; i < n * d; i++) {
    s = s * 1103515245u + 12345u;
    X[i] = (float)((s >> 8) & 0xffff) / 65536.0f - 0.5f;
  }
  double gb = (double)n * d * 4 / 1e9;
  /* Bandwidth: best of 3 copies, read + write. */
  double bw = 0;
  for (int r = 0; r < 3; r++) {
    double t = now_s();
    memcpy(Y, X, n * d * sizeof *X);
    t = now_s() - t;
    if (2 * gb / t > bw) bw = 2 * gb / t;
  }
  printf("{\"bench\":\"robust\",\"kind\":\"bandwidth\",\"updates\":%zu,\"params\":%zu,\"gb_per_s\":%.2f}\n", n, d, bw);
  free(Y);
  /* Best of 3, as the copies above: the output is touched first (a first
   * touch costs a page fault per 4 KiB, ~0.4 ms each on this VM, which the
   * aggregator pays once, not per round). */
  memset(out, 0, d * sizeof *out);
  double t = 1e30;
  for (int r = 0; r < 3; r++) {
    double t0 = now_s();
    fc_k_median(X, n, d, d, out, threads);
    t0 = now_s() - t0;
    if (t0 < t) t = t0;
  }
  printf("{\"bench\":\"robust\",\"kind\":\"median\",\"updates\":%zu,\"params\":%zu,\"threads\":%d,\"seconds\":%.4f,"
         "\"gb_per_s\":%.2f,\"ratio_to_bandwidth\":%.3f}\n",
         n, d, threads, t, gb / t, gb / t / bw);
  t = 1e30;
  for (int r = 0; r < 3; r++) {
    double t0 = now_s();
    fc_k_trimmed_mean(X, n, d, d, n / 10, out, threads);
    t0 = now_s() - t0;
    if (t0 < t) t = t0;
  }
  printf("{\"bench\":\"robust\",\"kind\":\"trimmed_mean\",\"updates\":%zu,\"params\":%zu,\"threads\":%d,"
         "\"trim\":%zu,\"seconds\":%.4f,\"gb_per_s\":%.2f,\"ratio_to_bandwidth\":%.3f}\n",
         n, d, threads, n / 10, t, gb / t, gb / t / bw);
  /* The SGEMM rate of this machine. */
  size_t m = 2000;
  float *A = malloc(m * m * sizeof *A), *C = malloc(m * m * sizeof *C);
  for (size_t i = 0; i < m * m; i++) A[i] = (float)(i % 7) * 0.1f;
  fc_sgemm(FC_ROW_MAJOR, FC_NO_TRANS, FC_TRANS, (int)m, (int)m, (int)m, 1, A, (int)m, A, (int)m, 0, C, (int)m);
  t = now_s();
  fc_sgemm(FC_ROW_MAJOR, FC_NO_TRANS, FC_TRANS, (int)m, (int)m, (int)m, 1, A, (int)m, A, (int)m, 0, C, (int)m);
  t = now_s() - t;
  double peak = 2.0 * m * m * m / t / 1e9;
  printf("{\"bench\":\"robust\",\"kind\":\"sgemm\",\"size\":%zu,\"threads\":%d,\"gflop_per_s\":%.1f}\n", m, threads, peak);
  free(A);
  free(C);
  t = now_s();
  fc_k_sqdist(X, n, d, d, D);
  t = now_s() - t;
  double gf = 2.0 * n * n * d / t / 1e9, tr = -1;
  if (ref) {
    tr = now_s();
    fc_kref_sqdist(X, n, d, d, D);
    tr = now_s() - tr;
  }
  printf("{\"bench\":\"robust\",\"kind\":\"sqdist\",\"updates\":%zu,\"params\":%zu,\"seconds\":%.4f,\"gflop_per_s\":%.1f,"
         "\"ratio_to_sgemm\":%.3f,\"reference_seconds\":%.3f,\"speedup_vs_reference\":%.1f}\n",
         n, d, t, gf, gf / peak, tr, tr > 0 ? tr / t : 0);
  uint32_t f = (uint32_t)((n - 3) / 4);
  const struct {
    int kind;
    uint32_t f;
  } rules[] = {{FC_AGG_KRUM, f}, {FC_AGG_MULTIKRUM, f}, {FC_AGG_BULYAN, f}, {FC_AGG_MEDIAN, 0}, {FC_AGG_TRIMMED, 0}};
  for (int i = 0; i < 5; i++) {
    double load = 0, s2 = rule_seconds(rules[i].kind, rules[i].f, X, n, d, threads, 2, &load);
    if (i < 3)
      printf("{\"bench\":\"robust\",\"kind\":\"%s\",\"updates\":%zu,\"params\":%zu,\"f\":%u,\"seconds\":%.4f,"
             "\"reference_distances_seconds\":%.3f}\n",
             fc_robust_name(rules[i].kind), n, d, rules[i].f, s2, tr);
    printf("{\"bench\":\"robust\",\"kind\":\"with_loading\",\"rule\":\"%s\",\"updates\":%zu,\"params\":%zu,"
           "\"threads\":%d,\"seconds\":%.4f,\"load_seconds\":%.4f,\"seconds_with_loading\":%.4f",
           fc_robust_name(rules[i].kind), n, d, threads, s2, load, s2 + load);
    if (i >= 3)
      printf(",\"gb_per_s_with_loading\":%.2f,\"ratio_to_bandwidth_with_loading\":%.3f", gb / (s2 + load),
             gb / (s2 + load) / bw);
    printf("}\n");
  }
  free(X);
  free(out);
  free(D);
  return 0;
}
