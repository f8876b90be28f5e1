/*
 * test_krum_reference.c - Krum, Multi-Krum and Bulyan (coordinator/
 * aggregate_robust.c, through the aggregator interface) against a plain
 * float64 reference of the papers' definitions, written here from them and
 * sharing no code with the aggregator:
 *   Krum (Blanchard et al. 2017): score(i) = sum of the n - f - 2 smallest
 *     ||x_i - x_j||^2 over j != i; the lowest score wins.
 *   Multi-Krum (same paper): the mean of the m lowest-scored (m = n - f).
 *   Bulyan (El Mhamdi et al. 2018): theta = n - 2f picked one at a time by
 *     Krum over the updates not yet picked (with m left, m - f - 2
 *     neighbours, at least 1: the rule Flower's bulyan uses too), then per
 *     coordinate the mean of the theta - 2f values nearest the median.
 * Tie rule (fedc's, stated in aggregate_robust.c): equal scores go to the
 * lower index, i.e. the update committed first in the round; a score that is
 * not finite ranks after every finite one.
 *
 * Inputs: honest updates near a common mean plus attackers holding an extreme
 * but finite value in a coordinate (1e19, 1.8e19, 1.9e19 - the first whose
 * square overflows float -, 1e30, 3e38, either sign, mixed signs), placed
 * first, last and apart; every update huge (1e20 scale); exact ties (unit
 * vectors: every distance exactly 2); and ordinary random inputs. Krum's
 * result must be the reference's row bit for bit; Multi-Krum's and Bulyan's
 * within float rounding of the reference's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/rng.h"
#include "coordinator/aggregate.h"
#include "fedc/error.h"
#include "kernels/robust.h"

enum { D = 96, NMAX = 16 };

/* ---- the float64 reference ---- */

static double ref_sqdist(const float *a, const float *b) {
  double s = 0;
  for (int c = 0; c < D; c++) {
    double t = (double)a[c] - (double)b[c];
    s += t * t;
  }
  return s;
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

/* Krum scores of set[0..m) among themselves. */
static void ref_scores(const float *X, const int *set, int m, int f, double *score) {
  int nn = m > f + 2 ? m - f - 2 : m > 1 ? 1 : 0;
  for (int a = 0; a < m; a++) {
    double dist[NMAX];
    int t = 0;
    for (int b = 0; b < m; b++)
      if (b != a) dist[t++] = ref_sqdist(X + set[a] * D, X + set[b] * D);
    qsort(dist, (size_t)t, sizeof *dist, cmp_double);
    score[a] = 0;
    for (int i = 0; i < nn; i++) score[a] += dist[i];
  }
}

/* Position in set[0..m) of the best: lowest score, then lowest index. */
static int ref_best(const double *score, const int *set, int m) {
  int best = 0;
  for (int j = 1; j < m; j++)
    if (score[j] < score[best] || (score[j] == score[best] && set[j] < set[best])) best = j;
  return best;
}

/* The rows the rule averages (Krum: 1, Multi-Krum: m, Bulyan: theta), in pick order. */
static int ref_select(const float *X, int n, int f, int kind, int m_cfg, int *sel) {
  int set[NMAX], m = n, want = kind == FC_AGG_KRUM ? 1 : kind == FC_AGG_MULTIKRUM ? (m_cfg ? m_cfg : n - f) : n - 2 * f;
  double score[NMAX];
  for (int i = 0; i < n; i++) set[i] = i;
  if (kind != FC_AGG_BULYAN) ref_scores(X, set, m, f, score); /* one scoring, the `want` best */
  for (int got = 0; got < want; got++) {
    if (kind == FC_AGG_BULYAN) ref_scores(X, set, m, f, score); /* re-scored over what is left */
    int b = ref_best(score, set, m);
    sel[got] = set[b];
    set[b] = set[m - 1], score[b] = score[m - 1];
    m--;
  }
  return want;
}

/* The reference result into out (double, then rounded once). */
static void ref_rule(const float *X, int n, int f, int kind, int m_cfg, float *out, int *sel, int *nsel) {
  *nsel = ref_select(X, n, f, kind, m_cfg, sel);
  if (kind == FC_AGG_KRUM) {
    memcpy(out, X + sel[0] * D, D * sizeof *out);
  } else if (kind == FC_AGG_MULTIKRUM) {
    for (int c = 0; c < D; c++) {
      double s = 0;
      for (int i = 0; i < *nsel; i++) s += X[sel[i] * D + c];
      out[c] = (float)(s / *nsel);
    }
  } else {
    /* Bulyan's coordinate step over the picked rows: the theta - 2f values
     * nearest each coordinate's median (kernels/robust.h's reference). */
    float P[NMAX * D];
    for (int i = 0; i < *nsel; i++) memcpy(P + i * D, X + sel[i] * D, D * sizeof *P);
    fc_kref_median_window(P, (size_t)*nsel, D, D, (size_t)(*nsel - 2 * f), out);
  }
}

/* ---- fedc's rule through the aggregator interface ---- */

static int fedc_rule(const float *X, int n, int f, int kind, int m_cfg, float *out) {
  fc_robust_cfg cfg = {kind, (uint32_t)f, 0, (uint32_t)m_cfg, 0, 0, 1};
  fc_agg *a = NULL;
  uint32_t count = 0;
  int rc = fc_agg_robust_create(D, (uint32_t)n, 2, &cfg, &a);
  if (rc != FEDC_OK) return rc;
  a->ops->round_begin(a);
  for (int i = 0; i < n && rc == FEDC_OK; i++) {
    fc_agg_update *u = NULL;
    fc_agg_check chk;
    if ((rc = a->ops->update_begin(a, 0, &u)) != FEDC_OK) break;
    a->ops->update_chunk(a, u, 0, X + i * D, D * sizeof *X);
    if ((rc = a->ops->update_check(a, u, &chk)) != FEDC_OK) a->ops->update_abort(a, u);
    else rc = a->ops->update_commit(a, u, 1.0);
  }
  if (rc == FEDC_OK) rc = a->ops->round_finish(a, out, &count);
  if (rc == FEDC_OK && count != (uint32_t)n) rc = FEDC_ERR_INTERNAL;
  a->ops->destroy(a);
  return rc;
}

/* ---- inputs ---- */

static fc_rng rng;

/* n rows near a common mean (spread ~0.03 per coordinate), times scale. */
static void honest(float *X, int n, double scale) {
  float mu[D];
  for (int c = 0; c < D; c++) mu[c] = (float)((fc_rng_uniform_double(&rng) - 0.5) * scale);
  for (int i = 0; i < n; i++)
    for (int c = 0; c < D; c++) X[i * D + c] = mu[c] + (float)((fc_rng_uniform_double(&rng) - 0.5) * 0.03 * scale);
}

static int cases, krum_cases;

/* Every rule on X against the reference; `what` names the case. */
static void compare(const char *what, const float *X, int n, int f) {
  static const int kinds[] = {FC_AGG_KRUM, FC_AGG_MULTIKRUM, FC_AGG_BULYAN};
  for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
    int kind = kinds[k];
    if (kind == FC_AGG_BULYAN ? n < 4 * f + 3 : n < 2 * f + 3) continue;
    for (int m_cfg = 0; m_cfg <= (kind == FC_AGG_MULTIKRUM ? 3 : 0); m_cfg += 3) { /* multikrum: m = n - f, and 3 */
      float got[D], want[D];
      int sel[NMAX], nsel = 0;
      ref_rule(X, n, f, kind, m_cfg, want, sel, &nsel);
      int rc = fedc_rule(X, n, f, kind, m_cfg, got);
      CHECK_EQ_INT(rc, FEDC_OK);
      int ok = rc == FEDC_OK;
      if (kind == FC_AGG_KRUM) {
        ok = ok && memcmp(got, want, sizeof got) == 0;
        krum_cases++;
      } else {
        /* Float rounding of the mean of picked rows: relative to the largest
         * picked value in the coordinate. A wrong pick is off by the
         * difference of two updates, far more. */
        for (int c = 0; ok && c < D; c++) {
          double big = 0;
          for (int i = 0; i < nsel; i++) big = fmax(big, fabs((double)X[sel[i] * D + c]));
          ok = fabs((double)got[c] - want[c]) <= 1e-5 * big + 1e-30;
        }
      }
      if (!ok) {
        printf("  %s: %s (f %d, m %d) differs from the float64 reference, which picks", what, fc_robust_name(kind), f,
               m_cfg);
        for (int i = 0; i < nsel; i++) printf(" %d", sel[i]);
        printf("; fedc's result at coordinate 0: %g (reference %g)\n", (double)got[0], (double)want[0]);
      }
      CHECK(ok);
      cases++;
    }
  }
}

int main(void) {
  fc_rng_seed(&rng, 20);
  float X[NMAX * D];
  char what[160];

  /* Attackers holding one extreme value: 2 of 10 (Krum, Multi-Krum) and of
   * 11 (Bulyan), f = 2, at the front, at the back and apart; both with the
   * same value, or with opposite signs. */
  static const double extreme[] = {1e19, 1.8e19, 1.9e19, 1e30, 3e38};
  static const int at[][2] = {{0, 1}, {8, 9}, {0, 9}, {1, 5}};
  for (int n = 10; n <= 11; n++)
    for (size_t e = 0; e < sizeof extreme / sizeof *extreme; e++)
      for (int sign = 0; sign < 3; sign++) /* +, -, mixed */
        for (size_t p = 0; p < sizeof at / sizeof *at; p++) {
          honest(X, n, 1.0);
          for (int a = 0; a < 2; a++) {
            double v = extreme[e] * (sign == 1 || (sign == 2 && a == 1) ? -1 : 1);
            X[at[p][a] * D + 3] = (float)v;
          }
          snprintf(what, sizeof what, "n %d, attackers %d,%d at %s%g", n, at[p][0], at[p][1],
                   sign == 0 ? "+" : sign == 1 ? "-" : "+-", extreme[e]);
          compare(what, X, n, 2);
        }
  /* One attacker with extreme values in every coordinate; f = 1. */
  for (size_t e = 0; e < sizeof extreme / sizeof *extreme; e++) {
    honest(X, 8, 1.0);
    for (int c = 0; c < D; c++) X[c] = (float)(extreme[e] * (c % 2 ? -1 : 1));
    snprintf(what, sizeof what, "row 0 all +-%g", extreme[e]);
    compare(what, X, 8, 1);
  }
  /* Every update huge (scale 1e20: each squared norm overflows float), two
   * attackers further off. */
  for (int rep = 0; rep < 4; rep++) {
    honest(X, 11, 1e20);
    for (int c = 0; c < D; c++) X[(rep % 11) * D + c] *= 3, X[((rep + 5) % 11) * D + c] *= -2;
    snprintf(what, sizeof what, "every update at 1e20, attackers %d and %d", rep % 11, (rep + 5) % 11);
    compare(what, X, 11, 2);
  }
  /* Exact ties: unit vectors are all exactly 2 apart, so every score ties
   * and the lowest index wins; then rows 0 and 1 at 3 e_i (10 from the
   * others): the tie is among rows 2.. and row 2 wins. */
  for (int far = 0; far <= 1; far++)
    for (int n = 7; n <= 11; n += 4) {
      memset(X, 0, sizeof X);
      for (int i = 0; i < n; i++) X[i * D + i] = far && i < 2 ? 3.0f : 1.0f;
      snprintf(what, sizeof what, "ties: %d unit vectors%s", n, far ? ", rows 0 and 1 at 3" : "");
      compare(what, X, n, 2);
    }
  /* Ordinary inputs: honest updates with moderate attackers (-20 x mean),
   * and plain random rows, several f. */
  for (int rep = 0; rep < 12; rep++) {
    int n = 7 + rep % 8, f = rep % 3;
    honest(X, n, 1.0);
    for (int a = 0; a < f; a++)
      for (int c = 0; c < D; c++) X[(n - 1 - a) * D + c] *= -20;
    snprintf(what, sizeof what, "ordinary: n %d, f %d attackers at -20 x", n, f);
    compare(what, X, n, f);
    for (int i = 0; i < n * D; i++) X[i] = (float)fc_rng_normal(&rng);
    snprintf(what, sizeof what, "ordinary: n %d gaussian rows, f %d", n, f);
    compare(what, X, n, f);
  }
  printf("  %d comparisons with the float64 reference (%d Krum picks)\n", cases, krum_cases);
  return CHECK_DONE();
}
