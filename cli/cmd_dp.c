/*
 * cmd_dp.c - `fedc dp-budget`: the (epsilon, delta) a DP-FedAvg federation
 * spends (common/dp_accountant.h: RDP of the Poisson-subsampled Gaussian,
 * Mironov et al. 2019; conversion of Balle et al. 2020 and the classic one),
 * and the round at which a target epsilon is reached. No network.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "common/dp_accountant.h"

static void usage(FILE *f) {
  fprintf(f,
          "Usage: fedc dp-budget --population N --cohort K --noise Z --rounds T --delta D [options]\n\n"
          "Client-level (epsilon, delta) of DP-FedAvg after T rounds, each selecting every one of N\n"
          "clients independently with probability K/N (Poisson subsampling) and adding Gaussian noise\n"
          "of standard deviation Z x the clip norm to the sum: Renyi DP of the subsampled Gaussian\n"
          "(Mironov, Talwar, Zhang 2019), converted as in Balle et al. 2020 (and, for comparison, the\n"
          "classic conversion of Mironov 2017).\n\n"
          "  --population N       clients in the federation\n"
          "  --cohort K           expected clients per round (K <= N)\n"
          "  --noise Z            noise multiplier (> 0)\n"
          "  --rounds T           rounds\n"
          "  --delta D            target delta (0 < D < 1; e.g. below 1/N)\n"
          "  --target-epsilon E   also: the last round at which epsilon <= E\n"
          "  --json               one JSON object on stdout\n");
}

/* Last round r <= limit with epsilon(r) <= target (0 if none); epsilon grows with r. */
static unsigned long long last_round_within(double q, double z, double delta, double target,
                                           unsigned long long limit) {
  fc_dp_eps e;
  unsigned long long lo = 0, hi = limit;
  while (lo < hi) {
    unsigned long long mid = lo + (hi - lo + 1) / 2;
    fc_dp_epsilon(q, z, (double)mid, delta, &e);
    if (e.eps <= target) lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

int cmd_dp_budget(int argc, char **argv) {
  enum { O_POP = 1, O_COHORT, O_NOISE, O_ROUNDS, O_DELTA, O_TARGET, O_JSON, O_HELP };
  static const struct option lo[] = {
      {"population", required_argument, 0, O_POP}, {"cohort", required_argument, 0, O_COHORT},
      {"noise", required_argument, 0, O_NOISE},    {"rounds", required_argument, 0, O_ROUNDS},
      {"delta", required_argument, 0, O_DELTA},    {"target-epsilon", required_argument, 0, O_TARGET},
      {"json", no_argument, 0, O_JSON},            {"help", no_argument, 0, O_HELP},
      {0, 0, 0, 0}};
  const char *prog = "fedc dp-budget";
  unsigned long long n = 0, k = 0, t = 0;
  double z = 0, delta = 0, target = 0;
  int json = 0, opt, have_target = 0;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
    int bad = 0;
    switch (opt) {
    case O_POP: bad = cli_parse_u64(prog, "--population", optarg, &n); break;
    case O_COHORT: bad = cli_parse_u64(prog, "--cohort", optarg, &k); break;
    case O_ROUNDS: bad = cli_parse_u64(prog, "--rounds", optarg, &t); break;
    case O_NOISE: bad = cli_parse_double(prog, "--noise", optarg, &z); break;
    case O_DELTA: bad = cli_parse_double(prog, "--delta", optarg, &delta); break;
    case O_TARGET:
      bad = cli_parse_double(prog, "--target-epsilon", optarg, &target);
      have_target = 1;
      break;
    case O_JSON: json = 1; break;
    case 'h':
    case O_HELP: usage(stdout); return 0;
    default: return cli_option_error(prog, opt, argv, lo);
    }
    if (bad) return 2;
  }
  if (optind < argc || !n || !k || !t || k > n || !(z > 0 && isfinite(z)) || !(delta > 0 && delta < 1) ||
      (have_target && !(target > 0 && isfinite(target)))) {
    fprintf(stderr,
            "%s: need --population N >= --cohort K >= 1, --noise Z > 0, --rounds T >= 1, 0 < --delta < 1 "
            "(and --target-epsilon > 0)\n",
            prog);
    usage(stderr);
    return 2;
  }
  double q = (double)k / (double)n;
  fc_dp_eps e;
  fc_dp_epsilon(q, z, (double)t, delta, &e);
  unsigned long long within = have_target ? last_round_within(q, z, delta, target, t > 1000000 ? t : 1000000) : 0;
  if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "population", json_integer((json_int_t)n));
    json_object_set_new(o, "cohort", json_integer((json_int_t)k));
    json_object_set_new(o, "sampling_rate", json_real(q));
    json_object_set_new(o, "noise_multiplier", json_real(z));
    json_object_set_new(o, "rounds", json_integer((json_int_t)t));
    json_object_set_new(o, "delta", json_real(delta));
    json_object_set_new(o, "epsilon", isinf(e.eps) ? json_null() : json_real(e.eps));
    json_object_set_new(o, "order", json_real(e.order));
    json_object_set_new(o, "epsilon_classic", isinf(e.eps_classic) ? json_null() : json_real(e.eps_classic));
    json_object_set_new(o, "order_classic", json_real(e.order_classic));
    json_object_set_new(o, "sampling", json_string("poisson"));
    if (have_target) {
      json_object_set_new(o, "target_epsilon", json_real(target));
      json_object_set_new(o, "rounds_within_target", json_integer((json_int_t)within));
    }
    cli_print_json(o);
    return 0;
  }
  printf("DP-FedAvg, %llu clients, each in a round with probability %.4g (Poisson), noise %g x clip:\n", n, q, z);
  printf("  after %llu rounds: epsilon = %.4f at delta = %g (Renyi order %g; Balle et al. 2020)\n", t, e.eps, delta,
         e.order);
  printf("                     epsilon = %.4f with the classic conversion (order %g)\n", e.eps_classic,
         e.order_classic);
  if (have_target)
    printf("  epsilon stays within %g for %llu rounds\n", target, within);
  return 0;
}
