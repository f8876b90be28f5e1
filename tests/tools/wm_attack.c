/*
 * wm_attack.c - the adversary of the watermark measurements (issue 24): it
 * holds a stolen copy of the global model and tries to wash the watermark
 * out while keeping the model useful.
 *
 *   wm_attack finetune IN OUT [--fraction 0.1] [--epochs 5] [--lr 0.05]
 *                             [--batch 32] [--seed 1] [--data-dir DIR]
 *       fine-tune IN on a random fraction of the Fashion-MNIST training set
 *       (IID, chosen by seed: data the thief has), plain SGD, into OUT
 *   wm_attack prune IN OUT [--fraction 0.3]
 *       zero the fraction of smallest-magnitude weights (over all weight
 *       matrices together; biases kept), into OUT
 *
 *   wm_attack eval IN
 *       only measure IN: test accuracy and the backdoor success rate of
 *       `fedc sim --byzantine F:backdoor` (client/byzantine.h's trigger; a
 *       model no attacker touched gives the rate's floor)
 *
 * The attacks print one JSON line: the attack, its settings, and the test accuracy
 * (10,000 images) before and after: an attack that costs the thief the
 * model's use is no attack. `fedc watermark verify OUT --key K --json` then
 * says what is left of the watermark (bench/watermark_sweep.sh runs both).
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/byzantine.h"
#include "client/data.h"
#include "common/mlp.h"
#include "common/rng.h"
#include "common/safetensors.h"
#include "fedc/error.h"

static int load_model(const char *path, fc_model_spec *spec, float **w, fc_mlp *m) {
  char err[400];
  if (fc_safetensors_read(path, spec, w, NULL, (uint64_t)FC_MODEL_MAX_PARAMS * 4, err, sizeof err) != FEDC_OK ||
      fc_mlp_from_spec(spec, m, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "wm_attack: %s: %s\n", path, err);
    return -1;
  }
  return 0;
}

static double test_accuracy(const fc_mlp *m, const float *w, const fc_dataset *test) {
  fc_mlp_ws *ws = fc_mlp_ws_create(m, 500);
  double acc = NAN;
  if (!ws || fc_mlp_eval(m, ws, w, test, NULL, test->n, &acc, NULL) != 0) acc = NAN;
  fc_mlp_ws_destroy(ws);
  return acc;
}

static int by_magnitude(const void *a, const void *b) {
  float x = fabsf(**(float *const *)a), y = fabsf(**(float *const *)b);
  return x < y ? -1 : x > y;
}

/* Zero the `fraction` smallest |w| over the weight matrices. */
static int prune(const fc_model_spec *spec, float *w, double fraction, size_t *zeroed) {
  size_t total = 0, off = 0, k = 0;
  for (uint32_t t = 0; t < spec->n; t++)
    if (strstr(spec->t[t].name, ".weight")) total += fc_tensor_numel(&spec->t[t]);
  float **ptr = malloc((total ? total : 1) * sizeof *ptr);
  if (!ptr) return -1;
  for (uint32_t t = 0; t < spec->n; t++) {
    size_t n = fc_tensor_numel(&spec->t[t]);
    if (strstr(spec->t[t].name, ".weight"))
      for (size_t i = 0; i < n; i++) ptr[k++] = w + off + i;
    off += n;
  }
  qsort(ptr, total, sizeof *ptr, by_magnitude);
  size_t cut = (size_t)llround(fraction * (double)total);
  for (size_t i = 0; i < cut; i++) *ptr[i] = 0;
  free(ptr);
  *zeroed = cut;
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "eval") == 0) {
    fc_model_spec spec;
    float *w = NULL;
    fc_mlp m;
    fc_dataset test = {0}, triggered = {0};
    char err[400];
    int rc = 1;
    if (load_model(argv[2], &spec, &w, &m) == 0 && fc_fmnist_load(NULL, 0, &test, err, sizeof err) == 0 &&
        fc_backdoor_testset(&test, &triggered) == FEDC_OK) {
      printf("{\"model\":\"%s\",\"test_accuracy\":%.4f,\"backdoor\":%.4f}\n", argv[2], test_accuracy(&m, w, &test),
             test_accuracy(&m, w, &triggered));
      rc = 0;
    }
    free(w);
    fc_dataset_free(&test);
    fc_dataset_free(&triggered);
    return rc;
  }
  if (argc < 4 || (strcmp(argv[1], "finetune") && strcmp(argv[1], "prune"))) {
    fprintf(stderr, "usage: wm_attack finetune|prune IN OUT [--fraction F] [--epochs E] [--lr X] [--batch B] "
                    "[--seed S] [--data-dir DIR] | wm_attack eval IN\n");
    return 2;
  }
  int finetune = strcmp(argv[1], "finetune") == 0;
  const char *in = argv[2], *out = argv[3], *dir = NULL;
  double fraction = finetune ? 0.1 : 0.3, lr = 0.05;
  unsigned long epochs = 5, batch = 32, seed = 1;
  static const struct option lo[] = {{"fraction", 1, 0, 'f'}, {"epochs", 1, 0, 'e'}, {"lr", 1, 0, 'l'},
                                     {"batch", 1, 0, 'b'},    {"seed", 1, 0, 's'},   {"data-dir", 1, 0, 'd'},
                                     {0, 0, 0, 0}};
  int c;
  optind = 4;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (c) {
    case 'f': fraction = atof(optarg); break;
    case 'e': epochs = strtoul(optarg, NULL, 10); break;
    case 'l': lr = atof(optarg); break;
    case 'b': batch = strtoul(optarg, NULL, 10); break;
    case 's': seed = strtoul(optarg, NULL, 10); break;
    case 'd': dir = optarg; break;
    default: return 2;
    }
  }
  if (!(fraction > 0 && fraction <= 1) || !epochs || !batch || !(lr > 0)) {
    fprintf(stderr, "wm_attack: fraction in (0, 1], epochs, batch and lr positive\n");
    return 2;
  }
  fc_model_spec spec;
  float *w = NULL;
  fc_mlp m;
  fc_dataset train = {0}, test = {0};
  char err[400];
  int rc = 1;
  uint32_t *idx = NULL;
  if (load_model(in, &spec, &w, &m) != 0) goto out;
  if (fc_fmnist_load(dir, 0, &test, err, sizeof err) != 0) {
    fprintf(stderr, "wm_attack: %s\n", err);
    goto out;
  }
  double before = test_accuracy(&m, w, &test);
  char line[400];
  if (finetune) {
    if (fc_fmnist_load(dir, 1, &train, err, sizeof err) != 0) {
      fprintf(stderr, "wm_attack: %s\n", err);
      goto out;
    }
    uint32_t n = (uint32_t)llround(fraction * train.n);
    if (!(idx = malloc((size_t)train.n * sizeof *idx))) goto out;
    for (uint32_t i = 0; i < train.n; i++) idx[i] = i;
    fc_rng rng;
    fc_rng_seed(&rng, seed);
    fc_rng_shuffle_u32(&rng, idx, train.n); /* the first n: the thief's data */
    fc_train_opts o;
    fc_train_opts_init(&o);
    o.lr = (float)lr;
    o.epochs = (uint32_t)epochs;
    o.batch = (uint32_t)batch;
    o.seed = seed;
    fc_mlp_ws *ws = fc_mlp_ws_create(&m, o.batch);
    int trc = ws ? fc_mlp_train(&m, ws, w, &train, idx, n, &o, NULL) : FEDC_ERR_NOMEM;
    fc_mlp_ws_destroy(ws);
    if (trc != 0) {
      fprintf(stderr, "wm_attack: fine-tuning failed: %s\n", fedc_strerror(trc));
      goto out;
    }
    snprintf(line, sizeof line,
             "{\"attack\":\"finetune\",\"fraction\":%g,\"examples\":%u,\"epochs\":%lu,\"lr\":%g,\"batch\":%lu,"
             "\"seed\":%lu",
             fraction, n, epochs, lr, batch, seed);
  } else {
    size_t zeroed = 0;
    if (prune(&spec, w, fraction, &zeroed) != 0) goto out;
    snprintf(line, sizeof line, "{\"attack\":\"prune\",\"fraction\":%g,\"zeroed\":%zu", fraction, zeroed);
  }
  if (fc_safetensors_write(out, &spec, w, NULL, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "wm_attack: %s\n", err);
    goto out;
  }
  printf("%s,\"in\":\"%s\",\"out\":\"%s\",\"test_accuracy_before\":%.4f,\"test_accuracy_after\":%.4f}\n", line, in,
         out, before, test_accuracy(&m, w, &test));
  rc = 0;
out:
  free(w);
  free(idx);
  fc_dataset_free(&train);
  fc_dataset_free(&test);
  return rc;
}
