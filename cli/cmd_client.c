/*
 * cmd_client.c - `fedc client`: one federation client using the built-in
 * trainers (MLP / logistic regression on BLAS) on Fashion-MNIST, IDX or CSV
 * data, optionally taking partition i of N (IID, Dirichlet, shards).
 * The embeddable API it drives is include/fedc/client.h; this file is also
 * the reference for embedding it.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "cli/client_builtin.h"
#include "cli/client_device.h"
#include "cli/client_speed.h"
#include "client/data.h"
#include "client/runtime_int.h"
#include "secagg/secagg.h"
#include "client/partition.h"
#include "common/mlp.h"
#include "common/blas.h"
#include "common/log.h"
#include "fedc/client.h"
#include "client/runtime_int.h"
#include "secagg/secagg.h"
#include "transport/transport.h"

/* builtin: client_builtin.h */

/* The coordinator's model decides what is trained: --model is a first guess
 * (and what the data is checked against at start). An MLP of fc<i>.weight /
 * fc<i>.bias tensors that fits the data is built from the model's tensors
 * (with a warning if --model said otherwise); anything else can never be
 * trained here, which ends the client with a sentence saying what to change
 * (FEDC_TRAIN_UNTRAINABLE) instead of "trainer failed" every round. */
static int bt_adapt(builtin *b, const fedc_train_config *cfg) {
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  fc_mlp m;
  char why[200] = "", have[96], want[96];
  int rc = FEDC_OK;
  for (size_t i = 0; i < cfg->n_tensors && rc == FEDC_OK; i++)
    rc = fc_model_spec_add(&spec, cfg->tensors[i].name, cfg->tensors[i].ndim, cfg->tensors[i].shape);
  if (rc != FEDC_OK) snprintf(why, sizeof why, "its %zu tensors are not an MLP's", cfg->n_tensors);
  else rc = fc_mlp_from_spec(&spec, &m, why, sizeof why);
  if (rc != FEDC_OK) {
    snprintf(cfg->error, cfg->error_len,
             "the coordinator's model is not one the built-in trainer can train (%s): start the coordinator with "
             "--model (sizes joined by '-', e.g. %u-200-200-10), or embed the client library with a trainer of "
             "your own (fedc/client.h)", why, b->data.dim);
    return FEDC_TRAIN_UNTRAINABLE;
  }
  fc_mlp_text(&m, have, sizeof have);
  if (m.sizes[0] != b->data.dim || m.sizes[m.nlayers] < b->data.classes) {
    int input = m.sizes[0] != b->data.dim;
    snprintf(cfg->error, cfg->error_len,
             "the coordinator's model %s takes %u %s, this client's data has %u: start the coordinator with a "
             "--model for this data (e.g. %u-200-200-%u) or give this client --data that fits the model",
             have, input ? m.sizes[0] : m.sizes[m.nlayers], input ? "inputs" : "classes",
             input ? b->data.dim : b->data.classes, b->data.dim, b->data.classes);
    return FEDC_TRAIN_UNTRAINABLE;
  }
  if (memcmp(&m, &b->mlp, sizeof m) != 0) {
    if (b->model_given)
      fprintf(stderr, "fedc client %s: the coordinator's model is %s, not --model %s: training %s\n", b->name, have,
              fc_mlp_text(&b->mlp, want, sizeof want), have);
    b->mlp = m;
    fc_mlp_ws_destroy(b->ws);
    b->ws = NULL;
  }
  return 0;
}

static int bt_train(void *ctx, const fedc_train_config *cfg, const float *weights, float *out, size_t n,
                    int *output_kind, uint64_t *num_examples, double *loss) {
  builtin *b = ctx;
  int rc = bt_adapt(b, cfg);
  if (rc != 0) return rc;
  if (n != fc_mlp_nparams(&b->mlp)) return -1; /* the runtime's n is the spec's: cannot happen */
  (void)weights; /* `out` already holds a copy of the global weights */
  fc_train_opts o;
  fc_train_opts_init(&o);
  o.lr = cfg->learning_rate > 0 ? cfg->learning_rate : 0.05f;
  o.epochs = cfg->local_epochs ? cfg->local_epochs : 1;
  o.batch = cfg->batch_size ? cfg->batch_size : 32;
  o.momentum = cfg->momentum;
  o.prox_mu = cfg->prox_mu;
  o.seed = cfg->seed;
  if (!b->ws) b->ws = fc_mlp_ws_create(&b->mlp, o.batch);
  if (!b->ws) return -1;
  if (fc_mlp_train(&b->mlp, b->ws, out, &b->data, b->idx, b->n, &o, loss) != 0) return -1;
  cli_slow_wait(b->delay_ms, b->hold); /* --train-delay-ms, --device-speed, --train-hold (client_speed.c) */
  if (cli_slow_fails(b->fail_if)) { /* --train-fail-if */
    if (cfg->error && cfg->error_len)
      snprintf(cfg->error, cfg->error_len, "research: %s exists (--train-fail-if)", b->fail_if);
    return -1;
  }
  *output_kind = FEDC_OUTPUT_WEIGHTS;
  *num_examples = b->n;
  return 0;
}

static int bt_eval(void *ctx, const float *weights, size_t n, double *acc, double *loss) {
  builtin *b = ctx;
  if (n != fc_mlp_nparams(&b->mlp)) return -1; /* another model: bt_train says why */
  if (!b->ws) b->ws = fc_mlp_ws_create(&b->mlp, 32);
  return b->ws ? fc_mlp_eval(&b->mlp, b->ws, weights, &b->data, b->idx, b->n, acc, loss) : -1;
}

static void on_event(void *ctx, const fedc_event *ev) {
  builtin *b = ctx;
  const char *kind = ev->kind == FEDC_EVENT_TRAINED    ? "trained"
                     : ev->kind == FEDC_EVENT_UPLOADED ? "uploaded"
                     : ev->kind == FEDC_EVENT_REJECTED ? "rejected"
                     : ev->kind == FEDC_EVENT_DONE     ? "done"
                     : ev->kind == FEDC_EVENT_TASK     ? "task"
                     : ev->kind == FEDC_EVENT_RETRY    ? "retry"
                     : ev->kind == FEDC_EVENT_EVALUATED ? "evaluated"
                     : ev->kind == FEDC_EVENT_EVAL_REPORTED ? "eval_reported"
                                                       : NULL;
  if (ev->kind == FEDC_EVENT_WAITING) { /* eligibility: say it when the reason changes, not at every check-in */
    const char *why = ev->detail ? ev->detail : "";
    if (!strcmp(why, b->waiting_why)) return;
    snprintf(b->waiting_why, sizeof b->waiting_why, "%s", why);
    if (!why[0]) return;
    if (!b->json) {
      fprintf(stderr, "fedc client %s: %s\n", b->name, why);
      return;
    }
    kind = "not_eligible";
  }
  if (!kind) return;
  if (b->json) {
    json_t *j = json_pack("{s:s,s:s,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:s}", "client", b->name, "event", kind, "round",
                          (json_int_t)ev->round, "model_version", (json_int_t)ev->model_version, "examples",
                          (json_int_t)ev->num_examples, "loss", ev->loss, "accuracy", ev->accuracy, "update_norm",
                          ev->update_norm, "clip_scale", ev->clip_scale, "detail", ev->detail ? ev->detail : "");
    if (j && ev->kind == FEDC_EVENT_EVAL_REPORTED) { /* the totals it reported (round: the model's) */
      json_object_set_new(j, "correct", json_integer((json_int_t)ev->correct));
      json_object_set_new(j, "loss_sum", json_real(ev->loss_sum));
    }
    cli_print_json(j);
  } else if (ev->kind == FEDC_EVENT_UPLOADED) {
    fprintf(stderr, "fedc client %s: round %llu: uploaded (%llu examples, loss %.4f, norm %.4g%s)\n", b->name,
            (unsigned long long)ev->round, (unsigned long long)ev->num_examples, ev->loss, ev->update_norm,
            ev->clip_scale < 1 ? ", clipped" : "");
  }
  /* Retries and rejected rounds: the runtime's own warning line says it
   * (with the wait and the round); a second line here doubled each one. */
}

/* The clients this process hosts (one, or --host-clients's group). */
typedef struct hosted {
  builtin b;
  char name[65], cert[600], key[600], data[2300];
  fedc_client *c;
  pthread_t th;
  int started;
  int rc;
  int byz; /* research: this one attacks (--byzantine) */
} hosted;

static hosted *g_hosted;
static size_t g_nhosted;

static void *signal_thread(void *arg) {
  (void)arg;
  int sig = cli_stop_wait(-1);
  if (sig > 0) {
    /* Stopping is not a failure: say so before the runtime's last word (a
     * Leave, so the coordinator does not wait for us). */
    fprintf(stderr, "fedc client: %s: stopping\n", strsignal(sig));
    for (size_t i = 0; i < g_nhosted; i++)
      if (g_hosted[i].c) fedc_client_stop(g_hosted[i].c);
  }
  return NULL;
}

static void *host_main(void *arg) {
  hosted *h = arg;
  h->rc = fedc_client_run(h->c);
  char e[1024];
  if (h->rc != FEDC_OK && h->rc != FEDC_ERR_STOPPED)
    fprintf(stderr, "fedc client %s: %s\n", h->name, CLI_SHOWN(e, fedc_client_last_error(h->c)));
  else
    fprintf(stderr, "fedc client %s: %s after %llu rounds\n", h->name, h->rc == FEDC_OK ? "finished" : "stopped",
            (unsigned long long)fedc_client_rounds_done(h->c));
  return NULL;
}

/* 1 if `name` is a line of the file (the sim's list of attackers). */
static int name_listed(const char *file, const char *name) {
  FILE *f = fopen(file, "r");
  if (!f) return 0;
  char line[128];
  int hit = 0;
  while (!hit && fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    hit = strcmp(line, name) == 0;
  }
  fclose(f);
  return hit;
}

/* --data with each "%s" replaced by name. */
static void data_for(const char *data, const char *name, char *out, size_t outlen) {
  size_t w = 0;
  for (const char *p = data; *p && w + 1 < outlen; p++) {
    if (p[0] == '%' && p[1] == 's') {
      w += (size_t)snprintf(out + w, outlen - w, "%s", name);
      if (w >= outlen) w = outlen - 1;
      p++;
    } else {
      out[w++] = *p;
    }
  }
  out[w] = 0;
}

static void usage(FILE *f) {
  fprintf(f,
          "Usage: fedc client [options]\n"
          "Take part in a federation with a built-in trainer.\n\n" CLI_TLS_HELP
          "  --data fmnist|idx:IMAGES,LABELS|csv:FILE   training data (default fmnist train set)\n"
          "  --data-dir DIR           Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist)\n"
          "  --partition iid|dirichlet|shards  split the data (default: no split)\n"
          "  --parts N --part I       with --partition: take part I (0-based) of N (only its rows of an IDX\n"
          "                           file are read)\n"
          "  --alpha A                with --partition dirichlet: concentration (default 0.5)\n"
          "  --partition-seed S       with --partition: seed of the split (default 1)\n"
          "  --model SPEC             784-200-200-10 (default), mlp, logreg, or sizes joined by '-'; the\n"
          "                           coordinator's model is what trains (a warning if it differs)\n"
          "  --rounds N               stop after N accepted updates (default: until the federation ends)\n"
          CLI_SLOW_HELP
          "  --max-retries N          give up after N consecutive network failures (default 0 = never)\n"
          "  --blas-threads N         OpenBLAS threads (default 1)\n"
          "  --secagg-drop SPEC       research: vanish from secure-aggregation stages, e.g. masked:0.1,unmask:0.05\n"
          "  --drop-seed S            seed of those dropouts (default 1)\n"
          "  --drop-halt              research/tests: a dropout halts the client there (until killed)\n"
          "  --byzantine KIND[:SCALE] research (fedc sim): attack: signflip, gaussian, labelflip, alie, ipm, backdoor\n"
          "  --byzantine-names FILE   ... only the clients named in FILE (one per line); --byzantine-dir DIR\n"
          "                           the colluders' shared view; --byzantine-cohort N --byzantine-colluders F\n"
          "  --byzantine-unclipped    ... and skip the clip stage\n"
          "  --byzantine-weight W     research (tests): claim weight W in the secure-aggregation masked input\n"
          "  --byzantine-unmask       research (tests): send secure-aggregation unmask shares with a bit flipped\n"
          "  --byzantine-advertise-cert FILE --byzantine-advertise-key FILE  research (tests): advertise\n"
          "                           secure-aggregation keys under that certificate (e.g. another CA's)\n"
          "  --allow-unsigned-models  train on models without a signed manifest (a coordinator without a\n"
          "                           model-signing key); signed ones are still checked\n"
          "  --secagg-tolerate-colluders N  refuse secure-aggregation rounds whose threshold t a coordinator\n"
          "                           lying about dropouts could beat with N of our neighbours colluding\n"
          "                           (needs 2t > k + 1 + N; every client refuses 2t <= k + 1; default 0)\n"
          "  --secagg-seeded-rounding  research (tests): draw the secure-aggregation rounding from the\n"
          "                           task's seed, so two runs of one seed send the same sums\n"
          "  --host-clients FIRST:COUNT  research (fedc sim): host COUNT clients in this process, named\n"
          "                           NAME0000.. from FIRST (--name is the prefix, default c), each with its own\n"
          "                           certificate from --pki, connection and thread; \"%%s\" in --data is the name;\n"
          "                           with --partition they take parts FIRST..FIRST+COUNT-1 of --parts\n"
          "  --eval-fraction F        hold out this fraction of the data (of its part) for federated\n"
          "                           evaluation; training never sees it (default 0.1; 0 = none)\n"
          "  --eval-data fmnist-test|fmnist|idx:IMAGES,LABELS|csv:FILE  evaluate on this data instead\n"
          "  --eval-parts N --eval-part I  with --eval-data: part I (default: the client's --part) of an\n"
          "                           IID split into N\n"
          "  --charging --unmetered --idle  eligibility (protocol 1.8): report the device as charging, on an\n"
          "                           unmetered network, idle (each false when not given)\n"
          "  --battery PERCENT        report this battery level (1..100; 0 = unknown)\n"
          "  --free-storage BYTES     report this much free storage (0 = unknown)\n"
          "  --device-state FILE      re-read before every check-in: key=value lines (charging, unmetered,\n"
          "                           idle, battery, free_storage) a script keeps current; overrides the\n"
          "                           flags. Without any of these the client reports nothing (a\n"
          "                           coordinator that requires something then never selects it)\n"
          "  --json                   one JSON line per event on stdout\n"
          "  --log LEVEL              debug|info|warn|error (default warn)\n");
}

/* Keep only rows idx[0..n) of b->data (CSV: the file was read whole). */
static int keep_rows(builtin *b) {
  float *x = malloc(((size_t)b->n ? b->n : 1) * b->data.dim * sizeof *x);
  uint8_t *y = malloc(b->n ? b->n : 1);
  if (!x || !y) {
    free(x);
    free(y);
    return 1;
  }
  for (uint32_t i = 0; i < b->n; i++) {
    memcpy(x + (size_t)i * b->data.dim, b->data.x + (size_t)b->idx[i] * b->data.dim, b->data.dim * sizeof *x);
    y[i] = b->data.y[b->idx[i]];
  }
  free(b->data.x);
  free(b->data.y);
  b->data.x = x;
  b->data.y = y;
  b->data.n = b->n;
  return 0;
}

/* With a partition, the part's rows are computed from the labels alone and
 * only they are read from an IDX source: a device holds its ~1/N of the
 * data, never the whole set it was split from (188 MB of floats for
 * Fashion-MNIST, times every client process of `fedc sim`, which all read
 * one shared copy this way). */
static int load_data(builtin *b, const char *data, const char *dir, const char *part_kind, uint32_t parts,
                     uint32_t part, double alpha, uint64_t pseed) {
  char err[400], images[4096], labels[4096];
  int rc, idx_source = 1;
  fc_partition_opts po;
  fc_partition_opts_init(&po);
  if (part_kind) {
    po.kind = fc_partition_kind_parse(part_kind);
    po.nparts = parts;
    po.alpha = alpha;
    po.seed = pseed;
    if (po.kind < 0 || parts < 1 || part >= parts) {
      fprintf(stderr, "fedc client: bad partition (kind '%s', part %u of %u)\n", part_kind, part, parts);
      return 2;
    }
  }
  if (strcmp(data, "fmnist") == 0) {
    rc = fc_fmnist_paths(dir, 1, images, labels, sizeof images, err, sizeof err);
  } else if (strncmp(data, "idx:", 4) == 0) {
    snprintf(images, sizeof images, "%s", data + 4);
    char *comma = strchr(images, ',');
    if (!comma) {
      fprintf(stderr, "fedc client: --data idx:IMAGES,LABELS\n");
      return 2;
    }
    *comma = 0;
    snprintf(labels, sizeof labels, "%s", comma + 1);
    rc = 0;
  } else if (strncmp(data, "csv:", 4) == 0) {
    idx_source = 0;
    rc = fc_csv_load(data + 4, 0, 1.0f / 255.0f, &b->data, err, sizeof err);
  } else {
    fprintf(stderr, "fedc client: unknown --data '%s'\n", data);
    return 2;
  }
  if (rc == 0 && idx_source && !part_kind) rc = fc_idx_load(images, labels, &b->data, err, sizeof err);
  if (rc == 0 && part_kind) {
    uint8_t *y = NULL;
    uint32_t n = 0;
    const uint8_t *ys = b->data.y;
    if (idx_source) {
      if ((rc = fc_idx_load_labels(labels, &y, &n, err, sizeof err)) != 0) goto loaded;
      ys = y;
    } else {
      n = b->data.n;
    }
    uint32_t classes = 0;
    for (uint32_t i = 0; i < n; i++)
      if (ys[i] >= classes) classes = ys[i] + 1u;
    if (fc_partition(ys, n, classes, &po, part, &b->idx, &b->n) != 0) {
      free(y);
      fprintf(stderr, "fedc client: partitioning failed\n");
      return 1;
    }
    free(y);
    if (idx_source) {
      rc = fc_idx_load_rows(images, labels, b->idx, b->n, &b->data, err, sizeof err);
    } else if (keep_rows(b) != 0) {
      snprintf(err, sizeof err, "out of memory keeping part %u", part);
      rc = FEDC_ERR_NOMEM;
    }
    for (uint32_t i = 0; rc == 0 && i < b->n; i++) b->idx[i] = i;
  }
loaded:
  if (rc != 0) {
    fprintf(stderr, "fedc client: %s\n", err);
    return 1;
  }
  if (!part_kind) {
    b->n = b->data.n;
    b->idx = malloc(b->n * sizeof *b->idx);
    if (!b->idx) return 1;
    for (uint32_t i = 0; i < b->n; i++) b->idx[i] = i;
  }
  return 0;
}

int cmd_client(int argc, char **argv) {
  enum { O_DATA = 1, O_DATA_DIR, O_PARTITION, O_PARTS, O_PART, O_ALPHA, O_PSEED, O_MODEL, O_ROUNDS, O_JSON, O_LOG,
         O_RETRIES, O_THREADS, O_SADROP, O_DSEED, O_DHALT, O_HOST, O_BYZ, O_BYZ_NAMES, O_BYZ_DIR, O_BYZ_N, O_BYZ_F, O_BYZ_UNCLIP, O_UNSIGNED, O_BYZ_WEIGHT, O_SACOLL, O_SASEEDED,
         O_BYZ_UNMASK, O_BYZ_ADV_CERT, O_BYZ_ADV_KEY, O_EVAL_FRACTION, O_EVAL_DATA, O_EVAL_PARTS, O_EVAL_PART,
         O_DEVICE, O_SLOW }; /* O_DEVICE: the device-state options (client_device.c), by name */
  static const struct option longopts[] = {CLI_TLS_LONGOPTS,
                                           {"data", required_argument, 0, O_DATA},
                                           {"data-dir", required_argument, 0, O_DATA_DIR},
                                           {"partition", required_argument, 0, O_PARTITION},
                                           {"parts", required_argument, 0, O_PARTS},
                                           {"part", required_argument, 0, O_PART},
                                           {"alpha", required_argument, 0, O_ALPHA},
                                           {"partition-seed", required_argument, 0, O_PSEED},
                                           {"model", required_argument, 0, O_MODEL},
                                           {"rounds", required_argument, 0, O_ROUNDS},
                                           {"max-retries", required_argument, 0, O_RETRIES},
                                           {"blas-threads", required_argument, 0, O_THREADS},
                                           {"secagg-drop", required_argument, 0, O_SADROP},
                                           {"drop-seed", required_argument, 0, O_DSEED},
                                           {"drop-halt", no_argument, 0, O_DHALT},
                                           {"host-clients", required_argument, 0, O_HOST},
                                           {"byzantine", required_argument, 0, O_BYZ},
                                           {"byzantine-names", required_argument, 0, O_BYZ_NAMES},
                                           {"byzantine-unclipped", no_argument, 0, O_BYZ_UNCLIP},
                                           {"allow-unsigned-models", no_argument, 0, O_UNSIGNED},
                                           {"secagg-tolerate-colluders", required_argument, 0, O_SACOLL},
                                           {"secagg-seeded-rounding", no_argument, 0, O_SASEEDED},
                                           {"byzantine-weight", required_argument, 0, O_BYZ_WEIGHT},
                                           {"byzantine-unmask", no_argument, 0, O_BYZ_UNMASK},
                                           {"byzantine-advertise-cert", required_argument, 0, O_BYZ_ADV_CERT},
                                           {"byzantine-advertise-key", required_argument, 0, O_BYZ_ADV_KEY},
                                           {"byzantine-dir", required_argument, 0, O_BYZ_DIR},
                                           {"byzantine-cohort", required_argument, 0, O_BYZ_N},
                                           {"byzantine-colluders", required_argument, 0, O_BYZ_F},
                                           {"eval-fraction", required_argument, 0, O_EVAL_FRACTION},
                                           {"eval-data", required_argument, 0, O_EVAL_DATA},
                                           {"eval-parts", required_argument, 0, O_EVAL_PARTS},
                                           {"eval-part", required_argument, 0, O_EVAL_PART},
                                           {"charging", no_argument, 0, O_DEVICE},
                                           {"unmetered", no_argument, 0, O_DEVICE},
                                           {"idle", no_argument, 0, O_DEVICE},
                                           {"battery", required_argument, 0, O_DEVICE},
                                           {"free-storage", required_argument, 0, O_DEVICE},
                                           {"device-state", required_argument, 0, O_DEVICE},
                                           {"train-delay-ms", required_argument, 0, O_SLOW},
                                           {"train-hold", required_argument, 0, O_SLOW},
                                           {"train-fail-if", required_argument, 0, O_SLOW},
                                           {"device-speed", required_argument, 0, O_SLOW},
                                           {"json", no_argument, 0, O_JSON},
                                           {"log", required_argument, 0, O_LOG},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  cli_tls tls;
  cli_tls_init(&tls);
  static const char default_model[] = "784-200-200-10";
  const char *data = "fmnist", *dir = NULL, *part_kind = NULL, *model = default_model;
  /* ULLONG_MAX / NAN: not given (refused without --partition, which alone reads them). */
  unsigned long long parts = ULLONG_MAX, part = ULLONG_MAX, pseed = ULLONG_MAX, rounds = 0, retries = 0, threads = 1;
  cli_slow slow = {0};
  double alpha = NAN, sa_drop[6] = {0}, eval_fraction = NAN;
  const char *eval_data = NULL;
  unsigned long long eval_parts = 1, eval_part = ULLONG_MAX;
  int sa_seeded = 0;
  unsigned long long drop_seed = 1, host_first = 0, host_count = 0, sa_colluders = 0;
  fc_byz_cfg byz;
  memset(&byz, 0, sizeof byz);
  byz.wait_ms = 2000;
  const char *byz_names = NULL;
  int drop_halt = 0;
  char why[300];
  int json = 0, opt, allow_unsigned = 0, part_set = 0;
  fc_log_set_level(FC_LOG_WARN);
  optind = 1;
  opterr = 0; /* one line of our own (cli_option_error), not getopt's and the whole usage */
  cli_device device;
  memset(&device, 0, sizeof device);
  int longidx = 0;
  while ((opt = getopt_long(argc, argv, ":h", longopts, &longidx)) != -1) {
    if (cli_tls_opt(&tls, opt, optarg)) continue;
    int bad = 0;
    switch (opt) {
    case O_DATA: data = optarg; break;
    case O_DATA_DIR: dir = optarg; break;
    case O_PARTITION: part_kind = optarg; break;
    case O_PARTS: bad = cli_parse_u64("fedc client", "--parts", optarg, &parts); break;
    case O_PART:
      bad = cli_parse_u64("fedc client", "--part", optarg, &part);
      part_set = 1;
      break;
    case O_ALPHA: bad = cli_parse_double("fedc client", "--alpha", optarg, &alpha); break;
    case O_PSEED: bad = cli_parse_u64("fedc client", "--partition-seed", optarg, &pseed); break;
    case O_MODEL: model = optarg; break;
    case O_ROUNDS: bad = cli_parse_u64("fedc client", "--rounds", optarg, &rounds); break;
    case O_SLOW: bad = cli_slow_option(&slow, longopts[longidx].name, optarg); break;
    case O_RETRIES: bad = cli_parse_u64("fedc client", "--max-retries", optarg, &retries); break;
    case O_THREADS: bad = cli_parse_u64("fedc client", "--blas-threads", optarg, &threads); break;
    case O_SADROP:
      if (fc_sa_drop_parse(optarg, sa_drop, why, sizeof why) != FEDC_OK) {
        fprintf(stderr, "fedc client: --secagg-drop: %s\n", why);
        bad = 2;
      }
      break;
    case O_DSEED: bad = cli_parse_u64("fedc client", "--drop-seed", optarg, &drop_seed); break;
    case O_DHALT: drop_halt = 1; break;
    case O_BYZ: {
      char kind[32];
      double sc = 0;
      int got = sscanf(optarg, "%31[a-z]:%lf", kind, &sc);
      if (got < 1 || (byz.kind = fc_byz_parse(kind)) < 0 || (got == 2 && !(sc > 0))) {
        fprintf(stderr, "fedc client: --byzantine KIND[:SCALE], KIND signflip|gaussian|labelflip|alie|ipm|backdoor\n");
        bad = 2;
      }
      byz.scale = sc;
      break;
    }
    case O_BYZ_NAMES: byz_names = optarg; break;
    case O_BYZ_UNCLIP: byz.unclipped = 1; break;
    case O_UNSIGNED: allow_unsigned = 1; break;
    case O_SASEEDED: sa_seeded = 1; break;
    case O_SACOLL:
      bad = cli_parse_u64("fedc client", "--secagg-tolerate-colluders", optarg, &sa_colluders);
      if (!bad && sa_colluders > 10000) {
        fprintf(stderr, "fedc client: --secagg-tolerate-colluders needs 0..10000\n");
        bad = 2;
      }
      break;
    case O_BYZ_WEIGHT: {
      unsigned long long v = 0;
      if (cli_parse_u64("fedc client", "--byzantine-weight", optarg, &v) || v < 1 || v > 1000000) {
        fprintf(stderr, "fedc client: --byzantine-weight needs 1..1000000\n");
        return 2;
      }
      byz.weight = (uint32_t)v;
      break;
    }
    case O_BYZ_DIR: snprintf(byz.dir, sizeof byz.dir, "%s", optarg); break;
    case O_BYZ_UNMASK: byz.bad_unmask = 1; break;
    case O_BYZ_ADV_CERT: snprintf(byz.adv_cert, sizeof byz.adv_cert, "%s", optarg); break;
    case O_BYZ_ADV_KEY: snprintf(byz.adv_key, sizeof byz.adv_key, "%s", optarg); break;
    case O_BYZ_N: {
      unsigned long long v = 0;
      bad = cli_parse_u64("fedc client", "--byzantine-cohort", optarg, &v);
      byz.cohort = (uint32_t)v;
      break;
    }
    case O_BYZ_F: {
      unsigned long long v = 0;
      bad = cli_parse_u64("fedc client", "--byzantine-colluders", optarg, &v);
      byz.colluders = (uint32_t)v;
      break;
    }
    case O_HOST:
      if (sscanf(optarg, "%llu:%llu", &host_first, &host_count) != 2 || host_count < 1 || host_count > 10000 ||
          host_first > 9999 - (host_count - 1)) {
        fprintf(stderr, "fedc client: --host-clients FIRST:COUNT, 1 <= COUNT, FIRST + COUNT <= 10000\n");
        bad = 2;
      }
      break;
    case O_EVAL_FRACTION:
      bad = cli_parse_double("fedc client", "--eval-fraction", optarg, &eval_fraction);
      if (!bad && !(eval_fraction >= 0 && eval_fraction < 1)) {
        fprintf(stderr, "fedc client: --eval-fraction needs a number in [0, 1), got '%s'\n", optarg);
        bad = 2;
      }
      break;
    case O_EVAL_DATA: eval_data = optarg; break;
    case O_EVAL_PARTS:
      bad = cli_parse_u64("fedc client", "--eval-parts", optarg, &eval_parts);
      if (!bad && (eval_parts < 1 || eval_parts > 100000)) {
        fprintf(stderr, "fedc client: --eval-parts needs 1..100000, got '%s'\n", optarg);
        bad = 2;
      }
      break;
    case O_EVAL_PART: bad = cli_parse_u64("fedc client", "--eval-part", optarg, &eval_part); break;
    case O_DEVICE: bad = cli_device_option(&device, longopts[longidx].name, optarg); break;
    case O_JSON: json = 1; break;
    case O_LOG:
      if (fc_log_parse_level(optarg) < 0) bad = 2;
      else
        fc_log_set_level(fc_log_parse_level(optarg));
      break;
    case 'h': usage(stdout); return 0;
    default: return cli_option_error("fedc client", opt, argv, longopts);
    }
    if (bad) return 2;
  }
  if (optind < argc) {
    fprintf(stderr, "fedc client: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (!byz.adv_cert[0] != !byz.adv_key[0]) {
    fprintf(stderr, "fedc client: --byzantine-advertise-cert and --byzantine-advertise-key go together\n");
    return 2;
  }
  if (!part_kind && (parts != ULLONG_MAX || part != ULLONG_MAX || pseed != ULLONG_MAX || !isnan(alpha))) {
    fprintf(stderr, "fedc client: --%s splits the data only with --partition iid|dirichlet|shards (without it the "
                    "client trains on all of it)\n",
            parts != ULLONG_MAX ? "parts" : part != ULLONG_MAX ? "part" : pseed != ULLONG_MAX ? "partition-seed"
                                                                                          : "alpha");
    return 2;
  }
  if (eval_data && !isnan(eval_fraction) && eval_fraction > 0) {
    fprintf(stderr, "fedc client: --eval-fraction holds out part of the training data, --eval-data evaluates on "
                    "other data: give one of them\n");
    return 2;
  }
  if (!eval_data && (eval_parts != 1 || eval_part != ULLONG_MAX)) {
    fprintf(stderr, "fedc client: --eval-parts and --eval-part split --eval-data: give --eval-data too\n");
    return 2;
  }
  if (isnan(eval_fraction)) eval_fraction = eval_data ? 0 : 0.1;
  if (parts == ULLONG_MAX) parts = 1;
  if (part == ULLONG_MAX) part = 0;
  if (pseed == ULLONG_MAX) pseed = 1;
  if (isnan(alpha)) alpha = 0.5;
  size_t nh = 1;
  if (host_count) {
    if (!tls.pki[0] || tls.cert[0] || tls.key[0] || tls.insecure) {
      fprintf(stderr, "fedc client: --host-clients takes each client's certificate from --pki (not --cert/--key)\n");
      return 2;
    }
    if (part_set) {
      fprintf(stderr, "fedc client: --host-clients FIRST:COUNT takes parts FIRST..FIRST+COUNT-1 of --parts: drop "
                      "--part\n");
      return 2;
    }
    nh = (size_t)host_count;
    if (!tls.ca[0]) snprintf(tls.ca, sizeof tls.ca, "%s/ca.crt", tls.pki);
  } else if (cli_tls_resolve(&tls, "client", "fedc client") != 0) {
    return 2;
  }
  fc_mlp mlp;
  if (fc_mlp_parse(model, &mlp) != 0) {
    fprintf(stderr, "fedc client: bad --model '%s' (want e.g. 784-200-200-10, mlp or logreg)\n", model);
    return 2;
  }
  hosted *hs = calloc(nh, sizeof *hs);
  if (!hs) return 1;
  int rc = 0;
  for (size_t i = 0; i < nh; i++) {
    hosted *h = &hs[i];
    if (host_count) {
      snprintf(h->name, sizeof h->name, "%s%04llu", tls.name[0] ? tls.name : "c", host_first + i);
      snprintf(h->cert, sizeof h->cert, "%s/client-%s.crt", tls.pki, h->name);
      snprintf(h->key, sizeof h->key, "%s/client-%s.key", tls.pki, h->name);
    } else {
      snprintf(h->name, sizeof h->name, "%s", tls.name[0] ? tls.name : "client");
      snprintf(h->cert, sizeof h->cert, "%s", tls.cert);
      snprintf(h->key, sizeof h->key, "%s", tls.key);
    }
    data_for(data, h->name, h->data, sizeof h->data);
    h->byz = (byz.kind != FC_BYZ_NONE || byz.weight || byz.bad_unmask || byz.adv_cert[0]) &&
             (!byz_names || name_listed(byz_names, h->name));
    h->b.json = json;
    h->b.delay_ms = cli_slow_delay(&slow, h->name); /* says so when --device-speed drew it */
    h->b.hold = slow.hold;
    h->b.fail_if = slow.fail_if;
    h->b.name = h->name;
    h->b.mlp = mlp;
    h->b.model_given = model != default_model;
  }
  /* Certificate problems first: loading the data can take seconds. */
  char tlserr[512];
  for (size_t i = 0; i < nh && !rc; i++) {
    if (!tls.insecure && fc_tls_check_files(tls.ca, hs[i].cert, hs[i].key, tlserr, sizeof tlserr) != FEDC_OK) {
      fprintf(stderr, "fedc client: %s\n", tlserr);
      rc = 1;
    }
  }
  for (size_t i = 0; i < nh && !rc; i++) {
    builtin *b = &hs[i].b;
    /* Hosted clients take consecutive parts, as they take consecutive names. */
    uint64_t my_part = host_count ? host_first + i : part;
    if (my_part > UINT32_MAX || parts > UINT32_MAX) {
      fprintf(stderr, "fedc client: --parts and --part must be below 2^32\n");
      rc = 2;
      break;
    }
    rc = load_data(b, hs[i].data, dir, part_kind, (uint32_t)parts, (uint32_t)my_part, alpha, pseed);
    /* Its evaluation part: --eval-part, else its own part index (a hosted client's, or --part's). */
    uint64_t my_epart = eval_part != ULLONG_MAX && !host_count ? eval_part : my_part % eval_parts;
    if (!rc && eval_part != ULLONG_MAX && eval_part >= eval_parts) {
      fprintf(stderr, "fedc client: --eval-part %llu is not below --eval-parts %llu\n", eval_part, eval_parts);
      rc = 2;
    }
    if (!rc)
      rc = bt_eval_split(b, eval_fraction, eval_data, dir, (uint32_t)eval_parts, (uint32_t)my_epart, pseed,
                      pseed * 1000003ull + my_part);
    /* Research: a label-flipping attacker trains on y -> classes - 1 - y. */
    if (!rc && hs[i].byz && byz.kind == FC_BYZ_LABELFLIP)
      for (uint32_t k = 0; k < b->data.n; k++) b->data.y[k] = (uint8_t)(b->data.classes - 1 - b->data.y[k]);
    /* ... a backdoor attacker stamps its trigger on part of its data (byzantine.h). */
    if (!rc && hs[i].byz && byz.kind == FC_BYZ_BACKDOOR) {
      uint32_t poisoned = fc_backdoor_poison(&b->data, FC_BACKDOOR_POISON, drop_seed + i);
      fprintf(stderr, "fedc client %s: backdoor: %u of %u examples carry the trigger, labelled %d\n", hs[i].name,
              poisoned, b->data.n, FC_BACKDOOR_TARGET);
    }
    /* An explicit --model must fit the data; without one, the coordinator's model is checked in bt_adapt. */
    if (!rc && b->model_given && b->data.dim != b->mlp.sizes[0]) {
      fprintf(stderr, "fedc client: data has %u features, model input is %u\n", b->data.dim, b->mlp.sizes[0]);
      rc = 2;
    }
  }
  fc_blas_set_threads((int)threads); /* the binary, not the library, owns this */
  /* Signals reach a thread that asks the runtime to stop (cli_common.h). */
  if (!rc && cli_stop_signals_install() != 0) {
    fprintf(stderr, "fedc client: cannot install signal handlers: %s\n", strerror(errno));
    rc = 1;
  }
  for (size_t i = 0; i < nh && !rc; i++) {
    hosted *h = &hs[i];
    fedc_client_options o;
    fedc_client_options_init(&o);
    char insecure_id[100];
    snprintf(insecure_id, sizeof insecure_id, "client/%s", h->name);
    o.coordinator = tls.coordinator;
    o.ca = tls.ca;
    o.cert = h->cert;
    o.key = h->key;
    o.insecure_for_testing = tls.insecure;
    o.insecure_identity = insecure_id;
    o.max_rounds = rounds;
    o.max_retries = (uint32_t)retries;
    o.num_examples_hint = h->b.n;
    o.allow_unsigned_models = allow_unsigned;
    o.secagg_tolerate_colluders = (uint32_t)sa_colluders;
    o.on_event = on_event;
    o.event_ctx = &h->b;
    if (device.given) {
      o.device_state = cli_device_state;
      o.device_state_ctx = &device;
    }
    fedc_trainer t = {.ctx = &h->b, .train = bt_train, .evaluate = bt_eval, .evaluate_stats = bt_eval_stats};
    int crc = fedc_client_create(&o, &t, &h->c);
    if (crc != FEDC_OK) {
      /* A failed create still hands out the handle with the reason (client.h); destroyed below. */
      fprintf(stderr, "fedc client %s: %s: %s\n", h->name, fedc_strerror(crc), fedc_client_last_error(h->c));
      rc = 1;
      break;
    }
    fc_client_secagg_drop(h->c, sa_drop, drop_seed + i, drop_halt);
    fc_client_secagg_seeded_rounding(h->c, sa_seeded);
    if (h->byz) {
      fc_byz_cfg bc = byz;
      snprintf(bc.name, sizeof bc.name, "%s", h->name);
      bc.seed = drop_seed + i;
      fc_client_byzantine(h->c, &bc);
      fprintf(stderr, "fedc client %s: research attacker (%s%s%s%s)\n", h->name, fc_byz_name(byz.kind),
              byz.weight ? ", lying about its weight" : "", byz.bad_unmask ? ", bad unmask shares" : "",
              byz.adv_cert[0] ? ", keys under another certificate" : "");
    }
  }
  if (!rc) {
    g_hosted = hs;
    g_nhosted = nh;
    pthread_t sig_thr;
    pthread_create(&sig_thr, NULL, signal_thread, NULL);
    const char *shown_model = model != default_model ? model : "the coordinator's";
    char held[96] = "";
    if (hs[0].b.en && hs[0].b.edata == &hs[0].b.data)
      snprintf(held, sizeof held, " (%u train, %u held out for evaluation)", hs[0].b.n, hs[0].b.en);
    else if (hs[0].b.en)
      snprintf(held, sizeof held, ", %u for evaluation from --eval-data", hs[0].b.en);
    if (nh == 1)
      fprintf(stderr, "fedc client %s: %u examples%s, model %s, coordinator %s\n", hs[0].name,
              hs[0].b.n + (hs[0].b.edata == &hs[0].b.data ? hs[0].b.en : 0), held, shown_model, tls.coordinator);
    else
      fprintf(stderr, "fedc client: hosting %zu clients %s..%s, model %s, coordinator %s\n", nh, hs[0].name,
              hs[nh - 1].name, shown_model, tls.coordinator);
    for (size_t i = 0; i < nh; i++) {
      /* Small stacks: a hosted client's thread needs well under 1 MiB. */
      pthread_attr_t at;
      pthread_attr_init(&at);
      pthread_attr_setstacksize(&at, (size_t)1 << 20);
      hs[i].started = pthread_create(&hs[i].th, &at, host_main, &hs[i]) == 0;
      pthread_attr_destroy(&at);
      if (!hs[i].started) {
        fprintf(stderr, "fedc client %s: cannot start its thread\n", hs[i].name);
        hs[i].rc = FEDC_ERR_INTERNAL;
      }
    }
    for (size_t i = 0; i < nh; i++) {
      if (hs[i].started) pthread_join(hs[i].th, NULL);
      if (hs[i].rc != FEDC_OK && hs[i].rc != FEDC_ERR_STOPPED) rc = 1;
    }
    cli_stop_wake();
    pthread_join(sig_thr, NULL);
    g_hosted = NULL;
    g_nhosted = 0;
  }
  for (size_t i = 0; i < nh; i++) {
    fedc_client_destroy(hs[i].c);
    fc_mlp_ws_destroy(hs[i].b.ws);
    fc_dataset_free(&hs[i].b.data);
    fc_dataset_free(&hs[i].b.own_edata);
    free(hs[i].b.idx);
    free(hs[i].b.eidx);
  }
  free(hs);
  return rc;
}
