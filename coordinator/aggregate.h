/*
 * aggregate.h - the aggregation interface. An aggregator consumes updates as
 * streams of chunks and produces the round's combined delta. One file per
 * aggregator (aggregate_fedavg.c today; trimmed mean, median, Krum, secure
 * aggregation later) behind this vtable.
 *
 * Life of a round:
 *   round_begin(n)                          once, before any update
 *   for each upload (concurrently, from gRPC handler threads):
 *     u = update_begin()                    may wait for a staging slot
 *     update_chunk(u, byte_offset, bytes)   each chunk as it arrives
 *     update_check(u, &check)               whole update arrived: NaN/Inf, norm, max
 *     update_commit(u, weight) | update_abort(u)
 *   round_finish(out_delta)                 once; no update is in flight
 * An update that was not committed leaves no trace in the result (rejected
 * or broken uploads are never half-applied).
 */
#ifndef FEDC_COORD_AGGREGATE_H
#define FEDC_COORD_AGGREGATE_H

#include <stddef.h>
#include <stdint.h>

#include "common/tensor.h"

typedef struct fc_agg fc_agg;
typedef struct fc_agg_update fc_agg_update;

/* What update_check measures of a whole update. */
typedef struct fc_agg_check {
  double l2;        /* L2 norm, accumulated in double (no overflow for finite floats) */
  double amax;      /* largest |value| */
  size_t bad_index; /* first NaN/Inf (FEDC_ERR_NONFINITE only) */
} fc_agg_check;

/* The largest weight x max|value| one update may bring: the float32
 * accumulator then cannot overflow however large one update is, for rounds
 * of up to a million such updates (1e32 x 1e6 < FLT_MAX = 3.4e38). */
#define FC_AGG_MAX_WEIGHTED_ABS 1e32

/* Staging slots (agg_slots.c) of slot_bytes that fit in budget_bytes: at
 * least 1 (an upload must fit somewhere), at most FC_AGG_SLOTS_MAX. */
#define FC_AGG_SLOTS_MAX 1024
int fc_agg_slots_for_budget(uint64_t budget_bytes, uint64_t slot_bytes);

typedef struct fc_agg_ops {
  const char *name;
  int (*round_begin)(fc_agg *a);
  int (*update_begin)(fc_agg *a, int timeout_ms, fc_agg_update **u);
  int (*update_chunk)(fc_agg *a, fc_agg_update *u, uint64_t offset, const void *bytes, size_t len);
  /* FEDC_ERR_NONFINITE with out->bad_index, or FEDC_OK with out->l2, out->amax. */
  int (*update_check)(fc_agg *a, fc_agg_update *u, fc_agg_check *out);
  int (*update_commit)(fc_agg *a, fc_agg_update *u, double weight);
  void (*update_abort)(fc_agg *a, fc_agg_update *u);
  /* Writes the combined delta (n floats). FEDC_ERR_INVALID if nothing was committed. */
  int (*round_finish)(fc_agg *a, float *delta, uint32_t *count);
  /* Shutting down: update_begin fails with FEDC_ERR_STOPPED from now on and
   * wakes those waiting for a slot. Updates in progress may still finish. */
  void (*close)(fc_agg *a);
  void (*destroy)(fc_agg *a);
} fc_agg_ops;

struct fc_agg {
  const fc_agg_ops *ops;
  size_t n; /* parameters per update */
};

/* Weighted FedAvg (McMahan et al. 2017, Algorithm 1 "server executes"):
 * delta = sum_k w_k * delta_k / sum_k w_k, folded with BLAS saxpy as each
 * update commits. Memory: one accumulator + `slots` staging buffers, however
 * many clients take part. */
int fc_agg_fedavg_create(size_t n, int slots, fc_agg **out);
/* Aggregator tier (issue 23; FedAvg only, FEDC_ERR_INVALID for another
 * aggregator). An aggregator's partial: the undivided running sum
 * sum_k w_k delta_k (n floats copied into sum), sum_k w_k and k. */
int fc_agg_fedavg_partial(fc_agg *a, float *sum, double *weight, uint32_t *count);
/* The leader: commit the partial staged in slot u (a sum of `count` updates
 * of total weight `weight`) with coefficient 1, so round_finish gives
 * sum_k w_k delta_k / sum_k w_k over every update of every partial. */
int fc_agg_fedavg_commit_partial(fc_agg *a, fc_agg_update *u, double weight, uint32_t count);
/* Updates the round's sum may still take (reproducible mode: the 65,536
 * bound less those folded; UINT32_MAX for float sums; 0 if not FedAvg). */
uint32_t fc_agg_fedavg_room(fc_agg *a);
/* The sum of the weights folded since round_begin (0 if not FedAvg). */
double fc_agg_fedavg_weight(fc_agg *a);

/* Reproducible FedAvg (`--reproducible-sum`): each w_k x_k rounded once to
 * the grid 2^-frac_bits and summed in int64, so the result is the same bits
 * for any order of uploads and any split into partials (aggregate_fedavg.c).
 * wide_slots: staging slots of 8 bytes a parameter (a leader taking integer
 * partials from aggregators) instead of 4. */
#define FC_FIXED_MIN_FRAC_BITS 16
#define FC_FIXED_MAX_TERMS 65536u          /* updates one sum may hold (the overflow bound) */
#define FC_FIXED_MAX_PARAMS (1ull << 28)   /* 8 bytes each in one U8 tensor of <= 2^31 */
/* F for a clip norm and weight cap: every |w x_i| x 2^F under 2^45; -1 if
 * there is no clip or F would be below FC_FIXED_MIN_FRAC_BITS. */
int fc_fixed_frac_bits(double clip, uint64_t max_weight);
int fc_agg_fedavg_create_fixed(size_t n, int slots, int frac_bits, int wide_slots, fc_agg **out);
int fc_agg_fedavg_frac_bits(const fc_agg *a); /* 0: float mode (or not FedAvg) */
/* An aggregator's integer partial: 8n bytes (little-endian int64 per parameter). */
int fc_agg_fedavg_partial_fixed(fc_agg *a, uint8_t *out, double *weight, uint32_t *count);
/* The leader's staging of one integer partial (wide slots): chunks, then the
 * L2 norm and max |value| of sum / 2^F for the tier's checks, then
 * fc_agg_fedavg_commit_partial. */
int fc_agg_fedavg_fixed_chunk(fc_agg *a, fc_agg_update *u, uint64_t offset, const void *bytes, size_t len);
int fc_agg_fedavg_fixed_check(fc_agg *a, fc_agg_update *u, fc_agg_check *out);
/* The wire spec of an integer partial: one U8 tensor "fixed_sum" of 8n bytes. */
void fc_fixed_sum_spec(size_t n, fc_model_spec *out);

/* Secure aggregation (aggregate_secagg.c): the u32 sums mod 2^32 of masked
 * inputs of `entries` entries (model parameters + 1 for the weight), one per
 * bucket (one SecAgg instance each; 1 without bucketing). Updates
 * are little-endian u32 payloads; update_check accepts anything (a masked
 * vector is uniform); round_finish is refused: the sum is unmasked with
 * fc_agg_secagg_unmask and decoded with fc_sa_dequantize (secagg/secagg.h). */
#include "secagg/secagg.h"
int fc_agg_secagg_create(size_t entries, uint32_t buckets, int slots, fc_agg **out);
/* After update_begin: the masked input joins this bucket's sum (default 0);
 * FEDC_ERR_INVALID for a bucket out of range. */
int fc_agg_secagg_route(fc_agg *a, fc_agg_update *u, uint32_t bucket);
/* Commit a staged vector that is itself the sum of `count` masked inputs (an
 * aggregator's partial, issue 23): added to its bucket as update_commit adds
 * one, the bucket's count raised by count. The slot goes back. */
int fc_agg_secagg_commit_partial(fc_agg *a, fc_agg_update *u, uint32_t count);

/* Robust aggregators (aggregate_robust.c): every update of the round in one
 * arena of max_updates x n floats, plus `slots` staging buffers of n floats
 * and Krum's k x k distances (fc_robust_arena_bytes counts all three);
 * unweighted. */
enum { FC_AGG_FEDAVG, FC_AGG_MEDIAN, FC_AGG_TRIMMED, FC_AGG_KRUM, FC_AGG_MULTIKRUM, FC_AGG_BULYAN, FC_AGG_CCLIP };
typedef struct fc_robust_cfg {
  int kind;      /* FC_AGG_MEDIAN .. FC_AGG_CCLIP */
  uint32_t f;    /* Byzantine updates tolerated (krum, multikrum, bulyan) */
  double trim;   /* trimmed mean: fraction beta dropped from each end */
  uint32_t m;    /* multikrum: updates averaged (0 = n - f) */
  double tau;    /* centered clipping: radius */
  uint32_t iters; /* centered clipping: iterations */
  int threads;   /* median / trimmed mean / bulyan workers */
} fc_robust_cfg;
const char *fc_robust_name(int kind);
int fc_robust_parse(const char *name); /* -1 if unknown */
/* NULL if k updates satisfy the rule's precondition, else one line in buf. */
const char *fc_robust_check(const fc_robust_cfg *cfg, uint32_t k, char *buf, size_t len);
uint64_t fc_robust_arena_bytes(size_t n, uint32_t max_updates, int slots);
/* max_updates arena rows (the cohort), `slots` staging buffers for uploads in flight. */
int fc_agg_robust_create(size_t n, uint32_t max_updates, int slots, const fc_robust_cfg *cfg, fc_agg **out);
/* Why the last round_finish failed (a precondition, in one line). */
const char *fc_agg_robust_why(fc_agg *a);
/* A bucket's accumulator (entries u32, made zero at its first use: NULL if
 * out of memory or out of range) and how many inputs it holds. */
uint32_t *fc_agg_secagg_sum(fc_agg *a, uint32_t bucket, uint32_t *count);
/* How many inputs bucket holds (no accumulator made). */
uint32_t fc_agg_secagg_count(fc_agg *a, uint32_t bucket);
/* Apply mask terms to a bucket's sum on `threads` worker threads (disjoint ranges). */
int fc_agg_secagg_unmask(fc_agg *a, uint32_t bucket, const fc_prg_ops *prg, const fc_sa_mask_term *terms,
                         size_t nterms, int threads, const volatile int *abort);

#endif
