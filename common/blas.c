/*
 * blas.c - OpenBLAS wrappers (or, with FEDC_BLAS=reference, calls to the
 * portable kernels of blas_portable.c) and the plain-C reference kernels
 * behind blas.h.
 *
 * Why wrappers at all: one place decides which BLAS fedc links, the rest of
 * the tree never includes cblas.h, and every kernel has a slow, obviously
 * correct twin to test against (BLIS keeps kernels few and swappable).
 *
 * Reference-kernel rules, mirroring netlib BLAS so results agree with OpenBLAS
 * on every argument combination the tests draw:
 *  - column-major calls are rewritten as the equivalent row-major call on the
 *    transposed problem (C^T = op(B)^T op(A)^T), so only one loop nest exists;
 *  - beta == 0 overwrites the output without reading it;
 *  - alpha == 0 skips the product entirely;
 *  - negative increments start at element (1-n)*inc, as netlib does;
 *    sscal/snrm2 do nothing (return 0) for inc <= 0, as netlib does.
 * The references accumulate dot products in double: they are the yardstick,
 * not a kernel anyone should run in a loop.
 */
#include "common/blas.h"

#ifndef FEDC_BLAS_REFERENCE
#include <cblas.h>
#endif
#include <limits.h>
#include <math.h>

/* ---- OpenBLAS wrappers (or the portable kernels) ------------------------------ */

#ifdef FEDC_BLAS_REFERENCE
/* FEDC_BLAS=reference: no OpenBLAS in the link; blas_portable.c does the work. */
void fc_sgemm(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc) {
  fc_port_sgemm(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void fc_sgemv(int layout, int trans, int m, int n, float alpha, const float *a, int lda, const float *x, int incx,
              float beta, float *y, int incy) {
  fc_port_sgemv(layout, trans, m, n, alpha, a, lda, x, incx, beta, y, incy);
}

void fc_saxpy(int n, float alpha, const float *x, int incx, float *y, int incy) {
  fc_port_saxpy(n, alpha, x, incx, y, incy);
}

void fc_sscal(int n, float alpha, float *x, int incx) { fc_port_sscal(n, alpha, x, incx); }

float fc_sdot(int n, const float *x, int incx, const float *y, int incy) { return fc_port_sdot(n, x, incx, y, incy); }

float fc_snrm2(int n, const float *x, int incx) { return fc_port_snrm2(n, x, incx); }

void fc_blas_set_threads(int n) { (void)n; }

int fc_blas_get_threads(void) { return 1; }
#else
void fc_sgemm(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc) {
  cblas_sgemm((enum CBLAS_ORDER)layout, (enum CBLAS_TRANSPOSE)trans_a, (enum CBLAS_TRANSPOSE)trans_b, m, n, k, alpha,
              a, lda, b, ldb, beta, c, ldc);
}

void fc_sgemv(int layout, int trans, int m, int n, float alpha, const float *a, int lda, const float *x, int incx,
              float beta, float *y, int incy) {
  cblas_sgemv((enum CBLAS_ORDER)layout, (enum CBLAS_TRANSPOSE)trans, m, n, alpha, a, lda, x, incx, beta, y, incy);
}

void fc_saxpy(int n, float alpha, const float *x, int incx, float *y, int incy) {
  cblas_saxpy(n, alpha, x, incx, y, incy);
}

void fc_sscal(int n, float alpha, float *x, int incx) { cblas_sscal(n, alpha, x, incx); }

float fc_sdot(int n, const float *x, int incx, const float *y, int incy) { return cblas_sdot(n, x, incx, y, incy); }

float fc_snrm2(int n, const float *x, int incx) { return cblas_snrm2(n, x, incx); }

void fc_blas_set_threads(int n) { openblas_set_num_threads(n < 1 ? 1 : n); }

int fc_blas_get_threads(void) { return openblas_get_num_threads(); }
#endif

/* ---- references ------------------------------------------------------------ */

/* Row-major C[m x n] = alpha op(A) op(B) + beta C. */
static void ref_gemm_rm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                        int ldb, float beta, float *c, int ldc) {
  for (int i = 0; i < m; i++) {
    for (int j = 0; j < n; j++) {
      double acc = 0.0;
      if (alpha != 0.0f) {
        for (int p = 0; p < k; p++) {
          float av = ta == FC_TRANS ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
          float bv = tb == FC_TRANS ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
          acc += (double)av * bv;
        }
      }
      float *cij = &c[(size_t)i * ldc + j];
      float prod = (float)((double)alpha * acc);
      *cij = beta == 0.0f ? prod : prod + beta * *cij;
    }
  }
}

void fc_ref_sgemm(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (layout == FC_COL_MAJOR)
    ref_gemm_rm(trans_b, trans_a, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
  else
    ref_gemm_rm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static size_t start_of(int n, int inc) { return inc < 0 ? (size_t)(n - 1) * (size_t)(-inc) : 0; }

void fc_ref_sgemv(int layout, int trans, int m, int n, float alpha, const float *a, int lda, const float *x,
                  int incx, float beta, float *y, int incy) {
  if (m <= 0 || n <= 0) return;
  /* Column-major A (m x n, lda) is row-major A^T (n x m, lda). */
  int row_trans = (layout == FC_COL_MAJOR) ? (trans == FC_TRANS ? FC_NO_TRANS : FC_TRANS) : trans;
  int rows = layout == FC_COL_MAJOR ? n : m, cols = layout == FC_COL_MAJOR ? m : n;
  int leny = row_trans == FC_TRANS ? cols : rows, lenx = row_trans == FC_TRANS ? rows : cols;
  size_t x0 = incx < 0 ? (size_t)(lenx - 1) * (size_t)(-incx) : 0;
  size_t y0 = incy < 0 ? (size_t)(leny - 1) * (size_t)(-incy) : 0;
  for (int i = 0; i < leny; i++) {
    double acc = 0.0;
    if (alpha != 0.0f) {
      for (int p = 0; p < lenx; p++) {
        float av = row_trans == FC_TRANS ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
        acc += (double)av * x[(ptrdiff_t)x0 + (ptrdiff_t)p * incx];
      }
    }
    float *yi = &y[(ptrdiff_t)y0 + (ptrdiff_t)i * incy];
    float prod = (float)((double)alpha * acc);
    *yi = beta == 0.0f ? prod : prod + beta * *yi;
  }
}

void fc_ref_saxpy(int n, float alpha, const float *x, int incx, float *y, int incy) {
  if (n <= 0 || alpha == 0.0f) return;
  size_t x0 = start_of(n, incx), y0 = start_of(n, incy);
  for (int i = 0; i < n; i++) y[(ptrdiff_t)y0 + (ptrdiff_t)i * incy] += alpha * x[(ptrdiff_t)x0 + (ptrdiff_t)i * incx];
}

void fc_ref_sscal(int n, float alpha, float *x, int incx) {
  if (n <= 0 || incx <= 0) return;
  for (int i = 0; i < n; i++) x[(size_t)i * incx] *= alpha;
}

float fc_ref_sdot(int n, const float *x, int incx, const float *y, int incy) {
  if (n <= 0) return 0.0f;
  size_t x0 = start_of(n, incx), y0 = start_of(n, incy);
  double acc = 0.0;
  for (int i = 0; i < n; i++)
    acc += (double)x[(ptrdiff_t)x0 + (ptrdiff_t)i * incx] * y[(ptrdiff_t)y0 + (ptrdiff_t)i * incy];
  return (float)acc;
}

float fc_ref_snrm2(int n, const float *x, int incx) {
  if (n <= 0 || incx <= 0) return 0.0f;
  double acc = 0.0;
  for (int i = 0; i < n; i++) acc += (double)x[(size_t)i * incx] * x[(size_t)i * incx];
  return (float)sqrt(acc);
}

/* ---- whole-buffer helpers --------------------------------------------------- */

double fc_l2_norm(const float *x, size_t n) {
  /* Four partial sums: same answer on every machine and thread count, and the
   * loop vectorises without -ffast-math. float*float is exact in double. */
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += (double)x[i] * x[i];
    s1 += (double)x[i + 1] * x[i + 1];
    s2 += (double)x[i + 2] * x[i + 2];
    s3 += (double)x[i + 3] * x[i + 3];
  }
  for (; i < n; i++) s0 += (double)x[i] * x[i];
  return sqrt((s0 + s1) + (s2 + s3));
}

void fc_scale(float *x, size_t n, float a) {
  while (n > 0) {
    int chunk = n > (size_t)INT_MAX ? INT_MAX : (int)n;
    fc_sscal(chunk, a, x, 1);
    x += chunk;
    n -= (size_t)chunk;
  }
}
