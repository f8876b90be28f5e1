/*
 * partition.h - split a labelled dataset among simulated clients.
 *
 * Three schemes, all deterministic given the seed, all assigning every
 * example to exactly one part:
 *  - FC_PART_IID: uniform shuffle, near-equal parts (sizes differ by <= 1).
 *  - FC_PART_DIRICHLET: label skew (Hsu et al. 2019), with the per-class
 *    balancing and minimum-size resampling of the NIID-Bench / FedLab code
 *    (Li et al. 2021); small alpha = few classes per part.
 *  - FC_PART_SHARDS: sort by label, cut into nparts * shards_per_part equal
 *    shards, deal shards_per_part random shards to each part
 *    (McMahan et al. 2017, "pathological non-IID").
 */
#ifndef FEDC_CLIENT_PARTITION_H
#define FEDC_CLIENT_PARTITION_H

#include <stdint.h>

enum fc_partition_kind { FC_PART_IID = 0, FC_PART_DIRICHLET = 1, FC_PART_SHARDS = 2 };

typedef struct fc_partition_opts {
  int kind;                 /* enum fc_partition_kind */
  uint32_t nparts;          /* >= 1 */
  double alpha;             /* Dirichlet concentration, > 0 */
  uint32_t shards_per_part; /* shards scheme; 0 means 2 */
  int balance;              /* Dirichlet: NIID-Bench's cap (parts at n/nparts take no more); 0 = off */
  uint64_t seed;
} fc_partition_opts;

/* Defaults: IID, 1 part, alpha 0.5, 2 shards per part, seed 0. */
void fc_partition_opts_init(fc_partition_opts *o);
/* Parse "iid" | "dirichlet" | "shards" into *kind; -1 if unknown. */
int fc_partition_kind_parse(const char *s);

/* Minimum part size the Dirichlet scheme resamples for (capped at n/nparts). */
#define FC_PART_DIRICHLET_MIN 10
#define FC_PART_DIRICHLET_TRIES 1000

/* The part of every example: owner[i] in [0, nparts) for i < n. labels[i]
 * must be < classes. Errors: FEDC_ERR_INVALID (bad options, a label out of
 * range, fewer examples than parts or shards), FEDC_ERR_NOMEM. */
int fc_partition_assign(const uint8_t *labels, uint32_t n, uint32_t classes, const fc_partition_opts *o,
                        uint32_t *owner);

/* The indices of part `part`, ascending, in a new malloc'd array the caller
 * frees (*idx_out; NULL when *count_out is 0). Computes the whole partition,
 * O(n) time: call fc_partition_assign once when you need every part. */
int fc_partition(const uint8_t *labels, uint32_t n, uint32_t classes, const fc_partition_opts *o, uint32_t part,
                 uint32_t **idx_out, uint32_t *count_out);

#endif
