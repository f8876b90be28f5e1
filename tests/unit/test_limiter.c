/*
 * test_limiter.c - per-identity call buckets (coordinator/limiter.c) with
 * synthetic time: bursts and refill per class, identities independent, the
 * bounded table (stale entries make room; past the bound identities share
 * one identity's budget, so a crowd gets no more than one), no-limit
 * classes, and identities too long for the table.
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "coordinator/limiter.h"
#include "fedc/error.h"

static int take(fc_limiter *l, const char *id, int cls, uint64_t now) {
  uint32_t retry = 0;
  return fc_limiter_take(l, id, cls, now, &retry);
}

/* Calls allowed for id in class cls at `now` out of `tries`. */
static int allowed(fc_limiter *l, const char *id, int cls, uint64_t now, int tries) {
  int n = 0;
  for (int i = 0; i < tries; i++) n += take(l, id, cls, now);
  return n;
}

int main(void) {
  fc_limiter_cfg cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.nclasses = 3;
  cfg.cls[0] = (fc_rate){20, 40}; /* polls */
  cfg.cls[1] = (fc_rate){2, 10};  /* calls */
  cfg.cls[2] = (fc_rate){0, 1};   /* no limit */
  cfg.max_ids = 4;
  fc_limiter *l = NULL;
  CHECK_EQ_INT(fc_limiter_create(&cfg, &l), FEDC_OK);

  /* A burst, then the rate; the classes of one identity are separate. */
  CHECK_EQ_INT(allowed(l, "client/a", 0, 1000, 1000), 40);
  CHECK_EQ_INT(allowed(l, "client/a", 1, 1000, 1000), 10);
  uint32_t retry = 0;
  CHECK_EQ_INT(fc_limiter_take(l, "client/a", 0, 1000, &retry), 0);
  CHECK_EQ_INT(retry, 50);
  CHECK_EQ_INT(fc_limiter_take(l, "client/a", 1, 1000, &retry), 0);
  CHECK_EQ_INT(retry, 500);
  CHECK_EQ_INT(allowed(l, "client/a", 0, 2000, 1000), 20); /* one second: 20 more */
  CHECK_EQ_INT(allowed(l, "client/a", 1, 2000, 1000), 2);
  CHECK_EQ_INT(allowed(l, "client/a", 2, 2000, 1000), 1000);
  /* Another identity has its own buckets. */
  CHECK_EQ_INT(allowed(l, "client/b", 0, 2000, 1000), 40);
  /* The same name in another role is another identity. */
  CHECK_EQ_INT(allowed(l, "admin/a", 1, 2000, 1000), 10);
  fc_limiter_stats st;
  fc_limiter_get_stats(l, &st);
  CHECK_EQ_INT(st.tracked, 3);
  CHECK_EQ_INT(st.refused[0], 1000 - 40 + 1 + 1000 - 20 + 1000 - 40);
  CHECK_EQ_INT(st.overflow_calls, 0);

  /* The table holds 4: a fourth fits, a fifth and sixth share one bucket
   * while the others are busy... */
  CHECK_EQ_INT(allowed(l, "client/c", 1, 2000, 1), 1);
  int crowd = 0;
  for (int i = 0; i < 50; i++) {
    char id[32];
    snprintf(id, sizeof id, "client/x%d", i);
    crowd += allowed(l, id, 1, 2000, 100);
  }
  CHECK_EQ_INT(crowd, 10); /* one identity's burst for all fifty */
  fc_limiter_get_stats(l, &st);
  CHECK_EQ_INT(st.tracked, 4);
  CHECK(st.overflow_calls >= 5000);
  /* ...and once an entry has refilled (idle 2 s for the polls' 40 at 20/s,
   * 5 s for the calls' 10 at 2/s) it makes room: a newcomer has a bucket of
   * its own again, and the known ones keep theirs. */
  CHECK_EQ_INT(allowed(l, "client/a", 1, 6000, 1), 1); /* a stays busy */
  CHECK_EQ_INT(allowed(l, "client/new", 1, 7500, 100), 10);
  fc_limiter_get_stats(l, &st);
  CHECK_EQ_INT(st.tracked, 2); /* a and new; b, admin/a and c had refilled */
  CHECK_EQ_INT(allowed(l, "client/a", 1, 7500, 100), 10); /* 7 left at 6000, + 1.5 s x 2/s = 10 */

  /* An identity too long for the table shares the overflow bucket. */
  char longid[200];
  memset(longid, 'z', sizeof longid - 1);
  longid[sizeof longid - 1] = 0;
  CHECK_EQ_INT(allowed(l, longid, 1, 100000, 100), 10);
  fc_limiter_get_stats(l, &st);
  CHECK_EQ_INT(st.tracked, 2);
  fc_limiter_destroy(l);
  fc_limiter_destroy(NULL);

  /* Bad configurations. */
  cfg.nclasses = 0;
  CHECK_EQ_INT(fc_limiter_create(&cfg, &l), FEDC_ERR_INVALID);
  cfg.nclasses = 1;
  cfg.max_ids = 0;
  CHECK_EQ_INT(fc_limiter_create(&cfg, &l), FEDC_ERR_INVALID);
  return CHECK_DONE();
}
