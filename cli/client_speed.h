/*
 * client_speed.h - `fedc client --device-speed`: a device-speed model for
 * comparing synchronous and asynchronous federations on the same simulated
 * fleet (issue 25). Each client draws, from a seed and its name, a compute
 * and a network delay from lognormals (heavy-tailed, as device fleets are);
 * a fraction of the clients, drawn the same way, are stragglers 10x slower.
 * Every training task then takes that much longer, for real (the process
 * sleeps), so the coordinator sees the delays as it would from devices.
 * Internal to the CLI (cmd_client.c); calls nothing else of cli/.
 */
#ifndef FEDC_CLI_CLIENT_SPEED_H
#define FEDC_CLI_CLIENT_SPEED_H

#include <stddef.h>
#include <stdint.h>

typedef struct client_speed {
  double compute_ms, net_ms; /* medians */
  double sigma;              /* of the underlying normal (0 = every device at the median) */
  double stragglers;         /* fraction of devices 10x slower, in [0, 1] */
  uint64_t seed;
} client_speed;

/* "COMPUTE_MS:NET_MS:SIGMA:STRAGGLERS[:SEED]": 0, or -1 with a one-line reason in err. */
int client_speed_parse(const char *spec, client_speed *out, char *err, size_t errlen);
/* The delay (ms) every task of client `name` takes longer; *straggler set to
 * 1 if it is one. Deterministic in (spec, name); at most 1 h. */
uint32_t client_speed_delay_ms(const client_speed *s, const char *name, int *straggler);

/* The slow-device options of `fedc client` together: --train-delay-ms MS
 * (every client), --device-speed SPEC (each its own), --train-hold FILE,
 * and --train-fail-if FILE (a trainer that fails). */
typedef struct cli_slow {
  uint32_t delay_ms;
  const char *hold;
  const char *fail_if;
  int has_speed;
  client_speed speed;
} cli_slow;
#define CLI_SLOW_HELP                                                                                             \
  "  --train-delay-ms MS      research/tests: each training task takes MS longer (a slower device)\n"              \
  "  --device-speed C:N:S:F[:SEED]  research (fedc sim): each task takes a device's compute + network\n"           \
  "                           delay longer, drawn per client from lognormals with medians C and N ms\n"           \
  "                           and sigma S; a fraction F of the clients are stragglers 10x slower\n"                \
  "  --train-hold FILE        research/tests: training finishes only once FILE exists\n"                     \
  "  --train-fail-if FILE     research/tests: training fails (the trainer returns an error) while FILE\n"     \
  "                           exists, as a device's training that runs out of memory or data\n"
/* One option by name ("train-delay-ms", "train-hold", "train-fail-if", "device-speed"): 0, or 1 after a
 * one-line error. */
int cli_slow_option(cli_slow *s, const char *name, const char *arg);
/* Client `name`'s extra time per task (ms, at most 1 h); logs the draw under --device-speed. */
uint32_t cli_slow_delay(const cli_slow *s, const char *name);
/* In the trainer: sleep delay_ms, then wait until `hold` exists (NULL: no hold). */
void cli_slow_wait(uint32_t delay_ms, const char *hold);
/* In the trainer, after the wait: 1 if the training must fail (`fail_if` exists). */
int cli_slow_fails(const char *fail_if);

#endif
