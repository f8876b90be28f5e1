/*
 * fixed_delta_client.c - a C trainer on the public API (fedc/client.h only)
 * whose every update is the same known delta, for tests that check the
 * coordinator's arithmetic on published versions (test_async_calibrate.sh).
 *
 *   fixed_delta_client COORDINATOR CA CERT KEY ROUNDS VALUE EXAMPLES
 *
 * Each task: every parameter's delta is VALUE x (1 + round % 3), the task's
 * round id (recorded in the audit log) telling which, reported as EXAMPLES
 * examples. Exit 0 after ROUNDS accepted updates.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/client.h"

typedef struct fixed {
  float value;
  uint64_t examples;
} fixed;

static int fixed_train(void *ctx, const fedc_train_config *cfg, const float *weights, float *out, size_t n,
                       int *output_kind, uint64_t *num_examples, double *loss) {
  const fixed *f = ctx;
  (void)weights;
  float v = f->value * (float)(1 + cfg->round % 3);
  for (size_t i = 0; i < n; i++) out[i] = v;
  *output_kind = FEDC_OUTPUT_DELTA;
  *num_examples = f->examples;
  *loss = 0.5;
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: %s COORDINATOR CA CERT KEY ROUNDS VALUE EXAMPLES\n", argv[0]);
    return 2;
  }
  fixed f = {strtof(argv[6], NULL), strtoull(argv[7], NULL, 10)};
  fedc_client_options o;
  fedc_client_options_init(&o);
  o.coordinator = argv[1];
  o.ca = argv[2];
  o.cert = argv[3];
  o.key = argv[4];
  o.max_rounds = strtoull(argv[5], NULL, 10);
  o.min_backoff_ms = 100;
  fedc_trainer t = {.ctx = &f, .train = fixed_train};
  fedc_client *c = NULL;
  int rc = fedc_client_create(&o, &t, &c);
  if (rc == FEDC_OK) rc = fedc_client_run(c);
  if (rc != FEDC_OK) fprintf(stderr, "fixed_delta_client: %s\n", c ? fedc_client_last_error(c) : "create failed");
  fedc_client_destroy(c);
  return rc == FEDC_OK ? 0 : 1;
}
