/*
 * blas.h - the one BLAS layer: every matrix and vector kernel in fedc goes
 * through here, with CBLAS argument conventions (layout, transposes, leading
 * dimensions, increments, all as in cblas_sgemm & co.).
 *
 * fc_s*() call OpenBLAS (FEDC_BLAS=openblas, the default) or the portable
 * kernels fc_port_s*() (FEDC_BLAS=reference: a device build without OpenBLAS
 * and libgfortran); fc_ref_s*() are plain-C reference kernels with the
 * same arguments and the same BLAS semantics (beta == 0 means "do not read
 * C/y", so NaN in an uninitialised output does not propagate; negative vector
 * increments walk from the end as in reference BLAS). tests/unit/test_blas.c
 * holds the two against each other.
 *
 * The enums below carry the CBLAS numeric values, so callers need not include
 * cblas.h and the wrappers pass them through with a cast.
 *
 * The library never changes the OpenBLAS thread count: only programs call
 * fc_blas_set_threads() (ARCHITECTURE.md, "Threads").
 */
#ifndef FEDC_COMMON_BLAS_H
#define FEDC_COMMON_BLAS_H

#include <stddef.h>

enum fc_blas_layout { FC_ROW_MAJOR = 101, FC_COL_MAJOR = 102 };       /* = CblasRowMajor / CblasColMajor */
enum fc_blas_trans { FC_NO_TRANS = 111, FC_TRANS = 112 };             /* = CblasNoTrans / CblasTrans */

/* C = alpha * op(A) * op(B) + beta * C; op(A) is M x K, op(B) is K x N, C is M x N. */
void fc_sgemm(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc);
/* y = alpha * op(A) * x + beta * y; A is M x N. */
void fc_sgemv(int layout, int trans, int m, int n, float alpha, const float *a, int lda, const float *x, int incx,
              float beta, float *y, int incy);
/* y += alpha * x */
void fc_saxpy(int n, float alpha, const float *x, int incx, float *y, int incy);
/* x *= alpha */
void fc_sscal(int n, float alpha, float *x, int incx);
/* sum x[i] * y[i] */
float fc_sdot(int n, const float *x, int incx, const float *y, int incy);
/* Euclidean norm (OpenBLAS scales to avoid overflow). */
float fc_snrm2(int n, const float *x, int incx);

/* Plain-C references: same arguments, same results up to rounding. */
void fc_ref_sgemm(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc);
void fc_ref_sgemv(int layout, int trans, int m, int n, float alpha, const float *a, int lda, const float *x,
                  int incx, float beta, float *y, int incy);
void fc_ref_saxpy(int n, float alpha, const float *x, int incx, float *y, int incy);
void fc_ref_sscal(int n, float alpha, float *x, int incx);
float fc_ref_sdot(int n, const float *x, int incx, const float *y, int incy);
float fc_ref_snrm2(int n, const float *x, int incx);

/* Portable kernels (blas_portable.c): same arguments and semantics, float
 * sums in a fixed order, fast enough to train with; in every build, so
 * test_blas.c holds them against the references. */
void fc_port_sgemm(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                   const float *b, int ldb, float beta, float *c, int ldc);
void fc_port_sgemv(int layout, int trans, int m, int n, float alpha, const float *a, int lda, const float *x,
                   int incx, float beta, float *y, int incy);
void fc_port_saxpy(int n, float alpha, const float *x, int incx, float *y, int incy);
void fc_port_sscal(int n, float alpha, float *x, int incx);
float fc_port_sdot(int n, const float *x, int incx, const float *y, int incy);
float fc_port_snrm2(int n, const float *x, int incx);

/* L2 norm of a flat buffer of any length, accumulated in double (used for
 * update clipping, where the result must not depend on thread count). */
double fc_l2_norm(const float *x, size_t n);
/* x *= a over a flat buffer of any length (chunks of INT_MAX for BLAS). */
void fc_scale(float *x, size_t n, float a);

/* Set the OpenBLAS thread count. Programs only; never called by the library.
 * A FEDC_BLAS=reference build is single-threaded: set does nothing, get is 1. */
void fc_blas_set_threads(int n);
int fc_blas_get_threads(void);

#endif
