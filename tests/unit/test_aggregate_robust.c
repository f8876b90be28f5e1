/*
 * test_aggregate_robust.c - the robust aggregators through the aggregator
 * interface (coordinator/aggregate.h), as the coordinator drives them:
 *   - every precondition refused at round close with its one-line reason
 *     (krum/multikrum n >= 2f + 3, bulyan n >= 4f + 3, trimmed mean's trim,
 *     multikrum's m, centered clipping's tau), and fc_robust_check agrees;
 *   - determinism: the same updates in another arrival order (and another
 *     run) give the same bits;
 *   - robustness: 10 honest updates near a common mean and 2 (or 3)
 *     attackers far away: FedAvg is dragged off, every robust rule stays
 *     within the honest spread (centered clipping within tau f / (n - f));
 *     Krum returns one of the honest updates;
 *   - aborted uploads leave no trace, slots are reused next round, and a
 *     commit beyond the arena's rows is refused;
 *   - centered clipping with tau large is the mean, and keeps its center.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/rng.h"
#include "coordinator/aggregate.h"
#include "fedc/error.h"

enum { D = 300 };

static int feed(fc_agg *a, const float *x) {
  fc_agg_update *u = NULL;
  int rc = a->ops->update_begin(a, 0, &u);
  if (rc != FEDC_OK) return rc;
  /* in two chunks, as uploads arrive */
  a->ops->update_chunk(a, u, 0, x, 100 * sizeof *x);
  a->ops->update_chunk(a, u, 100 * sizeof *x, x + 100, (D - 100) * sizeof *x);
  fc_agg_check chk;
  if ((rc = a->ops->update_check(a, u, &chk)) != FEDC_OK) {
    a->ops->update_abort(a, u);
    return rc;
  }
  return a->ops->update_commit(a, u, 3.0);
}

static double dist(const float *a, const float *b) {
  double s = 0;
  for (int i = 0; i < D; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
  return sqrt(s);
}

/* honest[i] = mu + noise (norm ~0.3), attackers = -20 mu. */
static void make(float *X, int honest, int attackers, float *mu, fc_rng *rng) {
  for (int j = 0; j < D; j++) mu[j] = (float)(fc_rng_uniform_double(rng) - 0.5);
  for (int i = 0; i < honest + attackers; i++)
    for (int j = 0; j < D; j++)
      X[i * D + j] = i < honest ? mu[j] + (float)(fc_rng_uniform_double(rng) - 0.5) * 0.03f : -20 * mu[j];
}

static int run(fc_robust_cfg *cfg, const float *X, int n, const int *order, float *out, uint32_t *count) {
  fc_agg *a = NULL;
  int rc = fc_agg_robust_create(D, (uint32_t)n + 1, 2, cfg, &a);
  if (rc != FEDC_OK) return rc;
  a->ops->round_begin(a);
  /* An upload that breaks off first: it must leave no trace. */
  fc_agg_update *u = NULL;
  a->ops->update_begin(a, 0, &u);
  float junk[D];
  for (int j = 0; j < D; j++) junk[j] = 1e6f;
  a->ops->update_chunk(a, u, 0, junk, sizeof junk);
  a->ops->update_abort(a, u);
  for (int i = 0; i < n; i++) feed(a, X + (size_t)(order ? order[i] : i) * D);
  rc = a->ops->round_finish(a, out, count);
  a->ops->destroy(a);
  return rc;
}

int main(void) {
  fc_rng rng;
  fc_rng_seed(&rng, 3);
  char buf[200];
  const int H = 10;
  float X[13 * D], mu[D], out[D], out2[D], mean[D];
  uint32_t count = 0;

  /* Preconditions at round close, each with its reason. */
  struct {
    fc_robust_cfg cfg;
    int n;
    const char *why;
  } pre[] = {
      {{FC_AGG_KRUM, 2, 0, 0, 0, 0, 1}, 6, "needs n >= 2f + 3 = 7"},
      {{FC_AGG_MULTIKRUM, 1, 0, 0, 0, 0, 1}, 4, "needs n >= 2f + 3 = 5"},
      {{FC_AGG_MULTIKRUM, 0, 0, 9, 0, 0, 1}, 5, "averages m = 9"},
      {{FC_AGG_BULYAN, 1, 0, 0, 0, 0, 1}, 6, "needs n >= 4f + 3 = 7"},
      {{FC_AGG_TRIMMED, 0, 0.7, 0, 0, 0, 1}, 9, "trim fraction in [0, 0.5)"},
      {{FC_AGG_CCLIP, 0, 0, 0, 0, 1, 1}, 3, "radius tau > 0"},
  };
  make(X, 12, 0, mu, &rng);
  for (size_t i = 0; i < sizeof pre / sizeof *pre; i++) {
    fc_agg *a = NULL;
    CHECK_EQ_INT(fc_agg_robust_create(D, 20, 2, &pre[i].cfg, &a), FEDC_OK);
    a->ops->round_begin(a);
    for (int k = 0; k < pre[i].n; k++) CHECK_EQ_INT(feed(a, X + k * D), FEDC_OK);
    CHECK_EQ_INT(a->ops->round_finish(a, out, &count), FEDC_ERR_INVALID);
    const char *why = fc_agg_robust_why(a);
    if (!strstr(why, pre[i].why)) printf("  %s: '%s' lacks '%s'\n", fc_robust_name(pre[i].cfg.kind), why, pre[i].why);
    CHECK(strstr(why, pre[i].why) != NULL);
    CHECK(fc_robust_check(&pre[i].cfg, (uint32_t)pre[i].n, buf, sizeof buf) != NULL);
    /* One more update satisfies krum/bulyan (the boundary is exact). */
    if (pre[i].cfg.kind == FC_AGG_KRUM || pre[i].cfg.kind == FC_AGG_BULYAN) {
      CHECK_EQ_INT(feed(a, X + pre[i].n * D), FEDC_OK);
      CHECK_EQ_INT(a->ops->round_finish(a, out, &count), FEDC_OK);
      CHECK_EQ_INT((int)count, pre[i].n + 1);
    }
    a->ops->destroy(a);
  }

  /* Robustness and determinism: 10 honest, 2 attackers (3 for the coordinate rules). */
  const struct {
    fc_robust_cfg cfg;
    int attackers;
  } rules[] = {
      {{FC_AGG_MEDIAN, 0, 0, 0, 0, 0, 2}, 3},       {{FC_AGG_TRIMMED, 0, 0.25, 0, 0, 0, 3}, 3},
      {{FC_AGG_KRUM, 2, 0, 0, 0, 0, 1}, 2},         {{FC_AGG_MULTIKRUM, 2, 0, 0, 0, 0, 1}, 2},
      {{FC_AGG_BULYAN, 2, 0, 0, 0, 0, 2}, 2},       {{FC_AGG_CCLIP, 0, 0, 0, 10, 30, 1}, 2},
  };
  for (size_t r = 0; r < sizeof rules / sizeof *rules; r++) {
    int n = H + rules[r].attackers;
    make(X, H, rules[r].attackers, mu, &rng);
    double spread = 0;
    for (int i = 0; i < H; i++) spread = fmax(spread, dist(X + i * D, mu));
    /* FedAvg of the same: dragged off by the attackers. */
    memset(mean, 0, sizeof mean);
    for (int i = 0; i < n; i++)
      for (int j = 0; j < D; j++) mean[j] += X[i * D + j] / (float)n;
    fc_robust_cfg cfg = rules[r].cfg;
    CHECK_EQ_INT(run(&cfg, X, n, NULL, out, &count), FEDC_OK);
    CHECK_EQ_INT((int)count, n);
    double e = dist(out, mu), ef = dist(mean, mu);
    printf("  %-13s n=%d: |result - honest mean| %.4f (honest spread %.4f; fedavg %.2f)\n", fc_robust_name(cfg.kind),
           n, e, spread, ef);
    /* Centered clipping from 0: within tau f / (n - f) of the honest mean (each
     * attacker pulls by at most tau per step), not within the spread. */
    CHECK(e <= (cfg.kind == FC_AGG_CCLIP ? cfg.tau * rules[r].attackers / H * 1.1 + spread : spread));
    CHECK(ef > 10 * spread);
    if (cfg.kind == FC_AGG_KRUM) {
      int honest_row = 0;
      for (int i = 0; i < H; i++) honest_row |= memcmp(out, X + i * D, sizeof out) == 0;
      CHECK(honest_row);
    }
    /* Another arrival order, another run: the same bits. */
    int order[13];
    for (int i = 0; i < n; i++) order[i] = n - 1 - i;
    CHECK_EQ_INT(run(&cfg, X, n, order, out2, &count), FEDC_OK);
    if (cfg.kind != FC_AGG_CCLIP && cfg.kind != FC_AGG_MULTIKRUM) CHECK(memcmp(out, out2, sizeof out) == 0);
    else CHECK(dist(out, out2) < 1e-5); /* float sums in another order */
  }

  /* Centered clipping with a large radius is the plain mean; its center carries over. */
  fc_robust_cfg cc = {FC_AGG_CCLIP, 0, 0, 0, 1e9, 1, 1};
  fc_agg *a = NULL;
  make(X, 5, 0, mu, &rng);
  CHECK_EQ_INT(fc_agg_robust_create(D, 5, 2, &cc, &a), FEDC_OK);
  for (int round = 0; round < 2; round++) {
    a->ops->round_begin(a); /* rows reused: 5 rows, 5 uploads per round */
    for (int i = 0; i < 5; i++) CHECK_EQ_INT(feed(a, X + i * D), FEDC_OK);
    CHECK_EQ_INT(a->ops->round_finish(a, out, &count), FEDC_OK);
  }
  memset(mean, 0, sizeof mean);
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < D; j++) mean[j] += X[i * D + j] / 5;
  CHECK(dist(out, mean) < 1e-4);
  a->ops->destroy(a);
  /* More committed updates than rows: refused, the arena untouched. */
  fc_robust_cfg med = {FC_AGG_MEDIAN, 0, 0, 0, 0, 0, 1};
  CHECK_EQ_INT(fc_agg_robust_create(D, 3, 2, &med, &a), FEDC_OK);
  a->ops->round_begin(a);
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(feed(a, X + i * D), FEDC_OK);
  CHECK_EQ_INT(feed(a, X + 3 * D), FEDC_ERR_TOO_LARGE);
  CHECK_EQ_INT(a->ops->round_finish(a, out, &count), FEDC_OK);
  CHECK_EQ_INT((int)count, 3);
  a->ops->destroy(a);
  /* Bad configurations. */
  fc_robust_cfg bad = {FC_AGG_FEDAVG, 0, 0, 0, 0, 0, 1};
  CHECK_EQ_INT(fc_agg_robust_create(D, 5, 2, &bad, &a), FEDC_ERR_INVALID);
  CHECK(fc_robust_parse("bulyan") == FC_AGG_BULYAN && fc_robust_parse("nope") == -1);
  return CHECK_DONE();
}
