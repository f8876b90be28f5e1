/*
 * admin_int.h - what the admin subcommands share (cmd_admin.c owns it;
 * cmd_model.c uses it): the shared flags (TLS identity, --timeout-ms,
 * --json), the channel to the coordinator's Admin service, and how a failed
 * call is reported. Internal to the fedc binary.
 */
#ifndef FEDC_CLI_ADMIN_INT_H
#define FEDC_CLI_ADMIN_INT_H

#include <getopt.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "cli/cli_common.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/transport.h"

#define DEFAULT_TIMEOUT_MS 10000

#define M_STATUS "/fedc.v1.Admin/Status"
#define M_ROUNDS "/fedc.v1.Admin/Rounds"
#define M_ROUND_CONTROL "/fedc.v1.Admin/RoundControl"
#define M_GET_MODEL "/fedc.v1.Admin/GetModel"

/* Option ids of the admin flags (the shared TLS ids start at 1000). */
enum {
  OPT_TIMEOUT = 2000,
  OPT_JSON,
  OPT_LIMIT,
  OPT_ROUNDS,
  OPT_VERSION,
  OPT_OUT,
  OPT_FORCE,
  OPT_AVERAGED,
  OPT_PLOT,
};

#define ADMIN_LONGOPTS                                                                                        \
  CLI_TLS_LONGOPTS, {"timeout-ms", required_argument, 0, OPT_TIMEOUT}, {"json", no_argument, 0, OPT_JSON},    \
      {"help", no_argument, 0, 'h'}

#define ADMIN_HELP                                                                                            \
  CLI_TLS_HELP                                                                                                \
  "  --timeout-ms MS          deadline of each call (default 10000)\n"                                       \
  "  --json                   machine-readable output\n"                                                     \
  "  -h, --help               this help\n"

typedef struct admin_opts {
  cli_tls tls;
  int timeout_ms;
  int json;
} admin_opts;

/* "PROG: MESSAGE (see PROG --help)" on stderr; returns 2. */
int usage_error(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void admin_opts_init(admin_opts *o);
/* 1 = c was a shared admin flag (stored), 0 = not ours, 2 = bad value (message printed). */
int admin_opt(admin_opts *o, const char *prog, int c, const char *arg);
/* Resolve the admin identity, start gRPC and open the channel: 0 and *out
 * (the caller owes admin_disconnect), or the exit status (1, 2 for usage). */
int admin_connect(admin_opts *o, const char *prog, fc_channel **out);
void admin_disconnect(fc_channel *ch);
/* Print why a call failed ("PROG: detail"); returns 1. */
int call_failed(const char *prog, int rc, const fc_status *st, int timeout_ms);
/* A JSON integer of a u64 count (jansson's integers are signed). */
json_t *json_u64(uint64_t v);
/* /fedc.v1.Admin/Status: on FEDC_OK the caller owns *out. */
int do_status(fc_channel *ch, int timeout_ms, Fedc__V1__StatusResponse **out, fc_status *st);

#endif
