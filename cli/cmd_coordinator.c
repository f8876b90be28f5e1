/*
 * cmd_coordinator.c - `fedc coordinator`: run the coordinator server.
 *
 * Every option is one row of `options[]` and can be set in a YAML file
 * (--config FILE, a flat mapping whose keys are the flag names without the
 * dashes) or as a flag; flags win. --help prints the table with defaults and
 * ranges.
 *
 * Validation: nothing that would silently change the coordinator's meaning is
 * accepted. Each row carries its allowed range (numbers) or check (strings:
 * the federation rule of `fedc pki init`, a strict host:port, ...), so the
 * table, --help and the refusal cannot drift apart. Every refusal happens
 * before anything is served or created (the state directory included), is one
 * line on stderr naming the option and where it came from ("flag" or
 * FILE:LINE), and exits 2. In the file, a key given twice, a second YAML
 * document, nesting, lists and aliases are refused too: each would otherwise
 * drop or shift a setting without a word.
 *
 * Durations are bounded (not just checked for overflow) because the engine
 * adds them to clock readings, and a timeout of years is a typo, not a
 * policy. Counts whose 0 used to fall back to a default now refuse 0; where
 * 0 means "automatic" the row's help says so and 0 stays allowed.
 *
 * --port-file is written once listening, through a fresh mkstemp() name in
 * the same directory renamed over the target, so a reader never sees half a
 * number and nothing planted at a predictable name is followed. Failing to
 * write it is fatal (exit 1, after a clean stop): whoever waits for that file
 * would otherwise wait forever.
 *
 * Signals: SIGINT/SIGTERM are blocked before gRPC starts (its threads inherit
 * the mask) and taken through cli_stop_wait (a handler's pipe, so a thread
 * that did not block them cannot die of them): stop accepting, give in-flight
 * calls the grace period, save state, exit 0.
 *
 * Files: this one runs the command (merging file and flags, the checks that
 * need several options, the model key, the port file, start and stop); the
 * option table, its checks, --help and the defaults are in
 * cmd_coordinator_opts.c, the YAML loader in cmd_coordinator_yaml.c, the
 * shared types in cmd_coordinator_int.h. Calls go one way: this file ->
 * cmd_coordinator_yaml.c -> cmd_coordinator_opts.c (and this file ->
 * cmd_coordinator_opts.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <malloc.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "cli/cmd_coordinator_int.h"
#include "common/mlp.h"
#include "common/blas.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "common/tensor.h"
#include "coordinator/aggregate.h"
#include "coordinator/anomaly.h"
#include "coordinator/coordinator.h"
#include "coordinator/server_opt.h"
#include "crypto/keyfile.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "crypto/sha256.h"
#include "transport/transport.h"
#include "fedc/error.h"

/* Settings that only make sense together, once file and flags are merged.
 * 0 or 2 after printing the refusal. */
/* --model-key-file: 64 hex digits (a trailing newline allowed), read under
 * the rule for every private key file (crypto/keyfile.h: nothing for
 * others, group read only for root's file of our group, as a Kubernetes
 * Secret with fsGroup), outside the state directory (a key stored beside
 * what it protects protects nothing). */
static int load_model_key(settings *s) {
  const char *p = s->model_key_file;
  char *buf = NULL, err[600];
  size_t n = 0;
  int rc = fc_key_file_read(p, 128, &buf, &n, err, sizeof err);
  if (rc != FEDC_OK && rc != FEDC_ERR_TOO_LARGE) {
    fprintf(stderr, "fedc coordinator: --model-key-file: %s\n", err);
    return -1;
  }
  if (rc == FEDC_OK && n > 0 && buf[n - 1] == '\n') buf[--n] = 0;
  int bad = rc != FEDC_OK || n != 64 || fc_unhex(buf, s->c.model_key, sizeof s->c.model_key) != FEDC_OK;
  if (buf) fc_wipe(buf, n);
  free(buf);
  if (bad) {
    fprintf(stderr, "fedc coordinator: --model-key-file %s: expected 64 hex digits (e.g. `openssl rand -hex 32`)\n",
            p);
    return -1;
  }
  char kr[PATH_MAX], sr[PATH_MAX];
  if (realpath(p, kr) && s->c.state_dir[0] && realpath(s->c.state_dir, sr)) {
    size_t l = strlen(sr);
    if (strncmp(kr, sr, l) == 0 && kr[l] == '/') {
      fprintf(stderr, "fedc coordinator: --model-key-file %s is inside the state directory; keep it elsewhere\n", p);
      return -1;
    }
  }
  s->c.model_key_set = 1;
  return 0;
}

static int check_combined(settings *s, const origin *seen) {
  if (!(s->c.anomaly_threshold > 0 && s->c.anomaly_threshold < 1e6)) {
    char where[600];
    fprintf(stderr, "fedc coordinator: %s: 'anomaly-threshold' %g: use a number > 0 (a robust z-score, e.g. 5)\n",
            cc_origin_text(seen[cc_find_opt("anomaly-threshold")], where, sizeof where), s->c.anomaly_threshold);
    return 2;
  }
  if (!(s->c.drift_threshold >= 0 && s->c.drift_threshold < 1e6)) {
    char where[600];
    fprintf(stderr, "fedc coordinator: %s: 'drift-threshold' %g: use a PSI >= 0 (e.g. 0.25)\n",
            cc_origin_text(seen[cc_find_opt("drift-threshold")], where, sizeof where), s->c.drift_threshold);
    return 2;
  }
  if (s->c.keep_every && !s->c.keep_versions) {
    /* Alone it would keep every version, not every K-th: say so. */
    char where[600];
    fprintf(stderr,
            "fedc coordinator: %s: 'keep-every' %llu needs 'keep-versions' N (the last N versions kept whole; 0, the "
            "default, keeps every version)\n",
            cc_origin_text(seen[cc_find_opt("keep-every")], where, sizeof where), (unsigned long long)s->c.keep_every);
    return 2;
  }
  int pickup = cc_find_opt("pickup-timeout-ms"), round_to = cc_find_opt("round-timeout-ms");
  fc_engine_cfg *e = &s->c.engine;
  if (e->pickup_ms <= e->round_ms) return 0;
  if (!seen[pickup].line) {
    /* Only the default exceeds a short round: lower it, as --help says. */
    e->pickup_ms = e->round_ms;
    return 0;
  }
  char where[600], rwhere[620] = " (the default)";
  if (seen[round_to].line) {
    char buf[600];
    snprintf(rwhere, sizeof rwhere, " (%s)", cc_origin_text(seen[round_to], buf, sizeof buf));
  }
  fprintf(stderr,
          "fedc coordinator: %s: invalid value '%llu' for 'pickup-timeout-ms': more than 'round-timeout-ms' "
          "%llu%s\n",
          cc_origin_text(seen[pickup], where, sizeof where), (unsigned long long)e->pickup_ms,
          (unsigned long long)e->round_ms, rwhere);
  return 2;
}

/* Write "<port>\n" to path: a fresh mkstemp() file in the same directory
 * (O_EXCL, so nothing planted there is followed), renamed over path. 0, or
 * -1 with errno set. */
static int write_port_file(const char *path, int port) {
  char tmp[600], text[16];
  int n = snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
  if (n < 0 || (size_t)n >= sizeof tmp) {
    errno = ENAMETOOLONG;
    return -1;
  }
  int len = snprintf(text, sizeof text, "%d\n", port);
  int fd = mkstemp(tmp);
  if (fd < 0) return -1;
  int err = 0;
  /* mkstemp makes it 0600; the port is no secret and is read by others. */
  errno = 0;
  if (fchmod(fd, 0644) != 0 || write(fd, text, (size_t)len) != len || fsync(fd) != 0) err = errno ? errno : EIO;
  if (close(fd) != 0 && !err) err = errno;
  if (!err && rename(tmp, path) != 0) err = errno;
  if (err) {
    unlink(tmp);
    errno = err;
    return -1;
  }
  return 0;
}

int cmd_coordinator(int argc, char **argv) {
  settings s, d;
  cc_defaults(&s);
  cc_defaults(&d);
  /* Long options from the table, plus --config and --help. */
  struct option longopts[CC_NOPTS + 3];
  for (size_t i = 0; i < CC_NOPTS; i++) {
    longopts[i].name = cc_options[i].name;
    longopts[i].has_arg = cc_options[i].type == T_BOOL ? optional_argument : required_argument;
    longopts[i].flag = NULL;
    longopts[i].val = 1000 + (int)i;
  }
  longopts[CC_NOPTS] = (struct option){"config", required_argument, 0, 'c'};
  longopts[CC_NOPTS + 1] = (struct option){"help", no_argument, 0, 'h'};
  longopts[CC_NOPTS + 2] = (struct option){0, 0, 0, 0};
  /* Pass 1: --config and --help only; pass 2: flags over the file. A leading
   * ':' makes getopt return ':' for a missing value; opterr = 0 because its
   * own messages say "coordinator:" and we print one line ourselves. */
  static const char *shortopts = ":hc:";
  origin seen[CC_NOPTS];
  memset(seen, 0, sizeof seen);
  int opt;
  optind = 1;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
    if (opt == 'h') {
      cc_usage(stdout, &d);
      return 0;
    }
    if (opt == 'c' && cc_load_config(&s, optarg, seen) != 0) return 2;
  }
  optind = 1;
  while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
    if (opt == 'c') continue;
    /* ':' a missing value, '?' anything else getopt_long refused (it prints
     * nothing: opterr 0): one line of our own, with the nearest option. */
    if (opt == ':' || opt < 1000 || opt >= 1000 + (int)CC_NOPTS)
      return cli_option_error("fedc coordinator", opt, argv, longopts);
    int i = opt - 1000;
    if (cc_apply(&s, i, optarg ? optarg : (cc_options[i].type == T_BOOL ? "true" : ""), (origin){NULL, 1}) != 0) return 2;
    seen[i] = (origin){NULL, 1};
  }
  if (optind < argc) {
    fprintf(stderr, "fedc coordinator: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (check_combined(&s, seen) != 0) return 2;
  s.c.engine.async = strcmp(s.mode, "async") == 0;
  {
    char serr[200];
    if (fc_staleness_parse(s.staleness, &s.c.engine.staleness, serr, sizeof serr) != 0) { /* checked: cannot fail */
      fprintf(stderr, "fedc coordinator: %s\n", serr);
      return 2;
    }
  }
  fc_log_set_level(fc_log_parse_level(s.log));
  fc_log_set_json(strcmp(s.log_format, "json") == 0);
  if (s.pki[0]) {
    struct {
      char *path;
      size_t size;
      const char *file;
    } tls[] = {{s.c.ca, sizeof s.c.ca, "ca.crt"},
               {s.c.cert, sizeof s.c.cert, "coordinator.crt"},
               {s.c.key, sizeof s.c.key, "coordinator.key"},
               {s.c.signing_cert, sizeof s.c.signing_cert, FC_PKI_SIGNER_CERT},
               {s.c.signing_key, sizeof s.c.signing_key, FC_PKI_SIGNER_KEY}};
    for (size_t k = 0; k < sizeof tls / sizeof tls[0]; k++) {
      /* A cut path would name another file. */
      if (tls[k].path[0] || snprintf(tls[k].path, tls[k].size, "%s/%s", s.pki, tls[k].file) < (int)tls[k].size)
        continue;
      char where[600], vbuf[96];
      fprintf(stderr, "fedc coordinator: %s: invalid value '%s' for 'pki': too long for %s\n",
              cc_origin_text(seen[cc_find_opt("pki")], where, sizeof where), cc_shown(s.pki, vbuf, sizeof vbuf), tls[k].file);
      return 2;
    }
  }
  /* A PKI directory from before signing keys has none: serve unsigned (the
   * coordinator warns; clients refuse unless told otherwise). */
  if (s.pki[0] && !seen[cc_find_opt("signing-cert")].line && !seen[cc_find_opt("signing-key")].line &&
      access(s.c.signing_cert, F_OK) != 0 && access(s.c.signing_key, F_OK) != 0)
    s.c.signing_cert[0] = s.c.signing_key[0] = 0;
  if (!s.c.signing_cert[0] != !s.c.signing_key[0]) {
    fprintf(stderr, "fedc coordinator: --signing-cert and --signing-key go together (`fedc pki issue --role signer`)\n");
    return 2;
  }
  if (s.model_key_file[0] && load_model_key(&s) != 0) return 2;
  if (!s.c.insecure_for_testing && (!s.c.ca[0] || !s.c.cert[0] || !s.c.key[0])) {
    fprintf(stderr, "fedc coordinator: mutual TLS needs --pki DIR or --ca/--cert/--key "
                    "(create them with `fedc pki init`)\n");
    return 2;
  }
  fc_model_spec spec;
  float *init = NULL;
  if (s.init_model[0]) {
    /* Bring your own model: any float32 safetensors within tensor.h's limits. */
    char why[400];
    int rc = fc_safetensors_read(s.init_model, &spec, &init, NULL, (uint64_t)FC_MODEL_MAX_PARAMS * 4, why, sizeof why);
    if (rc != FEDC_OK) {
      fprintf(stderr, "fedc coordinator: --init-model %s: %s (a float32 (F32) safetensors file of at most %d tensors "
                      "and %llu parameters is needed)\n",
              s.init_model, why, FC_MODEL_MAX_TENSORS, (unsigned long long)FC_MODEL_MAX_PARAMS);
      return 2;
    }
    char spec_why[200];
    const char *bad = NULL;
    if (fc_model_spec_check(&spec, spec_why, sizeof spec_why) != FEDC_OK) bad = spec_why;
    else if (!fc_all_finite(init, fc_model_numel(&spec), NULL)) bad = "it holds NaN or Inf values";
    if (bad) {
      fprintf(stderr, "fedc coordinator: --init-model %s: %s\n", s.init_model, bad);
      free(init);
      return 2;
    }
    FC_INFO("coordinator", "initial model from %s: %u tensors, %llu parameters", s.init_model, spec.n,
            (unsigned long long)fc_model_numel(&spec));
  } else {
    fc_mlp mlp;
    if (fc_mlp_parse(s.model, &mlp) != 0) { /* the table's check_model refuses this earlier */
      fprintf(stderr, "fedc coordinator: invalid value '%s' for 'model'\n", s.model);
      return 2;
    }
    fc_mlp_spec(&mlp, &spec);
    init = malloc(fc_mlp_nparams(&mlp) * sizeof *init);
    if (!init) return 1;
    fc_mlp_init(&mlp, s.init_seed, init);
  }
  fc_blas_set_threads(s.blas_threads);
  /* Few malloc arenas: per-thread arenas (8 x cores by default) hold on to
   * freed chunk buffers and made peak RSS grow with concurrent calls. */
  mallopt(M_ARENA_MAX, 2);

  /* The process may use every fd it is allowed (the fd guard keeps headroom). */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  /* Before gRPC starts: its threads inherit the blocked mask (cli_common.h
   * says why a handler is needed as well). */
  if (cli_stop_signals_install() != 0) {
    fprintf(stderr, "fedc coordinator: cannot install signal handlers: %s\n", strerror(errno));
    free(init);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);

  if (!fc_transport_disable_deadlock_detection())
    FC_DEBUG("coordinator", "abseil deadlock detection switch not found: left as it is");
  fc_transport_init();
  if (s.etcd[0]) { /* one replica of several, elected on etcd */
    int erc = cc_run_replica(&s, &spec, init, write_port_file);
    free(init);
    fc_transport_shutdown();
    return erc;
  }
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
  if (s.port_file[0] && write_port_file(s.port_file, port) != 0) {
    fprintf(stderr, "fedc coordinator: cannot write port file %s: %s\n", s.port_file, strerror(errno));
    fc_coord_stop(coord, s.grace_ms);
    fc_transport_shutdown();
    return 1;
  }
  /* Wait for a signal (or, with --exit-when-done, the end of the budget). */
  int sig = 0;
  for (;;) {
    sig = cli_stop_wait(200);
    if (sig > 0) break;
    if (s.exit_when_done && fc_coord_done(coord)) {
      /* Clients tell "finished" from "restarting" only by DONE: every live
       * one hears it before we go (coord_drain.c). */
      sig = fc_coord_drain(coord, s.drain_ms, cli_stop_wait);
      break;
    }
  }
  FC_INFO("coordinator", "%s: shutting down (grace %d ms)", sig > 0 ? strsignal(sig) : "round budget spent",
          s.grace_ms);
  fc_coord_stop(coord, s.grace_ms);
  fc_transport_shutdown();
  return 0;
}

