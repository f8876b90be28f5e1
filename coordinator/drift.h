/*
 * drift.h - model drift as a change in the prediction distribution on a
 * fixed reference set: the population stability index (PSI) between the
 * distribution of the version about to be published (p) and that of the
 * previous published version (q):
 *
 *   PSI = sum_i (p_i - q_i) ln(p_i / q_i),   p_i, q_i floored at eps
 *
 * (Siddiqi 2006, "Credit Risk Scorecards", ch. 8; Yurdakul 2018, "Statistical
 * Properties of Population Stability Index"). It is the symmetrised KL
 * divergence KL(p||q) + KL(q||p), so it is >= 0, 0 for identical
 * distributions and symmetric. The usual reading: < 0.1 stable, 0.1 to 0.25
 * moderate shift, > 0.25 significant shift; fedc flags at
 * FC_DRIFT_DEFAULT_THRESHOLD unless told otherwise.
 *
 * The floor: a class no example is predicted as in one version but some are
 * in the other gives ln(p/0) = inf; flooring each proportion at eps keeps
 * the index finite (it then grows with ln(1/eps)), and is not renormalised
 * (the floor adds at most k * eps of mass). I/O-free; coord_drift.c runs the
 * model and owns when the check happens.
 */
#ifndef FEDC_COORD_DRIFT_H
#define FEDC_COORD_DRIFT_H

#include <stdint.h>

#define FC_DRIFT_EPS 1e-4
#define FC_DRIFT_DEFAULT_THRESHOLD 0.25

/* PSI of p against q, k entries each (proportions; each should sum to 1),
 * every entry floored at eps (> 0). NAN if k is 0, eps is not > 0 or an entry
 * is negative or not finite. */
double fc_drift_psi(const double *p, const double *q, uint32_t k, double eps);

/* counts[0..k) as proportions into out (0 everywhere if they sum to 0). */
void fc_drift_normalize_counts(const uint64_t *counts, uint32_t k, double *out);
/* The same for totals that need not be integers (a federated evaluation's
 * predicted-class counts, noisy under DP; negative entries count as 0);
 * returns their sum. */
double fc_drift_normalize_totals(const double *totals, uint32_t k, double *out);

#endif
