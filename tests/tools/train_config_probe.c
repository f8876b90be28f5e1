/*
 * train_config_probe.c - a C trainer on the public API (fedc/client.h only)
 * that reports what the runtime hands it, for tests/integration/test_fedprox.sh.
 *
 *   train_config_probe COORDINATOR CA CERT KEY ROUNDS
 *
 * Per train call, one JSON line: the task's config as read through this
 * header (round, learning rate, FedProx mu, struct_size, whether
 * FEDC_TRAIN_CONFIG_HAS(cfg, prox_mu)), the same config read through the
 * ABI level 1 layout (struct fedc_train_config as it was before struct_size
 * and prox_mu were appended: what a trainer built against the older header
 * sees), and whether fedc_client_model_tensors() in evaluate listed the same
 * tensors as cfg->tensors. The update is the weights unchanged (a zero
 * delta). Exit 0 after ROUNDS accepted updates.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/client.h"

/* fedc_train_config at ABI level 1, copied from the header of that time. */
typedef struct train_config_v1 {
  uint64_t round;
  uint64_t model_version;
  float learning_rate;
  uint32_t local_epochs;
  uint32_t batch_size;
  float momentum;
  uint64_t seed;
  float clip_norm;
  size_t n_tensors;
  const fedc_tensor_info *tensors;
} train_config_v1;

typedef struct probe {
  fedc_client *c;
  char eval_names[512]; /* tensors listed by fedc_client_model_tensors during evaluate */
} probe;

static void names_of(const fedc_tensor_info *t, size_t n, char *out, size_t len) {
  out[0] = 0;
  for (size_t i = 0; i < n; i++) {
    size_t used = strlen(out);
    snprintf(out + used, len - used, "%s%s[%zu@%zu]", i ? "," : "", t[i].name, t[i].numel, t[i].offset);
  }
}

static int probe_eval(void *ctx, const float *weights, size_t n, double *acc, double *loss) {
  probe *p = ctx;
  size_t count = 0;
  const fedc_tensor_info *t = fedc_client_model_tensors(p->c, &count);
  names_of(t, count, p->eval_names, sizeof p->eval_names);
  (void)weights;
  (void)n;
  *acc = 0;
  *loss = 0;
  return 0;
}

static int probe_train(void *ctx, const fedc_train_config *cfg, const float *weights, float *out, size_t n,
                       int *output_kind, uint64_t *num_examples, double *loss) {
  probe *p = ctx;
  const train_config_v1 *old = (const train_config_v1 *)cfg;
  char names[512];
  names_of(cfg->tensors, cfg->n_tensors, names, sizeof names);
  int has = FEDC_TRAIN_CONFIG_HAS(cfg, prox_mu);
  printf("{\"round\":%llu,\"lr\":%g,\"struct_size\":%zu,\"header_size\":%zu,\"has_prox_mu\":%d,\"prox_mu\":%g,"
         "\"v1_round\":%llu,\"v1_lr\":%g,\"v1_epochs\":%u,\"v1_same_tensors\":%d,\"tensors\":\"%s\","
         "\"eval_tensors_match\":%d}\n",
         (unsigned long long)cfg->round, (double)cfg->learning_rate, cfg->struct_size, sizeof *cfg, has,
         has ? (double)cfg->prox_mu : -1.0, (unsigned long long)old->round, (double)old->learning_rate,
         old->local_epochs, old->tensors == cfg->tensors && old->n_tensors == cfg->n_tensors, names,
         strcmp(names, p->eval_names) == 0);
  fflush(stdout);
  memcpy(out, weights, n * sizeof *out);
  *output_kind = FEDC_OUTPUT_WEIGHTS;
  *num_examples = 1;
  *loss = 0.5;
  return 0;
}

static void ignore_event(void *ctx, const fedc_event *ev) {
  (void)ctx;
  (void)ev;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s COORDINATOR CA CERT KEY ROUNDS\n", argv[0]);
    return 2;
  }
  if (fedc_client_abi_version() != FEDC_CLIENT_ABI_VERSION) {
    fprintf(stderr, "library ABI %d, header %d\n", fedc_client_abi_version(), FEDC_CLIENT_ABI_VERSION);
    return 1;
  }
  probe p;
  memset(&p, 0, sizeof p);
  fedc_client_options o;
  fedc_client_options_init(&o);
  o.coordinator = argv[1];
  o.ca = argv[2];
  o.cert = argv[3];
  o.key = argv[4];
  o.max_rounds = strtoull(argv[5], NULL, 10);
  o.min_backoff_ms = 100;
  o.on_event = ignore_event; /* the runtime calls evaluate only for an observer */
  fedc_trainer t = {.ctx = &p, .train = probe_train, .evaluate = probe_eval};
  int rc = fedc_client_create(&o, &t, &p.c);
  if (rc == FEDC_OK) rc = fedc_client_run(p.c);
  if (rc != FEDC_OK) fprintf(stderr, "train_config_probe: %s\n", fedc_client_last_error(p.c));
  fedc_client_destroy(p.c);
  return rc == FEDC_OK ? 0 : 1;
}
