/*
 * params.c - safe k and t for SecAgg+ (Bell et al. 2020); see params.h for
 * the conditions and their bounds.
 *
 * The hypergeometric tails are summed exactly in linear space: the terms
 * are walked outwards from the mode with the ratio
 *   p(x+1) / p(x) = (K - x)(k - x) / ((x + 1)(N - K - k + x + 1))
 * and normalised by their total, so one candidate k costs O(k) without a
 * logarithm per term. Terms below 1e-300 of the mode are dropped: far below
 * the 2^-61 / n the bounds need.
 */
#include "secagg/params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/error.h"
#include "secagg/secagg.h"

/* Tails of X ~ Hypergeometric(population N, K marked, k drawn), over
 * x = 0..k: le[x] = P[X <= x], gt[x] = P[X > x]. Returns 0, or -1 on OOM. */
static int hyp_tails(uint64_t N, uint64_t K, uint64_t k, double *le, double *gt) {
  uint64_t lo = k > N - K ? k - (N - K) : 0, hi = k < K ? k : K;
  double *w = calloc(k + 1, sizeof *w);
  if (!w) return -1;
  /* The mode of the hypergeometric distribution. */
  uint64_t mode = (uint64_t)floor((double)(k + 1) * (double)(K + 1) / (double)(N + 2));
  if (mode < lo) mode = lo;
  if (mode > hi) mode = hi;
  w[mode] = 1;
  double total = 1;
  for (uint64_t x = mode; x < hi; x++) { /* upwards: p(x+1) from p(x) */
    double r = (double)(K - x) * (double)(k - x) / ((double)(x + 1) * (double)(N - K - k + x + 1));
    w[x + 1] = w[x] * r;
    total += w[x + 1];
    if (w[x + 1] < 1e-300) break;
  }
  for (uint64_t x = mode; x > lo; x--) { /* downwards: p(x-1) = p(x) / ratio(x-1) */
    double r = (double)(K - x + 1) * (double)(k - x + 1) / ((double)x * (double)(N - K - k + x));
    w[x - 1] = w[x] / r;
    total += w[x - 1];
    if (w[x - 1] < 1e-300) break;
  }
  double acc = 0;
  for (uint64_t x = 0; x <= k; x++) {
    acc += w[x] / total;
    le[x] = acc;
  }
  acc = 0;
  for (uint64_t x = k + 1; x-- > 0;) {
    gt[x] = acc; /* P[X > x] */
    acc += w[x] / total;
  }
  free(w);
  return 0;
}

static double log2_or_inf(double p) { return p > 0 ? log2(p) : -INFINITY; }

/* Evaluate k: its smallest admissible t (t_min) and largest (t_max), and the
 * bounds at t = t_min. Returns 0 if k is admissible (t_min <= t_max and the
 * graph stays connected), 1 if not, -1 on OOM. */
static int eval_k(uint32_t n, uint32_t k, uint32_t t_fixed, double corrupt, double dropout, int threat,
                  fc_sa_choice *out) {
  const double eps = 1e-14; /* floating point must not round in the insecure direction */
  uint64_t bad_c = (uint64_t)floor((corrupt + eps) * n);
  uint64_t surv = (uint64_t)ceil((1 - dropout - eps) * n);
  if (bad_c > n) bad_c = n;
  if (surv > n) surv = n;
  uint64_t bad = bad_c + (n - surv);
  /* (1) Disconnection of a random Harary graph: k/2 consecutive bad ring
   * positions in two places; n (n - k - 1) / 2 such pairs, each with
   * probability (B)_k / (n)_k (positions drawn without replacement). */
  double lp1 = -INFINITY;
  if (k < n - 1 && k <= bad)
    lp1 = log((double)n) + log((double)(n - k - 1)) - log(2.0) + lgamma((double)bad + 1) - lgamma((double)(bad - k) + 1) +
          lgamma((double)(n - k) + 1) - lgamma((double)n + 1);
  out->k = k;
  out->complete = k == n - 1;
  out->log2_disconnect = lp1 / log(2.0);
  double sec_budget = -(FC_SA_SECURITY_BITS + 1); /* log2, per security event */
  double cor_budget = -FC_SA_CORRECTNESS_BITS;
  /* Neighbours of a client are k of the other n - 1. Worst cases: an honest
   * client sees all bad_c corrupt clients among the others; a surviving one
   * sees surv - 1 survivors. */
  double *buf = malloc(4 * ((size_t)k + 1) * sizeof *buf);
  if (!buf) return -1;
  double *c_le = buf, *c_gt = buf + k + 1, *s_le = buf + 2 * ((size_t)k + 1), *s_gt = buf + 3 * ((size_t)k + 1);
  if (hyp_tails(n - 1, bad_c, k, c_le, c_gt) || hyp_tails(n - 1, surv ? surv - 1 : 0, k, s_le, s_gt)) {
    free(buf);
    return -1;
  }
  /* (2) t1: corrupt neighbours exceed t1 with probability <= 2^-41 / n. */
  int published = threat & FC_SA_AS_PUBLISHED, honest = (threat & 0xff) == FC_SA_THREAT_HONEST;
  uint32_t t1 = 0;
  while (t1 < k && log2_or_inf(c_gt[t1]) + log2((double)n) > sec_budget) t1++;
  /* Semi-honest: t1 corrupt neighbours pool fewer than t shares, t >= t1 + 1.
   * Lying coordinator: a split view needs 2t <= k + 1 + c with c corrupt
   * neighbours (secagg.h), so 2t > k + 1 + t1, t >= floor((k + 1 + t1)/2) + 1;
   * as published (k holders of b_v, Bell et al. 2020's malicious-server
   * condition 2t - k > c), t >= floor((k + t1)/2) + 1. Unless asked for the
   * published conditions, t also meets the client floor 2t > k + 1. */
  uint32_t t_min;
  if (honest) t_min = t1 + 1;
  else t_min = published ? (k + t1) / 2 + 1 : fc_sa_min_threshold(k, t1);
  if (!published && t_min < fc_sa_min_threshold(k, 0)) t_min = fc_sa_min_threshold(k, 0);
  if (t_min < 2) t_min = 2;
  /* (3) t_max: fewer than t surviving neighbours with probability <= 2^-20 / n. */
  uint32_t t_max = 0;
  while (t_max < k && log2_or_inf(s_le[t_max]) + log2((double)n) <= cor_budget) t_max++;
  /* now P[S <= t_max - 1] is within budget: t <= t_max is correct */
  uint32_t t = t_fixed ? t_fixed : t_min;
  out->t = t;
  /* P(2): as many corrupt neighbours as break the threshold, for some
   * client: t (semi-honest: P[C > t - 1]), or 2t - k - 1 against a lying
   * coordinator (P[C > 2t - k - 2]; none needed, so P = 1, when
   * 2t <= k + 1); as published, 2t - k (P[C > 2t - k - 1]). */
  double p2 = 1;
  uint32_t k_holders = published ? k : k + 1; /* holders of b_v */
  if (honest) p2 = t >= 1 && t - 1 <= k ? c_gt[t - 1] : 1;
  else if (2 * t > k_holders && 2 * t - k_holders - 1 <= k) p2 = c_gt[2 * t - k_holders - 1];
  double p3 = t >= 1 && t - 1 <= k ? s_le[t - 1] : 1; /* P(3): fewer than t surviving neighbours */
  out->log2_corrupt = fmin(0, log2_or_inf(p2) + log2((double)n));
  out->log2_starve = fmin(0, log2_or_inf(p3) + log2((double)n));
  free(buf);
  int ok = lp1 / log(2.0) < sec_budget && t >= t_min && t <= t_max && t <= k && t >= 2;
  return ok ? 0 : 1;
}

int fc_sa_params_bounds(uint32_t n, uint32_t k, uint32_t t, double corrupt, double dropout, int threat,
                       fc_sa_choice *out) {
  if (n < 3 || k < 2 || k > n - 1 || t < 1) return 1;
  return eval_k(n, k, t, corrupt, dropout, threat, out) == 0 ? 0 : 1;
}

int fc_sa_params_find(uint32_t n, double corrupt, double dropout, int threat, fc_sa_choice *out, char *why,
                      size_t whylen) {
  if (n < 3 || n > FC_SA_PARAMS_MAX_CLIENTS) {
    snprintf(why, whylen, "clients must be 3..%u, got %u", FC_SA_PARAMS_MAX_CLIENTS, n);
    return FEDC_ERR_INVALID;
  }
  if (!(corrupt >= 0 && corrupt < 1) || !(dropout >= 0 && dropout < 1)) {
    snprintf(why, whylen, "corrupt and dropout fractions must be in [0, 1)");
    return FEDC_ERR_INVALID;
  }
  /* Even k (a Harary graph), smallest first; then the complete graph. */
  for (uint32_t k = 2;; k += 2) {
    if (k >= n - 1) k = n - 1;
    int r = eval_k(n, k, 0, corrupt, dropout, threat, out);
    if (r < 0) {
      snprintf(why, whylen, "out of memory");
      return FEDC_ERR_NOMEM;
    }
    if (r == 0) return FEDC_OK;
    if (k == n - 1) break;
  }
  snprintf(why, whylen,
           "no safe parameters for %u clients with %.3g corrupt and %.3g dropping out, not even the complete graph: "
           "too few honest survivors to outvote %s (try a smaller dropout or corrupt fraction, or more clients)",
           n, corrupt, dropout, (threat & 0xff) == FC_SA_THREAT_HONEST ? "the corrupt clients" : "a lying coordinator");
  return FEDC_ERR_INVALID;
}

void fc_sa_params_default(uint32_t n, double corrupt, double dropout, uint32_t min_survivors, fc_sa_choice *out) {
  char why[300];
  const double eps = 1e-9; /* 5% of 100 is 5 clients, not 6: ceil must not see 5.000000000000001 */
  uint64_t bad_c = corrupt > 0 ? (uint64_t)ceil(corrupt * n - eps) : 0;
  uint64_t dropped = dropout > 0 ? (uint64_t)ceil(dropout * n - eps) : 0;
  if (min_survivors && min_survivors < n && n - min_survivors > dropped) dropped = n - min_survivors;
  memset(out, 0, sizeof *out);
  /* The counts as fractions the finder turns back into exactly these counts
   * (it floors corrupt x n and ceils (1 - dropout) x n, with a 1e-14 slack).
   * The complete graph first: with every other client a neighbour the counts
   * are exact (bad_c corrupt neighbours, no tail to bound), the most any k
   * can offer; where even it fails, the search (O(n^2) then: every even k
   * tried) would find nothing, and runs at each round start. */
  double fc = (double)bad_c / n, fd = (double)dropped / n;
  fc_sa_choice whole;
  if (n >= FC_SA_MIN_COHORT && n <= FC_SA_PARAMS_MAX_CLIENTS && bad_c + dropped < n &&
      fc_sa_params_bounds(n, n - 1, fc_sa_min_threshold(n - 1, (uint32_t)bad_c), fc, fd, FC_SA_THREAT_MALICIOUS,
                          &whole) == 0 &&
      fc_sa_params_find(n, fc, fd, FC_SA_THREAT_MALICIOUS, out, why, sizeof why) == FEDC_OK)
    return;
  memset(out, 0, sizeof *out);
  out->k = n > 1 ? n - 1 : 0;
  out->t = fc_sa_min_threshold(out->k, 0);
  if (out->t > out->k) out->t = out->k;
  out->complete = 1;
  out->log2_disconnect = out->log2_corrupt = out->log2_starve = NAN; /* not met, or not evaluated */
}
