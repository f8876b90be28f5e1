/*
 * robust.c - robust-aggregation kernels (robust.h).
 */
#include "kernels/robust.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#ifdef __SSE__
#include <xmmintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "common/blas.h"
#include "fedc/error.h"

#define BLOCK 64      /* coordinates per transposed block: 64 x n floats stay in L1/L2 */
#define GRAM_BLOCK 16384 /* parameters per SGEMM block of the Gram matrix */

/* ---- selection ---- */

static void swapf(float *a, float *b) {
  float t = *a;
  *a = *b;
  *b = t;
}

/* Partition a[0..n) so that a[k] is the k-th smallest, a[<k] <= a[k] <= a[>k]
 * (quickselect, median-of-3 pivot, Hoare partition; O(n) expected). */
static void select_k(float *a, size_t n, size_t k) {
  size_t lo = 0, hi = n - 1;
  while (hi > lo) {
    if (hi - lo < 16) { /* insertion sort the small rest */
      for (size_t i = lo + 1; i <= hi; i++) {
        float v = a[i];
        size_t j = i;
        while (j > lo && a[j - 1] > v) a[j] = a[j - 1], j--;
        a[j] = v;
      }
      return;
    }
    size_t mid = lo + (hi - lo) / 2;
    if (a[mid] < a[lo]) swapf(&a[mid], &a[lo]);
    if (a[hi] < a[lo]) swapf(&a[hi], &a[lo]);
    if (a[hi] < a[mid]) swapf(&a[hi], &a[mid]);
    float p = a[mid];
    size_t i = lo, j = hi;
    for (;;) {
      while (a[i] < p) i++;
      while (a[j] > p) j--;
      if (i >= j) break;
      swapf(&a[i], &a[j]);
      i++;
      j--;
    }
    /* a[lo..j] <= p <= a[j+1..hi] */
    if (k <= j) hi = j;
    else lo = j + 1;
  }
}

static void sort_small(float *a, size_t n) {
  for (size_t i = 1; i < n; i++) {
    float v = a[i];
    size_t j = i;
    while (j > 0 && a[j - 1] > v) a[j] = a[j - 1], j--;
    a[j] = v;
  }
}

static int cmpf(const void *x, const void *y) {
  float a = *(const float *)x, b = *(const float *)y;
  return (a > b) - (a < b);
}

static void sort_col(float *a, size_t n) {
  if (n <= 64) sort_small(a, n);
  else qsort(a, n, sizeof *a, cmpf);
}

/* Column statistics of one sorted-or-selectable column a[0..n). */
enum { K_MEDIAN, K_TRIMMED, K_WINDOW };

static float col_median(float *a, size_t n) {
  size_t k = n / 2;
  select_k(a, n, k);
  if (n % 2) return a[k];
  float lo = a[0];
  for (size_t i = 1; i < k; i++) lo = a[i] > lo ? a[i] : lo; /* the largest of the lower half */
  return (float)(((double)lo + a[k]) / 2);
}

static float col_trimmed(float *a, size_t n, size_t trim) {
  if (trim) {
    select_k(a, n, trim);
    select_k(a + trim, n - trim, n - 2 * trim - 1);
  }
  double s = 0;
  for (size_t i = trim; i < n - trim; i++) s += a[i];
  return (float)(s / (double)(n - 2 * trim));
}

/* The mean of the `keep` values closest to the median: sorted, they are a
 * window; grow it from the median outwards, each step taking the nearer end
 * (a tie: the one whose rank is nearer the middle, then the lower). */
static float col_window_sorted(const float *a, size_t n, size_t keep) {
  double med = n % 2 ? a[n / 2] : ((double)a[n / 2 - 1] + a[n / 2]) / 2;
  size_t lo = n / 2, hi = n / 2; /* the window is [lo, hi) */
  while (hi - lo < keep) {
    if (lo == 0) hi++;
    else if (hi == n) lo--;
    else {
      double dl = med - a[lo - 1], dh = a[hi] - med;
      /* A tie goes to the rank nearer the middle, then to the lower value. */
      long rl = labs(2 * (long)(lo - 1) - (long)(n - 1)), rh = labs(2 * (long)hi - (long)(n - 1));
      if (dl < dh || (dl == dh && rl <= rh)) lo--;
      else hi++;
    }
  }
  double s = 0;
  for (size_t i = lo; i < hi; i++) s += a[i];
  return (float)(s / (double)keep);
}

static float col_window(float *a, size_t n, size_t keep) {
  sort_col(a, n);
  return col_window_sorted(a, n, keep);
}

/* ---- sorting network across rows (median, trimmed mean) ----
 * Batcher's odd-even merge sort for n rows (padded to a power of two; a
 * comparator reaching past n is dropped: the padding is +inf and never
 * moves). Each comparator is a min/max of two rows over NET_V coordinates:
 * one AVX-512 vector, two AVX2 or four SSE ones. No branch depends on the
 * data, unlike quickselect's partition steps.
 *
 * Layout: a block of NET_B coordinates is copied into NET_B / NET_V
 * sub-blocks, each n rows of NET_V floats back to back (6.4 KB for n = 100),
 * and the whole network runs over one sub-block before the next. So every
 * comparator touches L1 only: the first version ran each comparator over 256
 * coordinates with a 1 KB row stride, which streamed the 100 KB block
 * through L2 ~1,100 times and, at that stride, kept only 4 L1 sets busy.
 * Afterwards row r of a sub-block holds the r-th smallest value of each of
 * its coordinates.
 *
 * On AVX2 and AVX-512 each block of 16 rows is first sorted in registers
 * (NET16 below, no memory traffic) and only Batcher's merges of those
 * blocks go through memory; comparators that cannot change the result are
 * pruned (prune()). For n = 100 that leaves 513 memory comparators of the
 * 1,104 in the full network for the median (515 for the trimmed mean).
 * Measured (bench_robust, 100 x 1M, 2 threads, this machine): median 0.168 s
 * -> 0.040 s, trimmed mean 0.083 s -> 0.042 s, 0.29-0.32 and 0.26-0.31 of
 * the memcpy bandwidth of the same run (docs/results.md). */
#define NET_V 16
#define NET_B 64
#define NET_MAX_N 1024 /* beyond this the network (n log^2 n comparators) loses to quickselect */

/* The comparators into pairs (2 per comparator), or only their count if
 * pairs is NULL. p0 = 1: the whole network; p0 = 16: only the merges of
 * 16-row blocks already sorted (the x86 paths sort those in registers). */
static size_t batcher(size_t n, size_t p0, uint16_t *pairs) {
  size_t N = 1, np = 0;
  while (N < n) N <<= 1;
  for (size_t p = p0; p < N; p <<= 1)
    for (size_t k = p; k >= 1; k >>= 1) {
      for (size_t j = k % p; j + k < N; j += 2 * k)
        for (size_t i = 0; i < k && i + j + k < N; i++)
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p) && i + j + k < n) {
            if (pairs) {
              pairs[2 * np] = (uint16_t)(i + j);
              pairs[2 * np + 1] = (uint16_t)(i + j + k);
            }
            np++;
          }
      if (k == 1) break;
    }
  return np;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86_PATHS 1
/* Batcher's network for 16 (63 comparators, from batcher(16, 1, .)), as
 * straight-line code so the 16 rows stay in registers. */
#define NET16(CE)                                                                                                  \
  CE(0, 1) CE(2, 3) CE(4, 5) CE(6, 7) CE(8, 9) CE(10, 11) CE(12, 13) CE(14, 15) CE(0, 2) CE(1, 3) CE(4, 6) CE(5, 7) \
  CE(8, 10) CE(9, 11) CE(12, 14) CE(13, 15) CE(1, 2) CE(5, 6) CE(9, 10) CE(13, 14) CE(0, 4) CE(1, 5) CE(2, 6)      \
  CE(3, 7) CE(8, 12) CE(9, 13) CE(10, 14) CE(11, 15) CE(2, 4) CE(3, 5) CE(10, 12) CE(11, 13) CE(1, 2) CE(3, 4)     \
  CE(5, 6) CE(9, 10) CE(11, 12) CE(13, 14) CE(0, 8) CE(1, 9) CE(2, 10) CE(3, 11) CE(4, 12) CE(5, 13) CE(6, 14)     \
  CE(7, 15) CE(4, 8) CE(5, 9) CE(6, 10) CE(7, 11) CE(2, 4) CE(3, 5) CE(6, 8) CE(7, 9) CE(10, 12) CE(11, 13)         \
  CE(1, 2) CE(3, 4) CE(5, 6) CE(7, 8) CE(9, 10) CE(11, 12) CE(13, 14)

/* Sort each block of 16 rows in registers (a short last block is padded
 * with +inf, which sorts after every value and is not stored), then run
 * the merge comparators over memory. */
__attribute__((target("avx512f"))) static void net_sort_sub_avx512(float *sub, size_t n, const uint16_t *pairs,
                                                                   size_t np) {
  for (size_t r0 = 0; r0 < n; r0 += 16) {
    size_t rows = n - r0 < 16 ? n - r0 : 16;
    float *blk = sub + r0 * NET_V;
    __m512 v[16];
    for (size_t r = 0; r < 16; r++) v[r] = r < rows ? _mm512_load_ps(blk + r * NET_V) : _mm512_set1_ps(INFINITY);
#define CE(a, b)                                                                                                   \
  {                                                                                                                \
    __m512 t = _mm512_min_ps(v[a], v[b]);                                                                          \
    v[b] = _mm512_max_ps(v[a], v[b]);                                                                              \
    v[a] = t;                                                                                                      \
  }
    NET16(CE)
#undef CE
    for (size_t r = 0; r < rows; r++) _mm512_store_ps(blk + r * NET_V, v[r]);
  }
  for (size_t q = 0; q < np; q++) {
    float *x = sub + (size_t)pairs[2 * q] * NET_V, *y = sub + (size_t)pairs[2 * q + 1] * NET_V;
    __m512 u = _mm512_loadu_ps(x), v = _mm512_loadu_ps(y);
    _mm512_storeu_ps(x, _mm512_min_ps(u, v));
    _mm512_storeu_ps(y, _mm512_max_ps(u, v));
  }
}

__attribute__((target("avx2"))) static void net_sort_sub_avx2(float *sub, size_t n, const uint16_t *pairs,
                                                               size_t np) {
  for (size_t r0 = 0; r0 < n; r0 += 16) {
    size_t rows = n - r0 < 16 ? n - r0 : 16;
    for (size_t h = 0; h < NET_V; h += 8) { /* each 8-lane half on its own: 16 ymm registers */
      float *blk = sub + r0 * NET_V + h;
      __m256 v[16];
      for (size_t r = 0; r < 16; r++)
        v[r] = r < rows ? _mm256_load_ps(blk + r * NET_V) : _mm256_set1_ps(INFINITY);
#define CE(a, b)                                                                                                   \
  {                                                                                                                \
    __m256 t = _mm256_min_ps(v[a], v[b]);                                                                          \
    v[b] = _mm256_max_ps(v[a], v[b]);                                                                              \
    v[a] = t;                                                                                                      \
  }
      NET16(CE)
#undef CE
      for (size_t r = 0; r < rows; r++) _mm256_store_ps(blk + r * NET_V, v[r]);
    }
  }
  for (size_t q = 0; q < np; q++) {
    float *x = sub + (size_t)pairs[2 * q] * NET_V, *y = sub + (size_t)pairs[2 * q + 1] * NET_V;
    __m256 u0 = _mm256_loadu_ps(x), v0 = _mm256_loadu_ps(y);
    __m256 u1 = _mm256_loadu_ps(x + 8), v1 = _mm256_loadu_ps(y + 8);
    _mm256_storeu_ps(x, _mm256_min_ps(u0, v0));
    _mm256_storeu_ps(y, _mm256_max_ps(u0, v0));
    _mm256_storeu_ps(x + 8, _mm256_min_ps(u1, v1));
    _mm256_storeu_ps(y + 8, _mm256_max_ps(u1, v1));
  }
}
/* A full block (NET_B coordinates) of n rows into its sub-blocks: one
 * 64-byte load and store per row and sub-block. */
__attribute__((target("avx512f"))) static void net_gather_avx512(float *buf, const float *X, size_t ld, size_t n) {
  for (size_t r = 0; r < n; r++) {
    const float *src = X + r * ld;
    for (size_t s = 0; s < NET_B / NET_V; s++)
      _mm512_store_ps(buf + (s * n + r) * NET_V, _mm512_loadu_ps(src + s * NET_V));
  }
}

/* Trimmed mean: rows [r0, r1) of a sorted sub-block summed per lane in double. */
__attribute__((target("avx512f"))) static void net_sum_avx512(const float *sub, size_t r0, size_t r1, double *acc) {
  __m512d a = _mm512_setzero_pd(), b = _mm512_setzero_pd();
  for (size_t r = r0; r < r1; r++) {
    __m512 x = _mm512_load_ps(sub + r * NET_V);
    a = _mm512_add_pd(a, _mm512_cvtps_pd(_mm512_castps512_ps256(x)));
    b = _mm512_add_pd(b, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1))));
  }
  _mm512_storeu_pd(acc, a);
  _mm512_storeu_pd(acc + 8, b);
}

__attribute__((target("avx2"))) static void net_sum_avx2(const float *sub, size_t r0, size_t r1, double *acc) {
  __m256d a[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
  for (size_t r = r0; r < r1; r++)
    for (int q = 0; q < 4; q++) a[q] = _mm256_add_pd(a[q], _mm256_cvtps_pd(_mm_load_ps(sub + r * NET_V + 4 * q)));
  for (int q = 0; q < 4; q++) _mm256_storeu_pd(acc + 4 * q, a[q]);
}
#endif

static void net_sum_base(const float *sub, size_t r0, size_t r1, double *acc) {
  for (size_t c = 0; c < NET_V; c++) acc[c] = 0;
  for (size_t r = r0; r < r1; r++)
    for (size_t c = 0; c < NET_V; c++) acc[c] += sub[r * NET_V + c];
}

static void net_sort_sub_base(float *sub, size_t n, const uint16_t *pairs, size_t np) {
  (void)n;
  for (size_t q = 0; q < np; q++) {
    float *x = sub + (size_t)pairs[2 * q] * NET_V, *y = sub + (size_t)pairs[2 * q + 1] * NET_V;
#ifdef __SSE__
    /* GCC does not if-convert the float compare-exchange below into
     * min/max (it reports "control flow in loop"): do it by hand. */
    for (size_t c = 0; c < NET_V; c += 4) {
      __m128 u = _mm_loadu_ps(x + c), v = _mm_loadu_ps(y + c);
      _mm_storeu_ps(x + c, _mm_min_ps(u, v));
      _mm_storeu_ps(y + c, _mm_max_ps(u, v));
    }
#else
    for (size_t c = 0; c < NET_V; c++) {
      float u = x[c], v = y[c];
      x[c] = u < v ? u : v;
      y[c] = u < v ? v : u;
    }
#endif
  }
}

typedef void (*net_sort_fn)(float *sub, size_t n, const uint16_t *pairs, size_t np);
typedef void (*net_sum_fn)(const float *sub, size_t r0, size_t r1, double *acc);
typedef void (*net_gather_fn)(float *buf, const float *X, size_t ld, size_t n);

/* The widest the CPU has (the binary is built for baseline x86-64), and the
 * first merge level its comparator list starts at: 16 where blocks of 16
 * rows are sorted in registers, 1 (the whole network) otherwise. */
static net_sort_fn net_sort_pick(size_t *p0, net_sum_fn *sum, net_gather_fn *gather) {
  *gather = NULL;
#ifdef HAVE_X86_PATHS
  /* FEDC_KERNEL_ISA=avx2|base caps the choice: tests run every path on
   * whatever CPU they have. */
  const char *cap = getenv("FEDC_KERNEL_ISA");
  int base = cap && strcmp(cap, "base") == 0, no512 = base || (cap && strcmp(cap, "avx2") == 0);
  *p0 = 16;
  if (!no512 && __builtin_cpu_supports("avx512f")) {
    *sum = net_sum_avx512;
    *gather = net_gather_avx512;
    return net_sort_sub_avx512;
  }
  if (!base && __builtin_cpu_supports("avx2")) {
    *sum = net_sum_avx2;
    return net_sort_sub_avx2;
  }
#endif
  *p0 = 1;
  *sum = net_sum_base;
  return net_sort_sub_base;
}

/* One worker's share of the coordinate blocks [b0, b1) (both paths). */
typedef struct blk_job {
  const float *X;
  size_t n, d, ld, param; /* param: trim (trimmed mean) or keep (window) */
  int kind;
  const uint16_t *pairs;  /* the network's comparators (network path) */
  size_t np;
  net_sort_fn sort;       /* which applies them */
  net_sum_fn sum;         /* trimmed mean: the kept rows' sums */
  net_gather_fn gather;   /* a full block into sub-blocks, if the CPU has a fast one */
  float *out;
  size_t b0, b1;
  int rc;
} blk_job;

/* Split nb blocks over `threads` workers (the caller's thread is one of them). */
static int run_blocks(const blk_job *proto, size_t nb, int threads, void *(*worker)(void *)) {
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  if ((size_t)threads > nb) threads = (int)nb;
  blk_job jobs[64];
  pthread_t th[64];
  int started[64] = {0};
  for (int t = 0; t < threads; t++) {
    jobs[t] = *proto;
    jobs[t].b0 = nb * (size_t)t / (size_t)threads;
    jobs[t].b1 = nb * (size_t)(t + 1) / (size_t)threads;
    jobs[t].rc = FEDC_OK;
    if (t > 0) started[t] = pthread_create(&th[t], NULL, worker, &jobs[t]) == 0;
    if (t > 0 && !started[t]) worker(&jobs[t]); /* no thread: do it here */
  }
  worker(&jobs[0]);
  int rc = FEDC_OK;
  for (int t = 0; t < threads; t++) {
    if (started[t]) pthread_join(th[t], NULL);
    if (jobs[t].rc != FEDC_OK) rc = jobs[t].rc;
  }
  return rc;
}

static void *net_worker(void *arg) {
  blk_job *j = arg;
  const size_t n = j->n;
  /* 64-byte aligned: a sub-block row is one cache line (a split line costs
   * every load twice and defeats store-to-load forwarding). */
  float *buf = aligned_alloc(64, NET_B * n * sizeof *buf), *col = malloc(n * sizeof *col);
  if (!buf || !col) {
    free(buf);
    free(col);
    j->rc = FEDC_ERR_NOMEM;
    return NULL;
  }
  for (size_t b = j->b0; b < j->b1; b++) {
    size_t c0 = b * NET_B, w = c0 + NET_B <= j->d ? NET_B : j->d - c0;
    size_t used = (w + NET_V - 1) / NET_V; /* sub-blocks holding coordinates */
    /* Row r's NET_B coordinates go to row r of each sub-block; a short last
     * block is padded with zeros (lanes whose results are never read). n rows
     * are n streams, more than the hardware prefetcher follows: each row's
     * next block is asked for now (a hint; never faults). */
    if (b + 1 < j->b1)
      for (size_t r = 0; r < n; r++)
        for (size_t l = 0; l < NET_B; l += 16) __builtin_prefetch(j->X + r * j->ld + c0 + NET_B + l);
    if (w == NET_B && j->gather) {
      j->gather(buf, j->X + c0, j->ld, n);
    } else {
      for (size_t r = 0; r < n; r++) {
        const float *src = j->X + r * j->ld + c0;
        for (size_t s = 0; s < used; s++) {
          float *dst = buf + (s * n + r) * NET_V;
          size_t k = w - s * NET_V < NET_V ? w - s * NET_V : NET_V;
          if (k == NET_V) {
            memcpy(dst, src + s * NET_V, NET_V * sizeof *dst); /* a constant size: inlined moves */
          } else {
            memcpy(dst, src + s * NET_V, k * sizeof *dst);
            memset(dst + k, 0, (NET_V - k) * sizeof *dst);
          }
        }
      }
    }
    for (size_t s = 0; s < used; s++) {
      float *sub = buf + s * n * NET_V, *o = j->out + c0 + s * NET_V;
      size_t k = w - s * NET_V < NET_V ? w - s * NET_V : NET_V;
      j->sort(sub, n, j->pairs, j->np);
      if (j->kind == K_MEDIAN) {
        const float *hi = sub + (n / 2) * NET_V, *lo = sub + ((n - 1) / 2) * NET_V;
        for (size_t c = 0; c < k; c++) o[c] = n % 2 ? hi[c] : (float)(((double)lo[c] + hi[c]) / 2);
      } else if (j->kind == K_WINDOW) {
        for (size_t c = 0; c < k; c++) {
          for (size_t r = 0; r < n; r++) col[r] = sub[r * NET_V + c]; /* sorted down the rows */
          o[c] = col_window_sorted(col, n, j->param);
        }
      } else {
        double acc[NET_V];
        j->sum(sub, j->param, n - j->param, acc);
        double inv = 1.0 / (double)(n - 2 * j->param);
        for (size_t c = 0; c < k; c++) o[c] = (float)(acc[c] * inv);
      }
    }
  }
  free(buf);
  free(col);
  return NULL;
}

/*
 * Drop the comparators that cannot change what is read out. Rows fall into
 * classes by what the result needs of them: for the median, the one or two
 * middle rows each exactly, and the rows below and above only as sets; for
 * the trimmed mean, the three sets (trimmed low, kept, trimmed high), since
 * a sum does not care about order within a set. Going backwards: a
 * comparator whose two rows are read by no later kept comparator and lie in
 * one class only permutes that class: it goes. Otherwise it stays and its
 * rows count as read. The window rule (Bulyan) reads its rows in order, so
 * it keeps the full network. For n = 100 this keeps 898 of the full
 * network's 1,104 comparators for the median (900 for the trimmed mean,
 * beta 0.1), and 513 of the 719 merge comparators left after the in-register
 * sorts of 16 rows (515).
 * Returns the number kept, compacted at the front of pairs.
 */
static size_t prune(uint16_t *pairs, size_t np, size_t n, int kind, size_t param) {
  if (kind == K_WINDOW || n > NET_MAX_N) return np;
  uint8_t *read = calloc(n, 1);
  uint32_t *cls = malloc(n * sizeof *cls);
  uint8_t *keep = malloc(np ? np : 1);
  if (!read || !cls || !keep) {
    free(read), free(cls), free(keep);
    return np; /* the whole network is always correct */
  }
  size_t lo = kind == K_MEDIAN ? (n - 1) / 2 : param, hi = kind == K_MEDIAN ? n / 2 : n - 1 - param;
  for (size_t r = 0; r < n; r++)
    cls[r] = r < lo ? 0u : r > hi ? 1u : kind == K_MEDIAN ? (uint32_t)(2 + r) : 2u;
  for (size_t q = np; q-- > 0;) {
    uint16_t a = pairs[2 * q], b = pairs[2 * q + 1];
    keep[q] = read[a] || read[b] || cls[a] != cls[b];
    if (keep[q]) read[a] = read[b] = 1;
  }
  size_t m = 0;
  for (size_t q = 0; q < np; q++)
    if (keep[q]) {
      pairs[2 * m] = pairs[2 * q];
      pairs[2 * m + 1] = pairs[2 * q + 1];
      m++;
    }
  free(read), free(cls), free(keep);
  return m;
}

static int by_network(const float *X, size_t n, size_t d, size_t ld, int kind, size_t param, float *out, int threads) {
  size_t p0 = 1;
  net_sum_fn sum = NULL;
  net_gather_fn gather = NULL;
  net_sort_fn sort = net_sort_pick(&p0, &sum, &gather);
  size_t np = batcher(n, p0, NULL);
  uint16_t *pairs = malloc((np ? np : 1) * 2 * sizeof *pairs);
  if (!pairs) return FEDC_ERR_NOMEM;
  batcher(n, p0, pairs);
  np = prune(pairs, np, n, kind, param);
  blk_job proto = {X, n, d, ld, param, kind, pairs, np, sort, sum, gather, out, 0, 0, FEDC_OK};
  int rc = run_blocks(&proto, (d + NET_B - 1) / NET_B, threads, net_worker);
  free(pairs);
  return rc;
}

static void *col_worker(void *arg) {
  blk_job *j = arg;
  float *buf = malloc(BLOCK * j->n * sizeof *buf);
  if (!buf) {
    j->rc = FEDC_ERR_NOMEM;
    return NULL;
  }
  for (size_t b = j->b0; b < j->b1; b++) {
    size_t c0 = b * BLOCK, w = c0 + BLOCK <= j->d ? BLOCK : j->d - c0;
    /* Transpose: column c of the block becomes buf[c * n .. c * n + n). */
    for (size_t r = 0; r < j->n; r++) {
      const float *row = j->X + r * j->ld + c0;
      for (size_t c = 0; c < w; c++) buf[c * j->n + r] = row[c];
    }
    for (size_t c = 0; c < w; c++) {
      float *a = buf + c * j->n;
      j->out[c0 + c] = j->kind == K_MEDIAN    ? col_median(a, j->n)
                       : j->kind == K_TRIMMED ? col_trimmed(a, j->n, j->param)
                                              : col_window(a, j->n, j->param);
    }
  }
  free(buf);
  return NULL;
}

static int by_columns(const float *X, size_t n, size_t d, size_t ld, int kind, size_t param, float *out,
                      int threads) {
  if (!X || !out || n == 0 || d == 0 || ld < d) return FEDC_ERR_INVALID;
  blk_job proto = {X, n, d, ld, param, kind, NULL, 0, NULL, NULL, NULL, out, 0, 0, FEDC_OK};
  return run_blocks(&proto, (d + BLOCK - 1) / BLOCK, threads, col_worker);
}

int fc_k_median(const float *X, size_t n, size_t d, size_t ld, float *out, int threads) {
  if (!X || !out || n == 0 || d == 0 || ld < d) return FEDC_ERR_INVALID;
  if (n <= NET_MAX_N) return by_network(X, n, d, ld, K_MEDIAN, 0, out, threads);
  return by_columns(X, n, d, ld, K_MEDIAN, 0, out, threads);
}

int fc_k_trimmed_mean(const float *X, size_t n, size_t d, size_t ld, size_t trim, float *out, int threads) {
  if (2 * trim >= n || !X || !out || d == 0 || ld < d) return FEDC_ERR_INVALID;
  if (n <= NET_MAX_N) return by_network(X, n, d, ld, K_TRIMMED, trim, out, threads);
  return by_columns(X, n, d, ld, K_TRIMMED, trim, out, threads);
}

int fc_k_median_window(const float *X, size_t n, size_t d, size_t ld, size_t keep, float *out, int threads) {
  if (keep < 1 || keep > n || !X || !out || d == 0 || ld < d) return FEDC_ERR_INVALID;
  if (n <= NET_MAX_N) return by_network(X, n, d, ld, K_WINDOW, keep, out, threads);
  return by_columns(X, n, d, ld, K_WINDOW, keep, out, threads);
}

/* ---- squared distances through the Gram matrix ---- */

static double direct_sqdist(const float *a, const float *b, size_t d) {
  double s = 0;
  for (size_t i = 0; i < d; i++) {
    double t = (double)a[i] - b[i];
    s += t * t;
  }
  return s;
}

int fc_k_sqdist(const float *X, size_t n, size_t d, size_t ld, double *D) {
  if (!X || !D || n == 0 || d == 0 || ld < d || n > 46340) return FEDC_ERR_INVALID;
  float *g = malloc(n * n * sizeof *g);
  double *G = calloc(n * n, sizeof *G);
  if (!g || !G) {
    free(g);
    free(G);
    return FEDC_ERR_NOMEM;
  }
  for (size_t c0 = 0; c0 < d; c0 += GRAM_BLOCK) {
    int w = (int)(c0 + GRAM_BLOCK <= d ? GRAM_BLOCK : d - c0);
    /* g = X_b X_b^T: float products over one block, summed in double across blocks. */
    fc_sgemm(FC_ROW_MAJOR, FC_NO_TRANS, FC_TRANS, (int)n, (int)n, w, 1.0f, X + c0, (int)ld, X + c0, (int)ld, 0.0f, g,
             (int)n);
    for (size_t i = 0; i < n * n; i++) G[i] += g[i];
  }
  for (size_t i = 0; i < n; i++) {
    D[i * n + i] = 0;
    for (size_t j = i + 1; j < n; j++) {
      double nn = G[i * n + i] + G[j * n + j], v = nn - 2 * G[i * n + j];
      /* Recompute directly, in double, where the Gram form cannot be
       * trusted: cancellation (a small difference of large norms loses its
       * digits), and overflow: a float product or block sum above FLT_MAX
       * (a coordinate past ~1.8e19) is inf, and two such updates give
       * inf - inf = NaN, for which `v < 1e-2 nn` is false. One test of v
       * covers every non-finite case: an inf or NaN in G[ii], G[jj] or G[ij]
       * reaches v. The direct sum cannot overflow (a float difference
       * squared is below 1.2e77). */
      if (!isfinite(v) || v < 1e-2 * nn) v = direct_sqdist(X + i * ld, X + j * ld, d);
      D[i * n + j] = D[j * n + i] = v;
    }
  }
  free(g);
  free(G);
  return FEDC_OK;
}

/* ---- references: a full sort per coordinate, pairs one by one ---- */

static double g_med; /* cmp_dist's median (the references are single-threaded test code) */
static size_t g_n;

typedef struct ranked {
  float v;
  size_t rank; /* position in sorted order */
} ranked;

/* Nearest the median first; ties (in double) to the rank nearer the middle,
 * then to the smaller value. */
static int cmp_dist(const void *x, const void *y) {
  const ranked *p = x, *q = y;
  double da = p->v > g_med ? p->v - g_med : g_med - p->v, db = q->v > g_med ? q->v - g_med : g_med - q->v;
  if (da != db) return (da > db) - (da < db);
  size_t ra = 2 * p->rank > g_n - 1 ? 2 * p->rank - (g_n - 1) : (g_n - 1) - 2 * p->rank;
  size_t rb = 2 * q->rank > g_n - 1 ? 2 * q->rank - (g_n - 1) : (g_n - 1) - 2 * q->rank;
  if (ra != rb) return (ra > rb) - (ra < rb);
  return (p->v > q->v) - (p->v < q->v);
}

static void ref_col(const float *X, size_t n, size_t d, size_t ld, float *out, int kind, size_t param) {
  float *a = malloc(n * sizeof *a);
  if (!a) return;
  for (size_t c = 0; c < d; c++) {
    for (size_t r = 0; r < n; r++) a[r] = X[r * ld + c];
    qsort(a, n, sizeof *a, cmpf);
    double s = 0;
    if (kind == K_MEDIAN) {
      out[c] = n % 2 ? a[n / 2] : (float)(((double)a[n / 2 - 1] + a[n / 2]) / 2);
      continue;
    }
    size_t lo = param, hi = n - param; /* trimmed: [trim, n - trim) */
    if (kind == K_WINDOW) {
      /* The `param` values nearest the median, by sorting on distance: no
       * window argument. */
      ranked *rk = malloc(n * sizeof *rk);
      if (!rk) break;
      for (size_t i = 0; i < n; i++) rk[i] = (ranked){a[i], i};
      g_med = n % 2 ? a[n / 2] : ((double)a[n / 2 - 1] + a[n / 2]) / 2;
      g_n = n;
      qsort(rk, n, sizeof *rk, cmp_dist);
      for (size_t i = 0; i < n; i++) a[i] = rk[i].v;
      free(rk);
      lo = 0;
      hi = param;
    }
    for (size_t i = lo; i < hi; i++) s += a[i];
    out[c] = (float)(s / (double)(hi - lo));
  }
  free(a);
}

void fc_kref_median(const float *X, size_t n, size_t d, size_t ld, float *out) {
  ref_col(X, n, d, ld, out, K_MEDIAN, 0);
}

void fc_kref_trimmed_mean(const float *X, size_t n, size_t d, size_t ld, size_t trim, float *out) {
  ref_col(X, n, d, ld, out, K_TRIMMED, trim);
}

void fc_kref_median_window(const float *X, size_t n, size_t d, size_t ld, size_t keep, float *out) {
  ref_col(X, n, d, ld, out, K_WINDOW, keep);
}

void fc_kref_sqdist(const float *X, size_t n, size_t d, size_t ld, double *D) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++) D[i * n + j] = i == j ? 0 : direct_sqdist(X + i * ld, X + j * ld, d);
}
