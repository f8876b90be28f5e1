/*
 * cmd_sim.c - `fedc sim`: a whole federation on this machine.
 *
 * Makes a throwaway PKI and one shared copy of Fashion-MNIST (sim_prepare.c),
 * starts the coordinator and N clients as separate processes on 127.0.0.1
 * over mutual TLS (each client reads only its own part of the shared copy),
 * and, as an admin, follows the rounds (sim_monitor.c): each new model
 * version is fetched (hash-verified) and evaluated on the 10,000-image test
 * set. A person sees one line per round on stderr; JSON goes to
 * OUT/rounds.jsonl, and to stdout only with --json. In --out (sim_output.c):
 *   config.json, rounds.csv, rounds.jsonl, curve.gp, curve.png, logs/, pki/,
 *   data/partition.csv, state/ (the coordinator's; by default the last 5 model
 *   versions and every 10th: --keep-versions, --keep-every).
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
 *     with --min-clients = --clients (by default), so no further round can start: the sim
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
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "cli/sim.h"
#include "client/byzantine.h"
#include "client/partition.h"
#include "common/blas.h"
#include "common/clock.h"
#include "fedc/error.h"
#include "secagg/secagg.h"

const char *const sim_agg_flags[6] = {"--aggregator", "--agg-f", "--agg-trim", "--agg-m", "--agg-tau", "--agg-iters"};
const char *const sim_sopt_flags[5] = {"--server-optimizer", "--server-lr", "--server-beta1", "--server-beta2",
                                       "--server-tau"};
const char *const sim_dp_flags[5] = {"--dp-noise", "--dp-delta", "--dp-target-epsilon", "--dp-adaptive-quantile",
                                     "--dp-clip-lr"};

/* Model versions kept by default: the last 5 (the sim evaluates each one
 * within a poll or two, so it is never that far behind) and every 10th.
 * The demo's 100 rounds keep 15 of 101 (was 231 MB of versions, docs). */
#define SIM_KEEP_VERSIONS 5
#define SIM_KEEP_EVERY 10

static volatile sig_atomic_t g_interrupted;
static void on_signal(int sig) {
  (void)sig;
  g_interrupted = 1;
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
         O_NESTEROV, O_DP, O_DP_END = O_DP + 4, O_SAB, O_COPT, O_KEEPV, O_KEEPE, O_MNICE, O_PROX, O_EVERY, O_ECOH, O_EFRAC,
         O_ESPLIT, O_BYZ_UNCLIP, O_SPEED, O_MINCL, O_AVG };
  static const struct option lo[] = {
      {"out", 1, 0, O_OUT},         {"clients-per-process", 1, 0, O_PER_PROC},         {"clients", 1, 0, O_CLIENTS},   {"cohort", 1, 0, O_COHORT},
      {"rounds", 1, 0, O_ROUNDS},   {"partition", 1, 0, O_PART},    {"alpha", 1, 0, O_ALPHA},
      {"model", 1, 0, O_MODEL},     {"epochs", 1, 0, O_EPOCHS},     {"batch", 1, 0, O_BATCH},
      {"lr", 1, 0, O_LR},           {"momentum", 1, 0, O_MOM},      {"clip-norm", 1, 0, O_CLIP},
      {"min-updates", 1, 0, O_MINUP}, {"min-clients", 1, 0, O_MINCL}, {"round-timeout-ms", 1, 0, O_RTO}, {"poll-ms", 1, 0, O_POLL},
      {"seed", 1, 0, O_SEED},       {"data-dir", 1, 0, O_DATA},     {"json", 0, 0, O_JSON},
      {"secagg", 0, 0, O_SECAGG},   {"secagg-neighbors", 1, 0, O_SAK}, {"secagg-threshold", 1, 0, O_SAT},
      {"secagg-bucket", 1, 0, O_SAB},   {"coordinator-opt", 1, 0, O_COPT}, {"prox-mu", 1, 0, O_PROX},
      {"drop", 1, 0, O_DROP},           {"byzantine", 1, 0, O_BYZ}, {"byzantine-unclipped", 0, 0, O_BYZ_UNCLIP},
      {"server-optimizer", 1, 0, O_SOPT}, {"server-lr", 1, 0, O_SOPT + 1}, {"server-beta1", 1, 0, O_SOPT + 2},
      {"server-beta2", 1, 0, O_SOPT + 3}, {"server-tau", 1, 0, O_SOPT + 4}, {"server-nesterov", 0, 0, O_NESTEROV},
      {"model-average", 1, 0, O_AVG},
      {"aggregator", 1, 0, O_AGG},        {"agg-f", 1, 0, O_AGG + 1},      {"agg-trim", 1, 0, O_AGG + 2},
      {"agg-m", 1, 0, O_AGG + 3},         {"agg-tau", 1, 0, O_AGG + 4},    {"agg-iters", 1, 0, O_AGG + 5},
      {"dp-noise", 1, 0, O_DP},       {"dp-delta", 1, 0, O_DP + 1},    {"dp-target-epsilon", 1, 0, O_DP + 2},
      {"dp-adaptive-quantile", 1, 0, O_DP + 3}, {"dp-clip-lr", 1, 0, O_DP + 4},
      {"keep-versions", 1, 0, O_KEEPV}, {"keep-every", 1, 0, O_KEEPE}, {"monitor-nice", 1, 0, O_MNICE},
      {"eval-every", 1, 0, O_EVERY},    {"eval-cohort", 1, 0, O_ECOH},   {"eval-fraction", 1, 0, O_EFRAC},
      {"eval-split", 1, 0, O_ESPLIT},   {"mode", 1, 0, O_SPEED}, {"device-speed", 1, 0, O_SPEED}, {"stragglers", 1, 0, O_SPEED},
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
  o->keep_versions = SIM_KEEP_VERSIONS;
  o->keep_every = SIM_KEEP_EVERY;
  o->eval_fraction = 0.5;
  o->argc = argc;
  o->argv = argv;
  snprintf(o->partition, sizeof o->partition, "dirichlet");
  snprintf(o->model, sizeof o->model, "784-200-200-10");
  int opt, bad = 0;
  optind = 1;
  opterr = 0; /* one line of our own below, not getopt's plus the whole usage */
  int li = 0;
  while (!bad && (opt = getopt_long(argc, argv, ":h", lo, &li)) != -1) {
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
    case O_MINCL: bad = parse_int("--min-clients", optarg, 1, 1000, &o->min_clients); break;
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
    case O_SOPT_END: bad = parse_str(sim_sopt_flags[opt - O_SOPT], optarg, o->sopt[opt - O_SOPT], sizeof o->sopt[0]); break;
    case O_AGG:
    case O_AGG + 1:
    case O_AGG + 2:
    case O_AGG + 3:
    case O_AGG + 4:
    case O_AGG_END: bad = parse_str(sim_agg_flags[opt - O_AGG], optarg, o->agg[opt - O_AGG], sizeof o->agg[0]); break;
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
                        "labelflip, alie, ipm or backdoor\n");
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
    case O_EVERY: bad = parse_int("--eval-every", optarg, 0, UINT32_MAX, &o->eval_every); break;
    case O_ECOH: bad = parse_int("--eval-cohort", optarg, 0, 1000, &o->eval_cohort); break;
    case O_EFRAC: bad = parse_real("--eval-fraction", optarg, 0, 1, 1, 0, 0, "(0, 1]", &o->eval_fraction); break;
    case O_ESPLIT:
      if (strcmp(optarg, "holdout") && strcmp(optarg, "test")) {
        fprintf(stderr, "fedc sim: --eval-split must be holdout or test, got '%s'\n", optarg);
        bad = 2;
      }
      o->eval_test = strcmp(optarg, "test") == 0;
      break;
    case O_BYZ_UNCLIP: o->byz_unclipped = 1; break;
    case O_SPEED: bad = sim_speed_option(o, lo[li].name, optarg); break; /* sim_speed.c */
    case O_KEEPV: bad = parse_int("--keep-versions", optarg, 0, ULLONG_MAX, &o->keep_versions); break;
    case O_KEEPE: bad = parse_int("--keep-every", optarg, 0, ULLONG_MAX, &o->keep_every); break;
    case O_AVG:
      bad = parse_real("--model-average", optarg, 0, 0, 1, 1, 1, "[0, 1)", &o->model_average);
      break;
    case O_MNICE: {
      unsigned long long v = 0;
      bad = parse_int("--monitor-nice", optarg, 0, 19, &v);
      o->monitor_nice = (int)v;
      break;
    }
    case O_DP:
    case O_DP + 1:
    case O_DP + 2:
    case O_DP + 3:
    case O_DP_END: bad = parse_str(argv[optind - 1], optarg, o->dp[opt - O_DP], sizeof o->dp[0]); break;
    case 'h': sim_usage(stdout); return -1;
    default: return cli_option_error("fedc sim", opt, argv, lo); /* also ':' */
    }
  }
  if (bad || sim_speed_check(o)) return 2;
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
  if (o->byz_unclipped && !o->byz_kind[0]) {
    fprintf(stderr, "fedc sim: --byzantine-unclipped needs --byzantine\n");
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
  if (o->eval_cohort > o->clients) {
    fprintf(stderr, "fedc sim: --eval-cohort %llu > --clients %llu\n", o->eval_cohort, o->clients);
    return 2;
  }
  if (!o->min_updates) o->min_updates = o->cohort;
  if (o->min_updates > o->clients) {
    /* The coordinator never starts a round with fewer live clients than that. */
    fprintf(stderr, "fedc sim: --min-updates %llu > --clients %llu: no round could ever complete\n", o->min_updates,
            o->clients);
    return 2;
  }
  if (o->min_clients > o->clients) {
    fprintf(stderr, "fedc sim: --min-clients %llu > --clients %llu: no round could ever start\n", o->min_clients,
            o->clients);
    return 2;
  }
  return 0;
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

/* One client process's command line: the shared data, its part of it (a
 * group takes consecutive parts), and the research flags. */
typedef struct client_cmd {
  char name[32], data[2300], group[64], lname[48], dseed[32], part[32], parts[32], alpha[48], pseed[32];
  char ddir[1100];
  char byz_names[1100], byz_dir[1100], byz_n[32], byz_f[32];
  char speed[160];
  char *av[58];
} client_cmd;

static void client_cmd_make(const sim_opts *o, unsigned long long i, const char *pki, const char *addr,
                            const sim_data *d, client_cmd *c) {
  unsigned long long first = i * o->per_process;
  unsigned long long count = first + o->per_process <= o->clients ? o->per_process : o->clients - first;
  client_log_name(o, i, c->lname, sizeof c->lname);
  snprintf(c->dseed, sizeof c->dseed, "%llu", o->seed * 100003ull + first);
  snprintf(c->data, sizeof c->data, "idx:%s,%s", d->images, d->labels);
  snprintf(c->parts, sizeof c->parts, "%llu", o->clients);
  snprintf(c->alpha, sizeof c->alpha, "%.17g", o->alpha); /* the double the sim split with, exactly */
  snprintf(c->pseed, sizeof c->pseed, "%llu", o->seed);
  /* One client: its own name and part. A group: --name is the prefix, and
   * --host-clients FIRST:COUNT names them and gives them their parts. */
  if (count == 1) snprintf(c->name, sizeof c->name, "c%04llu", first);
  else
    snprintf(c->name, sizeof c->name, "c");
  snprintf(c->part, sizeof c->part, "%llu", first);
  snprintf(c->group, sizeof c->group, "%llu:%llu", first, count);
  char **av = c->av;
  int n = 0;
  const char *fixed[] = {"fedc", "client", "--pki", pki, "--name", c->name, "--coordinator", addr, "--data", c->data,
                         "--partition", o->partition, "--parts", c->parts, "--alpha", c->alpha,
                         "--partition-seed", c->pseed, "--model", o->model, "--max-retries", "60",
                         "--drop-seed", c->dseed};
  for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++) av[n++] = (char *)fixed[k];
  if (count > 1) av[n++] = "--host-clients", av[n++] = c->group;
  else
    av[n++] = "--part", av[n++] = c->part;
  if (o->drop[0]) av[n++] = "--secagg-drop", av[n++] = (char *)o->drop;
  /* Federated evaluation: its part of the test set (one part per client),
   * or the client's default held-out 10%; without it every example trains,
   * as before evaluation existed. */
  if (o->eval_every && o->eval_test) {
    av[n++] = "--eval-data", av[n++] = "fmnist-test", av[n++] = "--eval-parts", av[n++] = c->parts;
    snprintf(c->ddir, sizeof c->ddir, "%s", o->data_dir ? o->data_dir : "");
    if (c->ddir[0]) av[n++] = "--data-dir", av[n++] = c->ddir;
  } else if (!o->eval_every) {
    av[n++] = "--eval-fraction", av[n++] = "0";
  }
  if (o->byz_kind[0]) {
    snprintf(c->byz_names, sizeof c->byz_names, "%s/byzantine.txt", o->out);
    snprintf(c->byz_dir, sizeof c->byz_dir, "%s/byz", o->out);
    snprintf(c->byz_n, sizeof c->byz_n, "%llu", o->cohort);
    snprintf(c->byz_f, sizeof c->byz_f, "%llu", (unsigned long long)(o->byz_fraction * (double)o->cohort + 0.5));
    av[n++] = "--byzantine", av[n++] = (char *)o->byz_kind;
    av[n++] = "--byzantine-names", av[n++] = c->byz_names;
    av[n++] = "--byzantine-dir", av[n++] = c->byz_dir;
    av[n++] = "--byzantine-cohort", av[n++] = c->byz_n;
    av[n++] = "--byzantine-colluders", av[n++] = c->byz_f;
    if (o->byz_unclipped) av[n++] = "--byzantine-unclipped";
  }
  n = sim_speed_client_args(o, av, n, c->speed, sizeof c->speed); /* --device-speed */
  av[n] = NULL;
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
  sim_data data;
  if ((rc = sim_prepare(&o, &mlp, &data)) != 0) return rc;
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  fc_blas_set_threads(1);
  double t_start = fc_mono_s();

  char pki[1024], state[1024], portf[1024], logp[1100], buf[19][64];
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
  snprintf(buf[11], 64, "%llu", o.min_clients ? o.min_clients : o.clients);
  /* Room for every option at once: 42 fixed and up to 90 optional words
   * (counted with --model-average), and the NULL. */
  char *cargv[192] = {"fedc", "coordinator", "--federation", "sim", "--pki", pki, "--listen", "127.0.0.1:0",
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
    if (o.sopt[i][0]) cargv[ca_n++] = (char *)sim_sopt_flags[i], cargv[ca_n++] = o.sopt[i];
  if (o.sopt_nesterov) cargv[ca_n++] = "--server-nesterov";
  char avg[32];
  snprintf(avg, sizeof avg, "%.9g", o.model_average);
  if (o.model_average > 0) cargv[ca_n++] = "--model-average", cargv[ca_n++] = avg;
  for (int i = 0; i < 6; i++)
    if (o.agg[i][0]) cargv[ca_n++] = (char *)sim_agg_flags[i], cargv[ca_n++] = o.agg[i];
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
  /* Model versions: the sim's default keeps a few, a coordinator's keeps
   * all (--keep-versions 0: then --keep-every means nothing and is not passed). */
  snprintf(buf[17], 64, "%llu", o.keep_versions);
  snprintf(buf[18], 64, "%llu", o.keep_every);
  if (o.keep_versions) {
    cargv[ca_n++] = "--keep-versions", cargv[ca_n++] = buf[17];
    cargv[ca_n++] = "--keep-every", cargv[ca_n++] = buf[18];
  }
  char evb[3][64];
  if (o.eval_every) {
    /* Federated evaluation: the round deadline is its deadline too; under
     * DP its totals get the training's noise multiplier (and cost epsilon). */
    snprintf(evb[0], 64, "%llu", o.eval_every);
    snprintf(evb[1], 64, "%llu", o.eval_cohort);
    snprintf(evb[2], 64, "%.9g", o.eval_fraction);
    cargv[ca_n++] = "--eval-every", cargv[ca_n++] = evb[0];
    cargv[ca_n++] = "--eval-cohort", cargv[ca_n++] = evb[1];
    cargv[ca_n++] = "--eval-fraction", cargv[ca_n++] = evb[2];
    cargv[ca_n++] = "--eval-timeout-ms", cargv[ca_n++] = buf[9];
    if (o.eval_cohort == 1) cargv[ca_n++] = "--eval-min", cargv[ca_n++] = "1";
    if (o.dp[0][0]) cargv[ca_n++] = "--eval-dp-noise", cargv[ca_n++] = o.dp[0];
  }
  ca_n = sim_speed_coord_args(&o, cargv, ca_n); /* --mode async */
  for (int i = 0; i < o.ncoord_opts; i++) cargv[ca_n++] = (char *)o.coord_opts[i];
  sim_write_config(&o, cargv, NULL, NULL, NULL);
  pid_t coord = spawn(cargv, logp);
  unsigned long long nkids = (o.clients + o.per_process - 1) / o.per_process;
  pid_t *kids = calloc(nkids, sizeof *kids);
  client_cmd *cc = malloc(sizeof *cc);
  sim_monitor m;
  memset(&m, 0, sizeof m);
  m.averaged = o.model_average > 0;
  char sopt_text[200] = "", dp_text[300] = "", title[400];
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
  if (!port || !kids || !cc) {
    fprintf(stderr, "fedc sim: coordinator did not start: see %s\n", logp);
    rc = 1;
    goto out;
  }
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  fprintf(stderr, "fedc sim: coordinator on %s; starting %llu clients...\n", addr, o.clients);
  for (unsigned long long i = 0; i < nkids && !g_interrupted; i++) {
    char clog[1100];
    client_cmd_make(&o, i, pki, addr, &data, cc);
    snprintf(clog, sizeof clog, "%s/logs/%s.log", o.out, cc->lname);
    if ((kids[i] = spawn(cc->av, clog)) < 0) {
      kids[i] = 0;
      fprintf(stderr, "fedc sim: cannot start client %s: %s\n", cc->lname, strerror(errno));
      rc = 1;
      goto out;
    }
  }
  /* Follow the rounds as admin. --monitor-nice: at a lower priority, so the
   * evaluation of every version (an observer) takes no CPU the federation
   * wants (async publishes several versions a second). Every process of the
   * federation is started by now at the usual priority; on Linux this
   * lowers the calling thread and the threads it starts. The versions'
   * times are the coordinator's, so a late evaluation changes no figure;
   * a monitor that falls --keep-versions behind loses rows' accuracy. */
  errno = 0;
  int nice_now = getpriority(PRIO_PROCESS, 0); /* -1 is a value too: errno says */
  if (o.monitor_nice && !errno && o.monitor_nice > nice_now && setpriority(PRIO_PROCESS, 0, o.monitor_nice) != 0)
    fprintf(stderr, "fedc sim: cannot lower the monitor's priority: %s\n", strerror(errno)); /* only ever lowered */
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
  if (!m.ws || sim_backdoor_prepare(&m, &o) != 0 || sim_out_open(&m.out, &o) != 0) {
    rc = 1;
    goto out_grpc;
  }
  /* What the coordinator made of the options it was given (its defaults
   * for the rest), for config.json and the plot's title. */
  if (sim_coordinator_settings(&m, sopt_text, sizeof sopt_text, dp_text, sizeof dp_text) == 0) {
    client_cmd_make(&o, 0, pki, addr, &data, cc);
    sim_write_config(&o, cargv, cc->av, sopt_text, dp_text);
  }
  m.t0 = fc_mono_s();
  double last_progress = 0, last_poll_ok = m.t0, finish_by = 0;
  char ended[32] = ""; /* the first client that exited 0 */
  rc = 0;
  /* Each pass: rounds first, then the processes (see the file header). */
  while (!g_interrupted) {
    uint64_t completed_before = m.completed;
    /* Give up only after a minute without one successful poll (a single slow
     * reply late in a long run is not "cannot reach"). */
    if (sim_poll_rounds(&m, &o) >= 0) last_poll_ok = fc_mono_s();
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
      if (sim_poll_rounds(&m, &o) >= 0 && m.completed >= o.rounds) break;
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
  } else if (!rc && m.reported + m.pruned < o.rounds) {
    fprintf(stderr, "fedc sim: %llu of %llu rounds could not be evaluated (see above)\n",
            (unsigned long long)(o.rounds - m.reported - m.pruned), o.rounds);
    rc = 1;
  }
out_grpc:
  sim_out_close(&m.out);
  fc_mlp_ws_destroy(m.ws);
  fc_dataset_free(&m.test);
  fc_dataset_free(&m.backdoor);
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
  free(cc);
  sim_data_cleanup(&data);
  if (m.completed) {
    sim_title(&o, sopt_text, title, sizeof title);
    sim_plot(&o, title);
  }
  sim_final_line(&o, m.completed, fc_mono_s() - t_start);
  return rc;
}
