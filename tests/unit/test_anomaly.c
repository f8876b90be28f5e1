/*
 * test_anomaly.c - update anomaly scores (coordinator/anomaly.c): robust
 * z-scores and medians on known inputs; a round with known features and the
 * known score and ewma they give; a sign-flip attacker among honest updates
 * of a model larger than the sketch gets the top score and is flagged then
 * excluded; cosine to the previous aggregate; the collusion feature
 * (nearest-neighbour cosine) on known numbers, against ALIE as the sim sends
 * it, and past the exact limit; identity misuse bits; the
 * identity table's JSON round trip (what the coordinator persists).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "coordinator/anomaly.h"
#include "fedc/error.h"

#define NEAR(a, b, tol) CHECK(fabs((a) - (b)) <= (tol))

static uint64_t rng = 88172645463325252ull;
static double urand(void) { /* xorshift64 in [0, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (rng >> 11) * (1.0 / 9007199254740992.0);
}
static double gauss(void) { return sqrt(-2 * log(1 - urand())) * cos(6.283185307179586 * urand()); }

static double l2(const float *x, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
  return sqrt(s);
}

static void add(fc_anomaly *a, const char *id, const float *x, size_t n) {
  fc_anomaly_meas *m = malloc(sizeof *m);
  fc_anomaly_measure(a, x, l2(x, n), m);
  CHECK_EQ_INT(fc_anomaly_add(a, id, m), FEDC_OK);
  free(m);
}

static void known_values(void) {
  double v[5] = {4, 1, 100, 3, 2}, t[5];
  memcpy(t, v, sizeof t);
  NEAR(fc_anomaly_median(t, 5), 3, 0);
  double e[4] = {4, 1, 3, 2};
  NEAR(fc_anomaly_median(e, 4), 2.5, 0);
  double z[5];
  /* median 3, |v - 3| = {1,2,97,0,1}: MAD 1, scale 1.4826 */
  fc_anomaly_robust_z(v, 5, 0, 0, z);
  NEAR(z[2], 97 / 1.4826, 1e-9);
  NEAR(z[1], 2 / 1.4826, 1e-9);
  NEAR(z[3], 0, 0);
  fc_anomaly_robust_z(v, 5, 0, 1, z); /* one-sided: only below the median */
  NEAR(z[2], 0, 0);
  NEAR(z[0], 0, 0);
  NEAR(z[1], 2 / 1.4826, 1e-9);
  fc_anomaly_robust_z(v, 5, 10, 0, z); /* the floor wins over a smaller MAD */
  NEAR(z[2], 9.7, 1e-12);
}

/* Five updates along e1 with norms 1,1,1,1,3: all cosines 1 (to the
 * aggregate and to each other: all nearest-neighbour cosines are 1, so the
 * collusion feature scores no one); the norm's MAD is 0, so the floor (20%
 * of the median norm 1) is the scale: the odd one scores 2 / 0.2 = 10 (40
 * with the first floor of 5%), its ewma 0.3 x min(10, cap 10) = 3 (below the
 * threshold 5: one round is not enough); the others score 0. */
static void known_round(void) {
  fc_anomaly_cfg cfg;
  fc_anomaly_cfg_defaults(&cfg);
  cfg.policy = FC_ANOM_FLAG;
  fc_anomaly *a = NULL;
  CHECK_EQ_INT(fc_anomaly_create(&cfg, 4, &a), FEDC_OK);
  fc_anomaly_round_begin(a);
  const char *ids[5] = {"c1", "c2", "c3", "c4", "c5"};
  float agg[4] = {0};
  for (int i = 0; i < 5; i++) {
    float x[4] = {i == 4 ? 3.0f : 1.0f, 0, 0, 0};
    add(a, ids[i], x, 4);
    agg[0] += x[0] / 5;
  }
  fc_anomaly_round r;
  CHECK_EQ_INT(fc_anomaly_round_end(a, agg, 1, 1000, &r), FEDC_OK);
  CHECK_EQ_INT(r.inputs, 5);
  NEAR(r.norm_min, 1, 1e-12);
  NEAR(r.norm_median, 1, 1e-12);
  NEAR(r.norm_max, 3, 1e-12);
  NEAR(r.cos_agg_median, 1, 1e-6);
  CHECK(isnan(r.cos_prev_median));
  CHECK_EQ_INT(r.top, 4);
  NEAR(r.in[4].score, 10, 1e-6);
  CHECK_EQ_INT(r.in[4].feature, FC_ANOM_F_NORM);
  NEAR(r.cos_nn_median, 1, 1e-9);
  NEAR(r.in[4].ewma, 3, 1e-6);
  CHECK(!r.in[4].flagged && !r.in[4].excluded);
  CHECK_EQ_INT(r.nflagged, 0);
  for (int i = 0; i < 4; i++) NEAR(r.in[i].score, 0, 1e-9);
  fc_anomaly_round_free(&r);
  NEAR(fc_anomaly_score(a, "c5"), 3, 1e-6);
  NEAR(fc_anomaly_score(a, "c1"), 0, 0);

  /* Round 2: the same inputs; cos_prev is exact (1 for all along e1) and
   * the ewma compounds to 0.7 x 3 + 0.3 x 10 = 5.1: flagged (not excluded
   * under `flag`). */
  fc_anomaly_round_begin(a);
  for (int i = 0; i < 5; i++) {
    float x[4] = {i == 4 ? 3.0f : 1.0f, 0, 0, 0};
    add(a, ids[i], x, 4);
  }
  CHECK_EQ_INT(fc_anomaly_round_end(a, agg, 2, 2000, &r), FEDC_OK);
  NEAR(r.cos_prev_median, 1, 1e-9);
  NEAR(r.in[4].ewma, 5.1, 1e-6);
  CHECK(r.in[4].flagged && !r.in[4].excluded);
  CHECK_EQ_INT(r.nflagged, 1);
  fc_anomaly_round_free(&r);

  /* Too few inputs: statistics but no score, ewma unchanged. */
  fc_anomaly_round_begin(a);
  float x[4] = {0, 5, 0, 0};
  add(a, "c5", x, 4);
  CHECK_EQ_INT(fc_anomaly_round_end(a, x, 3, 3000, &r), FEDC_OK);
  CHECK_EQ_INT(r.inputs, 1);
  NEAR(r.in[0].score, 0, 0);
  NEAR(r.in[0].ewma, 5.1, 1e-6);
  NEAR(r.in[0].cos_prev, 0, 1e-9); /* orthogonal to round 2's aggregate */
  fc_anomaly_round_free(&r);
  fc_anomaly_destroy(a);
}

/* 18 honest clients (a shared direction plus their own noise) and 2 sign-
 * flip attackers, on a model of 100,000 parameters (the sketch estimates
 * the cosines): the attackers score highest, and under `exclude` both are
 * flagged and excluded by round 3 while no honest client is. */
static void attacker_among_honest(void) {
  const size_t n = 100000;
  const int k = 20;
  float *dir = malloc(n * sizeof *dir), *x = malloc(n * sizeof *x), *agg = malloc(n * sizeof *agg);
  for (size_t i = 0; i < n; i++) dir[i] = (float)gauss();
  fc_anomaly_cfg cfg;
  fc_anomaly_cfg_defaults(&cfg);
  cfg.policy = FC_ANOM_EXCLUDE;
  cfg.cooldown_ms = 60000;
  fc_anomaly *a = NULL;
  CHECK_EQ_INT(fc_anomaly_create(&cfg, n, &a), FEDC_OK);
  int honest_flagged = 0;
  for (uint64_t round = 1; round <= 3; round++) {
    fc_anomaly_round_begin(a);
    memset(agg, 0, n * sizeof *agg);
    for (int c = 0; c < k; c++) {
      char id[16];
      snprintf(id, sizeof id, "client%02d", c);
      int attacker = c >= k - 2;
      for (size_t i = 0; i < n; i++) {
        float h = dir[i] + 1.5f * (float)gauss();
        x[i] = attacker ? -dir[i] : h;
        agg[i] += x[i] / k;
      }
      add(a, id, x, n);
    }
    fc_anomaly_round r;
    CHECK_EQ_INT(fc_anomaly_round_end(a, agg, round, round * 1000, &r), FEDC_OK);
    CHECK_EQ_INT(r.inputs, k);
    CHECK(r.top >= (uint32_t)k - 2);
    /* honest cosine to the aggregate: about 1/sqrt(1 + 2.25) x ... > 0; attackers < 0 */
    CHECK(r.in[0].cos_agg > 0.2 && r.in[k - 1].cos_agg < -0.2);
    for (int c = 0; c < k - 2; c++) {
      CHECK(r.in[c].score < r.in[k - 1].score);
      honest_flagged += r.in[c].flagged;
    }
    if (round == 3) {
      CHECK(r.in[k - 1].flagged && r.in[k - 1].excluded && r.in[k - 2].excluded);
      CHECK_EQ_INT(r.nflagged, 2);
    }
    fc_anomaly_round_free(&r);
  }
  CHECK_EQ_INT(honest_flagged, 0);
  CHECK_EQ_INT(fc_anomaly_excluded(a, 3000, NULL, NULL), 2);
  CHECK_EQ_INT(fc_anomaly_excluded(a, 3000 + 60000, NULL, NULL), 0); /* the cool-down ends */
  fc_anomaly_destroy(a);
  free(dir);
  free(x);
  free(agg);
}

/* Secure aggregation buckets: inputs of no identity are scored (the odd
 * bucket's norm scores 10 as in known_round) but never flagged, and leave no
 * identity record. */
static void buckets(void) {
  fc_anomaly_cfg cfg;
  fc_anomaly_cfg_defaults(&cfg);
  cfg.policy = FC_ANOM_EXCLUDE;
  fc_anomaly *a = NULL;
  CHECK_EQ_INT(fc_anomaly_create(&cfg, 4, &a), FEDC_OK);
  fc_anomaly_round_begin(a);
  float agg[4] = {1.4f, 0, 0, 0};
  for (int i = 0; i < 5; i++) {
    float x[4] = {i == 4 ? 3.0f : 1.0f, 0, 0, 0};
    fc_anomaly_meas *m = malloc(sizeof *m);
    fc_anomaly_measure(a, x, x[0], m);
    char label[16];
    snprintf(label, sizeof label, "bucket %d", i + 1);
    CHECK_EQ_INT(fc_anomaly_add_group(a, label, m), FEDC_OK);
    free(m);
  }
  fc_anomaly_round r;
  CHECK_EQ_INT(fc_anomaly_round_end(a, agg, 1, 1000, &r), FEDC_OK);
  CHECK_EQ_INT(r.top, 4);
  NEAR(r.in[4].score, 10, 1e-6);
  CHECK(r.in[4].group && !r.in[4].flagged && !r.in[4].excluded);
  CHECK_EQ_INT(r.nflagged, 0);
  fc_anomaly_round_free(&r);
  fc_anomaly_ident *ids = NULL;
  size_t n = 1;
  CHECK_EQ_INT(fc_anomaly_idents(a, &ids, &n), FEDC_OK);
  CHECK_EQ_INT(n, 0);
  free(ids);
  fc_anomaly_destroy(a);
}

/* The collusion feature on known numbers (8 parameters: the sketch is the
 * update itself). Four honest inputs e1..e4 (orthogonal: nearest cosine 0)
 * and two copies of e5: nearest cosines {0,0,0,0,1,1}, log distances
 * {0,0,0,0,ln 1e-3,ln 1e-3}, median 0 and MAD 0, so the floor 0.5 is the
 * scale and each copy scores -ln(1e-3) / 0.5 = 13.8155 (ewma 0.3 x cap 10
 * = 3); norms are all 1 and the copies point more the aggregate's way than
 * the others (one-sided: not suspicious), so no other feature scores. The
 * same six inputs all copies of one vector (honest clients with identical
 * data): every nearest cosine is 1, the median too, and no one scores. */
static void collusion_known(void) {
  fc_anomaly_cfg cfg;
  fc_anomaly_cfg_defaults(&cfg);
  cfg.policy = FC_ANOM_FLAG;
  fc_anomaly *a = NULL;
  CHECK_EQ_INT(fc_anomaly_create(&cfg, 8, &a), FEDC_OK);
  const char *ids[6] = {"h1", "h2", "h3", "h4", "x1", "x2"};
  for (int identical = 0; identical <= 1; identical++) {
    fc_anomaly_round_begin(a);
    float agg[8] = {0};
    for (int i = 0; i < 6; i++) {
      float x[8] = {0};
      x[identical ? 0 : i < 4 ? i : 4] = 1;
      add(a, ids[i], x, 8);
      for (int j = 0; j < 8; j++) agg[j] += x[j] / 6;
    }
    fc_anomaly_round r;
    CHECK_EQ_INT(fc_anomaly_round_end(a, agg, 1 + (uint64_t)identical, 1000, &r), FEDC_OK);
    CHECK_EQ_INT(r.inputs, 6);
    NEAR(r.cos_nn_max, 1, 1e-9);
    if (!identical) {
      NEAR(r.cos_nn_median, 0, 1e-9);
      for (int i = 0; i < 4; i++) {
        NEAR(r.in[i].cos_nn, 0, 1e-9);
        NEAR(r.in[i].score, 0, 1e-9);
      }
      for (int i = 4; i < 6; i++) {
        NEAR(r.in[i].cos_nn, 1, 1e-9);
        NEAR(r.in[i].score, -log(1e-3) / 0.5, 1e-6);
        CHECK_EQ_INT(r.in[i].feature, FC_ANOM_F_COLLUSION);
        NEAR(r.in[i].ewma, 3, 1e-6);
      }
    } else {
      NEAR(r.cos_nn_median, 1, 1e-9);
      for (int i = 0; i < 6; i++) NEAR(r.in[i].score, 0, 1e-9);
    }
    fc_anomaly_round_free(&r);
  }
  fc_anomaly_destroy(a);
}

/* ALIE as `fedc sim --byzantine F:alie` sends it (client/byzantine.c):
 * the colluders pool their honest deltas and each sends mean - z std per
 * coordinate (z from the cohort of 20 and 2 colluders: 0.126), one vector
 * for all. 18 honest non-IID clients (a shared direction plus their own
 * noise, nearest cosines about 0.3-0.4) on 100,000 parameters: the norm and
 * the cosines of the crafted vector sit inside the honest spread, so before
 * the collusion feature it scored like an honest client; now both colluders
 * score the cap by the collusion feature and are flagged in round 2 (ewma 3
 * then 5.1), no honest client is. */
static void alie_colluders(void) {
  const size_t n = 100000;
  const int k = 20, f = 2;
  const double z = 0.126;
  float *dir = malloc(n * sizeof *dir), *x = malloc(n * sizeof *x), *agg = malloc(n * sizeof *agg);
  float *own = malloc((size_t)f * n * sizeof *own), *alie = malloc(n * sizeof *alie);
  for (size_t i = 0; i < n; i++) dir[i] = (float)gauss();
  fc_anomaly_cfg cfg;
  fc_anomaly_cfg_defaults(&cfg);
  cfg.policy = FC_ANOM_FLAG;
  fc_anomaly *a = NULL;
  CHECK_EQ_INT(fc_anomaly_create(&cfg, n, &a), FEDC_OK);
  int honest_flagged = 0;
  for (uint64_t round = 1; round <= 2; round++) {
    for (int c = 0; c < f; c++)
      for (size_t i = 0; i < n; i++) own[(size_t)c * n + i] = dir[i] + 1.5f * (float)gauss();
    for (size_t i = 0; i < n; i++) {
      double mu = 0, sq = 0;
      for (int c = 0; c < f; c++) mu += own[(size_t)c * n + i], sq += (double)own[(size_t)c * n + i] * own[(size_t)c * n + i];
      mu /= f;
      alie[i] = (float)(mu - z * sqrt(fmax(sq / f - mu * mu, 0)));
    }
    fc_anomaly_round_begin(a);
    memset(agg, 0, n * sizeof *agg);
    for (int c = 0; c < k; c++) {
      char id[16];
      snprintf(id, sizeof id, "client%02d", c);
      int attacker = c >= k - f;
      for (size_t i = 0; i < n; i++) {
        x[i] = attacker ? alie[i] : dir[i] + 1.5f * (float)gauss();
        agg[i] += x[i] / k;
      }
      add(a, id, x, n);
    }
    fc_anomaly_round r;
    CHECK_EQ_INT(fc_anomaly_round_end(a, agg, round, round * 1000, &r), FEDC_OK);
    for (int c = 0; c < k - f; c++) {
      CHECK(r.in[c].cos_nn < 0.6);
      CHECK(r.in[c].score < 5);
      honest_flagged += r.in[c].flagged;
    }
    for (int c = k - f; c < k; c++) {
      NEAR(r.in[c].cos_nn, 1, 1e-6);
      CHECK(r.in[c].score >= FC_ANOM_SCORE_CAP);
      CHECK_EQ_INT(r.in[c].feature, FC_ANOM_F_COLLUSION);
      CHECK(r.in[c].flagged == (round == 2));
    }
    fc_anomaly_round_free(&r);
  }
  CHECK_EQ_INT(honest_flagged, 0);
  fc_anomaly_destroy(a);
  free(dir);
  free(x);
  free(agg);
  free(own);
  free(alie);
}

/* Past FC_ANOM_NN_EXACT_MAX inputs the nearest neighbours come from the
 * SimHash order: 332 random updates of 64 parameters and two copies of
 * one of them; the copies still meet (cosine 1, the top scores), honest
 * nearest cosines stay those of random vectors in 64 dimensions (< 0.9). */
static void collusion_many_inputs(void) {
  const int k = FC_ANOM_NN_EXACT_MAX + 76;
  const size_t n = 64;
  fc_anomaly_cfg cfg;
  fc_anomaly_cfg_defaults(&cfg);
  fc_anomaly *a = NULL;
  CHECK_EQ_INT(fc_anomaly_create(&cfg, n, &a), FEDC_OK);
  float x[64], copy[64], agg[64] = {0};
  for (size_t i = 0; i < n; i++) copy[i] = (float)gauss();
  fc_anomaly_round_begin(a);
  for (int c = 0; c < k; c++) {
    char id[16];
    snprintf(id, sizeof id, "c%04d", c);
    for (size_t i = 0; i < n; i++) x[i] = c == 100 || c == 300 ? copy[i] : (float)gauss();
    add(a, id, x, n);
    for (size_t i = 0; i < n; i++) agg[i] += x[i] / k;
  }
  fc_anomaly_round r;
  CHECK_EQ_INT(fc_anomaly_round_end(a, agg, 1, 1000, &r), FEDC_OK);
  CHECK_EQ_INT(r.inputs, (uint32_t)k);
  NEAR(r.in[100].cos_nn, 1, 1e-6);
  NEAR(r.in[300].cos_nn, 1, 1e-6);
  CHECK_EQ_INT(r.in[100].feature, FC_ANOM_F_COLLUSION);
  CHECK(r.top == 100 || r.top == 300);
  int high = 0;
  for (int c = 0; c < k; c++) high += c != 100 && c != 300 && r.in[c].cos_nn >= 0.9;
  CHECK_EQ_INT(high, 0);
  fc_anomaly_round_free(&r);
  fc_anomaly_destroy(a);
}

static void misuse_and_persistence(void) {
  fc_anomaly_cfg cfg;
  fc_anomaly_cfg_defaults(&cfg);
  cfg.policy = FC_ANOM_EXCLUDE;
  cfg.threshold = 2; /* one round's capped score (ewma 3) is enough here */
  fc_anomaly *a = NULL, *b = NULL;
  CHECK_EQ_INT(fc_anomaly_create(&cfg, 4, &a), FEDC_OK);
  CHECK_EQ_INT(fc_anomaly_seen(a, "alice", "ipv4:127.0.0.1:5000", 0, 10), 0); /* first address: not "new" */
  CHECK_EQ_INT(fc_anomaly_seen(a, "alice", "ipv4:127.0.0.1:5000", 0, 20), 0);
  CHECK_EQ_INT(fc_anomaly_seen(a, "alice", "ipv4:10.0.0.9:6000", 0, 30), FC_ANOM_NEW_ADDR);
  CHECK_EQ_INT(fc_anomaly_seen(a, "alice", "ipv4:127.0.0.1:5000", 1, 40), FC_ANOM_CONCURRENT);
  fc_anomaly_refused(a, "alice");
  /* Scores for five identities, one excluded. */
  fc_anomaly_round_begin(a);
  const char *ids[5] = {"bob", "carol", "dave", "erin", "alice"};
  for (int i = 0; i < 5; i++) {
    float x[4] = {i == 4 ? 3.0f : 1.0f, 0, 0, 0};
    add(a, ids[i], x, 4);
  }
  float agg[4] = {1.4f, 0, 0, 0};
  fc_anomaly_round r;
  CHECK_EQ_INT(fc_anomaly_round_end(a, agg, 7, 5000, &r), FEDC_OK);
  fc_anomaly_round_free(&r);

  json_t *j = fc_anomaly_to_json(a);
  CHECK(j != NULL);
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  json_error_t je;
  json_t *back = json_loads(s, 0, &je);
  free(s);
  CHECK_EQ_INT(fc_anomaly_create(&cfg, 4, &b), FEDC_OK);
  char err[200];
  CHECK_EQ_INT(fc_anomaly_from_json(b, back, err, sizeof err), FEDC_OK);
  json_decref(back);
  fc_anomaly_ident *ia = NULL, *ib = NULL;
  size_t na = 0, nb = 0;
  CHECK_EQ_INT(fc_anomaly_idents(a, &ia, &na), FEDC_OK);
  CHECK_EQ_INT(fc_anomaly_idents(b, &ib, &nb), FEDC_OK);
  CHECK_EQ_INT(na, 5);
  CHECK_EQ_INT(nb, 5);
  for (size_t i = 0; i < na && i < nb; i++) {
    CHECK(!strcmp(ia[i].id, ib[i].id));
    NEAR(ia[i].ewma, ib[i].ewma, 1e-12);
    CHECK_EQ_INT(ia[i].rounds, ib[i].rounds);
    CHECK_EQ_INT(ia[i].excluded_until, ib[i].excluded_until);
    CHECK_EQ_INT(ia[i].naddrs, ib[i].naddrs);
  }
  CHECK(!strcmp(ib[0].id, "alice")); /* sorted */
  NEAR(ib[0].ewma, 3, 1e-6);
  CHECK_EQ_INT(ib[0].new_addrs, 1);
  CHECK_EQ_INT(ib[0].concurrent, 1);
  CHECK_EQ_INT(ib[0].refused, 1);
  CHECK_EQ_INT(ib[0].last_seen_ms, 40);
  CHECK_EQ_INT(ib[0].naddrs, 2);
  CHECK(!strcmp(ib[0].addrs[0], "ipv4:127.0.0.1:5000")); /* most recent first */
  CHECK_EQ_INT(ib[0].excluded_until, 5000 + cfg.cooldown_ms);
  CHECK_EQ_INT(fc_anomaly_excluded(b, 5000, NULL, NULL), 1);
  NEAR(fc_anomaly_score(b, "alice"), 3, 1e-6);
  free(ia);
  free(ib);

  /* A malformed file is refused with a reason and changes nothing. */
  json_t *bad = json_loads("{\"identities\":[{\"id\":\"x\",\"ewma\":-1}]}", 0, &je);
  CHECK_EQ_INT(fc_anomaly_from_json(b, bad, err, sizeof err), FEDC_ERR_FORMAT);
  CHECK(strstr(err, "malformed") != NULL);
  json_decref(bad);
  bad = json_loads("{\"identities\":[{\"id\":\"x\",\"ewma\":\"bad\"}]}", 0, &je);
  CHECK_EQ_INT(fc_anomaly_from_json(b, bad, err, sizeof err), FEDC_ERR_FORMAT);
  json_decref(bad);
  NEAR(fc_anomaly_score(b, "alice"), 3, 1e-6);
  fc_anomaly_destroy(a);
  fc_anomaly_destroy(b);
}

int main(void) {
  known_values();
  known_round();
  attacker_among_honest();
  buckets();
  collusion_known();
  alie_colluders();
  collusion_many_inputs();
  misuse_and_persistence();
  return CHECK_DONE();
}
