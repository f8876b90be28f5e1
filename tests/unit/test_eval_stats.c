/*
 * test_eval_stats.c - federated evaluation's statistics (secagg/eval_stats.c)
 * and their history lines (coordinator/store.c):
 *   - the task's bounds: examples past the cap scale every total (the means
 *     stay), correct <= examples, loss and metric sums <= examples x bound;
 *   - the scale keeps n clients' largest vectors inside 32 bits, and the sum
 *     of n encoded vectors decodes to the sum of their statistics (counts
 *     exactly, sums within the rounding bound n / scale);
 *   - a sum no n bounded vectors can make is refused;
 *   - an evaluation line in rounds.jsonl is merged into its round's record on
 *     reading, written after it, and an orphan one is skipped.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "coordinator/store.h"
#include "fedc/error.h"
#include "secagg/eval_stats.h"

static void test_clamp(void) {
  fc_eval_stats s;
  memset(&s, 0, sizeof s);
  s.examples = 400;
  s.correct = 300;
  s.loss_sum = 100;
  s.nmetrics = 1;
  s.metric_sum[0] = 1e9; /* far past its bound */
  s.metric_examples[0] = 500;
  fc_eval_stats_clamp(&s, 100, 2.0);
  CHECK(s.examples == 100);
  CHECK(fabs(s.correct / s.examples - 0.75) < 1e-12); /* the accuracy stays */
  CHECK(fabs(s.loss_sum - 25) < 1e-9);
  CHECK(s.metric_examples[0] == 100);        /* 125 after scaling, then at most the examples */
  CHECK(s.metric_sum[0] == 100 * 2.0);       /* at most examples x value_max */
  memset(&s, 0, sizeof s);
  s.examples = 10;
  s.correct = 20;
  s.loss_sum = NAN;
  fc_eval_stats_clamp(&s, 100, 2.0);
  CHECK(s.correct == 10 && s.loss_sum == 0);
}

static void test_encode_decode(void) {
  const uint32_t n = 7;
  const uint64_t E = 10000;
  const double V = 100;
  double scale = fc_eval_scale(n, E, V);
  CHECK(scale > 0);
  /* n clients at every bound fit: n (E V scale + 1) <= 2^32 - 1 */
  CHECK((double)n * (E * V * scale + 1) <= 4294967295.0);
  CHECK(fc_eval_scale(1000000, 10000, 1) == 0); /* the counts alone would wrap */
  uint64_t dim = fc_eval_dim(2, 0);
  uint32_t *sum = calloc(dim + 1, sizeof *sum), *q = calloc(dim + 1, sizeof *q);
  fc_eval_stats want;
  memset(&want, 0, sizeof want);
  fc_rng rng;
  fc_rng_seed(&rng, 42);
  for (uint32_t i = 0; i < n; i++) {
    fc_eval_stats s;
    memset(&s, 0, sizeof s);
    s.nmetrics = 2;
    s.examples = i == 3 ? E : 100 + 37 * i; /* one client at its cap */
    s.correct = floor(s.examples * 0.8);
    s.loss_sum = s.examples * (0.25 + 0.01 * i);
    s.metric_sum[0] = s.examples * V; /* at its bound */
    s.metric_examples[0] = s.examples;
    s.metric_sum[1] = 3.5;
    s.metric_examples[1] = i % 2 ? 10 : 0;
    fc_eval_stats_clamp(&s, E, V);
    fc_eval_encode(&s, scale, &rng, q);
    CHECK_EQ_INT(q[dim], 1);
    for (uint64_t k = 0; k <= dim; k++) sum[k] += q[k];
    fc_eval_stats_add(&want, &s);
  }
  fc_eval_stats got;
  memset(&got, 0, sizeof got);
  uint32_t clients = 0;
  CHECK_EQ_INT(fc_eval_decode(sum, 2, 0, scale, n, E, V, &got, &clients), FEDC_OK);
  CHECK_EQ_INT(clients, n);
  CHECK(got.examples == want.examples);
  CHECK(got.correct == want.correct);
  CHECK(got.metric_examples[0] == want.metric_examples[0] && got.metric_examples[1] == want.metric_examples[1]);
  double tol = n / scale; /* each rounding moves a sum by < 1 unit */
  CHECK(fabs(got.loss_sum - want.loss_sum) <= tol);
  CHECK(fabs(got.metric_sum[0] - want.metric_sum[0]) <= tol);
  CHECK(fabs(got.metric_sum[1] - want.metric_sum[1]) <= tol);
  /* Impossible sums: more clients than the instance, more correct than examples. */
  CHECK_EQ_INT(fc_eval_decode(sum, 2, 0, scale, n - 1, E, V, &got, &clients), FEDC_ERR_INVALID);
  uint32_t keep = sum[1];
  sum[1] = sum[0] + 1;
  CHECK_EQ_INT(fc_eval_decode(sum, 2, 0, scale, n, E, V, &got, &clients), FEDC_ERR_INVALID);
  sum[1] = keep;
  sum[0] = (uint32_t)(n * E + 1);
  CHECK_EQ_INT(fc_eval_decode(sum, 2, 0, scale, n, E, V, &got, &clients), FEDC_ERR_INVALID);
  free(sum);
  free(q);
}

static void test_history_lines(void) {
  char dir[] = "/tmp/fedc-evalstats-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char err[300];
  fc_round_stats r;
  memset(&r, 0, sizeof r);
  r.round = 4;
  r.completed = 1;
  r.version = 3;
  r.examples = 450;
  r.mean_loss = 0.5;
  CHECK_EQ_INT(fc_store_append_round(dir, &r, err, sizeof err), FEDC_OK);
  fc_round_eval e;
  memset(&e, 0, sizeof e);
  e.outcome = 1;
  e.version = 3;
  e.selected = 3;
  e.clients = 3;
  e.stats.examples = 150;
  e.stats.correct = 120;
  e.stats.loss_sum = 61.25;
  e.stats.nmetrics = 1;
  snprintf(e.stats.names[0], sizeof e.stats.names[0], "top2");
  e.stats.metric_sum[0] = 140;
  e.stats.metric_examples[0] = 150;
  e.sa_remaining[0] = e.sa_remaining[1] = e.sa_remaining[2] = e.sa_remaining[3] = e.sa_remaining[4] = 3;
  CHECK_EQ_INT(fc_store_append_eval(dir, 4, &e, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_store_append_eval(dir, 99, &e, err, sizeof err), FEDC_OK); /* no round 99: skipped */
  r.round = 5;
  r.version = 4;
  r.eval.outcome = 1; /* a record's own eval is never written by append_round */
  CHECK_EQ_INT(fc_store_append_round(dir, &r, err, sizeof err), FEDC_OK);
  fc_round_stats *v = NULL;
  size_t n = 0;
  CHECK_EQ_INT(fc_store_read_rounds(dir, &v, &n, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(n, 2);
  if (n == 2) {
    CHECK_EQ_INT(v[0].eval.outcome, 1);
    CHECK(v[0].eval.stats.examples == 150 && v[0].eval.stats.correct == 120 && v[0].eval.stats.loss_sum == 61.25);
    CHECK(v[0].eval.stats.nmetrics == 1 && strcmp(v[0].eval.stats.names[0], "top2") == 0);
    CHECK(v[0].eval.stats.metric_sum[0] == 140 && v[0].eval.stats.metric_examples[0] == 150);
    CHECK_EQ_INT(v[0].eval.sa_remaining[4], 3);
    CHECK_EQ_INT(v[0].eval.clients, 3);
    CHECK_EQ_INT(v[1].eval.outcome, 0);
  }
  free(v);
  char p[300];
  snprintf(p, sizeof p, "%s/rounds.jsonl", dir);
  unlink(p);
  rmdir(dir);
}

/* One liar reporting the task's example cap (10,000), none correct, every
 * example in one class, beside three honest clients with ~50 held out each
 * (the hostile review's attack): counted at twice the lower median. */
static fc_eval_stats rep(double ex, double acc, int cls_spread) {
  fc_eval_stats s;
  memset(&s, 0, sizeof s);
  s.examples = ex;
  s.correct = acc * ex;
  s.loss_sum = 0.5 * ex;
  s.nmetrics = 1;
  s.metric_sum[0] = 0.25 * ex;
  s.metric_examples[0] = ex;
  s.nclasses = 10;
  if (cls_spread)
    for (int k = 0; k < 10; k++) s.class_count[k] = ex / 10;
  else
    s.class_count[0] = ex;
  return s;
}

static void test_combine_capped(void) {
  fc_eval_stats r[4] = {rep(50, 0.8, 1), rep(40, 0.8, 1), rep(60, 0.8, 1), rep(10000, 0, 0)};
  r[3].loss_sum = 10000 * 100.0;
  r[3].metric_sum[0] = 10000 * 100.0;
  fc_eval_stats out;
  fc_eval_stats_combine(r, 4, FC_EVAL_CAP_FACTOR, &out);
  /* lower median 50: the liar counts as 100 examples, its mean loss and
   * metric as 4 x the median member's 0.5 and 0.25 */
  CHECK(fabs(out.examples - 250) < 1e-9);
  CHECK(fabs(out.correct - 120) < 1e-9); /* accuracy 48%, not 1.2% */
  CHECK(fabs(out.loss_sum - (75 + 100 * 2.0)) < 1e-6);  /* mean loss 1.1, not 40 */
  CHECK(fabs(out.metric_sum[0] - (37.5 + 100 * 1.0)) < 1e-6);
  CHECK(fabs(out.metric_examples[0] - 250) < 1e-9);
  CHECK(fabs(out.class_count[0] - (15 + 100)) < 1e-9); /* class 0: 46%, not 99.9% */
  CHECK(fabs(out.class_count[9] - 15) < 1e-9);
  /* Honest clients within twice the median: exactly the plain sum. */
  fc_eval_stats h[4] = {rep(50, 0.8, 1), rep(40, 0.7, 1), rep(90, 0.9, 1), rep(60, 0.6, 0)}, sum;
  memset(&sum, 0, sizeof sum);
  for (int i = 0; i < 4; i++) fc_eval_stats_add(&sum, &h[i]);
  fc_eval_stats_combine(h, 4, FC_EVAL_CAP_FACTOR, &out);
  CHECK(memcmp(&out, &sum, sizeof out) == 0);
  /* factor 0 (under DP): the plain sum. The second review's case: ten
   * reports of 1 example and ten of E; one more of E moves the total by E,
   * as the noise assumes (with the median cap it moved it by 11 E). */
  fc_eval_stats d[21];
  for (int i = 0; i < 21; i++) d[i] = rep(i < 10 ? 1 : 10000, 0.5, 1);
  fc_eval_stats a, b;
  fc_eval_stats_combine(d, 20, 0, &a);
  fc_eval_stats_combine(d, 21, 0, &b);
  CHECK(fabs(b.examples - a.examples - 10000) < 1e-9);
  fc_eval_stats_combine(d, 20, FC_EVAL_CAP_FACTOR, &a);
  fc_eval_stats_combine(d, 21, FC_EVAL_CAP_FACTOR, &b);
  CHECK(b.examples - a.examples > 10 * 10000.0); /* why DP takes the plain sum */
  /* Honest means within 4 x the median: unchanged (the loop above). A lone
   * report is its own median; none gives zeros. */
  fc_eval_stats_combine(r + 3, 1, FC_EVAL_CAP_FACTOR, &out);
  CHECK(out.examples == 10000);
  fc_eval_stats_combine(r, 0, FC_EVAL_CAP_FACTOR, &out);
  CHECK(out.examples == 0 && out.nclasses == 0);
  /* Two liars of five: the lower median is still an honest client's. */
  fc_eval_stats f[5] = {rep(10000, 0, 0), rep(50, 0.8, 1), rep(10000, 0, 0), rep(50, 0.8, 1), rep(50, 0.8, 1)};
  fc_eval_stats_combine(f, 5, FC_EVAL_CAP_FACTOR, &out);
  CHECK(fabs(out.examples - 350) < 1e-9);
}

int main(void) {
  test_clamp();
  test_encode_decode();
  test_history_lines();
  test_combine_capped();
  return CHECK_DONE();
}
