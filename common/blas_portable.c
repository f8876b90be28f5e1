/*
 * blas_portable.c - plain-C BLAS kernels fast enough to train with: what
 * fc_s*() run in a FEDC_BLAS=reference build (a device without OpenBLAS and
 * libgfortran, 20-35 MiB less), and what test_blas.c holds against the
 * double-accumulating yardsticks (fc_ref_*) in every build.
 *
 * Same arguments and BLAS semantics as blas.h says for fc_s*: CBLAS
 * conventions, column-major rewritten as the transposed row-major problem,
 * beta == 0 writes the output without reading it, alpha == 0 skips the
 * product, negative increments walk from the end; sscal/snrm2 do nothing
 * (return 0) for inc <= 0.
 *
 * Speed without intrinsics: GEMM packs KC x NC blocks of op(B) into a small
 * contiguous panel (on the stack, 32 KiB: no allocation, so no failure path
 * in a void function) and runs rank-1 updates of four rows of C at a time
 * over it, an inner loop the compiler vectorises for whatever the target has
 * (SSE2, NEON). Sums are in float, in a fixed order that does not depend on
 * the machine: results differ from OpenBLAS by rounding only (about 1e-6
 * relative; docs/design.md, "Numerics across architectures").
 */
#include <math.h>
#include <string.h>

#include "common/blas.h"

enum { KC = 64, NC = 128 }; /* panel: KC * NC floats = 32 KiB */

/* c[0..m) rows of ldc: c = beta * c, with beta == 0 writing zeros unread. */
static void scale_rows(int m, int n, float beta, float *c, int ldc) {
  if (beta == 1.0f) return;
  for (int i = 0; i < m; i++) {
    float *ci = c + (size_t)i * ldc;
    if (beta == 0.0f)
      memset(ci, 0, (size_t)n * sizeof *ci);
    else
      for (int j = 0; j < n; j++) ci[j] *= beta;
  }
}

/* ci[0..nb) += sum_p av[p] * panel[p][0..nb) for 4 rows at once. */
static void rank_update4(int kb, int nb, const float *restrict panel, const float *av0, const float *av1,
                         const float *av2, const float *av3, float *restrict c0, float *restrict c1,
                         float *restrict c2, float *restrict c3) {
  for (int p = 0; p < kb; p++) {
    const float *restrict bp = panel + (size_t)p * nb;
    float a0 = av0[p], a1 = av1[p], a2 = av2[p], a3 = av3[p];
    for (int j = 0; j < nb; j++) {
      float b = bp[j];
      c0[j] += a0 * b;
      c1[j] += a1 * b;
      c2[j] += a2 * b;
      c3[j] += a3 * b;
    }
  }
}

static void rank_update1(int kb, int nb, const float *restrict panel, const float *av, float *restrict c) {
  for (int p = 0; p < kb; p++) {
    const float *restrict bp = panel + (size_t)p * nb;
    float a = av[p];
    for (int j = 0; j < nb; j++) c[j] += a * bp[j];
  }
}

/* Row-major C[m x n] = alpha op(A) op(B) + beta C. */
static void gemm_rm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                    int ldb, float beta, float *c, int ldc) {
  scale_rows(m, n, beta, c, ldc);
  if (alpha == 0.0f || k <= 0) return;
  float panel[KC * NC];
  float arow[4][KC]; /* alpha * op(A)[i][pp..pp+kb), contiguous */
  for (int jj = 0; jj < n; jj += NC) {
    int nb = n - jj < NC ? n - jj : NC;
    for (int pp = 0; pp < k; pp += KC) {
      int kb = k - pp < KC ? k - pp : KC;
      if (tb == FC_TRANS) {
        for (int j = 0; j < nb; j++) {
          const float *bj = b + (size_t)(jj + j) * ldb + pp;
          for (int p = 0; p < kb; p++) panel[(size_t)p * nb + j] = bj[p];
        }
      } else {
        for (int p = 0; p < kb; p++) memcpy(panel + (size_t)p * nb, b + (size_t)(pp + p) * ldb + jj, nb * sizeof *b);
      }
      int i = 0;
      for (; i < m; i += 4) {
        int rows = m - i < 4 ? m - i : 4;
        for (int r = 0; r < rows; r++)
          for (int p = 0; p < kb; p++)
            arow[r][p] = alpha * (ta == FC_TRANS ? a[(size_t)(pp + p) * lda + i + r]
                                                 : a[(size_t)(i + r) * lda + pp + p]);
        float *ci = c + (size_t)i * ldc + jj;
        if (rows == 4)
          rank_update4(kb, nb, panel, arow[0], arow[1], arow[2], arow[3], ci, ci + ldc, ci + 2 * (size_t)ldc,
                       ci + 3 * (size_t)ldc);
        else
          for (int r = 0; r < rows; r++) rank_update1(kb, nb, panel, arow[r], ci + (size_t)r * ldc);
      }
    }
  }
}

void fc_port_sgemm(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                   const float *b, int ldb, float beta, float *c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (layout == FC_COL_MAJOR)
    gemm_rm(trans_b, trans_a, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
  else
    gemm_rm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static ptrdiff_t start_of(int n, int inc) { return inc < 0 ? (ptrdiff_t)(n - 1) * -inc : 0; }

/* sum x[i] * y[i] over unit strides, eight partial sums (vectorisable
 * without reassociating: the order is fixed by the code). */
static float dot_unit(int n, const float *restrict x, const float *restrict y) {
  float s[8] = {0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) s[l] += x[i + l] * y[i + l];
  float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; i++) t += x[i] * y[i];
  return t;
}

void fc_port_sgemv(int layout, int trans, int m, int n, float alpha, const float *a, int lda, const float *x,
                   int incx, float beta, float *y, int incy) {
  if (m <= 0 || n <= 0) return;
  /* Column-major A (m x n, lda) is row-major A^T (n x m, lda). */
  int row_trans = (layout == FC_COL_MAJOR) ? (trans == FC_TRANS ? FC_NO_TRANS : FC_TRANS) : trans;
  int rows = layout == FC_COL_MAJOR ? n : m, cols = layout == FC_COL_MAJOR ? m : n;
  int leny = row_trans == FC_TRANS ? cols : rows, lenx = row_trans == FC_TRANS ? rows : cols;
  ptrdiff_t x0 = start_of(lenx, incx), y0 = start_of(leny, incy);
  for (int i = 0; i < leny; i++) {
    float *yi = &y[y0 + (ptrdiff_t)i * incy];
    *yi = beta == 0.0f ? 0.0f : beta * *yi;
  }
  if (alpha == 0.0f) return;
  if (row_trans == FC_NO_TRANS) { /* y[i] += alpha * A[i,:] . x */
    for (int i = 0; i < leny; i++) {
      const float *ai = a + (size_t)i * lda;
      float d;
      if (incx == 1) {
        d = dot_unit(lenx, ai, x);
      } else {
        d = 0.0f;
        for (int p = 0; p < lenx; p++) d += ai[p] * x[x0 + (ptrdiff_t)p * incx];
      }
      y[y0 + (ptrdiff_t)i * incy] += alpha * d;
    }
  } else { /* y += alpha * sum_p x[p] * A[p,:] */
    for (int p = 0; p < lenx; p++) {
      const float *ap = a + (size_t)p * lda;
      float xp = alpha * x[x0 + (ptrdiff_t)p * incx];
      if (incy == 1)
        for (int i = 0; i < leny; i++) y[i] += xp * ap[i];
      else
        for (int i = 0; i < leny; i++) y[y0 + (ptrdiff_t)i * incy] += xp * ap[i];
    }
  }
}

void fc_port_saxpy(int n, float alpha, const float *x, int incx, float *y, int incy) {
  if (n <= 0 || alpha == 0.0f) return;
  if (incx == 1 && incy == 1) {
    for (int i = 0; i < n; i++) y[i] += alpha * x[i];
    return;
  }
  ptrdiff_t x0 = start_of(n, incx), y0 = start_of(n, incy);
  for (int i = 0; i < n; i++) y[y0 + (ptrdiff_t)i * incy] += alpha * x[x0 + (ptrdiff_t)i * incx];
}

void fc_port_sscal(int n, float alpha, float *x, int incx) {
  if (n <= 0 || incx <= 0) return;
  for (int i = 0; i < n; i++) x[(size_t)i * incx] *= alpha;
}

float fc_port_sdot(int n, const float *x, int incx, const float *y, int incy) {
  if (n <= 0) return 0.0f;
  if (incx == 1 && incy == 1) return dot_unit(n, x, y);
  ptrdiff_t x0 = start_of(n, incx), y0 = start_of(n, incy);
  float s = 0.0f;
  for (int i = 0; i < n; i++) s += x[x0 + (ptrdiff_t)i * incx] * y[y0 + (ptrdiff_t)i * incy];
  return s;
}

float fc_port_snrm2(int n, const float *x, int incx) {
  if (n <= 0 || incx <= 0) return 0.0f;
  /* In double: a float squared cannot overflow it, so no scaling pass. */
  double s = 0.0;
  for (int i = 0; i < n; i++) s += (double)x[(size_t)i * incx] * x[(size_t)i * incx];
  return (float)sqrt(s);
}
