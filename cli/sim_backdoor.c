/*
 * sim_backdoor.c - `fedc sim --byzantine F:backdoor[:GAMMA]`: the backdoor
 * success rate of each evaluated version, beside its test accuracy.
 *
 * The rate is what Bagdasaryan et al. 2020 ("How To Backdoor Federated
 * Learning") report as backdoor accuracy: of the test images whose true label
 * is not the target, stamped with the attackers' trigger, the fraction the
 * model classifies as the target (client/byzantine.h holds the trigger and
 * the target, the one definition the attackers poison their data with). The
 * triggered copy of the test set is made once, at start.
 *
 * Only with a backdoor attack: otherwise the column is empty (NaN, as every
 * unknown in sim_output.c) and no second evaluation runs. Kept apart from
 * sim_monitor.c and sim_output.c so other per-round measurements add their
 * own files the same way.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli/sim.h"
#include "client/byzantine.h"
#include "fedc/error.h"

int sim_backdoor_active(const sim_opts *o) { return strncmp(o->byz_kind, "backdoor", 8) == 0; }

int sim_backdoor_prepare(sim_monitor *m, const sim_opts *o) {
  memset(&m->backdoor, 0, sizeof m->backdoor);
  if (!sim_backdoor_active(o)) return 0;
  int rc = fc_backdoor_testset(&m->test, &m->backdoor);
  if (rc != FEDC_OK) {
    fprintf(stderr, "fedc sim: cannot make the triggered test set: %s\n", fedc_strerror(rc));
    return -1;
  }
  fprintf(stderr, "fedc sim: backdoor success rate on %u triggered test images (true label not %d)\n",
          m->backdoor.n, FC_BACKDOOR_TARGET);
  return 0;
}

double sim_backdoor_rate(sim_monitor *m, const float *weights) {
  double rate = NAN;
  if (m->backdoor.n && fc_mlp_eval(&m->mlp, m->ws, weights, &m->backdoor, NULL, m->backdoor.n, &rate, NULL) != 0)
    rate = NAN;
  return rate;
}

void sim_backdoor_progress(const sim_opts *o, double rate, char *out, size_t len) {
  out[0] = 0;
  if (!sim_backdoor_active(o)) return;
  if (isfinite(rate)) snprintf(out, len, "  backdoor %.2f%%", rate * 100);
  else
    snprintf(out, len, "  backdoor -");
}

void sim_backdoor_plot(FILE *gp, const sim_opts *o) {
  if (sim_backdoor_active(o))
    fprintf(gp, ", \\\n     '' every ::1 using 1:%d with lines lw 2 lc rgb '#d62728' title 'backdoor success'", SIM_CSV_BACKDOOR_COL);
}
