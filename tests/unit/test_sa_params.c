/*
 * test_sa_params.c - safe SecAgg+ parameters (secagg/params.h):
 *   - the published table of Bell et al. 2020's parameters as computed by
 *     Google's federated-compute parameter finder (40-bit security, 2^-20
 *     failure), reproduced from the same conditions by our own code;
 *   - the hypergeometric tails against exact binomial-coefficient sums;
 *   - deterministic small cases, the complete-graph fallback, infeasible
 *     inputs, and the bounds reported for a given (k, t);
 *   - the coordinator's default graph (fc_sa_params_default) for every
 *     cohort size from 3 to 3,000: the floor clients insist on, the bounds
 *     for the conservative counts, the complete graph for small cohorts.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "fedc/error.h"
#include "secagg/params.h"
#include "secagg/secagg.h"

static void expect(uint32_t n, double corrupt, double dropout, int threat, uint32_t k, uint32_t t) {
  fc_sa_choice c;
  char why[300];
  int rc = fc_sa_params_find(n, corrupt, dropout, threat, &c, why, sizeof why);
  CHECK_EQ_INT(rc, FEDC_OK);
  if (rc != FEDC_OK) {
    fprintf(stderr, "  n=%u: %s\n", n, why);
    return;
  }
  if (c.k != k || c.t != t)
    fprintf(stderr, "  n=%u corrupt %.2f dropout %.2f: got k=%u t=%u, want %u/%u\n", n, corrupt, dropout, c.k, c.t, k, t);
  CHECK_EQ_INT(c.k, k);
  CHECK_EQ_INT(c.t, t);
  /* Whatever was chosen meets its own budgets. */
  CHECK(c.log2_disconnect < -FC_SA_SECURITY_BITS);
  CHECK(c.log2_corrupt < -FC_SA_SECURITY_BITS);
  CHECK(c.log2_starve <= -FC_SA_CORRECTNESS_BITS);
}

static void test_published_table(void) {
  /* n, corrupt, dropout -> k / t (semi-honest = CURIOUS_SERVER; the last
   * column SEMI_MALICIOUS_SERVER), from FCP's parameter table: the conditions
   * as published (FC_SA_AS_PUBLISHED), without fedc's own-share holder and
   * client floor. */
  const int H = FC_SA_THREAT_HONEST | FC_SA_AS_PUBLISHED, M = FC_SA_THREAT_MALICIOUS | FC_SA_AS_PUBLISHED;
  expect(1000, 0.33, 0.33, H, 286, 150);
  expect(1000, 0.05, 0.33, H, 72, 24);
  expect(1000, 0.33, 0.05, H, 78, 60);
  expect(1000, 0.30, 0.30, M, 872, 584);
  expect(10000, 0.33, 0.33, H, 422, 221);
  expect(10000, 0.05, 0.33, H, 86, 29);
  expect(10000, 0.33, 0.05, H, 92, 70);
  expect(100000, 0.05, 0.33, H, 96, 32);
  expect(100000, 0.33, 0.05, H, 102, 77);
  /* The table's 4822 / 3230: we draw neighbours from the n - 1 others
   * rather than n, which is 6 neighbours more careful here. */
  fc_sa_choice c;
  char why[300];
  CHECK_EQ_INT(fc_sa_params_find(10000, 0.30, 0.30, M, &c, why, sizeof why), FEDC_OK);
  CHECK(c.k >= 4822 && c.k <= 4822 * 1.01);
  CHECK(c.t >= 3230 && c.t <= 3230 * 1.01);
}

/* What fedc itself uses: the victim's own share makes k + 1 holders of b_v,
 * so a lying coordinator with c corrupt neighbours needs only 2t <= k + 1 + c
 * (secagg.h), and every choice meets the client floor 2t > k + 1. */
static void test_fedc_conditions(void) {
  const int H = FC_SA_THREAT_HONEST, M = FC_SA_THREAT_MALICIOUS;
  /* One more holder than published: the table's 872 / 584 tolerates
   * 2 * 584 - 872 - 1 = 295 corrupt neighbours; fedc needs a bit more. */
  expect(1000, 0.30, 0.30, M, 876, 587);
  fc_sa_choice c;
  char why[300];
  for (uint32_t n = 3; n <= 60; n++)
    for (int th = 0; th < 2; th++)
      for (double bad = 0; bad < 0.3; bad += 0.1) {
        if (fc_sa_params_find(n, bad, bad, th, &c, why, sizeof why) != FEDC_OK) continue;
        CHECK(c.t >= fc_sa_min_threshold(c.k, 0)); /* never below what a client accepts */
        CHECK(c.log2_corrupt < -FC_SA_SECURITY_BITS);
      }
  /* Semi-honest with the floor: 5% corrupt, 33% dropout at 1,000 clients was
   * 72 / 24 as published, a threshold a split view beats with no corrupt
   * client at all (2 * 24 <= 73); with the floor t > (k + 1) / 2 the
   * survivors must outnumber it, and k grows. */
  expect(1000, 0.05, 0.33, H, 230, 116);
  /* The floor cannot be checked away: (72, 24) is refused for any threat. */
  CHECK_EQ_INT(fc_sa_params_bounds(1000, 72, 24, 0.05, 0.33, H, &c), 1);
  CHECK_EQ_INT(fc_sa_params_bounds(1000, 72, 24, 0.05, 0.33, H | FC_SA_AS_PUBLISHED, &c), 0);
  /* The review's cohort of 6 (k = 5): t = 3 was broken, t = 4 holds. */
  CHECK_EQ_INT(fc_sa_params_bounds(6, 5, 3, 0, 0.2, M, &c), 1);
  CHECK_EQ_INT(fc_sa_params_bounds(6, 5, 3, 0, 0.2, H, &c), 1);
  CHECK_EQ_INT(fc_sa_params_bounds(6, 5, 4, 0, 0.2, M, &c), 0);
}

static double choose(double a, double b) {
  return b < 0 || b > a ? 0 : exp(lgamma(a + 1) - lgamma(b + 1) - lgamma(a - b + 1));
}

/* The bound reported for (k, t) against a direct sum of binomials. */
static void test_bounds_exact(void) {
  const uint32_t n = 41, k = 12, t = 8;
  const double corrupt = 0.2, dropout = 0.25; /* 8 corrupt, 31 survive */
  fc_sa_choice c;
  fc_sa_params_bounds(n, k, t, corrupt, dropout, FC_SA_THREAT_MALICIOUS, &c);
  /* P(2): corrupt neighbours >= 2t - k - 1 = 3 (k + 1 holders of b_v: a split
   * view needs 2t <= k + 1 + c), population 40 with 8 corrupt. The old
   * expectation, > 3, was the off-by-one of the bug. */
  double p2 = 0;
  for (int x = 3; x <= 8; x++) p2 += choose(8, x) * choose(32, k - x) / choose(40, k);
  CHECK(fabs(c.log2_corrupt - fmin(0, log2(n * p2))) < 1e-9); /* a union bound above 1 says 1 */
  /* P(3): surviving neighbours < t, population 40 with 30 other survivors. */
  double p3 = 0;
  for (int x = 0; x < (int)t; x++) p3 += choose(30, x) * choose(10, k - x) / choose(40, k);
  CHECK(fabs(c.log2_starve - fmin(0, log2(n * p3))) < 1e-9);
  /* P(1): 8 + 10 bad clients, n (n - k - 1) / 2 gap pairs x (18)_12 / (41)_12. */
  double fall = 1;
  for (uint32_t i = 0; i < k; i++) fall *= (18.0 - i) / (41.0 - i);
  CHECK(fabs(c.log2_disconnect - log2(41.0 * 28 / 2 * fall)) < 1e-9);
  /* Far from 1: t = 4 starves less, semi-honest tolerates t - 1 = 7 corrupt. */
  fc_sa_params_bounds(n, k, 4, corrupt, dropout, FC_SA_THREAT_HONEST, &c);
  double p4 = 0;
  for (int x = 0; x < 4; x++) p4 += choose(30, x) * choose(10, k - x) / choose(40, k);
  CHECK(p4 > 0 && n * p4 < 1e-3);
  CHECK(fabs(c.log2_starve - log2(n * p4)) < 1e-9);
  fc_sa_params_bounds(n, k, t, corrupt, dropout, FC_SA_THREAT_HONEST, &c);
  double q2 = choose(8, 8) * choose(32, k - 8) / choose(40, k);
  CHECK(fabs(c.log2_corrupt - log2(n * q2)) < 1e-9);
}

static void test_small_and_edges(void) {
  fc_sa_choice c;
  char why[300];
  /* n = 10, one corrupt and one dropout at most. k = 4, t = 3 (the old
   * expectation) falls to a split view with that one corrupt neighbour
   * (2t = 6 <= k + 1 + 1); k = 6, t = 5 holds surely (at least 5 of 6
   * neighbours survive; 2t - k - 1 = 3 > 1 corrupt). */
  CHECK_EQ_INT(fc_sa_params_find(10, 0.1, 0.1, FC_SA_THREAT_MALICIOUS, &c, why, sizeof why), FEDC_OK);
  CHECK_EQ_INT(c.k, 6);
  CHECK_EQ_INT(c.t, 5);
  CHECK(isinf(c.log2_corrupt) && isinf(c.log2_starve));
  CHECK_EQ_INT(fc_sa_params_bounds(10, 4, 3, 0.1, 0.1, FC_SA_THREAT_MALICIOUS, &c), 1);
  /* Nothing corrupt, nothing dropping: the sparsest graph. */
  CHECK_EQ_INT(fc_sa_params_find(1000, 0, 0, FC_SA_THREAT_MALICIOUS, &c, why, sizeof why), FEDC_OK);
  CHECK_EQ_INT(c.k, 2);
  /* Small cohorts fall back to the complete graph. */
  CHECK_EQ_INT(fc_sa_params_find(5, 0, 0.2, FC_SA_THREAT_MALICIOUS, &c, why, sizeof why), FEDC_OK);
  CHECK(c.complete && c.k == 4 && c.t == 3);
  /* One corrupt and one dropped of 5 (the old expectation: k = 4, t = 3) is
   * infeasible: a split view needs 2t <= 6, the one dropout allows t <= 3. */
  CHECK_EQ_INT(fc_sa_params_find(5, 0.2, 0.2, FC_SA_THREAT_MALICIOUS, &c, why, sizeof why), FEDC_ERR_INVALID);
  /* Too many bad clients: a clear error, not a silly k. */
  CHECK_EQ_INT(fc_sa_params_find(100, 0.45, 0.45, FC_SA_THREAT_MALICIOUS, &c, why, sizeof why), FEDC_ERR_INVALID);
  CHECK(strstr(why, "no safe parameters") != NULL);
  CHECK_EQ_INT(fc_sa_params_find(2, 0, 0, FC_SA_THREAT_MALICIOUS, &c, why, sizeof why), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_sa_params_find(100, 1.0, 0, FC_SA_THREAT_MALICIOUS, &c, why, sizeof why), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_sa_params_find(100, 0, NAN, FC_SA_THREAT_MALICIOUS, &c, why, sizeof why), FEDC_ERR_INVALID);
  /* The check of a given pair: our default for a cohort of 10 (k = 9, t = 6)
   * is safe against 10% of each; t = 5 (not a majority of 9 + corrupt) is not. */
  CHECK_EQ_INT(fc_sa_params_bounds(10, 9, 6, 0.1, 0.1, FC_SA_THREAT_MALICIOUS, &c), 0);
  CHECK_EQ_INT(fc_sa_params_bounds(10, 9, 5, 0.1, 0.1, FC_SA_THREAT_MALICIOUS, &c), 1);
  /* Larger t than the survivors can supply fails correctness. */
  CHECK_EQ_INT(fc_sa_params_bounds(10, 9, 9, 0.1, 0.1, FC_SA_THREAT_MALICIOUS, &c), 1);
}

/* One default choice: what every client checks (fc_sa_params_check: the
 * floor 2t > k + 1, t <= k, an even k or the complete graph) and, unless it
 * is the fallback, Bell et al.'s bounds for the counts it promises. */
static int default_ok(uint32_t n, uint32_t min_survivors, fc_sa_choice *c) {
  fc_sa_params_default(n, FC_SA_DEFAULT_CORRUPT, FC_SA_DEFAULT_DROPOUT, min_survivors, c);
  int ok = c->k >= 2 && c->k <= n - 1 && c->t <= c->k && c->t >= fc_sa_min_threshold(c->k, 0) &&
           (c->complete == (c->k == n - 1)) && (c->complete || c->k % 2 == 0);
  fc_sa_params p;
  memset(&p, 0, sizeof p);
  p.n = n;
  p.k = c->k;
  p.t = c->t;
  p.min_survivors = min_survivors;
  p.clip = 1;
  p.max_weight = 1;
  p.dim = 10;
  char why[300];
  ok = ok && fc_sa_params_check(&p, why, sizeof why) == FEDC_OK;
  if (!isnan(c->log2_starve)) {
    /* From the bounds: recheck them at the counts the default promises
     * (corrupt rounded up, dropped at least n - min_survivors). */
    uint32_t bad_c = (uint32_t)ceil(FC_SA_DEFAULT_CORRUPT * n - 1e-9);
    uint32_t dropped = (uint32_t)ceil(FC_SA_DEFAULT_DROPOUT * n - 1e-9);
    if (min_survivors && n - min_survivors > dropped) dropped = n - min_survivors;
    fc_sa_choice b;
    ok = ok && fc_sa_params_bounds(n, c->k, c->t, (double)bad_c / n, (double)dropped / n, FC_SA_THREAT_MALICIOUS,
                                   &b) == 0;
    /* ... and so it withstands a lying coordinator with a corrupt neighbour
     * wherever the cohort has one to give (2t > k + 1 + 1). */
    ok = ok && (bad_c == 0 || c->t >= fc_sa_min_threshold(c->k, 1));
  }
  if (!ok) fprintf(stderr, "  default for n=%u min_survivors=%u: k=%u t=%u complete=%d\n", n, min_survivors, c->k, c->t,
                   c->complete);
  return ok;
}

static void test_coordinator_default(void) {
  fc_sa_choice c;
  uint32_t bad = 0, sparse_from = 0, complete_small = 1;
  for (uint32_t n = 3; n <= 3000; n++) {
    /* Clients sign survivor lists down to min_survivors: every n (the sim),
     * 90% and 70% of the cohort, and the coordinator's default 2. */
    uint32_t ms[4] = {n, (uint32_t)ceil(0.9 * n), (uint32_t)ceil(0.7 * n), 2};
    for (int i = 0; i < 4; i++) bad += !default_ok(n, ms[i], &c);
    fc_sa_params_default(n, FC_SA_DEFAULT_CORRUPT, FC_SA_DEFAULT_DROPOUT, n, &c);
    if (!c.complete && !sparse_from) sparse_from = n;
    if (n <= 7) complete_small &= c.complete;
  }
  CHECK_EQ_INT(bad, 0);
  /* Small cohorts: the complete graph (1 corrupt and 1 dropped of up to 7
   * leave no sparser graph), sparse from 8 clients on. */
  CHECK(complete_small);
  CHECK_EQ_INT(sparse_from, 8);
  /* 100 clients, 5 corrupt, 10 dropped (min_updates 100 or 90): 28 / 18, the
   * bench's cohort; at min_updates 70 the 30 a coordinator may claim dropped
   * need 68 / 38; at min_updates 2 nothing sparser holds: 99 / 51 as before. */
  fc_sa_params_default(100, FC_SA_DEFAULT_CORRUPT, FC_SA_DEFAULT_DROPOUT, 100, &c);
  CHECK(c.k == 28 && c.t == 18 && !c.complete);
  fc_sa_params_default(100, FC_SA_DEFAULT_CORRUPT, FC_SA_DEFAULT_DROPOUT, 90, &c);
  CHECK(c.k == 28 && c.t == 18);
  fc_sa_params_default(100, FC_SA_DEFAULT_CORRUPT, FC_SA_DEFAULT_DROPOUT, 70, &c);
  CHECK(c.k == 68 && c.t == 38);
  fc_sa_params_default(100, FC_SA_DEFAULT_CORRUPT, FC_SA_DEFAULT_DROPOUT, 2, &c);
  CHECK(c.complete && c.k == 99 && c.t == 51 && isnan(c.log2_starve));
  /* Fractions of a client count as one: 10 clients at 5% is one corrupt. */
  fc_sa_params_default(10, FC_SA_DEFAULT_CORRUPT, FC_SA_DEFAULT_DROPOUT, 10, &c);
  fc_sa_choice one;
  char why[300];
  CHECK_EQ_INT(fc_sa_params_find(10, 0.1, 0.1, FC_SA_THREAT_MALICIOUS, &one, why, sizeof why), FEDC_OK);
  CHECK(c.k == one.k && c.t == one.t);
  /* Larger cohorts stay sparse: 10,000 clients. */
  fc_sa_params_default(10000, FC_SA_DEFAULT_CORRUPT, FC_SA_DEFAULT_DROPOUT, 9000, &c);
  CHECK(!c.complete && c.k < 200 && c.t >= fc_sa_min_threshold(c.k, 1));
  /* Nothing can hold (as many corrupt as survivors): the complete graph at the floor. */
  fc_sa_params_default(50, 0.5, 0.5, 0, &c);
  CHECK(c.complete && c.k == 49 && c.t == fc_sa_min_threshold(49, 0));
}

int main(void) {
  test_coordinator_default();
  test_bounds_exact();
  test_small_and_edges();
  test_published_table();
  test_fedc_conditions();
  return CHECK_DONE();
}
