/*
 * test_partition.c - the PRNG (known answers, sampler moments) and the three
 * partition schemes: determinism, disjoint cover, scheme-specific shape
 * (IID balance, shard label count, Dirichlet skew vs alpha, no small parts).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client/partition.h"
#include "common/rng.h"
#include "fedc/error.h"
#include "tests/unit/check.h"

enum { N = 6000, CLASSES = 10 };
static uint8_t labels[N];

static void test_rng(void) {
  fc_rng r;
  fc_rng_seed(&r, 42);
  /* Reference values computed independently from the published algorithms. */
  CHECK(fc_rng_u64(&r) == 0x15780b2e0c2ec716ull);
  CHECK(fc_rng_u64(&r) == 0x6104d9866d113a7eull);
  CHECK(fc_rng_u64(&r) == 0xae17533239e499a1ull);

  double su = 0, sn = 0, sn2 = 0, sg = 0, sg_small = 0;
  float umin = 1, umax = 0;
  int below_ok = 1;
  const int draws = 20000;
  for (int i = 0; i < draws; i++) {
    float u = fc_rng_uniform(&r);
    if (u < umin) umin = u;
    if (u > umax) umax = u;
    su += u;
    double z = fc_rng_normal(&r);
    sn += z;
    sn2 += z * z;
    sg += fc_rng_gamma(&r, 2.5);
    sg_small += fc_rng_gamma(&r, 0.3);
    below_ok &= fc_rng_below(&r, 7) < 7;
  }
  CHECK(umin >= 0.0f && umax < 1.0f);
  CHECK(fabs(su / draws - 0.5) < 0.01);
  CHECK(fabs(sn / draws) < 0.03 && fabs(sn2 / draws - 1.0) < 0.05);
  CHECK(fabs(sg / draws - 2.5) < 0.06);        /* E[Gamma(k,1)] = k */
  CHECK(fabs(sg_small / draws - 0.3) < 0.02);
  CHECK(below_ok);
  CHECK(fc_rng_below(&r, 1) == 0);
}

/* Every index in exactly one part; each part's list ascending. */
static int check_cover(const fc_partition_opts *o, uint32_t *sizes) {
  uint8_t *seen = calloc(N, 1);
  int ok = 1;
  uint64_t total = 0;
  for (uint32_t p = 0; p < o->nparts; p++) {
    uint32_t *idx = NULL, count = 0;
    if (fc_partition(labels, N, CLASSES, o, p, &idx, &count) != 0) {
      ok = 0;
      break;
    }
    for (uint32_t k = 0; k < count; k++) {
      if (idx[k] >= N || seen[idx[k]]++ || (k && idx[k] <= idx[k - 1])) ok = 0;
    }
    total += count;
    if (sizes) sizes[p] = count;
    free(idx);
  }
  ok &= total == N;
  free(seen);
  return ok;
}

static void test_common(int kind) {
  fc_partition_opts o;
  fc_partition_opts_init(&o);
  o.kind = kind;
  o.nparts = 17;
  o.alpha = 0.3;
  o.seed = 7;
  uint32_t *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
  CHECK_EQ_INT(fc_partition_assign(labels, N, CLASSES, &o, a), 0);
  CHECK_EQ_INT(fc_partition_assign(labels, N, CLASSES, &o, b), 0);
  CHECK(memcmp(a, b, N * sizeof *a) == 0);
  o.seed = 8;
  CHECK_EQ_INT(fc_partition_assign(labels, N, CLASSES, &o, b), 0);
  CHECK(memcmp(a, b, N * sizeof *a) != 0);
  uint32_t sizes[17];
  CHECK(check_cover(&o, sizes));
  for (int p = 0; p < 17; p++) CHECK(sizes[p] >= 10);
  free(a);
  free(b);
}

static void test_iid(void) {
  fc_partition_opts o;
  fc_partition_opts_init(&o);
  o.nparts = 7;
  uint32_t sizes[7];
  CHECK(check_cover(&o, sizes));
  for (int p = 0; p < 7; p++) CHECK(sizes[p] == N / 7 || sizes[p] == N / 7 + 1);
}

static void test_shards(void) {
  fc_partition_opts o;
  fc_partition_opts_init(&o);
  o.kind = FC_PART_SHARDS;
  o.nparts = 10;
  o.shards_per_part = 2;
  o.seed = 3;
  uint32_t sizes[10];
  CHECK(check_cover(&o, sizes));
  /* 20 shards of 300 from ~600 per class: a shard spans <= 2 labels. */
  int ok = 1;
  for (uint32_t p = 0; p < 10; p++) {
    uint32_t *idx, count;
    fc_partition(labels, N, CLASSES, &o, p, &idx, &count);
    int present[CLASSES] = {0}, distinct = 0;
    for (uint32_t k = 0; k < count; k++) present[labels[idx[k]]] = 1;
    for (int c = 0; c < CLASSES; c++) distinct += present[c];
    ok &= distinct <= 4 && count == 600;
    free(idx);
  }
  CHECK(ok);
  o.nparts = 3001; /* 6002 shards > 6000 examples */
  uint32_t *idx;
  uint32_t count;
  CHECK_EQ_INT(fc_partition(labels, N, CLASSES, &o, 0, &idx, &count), FEDC_ERR_INVALID);
}

/* Mean over parts of the number of classes holding > 5% of the part. */
static double mean_major_classes(double alpha) {
  fc_partition_opts o;
  fc_partition_opts_init(&o);
  o.kind = FC_PART_DIRICHLET;
  o.nparts = 20;
  o.alpha = alpha;
  o.seed = 11;
  uint32_t *owner = malloc(N * sizeof *owner);
  if (fc_partition_assign(labels, N, CLASSES, &o, owner) != 0) {
    free(owner);
    return -1;
  }
  uint32_t hist[20][CLASSES] = {{0}}, size[20] = {0};
  for (uint32_t i = 0; i < N; i++) {
    hist[owner[i]][labels[i]]++;
    size[owner[i]]++;
  }
  double total = 0;
  for (int p = 0; p < 20; p++)
    for (int c = 0; c < CLASSES; c++) total += hist[p][c] > 0.05 * size[p];
  free(owner);
  return total / 20;
}

static void test_dirichlet(void) {
  double skewed = mean_major_classes(0.1), flat = mean_major_classes(100.0);
  printf("dirichlet: mean classes with >5%% of a part: alpha=0.1 %.2f, alpha=100 %.2f\n", skewed, flat);
  CHECK(skewed > 0 && skewed < flat);
  CHECK(skewed < 4.0 && flat > 9.0);

  /* alpha -> 0 with more parts than classes cannot satisfy the minimum by
   * resampling; the top-up fallback must still give every part >= 10. */
  fc_partition_opts o;
  fc_partition_opts_init(&o);
  o.kind = FC_PART_DIRICHLET;
  o.nparts = 30;
  o.alpha = 0.001;
  /* One assign call (each call resamples 1000 times before the fallback). */
  uint32_t sizes[30] = {0}, *owner = malloc(N * sizeof *owner);
  CHECK_EQ_INT(fc_partition_assign(labels, N, CLASSES, &o, owner), 0);
  int owner_ok = 1, min_ok = 1;
  for (uint32_t i = 0; i < N; i++) {
    owner_ok &= owner[i] < 30;
    if (owner[i] < 30) sizes[owner[i]]++;
  }
  for (int p = 0; p < 30; p++) min_ok &= sizes[p] >= 10;
  CHECK(owner_ok && min_ok);
  free(owner);
}

static void test_errors(void) {
  fc_partition_opts o;
  fc_partition_opts_init(&o);
  uint32_t *idx = NULL, count = 0, owner[N];
  o.nparts = 0;
  CHECK_EQ_INT(fc_partition(labels, N, CLASSES, &o, 0, &idx, &count), FEDC_ERR_INVALID);
  o.nparts = 4;
  CHECK_EQ_INT(fc_partition(labels, N, CLASSES, &o, 4, &idx, &count), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_partition_assign(labels, 3, CLASSES, &o, owner), FEDC_ERR_INVALID);  /* n < nparts */
  CHECK_EQ_INT(fc_partition_assign(labels, N, CLASSES - 5, &o, owner), FEDC_ERR_INVALID); /* label >= classes */
  o.kind = FC_PART_DIRICHLET;
  o.alpha = 0;
  CHECK_EQ_INT(fc_partition_assign(labels, N, CLASSES, &o, owner), FEDC_ERR_INVALID);
  o.kind = 99;
  CHECK_EQ_INT(fc_partition_assign(labels, N, CLASSES, &o, owner), FEDC_ERR_INVALID);
  CHECK(idx == NULL && count == 0);
  CHECK_EQ_INT(fc_partition_kind_parse("dirichlet"), FC_PART_DIRICHLET);
  CHECK_EQ_INT(fc_partition_kind_parse("shards"), FC_PART_SHARDS);
  CHECK_EQ_INT(fc_partition_kind_parse("iid"), FC_PART_IID);
  CHECK_EQ_INT(fc_partition_kind_parse("noniid"), -1);
}

int main(void) {
  fc_rng r;
  fc_rng_seed(&r, 1);
  for (int i = 0; i < N; i++) labels[i] = (uint8_t)fc_rng_below(&r, CLASSES);
  test_rng();
  test_common(FC_PART_IID);
  test_common(FC_PART_DIRICHLET);
  test_common(FC_PART_SHARDS);
  test_iid();
  test_shards();
  test_dirichlet();
  test_errors();
  return CHECK_DONE();
}
