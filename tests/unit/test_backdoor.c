/*
 * test_backdoor.c - the backdoor attack's data side (client/byzantine.h):
 * where the trigger goes, how many examples are poisoned and that the choice
 * is the seed's, the triggered test set (no example of the target class, all
 * stamped and labelled the target), and the model-replacement boost.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client/byzantine.h"
#include "client/data.h"
#include "fedc/error.h"
#include "tests/unit/check.h"

static fc_dataset make(uint32_t n, uint32_t dim, float fill) {
  fc_dataset d = {.n = n, .dim = dim, .classes = 10};
  d.x = malloc((size_t)n * dim * sizeof *d.x);
  d.y = malloc(n);
  for (size_t i = 0; i < (size_t)n * dim; i++) d.x[i] = fill;
  for (uint32_t i = 0; i < n; i++) d.y[i] = (uint8_t)(i % 10);
  return d;
}

static int stamped(const float *x, uint32_t dim) {
  float t[1024];
  memcpy(t, x, dim * sizeof *t);
  fc_backdoor_stamp(t, dim);
  return memcmp(t, x, dim * sizeof *t) == 0;
}

static void test_stamp(void) {
  float x[784];
  for (int i = 0; i < 784; i++) x[i] = 0.5f;
  fc_backdoor_stamp(x, 784);
  int changed = 0;
  for (int r = 0; r < 28; r++)
    for (int c = 0; c < 28; c++) {
      float v = x[r * 28 + c];
      int inside = r >= 23 && r <= 26 && c >= 23 && c <= 26;
      if (!inside) CHECK(v == 0.5f);
      else {
        CHECK(v == (float)((r + c + 1) % 2)); /* a checkerboard of 1 and 0 */
        changed++;
      }
    }
  CHECK_EQ_INT(changed, 16);
  /* Not a square image: the last 16 features. */
  float y[50];
  for (int i = 0; i < 50; i++) y[i] = 0.5f;
  fc_backdoor_stamp(y, 50);
  for (int i = 0; i < 34; i++) CHECK(y[i] == 0.5f);
  for (int i = 34; i < 50; i++) CHECK(y[i] == 0.0f || y[i] == 1.0f);
  float z[3] = {0.5f, 0.5f, 0.5f};
  fc_backdoor_stamp(z, 3); /* fewer than 16: all of them, nothing beyond */
  CHECK(z[0] != 0.5f && z[1] != 0.5f && z[2] != 0.5f);
}

static void test_poison(void) {
  fc_dataset a = make(200, 784, 0.25f), b = make(200, 784, 0.25f), c = make(200, 784, 0.25f);
  CHECK_EQ_INT(fc_backdoor_poison(&a, 0.3, 7), 60);
  CHECK_EQ_INT(fc_backdoor_poison(&b, 0.3, 7), 60);
  CHECK_EQ_INT(fc_backdoor_poison(&c, 0.3, 8), 60);
  CHECK(memcmp(a.x, b.x, 200 * 784 * sizeof(float)) == 0 && memcmp(a.y, b.y, 200) == 0); /* the seed's choice */
  CHECK(memcmp(a.x, c.x, 200 * 784 * sizeof(float)) != 0);                             /* another seed's */
  uint32_t poisoned = 0;
  for (uint32_t i = 0; i < a.n; i++) {
    int s = stamped(a.x + (size_t)i * 784, 784);
    poisoned += s;
    if (s) CHECK_EQ_INT(a.y[i], FC_BACKDOOR_TARGET);
    else
      CHECK_EQ_INT(a.y[i], i % 10); /* the clean ones are untouched */
  }
  CHECK_EQ_INT(poisoned, 60);
  CHECK_EQ_INT(fc_backdoor_poison(&a, 0, 7), 0);
  fc_dataset_free(&a);
  fc_dataset_free(&b);
  fc_dataset_free(&c);
}

static void test_testset(void) {
  fc_dataset src = make(100, 784, 0.25f), t;
  CHECK_EQ_INT(fc_backdoor_testset(&src, &t), FEDC_OK);
  CHECK_EQ_INT(t.n, 90); /* the 10 examples of class 0 are left out */
  CHECK_EQ_INT(t.dim, 784);
  for (uint32_t i = 0; i < t.n; i++) {
    CHECK_EQ_INT(t.y[i], FC_BACKDOOR_TARGET);
    CHECK(stamped(t.x + (size_t)i * 784, 784));
  }
  CHECK(src.x[783 - 28 - 1] == 0.25f); /* the source is not stamped */
  fc_dataset_free(&t);
  for (uint32_t i = 0; i < src.n; i++) src.y[i] = FC_BACKDOOR_TARGET;
  CHECK_EQ_INT(fc_backdoor_testset(&src, &t), FEDC_ERR_INVALID);
  fc_dataset_free(&src);
}

static void test_boost(void) {
  fc_byz_cfg cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.kind = fc_byz_parse("backdoor");
  CHECK_EQ_INT(cfg.kind, FC_BYZ_BACKDOOR);
  float d[3] = {1, -2, 0.5f};
  CHECK_EQ_INT(fc_byz_apply(&cfg, 1, d, 3), FEDC_OK); /* scale 0: plain poisoning, delta as trained */
  CHECK(d[0] == 1 && d[1] == -2 && d[2] == 0.5f);
  cfg.scale = 10; /* model replacement: gamma = n / eta */
  CHECK_EQ_INT(fc_byz_apply(&cfg, 1, d, 3), FEDC_OK);
  CHECK(d[0] == 10 && d[1] == -20 && d[2] == 5);
}

int main(void) {
  test_stamp();
  test_poison();
  test_testset();
  test_boost();
  return CHECK_DONE();
}
