/*
 * rounds_view.c - the parts of `fedc rounds` (cmd_admin.c) that show a
 * round's federated evaluation, and `fedc rounds --plot FILE.png`: the
 * training loss, the federated evaluation (accuracy and loss) and, under
 * DP, epsilon from any coordinator's history, drawn with gnuplot as
 * `fedc sim` draws its runs (plot.c). The plot's script, with the data in
 * it, is written beside the image (FILE.gp: `gnuplot FILE.gp` redraws it).
 * Unknown values (an abandoned round, a round whose model was not
 * evaluated, the train loss under distributed DP) are gaps, never 0.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_common.h"
#include "cli/plot.h"
#include "cli/rounds_view.h"

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

json_t *rounds_eval_json(const Fedc__V1__EvalRecord *e) {
  json_t *o = json_object();
  json_object_set_new(o, "outcome", json_string(e->outcome ? e->outcome : ""));
  if (e->outcome && strcmp(e->outcome, "pending") == 0) return o;
  json_object_set_new(o, "version", json_integer((json_int_t)e->version));
  json_object_set_new(o, "selected", json_integer(e->selected));
  json_object_set_new(o, "clients", json_integer(e->clients));
  json_object_set_new(o, "examples", json_real(e->examples));
  json_object_set_new(o, "correct", json_real(e->correct));
  json_object_set_new(o, "loss_sum", json_real(e->loss_sum));
  json_object_set_new(o, "accuracy", num(e->accuracy));
  json_object_set_new(o, "loss", num(e->loss));
  json_object_set_new(o, "started_unix_ms", json_integer((json_int_t)e->started_unix_ms));
  json_object_set_new(o, "ended_unix_ms", json_integer((json_int_t)e->ended_unix_ms));
  json_object_set_new(o, "reason", json_string(e->reason ? e->reason : ""));
  if (e->n_metrics) {
    json_t *m = json_object();
    for (size_t j = 0; j < e->n_metrics; j++) {
      const Fedc__V1__EvalMetric *x = e->metrics[j];
      json_object_set_new(m, x->name ? x->name : "?",
                          json_pack("{s:f,s:I,s:o}", "sum", x->sum, "examples", (json_int_t)x->examples, "mean",
                                    num(x->examples ? x->sum / (double)x->examples : NAN)));
    }
    json_object_set_new(o, "metrics", m);
  }
  if (e->n_secagg_remaining) {
    json_t *a = json_array();
    for (size_t i = 0; i < e->n_secagg_remaining && i < 5; i++) json_array_append_new(a, json_integer(e->secagg_remaining[i]));
    json_object_set_new(o, "secagg_remaining", a);
  }
  if (e->dp_noise > 0) {
    json_object_set_new(o, "dp_noise", json_real(e->dp_noise));
    json_object_set_new(o, "dp_epsilon", json_real(e->dp_epsilon));
  }
  return o;
}

void rounds_eval_cells(const Fedc__V1__RoundRecord *r, char *acc, char *loss, size_t len) {
  const Fedc__V1__EvalRecord *e = r->eval;
  snprintf(acc, len, "-");
  snprintf(loss, len, "-");
  if (!e || !e->outcome) return;
  if (strcmp(e->outcome, "pending") == 0) {
    snprintf(acc, len, "pending");
  } else if (strcmp(e->outcome, "completed") == 0 && isfinite(e->accuracy)) {
    snprintf(acc, len, "%.2f%%", 100 * e->accuracy);
    if (isfinite(e->loss)) snprintf(loss, len, "%.4f", e->loss);
  } else if (strcmp(e->outcome, "abandoned") == 0) {
    snprintf(acc, len, "abandoned");
  }
}

static void cell(FILE *f, double v) {
  if (isfinite(v)) fprintf(f, " %.9g", v);
  else
    fprintf(f, " ?");
}

int rounds_plot(const Fedc__V1__RoundsResponse *resp, const char *png, const char *title) {
  const char *prog = "fedc rounds";
  size_t plen = strlen(png);
  if (plen < 5 || strcmp(png + plen - 4, ".png") != 0) {
    fprintf(stderr, "%s: --plot needs a file name ending in .png, got '%s'\n", prog, png);
    return 2;
  }
  char dir[1024], base[512], gp[1100], q[600];
  const char *slash = strrchr(png, '/');
  if (slash) snprintf(dir, sizeof dir, "%.*s", (int)(slash - png), png);
  else
    snprintf(dir, sizeof dir, ".");
  if (!dir[0]) snprintf(dir, sizeof dir, "/");
  snprintf(base, sizeof base, "%s", slash ? slash + 1 : png);
  snprintf(gp, sizeof gp, "%.*s.gp", (int)(plen - 4), png);
  FILE *f = fopen(gp, "w");
  if (!f) {
    fprintf(stderr, "%s: cannot write %s: %s\n", prog, gp, strerror(errno));
    return 1;
  }
  int dp = 0, have = 0;
  for (size_t i = 0; i < resp->n_rounds; i++) {
    dp |= resp->rounds[i]->dp_epsilon > 0;
    have |= resp->rounds[i]->eval && resp->rounds[i]->eval->outcome &&
            strcmp(resp->rounds[i]->eval->outcome, "completed") == 0;
  }
  cli_gp_quote(base, q, sizeof q);
  fprintf(f, "# Written by fedc rounds --plot: `gnuplot %s` in this folder redraws %s.\n", strrchr(gp, '/') ? strrchr(gp, '/') + 1 : gp, q);
  fprintf(f, "$rounds << EOD\n# round train_loss eval_accuracy eval_loss epsilon\n");
  for (size_t i = 0; i < resp->n_rounds; i++) {
    const Fedc__V1__RoundRecord *r = resp->rounds[i];
    int done = r->outcome && strcmp(r->outcome, "completed") == 0;
    const Fedc__V1__EvalRecord *e = r->eval;
    int ev = e && e->outcome && strcmp(e->outcome, "completed") == 0;
    fprintf(f, "%llu", (unsigned long long)r->round);
    cell(f, done ? r->mean_train_loss : NAN);
    cell(f, ev ? e->accuracy : NAN);
    cell(f, ev ? e->loss : NAN);
    /* epsilon spent after the round and, under DP, after its evaluation too */
    double eps = r->dp_epsilon > 0 ? r->dp_epsilon : NAN;
    if (e && e->dp_epsilon > 0 && !(eps >= e->dp_epsilon)) eps = e->dp_epsilon;
    cell(f, eps);
    fputc('\n', f);
  }
  fprintf(f, "EOD\n"
             "set terminal png size 1000,%d\n"
             "set output '%s'\n"
             "set datafile missing '?'\n"
             "set grid\n",
          dp ? 800 : 500, q);
  cli_gp_quote(title, q, sizeof q);
  if (dp) fprintf(f, "set multiplot layout 2,1 title '%s' noenhanced\n", q);
  else
    fprintf(f, "set title '%s' noenhanced\n", q);
  fprintf(f, "set key bottom right\n"
             "set xlabel 'round'\n"
             "set ylabel 'federated accuracy'\n"
             "set y2label 'loss'\n"
             "set ytics nomirror\n"
             "set y2tics\n"
             "plot $rounds using 1:3 with linespoints lw 2 title 'federated accuracy', \\\n"
             "     '' using 1:4 axes x1y2 with linespoints title 'federated loss', \\\n"
             "     '' using 1:2 axes x1y2 with lines title 'training loss'\n");
  if (dp)
    fprintf(f, "unset y2tics\n"
               "unset y2label\n"
               "set key top left\n"
               "set ylabel 'epsilon spent'\n"
               "plot $rounds using 1:5 with lines lw 2 title 'epsilon'\n"
               "unset multiplot\n");
  if (fclose(f) != 0) {
    fprintf(stderr, "%s: cannot write %s\n", prog, gp);
    return 1;
  }
  const char *why;
  if (cli_gnuplot(dir, strrchr(gp, '/') ? strrchr(gp, '/') + 1 : gp, &why) != 0) {
    fprintf(stderr, "%s: %s: no %s (the script is %s)\n", prog, why, png, gp);
    return 1;
  }
  if (!have) fprintf(stderr, "%s: no round's model was evaluated (coordinator --eval-every): the plot shows the training loss\n", prog);
  return 0;
}
