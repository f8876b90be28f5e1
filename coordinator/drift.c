/*
 * drift.c - the population stability index of two prediction distributions
 * (drift.h says what it is and why the floor). Pure arithmetic: no I/O, no
 * state, no allocation, so tests/unit/test_drift.c checks it against values
 * worked by hand.
 */
#include "coordinator/drift.h"

#include <math.h>
#include <string.h>

double fc_drift_psi(const double *p, const double *q, uint32_t k, double eps) {
  if (k == 0 || !(eps > 0) || !p || !q) return NAN;
  double psi = 0.0;
  for (uint32_t i = 0; i < k; i++) {
    if (!(p[i] >= 0) || !(q[i] >= 0) || !isfinite(p[i]) || !isfinite(q[i])) return NAN;
    double a = p[i] > eps ? p[i] : eps, b = q[i] > eps ? q[i] : eps;
    psi += (a - b) * log(a / b);
  }
  return psi;
}

void fc_drift_normalize_counts(const uint64_t *counts, uint32_t k, double *out) {
  uint64_t total = 0;
  for (uint32_t i = 0; i < k; i++) total += counts[i];
  if (total == 0) {
    memset(out, 0, k * sizeof *out);
    return;
  }
  for (uint32_t i = 0; i < k; i++) out[i] = (double)counts[i] / (double)total;
}

double fc_drift_normalize_totals(const double *totals, uint32_t k, double *out) {
  double total = 0;
  for (uint32_t i = 0; i < k; i++) total += totals[i] > 0 ? totals[i] : 0;
  for (uint32_t i = 0; i < k; i++) out[i] = total > 0 && totals[i] > 0 ? totals[i] / total : 0;
  return total;
}
