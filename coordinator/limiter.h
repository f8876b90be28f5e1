/*
 * limiter.h - per-identity token buckets for calls, by class of call
 * (I/O-free: time comes in as now_ms; thread-safe: one mutex).
 *
 * Each identity in the table has one bucket per class. The table is bounded
 * (max_ids): an identity idle long enough for all its buckets to have
 * refilled is indistinguishable from a new one and is dropped when room is
 * needed, so the bound costs nothing while fewer than max_ids identities are
 * busy at once. Beyond that, identities without an entry share one bucket
 * per class (the budget of a single identity), so a crowd of identities
 * gets no more than one would.
 */
#ifndef FEDC_COORD_LIMITER_H
#define FEDC_COORD_LIMITER_H

#include <stddef.h>
#include <stdint.h>

#define FC_LIMITER_CLASSES 8
#define FC_LIMITER_ID_MAX 80 /* longest identity key, NUL included; longer ones share the overflow bucket */

typedef struct fc_rate {
  double rate;  /* tokens per second; <= 0: no limit */
  double burst; /* tokens at once (>= 1) */
} fc_rate;

typedef struct fc_limiter_cfg {
  fc_rate cls[FC_LIMITER_CLASSES];
  int nclasses;
  uint32_t max_ids; /* identities with buckets of their own */
} fc_limiter_cfg;

typedef struct fc_limiter fc_limiter;

int fc_limiter_create(const fc_limiter_cfg *cfg, fc_limiter **out);
void fc_limiter_destroy(fc_limiter *l);
/* One call of class cls by identity id at now_ms: 1 (allowed, a token taken)
 * or 0 with the wait until the next token in *retry_ms. */
int fc_limiter_take(fc_limiter *l, const char *id, int cls, uint64_t now_ms, uint32_t *retry_ms);

typedef struct fc_limiter_stats {
  uint32_t tracked;        /* identities with buckets of their own now */
  uint64_t refused[FC_LIMITER_CLASSES];
  uint64_t overflow_calls; /* calls taken from the shared bucket (table full) */
} fc_limiter_stats;
void fc_limiter_get_stats(fc_limiter *l, fc_limiter_stats *st);

#endif
