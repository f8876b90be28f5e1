/*
 * client_builtin.h - `fedc client`'s built-in trainer state, shared by
 * cmd_client.c (options, data, training) and client_eval.c (its held-out
 * data and federated evaluation). Internal to the CLI.
 */
#ifndef FEDC_CLI_CLIENT_BUILTIN_H
#define FEDC_CLI_CLIENT_BUILTIN_H

#include <stdint.h>

#include "client/data.h"
#include "common/mlp.h"
#include "fedc/client.h"

typedef struct builtin {
  fc_mlp mlp;
  fc_mlp_ws *ws;
  fc_dataset data;
  uint32_t *idx;
  uint32_t n;
  /* Federated evaluation: rows eidx[0..en) of *edata (data itself for a
   * held-out split of the partition, or own_edata for --eval-data). */
  const fc_dataset *edata;
  fc_dataset own_edata;
  uint32_t *eidx;
  uint32_t en;
  int json;
  int model_given; /* --model was on the command line */
  uint32_t delay_ms; /* --train-delay-ms: each training task takes this much longer */
  const char *hold;  /* --train-hold: training finishes only once this file exists */
  const char *fail_if; /* --train-fail-if: training fails while this file exists */
  const char *name;
  char waiting_why[256]; /* the last "not eligible: ..." printed ("" = none) */
} builtin;

/* fedc_trainer.evaluate_stats of the built-in trainer. */
int bt_eval_stats(void *ctx, const fedc_eval_config *cfg, const float *weights, size_t n, fedc_eval_result *out);
/* Its held-out rows: part epart of an IID split of --eval-data into eparts
 * (split_seed: the same for every client, so the parts partition the data),
 * or a held-out fraction of the partition drawn by holdout_seed (its own).
 * 0, or 1 after a message. */
int bt_eval_split(builtin *b, double fraction, const char *edata, const char *dir, uint32_t eparts, uint32_t epart,
                  uint64_t split_seed, uint64_t holdout_seed);

#endif
