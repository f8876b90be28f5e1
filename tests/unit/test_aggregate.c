/*
 * test_aggregate.c - the FedAvg aggregator against a plain double-precision
 * reference: weighted mean of committed updates only (aborted and rejected
 * ones leave no trace), chunked arrival at odd offsets, NaN/Inf detection with
 * the index, the norm, slots that block and time out, and a new round that
 * starts from zero.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "coordinator/agg_slots.h"
#include "coordinator/aggregate.h"
#include "fedc/error.h"
#include "secagg/secagg.h"

#define N 10007 /* not a multiple of any chunk or block size */

static void feed(fc_agg *a, fc_agg_update *u, const float *x, size_t chunk) {
  const uint8_t *p = (const uint8_t *)x;
  size_t bytes = N * sizeof(float);
  for (size_t off = 0; off < bytes; off += chunk)
    CHECK_EQ_INT(a->ops->update_chunk(a, u, off, p + off, off + chunk <= bytes ? chunk : bytes - off), FEDC_OK);
}

/* The secure sum's unmasking split over threads covers every entry exactly
 * once, whatever the length and the thread count: the same result as one
 * expansion over the whole vector (the last entry is the weight). */
static void test_secagg_unmask_split(void) {
  const size_t lens[] = {1, 2, 3, 5, 8, 4097, 10001, 10007};
  const int threads[] = {1, 2, 3, 7, 64};
  fc_sa_mask_term terms[3];
  memset(terms, 0, sizeof terms);
  for (int i = 0; i < 3; i++) {
    terms[i].key[0] = (uint8_t)(i + 1);
    terms[i].sign = i == 1 ? -1 : 1;
  }
  for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
    size_t n = lens[li];
    uint32_t *ref = calloc(n, sizeof *ref);
    CHECK_EQ_INT(fc_sa_mask_apply(NULL, ref, 0, n, terms, 3, NULL), FEDC_OK);
    for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ti++) {
      fc_agg *a = NULL;
      CHECK_EQ_INT(fc_agg_secagg_create(n, 1, 1, &a), FEDC_OK);
      CHECK_EQ_INT(fc_agg_secagg_unmask(a, 0, NULL, terms, 3, threads[ti], NULL), FEDC_OK);
      uint32_t cnt = 0;
      const uint32_t *sum = fc_agg_secagg_sum(a, 0, &cnt);
      size_t bad = 0;
      for (size_t i = 0; i < n; i++) bad += sum[i] != ref[i];
      if (bad) fprintf(stderr, "  unmask of %zu entries on %d threads: %zu wrong\n", n, threads[ti], bad);
      CHECK_EQ_INT(bad, 0);
      a->ops->destroy(a);
    }
    free(ref);
  }
}

/* Bucketing: each masked input joins its bucket's sum and no other; unmasking
 * one bucket leaves the others as they were; a new round clears them all;
 * an out-of-range bucket is refused. */
static void test_secagg_buckets(void) {
  enum { E = 1001, B = 3 };
  fc_agg *a = NULL;
  CHECK_EQ_INT(fc_agg_secagg_create(E, 0, 1, &a), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_agg_secagg_create(E, B, 2, &a), FEDC_OK);
  static uint32_t in[7][E], want[B][E];
  const uint32_t route[7] = {0, 2, 2, 1, 0, 2, 7 /* out of range: refused, stays in bucket 0 */};
  memset(want, 0, sizeof want);
  for (int round = 0; round < 2; round++) {
    CHECK_EQ_INT(a->ops->round_begin(a), FEDC_OK);
    memset(want, 0, sizeof want);
    uint32_t cnt[B] = {0};
    for (int k = 0; k < 7; k++) {
      for (int i = 0; i < E; i++) in[k][i] = (uint32_t)(0x9E3779B9u * (uint32_t)(k + 1) * (uint32_t)(i + 1 + round));
      fc_agg_update *u = NULL;
      CHECK_EQ_INT(a->ops->update_begin(a, 1000, &u), FEDC_OK);
      CHECK_EQ_INT(fc_agg_secagg_route(a, u, route[k]), route[k] < B ? FEDC_OK : FEDC_ERR_INVALID);
      CHECK_EQ_INT(a->ops->update_chunk(a, u, 0, in[k], sizeof in[k]), FEDC_OK);
      uint32_t b = route[k] < B ? route[k] : 0;
      if (k == 5) { /* a broken stream: never in any sum */
        a->ops->update_abort(a, u);
        continue;
      }
      CHECK_EQ_INT(a->ops->update_commit(a, u, 1.0), FEDC_OK);
      for (int i = 0; i < E; i++) want[b][i] += in[k][i];
      cnt[b]++;
    }
    for (uint32_t b = 0; b < B; b++) {
      uint32_t c = 99;
      const uint32_t *sum = fc_agg_secagg_sum(a, b, &c);
      CHECK(sum != NULL);
      CHECK_EQ_INT(c, cnt[b]);
      CHECK(memcmp(sum, want[b], sizeof want[b]) == 0);
    }
    CHECK(fc_agg_secagg_sum(a, B, NULL) == NULL);
    /* Unmask bucket 1 with one term: bucket 1 changes by the mask, 0 and 2 not at all. */
    fc_sa_mask_term t;
    memset(&t, 0, sizeof t);
    t.key[0] = 7;
    t.sign = 1;
    static uint32_t mask[E];
    memset(mask, 0, sizeof mask);
    CHECK_EQ_INT(fc_sa_mask_apply(NULL, mask, 0, E, &t, 1, NULL), FEDC_OK);
    CHECK_EQ_INT(fc_agg_secagg_unmask(a, 1, NULL, &t, 1, 2, NULL), FEDC_OK);
    CHECK_EQ_INT(fc_agg_secagg_unmask(a, B, NULL, &t, 1, 2, NULL), FEDC_ERR_INVALID);
    const uint32_t *s1 = fc_agg_secagg_sum(a, 1, NULL);
    size_t bad = 0;
    for (int i = 0; i < E; i++) bad += s1[i] != want[1][i] + mask[i];
    CHECK_EQ_INT(bad, 0);
    CHECK(memcmp(fc_agg_secagg_sum(a, 0, NULL), want[0], sizeof want[0]) == 0);
    CHECK(memcmp(fc_agg_secagg_sum(a, 2, NULL), want[2], sizeof want[2]) == 0);
  }
  a->ops->destroy(a);
}

/* Staging slots from a memory budget: budget / model, at least 1, at most 1024. */
static void test_slots_for_budget(void) {
  CHECK_EQ_INT(fc_agg_slots_for_budget(512ull << 20, 4044040), 132); /* 1.01M parameters */
  CHECK_EQ_INT(fc_agg_slots_for_budget(1ull << 20, 31400), 33);
  CHECK_EQ_INT(fc_agg_slots_for_budget(512ull << 20, 400ull << 20), 1);  /* larger than the budget: still 1 */
  CHECK_EQ_INT(fc_agg_slots_for_budget(512ull << 20, 1ull << 30), 1);
  CHECK_EQ_INT(fc_agg_slots_for_budget(1ull << 40, 4), FC_AGG_SLOTS_MAX);
  CHECK_EQ_INT(fc_agg_slots_for_budget(1ull << 20, 0), FC_AGG_SLOTS_MAX);
  CHECK_EQ_INT(fc_agg_slots_for_budget(0, 4), 1);
}

/* The check fused into the chunk copy (agg_slots.c, on each ISA path) gives
 * what one pass over the whole update gives (fc_agg_check_f32, the plain
 * reference), however the chunks cut the floats, for chunks out of order
 * (then update_check makes its own pass), and finds the first NaN/Inf at its
 * index, also in a float two chunks share. */
static void fused_case(fc_agg *a, const float *x, const size_t *cuts, size_t ncuts, int reverse) {
  fc_agg_update *u = NULL;
  CHECK_EQ_INT(a->ops->update_begin(a, 1000, &u), FEDC_OK);
  const uint8_t *p = (const uint8_t *)x;
  size_t bytes = N * sizeof(float);
  for (size_t c = 0; c < ncuts; c++) {
    size_t k = reverse ? ncuts - 1 - c : c;
    size_t lo = cuts[k], hi = k + 1 < ncuts ? cuts[k + 1] : bytes;
    CHECK_EQ_INT(a->ops->update_chunk(a, u, lo, p + lo, hi - lo), FEDC_OK);
  }
  fc_agg_check got, want;
  memset(&got, 0, sizeof got);
  memset(&want, 0, sizeof want);
  int rg = a->ops->update_check(a, u, &got), rw = fc_agg_check_f32(x, N, &want);
  CHECK_EQ_INT(rg, rw);
  CHECK(memcmp(u->buf, x, bytes) == 0);
  if (rw == FEDC_OK) {
    CHECK(fabs(got.l2 - want.l2) <= 1e-12 * want.l2);
    CHECK(got.amax == want.amax);
  } else {
    CHECK_EQ_INT(got.bad_index, want.bad_index);
  }
  a->ops->update_abort(a, u);
}

static void test_fused_check(void) {
  static const char *const isas[] = {"base", "avx2", NULL};
  fc_agg *a = NULL;
  CHECK_EQ_INT(fc_agg_fedavg_create(N, 1, &a), FEDC_OK);
  static float x[N];
  for (int i = 0; i < N; i++) x[i] = (float)cos(0.37 * i) * (float)(1 + i % 13) * 1e3f;
  size_t bytes = N * sizeof(float);
  for (size_t ii = 0; ii < 3; ii++) {
    if (isas[ii]) setenv("FEDC_KERNEL_ISA", isas[ii], 1);
    else unsetenv("FEDC_KERNEL_ISA");
    const size_t steps[] = {bytes, 65536, 4099, 4, 3, 1};
    for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
      size_t cuts[40100], nc = 0;
      for (size_t off = 0; off < bytes && nc < 40100; off += steps[s]) cuts[nc++] = off;
      if (nc == 40100) continue;
      fused_case(a, x, cuts, nc, 0);
      if (steps[s] == 4099) fused_case(a, x, cuts, nc, 1); /* out of order */
      /* A NaN in float 1024, which the 4099-byte cut splits (bytes 4096..4099),
       * and an Inf later: the NaN's index is reported. */
      float keep = x[1024], keep2 = x[9000];
      x[1024] = NAN;
      x[9000] = INFINITY;
      fused_case(a, x, cuts, nc, 0);
      x[1024] = keep;
      fused_case(a, x, cuts, nc, 0); /* now the Inf at 9000 */
      x[9000] = keep2;
    }
  }
  unsetenv("FEDC_KERNEL_ISA");
  a->ops->destroy(a);
}

int main(void) {
  test_fused_check();
  test_slots_for_budget();
  test_secagg_unmask_split();
  test_secagg_buckets();
  fc_agg *a = NULL;
  CHECK_EQ_INT(fc_agg_fedavg_create(N, 2, &a), FEDC_OK);
  static float upd[5][N];
  double weights[5] = {3, 1, 7, 2, 5};
  for (int k = 0; k < 5; k++)
    for (int i = 0; i < N; i++) upd[k][i] = (float)sin(0.001 * i * (k + 1)) * (k + 1);

  for (int round = 0; round < 2; round++) {
    CHECK_EQ_INT(a->ops->round_begin(a), FEDC_OK);
    for (int k = 0; k < 5; k++) {
      fc_agg_update *u = NULL;
      CHECK_EQ_INT(a->ops->update_begin(a, 1000, &u), FEDC_OK);
      feed(a, u, upd[k], k == 0 ? 4099 : 65536); /* 4099: chunks split floats */
      double ref = 0, refmax = 0;
      fc_agg_check chk;
      CHECK_EQ_INT(a->ops->update_check(a, u, &chk), FEDC_OK);
      for (int i = 0; i < N; i++) {
        ref += (double)upd[k][i] * upd[k][i];
        if (fabs(upd[k][i]) > refmax) refmax = fabs(upd[k][i]);
      }
      CHECK(fabs(chk.l2 - sqrt(ref)) < 1e-5 * sqrt(ref));
      CHECK(chk.amax == refmax);
      if (k == 3) a->ops->update_abort(a, u); /* e.g. norm too large: never applied */
      else
        CHECK_EQ_INT(a->ops->update_commit(a, u, weights[k]), FEDC_OK);
    }
    /* A poisoned update is caught with its index and leaves no trace. */
    fc_agg_update *u = NULL;
    CHECK_EQ_INT(a->ops->update_begin(a, 1000, &u), FEDC_OK);
    static float bad[N];
    memcpy(bad, upd[0], sizeof bad);
    bad[5000] = NAN;
    feed(a, u, bad, 65536);
    fc_agg_check chk;
    CHECK_EQ_INT(a->ops->update_check(a, u, &chk), FEDC_ERR_NONFINITE);
    CHECK_EQ_INT(chk.bad_index, 5000);
    bad[5000] = 0;
    bad[N - 1] = -INFINITY;
    feed(a, u, bad, 65536);
    CHECK_EQ_INT(a->ops->update_check(a, u, &chk), FEDC_ERR_NONFINITE);
    CHECK_EQ_INT(chk.bad_index, N - 1);
    /* The largest finite floats: the norm is still finite and exact (a float
     * sum of squares overflowed to inf), and the magnitude is reported. */
    for (int i = 0; i < N; i++) bad[i] = i % 2 ? 3e38f : -3e38f;
    feed(a, u, bad, 65536);
    CHECK_EQ_INT(a->ops->update_check(a, u, &chk), FEDC_OK);
    CHECK(isfinite(chk.l2));
    CHECK(fabs(chk.l2 - sqrt((double)N) * (double)3e38f) < 1e-6 * chk.l2);
    CHECK(chk.amax == (double)3e38f);
    a->ops->update_abort(a, u);

    static float out[N];
    uint32_t count = 0;
    CHECK_EQ_INT(a->ops->round_finish(a, out, &count), FEDC_OK);
    CHECK_EQ_INT(count, 4);
    double wsum = weights[0] + weights[1] + weights[2] + weights[4];
    double maxerr = 0;
    for (int i = 0; i < N; i++) {
      double ref = (weights[0] * upd[0][i] + weights[1] * upd[1][i] + weights[2] * upd[2][i] +
                    weights[4] * upd[4][i]) / wsum;
      double e = fabs(out[i] - ref);
      if (e > maxerr) maxerr = e;
    }
    CHECK(maxerr < 1e-5);
  }

  /* Slots: both taken -> the third waits, then times out. */
  fc_agg_update *u1, *u2, *u3;
  CHECK_EQ_INT(a->ops->update_begin(a, 100, &u1), FEDC_OK);
  CHECK_EQ_INT(a->ops->update_begin(a, 100, &u2), FEDC_OK);
  CHECK_EQ_INT(a->ops->update_begin(a, 50, &u3), FEDC_ERR_TIMEOUT);
  a->ops->update_abort(a, u1);
  CHECK_EQ_INT(a->ops->update_begin(a, 50, &u3), FEDC_OK);
  a->ops->update_abort(a, u2);
  a->ops->update_abort(a, u3);
  /* Out-of-range chunk refused. */
  CHECK_EQ_INT(a->ops->update_begin(a, 50, &u1), FEDC_OK);
  uint8_t b[8] = {0};
  CHECK_EQ_INT(a->ops->update_chunk(a, u1, N * sizeof(float) - 4, b, 8), FEDC_ERR_TOO_LARGE);
  a->ops->update_abort(a, u1);
  /* Closing (shutdown): a waiter for a slot gives up at once. */
  CHECK_EQ_INT(a->ops->update_begin(a, 50, &u1), FEDC_OK);
  CHECK_EQ_INT(a->ops->update_begin(a, 50, &u2), FEDC_OK);
  a->ops->close(a);
  CHECK_EQ_INT(a->ops->update_begin(a, 5000, &u3), FEDC_ERR_STOPPED);
  a->ops->update_abort(a, u1);
  a->ops->update_abort(a, u2);
  CHECK_EQ_INT(a->ops->update_begin(a, 50, &u3), FEDC_ERR_STOPPED);
  /* Nothing committed: finishing is an error, not a zero model. */
  a->ops->round_begin(a);
  static float out2[N];
  uint32_t count = 0;
  CHECK_EQ_INT(a->ops->round_finish(a, out2, &count), FEDC_ERR_INVALID);
  a->ops->destroy(a);
  CHECK_EQ_INT(fc_agg_fedavg_create(0, 1, &a), FEDC_ERR_INVALID);
  return CHECK_DONE();
}
