/*
 * robust.h - kernels of the robust aggregators (coordinator/aggregate_robust.c)
 * over n updates of d parameters held as the rows of X (row-major, row
 * stride ld >= d floats, all finite). Each has a plain-C reference beside it
 * (fc_kref_*) that the tests compare with.
 *
 *   median, trimmed mean   selection over cache-sized blocks of coordinates:
 *                          a block of B coordinates x n updates is transposed
 *                          into a buffer, then each coordinate's n values are
 *                          partitioned by quickselect (no sort per
 *                          coordinate); blocks are split over threads.
 *   squared distances      the Gram matrix X X^T through SGEMM, blocked over d
 *                          (workspace n x n per block, not n x d), summed in
 *                          double: D_ij = G_ii + G_jj - 2 G_ij. Where that
 *                          cancels (D_ij below 1e-2 of G_ii + G_jj: nearly
 *                          equal updates) the pair is recomputed directly as
 *                          sum (x_i - x_j)^2 in double, so identical updates
 *                          are exactly 0 apart and near-duplicates keep their
 *                          relative accuracy. A pair whose float Gram entries
 *                          overflowed (a value past ~1.8e19: its square is
 *                          above FLT_MAX) is recomputed the same way, so every
 *                          distance is finite and exact to double rounding.
 *
 * No I/O, no allocation beyond each call's workspace.
 */
#ifndef FEDC_KERNELS_ROBUST_H
#define FEDC_KERNELS_ROBUST_H

#include <stddef.h>

/* out[j] = median of X[0..n)[j] (the mean of the two middle values for even n). */
int fc_k_median(const float *X, size_t n, size_t d, size_t ld, float *out, int threads);
/* out[j] = mean of X[.][j] without its `trim` smallest and `trim` largest values (2 trim < n). */
int fc_k_trimmed_mean(const float *X, size_t n, size_t d, size_t ld, size_t trim, float *out, int threads);
/* out[j] = mean of the `keep` values of X[.][j] closest to their median (Bulyan's
 * coordinate step, El Mhamdi et al. 2018), 1 <= keep <= n. */
int fc_k_median_window(const float *X, size_t n, size_t d, size_t ld, size_t keep, float *out, int threads);
/* D (n x n, row-major) = squared L2 distances between the rows. */
int fc_k_sqdist(const float *X, size_t n, size_t d, size_t ld, double *D);

void fc_kref_median(const float *X, size_t n, size_t d, size_t ld, float *out);
void fc_kref_trimmed_mean(const float *X, size_t n, size_t d, size_t ld, size_t trim, float *out);
void fc_kref_median_window(const float *X, size_t n, size_t d, size_t ld, size_t keep, float *out);
void fc_kref_sqdist(const float *X, size_t n, size_t d, size_t ld, double *D);

#endif
