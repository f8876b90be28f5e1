/*
 * test_http_guard.c - the metrics listener's connection table, with synthetic
 * connections and time: the per-address rule closes that address's oldest,
 * the total rule the oldest of the address holding the most, the deadline
 * every connection however recently it sent (the table does not hear of
 * traffic at all), and a probe arriving into a full table always gets in.
 */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "coordinator/http_guard.h"
#include "fedc/error.h"

static const uint8_t A[4] = {10, 0, 0, 1}, B[4] = {10, 0, 0, 2}, C[4] = {10, 0, 0, 3}, PROBE[4] = {10, 0, 0, 9};

/* Connection keys: addresses of this array's elements. */
static char conns[256];
#define K(i) ((const void *)&conns[i])

int main(void) {
  fc_http_guard_cfg cfg = {4, 2, 1000};
  fc_http_guard *g = NULL;
  const void *v[2];
  CHECK_EQ_INT(fc_http_guard_create(&cfg, &g), FEDC_OK);
  fc_http_guard_cfg bad = {0, 2, 1000};
  fc_http_guard *g2 = NULL;
  CHECK_EQ_INT(fc_http_guard_create(&bad, &g2), FEDC_ERR_INVALID);

  /* Per address: the third from A closes A's first. */
  CHECK_EQ_INT(fc_http_guard_open(g, K(0), A, 4, 0, v), 0);
  CHECK_EQ_INT(fc_http_guard_open(g, K(1), A, 4, 0, v), 0);
  CHECK_EQ_INT(fc_http_guard_open(g, K(2), A, 4, 0, v), 1);
  CHECK(v[0] == K(0));
  CHECK_EQ_INT(fc_http_guard_open_count(g), 2);
  CHECK_EQ_INT(fc_http_guard_closed_by(g, FC_HG_PER_ADDRESS), 1);
  fc_http_guard_closed(g, K(0)); /* the listener closed it */
  CHECK_EQ_INT(fc_http_guard_open_count(g), 2);

  /* Total (4): B fills it; C's first closes the oldest of A (A and B hold two
   * each; A's oldest, K(1), is older than B's). */
  CHECK_EQ_INT(fc_http_guard_open(g, K(3), B, 4, 10, v), 0);
  CHECK_EQ_INT(fc_http_guard_open(g, K(4), B, 4, 10, v), 0);
  CHECK_EQ_INT(fc_http_guard_open(g, K(5), C, 4, 20, v), 1);
  CHECK(v[0] == K(1));
  CHECK_EQ_INT(fc_http_guard_closed_by(g, FC_HG_FULL), 1);
  /* The next closes B's oldest: B now holds the most. */
  CHECK_EQ_INT(fc_http_guard_open(g, K(6), C, 4, 30, v), 1);
  CHECK(v[0] == K(3));
  CHECK_EQ_INT(fc_http_guard_open_count(g), 4);

  /* A probe into the full table gets in (somebody else goes), and again. */
  for (int i = 0; i < 3; i++) {
    fc_http_guard_open(g, K(110 + i), C, 4, 35, v); /* the flood refills the table */
    CHECK_EQ_INT(fc_http_guard_open_count(g), 4);
    CHECK_EQ_INT(fc_http_guard_open(g, K(100 + i), PROBE, 4, 40, v), 1);
    CHECK(v[0] != K(100 + i));
    fc_http_guard_closed(g, K(100 + i)); /* answered and closed */
  }

  /* Deadline (1000 ms from each one's open): nothing yet at 999 for those
   * opened at 0..40; at 1020 the ones opened by 20 go, each reported once. */
  const void *out[8];
  size_t n = fc_http_guard_expired(g, 999, out, 8);
  CHECK_EQ_INT(n, 0);
  uint32_t before = fc_http_guard_open_count(g);
  n = fc_http_guard_expired(g, 1020, out, 8);
  CHECK(n >= 1);
  for (size_t i = 0; i < n; i++) CHECK(out[i] != K(100));
  CHECK_EQ_INT(fc_http_guard_open_count(g), before - n);
  CHECK_EQ_INT(fc_http_guard_expired(g, 1020, out, 8), 0);
  n += fc_http_guard_expired(g, 5000, out, 8);
  CHECK_EQ_INT(fc_http_guard_open_count(g), 0);
  CHECK_EQ_INT(fc_http_guard_closed_by(g, FC_HG_DEADLINE), n);

  /* Keys told to close stay until closed(): a table of only those turns a
   * new connection away (it is its own victim), and frees up with closes. */
  fc_http_guard_destroy(g);
  fc_http_guard_cfg one = {1, 1, 1000};
  CHECK_EQ_INT(fc_http_guard_create(&one, &g), FEDC_OK);
  int k = 0, self = 0;
  for (; k < 40 && !self; k++) {
    uint8_t addr[4] = {10, 1, 0, (uint8_t)k};
    size_t m = fc_http_guard_open(g, K(k), addr, 4, 0, v);
    self = m == 1 && v[0] == K(k);
  }
  CHECK(self);
  CHECK_EQ_INT(k, 2 * 1 + 16 + 1); /* cap = 2 x max + 16 entries */
  for (int i = 0; i < k - 1; i++) fc_http_guard_closed(g, K(i));
  CHECK_EQ_INT(fc_http_guard_open(g, K(200), A, 4, 0, v), 0);
  CHECK_EQ_INT(fc_http_guard_open_count(g), 1);
  fc_http_guard_closed(g, K(12345 % 256)); /* unknown key: ignored */
  fc_http_guard_destroy(g);
  fc_http_guard_destroy(NULL);
  return CHECK_DONE();
}
