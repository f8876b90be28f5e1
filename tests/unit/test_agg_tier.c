/*
 * test_agg_tier.c - the leader's side of the aggregator tier (issue 23):
 * registry values, assignment by load (round-robin, stable within a round),
 * the partial checks (unknown aggregator, wrong round, wrong shape, a client
 * of another aggregator, more names than it was assigned, a task named
 * twice or counted twice, weights that
 * do not follow the rule or do not add up, a sum past the clip bound), and
 * that folding the partials of two aggregators gives the FedAvg of one
 * process over the same updates.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "coordinator/agg_tier.h"
#include "coordinator/aggregate.h"
#include "fedc/error.h"

static fc_tier_member member(const char *name, const char *addr) {
  fc_tier_member m;
  char v[400], why[200];
  snprintf(v, sizeof v, "%s spiffe://fed/aggregator/%s", addr, name);
  CHECK_EQ_INT(fc_tier_parse_member(name, v, strlen(v), "fed", &m, why, sizeof why), FEDC_OK);
  return m;
}

static void test_parse(void) {
  fc_tier_member m;
  char why[200];
  const char *ok = "127.0.0.1:7101 spiffe://fed/aggregator/a1";
  CHECK_EQ_INT(fc_tier_parse_member("a1", ok, strlen(ok), "fed", &m, why, sizeof why), FEDC_OK);
  CHECK(!strcmp(m.address, "127.0.0.1:7101") && !strcmp(m.identity, "spiffe://fed/aggregator/a1"));
  /* Another name's identity, another federation, a client's identity, no address: refused. */
  const char *bad[] = {"127.0.0.1:7101 spiffe://fed/aggregator/a2", "127.0.0.1:7101 spiffe://other/aggregator/a1",
                       "127.0.0.1:7101 spiffe://fed/client/a1", "spiffe://fed/aggregator/a1", "noport spiffe://fed/aggregator/a1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_EQ_INT(fc_tier_parse_member("a1", bad[i], strlen(bad[i]), "fed", &m, why, sizeof why), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_tier_parse_member("../x", ok, strlen(ok), "fed", &m, why, sizeof why), FEDC_ERR_INVALID);
}

static void test_assign(void) {
  fc_tier *t = NULL;
  CHECK_EQ_INT(fc_tier_create(&t), FEDC_OK);
  fc_tier_member out, ms[2] = {member("a1", "127.0.0.1:1"), member("a2", "127.0.0.1:2")};
  CHECK_EQ_INT(fc_tier_assign(t, 1, "c0", &out), FEDC_ERR_NOT_FOUND); /* none registered */
  fc_tier_set_members(t, ms, 2);
  const char *want[] = {"a1", "a2", "a1", "a2", "a1"};
  char cl[8];
  for (int i = 0; i < 5; i++) {
    snprintf(cl, sizeof cl, "c%d", i);
    CHECK_EQ_INT(fc_tier_assign(t, 1, cl, &out), FEDC_OK);
    CHECK(!strcmp(out.name, want[i]));
  }
  CHECK_EQ_INT(fc_tier_assign(t, 1, "c1", &out), FEDC_OK); /* again: the same aggregator, no new load */
  CHECK(!strcmp(out.name, "a2"));
  CHECK_EQ_INT(fc_tier_load(t, "a1"), 3);
  CHECK_EQ_INT(fc_tier_load(t, "a2"), 2);
  const char *names[8];
  CHECK_EQ_INT(fc_tier_assigned(t, 1, "a2", names, 8), 2);
  CHECK_EQ_INT(fc_tier_assigned(t, 2, "a2", names, 8), 0);
  /* a2's lease expired: its clients are not moved (they were told), new ones go to a1. */
  CHECK_EQ_INT(fc_tier_set_members(t, ms, 1), 1);
  CHECK_EQ_INT(fc_tier_assign(t, 1, "c1", &out), FEDC_ERR_NOT_FOUND);
  CHECK_EQ_INT(fc_tier_assign(t, 1, "c9", &out), FEDC_OK);
  CHECK(!strcmp(out.name, "a1"));
  /* A new round starts from no load. */
  fc_tier_set_members(t, ms, 2);
  CHECK_EQ_INT(fc_tier_assign(t, 2, "c3", &out), FEDC_OK);
  CHECK(!strcmp(out.name, "a1"));
  CHECK_EQ_INT(fc_tier_load(t, "a1"), 1);
  fc_tier_destroy(t);
}

static void test_checks(void) {
  fc_tier *t = NULL;
  char why[300];
  CHECK_EQ_INT(fc_tier_create(&t), FEDC_OK);
  fc_tier_member out, ms[2] = {member("a1", "127.0.0.1:1"), member("a2", "127.0.0.1:2")};
  fc_tier_set_members(t, ms, 2);
  for (int i = 0; i < 4; i++) { /* c0, c2 -> a1; c1, c3 -> a2 */
    char cl[8];
    snprintf(cl, sizeof cl, "c%d", i);
    fc_tier_assign(t, 7, cl, &out);
  }
  fc_model_spec spec, other;
  memset(&spec, 0, sizeof spec);
  memset(&other, 0, sizeof other);
  uint64_t shape[1] = {10}, shape2[1] = {11};
  fc_model_spec_add(&spec, "w", 1, shape);
  fc_model_spec_add(&other, "w", 1, shape2);
  fc_tier_expect e = {7, 3, &spec, {0, 100, 0}};
  fc_tier_update ups[3] = {{"c0", 50, 50, 0}, {"c2", 500, 100, 0}, {"c2", 5, 5, 0}};
  fc_tier_partial p = {"a1", 7, 3, 150, ups, 2, &spec, 0};
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_OK);
  /* Unknown aggregator (never registered, or its lease expired). */
  p.aggregator = "a9";
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_REJECTED);
  CHECK(strstr(why, "not registered") != NULL);
  p.aggregator = "a1";
  /* Wrong shape. */
  p.spec = &other;
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_SHAPE);
  p.spec = &spec;
  /* Wrong round, wrong version. */
  p.round = 6;
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_INVALID);
  p.round = 7, p.version = 2;
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_INVALID);
  p.version = 3;
  /* The same task twice in one partial. */
  ups[1] = (fc_tier_update){"c0", 50, 50, 0};
  p.total_weight = 100;
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_INVALID);
  CHECK(strstr(why, "twice") != NULL);
  ups[1] = (fc_tier_update){"c2", 500, 100, 0};
  p.total_weight = 150;
  /* More names than clients assigned to it (a1 has two): refused before any
   * per-name work, here 65,536 names (a hostile review: looked up one by one
   * among the assignments under the leader's lock, they held it for
   * seconds at a large cohort). */
  {
    enum { MANY = 65536 };
    fc_tier_update *many = calloc(MANY, sizeof *many);
    CHECK(many != NULL);
    for (size_t i = 0; many && i < MANY; i++) many[i] = (fc_tier_update){"c0", 50, 50, 0};
    fc_tier_partial big = p;
    big.updates = many;
    big.n = MANY;
    CHECK_EQ_INT(fc_tier_check_partial(t, &big, &e, why, sizeof why), FEDC_ERR_INVALID);
    CHECK(strstr(why, "was assigned 2 clients") != NULL);
    free(many);
  }
  /* No name, and an aggregator assigned nobody this round: refused up front. */
  ups[1].client = NULL;
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_INVALID);
  CHECK(strstr(why, "(none)") != NULL);
  ups[1].client = "c2";
  {
    fc_tier *t2 = NULL;
    CHECK_EQ_INT(fc_tier_create(&t2), FEDC_OK);
    fc_tier_set_members(t2, ms, 2);
    fc_tier_assign(t2, 7, "c0", &out); /* the first client goes to a1: a2 has none */
    CHECK_EQ_INT(fc_tier_load(t2, "a2"), 0);
    fc_tier_update one[1] = {{"c0", 50, 50, 0}};
    fc_tier_partial none = {"a2", 7, 3, 50, one, 1, &spec, 0};
    CHECK_EQ_INT(fc_tier_check_partial(t2, &none, &e, why, sizeof why), FEDC_ERR_INVALID);
    CHECK(strstr(why, "not a client assigned to aggregator a2") != NULL);
    fc_tier_destroy(t2);
  }
  /* A client of another aggregator. */
  ups[1].client = "c1";
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_INVALID);
  CHECK(strstr(why, "not a client assigned") != NULL);
  ups[1].client = "c2";
  /* A weight past the cap, or a total that does not add up. */
  ups[1].weight = 500;
  p.total_weight = 550;
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_INVALID);
  ups[1].weight = 100;
  p.total_weight = 151;
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_INVALID);
  p.total_weight = 150;
  /* A loss a direct upload could not report (NaN, negative, past the bound). */
  double bad_loss[] = {NAN, -1, INFINITY, 1e300};
  for (size_t i = 0; i < sizeof bad_loss / sizeof *bad_loss; i++) {
    ups[1].loss = bad_loss[i];
    CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_INVALID);
    CHECK(strstr(why, "train_loss") != NULL);
  }
  ups[1].loss = 0.5;
  /* Counted once: the same partial again (or another naming c2) is refused. */
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_OK);
  fc_tier_mark_counted(t, &p);
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_INVALID);
  CHECK(strstr(why, "already counted") != NULL);
  const char *names[4];
  CHECK_EQ_INT(fc_tier_assigned(t, 7, "a1", names, 4), 0); /* nothing left to wait for at a1 */
  CHECK_EQ_INT(fc_tier_uncounted(t, "a1"), 0);
  CHECK_EQ_INT(fc_tier_uncounted(t, "a2"), 2);
  CHECK_EQ_INT(fc_tier_load(t, "a1"), 2);
  /* The sum's bound: clip 1 x total weight 150. */
  fc_upload_rules r = {1.0, 100, 0};
  CHECK_EQ_INT(fc_tier_check_sum(150.0, 1.0, &p, &r, why, sizeof why), FEDC_OK);
  CHECK_EQ_INT(fc_tier_check_sum(151.0, 1.0, &p, &r, why, sizeof why), FEDC_ERR_INVALID);
  /* No update: refused. */
  p.n = 0;
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_INVALID);
  fc_tier_destroy(t);
}

/* Two aggregators' partials folded on the leader = one process's FedAvg of
 * the same updates (float32 sums in another order: within rounding). */
#define N 1003
static void commit(fc_agg *a, const float *x, double w) {
  fc_agg_update *u = NULL;
  CHECK_EQ_INT(a->ops->update_begin(a, 0, &u), FEDC_OK);
  CHECK_EQ_INT(a->ops->update_chunk(a, u, 0, x, N * sizeof(float)), FEDC_OK);
  CHECK_EQ_INT(a->ops->update_commit(a, u, w), FEDC_OK);
}

static void test_fold_equals_fedavg(void) {
  static float x[5][N], sum[N], one[N], two[N];
  const double w[5] = {3, 10, 1, 7, 2};
  for (int k = 0; k < 5; k++)
    for (int i = 0; i < N; i++) x[k][i] = (float)sin(0.37 * i + k) * (float)(k + 1);
  fc_agg *single = NULL, *a1 = NULL, *a2 = NULL, *leader = NULL;
  CHECK_EQ_INT(fc_agg_fedavg_create(N, 1, &single), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_create(N, 1, &a1), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_create(N, 1, &a2), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_create(N, 1, &leader), FEDC_OK);
  for (int k = 0; k < 5; k++) {
    commit(single, x[k], w[k]);
    commit(k % 2 ? a2 : a1, x[k], w[k]);
  }
  fc_agg *parts[2] = {a1, a2};
  for (int j = 0; j < 2; j++) {
    double pw = 0;
    uint32_t pc = 0;
    CHECK_EQ_INT(fc_agg_fedavg_partial(parts[j], sum, &pw, &pc), FEDC_OK);
    CHECK_EQ_INT(pc, j ? 2 : 3);
    fc_agg_update *u = NULL;
    CHECK_EQ_INT(leader->ops->update_begin(leader, 0, &u), FEDC_OK);
    CHECK_EQ_INT(leader->ops->update_chunk(leader, u, 0, sum, sizeof sum), FEDC_OK);
    CHECK_EQ_INT(fc_agg_fedavg_commit_partial(leader, u, pw, pc), FEDC_OK);
  }
  uint32_t c1 = 0, c2 = 0;
  CHECK_EQ_INT(single->ops->round_finish(single, one, &c1), FEDC_OK);
  CHECK_EQ_INT(leader->ops->round_finish(leader, two, &c2), FEDC_OK);
  CHECK_EQ_INT(c1, 5);
  CHECK_EQ_INT(c2, 5);
  double maxdiff = 0;
  for (int i = 0; i < N; i++) maxdiff = fmax(maxdiff, fabs((double)one[i] - (double)two[i]));
  CHECK(maxdiff < 1e-5);
  /* Another aggregator kind has no partial. */
  fc_agg *rob = NULL;
  fc_robust_cfg rc = {FC_AGG_MEDIAN, 0, 0, 0, 0, 0, 1};
  if (fc_agg_robust_create(N, 4, 1, &rc, &rob) == FEDC_OK) {
    CHECK_EQ_INT(fc_agg_fedavg_partial(rob, sum, &(double){0}, &(uint32_t){0}), FEDC_ERR_INVALID);
    rob->ops->destroy(rob);
  }
  single->ops->destroy(single);
  a1->ops->destroy(a1);
  a2->ops->destroy(a2);
  leader->ops->destroy(leader);
}

/* --reproducible-sum: fixed-point sums are the same bits in any order and
 * any split into partials; float sums are not (the reason it exists). */
static void commit_n(fc_agg *a, const float *x, size_t n, double w) {
  fc_agg_update *u = NULL;
  CHECK_EQ_INT(a->ops->update_begin(a, 0, &u), FEDC_OK);
  CHECK_EQ_INT(a->ops->update_chunk(a, u, 0, x, n * sizeof(float)), FEDC_OK);
  CHECK_EQ_INT(a->ops->update_commit(a, u, w), FEDC_OK);
}

static void fixed_partial_to(fc_agg *leader, fc_agg *part, uint32_t want_count) {
  static uint8_t bytes[8 * N];
  double pw = 0;
  uint32_t pc = 0;
  CHECK_EQ_INT(fc_agg_fedavg_partial_fixed(part, bytes, &pw, &pc), FEDC_OK);
  CHECK_EQ_INT(pc, want_count);
  fc_agg_update *u = NULL;
  CHECK_EQ_INT(leader->ops->update_begin(leader, 0, &u), FEDC_OK);
  /* In two chunks, the second first: the staging copy does not care. */
  CHECK_EQ_INT(fc_agg_fedavg_fixed_chunk(leader, u, 4000, bytes + 4000, sizeof bytes - 4000), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_fixed_chunk(leader, u, 0, bytes, 4000), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_fixed_chunk(leader, u, sizeof bytes, bytes, 1), FEDC_ERR_TOO_LARGE);
  fc_agg_check chk;
  CHECK_EQ_INT(fc_agg_fedavg_fixed_check(leader, u, &chk), FEDC_OK);
  CHECK(chk.l2 > 0 && chk.amax > 0 && chk.amax <= chk.l2);
  CHECK_EQ_INT(fc_agg_fedavg_commit_partial(leader, u, pw, pc), FEDC_OK);
}

static void test_fixed_reproducible(void) {
  /* The grid: every |w x_i| 2^F under 2^45. */
  CHECK_EQ_INT(fc_fixed_frac_bits(10, 10000), 28); /* the defaults: 2^45 / (10 x 1.0001 x 10^4) */
  CHECK_EQ_INT(fc_fixed_frac_bits(0, 10000), -1);  /* no clip, no bound */
  CHECK_EQ_INT(fc_fixed_frac_bits(1e6, 1000000), -1);
  CHECK(fc_fixed_frac_bits(1e-30f, 1) == 60);
  fc_agg *bad = NULL;
  CHECK_EQ_INT(fc_agg_fedavg_create_fixed(N, 1, 5, 0, &bad), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_agg_fedavg_create_fixed(N, 1, 0, 0, &bad), FEDC_ERR_INVALID);

  /* Seven updates of mixed sign and scale (|x| <= 3e4, weights <= 9: F 16
   * would do; 20 here), folded forwards, backwards and as two partials. */
  enum { K = 7 };
  static float x[K][N], fwd[N], rev[N], split[N];
  const double w[K] = {3, 9, 1, 7, 2, 5, 4};
  for (int k = 0; k < K; k++)
    for (int i = 0; i < N; i++) x[k][i] = (float)(sin(0.37 * i + k) * pow(10, (i + k) % 5 - 1) * (k % 2 ? -1 : 1));
  x[0][7] = 3e4f, x[1][7] = 9e-4f, x[2][7] = -2.7e5f / 9; /* w x: 9e4, 8.1e-3, -3e4 */
  fc_agg *a = NULL, *b = NULL, *p1 = NULL, *p2 = NULL, *leader = NULL, *fa = NULL, *fb = NULL;
  CHECK_EQ_INT(fc_agg_fedavg_create_fixed(N, 1, 20, 0, &a), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_create_fixed(N, 1, 20, 0, &b), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_create_fixed(N, 2, 20, 0, &p1), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_create_fixed(N, 2, 20, 0, &p2), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_create_fixed(N, 1, 20, 1, &leader), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_create(N, 1, &fa), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_create(N, 1, &fb), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_frac_bits(a), 20);
  CHECK_EQ_INT(fc_agg_fedavg_frac_bits(fa), 0);
  for (int k = 0; k < K; k++) {
    commit_n(a, x[k], N, w[k]);
    commit_n(b, x[K - 1 - k], N, w[K - 1 - k]);
    commit_n(k % 2 ? p2 : p1, x[k], N, w[k]);
    commit_n(fa, x[k], N, w[k]);
    commit_n(fb, x[K - 1 - k], N, w[K - 1 - k]);
  }
  fixed_partial_to(leader, p2, 3);
  fixed_partial_to(leader, p1, 4);
  uint32_t c = 0;
  CHECK_EQ_INT(a->ops->round_finish(a, fwd, &c), FEDC_OK);
  CHECK_EQ_INT(c, K);
  CHECK_EQ_INT(b->ops->round_finish(b, rev, &c), FEDC_OK);
  CHECK_EQ_INT(leader->ops->round_finish(leader, split, &c), FEDC_OK);
  CHECK_EQ_INT(c, K);
  CHECK(memcmp(fwd, rev, sizeof fwd) == 0);
  CHECK(memcmp(fwd, split, sizeof fwd) == 0);
  /* Close to the exact weighted mean (double, in order): the grid's error
   * is 2^-21 per term over a total weight of 31. */
  double maxerr = 0;
  for (int i = 0; i < N; i++) {
    double t = 0;
    for (int k = 0; k < K; k++) t += w[k] * (double)x[k][i];
    t /= 31;
    maxerr = fmax(maxerr, fabs(t - fwd[i]) / (fabs(t) + 1e-6));
  }
  CHECK(maxerr < 1e-6);
  /* Float32 sums: coordinate 7 loses the 8.1e-3 next to 9e4 in one order. */
  static float f1[N], f2[N];
  CHECK_EQ_INT(fa->ops->round_finish(fa, f1, &c), FEDC_OK);
  CHECK_EQ_INT(fb->ops->round_finish(fb, f2, &c), FEDC_OK);
  CHECK(memcmp(f1, f2, sizeof f1) != 0);
  /* Wrong kinds: a float partial of a fixed sum, a fixed one of a float sum;
   * integer chunks into 4-byte slots. */
  CHECK_EQ_INT(fc_agg_fedavg_partial(a, f1, &(double){0}, &(uint32_t){0}), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_agg_fedavg_partial_fixed(fa, (uint8_t *)f1, &(double){0}, &(uint32_t){0}), FEDC_ERR_INVALID);
  fc_agg_update *u = NULL;
  CHECK_EQ_INT(a->ops->update_begin(a, 0, &u), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_fixed_chunk(a, u, 0, f1, 8), FEDC_ERR_INVALID);
  a->ops->update_abort(a, u);
  /* A lying partial (near 2^63 on one coordinate) shows in the check's max. */
  static uint8_t lie[8 * N];
  memset(lie, 0, sizeof lie);
  lie[8 * 5 + 7] = 0x7f;
  CHECK_EQ_INT(leader->ops->update_begin(leader, 0, &u), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_fixed_chunk(leader, u, 0, lie, sizeof lie), FEDC_OK);
  fc_agg_check chk;
  CHECK_EQ_INT(fc_agg_fedavg_fixed_check(leader, u, &chk), FEDC_OK);
  CHECK(chk.amax > 8e12); /* 2^63 / 2^20 */
  leader->ops->update_abort(leader, u);
  fc_agg *all[] = {a, b, p1, p2, leader, fa, fb};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) all[i]->ops->destroy(all[i]);

  /* The overflow bound: the 65,537th update of one sum is refused, not wrapped. */
  fc_agg *many = NULL;
  float one4[4] = {1, -1, 0.5f, 0};
  CHECK_EQ_INT(fc_agg_fedavg_create_fixed(4, 1, 20, 0, &many), FEDC_OK);
  for (uint32_t k = 0; k < FC_FIXED_MAX_TERMS; k++) commit_n(many, one4, 4, 1);
  CHECK_EQ_INT(many->ops->update_begin(many, 0, &u), FEDC_OK);
  CHECK_EQ_INT(many->ops->update_chunk(many, u, 0, one4, sizeof one4), FEDC_OK);
  CHECK_EQ_INT(many->ops->update_commit(many, u, 1), FEDC_ERR_TOO_LARGE);
  float out4[4];
  CHECK_EQ_INT(many->ops->round_finish(many, out4, &c), FEDC_OK);
  CHECK_EQ_INT(c, FC_FIXED_MAX_TERMS);
  CHECK(out4[0] == 1 && out4[1] == -1 && out4[2] == 0.5f && out4[3] == 0);
  CHECK_EQ_INT(fc_agg_fedavg_room(many), 0);
  many->ops->destroy(many);

  /* Review findings (2026-12-05). A value past fix_round's range is refused
   * whole (it would fold wrong, silently): 1e7 x 2^44 > 2^50. */
  fc_agg *r = NULL;
  float big4[4] = {1e7f, -1e7f, 1, 0};
  CHECK_EQ_INT(fc_agg_fedavg_create_fixed(4, 1, fc_fixed_frac_bits(1, 1), 0, &r), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_room(r), FC_FIXED_MAX_TERMS);
  CHECK_EQ_INT(r->ops->update_begin(r, 0, &u), FEDC_OK);
  CHECK_EQ_INT(r->ops->update_chunk(r, u, 0, big4, sizeof big4), FEDC_OK);
  CHECK_EQ_INT(r->ops->update_commit(r, u, 1), FEDC_ERR_TOO_LARGE);
  CHECK_EQ_INT(r->ops->round_finish(r, out4, &c), FEDC_ERR_INVALID); /* nothing was folded */
  commit_n(r, one4, 4, 1); /* the slot came back: the next update folds */
  CHECK_EQ_INT(fc_agg_fedavg_room(r), FC_FIXED_MAX_TERMS - 1);
  r->ops->destroy(r);
  /* A refused partial gives its slot back (one slot: the next begin finds it). */
  CHECK_EQ_INT(fc_agg_fedavg_create_fixed(4, 1, 20, 1, &r), FEDC_OK);
  CHECK_EQ_INT(r->ops->update_begin(r, 0, &u), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_commit_partial(r, u, 0, 1), FEDC_ERR_INVALID);
  CHECK_EQ_INT(r->ops->update_begin(r, 0, &u), FEDC_OK);
  r->ops->update_abort(r, u);
  r->ops->destroy(r);
  /* Staleness-scaled weights (async): their total is summed on a grid too,
   * so 1/sqrt(2), 8/sqrt(8) and 1000/3 give the same bits in either order. */
  const double sw[3] = {1 / sqrt(2), 8 / sqrt(8), 1000.0 / 3};
  float o1[4], o2[4], v3[3][4] = {{0.25f, -1, 3, 0.5f}, {1e-3f, 2, -7, 1}, {5, 5, -5, 1e-4f}};
  fc_agg *s1 = NULL, *s2 = NULL;
  CHECK_EQ_INT(fc_agg_fedavg_create_fixed(4, 1, 20, 0, &s1), FEDC_OK);
  CHECK_EQ_INT(fc_agg_fedavg_create_fixed(4, 1, 20, 0, &s2), FEDC_OK);
  for (int k = 0; k < 3; k++) {
    commit_n(s1, v3[k], 4, sw[k]);
    commit_n(s2, v3[2 - k], 4, sw[2 - k]);
  }
  CHECK_EQ_INT(s1->ops->round_finish(s1, o1, &c), FEDC_OK);
  CHECK_EQ_INT(s2->ops->round_finish(s2, o2, &c), FEDC_OK);
  CHECK(memcmp(o1, o2, sizeof o1) == 0);
  s1->ops->destroy(s1);
  s2->ops->destroy(s2);
}

/* One partial stream per aggregator at a time. */
static void test_partial_streams(void) {
  fc_tier *t = NULL;
  CHECK_EQ_INT(fc_tier_create(&t), FEDC_OK);
  fc_tier_member ms[2] = {member("a1", "127.0.0.1:1"), member("a2", "127.0.0.1:2")};
  fc_tier_set_members(t, ms, 2);
  CHECK_EQ_INT(fc_tier_partial_begin(t, "a1"), FEDC_OK);
  CHECK_EQ_INT(fc_tier_partial_begin(t, "a1"), FEDC_ERR_EXISTS);
  CHECK_EQ_INT(fc_tier_partial_begin(t, "a2"), FEDC_OK); /* another aggregator's is its own */
  CHECK_EQ_INT(fc_tier_partial_begin(t, "a9"), FEDC_ERR_NOT_FOUND);
  fc_tier_set_members(t, ms, 2); /* a registry refresh keeps the mark */
  CHECK_EQ_INT(fc_tier_partial_begin(t, "a1"), FEDC_ERR_EXISTS);
  fc_tier_partial_end(t, "a1");
  CHECK_EQ_INT(fc_tier_partial_begin(t, "a1"), FEDC_OK);
  fc_tier_partial_end(t, "a9"); /* not a member: nothing */
  fc_tier_destroy(t);
}

/* Status view: each member's load and counters; counters follow a member
 * across refreshes and go when it leaves. */
static void test_loads(void) {
  fc_tier *t = NULL;
  CHECK_EQ_INT(fc_tier_create(&t), FEDC_OK);
  fc_tier_member out, ms[2] = {member("a1", "127.0.0.1:1"), member("a2", "127.0.0.1:2")};
  fc_tier_set_members(t, ms, 2);
  const char *cl[3] = {"c0", "c1", "c2"}; /* c0, c2 -> a1; c1 -> a2 */
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(fc_tier_assign(t, 4, cl[i], &out), FEDC_OK);
  fc_tier_note_seen(t, "a1", 1000);
  fc_tier_note_seen(t, "a9", 2000); /* not registered: ignored */
  fc_tier_update ups[2] = {{"c0", 10, 10, 0.5}, {"c2", 20, 20, 0.5}};
  fc_tier_partial p = {"a1", 4, 1, 30, ups, 2, NULL, 0};
  fc_tier_mark_counted(t, &p);
  fc_tier_note_refused(t, "a2");
  fc_tier_set_members(t, ms, 2); /* a refresh with the same members keeps the counters */
  fc_tier_load_info li[4];
  CHECK_EQ_INT(fc_tier_loads(t, li, 4), 2);
  CHECK(!strcmp(li[0].m.name, "a1") && !strcmp(li[0].m.address, "127.0.0.1:1"));
  CHECK_EQ_INT(li[0].round, 4);
  CHECK_EQ_INT(li[0].assigned, 2);
  CHECK_EQ_INT(li[0].counted, 2);
  CHECK_EQ_INT(li[0].partials_accepted, 1);
  CHECK_EQ_INT(li[0].updates_counted, 2);
  CHECK_EQ_INT(li[0].last_seen_ms, 1000);
  CHECK_EQ_INT(li[1].assigned, 1);
  CHECK_EQ_INT(li[1].counted, 0);
  CHECK_EQ_INT(li[1].partials_refused, 1);
  CHECK_EQ_INT(li[1].last_seen_ms, 0);
  CHECK_EQ_INT(fc_tier_loads(t, li, 1), 1); /* cap */
  /* a1 leaves and comes back: it starts from zero; a2 (now first) keeps its own. */
  fc_tier_set_members(t, &ms[1], 1);
  CHECK_EQ_INT(fc_tier_loads(t, li, 4), 1);
  CHECK(!strcmp(li[0].m.name, "a2"));
  CHECK_EQ_INT(li[0].partials_refused, 1);
  fc_tier_set_members(t, ms, 2);
  CHECK_EQ_INT(fc_tier_loads(t, li, 4), 2);
  CHECK_EQ_INT(li[0].partials_accepted, 0);
  CHECK_EQ_INT(li[0].updates_counted, 0);
  CHECK_EQ_INT(li[1].partials_refused, 1);
  fc_tier_destroy(t);
}

/* Secure aggregation in buckets (1.16): a bucket's members go to one
 * aggregator; masked partials carry clients that report no examples. */
static void test_groups_and_masked(void) {
  fc_tier *t = NULL;
  char why[300];
  CHECK_EQ_INT(fc_tier_create(&t), FEDC_OK);
  fc_tier_member out, ms[3] = {member("a1", "127.0.0.1:1"), member("a2", "127.0.0.1:2"), member("a3", "127.0.0.1:3")};
  fc_tier_set_members(t, ms, 3);
  /* Buckets 0, 1, 0, 2, 1, 0: first members spread by load, the rest follow their bucket. */
  const long group[] = {0, 1, 0, 2, 1, 0};
  const char *want[] = {"a1", "a2", "a1", "a3", "a2", "a1"};
  char cl[8];
  for (int i = 0; i < 6; i++) {
    snprintf(cl, sizeof cl, "c%d", i);
    CHECK_EQ_INT(fc_tier_assign_group(t, 1, cl, group[i], &out), FEDC_OK);
    CHECK(!strcmp(out.name, want[i]));
  }
  /* Ungrouped clients still go by load: a2 and a3 (2 and 1) before a1 (3). */
  CHECK_EQ_INT(fc_tier_assign(t, 1, "c6", &out), FEDC_OK);
  CHECK(!strcmp(out.name, "a3"));
  /* a1's lease expired: the next member of bucket 0 goes by load instead. */
  fc_tier_set_members(t, ms + 1, 2);
  CHECK_EQ_INT(fc_tier_assign_group(t, 1, "c7", 0, &out), FEDC_OK);
  CHECK(!strcmp(out.name, "a2"));
  /* A masked partial: 0 examples and weight 0 each (the weight is in the
   * masked vector); a plaintext partial with the same updates is refused. */
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  uint64_t shape[1] = {11};
  fc_model_spec_add(&spec, "secagg.masked", 1, shape);
  fc_tier_expect e = {1, 0, &spec, {10, 100, 0}};
  fc_tier_update ups[2] = {{"c1", 0, 0, 0.5}, {"c4", 0, 0, 0.5}};
  fc_tier_partial p = {"a2", 1, 0, 0, ups, 2, &spec, 1};
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_OK);
  p.masked = 0;
  CHECK_EQ_INT(fc_tier_check_partial(t, &p, &e, why, sizeof why), FEDC_ERR_INVALID);
  CHECK(strstr(why, "0 examples") != NULL);
  /* Masked, but a weight the rule does not give for 0 examples. */
  fc_tier_update lie[1] = {{"c1", 0, 5, 0.5}};
  fc_tier_partial q = {"a2", 1, 0, 5, lie, 1, &spec, 1};
  CHECK_EQ_INT(fc_tier_check_partial(t, &q, &e, why, sizeof why), FEDC_ERR_INVALID);
  fc_tier_destroy(t);
}

int main(void) {
  test_parse();
  test_assign();
  test_groups_and_masked();
  test_loads();
  test_checks();
  test_fold_equals_fedavg();
  test_fixed_reproducible();
  test_partial_streams();
  return CHECK_DONE();
}
