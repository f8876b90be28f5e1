/*
 * test_calib.c - cached update calibration (coordinator/calib.h; CA2FL,
 * Wang et al., ICLR 2024, Algorithm 1):
 *   - a hand-computed buffer (step = hbar + mean(d_i - h_i));
 *   - the first buffer, nothing cached: FedBuff's weighted mean;
 *   - 300 buffers of random updates from 14 clients, a cache of 9
 *     (evictions), clients forgotten mid-buffer, against a double-precision
 *     reference written from the paper's lines; forgets across hash chains;
 *   - a buffer replayed after a failed publish (begin again, the same
 *     updates) leaves the same cache as one publish;
 *   - the same client twice in a buffer, a buffer past its staged rows, a
 *     dropped buffer's updates never cached, an excluded client forgotten,
 *     the memory budget;
 *   - the coordinator's refusals at start (coord_calib_cfg_check).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/rng.h"
#include "coordinator/calib.h"
#include "coordinator/coord_int.h"
#include "fedc/error.h"

/* The aggregator's part: sum f_i u_i / sum f_i over the calibrated updates. */
typedef struct buf {
  size_t n;
  double *acc, w;
} buf;

static void buf_add(buf *b, const float *u, double f) {
  for (size_t j = 0; j < b->n; j++) b->acc[j] += f * u[j];
  b->w += f;
}

static void buf_mean(const buf *b, float *out) {
  for (size_t j = 0; j < b->n; j++) out[j] = (float)(b->acc[j] / b->w);
}

static void test_hand(void) {
  fc_calib *k = NULL;
  CHECK_EQ_INT(fc_calib_create(2, 10, 4, &k), FEDC_OK);
  /* Buffer 1: A [1,0] (1 example), B [0,1] (3 examples); nothing cached, so
   * each is taken at hbar = 0 and the step is their weighted mean. */
  fc_calib_begin(k);
  float a[2] = {1, 0}, b[2] = {0, 1}, step[2];
  fc_calib_apply(k, "A", 1, a);
  fc_calib_apply(k, "B", 3, b);
  CHECK(a[0] == 1 && a[1] == 0 && b[0] == 0 && b[1] == 1);
  step[0] = (1 * a[0] + 3 * b[0]) / 4, step[1] = (1 * a[1] + 3 * b[1]) / 4;
  fc_calib_finish(k, step);
  CHECK(fabsf(step[0] - 0.25f) < 1e-7f && fabsf(step[1] - 0.75f) < 1e-7f);
  fc_calib_published(k);
  /* Buffer 2: A alone, [2,0]. hbar = (1 [1,0] + 3 [0,1]) / 4 = [0.25, 0.75];
   * step = hbar + ([2,0] - [1,0]) = [1.25, 0.75]. */
  fc_calib_begin(k);
  float a2[2] = {2, 0};
  fc_calib_apply(k, "A", 1, a2);
  CHECK(a2[0] == 1 && a2[1] == 0);
  fc_calib_finish(k, a2);
  CHECK(fabsf(a2[0] - 1.25f) < 1e-7f && fabsf(a2[1] - 0.75f) < 1e-7f);
  fc_calib_published(k);
  /* A newcomer C is taken at hbar = (1 [2,0] + 3 [0,1]) / 4 = [0.5, 0.75]. */
  fc_calib_begin(k);
  float c[2] = {1, 1};
  fc_calib_apply(k, "C", 2, c);
  CHECK(fabsf(c[0] - 0.5f) < 1e-7f && fabsf(c[1] - 0.25f) < 1e-7f);
  fc_calib_finish(k, c);
  CHECK(fabsf(c[0] - 1.0f) < 1e-7f && fabsf(c[1] - 1.0f) < 1e-7f); /* a buffer of newcomers: their mean */
  fc_calib_info ci;
  fc_calib_published(k);
  fc_calib_get_info(k, &ci);
  CHECK(ci.cached == 3 && ci.weight == 6 && ci.evicted == 0 && ci.staged == 0);
  fc_calib_free(k);
}

/* The reference: the paper's lines in double, the cache a table of the
 * last update per client with its publish order, least recent evicted (a
 * buffer's own clients counted as used before its newcomers evict), an
 * excluded client forgotten with its staged update. */
#define NCL 14
#define CAP 9
#define N 9

typedef struct ref {
  int cached[NCL];
  double h[NCL][N];
  uint64_t ex[NCL], used[NCL], tick;
} ref;

static void ref_hbar(const ref *r, double *hbar) {
  double w = 0;
  memset(hbar, 0, N * sizeof *hbar);
  for (int i = 0; i < NCL; i++)
    if (r->cached[i]) {
      for (int j = 0; j < N; j++) hbar[j] += (double)r->ex[i] * r->h[i][j];
      w += (double)r->ex[i];
    }
  if (w > 0)
    for (int j = 0; j < N; j++) hbar[j] /= w;
}

static void ref_publish(ref *r, const int *cl, const int *kept, double (*d)[N], const uint64_t *ex, int m) {
  for (int u = 0; u < m; u++)
    if (kept[u] && r->cached[cl[u]]) r->used[cl[u]] = ++r->tick;
  for (int u = 0; u < m; u++) {
    if (!kept[u]) continue;
    if (!r->cached[cl[u]]) {
      int ncached = 0, old = -1;
      for (int i = 0; i < NCL; i++)
        if (r->cached[i]) {
          ncached++;
          if (old < 0 || r->used[i] < r->used[old]) old = i;
        }
      if (ncached == CAP) r->cached[old] = 0;
      r->cached[cl[u]] = 1;
      r->used[cl[u]] = ++r->tick;
    }
    memcpy(r->h[cl[u]], d[u], sizeof r->h[cl[u]]);
    r->ex[cl[u]] = ex[u];
  }
}

/* 300 buffers (past the re-sum every 256) of three distinct clients of 14,
 * a cache of 9, and now and then a client forgotten mid-buffer. */
static void test_reference(void) {
  fc_rng rng;
  fc_rng_seed(&rng, 7);
  fc_calib *k = NULL;
  CHECK_EQ_INT(fc_calib_create(N, CAP, 4, &k), FEDC_OK);
  ref r;
  memset(&r, 0, sizeof r);
  double worst = 0;
  int forgot = 0;
  for (int t = 0; t < 300; t++) {
    fc_calib_begin(k);
    double hbar[N], racc[N] = {0}, rw = 0;
    ref_hbar(&r, hbar);
    int cl[3], kept[3] = {1, 1, 1};
    double d[3][N];
    uint64_t ex[3];
    buf b = {N, calloc(N, sizeof(double)), 0};
    for (int u = 0; u < 3; u++) {
      do {
        cl[u] = (int)(fc_rng_below(&rng, NCL));
      } while ((u > 0 && cl[u] == cl[0]) || (u > 1 && cl[u] == cl[1]));
      ex[u] = 1 + fc_rng_below(&rng, 50);
      double f = (double)ex[u] / sqrt(1.0 + (double)(fc_rng_below(&rng, 5))); /* a staleness weight */
      float x[N];
      for (int j = 0; j < N; j++) x[j] = (float)(fc_rng_uniform(&rng) * 2 - 1), d[u][j] = x[j];
      const double *h = r.cached[cl[u]] ? r.h[cl[u]] : hbar;
      for (int j = 0; j < N; j++) racc[j] += f * (d[u][j] - h[j]);
      rw += f;
      char name[8];
      snprintf(name, sizeof name, "c%d", cl[u]);
      fc_calib_apply(k, name, ex[u], x);
      buf_add(&b, x, f);
    }
    if (fc_rng_below(&rng, 6) == 0) { /* one client excluded mid-buffer: maybe one of the buffer's */
      int g = (int)fc_rng_below(&rng, NCL);
      char name[8];
      snprintf(name, sizeof name, "c%d", g);
      fc_calib_forget(k, name);
      r.cached[g] = 0;
      for (int u = 0; u < 3; u++)
        if (cl[u] == g) kept[u] = 0;
      forgot++;
    }
    float step[N];
    buf_mean(&b, step);
    fc_calib_finish(k, step); /* hbar as the buffer began, a forget notwithstanding */
    for (int j = 0; j < N; j++) {
      double e = fabs(step[j] - (racc[j] / rw + hbar[j]));
      if (e > worst) worst = e;
    }
    fc_calib_published(k);
    ref_publish(&r, cl, kept, d, ex, 3);
    free(b.acc);
    fc_calib_info ci;
    fc_calib_get_info(k, &ci);
    uint64_t w = 0;
    uint32_t nc = 0;
    for (int i = 0; i < NCL; i++) w += r.cached[i] ? (nc++, r.ex[i]) : 0;
    if (ci.weight != w || ci.cached != nc) {
      CHECK(ci.weight == w && ci.cached == nc);
      break;
    }
  }
  CHECK(worst < 1e-5);
  CHECK(forgot > 20);
  fc_calib_info ci;
  fc_calib_get_info(k, &ci);
  CHECK(ci.evicted > 0);
  fc_calib_free(k);
}

/* Many clients in few buckets: forgetting heads, middles and tails of
 * chains, the last entry, then newcomers taking the freed places; every
 * remaining client is still found with its own update. */
static void test_forget_chains(void) {
  fc_calib *k = NULL;
  CHECK_EQ_INT(fc_calib_create(1, 24, 24, &k), FEDC_OK); /* 32 buckets, 24 names */
  char name[8];
  fc_calib_begin(k);
  for (int i = 0; i < 24; i++) {
    float x[1] = {(float)i};
    snprintf(name, sizeof name, "n%d", i);
    fc_calib_apply(k, name, 1, x);
  }
  fc_calib_published(k);
  int gone[24] = {0};
  for (int i = 23; i >= 0; i -= 3) { /* the last entry first, then every third */
    snprintf(name, sizeof name, "n%d", i);
    fc_calib_forget(k, name);
    gone[i] = 1;
  }
  fc_calib_begin(k);
  for (int i = 0; i < 8; i++) { /* newcomers in the freed places */
    float x[1] = {(float)(100 + i)};
    snprintf(name, sizeof name, "m%d", i);
    fc_calib_apply(k, name, 1, x);
  }
  fc_calib_published(k);
  int bad = 0;
  for (int i = 0; i < 24; i++) {
    float x[1] = {(float)i};
    snprintf(name, sizeof name, "n%d", i);
    fc_calib_calibrate(k, name, x);
    if (!gone[i] && x[0] != 0) bad++; /* found, its own update subtracted */
  }
  for (int i = 0; i < 8; i++) {
    float x[1] = {(float)(100 + i)};
    snprintf(name, sizeof name, "m%d", i);
    fc_calib_calibrate(k, name, x);
    if (x[0] != 0) bad++;
  }
  CHECK(bad == 0);
  fc_calib_info ci;
  fc_calib_get_info(k, &ci);
  CHECK(ci.cached == 24 && ci.evicted == 0);
  fc_calib_free(k);
}

/* A failed publish: the next buffer begins, replays the same updates and
 * publishes; the cache is as after one publish (the same next step). */
static void test_replay(void) {
  fc_calib *k1 = NULL, *k2 = NULL;
  CHECK_EQ_INT(fc_calib_create(2, 8, 4, &k1), FEDC_OK);
  CHECK_EQ_INT(fc_calib_create(2, 8, 4, &k2), FEDC_OK);
  const char *names[3] = {"A", "B", "A"};
  const float vals[3][2] = {{1, 2}, {3, -1}, {0.5f, 0.5f}};
  for (int i = 0; i < 3; i++) { /* buffers 1-3, one update each, published in both */
    float x1[2] = {vals[i][0], vals[i][1]}, x2[2] = {vals[i][0], vals[i][1]};
    fc_calib_begin(k1), fc_calib_begin(k2);
    fc_calib_apply(k1, names[i], 2, x1);
    fc_calib_apply(k2, names[i], 2, x2);
    if (i == 2) { /* k2's publish of buffer 3 fails: begun again, replayed */
      fc_calib_begin(k2);
      float y[2] = {vals[i][0], vals[i][1]};
      fc_calib_apply(k2, names[i], 2, y);
      CHECK(y[0] == x1[0] && y[1] == x1[1]); /* the same h_A subtracted again */
    }
    fc_calib_published(k1), fc_calib_published(k2);
  }
  float z1[2] = {1, 1}, z2[2] = {1, 1};
  fc_calib_begin(k1), fc_calib_begin(k2);
  fc_calib_apply(k1, "B", 1, z1);
  fc_calib_apply(k2, "B", 1, z2);
  fc_calib_finish(k1, z1), fc_calib_finish(k2, z2);
  CHECK(z1[0] == z2[0] && z1[1] == z2[1]);
  /* hbar = (2 [0.5,0.5] + 2 [3,-1]) / 4 = [1.75, -0.25]; z = [1,1] - [3,-1] + hbar */
  CHECK(fabsf(z1[0] - (-0.25f)) < 1e-6f && fabsf(z1[1] - 1.75f) < 1e-6f);
  fc_calib_free(k1);
  fc_calib_free(k2);
}

static void test_twice_and_rows(void) {
  fc_calib *k = NULL;
  CHECK_EQ_INT(fc_calib_create(1, 8, 2, &k), FEDC_OK);
  fc_calib_begin(k);
  float a[1] = {4};
  fc_calib_apply(k, "A", 1, a);
  fc_calib_published(k); /* h_A = 4 */
  fc_calib_begin(k);
  float x[1] = {6}, y[1] = {10};
  fc_calib_apply(k, "A", 1, x);
  fc_calib_apply(k, "A", 1, y); /* both against h_A = 4; the later one is cached */
  CHECK(x[0] == 2 && y[0] == 6);
  fc_calib_info ci;
  fc_calib_get_info(k, &ci);
  CHECK(ci.staged == 1);
  fc_calib_published(k);
  float z[1] = {10};
  fc_calib_begin(k);
  fc_calib_apply(k, "A", 1, z);
  CHECK(z[0] == 0);
  /* Rows 2: a third client in one buffer is calibrated (at hbar 10) but not cached. */
  float b[1] = {1}, c[1] = {2};
  fc_calib_apply(k, "B", 1, b);
  fc_calib_apply(k, "C", 1, c);
  CHECK(b[0] == -9 && c[0] == -8);
  fc_calib_published(k);
  fc_calib_get_info(k, &ci);
  CHECK(ci.cached == 2 && ci.weight == 2);
  fc_calib_free(k);
  CHECK_EQ_INT(fc_calib_create(0, 8, 2, &k), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_calib_create(3, 0, 2, &k), FEDC_ERR_INVALID);
}

/* A buffer dropped (its publish failed for good): begin drops its staged
 * updates, which never reach the cache. */
static void test_dropped(void) {
  fc_calib *k = NULL;
  CHECK_EQ_INT(fc_calib_create(1, 8, 4, &k), FEDC_OK);
  fc_calib_begin(k);
  float a[1] = {5};
  fc_calib_apply(k, "A", 1, a);
  fc_calib_begin(k); /* dropped: not published */
  float b[1] = {1};
  fc_calib_apply(k, "B", 1, b);
  fc_calib_published(k);
  fc_calib_info ci;
  fc_calib_get_info(k, &ci);
  CHECK(ci.cached == 1 && ci.weight == 1);
  float z[1] = {7};
  fc_calib_begin(k);
  fc_calib_apply(k, "A", 1, z); /* A is not cached: taken at hbar = 1 */
  CHECK(z[0] == 6);
  /* stage + calibrate as the replay uses them = apply: B staged by stage
   * alone is cached at the publish, calibrate stages nothing */
  float y[1] = {7};
  fc_calib_calibrate(k, "C", y);
  CHECK(y[0] == 6);
  fc_calib_stage(k, "B", 1, y);
  fc_calib_published(k); /* A 7 (z's raw value), B 6; C never staged */
  fc_calib_get_info(k, &ci);
  CHECK(ci.cached == 2 && ci.weight == 2);
  float q[1] = {6};
  fc_calib_calibrate(k, "B", q);
  CHECK(q[0] == 0);
  fc_calib_free(k);
}

/* An excluded client's cached update leaves the mean; the others keep
 * theirs, found by name after the table moved. */
static void test_forget(void) {
  fc_calib *k = NULL;
  CHECK_EQ_INT(fc_calib_create(1, 8, 4, &k), FEDC_OK);
  fc_calib_begin(k);
  float a[1] = {1}, b[1] = {2}, c[1] = {100};
  fc_calib_apply(k, "A", 1, a);
  fc_calib_apply(k, "B", 1, b);
  fc_calib_apply(k, "C", 2, c);
  fc_calib_published(k); /* hbar = (1 + 2 + 200) / 4 */
  fc_calib_begin(k);
  float x[1] = {0};
  fc_calib_calibrate(k, "D", x);
  CHECK(fabsf(x[0] + 50.75f) < 1e-5f);
  fc_calib_forget(k, "A"); /* C's entry moves into A's place */
  fc_calib_forget(k, "nobody");
  fc_calib_info ci;
  fc_calib_get_info(k, &ci);
  CHECK(ci.cached == 2 && ci.weight == 3);
  float cc[1] = {100}, bb[1] = {2};
  fc_calib_calibrate(k, "C", cc);
  fc_calib_calibrate(k, "B", bb);
  CHECK(cc[0] == 0 && bb[0] == 0);
  float d[1] = {4};
  fc_calib_apply(k, "D", 1, d);
  fc_calib_forget(k, "D"); /* excluded mid-buffer: its staged update is dropped too */
  fc_calib_published(k);
  fc_calib_get_info(k, &ci);
  CHECK(ci.cached == 2 && ci.staged == 0);
  float e[1] = {0};
  fc_calib_calibrate(k, "E", e); /* hbar = (2 + 200) / 3 */
  CHECK(fabsf(e[0] + 202.0f / 3.0f) < 1e-4f);
  fc_calib_free(k);
  /* The budget counts the staged rows and the sums, not only the cache. */
  uint64_t per = 1000 * 4;
  CHECK(fc_calib_capacity(1000, 6, 100 * per) < 100 - 6);
  CHECK(fc_calib_capacity(1000, 6, 100 * per) > 80);
  CHECK(fc_calib_capacity(1000, 6, 6 * per) == 0);
}

static void test_cfg(void) {
  fc_coord_cfg cfg;
  char err[300];
  fc_coord_cfg_defaults(&cfg);
  CHECK_EQ_INT(coord_calib_cfg_check(&cfg, err, sizeof err), FEDC_OK); /* off */
  cfg.async_calibrate = 1;
  CHECK_EQ_INT(coord_calib_cfg_check(&cfg, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "async mode") != NULL);
  cfg.engine.async = 1;
  CHECK_EQ_INT(coord_calib_cfg_check(&cfg, err, sizeof err), FEDC_OK);
  snprintf(cfg.aggregator, sizeof cfg.aggregator, "median");
  CHECK_EQ_INT(coord_calib_cfg_check(&cfg, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "fedavg") != NULL);
  snprintf(cfg.aggregator, sizeof cfg.aggregator, "fedavg");
  cfg.reproducible_sum = 1;
  CHECK_EQ_INT(coord_calib_cfg_check(&cfg, err, sizeof err), FEDC_ERR_INVALID);
  cfg.reproducible_sum = 0;
  cfg.agg_tier = 1;
  CHECK_EQ_INT(coord_calib_cfg_check(&cfg, err, sizeof err), FEDC_ERR_INVALID);
  cfg.agg_tier = 0;
  cfg.engine.staleness.fedbuff = 1;
  CHECK_EQ_INT(coord_calib_cfg_check(&cfg, err, sizeof err), FEDC_ERR_INVALID);
  cfg.engine.staleness.fedbuff = 0;
  cfg.clip_norm = 0;
  CHECK_EQ_INT(coord_calib_cfg_check(&cfg, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "clip_norm") != NULL);
  cfg.clip_norm = 1;
  cfg.async_cache_mib = 0;
  CHECK_EQ_INT(coord_calib_cfg_check(&cfg, err, sizeof err), FEDC_ERR_INVALID);
  cfg.async_cache_mib = (1ull << 24) + 1;
  CHECK_EQ_INT(coord_calib_cfg_check(&cfg, err, sizeof err), FEDC_ERR_INVALID);
}

int main(void) {
  test_hand();
  test_reference();
  test_forget_chains();
  test_replay();
  test_twice_and_rows();
  test_dropped();
  test_forget();
  test_cfg();
  return CHECK_DONE();
}
