/*
 * cmd_secagg.c - `fedc secagg-params`: a safe neighbour count k and Shamir
 * threshold t for a cohort, with the bounds they meet and where the
 * conditions come from (secagg/params.h: Bell et al. 2020). No network.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "fedc/error.h"
#include "secagg/params.h"
#include "secagg/secagg.h"

#define SOURCE                                                                                                 \
  "Bell, Bonawitz, Gascon, Lepoint, Raykova, \"Secure Single-Server Aggregation with (Poly)Logarithmic "      \
  "Overhead\", CCS 2020, Section 4 (SecAgg+ on a random Harary graph)"
#define FORMULA                                                                                                \
  "smallest even k with: P[honest survivors disconnected] <= n(n-k-1)/2 * (B)_k/(n)_k <= 2^-41 (B = corrupt + "  \
  "dropped); t the least with 2t > k+1+t1 (lying coordinator: b_v has k+1 holders, v and its neighbours, so a "  \
  "split view with c corrupt neighbours needs 2t <= k+1+c) or t = max(t1+1, floor((k+1)/2)+1) (curious "         \
  "coordinator), t1 the least count with n*P[Hyp(n-1, corrupt, k) > t1] <= 2^-41; and "                          \
  "n*P[Hyp(n-1, survivors-1, k) < t] <= 2^-20; else the complete graph k = n-1 under the same conditions. Every " \
  "t meets the client floor 2t > k+1"

static void usage(FILE *f) {
  fprintf(f,
          "Usage: fedc secagg-params --clients N [--dropout D] [--corrupt C] [options]\n\n"
          "A safe neighbour count k and Shamir threshold t for secure aggregation (SecAgg+) over a\n"
          "cohort of N clients, when up to a fraction C of them collude with the coordinator and up\n"
          "to a fraction D drop out during a round: 40-bit statistical security, failure below 2^-20.\n"
          "Prints the coordinator flags, the bounds met, the formula and its source.\n\n"
          "  --clients N        cohort size (3..1000000)\n"
          "  --dropout D        fraction that may drop out (default 0.1)\n"
          "  --corrupt C        fraction that may be corrupt (default 0.05)\n"
          "  --threat T         malicious (default: a coordinator that may lie about dropouts, the\n"
          "                     protocol fedc runs) | honest (a curious coordinator that follows it;\n"
          "                     smaller k and t, but a lying coordinator with a few corrupt clients\n"
          "                     around one client can unmask that client's input)\n"
          "  --neighbors K --threshold T   check this pair instead of searching (exit 1 if unsafe)\n"
          "  --json             one JSON object on stdout\n");
}

static void print_bound(const char *what, double log2p, int budget) {
  if (isinf(log2p)) printf("  %-44s 0 (impossible with these counts)  budget 2^-%d\n", what, budget);
  else
    printf("  %-44s <= 2^%.1f  budget 2^-%d\n", what, log2p, budget);
}

static json_t *jlog2(double v) { return isinf(v) ? json_null() : json_real(round(v * 100) / 100); }

int cmd_secagg_params(int argc, char **argv) {
  enum { O_CLIENTS = 1, O_DROPOUT, O_CORRUPT, O_THREAT, O_K, O_T, O_JSON, O_HELP };
  static const struct option lo[] = {
      {"clients", required_argument, 0, O_CLIENTS}, {"dropout", required_argument, 0, O_DROPOUT},
      {"corrupt", required_argument, 0, O_CORRUPT}, {"threat", required_argument, 0, O_THREAT},
      {"neighbors", required_argument, 0, O_K},     {"threshold", required_argument, 0, O_T},
      {"json", no_argument, 0, O_JSON},             {"help", no_argument, 0, O_HELP},
      {0, 0, 0, 0}};
  const char *prog = "fedc secagg-params";
  unsigned long long n = 0, k = 0, t = 0;
  double dropout = 0.1, corrupt = 0.05;
  int threat = FC_SA_THREAT_MALICIOUS, json = 0, opt;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
    int bad = 0;
    switch (opt) {
    case O_CLIENTS: bad = cli_parse_u64(prog, "--clients", optarg, &n); break;
    case O_DROPOUT: bad = cli_parse_double(prog, "--dropout", optarg, &dropout); break;
    case O_CORRUPT: bad = cli_parse_double(prog, "--corrupt", optarg, &corrupt); break;
    case O_K: bad = cli_parse_u64(prog, "--neighbors", optarg, &k); break;
    case O_T: bad = cli_parse_u64(prog, "--threshold", optarg, &t); break;
    case O_THREAT:
      if (strcmp(optarg, "malicious") == 0) threat = FC_SA_THREAT_MALICIOUS;
      else if (strcmp(optarg, "honest") == 0) threat = FC_SA_THREAT_HONEST;
      else {
        fprintf(stderr, "%s: --threat must be malicious or honest, not '%s'\n", prog, optarg);
        bad = 2;
      }
      break;
    case O_JSON: json = 1; break;
    case 'h':
    case O_HELP: usage(stdout); return 0;
    default: return cli_option_error(prog, opt, argv, lo);
    }
    if (bad) return 2;
  }
  if (optind < argc || !n) {
    fprintf(stderr, "%s: %s\n", prog, optind < argc ? "unexpected argument" : "--clients N is required");
    usage(stderr);
    return 2;
  }
  if (n < 3 || n > FC_SA_PARAMS_MAX_CLIENTS || !(dropout >= 0 && dropout < 1) || !(corrupt >= 0 && corrupt < 1)) {
    fprintf(stderr, "%s: need 3 <= clients <= %u and dropout, corrupt in [0, 1)\n", prog, FC_SA_PARAMS_MAX_CLIENTS);
    return 2;
  }
  if ((k != 0) != (t != 0)) {
    fprintf(stderr, "%s: --neighbors and --threshold go together\n", prog);
    return 2;
  }
  fc_sa_choice c;
  char why[400];
  int safe;
  if (k) {
    if (k < 2 || k > n - 1 || t < 2 || t > k) {
      fprintf(stderr, "%s: need 2 <= threshold <= neighbors <= clients - 1\n", prog);
      return 2;
    }
    safe = fc_sa_params_bounds((uint32_t)n, (uint32_t)k, (uint32_t)t, corrupt, dropout, threat, &c) == 0;
  } else {
    int rc = fc_sa_params_find((uint32_t)n, corrupt, dropout, threat, &c, why, sizeof why);
    if (rc != FEDC_OK) {
      if (json) {
        json_t *o = json_pack("{s:I,s:f,s:f,s:s,s:b,s:s}", "clients", (json_int_t)n, "dropout", dropout, "corrupt",
                              corrupt, "threat", threat ? "honest" : "malicious", "safe", 0, "error", why);
        cli_print_json(o);
      }
      fprintf(stderr, "%s: %s\n", prog, why);
      return 1;
    }
    safe = 1;
  }
  const char *tname = threat == FC_SA_THREAT_HONEST ? "honest" : "malicious";
  /* What the pair withstands against a coordinator that lies about dropouts:
   * a split view needs 2t <= k + 1 + c colluding neighbours (secagg.h), so
   * up to 2t - k - 2 are tolerated; below the client floor, clients refuse. */
  int accept = c.t >= fc_sa_min_threshold(c.k, 0);
  json_int_t colluders = accept ? (json_int_t)(2 * c.t) - c.k - 2 : -1;
  if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "clients", json_integer((json_int_t)n));
    json_object_set_new(o, "dropout", json_real(dropout));
    json_object_set_new(o, "corrupt", json_real(corrupt));
    json_object_set_new(o, "threat", json_string(tname));
    json_object_set_new(o, "neighbors", json_integer(c.k));
    json_object_set_new(o, "threshold", json_integer(c.t));
    json_object_set_new(o, "complete_graph", json_boolean(c.complete));
    json_object_set_new(o, "safe", json_boolean(safe));
    json_object_set_new(o, "clients_accept", json_boolean(accept));
    json_object_set_new(o, "lying_coordinator_colluders", json_integer(colluders));
    json_object_set_new(o, "log2_p_disconnected", jlog2(c.log2_disconnect));
    json_object_set_new(o, "log2_p_corrupt_neighbors", jlog2(c.log2_corrupt));
    json_object_set_new(o, "log2_p_too_few_survivors", jlog2(c.log2_starve));
    json_object_set_new(o, "security_bits", json_integer(FC_SA_SECURITY_BITS));
    json_object_set_new(o, "correctness_bits", json_integer(FC_SA_CORRECTNESS_BITS));
    json_object_set_new(o, "formula", json_string(FORMULA));
    json_object_set_new(o, "source", json_string(SOURCE));
    cli_print_json(o);
    return safe ? 0 : 1;
  }
  printf("SecAgg+ for %llu clients, up to %.3g%% corrupt and %.3g%% dropping out, %s:\n", n, corrupt * 100,
         dropout * 100,
         threat == FC_SA_THREAT_HONEST ? "curious coordinator (semi-honest)"
                                       : "a coordinator that may lie about dropouts (the active protocol)");
  printf("  %s: k = %u neighbours%s, threshold t = %u\n", k ? (safe ? "safe" : "NOT SAFE") : "choose", c.k,
         c.complete ? " (the complete graph)" : "", c.t);
  printf("  coordinator flags: --secagg --secagg-neighbors %u --secagg-threshold %u\n", c.complete ? 0 : c.k, c.t);
  printf("  client cost: %u mask expansions of the model per round (k pairwise + 1 self)\n", c.k + 1);
  if (!accept)
    printf("  clients refuse it: 2t <= k + 1, so a coordinator that shows two survivor lists can unmask one client's "
           "input (t >= %u needed)\n",
           fc_sa_min_threshold(c.k, 0));
  else if (threat == FC_SA_THREAT_HONEST)
    printf("  gives up: a coordinator that lies about dropouts unmasks a client's input once %lld of its neighbours "
           "collude with it (2t - k - 1), and with %.3g%% corrupt a client expects %.1f corrupt neighbours; "
           "--threat malicious bounds that count\n",
           (long long)colluders + 1, corrupt * 100, corrupt * c.k);
  else
    printf("  withstands a coordinator that lies about dropouts with up to %lld corrupt neighbours of any client "
           "(2t - k - 2)\n",
           (long long)colluders);
  print_bound("P[honest survivors split apart]", c.log2_disconnect, FC_SA_SECURITY_BITS + 1);
  print_bound("P[a client with too many corrupt neighbours]", c.log2_corrupt, FC_SA_SECURITY_BITS + 1);
  print_bound("P[a client with fewer than t survivors]", c.log2_starve, FC_SA_CORRECTNESS_BITS);
  printf("  formula: %s\n  source: %s\n", FORMULA, SOURCE);
  return safe ? 0 : 1;
}
