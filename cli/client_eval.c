/*
 * client_eval.c - `fedc client`'s part in federated evaluation: which rows
 * it holds out (a fraction of its partition that training never sees, drawn
 * by its partition seed so a rerun holds out the same rows; or its part of
 * other data, --eval-data, e.g. an IID share of the Fashion-MNIST test set)
 * and the totals the built-in MLP reports on them (the runtime bounds and
 * sends them: client/runtime_eval.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/client_builtin.h"
#include "client/partition.h"
#include "common/rng.h"
#include "fedc/error.h"

/* Federated evaluation on the held-out rows (fedc_trainer.evaluate_stats):
 * the MLP's accuracy and mean cross-entropy give the totals exactly. */
int bt_eval_stats(void *ctx, const fedc_eval_config *cfg, const float *weights, size_t n,
                         fedc_eval_result *out) {
  builtin *b = ctx;
  double acc = 0, loss = 0;
  if (!b->en) {
    snprintf(cfg->error, cfg->error_len, "no held-out examples (--eval-fraction 0 and no --eval-data)");
    return -1;
  }
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  fc_mlp m;
  char why[200];
  for (size_t i = 0; i < cfg->n_tensors; i++)
    if (fc_model_spec_add(&spec, cfg->tensors[i].name, cfg->tensors[i].ndim, cfg->tensors[i].shape) != FEDC_OK)
      return -1;
  if (fc_mlp_from_spec(&spec, &m, why, sizeof why) != FEDC_OK || m.sizes[0] != b->edata->dim ||
      fc_mlp_nparams(&m) != n) {
    snprintf(cfg->error, cfg->error_len, "the model is not an MLP this client's evaluation data fits");
    return -1;
  }
  if (memcmp(&m, &b->mlp, sizeof m) != 0) { /* the coordinator's model: as bt_adapt would */
    b->mlp = m;
    fc_mlp_ws_destroy(b->ws);
    b->ws = NULL;
  }
  if (!b->ws) b->ws = fc_mlp_ws_create(&b->mlp, 32);
  if (!b->ws || fc_mlp_eval(&b->mlp, b->ws, weights, b->edata, b->eidx, b->en, &acc, &loss) != 0) return -1;
  /* Predicted-class counts when asked for and the model has that many
   * outputs (the coordinator's drift check without a reference set). */
  uint32_t k = b->mlp.sizes[b->mlp.nlayers];
  if (cfg->n_classes == k && out->class_counts &&
      fc_mlp_predict_idx(&b->mlp, b->ws, weights, b->edata, b->eidx, b->en, out->class_counts, NULL) != 0)
    return -1;
  out->num_examples = b->en;
  out->correct = (uint64_t)llround(acc * b->en);
  out->loss_sum = loss * b->en;
  return 0;
}

/* The rows federated evaluation runs on (bt_eval_stats). With --eval-data:
 * part epart of an IID split of it into eparts (only those rows are read from
 * an IDX source; the split is the same in every client, by split_seed).
 * Otherwise a held-out fraction of the partition, drawn by holdout_seed (the
 * same rows on every run), which training then never sees.
 * 0, or 1 after a message. */
int bt_eval_split(builtin *b, double fraction, const char *edata, const char *dir, uint32_t eparts, uint32_t epart,
                  uint64_t split_seed, uint64_t holdout_seed) {
  char err[400], images[4096], labels[4096];
  if (edata) {
    int rc = 0, idx_source = 1;
    if (strcmp(edata, "fmnist-test") == 0 || strcmp(edata, "fmnist") == 0) {
      rc = fc_fmnist_paths(dir, strcmp(edata, "fmnist") == 0, images, labels, sizeof images, err, sizeof err);
    } else if (strncmp(edata, "idx:", 4) == 0 && strchr(edata, ',')) {
      snprintf(images, sizeof images, "%s", edata + 4);
      *strchr(images, ',') = 0;
      snprintf(labels, sizeof labels, "%s", strchr(edata, ',') + 1);
    } else if (strncmp(edata, "csv:", 4) == 0) {
      idx_source = 0;
      rc = fc_csv_load(edata + 4, 0, 1.0f / 255.0f, &b->own_edata, err, sizeof err);
    } else {
      fprintf(stderr, "fedc client: --eval-data fmnist-test|fmnist|idx:IMAGES,LABELS|csv:FILE, got '%s'\n", edata);
      return 1;
    }
    uint8_t *y = NULL;
    uint32_t n = 0;
    if (!rc && idx_source) rc = fc_idx_load_labels(labels, &y, &n, err, sizeof err);
    const uint8_t *ys = idx_source ? y : b->own_edata.y;
    if (!idx_source) n = b->own_edata.n;
    uint32_t classes = 0;
    for (uint32_t i = 0; !rc && i < n; i++)
      if (ys[i] >= classes) classes = ys[i] + 1u;
    fc_partition_opts po;
    fc_partition_opts_init(&po);
    po.kind = FC_PART_IID;
    po.nparts = eparts;
    po.seed = split_seed; /* the same for every client: their parts partition the data */
    if (!rc && fc_partition(ys, n, classes, &po, epart, &b->eidx, &b->en) != 0) {
      snprintf(err, sizeof err, "cannot split --eval-data into %u parts", eparts);
      rc = 1;
    }
    free(y);
    if (!rc && idx_source) {
      rc = fc_idx_load_rows(images, labels, b->eidx, b->en, &b->own_edata, err, sizeof err);
      for (uint32_t i = 0; !rc && i < b->en; i++) b->eidx[i] = i;
    }
    if (!rc && b->own_edata.dim != b->data.dim) {
      snprintf(err, sizeof err, "--eval-data has %u features, the training data %u", b->own_edata.dim, b->data.dim);
      rc = 1;
    }
    if (rc) {
      fprintf(stderr, "fedc client: --eval-data: %s\n", err);
      return 1;
    }
    b->edata = &b->own_edata;
    return 0;
  }
  uint32_t m = (uint32_t)(fraction * b->n + 0.5);
  if (fraction > 0 && m == 0) m = 1;
  if (b->n < 2 || !(fraction > 0)) m = 0;
  if (m >= b->n) m = b->n - 1; /* at least one example trains */
  if (!m) return 0;
  fc_rng r;
  fc_rng_seed(&r, holdout_seed * 0x9E3779B97F4A7C15ull + 0x5EED);
  fc_rng_shuffle_u32(&r, b->idx, b->n);
  if (!(b->eidx = malloc(m * sizeof *b->eidx))) return 1;
  memcpy(b->eidx, b->idx + (b->n - m), m * sizeof *b->eidx);
  b->en = m;
  b->n -= m;
  b->edata = &b->data;
  return 0;
}

