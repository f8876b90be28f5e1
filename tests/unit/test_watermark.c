/*
 * test_watermark.c - the global model's watermark (coordinator/watermark.h):
 *   - the trigger set is the key's: the same key gives the same set, another
 *     key (or another model shape) another one; pixels in [0, 1], labels in
 *     range and spread; classes outside 2..256 refused;
 *   - the chance of a score: the binomial tail against exact sums (small n),
 *     and known values (100 of 100 at 1/10 is 10^-100; at least 0 is 1);
 *   - fine-tuning embeds it: a small MLP learns the key's 100 triggers,
 *     fc_wm_check finds 100 of 100 (p = 1e-100) with the key and a chance
 *     score with another; a step that diverges leaves the parameters as they
 *     were;
 *   - what start refuses: a key file others may read (the private-key rule),
 *     a key that is not 64 hex digits, a key inside the state directory, and
 *     a model the MLP code cannot train, with the reason.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "common/mlp.h"
#include "coordinator/watermark.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"

static char dir[64];

static const char *P(const char *name) {
  static char p[4][200];
  static int i;
  i = (i + 1) % 4;
  snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
  return p[i];
}

static void put(const char *name, const char *text, mode_t mode) {
  FILE *f = fopen(P(name), "w");
  fputs(text, f);
  fclose(f);
  chmod(P(name), mode);
}

static const char *KEY1 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
static const char *KEY2 = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

static void free_set(fc_dataset *d) {
  free(d->x);
  free(d->y);
}

static void test_triggers(void) {
  uint8_t k1[FC_WM_KEY_LEN], k2[FC_WM_KEY_LEN];
  char err[300];
  put("k1", KEY1, 0600);
  put("k2", KEY2, 0600);
  CHECK_EQ_INT(fc_wm_key_read(P("k1"), k1, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_wm_key_read(P("k2"), k2, err, sizeof err), FEDC_OK);
  CHECK(k1[0] == 0 && k1[31] == 0x1f && k2[0] == 0xff);
  fc_dataset a, b, c, d;
  CHECK_EQ_INT(fc_wm_triggers(k1, 784, 10, &a), FEDC_OK);
  CHECK_EQ_INT(fc_wm_triggers(k1, 784, 10, &b), FEDC_OK);
  CHECK_EQ_INT(fc_wm_triggers(k2, 784, 10, &c), FEDC_OK);
  CHECK_EQ_INT(fc_wm_triggers(k1, 784, 9, &d), FEDC_OK); /* another model shape: another set */
  CHECK(a.n == FC_WM_TRIGGERS && a.dim == 784 && a.classes == 10);
  size_t nx = (size_t)FC_WM_TRIGGERS * 784 * sizeof(float);
  CHECK(memcmp(a.x, b.x, nx) == 0 && memcmp(a.y, b.y, FC_WM_TRIGGERS) == 0);
  CHECK(memcmp(a.x, c.x, nx) != 0 && memcmp(a.y, c.y, FC_WM_TRIGGERS) != 0);
  CHECK(memcmp(a.x, d.x, nx) != 0);
  int same_labels = 0, seen[10] = {0}, in_range = 1;
  double mean = 0;
  for (int i = 0; i < FC_WM_TRIGGERS; i++) {
    same_labels += a.y[i] == c.y[i];
    if (a.y[i] < 10) seen[a.y[i]]++;
    else in_range = 0;
    if (d.y[i] >= 9) in_range = 0;
  }
  for (size_t i = 0; i < (size_t)FC_WM_TRIGGERS * 784; i++) {
    if (!(a.x[i] >= 0 && a.x[i] <= 1)) in_range = 0;
    mean += a.x[i];
  }
  mean /= (double)FC_WM_TRIGGERS * 784;
  CHECK(in_range);
  CHECK(fabs(mean - 0.5) < 0.01); /* 78,400 uniform bytes / 255 */
  int classes_seen = 0;
  for (int k = 0; k < 10; k++) classes_seen += seen[k] > 0;
  CHECK_EQ_INT(classes_seen, 10);
  CHECK(same_labels < 30); /* two keys agree on about 10 of 100 labels */
  fc_dataset e;
  CHECK_EQ_INT(fc_wm_triggers(k1, 784, 1, &e), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_wm_triggers(k1, 784, 257, &e), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_wm_triggers(k1, 0, 10, &e), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_wm_triggers(k1, 5, 256, &e), FEDC_OK);
  free_set(&e);
  free_set(&a);
  free_set(&b);
  free_set(&c);
  free_set(&d);
}

/* P[X >= k] summed directly (small n: no under- or overflow). */
static double tail_exact(uint32_t k, uint32_t n, double p) {
  double sum = 0;
  for (uint32_t j = k; j <= n; j++) {
    double c = 1;
    for (uint32_t i = 1; i <= j; i++) c = c * (n - j + i) / i;
    sum += c * pow(p, j) * pow(1 - p, n - j);
  }
  return sum;
}

static void test_pvalue(void) {
  CHECK(fc_wm_log10_pvalue(0, 100, 0.1) == 0);
  CHECK(fabs(fc_wm_log10_pvalue(100, 100, 0.1) - -100) < 1e-9);
  CHECK(isinf(fc_wm_log10_pvalue(101, 100, 0.1)));
  for (uint32_t n = 1; n <= 30; n += 7)
    for (uint32_t k = 1; k <= n; k++)
      for (double p = 0.05; p < 0.6; p += 0.2) {
        double want = log10(tail_exact(k, n, p)), got = fc_wm_log10_pvalue(k, n, p);
        if (fabs(got - want) > 1e-9 * fmax(1, fabs(want)))
          fprintf(stderr, "  n %u k %u p %g: %.12g vs %.12g\n", n, k, p, got, want);
        CHECK(fabs(got - want) <= 1e-9 * fmax(1, fabs(want)));
      }
  /* 100 triggers, 10 classes: 30 right is already p ~ 1.7e-8 (the mean is 10). */
  CHECK(fc_wm_log10_pvalue(30, 100, 0.1) < -7 && fc_wm_log10_pvalue(30, 100, 0.1) > -8);
  CHECK(fc_wm_log10_pvalue(10, 100, 0.1) > -0.5);
}

static void test_embed(void) {
  fc_mlp m;
  fc_model_spec spec;
  CHECK_EQ_INT(fc_mlp_parse("784-32-10", &m), 0);
  CHECK_EQ_INT(fc_mlp_spec(&m, &spec), 0);
  size_t n = fc_mlp_nparams(&m);
  float *w = malloc(n * sizeof *w), *copy = malloc(n * sizeof *copy);
  fc_mlp_init(&m, 3, w);
  put("k1", KEY1, 0600);
  put("k2", KEY2, 0600);
  fc_wm *wm = NULL;
  char err[600] = "";
  CHECK_EQ_INT(fc_wm_create(P("k1"), "", &spec, 500, 0.05f, &wm, err, sizeof err), FEDC_OK);
  fc_wm_stats st;
  CHECK_EQ_INT(fc_wm_embed(wm, w, &st), FEDC_OK);
  CHECK(st.before < 30 && st.after == FC_WM_TRIGGERS && st.steps >= 1 && st.steps <= 500);
  CHECK_EQ_INT(fc_wm_embed(wm, w, &st), FEDC_OK); /* learnt: no step needed */
  CHECK(st.steps == 0 && st.before == FC_WM_TRIGGERS);
  uint8_t k1[FC_WM_KEY_LEN], k2[FC_WM_KEY_LEN];
  fc_wm_key_read(P("k1"), k1, err, sizeof err);
  fc_wm_key_read(P("k2"), k2, err, sizeof err);
  uint32_t right = 0, total = 0;
  double lp = 0;
  CHECK_EQ_INT(fc_wm_check(&m, w, k1, &right, &total, &lp), FEDC_OK);
  CHECK(right == 100 && total == 100 && fabs(lp - -100) < 1e-9);
  CHECK_EQ_INT(fc_wm_check(&m, w, k2, &right, &total, &lp), FEDC_OK);
  printf("another key: %u of 100 right, log10 p %.2f\n", right, lp);
  CHECK(right < 25 && lp > -3);
  fc_wm_destroy(wm);
  /* A diverging step: the parameters are given back as they were. */
  fc_mlp_init(&m, 4, w);
  memcpy(copy, w, n * sizeof *w);
  CHECK_EQ_INT(fc_wm_create(P("k1"), "", &spec, 5, 1e30f, &wm, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_wm_embed(wm, w, &st), FEDC_ERR_NONFINITE);
  CHECK(memcmp(w, copy, n * sizeof *w) == 0);
  fc_wm_destroy(wm);
  free(w);
  free(copy);
}

static void test_refusals(void) {
  fc_mlp m;
  fc_model_spec spec, other;
  fc_mlp_parse("784-32-10", &m);
  fc_mlp_spec(&m, &spec);
  fc_wm *wm = NULL;
  char err[600] = "";
  put("open", KEY1, 0644);
  CHECK_EQ_INT(fc_wm_create(P("open"), "", &spec, 5, 0.05f, &wm, err, sizeof err), FEDC_ERR_PERMISSION);
  CHECK(wm == NULL && strstr(err, P("open")));
  put("short", "0011\n", 0600);
  CHECK_EQ_INT(fc_wm_create(P("short"), "", &spec, 5, 0.05f, &wm, err, sizeof err), FEDC_ERR_FORMAT);
  CHECK(strstr(err, "64 hex digits") != NULL);
  mkdir(P("state"), 0700);
  put("state/k", KEY1, 0600);
  CHECK_EQ_INT(fc_wm_create(P("state/k"), P("state"), &spec, 5, 0.05f, &wm, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "inside the state directory") != NULL);
  put("k1", KEY1, 0600);
  CHECK_EQ_INT(fc_wm_create(P("k1"), P("state"), &spec, 5, 0.05f, &wm, err, sizeof err), FEDC_OK);
  fc_wm_destroy(wm);
  wm = NULL;
  CHECK_EQ_INT(fc_wm_create(P("k1"), "", &spec, 0, 0.05f, &wm, err, sizeof err), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_wm_create(P("k1"), "", &spec, 5, 0.0f, &wm, err, sizeof err), FEDC_ERR_INVALID);
  /* A model brought with --init-model that is not an MLP of fc<i> layers. */
  memset(&other, 0, sizeof other);
  uint64_t conv[4] = {8, 1, 3, 3}, bias[1] = {8};
  fc_model_spec_add(&other, "conv1.weight", 4, conv);
  fc_model_spec_add(&other, "conv1.bias", 1, bias);
  CHECK_EQ_INT(fc_wm_create(P("k1"), "", &other, 5, 0.05f, &wm, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(wm == NULL && strstr(err, "cannot train this model") && strstr(err, "conv1.weight"));
  printf("refused: %s\n", err);
  /* 1,000 classes: more than the labels' byte holds. */
  CHECK_EQ_INT(fc_mlp_parse("20-1000", &m), 0);
  fc_mlp_spec(&m, &other);
  CHECK_EQ_INT(fc_wm_create(P("k1"), "", &other, 5, 0.05f, &wm, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "1000 classes") != NULL);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/fedc-wm.XXXXXX");
  if (!mkdtemp(dir)) return 1;
  test_triggers();
  test_pvalue();
  test_embed();
  test_refusals();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
  return CHECK_DONE();
}
