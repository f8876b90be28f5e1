/*
 * sim_speed.c - `fedc sim --mode async` and its device-speed model (issue
 * 25): the options, what they add to the coordinator's command line (the
 * mode) and to every client's (--device-speed, the client draws its own
 * delays: cli/client_speed.c). So synchronous and asynchronous runs can be
 * compared on the same simulated fleet: same seed, same devices, same delays.
 * Calls nothing else of cli/ (cmd_sim.c calls it).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/sim.h"

const char *const SIM_SPEED_HELP =
    "  --mode sync|async    async: FedBuff buffers instead of rounds (--rounds counts versions; the buffer\n"
    "                       size, concurrency and staleness function through --coordinator-opt)\n"
    "  --device-speed C:N:S each client's tasks take a compute and a network delay longer, drawn from\n"
    "                       lognormals with medians C and N ms and sigma S (per client, from --seed)\n"
    "  --stragglers F       with --device-speed: this fraction of the clients is 10x slower (default 0)\n";

int sim_speed_option(sim_opts *o, const char *name, const char *arg) {
  if (!strcmp(name, "mode")) {
    if (strcmp(arg, "sync") && strcmp(arg, "async")) {
      fprintf(stderr, "fedc sim: --mode must be sync or async, got '%s'\n", arg);
      return 2;
    }
    snprintf(o->mode, sizeof o->mode, "%s", arg);
    return 0;
  }
  if (!strcmp(name, "stragglers")) {
    char *end = NULL;
    double f = strtod(arg, &end);
    if (!*arg || *end || !(f >= 0 && f <= 1)) {
      fprintf(stderr, "fedc sim: --stragglers must be a fraction in [0, 1], got '%s'\n", arg);
      return 2;
    }
    o->stragglers = f;
    return 0;
  }
  double c, n, s;
  char tail;
  if (sscanf(arg, "%lf:%lf:%lf%c", &c, &n, &s, &tail) != 3 || !(c >= 0 && c <= 3600000) ||
      !(n >= 0 && n <= 3600000) || !(s >= 0 && s <= 5)) {
    fprintf(stderr, "fedc sim: --device-speed C:N:S: medians in ms (0..3600000) and sigma in [0, 5], got '%s'\n", arg);
    return 2;
  }
  snprintf(o->speed, sizeof o->speed, "%s", arg);
  return 0;
}

int sim_speed_check(const sim_opts *o) {
  if (o->stragglers > 0 && !o->speed[0]) {
    fprintf(stderr, "fedc sim: --stragglers needs --device-speed (the speed stragglers are 10x slower than)\n");
    return 2;
  }
  return 0;
}

int sim_speed_coord_args(const sim_opts *o, char **argv, int n) {
  if (o->mode[0]) argv[n++] = "--mode", argv[n++] = (char *)o->mode;
  return n;
}

int sim_speed_client_args(const sim_opts *o, char **argv, int n, char *buf, size_t buflen) {
  if (!o->speed[0]) return n;
  snprintf(buf, buflen, "%s:%.9g:%llu", o->speed, o->stragglers, o->seed);
  argv[n++] = "--device-speed", argv[n++] = buf;
  return n;
}

void sim_speed_config(json_t *opt, const sim_opts *o) {
  json_object_set_new(opt, "mode", json_string(o->mode[0] ? o->mode : "sync"));
  json_object_set_new(opt, "device-speed", o->speed[0] ? json_string(o->speed) : json_null());
  json_object_set_new(opt, "stragglers", json_real(o->stragglers));
}
