/*
 * test_drift_fed.c - the drift check fed by federated evaluation (issue 24,
 * coordinator/coord_drift_fed.c) on its pure parts:
 *   - the predicted-class counts of a cohort's reports add up (plain) and
 *     travel through the SecAgg vector (encode, sum, decode) exactly;
 *   - a client's counts are bounded as the rest (scaled past the example
 *     cap; never more in all than its examples), and a sum with a class
 *     entry above the examples is refused;
 *   - the PSI of the summed counts against the previous evaluation's is the
 *     value worked by hand: (0.4, 0.2, 0.4) against (0.5, 0.3, 0.2) is
 *     0.1 ln(5/4) + 0.1 ln(3/2) + 0.2 ln 2 = 0.20149 (under the default
 *     threshold 0.25), and a collapse onto one class, (0.98, 0.01, 0.01),
 *     is 0.48 ln 1.96 + 0.29 ln 30 + 0.19 ln 20 = 1.87854 (over it);
 *   - the history line keeps the counts and the check (source federated).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "coordinator/drift.h"
#include "coordinator/engine.h"
#include "coordinator/store.h"
#include "fedc/error.h"
#include "secagg/eval_stats.h"

static fc_eval_stats client(double ex, double c0, double c1, double c2) {
  fc_eval_stats s;
  memset(&s, 0, sizeof s);
  s.examples = ex;
  s.correct = ex / 2;
  s.loss_sum = ex;
  s.nclasses = 3;
  s.class_count[0] = c0, s.class_count[1] = c1, s.class_count[2] = c2;
  return s;
}

static void test_plain_and_psi(void) {
  fc_eval_stats a = client(30, 20, 5, 5), b = client(70, 20, 15, 35), sum;
  memset(&sum, 0, sizeof sum);
  fc_eval_stats_clamp(&a, 1000, 10);
  fc_eval_stats_clamp(&b, 1000, 10);
  fc_eval_stats_add(&sum, &a);
  fc_eval_stats_add(&sum, &b);
  CHECK(sum.nclasses == 3 && sum.class_count[0] == 40 && sum.class_count[1] == 20 && sum.class_count[2] == 40);
  double p[3], q[3];
  const double prev[3] = {50, 30, 20};
  CHECK(fabs(fc_drift_normalize_totals(sum.class_count, 3, p) - 100) < 1e-12);
  CHECK(fabs(fc_drift_normalize_totals(prev, 3, q) - 100) < 1e-12);
  double psi = fc_drift_psi(p, q, 3, FC_DRIFT_EPS);
  CHECK(fabs(psi - (0.1 * log(5.0 / 4) + 0.1 * log(1.5) + 0.2 * log(2.0))) < 1e-12);
  CHECK(fabs(psi - 0.20149) < 1e-5 && psi < FC_DRIFT_DEFAULT_THRESHOLD);
  const double collapsed[3] = {98, 1, 1};
  fc_drift_normalize_totals(collapsed, 3, p);
  psi = fc_drift_psi(p, q, 3, FC_DRIFT_EPS);
  CHECK(fabs(psi - 1.87854) < 1e-5 && psi >= FC_DRIFT_DEFAULT_THRESHOLD);
  /* No counts (a trainer that does not report them): total 0, nothing to compare. */
  const double none[3] = {0, 0, 0};
  CHECK(fc_drift_normalize_totals(none, 3, p) == 0 && p[0] == 0);
  /* DP noise can push a total below 0: it counts as 0. */
  const double noisy[3] = {-3, 1, 3};
  CHECK(fc_drift_normalize_totals(noisy, 3, p) == 4 && p[0] == 0 && p[2] == 0.75);
}

static void test_bounds(void) {
  fc_eval_stats s = client(400, 300, 100, 100); /* 500 predictions for 400 examples: down to 400 */
  fc_eval_stats_clamp(&s, 1000, 10);
  CHECK(fabs(s.class_count[0] + s.class_count[1] + s.class_count[2] - 400) < 1e-9);
  CHECK(fabs(s.class_count[0] - 240) < 1e-9);
  s = client(400, 200, 100, 100); /* past the cap of 100: scaled with the rest */
  fc_eval_stats_clamp(&s, 100, 10);
  CHECK(s.examples == 100 && fabs(s.class_count[0] - 50) < 1e-9 && fabs(s.class_count[2] - 25) < 1e-9);
}

static void test_secagg_vector(void) {
  const uint32_t n = 3, k = 3;
  const uint64_t E = 1000;
  double scale = fc_eval_scale(n, E, 10);
  uint64_t dim = fc_eval_dim(0, k);
  CHECK(dim == 6);
  uint32_t sum[7] = {0}, q[7];
  fc_eval_stats in[3] = {client(30, 20, 5, 5), client(70, 20, 15, 35), client(100, 50, 25, 25)};
  fc_rng rng;
  fc_rng_seed(&rng, 7);
  for (uint32_t i = 0; i < n; i++) {
    fc_eval_stats_clamp(&in[i], E, 10);
    fc_eval_encode(&in[i], scale, &rng, q);
    for (uint64_t j = 0; j <= dim; j++) sum[j] += q[j];
  }
  fc_eval_stats got;
  memset(&got, 0, sizeof got);
  uint32_t clients = 0;
  CHECK_EQ_INT(fc_eval_decode(sum, 0, k, scale, n, E, 10, &got, &clients), FEDC_OK);
  CHECK(clients == 3 && got.nclasses == 3);
  CHECK(got.class_count[0] == 90 && got.class_count[1] == 45 && got.class_count[2] == 65);
  sum[3] = sum[0] + 1; /* more examples predicted as class 0 than there are examples */
  CHECK_EQ_INT(fc_eval_decode(sum, 0, k, scale, n, E, 10, &got, &clients), FEDC_ERR_INVALID);
}

static void test_history_line(void) {
  fc_round_eval e, back;
  memset(&e, 0, sizeof e);
  memset(&back, 0, sizeof back);
  e.outcome = 1;
  e.stats = client(100, 40, 20, 40);
  e.dr_checked = 1;
  e.dr_psi = 0.5;
  e.dr_threshold = 0.25;
  e.dr_tripped = 1;
  e.dr_baseline = 4;
  snprintf(e.dr_action, sizeof e.dr_action, "flag");
  json_t *v = json_object();
  fc_store_eval_drift_put(v, &e);
  CHECK(!strcmp(json_string_value(json_object_get(json_object_get(v, "drift"), "source")), "federated"));
  fc_store_eval_drift_get(v, &back);
  CHECK(back.stats.nclasses == 3 && back.stats.class_count[2] == 40);
  CHECK(back.dr_checked && back.dr_tripped && back.dr_psi == 0.5 && back.dr_baseline == 4);
  CHECK(!strcmp(back.dr_action, "flag"));
  json_decref(v);
  /* No counts: neither key is written. */
  e.stats.nclasses = 0;
  v = json_object();
  fc_store_eval_drift_put(v, &e);
  CHECK(json_object_size(v) == 0);
  json_decref(v);
}

int main(void) {
  test_plain_and_psi();
  test_bounds();
  test_secagg_vector();
  test_history_line();
  return CHECK_DONE();
}
