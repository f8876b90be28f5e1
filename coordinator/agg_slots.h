/*
 * agg_slots.h - the staging slots both aggregators share (aggregate.h):
 * an upload's chunks land in one slot of `bytes`; only a whole, verified
 * upload is folded into the aggregator's accumulator, so a broken stream
 * leaves no trace, and memory is (slots + 1) x model for any cohort.
 * The pool's mutex also guards the aggregator's accumulator (one lock:
 * folding and releasing the slot are one step).
 */
#ifndef FEDC_AGG_SLOTS_H
#define FEDC_AGG_SLOTS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator/aggregate.h"

struct fc_agg_update {
  void *buf; /* `bytes`, allocated on first use and kept */
  int busy;
  uint32_t bucket; /* secure aggregation: which bucket's sum it joins */
  /* fc_agg_slot_chunk_f32's running check of the floats that arrived in
   * order (reset when the slot is handed out): [0, checked) floats are
   * checked, `next` is the byte offset the next in-order chunk starts at;
   * out_of_order: a chunk came elsewhere, so update_check makes its own pass. */
  uint64_t next;
  size_t checked;
  double sumsq;
  float amax;
  int nonfinite, out_of_order;
  size_t bad_index;
};

typedef struct fc_agg_slots {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  fc_agg_update *slots;
  int nslots;
  size_t bytes;
  int closing;
} fc_agg_slots;

int fc_agg_slots_init(fc_agg_slots *s, int nslots, size_t bytes);
/* A free slot within timeout_ms (0: only if one is free now): FEDC_OK,
 * TIMEOUT, STOPPED (closing) or NOMEM. Takes and releases mu. */
int fc_agg_slots_acquire(fc_agg_slots *s, int timeout_ms, fc_agg_update **out);
/* Give u back; call with mu held. */
void fc_agg_slots_release_locked(fc_agg_slots *s, fc_agg_update *u);
/* Take mu, give u back, let mu go. */
void fc_agg_slots_release(fc_agg_slots *s, fc_agg_update *u);
/* Wake every waiter with STOPPED; no slot is handed out after. */
void fc_agg_slots_close(fc_agg_slots *s);
/* Free the buffers (after init, also a failed one). */
void fc_agg_slots_destroy(fc_agg_slots *s);

/* The update_chunk of all three aggregators (entries of 4 bytes: float32 or
 * u32): the bytes at `offset` of the slot, FEDC_ERR_TOO_LARGE past its end. */
int fc_agg_slot_chunk(fc_agg *a, fc_agg_update *u, uint64_t offset, const void *bytes, size_t len);
/* update_chunk of the float aggregators: the same copy, and in the same
 * pass over the chunk (in cache as it arrived) the check of every float it
 * completes: NaN/Inf, squares, largest magnitude. */
int fc_agg_slot_chunk_f32(fc_agg *a, fc_agg_update *u, uint64_t offset, const void *bytes, size_t len);
/* update_check of a float32 update in its slot: the running check when every
 * chunk came in order through fc_agg_slot_chunk_f32 (no pass over the slot),
 * else fc_agg_check_f32 over the slot. */
int fc_agg_slot_check_f32(fc_agg *a, fc_agg_update *u, fc_agg_check *out);

/* One pass over a float32 update: NaN/Inf (FEDC_ERR_NONFINITE, out->bad_index),
 * else its L2 norm (summed in double) and largest magnitude. */
int fc_agg_check_f32(const float *x, size_t n, fc_agg_check *out);

#endif
