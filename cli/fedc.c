/*
 * fedc.c - `fedc <subcommand>`: main() only dispatches (WireGuard's wg.c).
 * A client-only build (FEDC_BUILD_COORDINATOR=OFF, FEDC_CLIENT_ONLY here)
 * has no coordinator, sim or audit: their code is not linked.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "common/log.h"
#include "transport/transport.h"

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *help;
} subcommands[] = {
#ifndef FEDC_CLIENT_ONLY
    {"coordinator", cmd_coordinator, "run the coordinator server"},
    {"aggregator", cmd_aggregator, "take clients' uploads for the leader, hand it partial sums (--aggregator-tier)"},
#endif
    {"client", cmd_client, "run one client with the built-in trainers"},
#ifndef FEDC_CLIENT_ONLY
    {"sim", cmd_sim, "simulate a federation: coordinator + N clients on 127.0.0.1"},
#endif
    {"status", cmd_status, "show a running coordinator's state (admin)"},
    {"rounds", cmd_rounds, "list rounds with their metrics (admin)"},
    {"clients", cmd_clients, "list client identities: last seen, addresses, rounds, anomaly score (admin)"},
    {"round", cmd_round, "start | pause | resume rounds (admin)"},
    {"model", cmd_model, "get --version V --out FILE (admin); verify FILE: check a model's signed manifest"},
    {"pki", cmd_pki, "init a federation CA; issue client/admin/aggregator certificates"},
    {"secagg-params", cmd_secagg_params, "safe SecAgg+ neighbours k and threshold t for a cohort"},
    {"dp-budget", cmd_dp_budget, "client-level (epsilon, delta) of DP-FedAvg over rounds"},
#ifndef FEDC_CLIENT_ONLY
    {"audit", cmd_audit, "verify | show the coordinator's hash-chained audit log"},
    {"watermark", cmd_watermark, "keygen | verify: the global model's watermark (a key's trigger set)"},
    {"ha", cmd_ha, "verify: etcd's model pointer and the replicas' shared store agree"},
#endif
    {"version", cmd_version, "print version information"},
};

static void usage(FILE *f) {
  fprintf(f, "Usage: fedc <subcommand> [options]   (fedc <subcommand> --help for details; fedc --version)\n\n"
             "Subcommands:\n");
  for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
    fprintf(f, "  %-14s %s\n", subcommands[i].name, subcommands[i].help);
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) return cmd_version(argc - 1, argv + 1);
  /* gRPC's own errors: the coordinator's operator wants peers' handshake
   * failures in the log; for every other command our messages say it. */
  fc_transport_route_grpc_logs(strcmp(argv[1], "coordinator") == 0 || strcmp(argv[1], "aggregator") == 0
                                   ? FC_LOG_WARN
                                   : FC_LOG_DEBUG);
  enum { N = sizeof subcommands / sizeof subcommands[0] };
  struct option names[N + 1];
  memset(names, 0, sizeof names);
  for (size_t i = 0; i < N; i++) {
    if (strcmp(argv[1], subcommands[i].name) == 0) return subcommands[i].fn(argc - 1, argv + 1);
    names[i].name = subcommands[i].name;
  }
  /* One line, as for a misspelt option (cli_option_error). */
  const char *near = cli_nearest_option(argv[1], strlen(argv[1]), names);
  fprintf(stderr, "fedc: unknown subcommand '%s'%s%s%s; fedc --help lists them\n", argv[1],
          near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
  return 2;
}
