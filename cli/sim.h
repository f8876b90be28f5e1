/*
 * sim.h - the pieces of `fedc sim`, shared between its files:
 *   cmd_sim.c      options, starting the coordinator and the clients, the run
 *   sim_prepare.c  throwaway PKI, attackers, the one shared copy of the data
 *   sim_monitor.c  following the rounds as admin, evaluating each version
 *   sim_output.c   what the run leaves: rounds.csv, rounds.jsonl, config.json,
 *                  curve.gp + curve.png, the progress and final lines
 *   sim_backdoor.c the backdoor success rate of each version (--byzantine F:backdoor)
 *   sim_usage.c    the help text
 * Internal to the CLI (prefix sim_); nothing here is a public interface.
 */
#ifndef FEDC_CLI_SIM_H
#define FEDC_CLI_SIM_H

#include <stdint.h>
#include <stdio.h>

#include "client/data.h"
#include "common/mlp.h"
#include "transport/transport.h"

typedef struct sim_opts {
  char out[512];
  unsigned long long clients, cohort, rounds, epochs, batch, seed, min_updates, round_timeout_ms, poll_ms;
  unsigned long long min_clients; /* --min-clients (0: --clients) */
  /* Clients hosted per process (each still with its own certificate,
   * connection and thread): 0 = 1 up to 100 clients, else 25. */
  unsigned long long per_process;
  double lr, momentum, alpha, clip_norm;
  double prox_mu;    /* --prox-mu: FedProx mu, passed to the coordinator (0 = FedAvg) */
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
  int byz_unclipped; /* --byzantine-unclipped: the attackers skip the clip stage */
  /* Server optimizer, passed to the coordinator as given (it validates):
   * --server-optimizer, -lr, -beta1, -beta2, -tau ("" = its default), --server-nesterov. */
  char sopt[5][32];
  /* Aggregation rule and its settings, passed as given (the coordinator validates). */
  char agg[6][32];
  int sopt_nesterov;
  double model_average; /* --model-average: the coordinator keeps it and the sim evaluates it (0 = off) */
  /* Differential privacy: --dp-noise Z (0 = off) turns the cohort into Poisson
   * sampling at rate cohort/clients; --dp-delta, --dp-target-epsilon,
   * --dp-adaptive-quantile, --dp-clip-lr. */
  char dp[5][32];
  /* Federated evaluation: --eval-every N (0 = off), --eval-cohort K (0 = --eval-fraction F
   * of the clients), --eval-split holdout|test: each client's held-out data is 10% of its
   * partition, or its part of an IID split of the test set into --clients parts. */
  unsigned long long eval_every, eval_cohort;
  double eval_fraction;
  int eval_test;
  /* Model versions the coordinator keeps (its --keep-versions/--keep-every). */
  unsigned long long keep_versions, keep_every;
  int monitor_nice; /* --monitor-nice: the evaluating process's nice value once the federation runs */
  /* Async mode and the device-speed model (sim_speed.c): --mode, --device-speed C:N:S, --stragglers F. */
  char mode[8];
  char speed[96];
  double stragglers;
  /* The command line as given, for config.json. */
  int argc;
  char **argv;
} sim_opts;

extern const char *const sim_agg_flags[6];

/* ---- sim_speed.c ---- */
extern const char *const SIM_SPEED_HELP;
/* sim_usage.c: `fedc sim --help`. */
void sim_usage(FILE *f);
/* One of "mode", "device-speed", "stragglers": 0, or 2 after a one-line error. */
int sim_speed_option(sim_opts *o, const char *name, const char *arg);
/* After parsing: 0, or 2 after a one-line error. */
int sim_speed_check(const sim_opts *o);
/* Append to the coordinator's / a client's argv at n; the new n (buf: storage for the client's spec). */
int sim_speed_coord_args(const sim_opts *o, char **argv, int n);
int sim_speed_client_args(const sim_opts *o, char **argv, int n, char *buf, size_t buflen);
/* Its options in config.json's "options" (opt: a jansson object). */
struct json_t;
void sim_speed_config(struct json_t *opt, const sim_opts *o);
extern const char *const sim_sopt_flags[5];
extern const char *const sim_dp_flags[5];

/* ---- sim_prepare.c ---- */

/* Where the clients read their training data: one file pair all client
 * processes share, each taking its part (fedc client --partition ... --part). */
typedef struct sim_data {
  char images[1100], labels[1100];
  int copied; /* a decompressed copy in OUT/data: removed when the run ends */
} sim_data;

/* Refuses an existing --out (status 2) and a model that does not fit the
 * data (2) before anything is created; then the PKI, the attackers, the
 * shared data and OUT/data/partition.csv. 0, or 1 after a message. */
int sim_prepare(const sim_opts *o, const fc_mlp *mlp, sim_data *d);
/* Remove the shared copy (the clients have ended); the split stays
 * reproducible from config.json and is described by data/partition.csv. */
void sim_data_cleanup(const sim_data *d);

/* ---- sim_output.c ---- */

/* One evaluated round. NaN = unknown (empty in CSV, null in JSON, "-" on
 * the progress line): accuracy and loss of a version that could not be
 * evaluated, the train loss under distributed DP, epsilon without DP. */
typedef struct sim_row {
  uint64_t round, round_id, version;
  double accuracy, loss, train_loss, epsilon;
  double fed_accuracy, fed_loss; /* federated evaluation of the round's model (NaN: none) */
  double fed_examples;
  uint32_t fed_clients;
  double backdoor; /* backdoor success rate (sim_backdoor.c) */
  uint32_t participants;
  uint64_t bytes;
  double seconds, elapsed;
} sim_row;

typedef struct sim_out {
  FILE *csv, *jsonl;
} sim_out;

#define SIM_CSV_HEADER "round,version,accuracy,loss,train_loss,participants,bytes,seconds,epsilon,fed_accuracy,fed_loss,backdoor"
#define SIM_CSV_BACKDOOR_COL 12

/* OUT/rounds.csv (with its header) and OUT/rounds.jsonl. */
int sim_out_open(sim_out *so, const sim_opts *o);
/* A CSV row and a JSON line (also on stdout with --json; else one progress
 * line on stderr). */
void sim_out_row(sim_out *so, const sim_opts *o, const sim_row *r);
void sim_out_close(sim_out *so);

/* OUT/config.json: every option (resolved), the seed, the fedc version, the
 * command lines of the coordinator and of the first client, and (once the
 * coordinator answered) its effective server optimizer and DP settings. */
int sim_write_config(const sim_opts *o, char *const *coord_argv, char *const *client_argv, const char *sopt_text,
                     const char *dp_text);
/* The plot's one-line title: who trained what, how. */
void sim_title(const sim_opts *o, const char *sopt_text, char *out, size_t len);
/* OUT/curve.gp and, if gnuplot is installed, OUT/curve.png. */
void sim_plot(const sim_opts *o, const char *title);
/* The last line: rounds, time, where the results are and their size. */
void sim_final_line(const sim_opts *o, uint64_t completed, double seconds);

/* ---- sim_monitor.c ---- */

typedef struct sim_monitor {
  fc_channel *ch;
  fc_mlp mlp;
  fc_mlp_ws *ws;
  fc_dataset test;
  fc_dataset backdoor; /* the triggered test set (sim_backdoor.c); n = 0 without a backdoor attack */
  sim_out out;
  uint64_t seen_round; /* last round id settled: reported, abandoned, or given up on */
  double t0;
  uint64_t completed;     /* rounds the coordinator completed, as far as polled */
  uint64_t reported;      /* of those, evaluated and reported (JSON line, CSV row) */
  uint64_t pruned;        /* ... whose version was pruned before it was evaluated (a row without accuracy) */
  uint64_t abandoned;
  unsigned eval_failures; /* consecutive failed evaluations of the next round */
  int averaged;           /* evaluate each version's model average (--model-average), not the version */
} sim_monitor;

/* Poll the round history; report each new round. Returns rounds completed,
 * -1 if the coordinator could not be asked. */
int sim_poll_rounds(sim_monitor *m, const sim_opts *o);
/* The coordinator's server optimizer and DP settings (Admin Status); "" when
 * it does not say. 0 on success. */
int sim_coordinator_settings(sim_monitor *m, char *sopt, size_t soptlen, char *dp, size_t dplen);

/* ---- sim_backdoor.c ---- */

/* 1 if the attack is a backdoor. */
int sim_backdoor_active(const sim_opts *o);
/* The triggered copy of m->test, if the attack is a backdoor. 0, or -1
 * after a message. */
int sim_backdoor_prepare(sim_monitor *m, const sim_opts *o);
/* Backdoor success rate of these weights (NaN without a backdoor attack). */
double sim_backdoor_rate(sim_monitor *m, const float *weights);
/* "  backdoor 12.34%" for the progress line ("" without a backdoor attack). */
void sim_backdoor_progress(const sim_opts *o, double rate, char *out, size_t len);
/* The plot's backdoor series, appended to its first plot command. */
void sim_backdoor_plot(FILE *gp, const sim_opts *o);

#endif
