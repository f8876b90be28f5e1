/*
 * sim_output.c - what a `fedc sim` run leaves in --out and shows a person.
 *
 *   | file         | content                                                    |
 *   |--------------|------------------------------------------------------------|
 *   | config.json  | every option as resolved (defaults included), the seed,    |
 *   |              | the fedc version, the coordinator's and the first client's |
 *   |              | command lines, the coordinator's effective server          |
 *   |              | optimizer and DP settings                                  |
 *   | rounds.csv   | SIM_CSV_HEADER, one row per completed round                |
 *   | rounds.jsonl | the same rounds, one JSON object per line                  |
 *   | curve.gp     | the gnuplot script (run it in --out to redraw)             |
 *   | curve.png    | accuracy and loss per round (and epsilon with DP, backdoor |
 *   |              | success with a backdoor attack), titled                    |
 *   |              | with a one-line summary of the settings                    |
 *
 * Unknown is never 0: a value the sim does not know (the train loss under
 * distributed DP, where clients keep it to themselves; the accuracy of a
 * version pruned before it could be evaluated; epsilon without DP) is NaN in
 * sim_row and becomes an empty CSV cell, JSON null and "-" on the progress
 * line.
 *
 * stdout carries JSON only, and only with --json; a person gets one line per
 * round on stderr (no carriage returns) and a last line saying where the
 * results are and how large they are.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_common.h"
#include "cli/plot.h"
#include "cli/sim.h"
#include "coordinator/coordinator.h"

/* ---- rounds ---- */

int sim_out_open(sim_out *so, const sim_opts *o) {
  char p[1100];
  memset(so, 0, sizeof *so);
  snprintf(p, sizeof p, "%s/rounds.csv", o->out);
  so->csv = fopen(p, "w");
  snprintf(p, sizeof p, "%s/rounds.jsonl", o->out);
  so->jsonl = fopen(p, "w");
  if (!so->csv || !so->jsonl) {
    fprintf(stderr, "fedc sim: cannot write %s: %s\n", p, strerror(errno));
    sim_out_close(so);
    return -1;
  }
  fprintf(so->csv, "%s\n", SIM_CSV_HEADER);
  fflush(so->csv);
  return 0;
}

void sim_out_close(sim_out *so) {
  if (so->csv) fclose(so->csv);
  if (so->jsonl) fclose(so->jsonl);
  so->csv = so->jsonl = NULL;
}

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* A CSV cell: the value, or nothing. */
static const char *cell(double v, const char *fmt, char *buf, size_t len) {
  if (!isfinite(v)) return "";
  snprintf(buf, len, fmt, v);
  return buf;
}

void sim_out_row(sim_out *so, const sim_opts *o, const sim_row *r) {
  char a[32], l[32], t[32], e[32], fa[32], fl[32], b[32];
  fprintf(so->csv, "%llu,%llu,%s,%s,%s,%u,%llu,%.3f,%s,%s,%s,%s\n", (unsigned long long)r->round,
          (unsigned long long)r->version, cell(r->accuracy, "%.6f", a, sizeof a), cell(r->loss, "%.6f", l, sizeof l),
          cell(r->train_loss, "%.6f", t, sizeof t), r->participants, (unsigned long long)r->bytes, r->seconds,
          cell(r->epsilon, "%.6f", e, sizeof e), cell(r->fed_accuracy, "%.6f", fa, sizeof fa),
          cell(r->fed_loss, "%.6f", fl, sizeof fl), cell(r->backdoor, "%.6f", b, sizeof b));
  fflush(so->csv);
  json_t *j = json_object();
  json_object_set_new(j, "round", json_integer((json_int_t)r->round));
  json_object_set_new(j, "round_id", json_integer((json_int_t)r->round_id));
  json_object_set_new(j, "version", json_integer((json_int_t)r->version));
  json_object_set_new(j, "accuracy", jnum(r->accuracy));
  json_object_set_new(j, "loss", jnum(r->loss));
  json_object_set_new(j, "train_loss", jnum(r->train_loss));
  json_object_set_new(j, "participants", json_integer(r->participants));
  json_object_set_new(j, "bytes", json_integer((json_int_t)r->bytes));
  json_object_set_new(j, "seconds", json_real(r->seconds));
  json_object_set_new(j, "elapsed_s", json_real(r->elapsed));
  json_object_set_new(j, "epsilon", jnum(r->epsilon));
  if (o->eval_every) { /* federated evaluation of this round's model, beside the test set's */
    json_object_set_new(j, "fed_accuracy", jnum(r->fed_accuracy));
    json_object_set_new(j, "fed_loss", jnum(r->fed_loss));
    json_object_set_new(j, "fed_examples", jnum(r->fed_examples));
    json_object_set_new(j, "fed_clients", json_integer(r->fed_clients));
  }
  json_object_set_new(j, "backdoor", jnum(r->backdoor));
  char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s) {
    fprintf(so->jsonl, "%s\n", s);
    fflush(so->jsonl);
    if (o->json) {
      printf("%s\n", s);
      fflush(stdout);
    }
    free(s);
  }
  json_decref(j);
  if (o->json) return;
  char acc[32] = "-", loss[32] = "-", eps[48] = "", fed[48] = "", bd[48];
  if (o->eval_every && isfinite(r->fed_accuracy))
    snprintf(fed, sizeof fed, "  federated %.2f%% (%u clients)", r->fed_accuracy * 100, r->fed_clients);
  sim_backdoor_progress(o, r->backdoor, bd, sizeof bd);
  if (isfinite(r->accuracy)) snprintf(acc, sizeof acc, "%.2f%%", r->accuracy * 100);
  if (isfinite(r->loss)) snprintf(loss, sizeof loss, "%.4f", r->loss);
  if (o->dp[0][0] && isfinite(r->epsilon)) snprintf(eps, sizeof eps, "  epsilon %.3f", r->epsilon);
  else if (o->dp[0][0])
    snprintf(eps, sizeof eps, "  epsilon -");
  fprintf(stderr, "fedc sim: round %llu/%llu  accuracy %s%s  loss %s%s%s  %u clients  %.2fs  (%.0fs elapsed)\n",
          (unsigned long long)r->round, o->rounds, acc, bd, loss, fed, eps, r->participants, r->seconds, r->elapsed);
}

/* ---- config.json ---- */

static json_t *jstr_or_null(const char *s) { return s && s[0] ? json_string(s) : json_null(); }

static json_t *jargv(const char *first, char *const *argv) {
  json_t *a = json_array();
  if (first) json_array_append_new(a, json_string(first));
  for (size_t i = 0; argv && argv[i]; i++) json_array_append_new(a, json_string(argv[i]));
  return a;
}

int sim_write_config(const sim_opts *o, char *const *coord_argv, char *const *client_argv, const char *sopt_text,
                     const char *dp_text) {
  fc_coord_cfg d;
  fc_coord_cfg_defaults(&d);
  json_t *opt = json_object();
  /* Keys are the flags without "--"; null: left to the coordinator (its
   * effective value is under "coordinator"). */
  json_object_set_new(opt, "out", json_string(o->out));
  json_object_set_new(opt, "clients", json_integer((json_int_t)o->clients));
  json_object_set_new(opt, "clients-per-process", json_integer((json_int_t)o->per_process));
  json_object_set_new(opt, "cohort", json_integer((json_int_t)o->cohort));
  json_object_set_new(opt, "rounds", json_integer((json_int_t)o->rounds));
  json_object_set_new(opt, "partition", json_string(o->partition));
  json_object_set_new(opt, "alpha", json_real(o->alpha));
  json_object_set_new(opt, "model", json_string(o->model));
  json_object_set_new(opt, "epochs", json_integer((json_int_t)o->epochs));
  json_object_set_new(opt, "batch", json_integer((json_int_t)o->batch));
  json_object_set_new(opt, "lr", json_real(o->lr));
  json_object_set_new(opt, "momentum", json_real(o->momentum));
  json_object_set_new(opt, "prox-mu", json_real(o->prox_mu));
  json_object_set_new(opt, "clip-norm", json_real(o->clip_norm_set ? o->clip_norm : d.clip_norm));
  for (int i = 0; i < 5; i++) json_object_set_new(opt, sim_sopt_flags[i] + 2, jstr_or_null(o->sopt[i]));
  json_object_set_new(opt, "server-nesterov", json_boolean(o->sopt_nesterov));
  json_object_set_new(opt, "model-average", json_real(o->model_average));
  for (int i = 0; i < 6; i++) json_object_set_new(opt, sim_agg_flags[i] + 2, jstr_or_null(o->agg[i]));
  for (int i = 0; i < 5; i++) json_object_set_new(opt, sim_dp_flags[i] + 2, jstr_or_null(o->dp[i]));
  json_object_set_new(opt, "min-updates", json_integer((json_int_t)o->min_updates));
  json_object_set_new(opt, "min-clients", json_integer((json_int_t)(o->min_clients ? o->min_clients : o->clients)));
  json_object_set_new(opt, "round-timeout-ms", json_integer((json_int_t)o->round_timeout_ms));
  json_object_set_new(opt, "poll-ms", json_integer((json_int_t)o->poll_ms));
  json_object_set_new(opt, "seed", json_integer((json_int_t)o->seed));
  const char *dir = o->data_dir ? o->data_dir : getenv("FEDC_FMNIST_DIR");
  json_object_set_new(opt, "data-dir", json_string(dir && dir[0] ? dir : FC_FMNIST_DEFAULT_DIR));
  json_object_set_new(opt, "json", json_boolean(o->json));
  json_object_set_new(opt, "secagg", json_boolean(o->secagg));
  json_object_set_new(opt, "secagg-neighbors", json_integer((json_int_t)o->sa_k));
  json_object_set_new(opt, "secagg-threshold", json_integer((json_int_t)o->sa_t));
  json_object_set_new(opt, "secagg-bucket", o->sa_bucket ? json_integer((json_int_t)o->sa_bucket) : json_null());
  json_object_set_new(opt, "drop", jstr_or_null(o->drop));
  sim_speed_config(opt, o); /* mode, device-speed, stragglers */
  if (o->byz_kind[0]) {
    char b[96];
    snprintf(b, sizeof b, "%g:%s", o->byz_fraction, o->byz_kind);
    json_object_set_new(opt, "byzantine", json_string(b));
  } else {
    json_object_set_new(opt, "byzantine", json_null());
  }
  json_object_set_new(opt, "byzantine-unclipped", json_boolean(o->byz_unclipped));
  json_t *copts = json_array();
  for (int i = 0; i < o->ncoord_opts; i++) json_array_append_new(copts, json_string(o->coord_opts[i]));
  json_object_set_new(opt, "coordinator-opt", copts);
  json_object_set_new(opt, "keep-versions", json_integer((json_int_t)o->keep_versions));
  json_object_set_new(opt, "keep-every", json_integer((json_int_t)o->keep_every));
  json_object_set_new(opt, "monitor-nice", json_integer(o->monitor_nice));
  json_object_set_new(opt, "eval-every", json_integer((json_int_t)o->eval_every));
  json_object_set_new(opt, "eval-cohort", json_integer((json_int_t)o->eval_cohort));
  json_object_set_new(opt, "eval-fraction", json_real(o->eval_fraction));
  json_object_set_new(opt, "eval-split", json_string(o->eval_test ? "test" : "holdout"));

  json_t *root = json_object();
  json_object_set_new(root, "fedc_version", json_string(FEDC_VERSION_STRING));
  json_object_set_new(root, "started_unix", json_integer((json_int_t)time(NULL)));
  json_object_set_new(root, "seed", json_integer((json_int_t)o->seed));
  json_object_set_new(root, "command", jargv("fedc", o->argv)); /* argv[0] is "sim" */
  json_object_set_new(root, "options", opt);
  json_t *coord = json_object();
  json_object_set_new(coord, "server_optimizer", jstr_or_null(sopt_text));
  json_object_set_new(coord, "dp", jstr_or_null(dp_text));
  json_object_set_new(coord, "command", jargv(NULL, coord_argv));
  json_object_set_new(root, "coordinator", coord);
  json_object_set_new(root, "client_command", client_argv ? jargv(NULL, client_argv) : json_null());
  char p[1100], tmp[1200];
  snprintf(p, sizeof p, "%s/config.json", o->out);
  snprintf(tmp, sizeof tmp, "%s.tmp", p);
  int rc = json_dump_file(root, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15)) == 0 && rename(tmp, p) == 0 ? 0 : -1;
  json_decref(root);
  if (rc) fprintf(stderr, "fedc sim: cannot write %s: %s\n", p, strerror(errno));
  return rc;
}

/* ---- the plot ---- */

void sim_title(const sim_opts *o, const char *sopt_text, char *out, size_t len) {
  char sopt[64] = "FedAvg", extra[200] = "";
  if (sopt_text && sopt_text[0]) {
    /* "yogi lr=0.01 beta1=0.9 ...": the method and its rate. */
    int n = 0;
    const char *sp = strchr(sopt_text, ' ');
    if (sp) sp = strchr(sp + 1, ' ');
    n = sp ? (int)(sp - sopt_text) : (int)strlen(sopt_text);
    snprintf(sopt, sizeof sopt, "%.*s", n, sopt_text);
  } else if (o->sopt[0][0]) {
    snprintf(sopt, sizeof sopt, "%s%s%s", o->sopt[0], o->sopt[1][0] ? " lr=" : "", o->sopt[1]);
  }
  size_t at = 0;
#define ADD(...) at += (size_t)snprintf(extra + at, at < sizeof extra ? sizeof extra - at : 0, __VA_ARGS__)
  if (o->agg[0][0]) ADD(", %s", o->agg[0]);
  if (o->secagg) ADD(", SecAgg");
  if (o->dp[0][0]) ADD(", DP z=%s", o->dp[0]);
  if (o->byz_kind[0]) ADD(", %g%% %s", o->byz_fraction * 100, o->byz_kind);
#undef ADD
  char split[64];
  if (strcmp(o->partition, "dirichlet") == 0) snprintf(split, sizeof split, "dirichlet(%g)", o->alpha);
  else
    snprintf(split, sizeof split, "%s", o->partition);
  snprintf(out, len, "%llu clients, %llu per round, %s, %s, E=%llu B=%llu lr=%g, %s%s, seed %llu", o->clients,
           o->cohort, split, o->model, o->epochs, o->batch, o->lr, sopt, extra, o->seed);
}

void sim_plot(const sim_opts *o, const char *title) {
  char p[1100], q[600];
  snprintf(p, sizeof p, "%s/curve.gp", o->out);
  cli_gp_quote(title, q, sizeof q);
  FILE *f = fopen(p, "w");
  if (!f) {
    fprintf(stderr, "fedc sim: cannot write %s: %s\n", p, strerror(errno));
    return;
  }
  int dp = o->dp[0][0] != 0;
  fprintf(f,
          "# Written by fedc sim: `gnuplot curve.gp` in this folder draws curve.png from rounds.csv.\n"
          "set terminal png size 1000,%d\n"
          "set output 'curve.png'\n"
          "set datafile separator ','\n"
          "set grid\n",
          dp ? 800 : 500);
  if (dp) fprintf(f, "set multiplot layout 2,1 title '%s' noenhanced\n", q);
  else
    fprintf(f, "set title '%s' noenhanced\n", q);
  fprintf(f, "set key bottom right\n"
             "set xlabel 'round'\n"
             "set ylabel 'test accuracy'\n"
             "set y2label 'test loss'\n"
             "set ytics nomirror\n"
             "set y2tics\n"
             "plot 'rounds.csv' every ::1 using 1:3 with lines lw 2 title 'accuracy', \\\n"
             "     '' every ::1 using 1:4 axes x1y2 with lines title 'loss'%s",
          o->eval_every ? ", \\\n     '' every ::1 using 1:10 with linespoints lw 2 title 'federated accuracy'" : "");
  sim_backdoor_plot(f, o);
  fputc('\n', f);
  fc_coord_cfg defaults;
  fc_coord_cfg_defaults(&defaults);
  char delta[64], dflt[32];
  snprintf(dflt, sizeof dflt, "%g", defaults.dp_delta);
  cli_gp_quote(o->dp[1][0] ? o->dp[1] : dflt, delta, sizeof delta);
  if (dp)
    fprintf(f, "unset y2tics\n"
               "unset y2label\n"
               "set key top left\n"
               "set ylabel 'epsilon spent'\n"
               "plot 'rounds.csv' every ::1 using 1:9 with lines lw 2 title 'epsilon (delta %s)'\n"
               "unset multiplot\n",
            delta);
  if (fclose(f) != 0) {
    fprintf(stderr, "fedc sim: cannot write %s\n", p);
    return;
  }
  const char *why;
  if (cli_gnuplot(o->out, "curve.gp", &why) != 0)
    fprintf(stderr, "fedc sim: %s: no curve.png (rounds.csv and curve.gp are there)\n", why);
}

/* ---- the last line ---- */

static uint64_t g_bytes;
static int add_size(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)path, (void)flag, (void)ftw;
  g_bytes += (uint64_t)sb->st_blocks * 512; /* on disk, as du counts */
  return 0;
}

static void human(uint64_t b, char *out, size_t len) {
  if (b >= (1ull << 30)) snprintf(out, len, "%.1f GiB", (double)b / (1ull << 30));
  else if (b >= (1ull << 20))
    snprintf(out, len, "%.1f MiB", (double)b / (1ull << 20));
  else
    snprintf(out, len, "%.0f KiB", (double)b / 1024);
}

void sim_final_line(const sim_opts *o, uint64_t completed, double seconds) {
  g_bytes = 0;
  nftw(o->out, add_size, 16, FTW_PHYS);
  char total[32], models[1100];
  human(g_bytes, total, sizeof total);
  /* Model versions kept, of how many published (the newest is the last). */
  snprintf(models, sizeof models, "%s/state/models", o->out);
  unsigned long long kept = 0, newest = 0;
  DIR *d = opendir(models);
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    unsigned long long v;
    char rest[32];
    if (sscanf(e->d_name, "v%llu%31s", &v, rest) == 2 && strcmp(rest, ".safetensors") == 0) {
      kept++;
      if (v > newest) newest = v;
    }
  }
  if (d) closedir(d);
  fprintf(stderr,
          "fedc sim: %llu rounds in %.1fs; results in %s (%s: rounds.csv, rounds.jsonl, curve.png, config.json; "
          "state/ keeps %llu of %llu model versions)\n",
          (unsigned long long)completed, seconds, o->out, total, kept, kept ? newest + 1 : 0);
}
