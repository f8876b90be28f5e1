/*
 * test_blas.c - the kernels fc_s*() run (OpenBLAS, or the portable ones in
 * a FEDC_BLAS=reference build) and the portable kernels fc_port_s*() (in
 * every build) against the plain-C references on random shapes: both
 * layouts, all transposes, padded leading dimensions, alpha/beta including
 * 0, negative and strided increments, and beta == 0 on an output full of NaN
 * (must be overwritten, not read). Shapes reach past the portable GEMM's
 * 64 x 128 panel in k and n.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/blas.h"
#include "tests/unit/check.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}
static int rnd_int(int lo, int hi) { return lo + (int)(rnd() % (uint32_t)(hi - lo + 1)); }
static float rnd_f(void) { return (float)(rnd() % 20001) / 10000.0f - 1.0f; }
static float *rnd_buf(size_t n) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  for (size_t i = 0; i < n; i++) p[i] = rnd_f();
  return p;
}

/* max |a-b| / (1 + max|b|) over n elements at stride inc. */
static double rel_err(const float *a, const float *b, size_t n) {
  double maxd = 0, maxb = 0;
  for (size_t i = 0; i < n; i++) {
    if (isnan(a[i]) != isnan(b[i])) return INFINITY;
    if (isnan(a[i])) continue;
    double d = fabs((double)a[i] - b[i]);
    if (d > maxd) maxd = d;
    if (fabs(b[i]) > maxb) maxb = fabs(b[i]);
  }
  return maxd / (1.0 + maxb);
}

/* One kernel set under test. */
typedef struct kernels {
  const char *name;
  void (*gemm)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
  void (*gemv)(int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
  void (*axpy)(int, float, const float *, int, float *, int);
  void (*scal)(int, float, float *, int);
  float (*dot)(int, const float *, int, const float *, int);
  float (*nrm2)(int, const float *, int);
} kernels;

static const kernels k_blas = {"fc_s", fc_sgemm, fc_sgemv, fc_saxpy, fc_sscal, fc_sdot, fc_snrm2};
static const kernels k_port = {"fc_port_s", fc_port_sgemm, fc_port_sgemv, fc_port_saxpy,
                               fc_port_sscal, fc_port_sdot, fc_port_snrm2};

static void test_gemm(const kernels *kn) {
  static const float alphas[] = {1.0f, -0.7f, 0.0f};
  static const float betas[] = {0.0f, 0.5f, 1.0f};
  int fails = 0, runs = 0;
  for (int it = 0; it < 300; it++) {
    int layout = rnd() & 1 ? FC_ROW_MAJOR : FC_COL_MAJOR;
    int ta = rnd() & 1 ? FC_TRANS : FC_NO_TRANS, tb = rnd() & 1 ? FC_TRANS : FC_NO_TRANS;
    int m = rnd_int(1, 40), n = rnd_int(1, it % 10 == 0 ? 300 : 40), k = rnd_int(1, it % 7 == 0 ? 200 : 70);
    float alpha = alphas[rnd() % 3], beta = betas[rnd() % 3];
    /* Stored shapes (rows x cols in the given layout's sense) of A, B, C. */
    int ar = ta == FC_TRANS ? k : m, ac = ta == FC_TRANS ? m : k;
    int br = tb == FC_TRANS ? n : k, bc = tb == FC_TRANS ? k : n;
    int row = layout == FC_ROW_MAJOR;
    int lda = (row ? ac : ar) + rnd_int(0, 3), ldb = (row ? bc : br) + rnd_int(0, 3);
    int ldc = (row ? n : m) + rnd_int(0, 3);
    size_t asz = (size_t)lda * (row ? ar : ac), bsz = (size_t)ldb * (row ? br : bc);
    size_t csz = (size_t)ldc * (row ? m : n);
    float *a = rnd_buf(asz), *b = rnd_buf(bsz), *c1 = rnd_buf(csz), *c2 = malloc(csz * sizeof *c2);
    if (beta == 0.0f) /* must not be read: fill with NaN everywhere but padding */
      for (size_t i = 0; i < csz; i++) c1[i] = NAN;
    /* Padding columns of C are never touched by either: make them equal. */
    for (size_t i = 0; i < csz; i++) c2[i] = c1[i];
    kn->gemm(layout, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c1, ldc);
    fc_ref_sgemm(layout, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c2, ldc);
    /* Compare the m x n logical block only. */
    double worst = 0;
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) {
        size_t at = row ? (size_t)i * ldc + j : (size_t)j * ldc + i;
        double e = rel_err(&c1[at], &c2[at], 1);
        if (e > worst) worst = e;
      }
    runs++;
    if (!(worst < 1e-5)) {
      fails++;
      fprintf(stderr, "%sgemm layout=%d ta=%d tb=%d m=%d n=%d k=%d alpha=%g beta=%g err=%g\n", kn->name, layout,
              ta, tb, m, n, k, alpha, beta, worst);
    }
    free(a);
    free(b);
    free(c1);
    free(c2);
  }
  CHECK_EQ_INT(fails, 0);
  CHECK(runs == 300);
}

static void test_gemv(const kernels *kn) {
  int fails = 0;
  for (int it = 0; it < 300; it++) {
    int layout = rnd() & 1 ? FC_ROW_MAJOR : FC_COL_MAJOR, trans = rnd() & 1 ? FC_TRANS : FC_NO_TRANS;
    int m = rnd_int(1, 50), n = rnd_int(1, 50);
    int row = layout == FC_ROW_MAJOR;
    int lda = (row ? n : m) + rnd_int(0, 3);
    int incx = rnd_int(1, 3) * (rnd() % 4 == 0 ? -1 : 1), incy = rnd_int(1, 3) * (rnd() % 4 == 0 ? -1 : 1);
    float alpha = rnd() % 5 == 0 ? 0.0f : rnd_f(), beta = rnd() % 3 == 0 ? 0.0f : rnd_f();
    int lenx = trans == FC_TRANS ? m : n, leny = trans == FC_TRANS ? n : m;
    size_t xsz = (size_t)lenx * abs(incx), ysz = (size_t)leny * abs(incy);
    float *a = rnd_buf((size_t)lda * (row ? m : n)), *x = rnd_buf(xsz), *y1 = rnd_buf(ysz);
    float *y2 = malloc(ysz * sizeof *y2);
    if (beta == 0.0f)
      for (size_t i = 0; i < ysz; i += abs(incy)) y1[i] = NAN;
    for (size_t i = 0; i < ysz; i++) y2[i] = y1[i];
    kn->gemv(layout, trans, m, n, alpha, a, lda, x, incx, beta, y1, incy);
    fc_ref_sgemv(layout, trans, m, n, alpha, a, lda, x, incx, beta, y2, incy);
    double e = rel_err(y1, y2, ysz);
    if (!(e < 1e-5)) {
      fails++;
      fprintf(stderr, "%sgemv layout=%d trans=%d m=%d n=%d incx=%d incy=%d alpha=%g beta=%g err=%g\n", kn->name,
              layout, trans, m, n, incx, incy, alpha, beta, e);
    }
    free(a);
    free(x);
    free(y1);
    free(y2);
  }
  CHECK_EQ_INT(fails, 0);
}

static void test_level1(const kernels *kn) {
  int fails = 0;
  for (int it = 0; it < 200; it++) {
    int n = rnd_int(0, 1000);
    int incx = rnd_int(1, 3) * (rnd() % 4 == 0 ? -1 : 1), incy = rnd_int(1, 3) * (rnd() % 4 == 0 ? -1 : 1);
    size_t xsz = (size_t)(n ? n : 1) * abs(incx), ysz = (size_t)(n ? n : 1) * abs(incy);
    float *x = rnd_buf(xsz), *y1 = rnd_buf(ysz), *y2 = malloc(ysz * sizeof *y2);
    for (size_t i = 0; i < ysz; i++) y2[i] = y1[i];
    float alpha = rnd_f();

    kn->axpy(n, alpha, x, incx, y1, incy);
    fc_ref_saxpy(n, alpha, x, incx, y2, incy);
    if (!(rel_err(y1, y2, ysz) < 1e-6)) fails++, fprintf(stderr, "saxpy n=%d incx=%d incy=%d\n", n, incx, incy);

    float d1 = kn->dot(n, x, incx, y1, incy), d2 = fc_ref_sdot(n, x, incx, y1, incy);
    if (!(fabsf(d1 - d2) <= 1e-4f * (1.0f + fabsf(d2)) + 1e-5f * (float)n))
      fails++, fprintf(stderr, "sdot n=%d %g vs %g\n", n, d1, d2);

    int pinc = abs(incx); /* sscal / snrm2: positive increments only, as documented */
    float n1 = kn->nrm2(n, x, pinc), n2 = fc_ref_snrm2(n, x, pinc);
    if (!(fabsf(n1 - n2) <= 1e-5f * (1.0f + n2))) fails++, fprintf(stderr, "snrm2 n=%d %g vs %g\n", n, n1, n2);

    float *x2 = malloc(xsz * sizeof *x2);
    for (size_t i = 0; i < xsz; i++) x2[i] = x[i];
    kn->scal(n, alpha, x, pinc);
    fc_ref_sscal(n, alpha, x2, pinc);
    if (!(rel_err(x, x2, xsz) == 0.0)) fails++, fprintf(stderr, "sscal n=%d inc=%d\n", n, pinc);
    free(x2);
    free(x);
    free(y1);
    free(y2);
  }
  CHECK_EQ_INT(fails, 0);
}

static void test_helpers(void) {
  size_t n = 100003;
  float *x = rnd_buf(n);
  double ref = 0;
  for (size_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
  ref = sqrt(ref);
  CHECK(fabs(fc_l2_norm(x, n) - ref) < 1e-9 * ref);
  CHECK(fabs(fc_l2_norm(x, n) - fc_snrm2((int)n, x, 1)) < 1e-5 * ref);
  CHECK(fc_l2_norm(x, 0) == 0.0);
  float x7 = x[7];
  fc_scale(x, n, 0.5f);
  CHECK(x[7] == x7 * 0.5f);
  CHECK(fabs(fc_l2_norm(x, n) - 0.5 * ref) < 1e-9 * ref);
  /* Large values must not overflow in double accumulation. */
  float big[3] = {3e30f, 4e30f, 0.0f};
  CHECK(fabs(fc_l2_norm(big, 3) - 5e30) < 1e24);
  free(x);
}

int main(void) {
  fc_blas_set_threads(1);
  CHECK_EQ_INT(fc_blas_get_threads(), 1);
  const kernels *sets[] = {&k_blas, &k_port};
  for (int i = 0; i < 2; i++) {
    test_gemm(sets[i]);
    test_gemv(sets[i]);
    test_level1(sets[i]);
  }
  test_helpers();
  return CHECK_DONE();
}
