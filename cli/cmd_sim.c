/*
 * cmd_sim.c - `fedc sim`: a whole federation on this machine.
 *
 * Makes a throwaway PKI, splits Fashion-MNIST into one small IDX file per
 * client (so each client process holds only its own examples), starts the
 * coordinator and N clients as separate processes on 127.0.0.1 over mutual
 * TLS, and, as an admin, follows the rounds: each new model version is
 * fetched (hash-verified) and evaluated on the 10,000-image test set. One
 * JSON line per round on stdout, progress on stderr, and in --out:
 *   rounds.csv, curve.png (gnuplot), logs/, pki/, data/, state/ (every model).
 *
 * Every option is checked in parse(), before anything is created: a bad value
 * is one line naming the option and its range, status 2, --out untouched.
 *
 * How the run ends. `fedc client` exits 0 when the coordinator says DONE (the
 * round budget is spent) or when it is stopped, non-zero on an error; a signal
 * death is a death too. So the wait status of each client tells the two apart:
 *   - a client exited 0: the federation ended; every round the coordinator
 *     completed is still reported (polled until all --rounds are, for a
 *     bounded time), then the sim exits 0 if all --rounds were reported;
 *   - a client died: it cannot come back, and the coordinator is started
 *     with --min-clients = --clients, so no further round can start: the sim
 *     names each dead client and how it died, and exits 1 (unless the rounds
 *     it polled one last time were already all done).
 * Rounds are polled before children are reaped in each pass, so a last round
 * completed just before the clients left is never lost.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "secagg/secagg.h"
#include "cli/cli_common.h"
#include "client/byzantine.h"
#include "client/data.h"
#include "client/partition.h"
#include "client/trainer_mlp.h"
#include "common/blas.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/rng.h"
#include "crypto/pki.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"

typedef struct sim_opts {
  char out[512];
  unsigned long long clients, cohort, rounds, epochs, batch, seed, min_updates, round_timeout_ms, poll_ms;
  /* Clients hosted per process (each still with its own certificate,
   * connection and thread): 0 = 1 up to 100 clients, else 25. */
  unsigned long long per_process;
  double lr, momentum, alpha, clip_norm;
  double prox_mu; /* --prox-mu: FedProx mu, passed to the coordinator (0 = FedAvg) */
  int clip_norm_set; /* else the coordinator's default clip norm applies */
  char partition[32];
  char model[64];
  const char *data_dir;
  int json;
  int secagg;                       /* --secagg */
  unsigned long long sa_k, sa_t;    /* --secagg-neighbors, --secagg-threshold (0 = coordinator's default) */
  unsigned long long sa_bucket;     /* --secagg-bucket (0 = coordinator's default) */
  const char *coord_opts[16];       /* --coordinator-opt: passed to `fedc coordinator` as they are */
  int ncoord_opts;
  char drop[200];                   /* --drop STAGE:P,... (research dropout injection) */
  /* --byzantine FRACTION:KIND[:SCALE]: that fraction of the clients attack. */
  double byz_fraction;
  char byz_kind[48];
  /* Server optimizer, passed to the coordinator as given (it validates):
   * --server-optimizer, -lr, -beta1, -beta2, -tau ("" = its default), --server-nesterov. */
  char sopt[5][32];
  /* Aggregation rule and its settings, passed as given (the coordinator validates). */
  char agg[6][32];
  int sopt_nesterov;
  /* Differential privacy: --dp-noise Z (0 = off) turns the cohort into Poisson
   * sampling at rate cohort/clients; --dp-delta, --dp-target-epsilon,
   * --dp-adaptive-quantile, --dp-clip-lr. */
  char dp[5][32];
} sim_opts;

static const char *const agg_flags[6] = {"--aggregator", "--agg-f", "--agg-trim", "--agg-m", "--agg-tau",
                                         "--agg-iters"};
static const char *const sopt_flags[5] = {"--server-optimizer", "--server-lr", "--server-beta1", "--server-beta2",
                                          "--server-tau"};

static volatile sig_atomic_t g_interrupted;
static void on_signal(int sig) {
  (void)sig;
  g_interrupted = 1;
}

static int mkdirp(const char *p) { return mkdir(p, 0700) == 0 || errno == EEXIST ? 0 : -1; }

static void be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Write examples idx[0..n) of d as uncompressed IDX (the loader reads plain files too). */
static int write_idx_part(const char *img_path, const char *lbl_path, const fc_dataset *d, const uint32_t *idx,
                          uint32_t n) {
  FILE *fi = fopen(img_path, "wb"), *fl = fopen(lbl_path, "wb");
  int rc = -1;
  if (!fi || !fl) goto out;
  uint8_t h[16];
  be32(h, 0x803);
  be32(h + 4, n);
  be32(h + 8, 28);
  be32(h + 12, d->dim / 28);
  if (d->dim != 784) {
    be32(h + 8, 1);
    be32(h + 12, d->dim);
  }
  fwrite(h, 1, 16, fi);
  be32(h, 0x801);
  be32(h + 4, n);
  fwrite(h, 1, 8, fl);
  uint8_t *row = malloc(d->dim);
  if (!row) goto out;
  for (uint32_t i = 0; i < n; i++) {
    const float *x = d->x + (size_t)idx[i] * d->dim;
    for (uint32_t j = 0; j < d->dim; j++) row[j] = (uint8_t)(x[j] * 255.0f + 0.5f);
    fwrite(row, 1, d->dim, fi);
    fputc(d->y[idx[i]], fl);
  }
  free(row);
  rc = ferror(fi) || ferror(fl) ? -1 : 0;
out:
  if (fi && fclose(fi) != 0) rc = -1;
  if (fl && fclose(fl) != 0) rc = -1;
  return rc;
}

static pid_t spawn(char *const argv[], const char *log_path) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0) return pid;
  /* If the sim itself is killed outright (SIGKILL, no cleanup), its children
   * must not outlive it: the coordinator would serve forever. */
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) _exit(127);
  int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
  }
  int nul = open("/dev/null", O_RDONLY);
  if (nul >= 0) dup2(nul, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  execv("/proc/self/exe", argv);
  _exit(127);
}

static int read_port(const char *path) {
  FILE *f = fopen(path, "r");
  int port = 0;
  if (f) {
    if (fscanf(f, "%d", &port) != 1) port = 0;
    fclose(f);
  }
  return port;
}

static void usage(FILE *f) {
  fprintf(f, "Usage: fedc sim [options]\n"
             "Run a federation of N client processes and a coordinator on 127.0.0.1 over mutual TLS\n"
             "on Fashion-MNIST; evaluate each round's global model on the 10,000-image test set.\n\n"
             "  --out DIR            output folder (default fedc-sim-out): rounds.csv, curve.png, logs/, state/\n"
             "  --clients N          clients (default 20, at most 1000)\n"
             "  --clients-per-process K  clients hosted by one process, each with its own certificate,\n"
             "                       connection and thread (default 1 up to 100 clients, else 25)\n"
             "  --cohort K           clients per round (default 5)\n"
             "  --rounds R           rounds (default 20)\n"
             "  --partition KIND     iid | dirichlet | shards (default dirichlet)\n"
             "  --alpha A            Dirichlet concentration (default 0.5)\n"
             "  --model SPEC         784-200-200-10 (default), logreg, or sizes joined by '-'\n"
             "  --epochs E           local epochs (default 1)\n"
             "  --batch B            batch size (default 32)\n"
             "  --lr X               learning rate (default 0.05)\n"
             "  --momentum X         SGD momentum (default 0)\n"
             "  --prox-mu X          FedProx proximal term mu (Li et al. 2020; default 0 = FedAvg)\n"
             "  --clip-norm X        L2 clip norm of updates, 0 = off (default: the coordinator's)\n"
             "  --server-optimizer sgd|avgm|adagrad|adam|yogi  server optimizer (default sgd = FedAvg)\n"
             "  --server-lr X --server-beta1 X --server-beta2 X --server-tau X --server-nesterov\n"
             "                       its settings (defaults: the coordinator's)\n"
             "  --dp-noise Z         differential privacy (DP-FedAvg): noise multiplier; the cohort becomes\n"
             "                       Poisson sampling at rate cohort/clients\n"
             "  --dp-delta D --dp-target-epsilon E   its delta (default 1e-5) and budget\n"
             "  --byzantine F:KIND[:SCALE]  research: a fraction F of the clients (chosen by --seed, listed\n"
             "                       in OUT/byzantine.json) attack: signflip (x -10), gaussian (std 1),\n"
             "                       labelflip, alie (Baruch et al. 2019), ipm (Xie et al. 2020, eps 0.1);\n"
             "                       alie and ipm collude through OUT/byz/\n"
             "  --aggregator NAME    fedavg (default), median, trimmed_mean, krum, multikrum, bulyan,\n"
             "                       centered_clip; --agg-f F --agg-trim B --agg-m M --agg-tau T --agg-iters L\n"
             "  --dp-adaptive-quantile Q [--dp-clip-lr ETA]   adaptive clipping (Andrew et al. 2021) to\n"
             "                       quantile Q of the update norms, starting at --clip-norm\n"
             "  --min-updates M      updates needed per round (default: the cohort size; 70%% of it with\n"
             "                       --drop or DP under --secagg)\n"
             "  --round-timeout-ms T round deadline (default 60000)\n"
             "  --poll-ms P          client check-in interval while waiting (default 200)\n"
             "  --seed S             seed of the split, the initial model and the cohorts (default 1)\n"
             "  --data-dir DIR       Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist)\n"
             "  --json               one JSON line per round on stdout (default: also a table on stderr)\n"
             "  --secagg             secure aggregation (SecAgg+): the coordinator sees only the cohort's sum\n"
             "  --secagg-neighbors K neighbours per client (default: all, the complete graph)\n"
             "  --secagg-threshold T Shamir threshold (default: a majority of each neighbourhood)\n"
             "  --coordinator-opt=--OPTION[=VALUE]  passed to `fedc coordinator` as it is (repeatable),\n"
             "                       e.g. --coordinator-opt=--audit-log=false\n"
             "  --secagg-bucket S    with a robust --aggregator: SecAgg per random bucket of at least S\n"
             "                       clients, the rule over the buckets' means (default 5)\n"
             "  --drop SPEC          clients vanish from secure-aggregation stages with these chances, e.g.\n"
             "                       advertise:0.1,shares:0.05,masked:0.1,unmask:0.05\n");
}

/* Ranges of the numeric options. Where the coordinator or the client has a
 * limit, it is the same one here (the coordinator keeps lr, momentum and the
 * clip norm as floats up to 1e30; the Dirichlet split takes alpha up to 1e6),
 * so nothing fails after the PKI and the split were made. Timing bounds are
 * sane ones: a poll interval above a minute or a deadline above a day is a
 * typo in a local simulation. */
static int parse_real(const char *flag, const char *s, double lo, int lo_open, double hi, int hi_open, int as_float,
                      const char *range, double *out) {
  double v;
  if (cli_parse_double("fedc sim", flag, s, &v)) return 2;
  int ok = isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  if (ok && as_float) {
    /* In range as a double, so the conversion is defined; check what the
     * coordinator will hold (0.99999999 is 1.0f, 1e-50 is 0.0f). */
    v = (float)v;
    ok = (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  }
  if (!ok) {
    fprintf(stderr, "fedc sim: %s must be a number in %s, got '%s'\n", flag, range, s);
    return 2;
  }
  *out = v;
  return 0;
}

static int parse_int(const char *flag, const char *s, unsigned long long lo, unsigned long long hi,
                     unsigned long long *out) {
  unsigned long long v;
  if (cli_parse_u64("fedc sim", flag, s, &v)) return 2;
  if (v < lo || v > hi) {
    if (hi == ULLONG_MAX) fprintf(stderr, "fedc sim: %s must be at least %llu, got '%s'\n", flag, lo, s);
    else
      fprintf(stderr, "fedc sim: %s must be an integer in [%llu, %llu], got '%s'\n", flag, lo, hi, s);
    return 2;
  }
  *out = v;
  return 0;
}

static int parse_str(const char *flag, const char *s, char *out, size_t outlen) {
  if (strlen(s) >= outlen) {
    fprintf(stderr, "fedc sim: %s is longer than %zu characters\n", flag, outlen - 1);
    return 2;
  }
  memcpy(out, s, strlen(s) + 1);
  return 0;
}

/* 0 = run, -1 = --help printed, 2 = bad usage (already reported). */
static int parse(int argc, char **argv, sim_opts *o) {
  enum { O_OUT = 1, O_PER_PROC, O_CLIENTS, O_COHORT, O_ROUNDS, O_PART, O_ALPHA, O_MODEL, O_EPOCHS, O_BATCH, O_LR, O_MOM, O_CLIP,
         O_MINUP, O_RTO, O_POLL, O_SEED, O_DATA, O_JSON, O_SECAGG, O_SAK, O_SAT, O_DROP, O_SOPT, O_SOPT_END = O_SOPT + 4, O_BYZ, O_AGG,
         O_AGG_END = O_AGG + 5,
         O_NESTEROV, O_DP, O_DP_END = O_DP + 4, O_SAB, O_COPT, O_PROX };
  static const struct option lo[] = {
      {"out", 1, 0, O_OUT},         {"clients-per-process", 1, 0, O_PER_PROC},         {"clients", 1, 0, O_CLIENTS},   {"cohort", 1, 0, O_COHORT},
      {"rounds", 1, 0, O_ROUNDS},   {"partition", 1, 0, O_PART},    {"alpha", 1, 0, O_ALPHA},
      {"model", 1, 0, O_MODEL},     {"epochs", 1, 0, O_EPOCHS},     {"batch", 1, 0, O_BATCH},
      {"lr", 1, 0, O_LR},           {"momentum", 1, 0, O_MOM},      {"clip-norm", 1, 0, O_CLIP},
      {"min-updates", 1, 0, O_MINUP}, {"round-timeout-ms", 1, 0, O_RTO}, {"poll-ms", 1, 0, O_POLL},
      {"seed", 1, 0, O_SEED},       {"data-dir", 1, 0, O_DATA},     {"json", 0, 0, O_JSON},
      {"secagg", 0, 0, O_SECAGG},   {"secagg-neighbors", 1, 0, O_SAK}, {"secagg-threshold", 1, 0, O_SAT},
      {"secagg-bucket", 1, 0, O_SAB},   {"coordinator-opt", 1, 0, O_COPT}, {"prox-mu", 1, 0, O_PROX},
      {"drop", 1, 0, O_DROP},           {"byzantine", 1, 0, O_BYZ},
      {"server-optimizer", 1, 0, O_SOPT}, {"server-lr", 1, 0, O_SOPT + 1}, {"server-beta1", 1, 0, O_SOPT + 2},
      {"server-beta2", 1, 0, O_SOPT + 3}, {"server-tau", 1, 0, O_SOPT + 4}, {"server-nesterov", 0, 0, O_NESTEROV},
      {"aggregator", 1, 0, O_AGG},        {"agg-f", 1, 0, O_AGG + 1},      {"agg-trim", 1, 0, O_AGG + 2},
      {"agg-m", 1, 0, O_AGG + 3},         {"agg-tau", 1, 0, O_AGG + 4},    {"agg-iters", 1, 0, O_AGG + 5},
      {"dp-noise", 1, 0, O_DP},       {"dp-delta", 1, 0, O_DP + 1},    {"dp-target-epsilon", 1, 0, O_DP + 2},
      {"dp-adaptive-quantile", 1, 0, O_DP + 3}, {"dp-clip-lr", 1, 0, O_DP + 4},
      {"help", 0, 0, 'h'},          {0, 0, 0, 0}};
  memset(o, 0, sizeof *o);
  snprintf(o->out, sizeof o->out, "fedc-sim-out");
  o->clients = 20;
  o->per_process = 0;
  o->cohort = 5;
  o->rounds = 20;
  o->epochs = 1;
  o->batch = 32;
  o->seed = 1;
  o->round_timeout_ms = 60000;
  o->poll_ms = 200;
  o->lr = 0.05;
  o->alpha = 0.5;
  snprintf(o->partition, sizeof o->partition, "dirichlet");
  snprintf(o->model, sizeof o->model, "784-200-200-10");
  int opt, bad = 0;
  optind = 1;
  opterr = 0; /* one line of our own below, not getopt's plus the whole usage */
  while (!bad && (opt = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
    switch (opt) {
    case O_OUT: bad = parse_str("--out", optarg, o->out, sizeof o->out); break;
    case O_CLIENTS: bad = parse_int("--clients", optarg, 1, 1000, &o->clients); break;
    case O_PER_PROC: bad = parse_int("--clients-per-process", optarg, 1, 1000, &o->per_process); break;
    case O_COHORT: bad = parse_int("--cohort", optarg, 1, 1000, &o->cohort); break;
    case O_ROUNDS: bad = parse_int("--rounds", optarg, 1, ULLONG_MAX, &o->rounds); break;
    case O_PART: bad = parse_str("--partition", optarg, o->partition, sizeof o->partition); break;
    case O_ALPHA: bad = parse_real("--alpha", optarg, 0, 1, 1e6, 0, 0, "(0, 1e6]", &o->alpha); break;
    case O_MODEL: bad = parse_str("--model", optarg, o->model, sizeof o->model); break;
    case O_EPOCHS: bad = parse_int("--epochs", optarg, 1, UINT32_MAX, &o->epochs); break;
    case O_BATCH: bad = parse_int("--batch", optarg, 1, UINT32_MAX, &o->batch); break;
    case O_LR: bad = parse_real("--lr", optarg, 0, 1, 1e30, 0, 1, "(0, 1e30]", &o->lr); break;
    case O_MOM: bad = parse_real("--momentum", optarg, 0, 0, 1, 1, 1, "[0, 1)", &o->momentum); break;
    case O_PROX: bad = parse_real("--prox-mu", optarg, 0, 0, 1e30, 0, 1, "[0, 1e30]", &o->prox_mu); break;
    case O_CLIP:
      bad = parse_real("--clip-norm", optarg, 0, 0, 1e30, 0, 1, "[0, 1e30] (0 = off)", &o->clip_norm);
      o->clip_norm_set = 1;
      break;
    case O_MINUP: bad = parse_int("--min-updates", optarg, 0, 1000, &o->min_updates); break;
    case O_RTO: bad = parse_int("--round-timeout-ms", optarg, 1000, 86400000, &o->round_timeout_ms); break;
    case O_POLL: bad = parse_int("--poll-ms", optarg, 10, 60000, &o->poll_ms); break; /* the coordinator's range */
    case O_SEED: bad = cli_parse_u64("fedc sim", "--seed", optarg, &o->seed); break;
    case O_DATA: o->data_dir = optarg; break;
    case O_JSON: o->json = 1; break;
    case O_SECAGG: o->secagg = 1; break;
    case O_SOPT:
    case O_SOPT + 1:
    case O_SOPT + 2:
    case O_SOPT + 3:
    case O_SOPT_END: bad = parse_str(sopt_flags[opt - O_SOPT], optarg, o->sopt[opt - O_SOPT], sizeof o->sopt[0]); break;
    case O_AGG:
    case O_AGG + 1:
    case O_AGG + 2:
    case O_AGG + 3:
    case O_AGG + 4:
    case O_AGG_END: bad = parse_str(agg_flags[opt - O_AGG], optarg, o->agg[opt - O_AGG], sizeof o->agg[0]); break;
    case O_SAK: bad = parse_int("--secagg-neighbors", optarg, 0, 1000, &o->sa_k); break;
    case O_SAT: bad = parse_int("--secagg-threshold", optarg, 0, 1000, &o->sa_t); break;
    case O_SAB: bad = parse_int("--secagg-bucket", optarg, 3, 1000, &o->sa_bucket); break;
    case O_COPT:
      if (o->ncoord_opts >= 16 || strncmp(optarg, "--", 2) != 0) {
        fprintf(stderr, "fedc sim: --coordinator-opt=--OPTION[=VALUE] (at most 16)\n");
        bad = 2;
      } else {
        o->coord_opts[o->ncoord_opts++] = optarg;
      }
      break;
    case O_BYZ: {
      char kind[32];
      double sc = 0;
      int got = sscanf(optarg, "%lf:%31[a-z]:%lf", &o->byz_fraction, kind, &sc);
      if (got < 2 || !(o->byz_fraction > 0 && o->byz_fraction < 1) || fc_byz_parse(kind) < 0 || (got == 3 && !(sc > 0))) {
        fprintf(stderr, "fedc sim: --byzantine FRACTION:KIND[:SCALE], fraction in (0, 1), KIND signflip, gaussian, "
                        "labelflip, alie or ipm\n");
        bad = 2;
      } else if (got == 3) {
        snprintf(o->byz_kind, sizeof o->byz_kind, "%s:%g", kind, sc);
      } else {
        snprintf(o->byz_kind, sizeof o->byz_kind, "%s", kind);
      }
      break;
    }
    case O_DROP: {
      double d[6];
      char why[300];
      if (fc_sa_drop_parse(optarg, d, why, sizeof why) != FEDC_OK) {
        fprintf(stderr, "fedc sim: --drop: %s\n", why);
        bad = 2;
      } else {
        bad = parse_str("--drop", optarg, o->drop, sizeof o->drop);
      }
      break;
    }
    case O_NESTEROV: o->sopt_nesterov = 1; break;
    case O_DP:
    case O_DP + 1:
    case O_DP + 2:
    case O_DP + 3:
    case O_DP_END: bad = parse_str(argv[optind - 1], optarg, o->dp[opt - O_DP], sizeof o->dp[0]); break;
    case 'h': usage(stdout); return -1;
    case ':': fprintf(stderr, "fedc sim: %s needs a value\n", argv[optind - 1]); return 2;
    default: fprintf(stderr, "fedc sim: unknown option '%s' (see fedc sim --help)\n", argv[optind - 1]); return 2;
    }
  }
  if (bad) return 2;
  if (optind < argc) {
    fprintf(stderr, "fedc sim: unexpected argument '%s' (see fedc sim --help)\n", argv[optind]);
    return 2;
  }
  if (!o->per_process) o->per_process = o->clients <= 100 ? 1 : 25;
  if (o->cohort > o->clients) {
    fprintf(stderr, "fedc sim: --cohort %llu > --clients %llu: no round could be filled\n", o->cohort, o->clients);
    return 2;
  }
  if (fc_partition_kind_parse(o->partition) < 0) {
    fprintf(stderr, "fedc sim: unknown --partition '%s' (iid, dirichlet, shards)\n", o->partition);
    return 2;
  }
  if (o->drop[0] && !o->secagg) {
    fprintf(stderr, "fedc sim: --drop injects secure-aggregation dropouts: it needs --secagg\n");
    return 2;
  }
  if (o->secagg && o->cohort < FC_SA_MIN_COHORT) {
    fprintf(stderr, "fedc sim: --secagg needs --cohort of at least %d\n", FC_SA_MIN_COHORT);
    return 2;
  }
  if (!o->min_updates) o->min_updates = o->cohort;
  if (o->min_updates > o->clients) {
    /* The coordinator never starts a round with fewer live clients than that. */
    fprintf(stderr, "fedc sim: --min-updates %llu > --clients %llu: no round could ever complete\n", o->min_updates,
            o->clients);
    return 2;
  }
  return 0;
}

/* Prepare PKI and per-client data. The training set is loaded and checked
 * against the model first, so a missing data set or a model that does not fit
 * it leaves --out untouched, like a bad option. */
/* --byzantine: which clients attack, chosen by --seed: OUT/byzantine.txt
 * (names, for the clients) and OUT/byzantine.json (for the researcher). */
static int write_attackers(const sim_opts *o) {
  if (!o->byz_kind[0]) return 0;
  uint32_t *ix = malloc(o->clients * sizeof *ix);
  if (!ix) return -1;
  for (uint32_t i = 0; i < o->clients; i++) ix[i] = i;
  fc_rng rng;
  fc_rng_seed(&rng, o->seed * 0xA24BAED4963EE407ull + 17);
  fc_rng_shuffle_u32(&rng, ix, (uint32_t)o->clients);
  uint32_t k = (uint32_t)(o->byz_fraction * (double)o->clients + 0.5);
  char p[1100];
  snprintf(p, sizeof p, "%s/byzantine.txt", o->out);
  FILE *t = fopen(p, "w");
  json_t *names = json_array();
  for (uint32_t i = 0; t && i < k; i++) {
    char name[32];
    snprintf(name, sizeof name, "c%04u", ix[i]);
    fprintf(t, "%s\n", name);
    json_array_append_new(names, json_string(name));
  }
  int rc = t && fclose(t) == 0 ? 0 : -1;
  json_t *j = json_pack("{s:s,s:f,s:I,s:o}", "attack", o->byz_kind, "fraction", o->byz_fraction, "count",
                        (json_int_t)k, "clients", names);
  snprintf(p, sizeof p, "%s/byzantine.json", o->out);
  if (!j || json_dump_file(j, p, JSON_INDENT(1)) != 0) rc = -1;
  json_decref(j);
  free(ix);
  return rc;
}

static int prepare(const sim_opts *o, const fc_mlp *mlp) {
  char p[1024], err[400];
  snprintf(p, sizeof p, "%s/pki", o->out);
  if (access(p, F_OK) == 0) {
    fprintf(stderr, "fedc sim: %s exists: choose a new --out folder (nothing is overwritten)\n", o->out);
    return 2;
  }
  fc_dataset train;
  memset(&train, 0, sizeof train);
  uint32_t *owner = NULL, *idx = NULL;
  int rc = 1;
  if (fc_fmnist_load(o->data_dir, 1, &train, err, sizeof err) != 0) {
    fprintf(stderr, "fedc sim: %s (install Debian's dataset-fashion-mnist)\n", err);
    goto out;
  }
  if (train.dim != mlp->sizes[0] || train.classes > mlp->sizes[mlp->nlayers]) {
    fprintf(stderr, "fedc sim: model %s does not fit the data (%u features, %u classes)\n", o->model, train.dim,
            train.classes);
    rc = 2;
    goto out;
  }
  if (mkdirp(o->out) || (snprintf(p, sizeof p, "%s/logs", o->out), mkdirp(p)) ||
      (snprintf(p, sizeof p, "%s/data", o->out), mkdirp(p)) || write_attackers(o) != 0) {
    fprintf(stderr, "fedc sim: cannot create %s: %s\n", p, strerror(errno));
    goto out;
  }
  fprintf(stderr, "fedc sim: throwaway PKI for %llu clients...\n", o->clients);
  snprintf(p, sizeof p, "%s/pki", o->out);
  if (fc_pki_init(p, "sim", NULL, 0, 30, "ec", err, sizeof err) != FEDC_OK ||
      fc_pki_issue(p, "admin", "sim", NULL, 30, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "fedc sim: %s\n", err);
    goto out;
  }
  for (unsigned long long i = 0; i < o->clients; i++) {
    char name[32];
    snprintf(name, sizeof name, "c%04llu", i);
    if (fc_pki_issue(p, "client", name, NULL, 30, err, sizeof err) != FEDC_OK) {
      fprintf(stderr, "fedc sim: %s\n", err);
      goto out;
    }
  }
  fprintf(stderr, "fedc sim: splitting Fashion-MNIST (%s) into %llu parts...\n", o->partition, o->clients);
  fc_partition_opts po;
  fc_partition_opts_init(&po);
  po.kind = fc_partition_kind_parse(o->partition);
  po.nparts = (uint32_t)o->clients;
  po.alpha = o->alpha;
  po.seed = o->seed;
  owner = malloc(train.n * sizeof *owner);
  idx = malloc(train.n * sizeof *idx);
  if (!owner || !idx || fc_partition_assign(train.y, train.n, train.classes, &po, owner) != 0) {
    fprintf(stderr, "fedc sim: partitioning failed\n");
    goto out;
  }
  for (uint32_t part = 0; part < o->clients; part++) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < train.n; i++)
      if (owner[i] == part) idx[n++] = i;
    char img[1100], lbl[1100];
    snprintf(img, sizeof img, "%s/data/c%04u-images.idx", o->out, part);
    snprintf(lbl, sizeof lbl, "%s/data/c%04u-labels.idx", o->out, part);
    if (write_idx_part(img, lbl, &train, idx, n) != 0) {
      fprintf(stderr, "fedc sim: cannot write %s\n", img);
      goto out;
    }
  }
  rc = 0;
out:
  free(owner);
  free(idx);
  fc_dataset_free(&train);
  return rc;
}

typedef struct monitor {
  fc_channel *ch;
  fc_mlp mlp;
  fc_mlp_ws *ws;
  fc_dataset test;
  FILE *csv;
  uint64_t seen_round; /* last round id settled: reported, abandoned, or given up on */
  double t0;
  uint64_t completed;     /* rounds the coordinator completed, as far as polled */
  uint64_t reported;      /* of those, evaluated and reported (JSON line, CSV row) */
  uint64_t abandoned;
  unsigned eval_failures; /* consecutive failed evaluations of the next round */
} monitor;

/* A completed round whose model cannot be fetched is tried again on the next
 * polls (a download slot may be busy) before it is given up on. */
#define EVAL_ATTEMPTS 5

/* Fetch a version as admin and evaluate it on the test set. */
static int eval_version(monitor *m, uint64_t version, double *acc, double *loss, char *err, size_t errlen) {
  Fedc__V1__GetModelRequest req = FEDC__V1__GET_MODEL_REQUEST__INIT;
  req.version = version;
  fc_ccall *call = NULL;
  fc_status st;
  memset(&st, 0, sizeof st);
  int rc = fc_ccall_start(m->ch, "/fedc.v1.Admin/GetModel", FC_RPC_SERVER_STREAM, &req.base, 60000, &call, &st);
  if (rc == FEDC_OK) {
    fc_model_spec spec;
    float *w = NULL;
    uint64_t total = 0;
    rc = fc_tensor_stream_recv(call, 1ull << 32, NULL, &spec, &w, &total, NULL, &st);
    fc_ccall_destroy(call);
    if (rc == FEDC_OK) {
      if (total != fc_mlp_nparams(&m->mlp) * sizeof(float)) rc = FEDC_ERR_SHAPE;
      else
        rc = fc_mlp_eval(&m->mlp, m->ws, w, &m->test, NULL, m->test.n, acc, loss);
      free(w);
    }
  }
  if (rc != FEDC_OK) snprintf(err, errlen, "%s", st.detail[0] ? st.detail : fedc_strerror(rc));
  return rc;
}

/* Poll the round history; report each new round. Returns rounds completed,
 * -1 if the coordinator could not be asked. */
static int poll_rounds(monitor *m, const sim_opts *o) {
  Fedc__V1__RoundsRequest req = FEDC__V1__ROUNDS_REQUEST__INIT;
  req.limit = 1000;
  ProtobufCMessage *resp = NULL;
  fc_status st;
  if (fc_call_unary(m->ch, "/fedc.v1.Admin/Rounds", &req.base, &fedc__v1__rounds_response__descriptor, &resp, 10000,
                    &st) != FEDC_OK)
    return -1;
  Fedc__V1__RoundsResponse *r = (Fedc__V1__RoundsResponse *)resp;
  for (size_t i = 0; i < r->n_rounds; i++) {
    Fedc__V1__RoundRecord *rec = r->rounds[i];
    if (rec->round <= m->seen_round) continue;
    if (strcmp(rec->outcome, "completed") != 0) {
      m->seen_round = rec->round;
      m->abandoned++;
      fprintf(stderr, "fedc sim: round %llu abandoned: %s\n", (unsigned long long)rec->round, rec->reason);
      continue;
    }
    double acc = 0, loss = 0;
    char err[300];
    if (eval_version(m, rec->version, &acc, &loss, err, sizeof err) != FEDC_OK) {
      if (++m->eval_failures < EVAL_ATTEMPTS) break; /* rounds are reported in order: retry from here */
      fprintf(stderr, "fedc sim: cannot evaluate model v%llu: %s\n", (unsigned long long)rec->version, err);
      m->eval_failures = 0;
      m->seen_round = rec->round;
      m->completed++;
      continue;
    }
    m->eval_failures = 0;
    m->seen_round = rec->round;
    m->completed++;
    m->reported++;
    double secs = (double)(rec->ended_unix_ms - rec->started_unix_ms) / 1000.0;
    unsigned long long bytes = (unsigned long long)(rec->bytes_in + rec->bytes_out);
    cli_print_json(json_pack("{s:I,s:I,s:I,s:f,s:f,s:f,s:i,s:I,s:f,s:f}", "round", (json_int_t)m->completed, "round_id",
                             (json_int_t)rec->round, "version", (json_int_t)rec->version, "accuracy", acc, "loss",
                             loss, "train_loss", (double)rec->mean_train_loss, "participants",
                             (int)rec->participants, "bytes", (json_int_t)bytes, "seconds", secs, "elapsed_s",
                             fc_mono_s() - m->t0));
    fprintf(m->csv, "%llu,%llu,%.6f,%.6f,%.6f,%u,%llu,%.3f\n", (unsigned long long)m->completed,
            (unsigned long long)rec->version, acc, loss, (double)rec->mean_train_loss, rec->participants, bytes,
            secs);
    fflush(m->csv);
    if (!o->json)
      fprintf(stderr, "\rfedc sim: round %llu/%llu  accuracy %.2f%%  loss %.4f  (%u clients, %.2fs)      \n",
              (unsigned long long)m->completed, o->rounds, acc * 100, loss, rec->participants, secs);
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return (int)m->completed;
}

static void plot(const sim_opts *o) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "command -v gnuplot >/dev/null 2>&1 && gnuplot -e \"set terminal png size 900,500; "
           "set output '%s/curve.png'; set datafile separator ','; set key bottom right; "
           "set xlabel 'round'; set ylabel 'test accuracy'; set y2label 'test loss'; set ytics nomirror; "
           "set y2tics; set grid; plot '%s/rounds.csv' every ::1 using 1:3 with lines lw 2 title 'accuracy', "
           "'' every ::1 using 1:4 axes x1y2 with lines title 'loss'\" 2>/dev/null",
           o->out, o->out);
  if (system(cmd) != 0) fprintf(stderr, "fedc sim: gnuplot not available: no curve.png (rounds.csv is there)\n");
}

/* After a client exited 0, the coordinator's history is given this long
 * without a new completed round to show all --rounds before the sim gives up. */
#define FINISH_WAIT_S 10.0

/* The clients process i hosts: "c0007" or "c0025-c0049" (its log is logs/client-NAME.log). */
static void client_log_name(const sim_opts *o, unsigned long long i, char *out, size_t outlen) {
  unsigned long long first = i * o->per_process, last = first + o->per_process - 1;
  if (last >= o->clients) last = o->clients - 1;
  if (first == last) snprintf(out, outlen, "client-c%04llu", first);
  else snprintf(out, outlen, "clients-c%04llu-c%04llu", first, last);
}

/* Reap the clients that have ended. A client that exited 0 was told DONE (or
 * was stopped): the first one's name goes to ended[]. Each one that died (a
 * non-zero exit or a signal) is named on stderr with how it died. Returns
 * how many died. */
static unsigned long long reap_clients(const sim_opts *o, pid_t *kids, unsigned long long nkids, char *ended,
                                       size_t endedlen) {
  unsigned long long died = 0;
  for (unsigned long long i = 0; i < nkids; i++) {
    int status;
    if (kids[i] <= 0 || waitpid(kids[i], &status, WNOHANG) != kids[i]) continue;
    kids[i] = 0; /* reaped: its pid may be reused, never signal it later */
    char lname[48];
    client_log_name(o, i, lname, sizeof lname);
    const char *name = strchr(lname, '-') + 1; /* "c0001" or "c0025-c0049" */
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      if (!ended[0]) snprintf(ended, endedlen, "%s", name);
      continue;
    }
    died++;
    if (WIFSIGNALED(status))
      fprintf(stderr, "fedc sim: client %s was killed by signal %d (%s) (see %s/logs/%s.log)\n", name,
              WTERMSIG(status), strsignal(WTERMSIG(status)), o->out, lname);
    else
      fprintf(stderr, "fedc sim: client %s exited with status %d (see %s/logs/%s.log)\n", name,
              WIFEXITED(status) ? WEXITSTATUS(status) : -1, o->out, lname);
  }
  return died;
}

int cmd_sim(int argc, char **argv) {
  sim_opts o;
  int rc = parse(argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  fc_mlp mlp;
  if (fc_mlp_parse(o.model, &mlp) != 0) {
    fprintf(stderr, "fedc sim: bad --model '%s'\n", o.model);
    return 2;
  }
  if ((rc = prepare(&o, &mlp)) != 0) return rc;
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  fc_blas_set_threads(1);

  char pki[1024], state[1024], portf[1024], logp[1100], buf[17][64];
  snprintf(pki, sizeof pki, "%s/pki", o.out);
  snprintf(state, sizeof state, "%s/state", o.out);
  snprintf(portf, sizeof portf, "%s/coordinator.port", o.out);
  snprintf(logp, sizeof logp, "%s/logs/coordinator.log", o.out);
  snprintf(buf[0], 64, "%llu", o.rounds);
  /* DP: Poisson sampling (cohort 0, a rate below) and any round with an
   * update counts; with secure aggregation, min-updates is the fewest
   * survivors whose noise shares make up the noise: 70% of the cohort. */
  unsigned long long min_up = o.min_updates;
  if (o.dp[0][0] && o.min_updates == o.cohort) min_up = o.secagg ? (o.cohort * 7 + 9) / 10 : 1;
  /* Injected secure-aggregation dropouts: min-updates now holds at the
   * masked stage (issue 20), so the default (the cohort) would abandon
   * every round that lost a client; 70% of it, as under DP. */
  else if (o.drop[0] && o.min_updates == o.cohort) min_up = (o.cohort * 7 + 9) / 10;
  if (o.dp[0][0] && o.secagg && min_up < 3) min_up = 3;
  snprintf(buf[1], 64, "%llu", o.dp[0][0] ? 0ull : o.cohort);
  snprintf(buf[2], 64, "%llu", min_up);
  snprintf(buf[3], 64, "%.9g", o.lr); /* 9 digits: the float parse() checked, exactly */
  snprintf(buf[4], 64, "%llu", o.epochs);
  snprintf(buf[5], 64, "%llu", o.batch);
  snprintf(buf[6], 64, "%.9g", o.momentum);
  snprintf(buf[7], 64, "%.9g", o.clip_norm);
  snprintf(buf[8], 64, "%llu", o.seed);
  snprintf(buf[9], 64, "%llu", o.round_timeout_ms);
  snprintf(buf[10], 64, "%llu", o.poll_ms);
  snprintf(buf[11], 64, "%llu", o.clients);
  char *cargv[128] = {"fedc", "coordinator", "--federation", "sim", "--pki", pki, "--listen", "127.0.0.1:0",
                     "--port-file", portf, "--state", state, "--model", o.model, "--init-seed", buf[8],
                     "--rounds", buf[0], "--cohort", buf[1], "--min-updates", buf[2], "--min-clients", buf[11],
                     "--lr", buf[3], "--epochs", buf[4], "--batch", buf[5], "--momentum", buf[6],
                     "--seed", buf[8], "--round-timeout-ms", buf[9], "--pickup-timeout-ms", buf[9],
                     "--poll-ms", buf[10], "--threads", "2"};
  int ca_n = 0;
  while (cargv[ca_n]) ca_n++;
  /* Unless the user chose a clip norm, the coordinator's default applies. */
  if (o.clip_norm_set) cargv[ca_n++] = "--clip-norm", cargv[ca_n++] = buf[7];
  char prox[64];
  snprintf(prox, sizeof prox, "%.9g", o.prox_mu);
  if (o.prox_mu > 0) cargv[ca_n++] = "--prox-mu", cargv[ca_n++] = prox;
  /* Every client connects from 127.0.0.1: the per-address cap (256 by
   * default, against one host hogging the coordinator) must admit them all,
   * twice over: on a loaded machine a client's new connection can be
   * accepted before its timed-out one is closed. */
  char conns[32];
  snprintf(conns, sizeof conns, "%llu", 2 * o.clients + 64);
  cargv[ca_n++] = "--connections-per-address", cargv[ca_n++] = conns;
  /* ... and the per-address connect rate (100/s) must not lock the sim's own
   * admin connection out while a thousand clients connect. */
  cargv[ca_n++] = "--connect-rate", cargv[ca_n++] = "0";
  for (int i = 0; i < 5; i++)
    if (o.sopt[i][0]) cargv[ca_n++] = (char *)sopt_flags[i], cargv[ca_n++] = o.sopt[i];
  if (o.sopt_nesterov) cargv[ca_n++] = "--server-nesterov";
  for (int i = 0; i < 6; i++)
    if (o.agg[i][0]) cargv[ca_n++] = (char *)agg_flags[i], cargv[ca_n++] = o.agg[i];
  if (o.dp[0][0]) {
    /* DP: Poisson sampling at rate cohort / clients instead of a fixed cohort. */
    snprintf(buf[15], 64, "%.9g", (double)o.cohort / (double)o.clients);
    cargv[ca_n++] = "--dp-noise-multiplier", cargv[ca_n++] = o.dp[0];
    cargv[ca_n++] = "--cohort-fraction", cargv[ca_n++] = buf[15];
    if (o.dp[1][0]) cargv[ca_n++] = "--dp-delta", cargv[ca_n++] = o.dp[1];
    if (o.dp[2][0]) cargv[ca_n++] = "--dp-target-epsilon", cargv[ca_n++] = o.dp[2];
    if (o.dp[3][0]) cargv[ca_n++] = "--dp-adaptive-quantile", cargv[ca_n++] = o.dp[3];
    if (o.dp[4][0]) cargv[ca_n++] = "--dp-clip-lr", cargv[ca_n++] = o.dp[4];
  }
  if (o.secagg) {
    snprintf(buf[12], 64, "%llu", o.sa_k);
    snprintf(buf[13], 64, "%llu", o.sa_t);
    cargv[ca_n++] = "--secagg";
    cargv[ca_n++] = "--secagg-neighbors", cargv[ca_n++] = buf[12];
    cargv[ca_n++] = "--secagg-threshold", cargv[ca_n++] = buf[13];
    if (o.sa_bucket) {
      snprintf(buf[16], 64, "%llu", o.sa_bucket);
      cargv[ca_n++] = "--secagg-bucket", cargv[ca_n++] = buf[16];
    }
    /* Dropped clients are waited for up to a stage deadline: keep it short
     * in a local simulation, but long enough for every client's key
     * agreement and signature checks (about 1 ms of CPU per neighbour) to
     * run on this machine's cores: 5 s, plus 150 ms per cohort member. */
    uint64_t k = o.sa_k ? o.sa_k : o.cohort ? o.cohort - 1 : 0;
    snprintf(buf[14], 64, "%llu", (unsigned long long)(5000 + 150 * (k + 1)));
    cargv[ca_n++] = "--secagg-stage-ms", cargv[ca_n++] = buf[14];
  }
  for (int i = 0; i < o.ncoord_opts; i++) cargv[ca_n++] = (char *)o.coord_opts[i];
  pid_t coord = spawn(cargv, logp);
  unsigned long long nkids = (o.clients + o.per_process - 1) / o.per_process;
  pid_t *kids = calloc(nkids, sizeof *kids);
  monitor m;
  memset(&m, 0, sizeof m);
  int port = 0;
  if (coord < 0) {
    coord = 0;
    fprintf(stderr, "fedc sim: cannot start the coordinator: %s\n", strerror(errno));
    rc = 1;
    goto out;
  }
  for (int i = 0; i < 300 && !port && !g_interrupted; i++) {
    usleep(100000);
    port = read_port(portf);
    if (waitpid(coord, NULL, WNOHANG) == coord) {
      coord = 0; /* reaped: its pid may be reused, never signal it later */
      port = 0;
      break;
    }
  }
  if (!port || !kids) {
    fprintf(stderr, "fedc sim: coordinator did not start: see %s\n", logp);
    rc = 1;
    goto out;
  }
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  fprintf(stderr, "fedc sim: coordinator on %s; starting %llu clients...\n", addr, o.clients);
  char byz_names[1100], byz_dir[1100], byz_n[32], byz_f[32];
  snprintf(byz_names, sizeof byz_names, "%s/byzantine.txt", o.out);
  snprintf(byz_dir, sizeof byz_dir, "%s/byz", o.out);
  snprintf(byz_n, sizeof byz_n, "%llu", o.cohort);
  snprintf(byz_f, sizeof byz_f, "%llu", (unsigned long long)(o.byz_fraction * (double)o.cohort + 0.5));
  for (unsigned long long i = 0; i < nkids && !g_interrupted; i++) {
    unsigned long long first = i * o.per_process;
    unsigned long long count = first + o.per_process <= o.clients ? o.per_process : o.clients - first;
    char name[32], data[2200], clog[1100], group[64], lname[48];
    snprintf(name, sizeof name, "c%04llu", first);
    client_log_name(&o, i, lname, sizeof lname);
    snprintf(clog, sizeof clog, "%s/logs/%s.log", o.out, lname);
    char dseed[32];
    snprintf(dseed, sizeof dseed, "%llu", o.seed * 100003ull + first);
    /* One client: its own name. A group: --name is the prefix and %s in --data each client's name. */
    if (count == 1) {
      snprintf(data, sizeof data, "idx:%s/data/%s-images.idx,%s/data/%s-labels.idx", o.out, name, o.out, name);
    } else {
      snprintf(data, sizeof data, "idx:%s/data/%%s-images.idx,%s/data/%%s-labels.idx", o.out, o.out);
      snprintf(name, sizeof name, "c");
    }
    snprintf(group, sizeof group, "%llu:%llu", first, count);
    char *av[40] = {"fedc", "client", "--pki", pki, "--name", name, "--coordinator", addr, "--data", data, "--model",
                    o.model, "--max-retries", "60", "--drop-seed", dseed};
    int an = 16;
    if (count > 1) av[an++] = "--host-clients", av[an++] = group;
    if (o.drop[0]) av[an++] = "--secagg-drop", av[an++] = o.drop;
    if (o.byz_kind[0]) {
      av[an++] = "--byzantine", av[an++] = o.byz_kind;
      av[an++] = "--byzantine-names", av[an++] = byz_names;
      av[an++] = "--byzantine-dir", av[an++] = byz_dir;
      av[an++] = "--byzantine-cohort", av[an++] = byz_n;
      av[an++] = "--byzantine-colluders", av[an++] = byz_f;
    }
    av[an] = NULL;
    if ((kids[i] = spawn(av, clog)) < 0) {
      kids[i] = 0;
      fprintf(stderr, "fedc sim: cannot start client %s: %s\n", name, strerror(errno));
      rc = 1;
      goto out;
    }
  }
  /* Follow the rounds as admin. */
  fc_transport_init();
  fc_channel_opts co;
  fc_channel_opts_init(&co);
  char ca[1100], cert[1100], key[1100], err[400];
  snprintf(ca, sizeof ca, "%s/ca.crt", pki);
  snprintf(cert, sizeof cert, "%s/admin-sim.crt", pki);
  snprintf(key, sizeof key, "%s/admin-sim.key", pki);
  co.target = addr;
  co.tls.ca = ca;
  co.tls.cert = cert;
  co.tls.key = key;
  if (fc_channel_create(&co, &m.ch, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "fedc sim: %s\n", err);
    rc = 1;
    goto out_grpc;
  }
  if (fc_fmnist_load(o.data_dir, 0, &m.test, err, sizeof err) != 0) {
    fprintf(stderr, "fedc sim: %s\n", err);
    rc = 1;
    goto out_grpc;
  }
  m.mlp = mlp;
  m.ws = fc_mlp_ws_create(&mlp, 500);
  char csvp[1100];
  snprintf(csvp, sizeof csvp, "%s/rounds.csv", o.out);
  m.csv = fopen(csvp, "w");
  if (!m.ws || !m.csv) {
    rc = 1;
    goto out_grpc;
  }
  fprintf(m.csv, "round,version,accuracy,loss,train_loss,participants,bytes,seconds\n");
  m.t0 = fc_mono_s();
  double last_progress = 0, last_poll_ok = m.t0, finish_by = 0;
  char ended[32] = ""; /* the first client that exited 0 */
  rc = 0;
  /* Each pass: rounds first, then the processes (see the file header). */
  while (!g_interrupted) {
    uint64_t completed_before = m.completed;
    /* Give up only after a minute without one successful poll (a single slow
     * reply late in a long run is not "cannot reach"). */
    if (poll_rounds(&m, &o) >= 0) last_poll_ok = fc_mono_s();
    else if (fc_mono_s() - last_poll_ok > 60) {
      fprintf(stderr, "fedc sim: cannot reach the coordinator as admin\n");
      rc = 1;
      break;
    }
    if (m.completed >= o.rounds) break;
    if (waitpid(coord, NULL, WNOHANG) == coord) {
      fprintf(stderr, "fedc sim: coordinator exited unexpectedly: see %s\n", logp);
      coord = 0;
      rc = 1;
      break;
    }
    unsigned long long died = reap_clients(&o, kids, nkids, ended, sizeof ended);
    if (died) {
      /* A client that died cannot come back, and the coordinator starts a
       * round only with all --clients live (--min-clients). One last look
       * first: the rounds may all be done already. */
      if (poll_rounds(&m, &o) >= 0 && m.completed >= o.rounds) break;
      fprintf(stderr,
              "fedc sim: %llu client process%s died and no round can start without all %llu: stopping after %llu "
              "of %llu rounds\n",
              died, died == 1 ? "" : "es", o.clients, (unsigned long long)m.completed, o.rounds);
      rc = 1;
      break;
    }
    if (ended[0]) {
      /* The coordinator ended the federation (or someone stopped a client):
       * wait, bounded, for its history to show every round it completed. */
      if (!finish_by || m.completed > completed_before) finish_by = fc_mono_s() + FINISH_WAIT_S;
      else if (fc_mono_s() > finish_by) {
        fprintf(stderr,
                "fedc sim: client %s exited normally (the federation ended, or it was stopped) but the coordinator "
                "reports %llu of %llu rounds completed: see %s/logs/\n",
                ended, (unsigned long long)m.completed, o.rounds, o.out);
        rc = 1;
        break;
      }
    }
    if (o.json && fc_mono_s() - last_progress > 5) {
      fprintf(stderr, "fedc sim: %llu/%llu rounds, %.0fs\n", (unsigned long long)m.completed, o.rounds,
              fc_mono_s() - m.t0);
      last_progress = fc_mono_s();
    }
    usleep(200000);
  }
  if (g_interrupted) {
    fprintf(stderr, "fedc sim: interrupted after %llu rounds\n", (unsigned long long)m.completed);
    rc = 130;
  } else if (!rc && m.reported < o.rounds) {
    fprintf(stderr, "fedc sim: %llu of %llu rounds could not be evaluated (see above)\n",
            (unsigned long long)(o.rounds - m.reported), o.rounds);
    rc = 1;
  }
  if (!rc)
    fprintf(stderr, "fedc sim: %llu rounds in %.1fs; results in %s (rounds.csv, curve.png)\n",
            (unsigned long long)m.completed, fc_mono_s() - m.t0, o.out);
out_grpc:
  if (m.csv) fclose(m.csv);
  fc_mlp_ws_destroy(m.ws);
  fc_dataset_free(&m.test);
  fc_channel_destroy(m.ch);
  fc_transport_shutdown();
out:
  for (unsigned long long i = 0; kids && i < nkids; i++)
    if (kids[i] > 0) kill(kids[i], SIGTERM);
  if (coord > 0) kill(coord, SIGTERM);
  for (unsigned long long i = 0; kids && i < nkids; i++)
    if (kids[i] > 0) waitpid(kids[i], NULL, 0);
  if (coord > 0) waitpid(coord, NULL, 0);
  free(kids);
  if (m.reported) plot(&o);
  return rc;
}
