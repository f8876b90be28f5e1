/*
 * cmd_coordinator.c - `fedc coordinator`: run the coordinator server.
 *
 * Every option is one row of `options[]` and can be set in a YAML file
 * (--config FILE, a flat mapping whose keys are the flag names without the
 * dashes) or as a flag; flags win. An unknown key or a bad value is refused at
 * start-up naming the key. --help prints the table with defaults.
 *
 * Signals: SIGINT/SIGTERM are blocked before gRPC starts (its threads inherit
 * the mask) and taken by sigwait: stop accepting, give in-flight calls the
 * grace period, save state, exit 0.
 */
#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <yaml.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "client/trainer_mlp.h"
#include "common/blas.h"
#include "common/log.h"
#include "coordinator/coordinator.h"
#include "transport/transport.h"
#include "fedc/error.h"

typedef enum { T_STR, T_U32, T_U64, T_F32, T_INT, T_BOOL } opt_type;

typedef struct copt {
  const char *name;
  opt_type type;
  size_t off;   /* offset in struct settings */
  size_t size;  /* for strings */
  const char *help;
} copt;

typedef struct settings {
  fc_coord_cfg c;
  char pki[512];
  char model[128];
  uint64_t init_seed;
  char port_file[512];
  char log[16];
  int grace_ms;
  int blas_threads;
  int exit_when_done;
} settings;

#define S(field) offsetof(settings, field)
#define STR(field) S(field), sizeof(((settings *)0)->field)

static const copt options[] = {
    {"federation", T_STR, STR(c.federation), "federation name (must match the certificates)"},
    {"listen", T_STR, STR(c.listen), "address to listen on (127.0.0.1:0 picks a free port)"},
    {"pki", T_STR, STR(pki), "PKI directory: uses ca.crt, coordinator.crt, coordinator.key"},
    {"ca", T_STR, STR(c.ca), "CA certificate (overrides --pki)"},
    {"cert", T_STR, STR(c.cert), "coordinator certificate (overrides --pki)"},
    {"key", T_STR, STR(c.key), "coordinator private key (overrides --pki)"},
    {"insecure-for-testing", T_BOOL, S(c.insecure_for_testing), 0, "no TLS (refused unless --listen is loopback)"},
    {"state", T_STR, STR(c.state_dir), "state directory: model versions, state.json, rounds.jsonl"},
    {"model", T_STR, STR(model), "built-in model for a new state: 784-200-200-10, mlp, logreg, sizes"},
    {"init-seed", T_U64, S(init_seed), 0, "seed of the initial weights"},
    {"rounds", T_U64, S(c.engine.rounds), 0, "round budget: completed rounds before DONE (0 = unlimited)"},
    {"min-clients", T_U32, S(c.engine.min_clients), 0, "live clients needed to start a round"},
    {"cohort", T_U32, S(c.engine.cohort_size), 0, "clients selected per round (0 = use --cohort-fraction)"},
    {"cohort-fraction", T_F32, S(c.engine.cohort_fraction), 0, "fraction of live clients selected when --cohort 0"},
    {"min-updates", T_U32, S(c.engine.min_updates), 0, "updates needed by the deadline, else the round is retried"},
    {"pickup-timeout-ms", T_U64, S(c.engine.pickup_ms), 0, "selected clients must fetch their task within this"},
    {"round-timeout-ms", T_U64, S(c.engine.round_ms), 0, "updates must arrive within this of the round start"},
    {"client-ttl-ms", T_U64, S(c.engine.client_ttl_ms), 0, "a client is live if it checked in within this"},
    {"poll-ms", T_U32, S(c.engine.poll_ms), 0, "how often waiting clients check in"},
    {"seed", T_U64, S(c.engine.seed), 0, "cohort selection seed"},
    {"max-clients", T_U32, S(c.engine.max_clients), 0, "refuse new client identities beyond this many"},
    {"lr", T_F32, S(c.learning_rate), 0, "client learning rate"},
    {"epochs", T_U32, S(c.local_epochs), 0, "local epochs per round"},
    {"batch", T_U32, S(c.batch_size), 0, "client minibatch size"},
    {"momentum", T_F32, S(c.momentum), 0, "client SGD momentum"},
    {"clip-norm", T_F32, S(c.clip_norm), 0, "L2 clip norm of updates (0 = none); larger updates are refused"},
    {"max-example-weight", T_U64, S(c.max_example_weight), 0, "FedAvg weight cap per client"},
    {"server-lr", T_F32, S(c.server_lr), 0, "server learning rate applied to the mean delta"},
    {"chunk-bytes", T_U32, S(c.chunk_bytes), 0, "model stream chunk size (1 KiB .. 4 MiB)"},
    {"threads", T_INT, S(c.threads), 0, "concurrent calls served"},
    {"upload-slots", T_INT, S(c.upload_slots), 0, "concurrent uploads staged (memory = slots x model)"},
    {"download-slots", T_INT, S(c.download_slots), 0, "concurrent model downloads served"},
    {"max-calls-per-client", T_INT, S(c.max_calls_per_client), 0, "concurrent calls one identity may hold (0 = 4)"},
    {"stream-idle-ms", T_INT, S(c.stream_idle_ms), 0, "max wait for one message of a call"},
    {"fd-headroom", T_INT, S(c.fd_headroom), 0, "file descriptors kept free (0 = max(64, limit/8))"},
    {"max-connections", T_INT, S(c.max_connections), 0, "connection cap (0 = fd limit - headroom)"},
    {"port-file", T_STR, STR(port_file), "write the bound port here once listening"},
    {"grace-ms", T_INT, S(grace_ms), 0, "shutdown grace period for in-flight calls"},
    {"blas-threads", T_INT, S(blas_threads), 0, "OpenBLAS threads"},
    {"exit-when-done", T_BOOL, S(exit_when_done), 0, "exit once the round budget is spent"},
    {"log", T_STR, STR(log), "log level: debug|info|warn|error"},
};
#define NOPTS (sizeof options / sizeof options[0])


static int apply(settings *s, const char *key, const char *val, const char *origin) {
  for (size_t i = 0; i < NOPTS; i++) {
    const copt *o = &options[i];
    if (strcmp(o->name, key) != 0) continue;
    void *p = (char *)s + o->off;
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case T_STR:
      if (strlen(val) >= o->size) goto bad;
      strcpy(p, val);
      return 0;
    case T_BOOL:
      if (!strcmp(val, "true") || !strcmp(val, "1") || !strcmp(val, "yes")) *(int *)p = 1;
      else if (!strcmp(val, "false") || !strcmp(val, "0") || !strcmp(val, "no"))
        *(int *)p = 0;
      else
        goto bad;
      return 0;
    case T_U32:
    case T_U64: {
      if (val[0] == '-') goto bad;
      unsigned long long v = strtoull(val, &end, 10);
      if (errno || end == val || *end || (o->type == T_U32 && v > UINT32_MAX)) goto bad;
      if (o->type == T_U32) *(uint32_t *)p = (uint32_t)v;
      else
        *(uint64_t *)p = v;
      return 0;
    }
    case T_INT: {
      long v = strtol(val, &end, 10);
      if (errno || end == val || *end || v < 0 || v > 1000000000L) goto bad;
      *(int *)p = (int)v;
      return 0;
    }
    case T_F32: {
      double v = strtod(val, &end);
      if (errno || end == val || *end || !(v >= 0) || v > 1e30) goto bad;
      if (strcmp(key, "cohort-fraction") == 0) {
        if (v > 1) goto bad;
        s->c.engine.cohort_fraction = v;
      } else {
        *(float *)p = (float)v;
      }
      return 0;
    }
    }
  bad:
    fprintf(stderr, "fedc coordinator: %s: invalid value '%s' for '%s'\n", origin, val, key);
    return 2;
  }
  fprintf(stderr, "fedc coordinator: %s: unknown option '%s' (see fedc coordinator --help)\n", origin, key);
  return 2;
}

/* Flat YAML mapping of scalars, parsed with libyaml. */
static int load_config(settings *s, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "fedc coordinator: cannot open config %s: %s\n", path, strerror(errno));
    return 2;
  }
  yaml_parser_t p;
  yaml_parser_initialize(&p);
  yaml_parser_set_input_file(&p, f);
  int rc = 0, depth = 0, done = 0;
  char key[128] = "";
  while (!done && !rc) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&p, &ev)) {
      fprintf(stderr, "fedc coordinator: %s:%zu: %s\n", path, p.problem_mark.line + 1,
              p.problem ? p.problem : "YAML error");
      rc = 2;
      break;
    }
    switch (ev.type) {
    case YAML_MAPPING_START_EVENT:
      if (++depth > 1) {
        fprintf(stderr, "fedc coordinator: %s:%zu: nested mappings are not options ('%s')\n", path,
                ev.start_mark.line + 1, key);
        rc = 2;
      }
      break;
    case YAML_SEQUENCE_START_EVENT:
      fprintf(stderr, "fedc coordinator: %s:%zu: lists are not options ('%s')\n", path, ev.start_mark.line + 1, key);
      rc = 2;
      break;
    case YAML_MAPPING_END_EVENT: depth--; break;
    case YAML_ALIAS_EVENT:
      /* Skipping it would shift every later key onto the previous value. */
      fprintf(stderr, "fedc coordinator: %s:%zu: aliases are not supported ('%s')\n", path, ev.start_mark.line + 1,
              key);
      rc = 2;
      break;
    case YAML_SCALAR_EVENT: {
      const char *v = (const char *)ev.data.scalar.value;
      if (depth == 0) {
        /* e.g. "rounds 3" without the colon: one plain scalar, no option set. */
        fprintf(stderr, "fedc coordinator: %s:%zu: not a mapping of options ('%.40s')\n", path,
                ev.start_mark.line + 1, v);
        rc = 2;
      } else if (!key[0]) {
        snprintf(key, sizeof key, "%s", v);
      } else {
        char origin[600];
        snprintf(origin, sizeof origin, "%s:%zu", path, ev.start_mark.line + 1);
        rc = apply(s, key, v, origin);
        key[0] = 0;
      }
      break;
    }
    case YAML_STREAM_END_EVENT: done = 1; break;
    default: break;
    }
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&p);
  fclose(f);
  return rc;
}

static void usage(FILE *f, const settings *d) {
  fprintf(f, "Usage: fedc coordinator [--config FILE] [options]\n"
             "Run the federation coordinator. Every option may also be a key in the YAML --config file;\n"
             "flags override the file.\n\nOptions (default in brackets):\n");
  for (size_t i = 0; i < NOPTS; i++) {
    const copt *o = &options[i];
    const void *p = (const char *)d + o->off;
    char def[160];
    switch (o->type) {
    case T_STR: snprintf(def, sizeof def, "%s", (const char *)p); break;
    case T_BOOL: snprintf(def, sizeof def, "%s", *(const int *)p ? "on" : "off"); break;
    case T_U32: snprintf(def, sizeof def, "%u", *(const uint32_t *)p); break;
    case T_U64: snprintf(def, sizeof def, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case T_INT: snprintf(def, sizeof def, "%d", *(const int *)p); break;
    case T_F32:
      snprintf(def, sizeof def, "%g",
               strcmp(o->name, "cohort-fraction") == 0 ? d->c.engine.cohort_fraction : (double)*(const float *)p);
      break;
    }
    fprintf(f, "  --%-22s %s [%s]\n", o->name, o->help, def);
  }
  fprintf(f, "  --%-22s %s\n", "config FILE", "YAML file of the options above");
}

static void defaults(settings *s) {
  memset(s, 0, sizeof *s);
  fc_coord_cfg_defaults(&s->c);
  snprintf(s->model, sizeof s->model, "784-200-200-10");
  s->init_seed = 1;
  s->grace_ms = 5000;
  s->blas_threads = 1;
  snprintf(s->log, sizeof s->log, "info");
}

static int write_port_file(const char *path, int port) {
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return -1;
  fprintf(f, "%d\n", port);
  fclose(f);
  return rename(tmp, path);
}

int cmd_coordinator(int argc, char **argv) {
  settings s, d;
  defaults(&s);
  defaults(&d);
  /* Long options from the table, plus --config and --help. */
  struct option longopts[NOPTS + 3];
  for (size_t i = 0; i < NOPTS; i++) {
    longopts[i].name = options[i].name;
    longopts[i].has_arg = options[i].type == T_BOOL ? optional_argument : required_argument;
    longopts[i].flag = NULL;
    longopts[i].val = 1000 + (int)i;
  }
  longopts[NOPTS] = (struct option){"config", required_argument, 0, 'c'};
  longopts[NOPTS + 1] = (struct option){"help", no_argument, 0, 'h'};
  longopts[NOPTS + 2] = (struct option){0, 0, 0, 0};
  /* Pass 1: --config and --help only; pass 2: flags over the file. */
  int opt;
  optind = 1;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, "hc:", longopts, NULL)) != -1) {
    if (opt == 'h') {
      usage(stdout, &d);
      return 0;
    }
    if (opt == 'c' && load_config(&s, optarg) != 0) return 2;
  }
  optind = 1;
  opterr = 1;
  while ((opt = getopt_long(argc, argv, "hc:", longopts, NULL)) != -1) {
    if (opt == 'c') continue;
    if (opt < 1000 || opt >= 1000 + (int)NOPTS) {
      usage(stderr, &d);
      return 2;
    }
    const copt *o = &options[opt - 1000];
    if (apply(&s, o->name, optarg ? optarg : (o->type == T_BOOL ? "true" : ""), "flag") != 0) return 2;
  }
  if (optind < argc) {
    fprintf(stderr, "fedc coordinator: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (fc_log_parse_level(s.log) < 0) {
    fprintf(stderr, "fedc coordinator: invalid value '%s' for 'log'\n", s.log);
    return 2;
  }
  fc_log_set_level(fc_log_parse_level(s.log));
  if (s.pki[0]) {
    if (!s.c.ca[0]) snprintf(s.c.ca, sizeof s.c.ca, "%s/ca.crt", s.pki);
    if (!s.c.cert[0]) snprintf(s.c.cert, sizeof s.c.cert, "%s/coordinator.crt", s.pki);
    if (!s.c.key[0]) snprintf(s.c.key, sizeof s.c.key, "%s/coordinator.key", s.pki);
  }
  if (!s.c.insecure_for_testing && (!s.c.ca[0] || !s.c.cert[0] || !s.c.key[0])) {
    fprintf(stderr, "fedc coordinator: mutual TLS needs --pki DIR or --ca/--cert/--key "
                    "(create them with `fedc pki init`)\n");
    return 2;
  }
  if (s.c.engine.min_updates < 1) {
    fprintf(stderr, "fedc coordinator: invalid value '0' for 'min-updates' (at least 1)\n");
    return 2;
  }
  if (s.c.chunk_bytes < 1024 || s.c.chunk_bytes > (4u << 20)) {
    fprintf(stderr, "fedc coordinator: invalid value '%u' for 'chunk-bytes' (1024..4194304)\n", s.c.chunk_bytes);
    return 2;
  }
  fc_mlp mlp;
  if (fc_mlp_parse(s.model, &mlp) != 0) {
    fprintf(stderr, "fedc coordinator: invalid value '%s' for 'model'\n", s.model);
    return 2;
  }
  fc_model_spec spec;
  fc_mlp_spec(&mlp, &spec);
  float *init = malloc(fc_mlp_nparams(&mlp) * sizeof *init);
  if (!init) return 1;
  fc_mlp_init(&mlp, s.init_seed, init);
  fc_blas_set_threads(s.blas_threads > 0 ? s.blas_threads : 1);
  /* Few malloc arenas: per-thread arenas (8 x cores by default) hold on to
   * freed chunk buffers and made peak RSS grow with concurrent calls. */
  mallopt(M_ARENA_MAX, 2);

  /* The process may use every fd it is allowed (the fd guard keeps headroom). */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  fc_transport_init();
  fc_coord *coord = NULL;
  char err[512];
  int rc = fc_coord_start(&s.c, &spec, init, &coord, err, sizeof err);
  free(init);
  if (rc != FEDC_OK) {
    fprintf(stderr, "fedc coordinator: %s\n", err);
    fc_transport_shutdown();
    return 1;
  }
  int port = fc_coord_port(coord);
  if (s.port_file[0] && write_port_file(s.port_file, port) != 0)
    fprintf(stderr, "fedc coordinator: cannot write port file %s\n", s.port_file);
  /* Wait for a signal (or, with --exit-when-done, the end of the budget). */
  int sig = 0;
  for (;;) {
    struct timespec ts = {0, 200 * 1000000L};
    sig = sigtimedwait(&set, NULL, &ts);
    if (sig > 0) break;
    if (s.exit_when_done && fc_coord_done(coord)) break;
  }
  FC_INFO("coordinator", "%s: shutting down (grace %d ms)", sig > 0 ? strsignal(sig) : "round budget spent",
          s.grace_ms);
  fc_coord_stop(coord, s.grace_ms);
  fc_transport_shutdown();
  return 0;
}
