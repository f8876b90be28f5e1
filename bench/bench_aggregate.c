/*
 * bench_aggregate.c - FedAvg aggregation throughput through the real
 * aggregator (coordinator/aggregate_fedavg.c) and the real stream checks
 * (common/chunk.c): K updates of N float32 parameters, each cut in 1 MiB
 * chunks as the upload handler receives them.
 *
 * What is measured, each on 1 and on 2 threads (2 threads: two uploads in
 * flight at once, as the coordinator's two event threads take them; each
 * thread streams K/2 updates into a staging slot of its own, commits take the
 * accumulator's lock):
 *   fold      update_chunk (copy into the slot, with the NaN/Inf, norm and max
 *             check of each chunk in the same pass) + update_check + commit
 *             (weighted add into the accumulator); round_begin/finish
 *   digest    the stream's SHA-256 as the upload handler computes it
 *             (fc_chunk_rx_feed over each chunk, then the compare)
 *   together  both, per chunk, as the upload handler runs them
 * Baselines in the same run on the same sizes:
 *   dram      memcpy of 256 MiB: main-memory bandwidth (bytes copied / s)
 *   memcpy    of each update (4 MB: cache-resident)
 *   naive     the fold's steps as plain C loops (copy, check, add), 1 thread
 * Flower's aggregate_inplace and a NumPy weighted loop are measured by
 * bench/bench_fedavg.sh in the same run (bench/fedavg_baselines.py).
 *
 * A few distinct source updates are reused round robin (the fold never
 * changes them): a chunk the handler folds has just been decrypted and is in
 * cache too. Best of `reps` for every figure. One JSON line per result:
 *   {"bench":"aggregate","what":W,"threads":T,"updates":K,"params":N,
 *    "seconds":S,"gb_per_s":R,"ratio_vs_dram":R/dram}
 * GB = 10^9 bytes of updates; ratio_vs_dram divides by the DRAM memcpy rate.
 *
 *   bench_aggregate [updates=100] [params=1000000] [reps=5]
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common/blas.h"
#include "common/chunk.h"
#include "coordinator/aggregate.h"
#include "fedc/error.h"

enum { SRC = 4, CHUNK = 1 << 20, MAX_THREADS = 2 };
enum { W_FOLD = 1, W_DIGEST = 2, W_BOTH = 3 };

static float *src[SRC];
static uint8_t src_sha[SRC][32];
static fc_model_spec spec;
static size_t n_params;

/* CPU seconds of the process (all threads): robust where wall time is not,
 * on a machine shared with other jobs. */
static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec * 1e-6;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct job {
  fc_agg *agg;
  int what;
  int first, count; /* updates [first, first + count) */
  int failed;
} job;

/* One upload: header, chunks, end, check, commit; what says which parts run. */
static int one_update(fc_agg *agg, int what, int u) {
  size_t bytes = n_params * sizeof(float);
  const uint8_t *p = (const uint8_t *)src[u % SRC];
  fc_chunk_rx rx;
  char err[300];
  fc_agg_update *up = NULL;
  if ((what & W_DIGEST) && fc_chunk_rx_begin(&rx, &spec, bytes, src_sha[u % SRC], 32, CHUNK, &spec, bytes, err,
                                             sizeof err) != FEDC_OK)
    return -1;
  if ((what & W_FOLD) && agg->ops->update_begin(agg, 10000, &up) != FEDC_OK) return -1;
  for (size_t off = 0; off < bytes; off += CHUNK) {
    size_t len = off + CHUNK <= bytes ? CHUNK : bytes - off;
    if ((what & W_DIGEST) && fc_chunk_rx_feed(&rx, off, p + off, len, err, sizeof err) != FEDC_OK) return -1;
    if ((what & W_FOLD) && agg->ops->update_chunk(agg, up, off, p + off, len) != FEDC_OK) return -1;
  }
  if ((what & W_DIGEST) && fc_chunk_rx_end(&rx, err, sizeof err) != FEDC_OK) return -1;
  if (what & W_DIGEST) fc_chunk_rx_free(&rx);
  if (what & W_FOLD) {
    fc_agg_check chk;
    if (agg->ops->update_check(agg, up, &chk) != FEDC_OK) return -1;
    agg->ops->update_commit(agg, up, 1.0 + u % 7);
  }
  return 0;
}

static void *worker(void *arg) {
  job *j = arg;
  for (int u = j->first; u < j->first + j->count && !j->failed; u++) j->failed = one_update(j->agg, j->what, u) != 0;
  return NULL;
}

/* Seconds for k updates on `threads` threads (best of reps), or < 0; the
 * least CPU seconds of a rep in *cpu. */
static double run(fc_agg *agg, int what, int k, int threads, int reps, float *out, double *cpu) {
  double best = 1e9;
  *cpu = 1e9;
  for (int r = 0; r < reps; r++) {
    job jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    double c0 = cpu_s();
    double t0 = now_s();
    agg->ops->round_begin(agg);
    for (int t = 0; t < threads; t++) {
      jobs[t] = (job){agg, what, k * t / threads, k * (t + 1) / threads - k * t / threads, 0};
      if (t > 0) pthread_create(&tid[t], NULL, worker, &jobs[t]);
    }
    worker(&jobs[0]);
    for (int t = 1; t < threads; t++) pthread_join(tid[t], NULL);
    uint32_t count = 0;
    if (what & W_FOLD) agg->ops->round_finish(agg, out, &count);
    double dt = now_s() - t0;
    if (cpu_s() - c0 < *cpu) *cpu = cpu_s() - c0;
    for (int t = 0; t < threads; t++)
      if (jobs[t].failed) return -1;
    if ((what & W_FOLD) && count != (uint32_t)k) return -1;
    if (dt < best) best = dt;
  }
  return best;
}

static void report(const char *what, int threads, int k, double seconds, double cpu, double gb, double dram_gbs) {
  printf("{\"bench\":\"aggregate\",\"what\":\"%s\",\"threads\":%d,\"updates\":%d,\"params\":%zu,\"seconds\":%.4f,"
         "\"gb_per_s\":%.3f,\"ratio_vs_dram\":%.3f,\"cpu_seconds\":%.4f,\"gb_per_cpu_s\":%.3f}\n",
         what, threads, k, n_params, seconds, gb / seconds, gb / seconds / dram_gbs, cpu, gb / cpu);
  fflush(stdout);
}

int main(int argc, char **argv) {
  int k = argc > 1 ? atoi(argv[1]) : 100;
  n_params = argc > 2 ? (size_t)atol(argv[2]) : 1000000;
  int reps = argc > 3 ? atoi(argv[3]) : 5;
  if (k < 2 || n_params < 1 || reps < 1) {
    fprintf(stderr, "usage: bench_aggregate [updates>=2] [params>=1] [reps>=1]\n");
    return 2;
  }
  fc_blas_set_threads(1);
  size_t bytes = n_params * sizeof(float);
  uint64_t shape[1] = {n_params};
  memset(&spec, 0, sizeof spec);
  fc_model_spec_add(&spec, "w", 1, shape);
  for (int s = 0; s < SRC; s++) {
    src[s] = malloc(bytes);
    for (size_t i = 0; i < n_params; i++) src[s][i] = (float)((i * 2654435761u + (size_t)s) % 1000) * 1e-6f;
    fc_payload_sha256(src[s], bytes, src_sha[s]);
  }
  float *dst = malloc(bytes), *acc = calloc(n_params, sizeof *acc), *out = malloc(bytes);
  memset(dst, 0, bytes);
  memset(out, 0, bytes);

  /* DRAM bandwidth: memcpy of a 256 MiB buffer (far larger than any cache). */
  size_t big = (size_t)256 << 20;
  char *bs = malloc(big), *bd = malloc(big);
  memset(bs, 1, big);
  memset(bd, 2, big);
  double best_dram = 1e9, cpu_dram = 1e9;
  for (int r = 0; r < reps; r++) {
    double c0 = cpu_s(), t0 = now_s();
    memcpy(bd, bs, big);
    double t = now_s() - t0, c = cpu_s() - c0;
    if (t < best_dram) best_dram = t;
    if (c < cpu_dram) cpu_dram = c;
  }
  double dram_gbs = (double)big / 1e9 / best_dram;
  free(bs);
  free(bd);
  printf("{\"bench\":\"aggregate\",\"what\":\"dram_memcpy\",\"threads\":1,\"bytes\":%zu,\"seconds\":%.4f,"
         "\"gb_per_s\":%.3f,\"cpu_seconds\":%.4f,\"gb_per_cpu_s\":%.3f}\n",
         big, best_dram, dram_gbs, cpu_dram, (double)big / 1e9 / cpu_dram);

  double gb = (double)k * bytes / 1e9;
  fc_agg *agg = NULL;
  if (fc_agg_fedavg_create(n_params, MAX_THREADS, &agg) != FEDC_OK) return 1;
  static const struct {
    const char *name;
    int what;
  } kinds[] = {{"fold", W_FOLD}, {"digest", W_DIGEST}, {"together", W_BOTH}};
  for (size_t w = 0; w < sizeof kinds / sizeof *kinds; w++)
    for (int threads = 1; threads <= MAX_THREADS; threads++) {
      fprintf(stderr, "bench_aggregate: %s on %d thread(s)\n", kinds[w].name, threads);
      double cpu;
      double t = run(agg, kinds[w].what, k, threads, reps, out, &cpu);
      if (t < 0) {
        fprintf(stderr, "bench_aggregate: %s failed\n", kinds[w].name);
        return 1;
      }
      report(kinds[w].name, threads, k, t, cpu, gb, dram_gbs);
    }

  /* --reproducible-sum: the same fold into int64 sums on the default grid
   * (clip 10, weight cap 10,000: 2^-28), next to the float fold above. */
  fc_agg *fix = NULL;
  if (fc_agg_fedavg_create_fixed(n_params, MAX_THREADS, fc_fixed_frac_bits(10, 10000), 0, &fix) != FEDC_OK) return 1;
  for (int threads = 1; threads <= MAX_THREADS; threads++) {
    fprintf(stderr, "bench_aggregate: fold_fixed on %d thread(s)\n", threads);
    double cpu;
    double t = run(fix, W_FOLD, k, threads, reps, out, &cpu);
    if (t < 0) {
      fprintf(stderr, "bench_aggregate: fold_fixed failed\n");
      return 1;
    }
    report("fold_fixed", threads, k, t, cpu, gb, dram_gbs);
  }
  fix->ops->destroy(fix);

  /* memcpy of each update (one pass per update, cache-resident). */
  double best_copy = 1e9, best_naive = 1e9, norm_sum = 0;
  double cpu_copy = 1e9, cpu_naive = 1e9;
  for (int r = 0; r < reps; r++) {
    double c0 = cpu_s(), t0 = now_s();
    for (int u = 0; u < k; u++) memcpy(dst, src[u % SRC], bytes);
    double t = now_s() - t0, c = cpu_s() - c0;
    if (t < best_copy) best_copy = t;
    if (c < cpu_copy) cpu_copy = c;
  }
  report("memcpy", 1, k, best_copy, cpu_copy, gb, dram_gbs);
  /* The same steps as naive C loops (copy, check, weighted add). */
  for (int r = 0; r < reps; r++) {
    double c0 = cpu_s(), t0 = now_s();
    memset(acc, 0, bytes);
    double wsum = 0;
    for (int u = 0; u < k; u++) {
      const float *s = src[u % SRC];
      double ss = 0;
      for (size_t i = 0; i < n_params; i++) dst[i] = s[i];
      for (size_t i = 0; i < n_params; i++) {
        if (!isfinite(dst[i])) return 1;
        ss += (double)dst[i] * dst[i];
      }
      float w = (float)(1.0 + u % 7);
      for (size_t i = 0; i < n_params; i++) acc[i] += w * dst[i];
      wsum += w;
      norm_sum += sqrt(ss); /* keeps the check from being optimized away */
    }
    for (size_t i = 0; i < n_params; i++) out[i] = acc[i] / (float)wsum;
    double t = now_s() - t0, c = cpu_s() - c0;
    if (t < best_naive) best_naive = t;
    if (c < cpu_naive) cpu_naive = c;
  }
  report("naive_c", 1, k, best_naive, cpu_naive, gb, dram_gbs);
  fprintf(stderr, "bench_aggregate: norm check %g, out[1] %g\n", norm_sum, (double)out[1]);
  agg->ops->destroy(agg);
  for (int s = 0; s < SRC; s++) free(src[s]);
  free(dst);
  free(acc);
  free(out);
  return 0;
}
