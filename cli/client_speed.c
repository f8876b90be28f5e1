/*
 * client_speed.c - the device-speed model of client_speed.h. Per device:
 * compute = C exp(sigma z1), network = N exp(sigma z2), z standard normals
 * (Box-Muller) from an RNG seeded by the seed and the name's FNV-1a hash; a
 * straggler (uniform draw below the fraction) has both 10x. The delay of a
 * task is compute + network: one upload and one download per task, so the
 * network time is folded into the task's time rather than throttling the
 * bytes (a model of the device, not of TCP).
 */
#include "cli/client_speed.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/rng.h"

int client_speed_parse(const char *spec, client_speed *out, char *err, size_t errlen) {
  client_speed s = {0, 0, 0, 0, 1};
  unsigned long long seed = 1;
  char tail;
  int n = sscanf(spec, "%lf:%lf:%lf:%lf:%llu%c", &s.compute_ms, &s.net_ms, &s.sigma, &s.stragglers, &seed, &tail);
  if ((n != 4 && n != 5) || !(s.compute_ms >= 0 && s.compute_ms <= 3600000) || !(s.net_ms >= 0 && s.net_ms <= 3600000) ||
      !(s.sigma >= 0 && s.sigma <= 5) || !(s.stragglers >= 0 && s.stragglers <= 1)) {
    snprintf(err, errlen, "--device-speed '%s': want COMPUTE_MS:NET_MS:SIGMA:STRAGGLERS[:SEED] (medians in ms up to "
                          "3600000, sigma in [0, 5], stragglers a fraction in [0, 1])", spec);
    return -1;
  }
  s.seed = seed;
  *out = s;
  return 0;
}

static double normal(fc_rng *r) {
  double u1 = fc_rng_uniform_double(r), u2 = fc_rng_uniform_double(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint32_t client_speed_delay_ms(const client_speed *s, const char *name, int *straggler) {
  uint64_t h = 1469598103934665603ull;
  for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
  fc_rng r;
  fc_rng_seed(&r, s->seed * 0x9E3779B97F4A7C15ull ^ h);
  double compute = s->compute_ms * exp(s->sigma * normal(&r));
  double net = s->net_ms * exp(s->sigma * normal(&r));
  *straggler = fc_rng_uniform_double(&r) < s->stragglers;
  double d = (compute + net) * (*straggler ? 10.0 : 1.0);
  return d > 3600000.0 ? 3600000u : (uint32_t)(d + 0.5);
}

int cli_slow_option(cli_slow *s, const char *name, const char *arg) {
  char err[300];
  if (!strcmp(name, "train-hold")) {
    s->hold = arg;
    return 0;
  }
  if (!strcmp(name, "train-fail-if")) {
    s->fail_if = arg;
    return 0;
  }
  if (!strcmp(name, "device-speed")) {
    if (client_speed_parse(arg, &s->speed, err, sizeof err) != 0) {
      fprintf(stderr, "fedc client: %s\n", err);
      return 1;
    }
    s->has_speed = 1;
    return 0;
  }
  char *end = NULL;
  unsigned long long v = strtoull(arg, &end, 10);
  if (!*arg || *end || arg[0] == '-' || v > 3600000) {
    fprintf(stderr, "fedc client: invalid value '%s' for --train-delay-ms: a whole number of ms up to 3600000\n", arg);
    return 1;
  }
  s->delay_ms = (uint32_t)v;
  return 0;
}

uint32_t cli_slow_delay(const cli_slow *s, const char *name) {
  uint64_t d = s->delay_ms;
  if (s->has_speed) {
    int straggler = 0;
    d += client_speed_delay_ms(&s->speed, name, &straggler);
    if (d > 3600000) d = 3600000;
    /* Said once at start whatever the log level: what this simulated device is. */
    fprintf(stderr, "fedc client %s: device speed model: each task takes %llu ms longer%s\n", name,
            (unsigned long long)d, straggler ? " (a straggler)" : "");
  }
  return (uint32_t)d;
}

void cli_slow_wait(uint32_t delay_ms, const char *hold) {
  struct timespec ts = {delay_ms / 1000, (long)(delay_ms % 1000) * 1000000L};
  while (delay_ms && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  while (hold && access(hold, F_OK) != 0) {
    struct timespec poll = {0, 20 * 1000000L};
    nanosleep(&poll, NULL);
  }
}

int cli_slow_fails(const char *fail_if) { return fail_if && access(fail_if, F_OK) == 0; }
