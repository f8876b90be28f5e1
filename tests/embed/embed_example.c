/*
 * embed_example.c - the smallest device program: embeds libfedc-client
 * through its installed header and pkg-config file only, with a toy trainer
 * that nudges every weight by +0.01 (so the runtime's clipping shows), takes
 * part in 2 rounds and prints one line per event.
 *
 *   embed_example HOST:PORT CA CERT KEY
 */
#include <fedc/client.h>
#include <stdio.h>

static int train(void *ctx, const fedc_train_config *cfg, const float *weights, float *out, size_t n,
                 int *output_kind, uint64_t *num_examples, double *loss) {
  (void)ctx;
  (void)cfg;
  for (size_t i = 0; i < n; i++) out[i] = weights[i] + 0.01f;
  *output_kind = FEDC_OUTPUT_WEIGHTS;
  *num_examples = 10;
  *loss = 1.0;
  return 0;
}

static void on_event(void *ctx, const fedc_event *ev) {
  (void)ctx;
  if (ev->kind == FEDC_EVENT_UPLOADED)
    printf("uploaded round=%llu norm=%.4f clip_scale=%.4f\n", (unsigned long long)ev->round, ev->update_norm,
           ev->clip_scale);
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: embed_example HOST:PORT CA CERT KEY\n");
    return 2;
  }
  fedc_client_options o;
  fedc_client_options_init(&o);
  o.coordinator = argv[1];
  o.ca = argv[2];
  o.cert = argv[3];
  o.key = argv[4];
  o.max_rounds = 2;
  o.on_event = on_event;
  fedc_trainer t = {.ctx = NULL, .train = train}; /* designated: fields added later stay NULL (fedc/client.h, ABI) */
  fedc_client *c = NULL;
  int rc = fedc_client_create(&o, &t, &c);
  if (rc == FEDC_OK) rc = fedc_client_run(c);
  if (rc != FEDC_OK) fprintf(stderr, "embed_example: %s: %s\n", fedc_strerror(rc), fedc_client_last_error(c));
  fedc_client_destroy(c);
  return rc == FEDC_OK ? 0 : 1;
}
