/*
 * cmd_admin.c - the operator's side of the Admin service: `fedc status`,
 * `fedc rounds`, `fedc round start|pause|resume` and `fedc model get`
 * (`fedc version` lives in cmd_version.c). Each is a thin shell: parse
 * flags, one call on a mutual-TLS channel with the "admin" certificate,
 * print.
 *
 *   command           RPC                              prints
 *   ----------------  -------------------------------  ----------------------------------------
 *   status            /fedc.v1.Admin/Status            engine state, model, clients, counters
 *   rounds            /fedc.v1.Admin/Rounds            one row (or JSON line) per kept round
 *   round OP          /fedc.v1.Admin/RoundControl      paused?, state, round budget
 *   model get         Admin/Status + Admin/GetModel    version, params, sha256; writes safetensors
 *
 * Exit status: 0 ok, 1 failure ("fedc <cmd>: <detail>" on stderr, the detail
 * being the transport's one-line explanation, already meant for a person),
 * 2 usage error. With --json, stdout carries JSON only: one object, or for
 * `rounds` one object per line.
 *
 * Why `model get` asks Status first: the model stream does not name its
 * version, and "latest" may move while we download. Resolving "latest" to
 * an explicit version before the download makes the metadata written into
 * the file (fedc.version, fedc.sha256) true by construction. Version 0 is
 * the one exception (the wire uses 0 for "latest"), handled in model_fetch.
 */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


#include "cli/cli.h"
#include "cli/status_async.h"
#include "cli/status_elig.h"
#include "cli/status_replica.h"
#include "cli/cli_common.h"
#include "cli/rounds_view.h"
#include "common/safetensors.h"
#include "crypto/sha256.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/tensor_stream.h"
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

/* ---- shared helpers --------------------------------------------------------------- */

static int usage_error(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const char *prog, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see %s --help)\n", prog);
  return 2;
}

static void admin_opts_init(admin_opts *o) {
  cli_tls_init(&o->tls);
  o->timeout_ms = DEFAULT_TIMEOUT_MS;
  o->json = 0;
}

/* 1 = c was a shared admin flag (stored), 0 = not ours, 2 = bad value (message printed). */
static int admin_opt(admin_opts *o, const char *prog, int c, const char *arg) {
  if (cli_tls_opt(&o->tls, c, arg)) return 1;
  if (c == OPT_JSON) {
    o->json = 1;
    return 1;
  }
  if (c == OPT_TIMEOUT) {
    unsigned long long v;
    if (cli_parse_u64(prog, "--timeout-ms", arg, &v)) return 2;
    if (v < 1 || v > 86400000ull) {
      fprintf(stderr, "%s: --timeout-ms must be 1..86400000, not %s\n", prog, arg);
      return 2;
    }
    o->timeout_ms = (int)v;
    return 1;
  }
  return 0;
}

/*
 * Resolve the admin identity, start gRPC and open the channel. On success
 * *out is set and the caller owes fc_channel_destroy + fc_transport_shutdown_wait.
 * Returns the exit status to use on failure (1, or 2 for a usage problem);
 * on failure gRPC is not left initialised.
 */
static int admin_connect(admin_opts *o, const char *prog, fc_channel **out) {
  int rc = cli_tls_resolve(&o->tls, "admin", prog);
  if (rc) return rc;
  char identity[128];
  snprintf(identity, sizeof identity, "admin/%s", o->tls.name[0] ? o->tls.name : "admin");
  fc_channel_opts co;
  fc_channel_opts_init(&co);
  co.target = o->tls.coordinator;
  co.insecure_for_testing = o->tls.insecure;
  co.insecure_identity = identity;
  if (!o->tls.insecure) {
    co.tls.ca = o->tls.ca;
    co.tls.cert = o->tls.cert;
    co.tls.key = o->tls.key;
  }
  fc_transport_init();
  char err[512] = "";
  rc = fc_channel_create(&co, out, err, sizeof err);
  if (rc != FEDC_OK) {
    fprintf(stderr, "%s: %s\n", prog, err[0] ? err : fedc_strerror(rc));
    fc_transport_shutdown_wait();
    return 1;
  }
  return 0;
}

static void admin_disconnect(fc_channel *ch) {
  fc_channel_destroy(ch);
  fc_transport_shutdown_wait();
}

static int call_failed(const char *prog, int rc, const fc_status *st, int timeout_ms) {
  /* gRPC's own text for a deadline names no number; say which flag sets it. */
  char d[4 * sizeof st->detail];
  if (st->code == GRPC_STATUS_DEADLINE_EXCEEDED)
    fprintf(stderr, "%s: %s (no complete answer within %d ms; see --timeout-ms)\n", prog,
            st->detail[0] ? CLI_SHOWN(d, st->detail) : "deadline exceeded", timeout_ms);
  else
    fprintf(stderr, "%s: %s\n", prog, st->detail[0] ? CLI_SHOWN(d, st->detail) : fedc_strerror(rc));
  return 1;
}

static char *sha_hex(const ProtobufCBinaryData *b, char out[FC_SHA256_HEX_LEN]) {
  if (b->len != FC_SHA256_LEN) {
    out[0] = '\0';
    return out;
  }
  return fc_hex(b->data, b->len, out);
}

/* jansson refuses NaN and infinities; a round with no loss reported prints null. */
static json_t *json_float(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *json_u64(uint64_t v) { return json_integer((json_int_t)v); }

/* "1.5 MiB" */
static void human_bytes(uint64_t b, char *out, size_t len) {
  static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)b;
  size_t u = 0;
  while (v >= 1024.0 && u + 1 < sizeof unit / sizeof unit[0]) {
    v /= 1024.0;
    u++;
  }
  if (u == 0) snprintf(out, len, "%llu B", (unsigned long long)b);
  else
    snprintf(out, len, "%.1f %s", v, unit[u]);
}

/* "2d 3h 4m 5s", leading zero units left out. */
static void human_duration(uint64_t ms, char *out, size_t len) {
  uint64_t s = ms / 1000, d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60;
  s %= 60;
  if (d) snprintf(out, len, "%llud %lluh %llum %llus", (unsigned long long)d, (unsigned long long)h,
                  (unsigned long long)m, (unsigned long long)s);
  else if (h)
    snprintf(out, len, "%lluh %llum %llus", (unsigned long long)h, (unsigned long long)m, (unsigned long long)s);
  else if (m)
    snprintf(out, len, "%llum %llus", (unsigned long long)m, (unsigned long long)s);
  else
    snprintf(out, len, "%.1fs", (double)ms / 1000.0);
}

static int do_status(fc_channel *ch, int timeout_ms, Fedc__V1__StatusResponse **out, fc_status *st) {
  Fedc__V1__StatusRequest req = FEDC__V1__STATUS_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  int rc = fc_call_unary(ch, M_STATUS, &req.base, &fedc__v1__status_response__descriptor, &resp, timeout_ms, st);
  if (rc == FEDC_OK) *out = (Fedc__V1__StatusResponse *)resp;
  return rc;
}

/* ---- fedc status ------------------------------------------------------------------ */

static void status_usage(FILE *f) {
  fprintf(f,
          "Usage: fedc status [options]\n\n"
          "Show a running coordinator's state: round engine state, current round and its\n"
          "progress, global model version and SHA-256, clients, completed/abandoned rounds.\n\n"
          "Options:\n" ADMIN_HELP);
}

static void status_print(const Fedc__V1__StatusResponse *r, int json) {
  char hex[FC_SHA256_HEX_LEN], proto[32];
  sha_hex(&r->global_sha256, hex);
  snprintf(proto, sizeof proto, "%u.%u", r->protocol_major, r->protocol_minor);
  if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "federation", json_string(r->federation ? r->federation : ""));
    json_object_set_new(o, "state", json_string(r->state ? r->state : ""));
    json_object_set_new(o, "round", json_u64(r->round));
    json_object_set_new(o, "global_version", json_u64(r->global_version));
    json_object_set_new(o, "global_sha256", json_string(hex));
    json_object_set_new(o, "clients_known", json_u64(r->clients_known));
    json_object_set_new(o, "clients_active", json_u64(r->clients_active));
    json_object_set_new(o, "updates_received", json_u64(r->updates_received));
    json_object_set_new(o, "cohort_size", json_u64(r->cohort_size));
    json_object_set_new(o, "paused", json_boolean(r->paused));
    json_object_set_new(o, "pause_reason", json_string(r->pause_reason ? r->pause_reason : ""));
    json_object_set_new(o, "rounds_completed", json_u64(r->rounds_completed));
    json_object_set_new(o, "rounds_abandoned", json_u64(r->rounds_abandoned));
    json_object_set_new(o, "round_budget", json_u64(r->round_budget));
    json_object_set_new(o, "storage_error", json_string(r->storage_error ? r->storage_error : ""));
    json_object_set_new(o, "server_optimizer", json_string(r->server_optimizer ? r->server_optimizer : ""));
    json_object_set_new(o, "dp", json_string(r->dp ? r->dp : ""));
    if (r->dp && r->dp[0]) json_object_set_new(o, "dp_epsilon", json_real(r->dp_epsilon));
    json_object_set_new(o, "uptime_ms", json_u64(r->uptime_ms));
    json_object_set_new(o, "model_params", json_u64(r->model_params));
    json_object_set_new(o, "protocol", json_string(proto));
    status_elig_json(o, r->eligibility);
    status_async_json(o, r->async);
    status_replica_json(o, r->replica);
    cli_print_json(o);
    return;
  }
  char up[64];
  human_duration(r->uptime_ms, up, sizeof up);
  char b[1024]; /* the coordinator's strings, shown escaped */
  printf("federation:      %s\n", CLI_SHOWN(b, r->federation));
  printf("state:           %s%s\n", CLI_SHOWN(b, r->state), r->paused ? " (paused: no new round starts)" : "");
  if (r->paused && r->pause_reason && r->pause_reason[0]) printf("paused because:  %s\n", CLI_SHOWN(b, r->pause_reason));
  printf("round:           %llu\n", (unsigned long long)r->round);
  printf("updates:         %u of %u selected\n", r->updates_received, r->cohort_size);
  printf("global model:    v%llu, %llu parameters\n", (unsigned long long)r->global_version,
         (unsigned long long)r->model_params);
  printf("model sha256:    %s\n", hex);
  printf("clients:         %u known, %u active\n", r->clients_known, r->clients_active);
  status_elig_print(r->eligibility);
  status_async_print(r->async);
  status_replica_print(r->replica);
  char budget[32] = "unlimited";
  if (r->round_budget) snprintf(budget, sizeof budget, "%llu", (unsigned long long)r->round_budget);
  printf("rounds:          %llu completed, %llu abandoned, budget %s\n", (unsigned long long)r->rounds_completed,
         (unsigned long long)r->rounds_abandoned, budget);
  if (r->server_optimizer && r->server_optimizer[0]) printf("server opt:      %s\n", CLI_SHOWN(b, r->server_optimizer));
  if (r->dp && r->dp[0]) printf("privacy:         %s\n", CLI_SHOWN(b, r->dp));
  if (r->storage_error && r->storage_error[0])
    printf("storage:         %s (no new round starts until it can be written)\n", CLI_SHOWN(b, r->storage_error));
  printf("uptime:          %s\n", up);
  printf("protocol:        %s\n", proto);
  fflush(stdout);
}

int cmd_status(int argc, char **argv) {
  Fedc__V1__StatusRequest req = FEDC__V1__STATUS_REQUEST__INIT;
  ProtobufCMessage *m = NULL;
  int json = 0;
  int rc = cli_admin_unary("fedc status", argc, argv, status_usage, M_STATUS, &req.base,
                           &fedc__v1__status_response__descriptor, &m, &json);
  if (rc >= 0) return rc;
  status_print((const Fedc__V1__StatusResponse *)m, json);
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

/* ---- fedc rounds ------------------------------------------------------------------ */

static void rounds_usage(FILE *f) {
  fprintf(f,
          "Usage: fedc rounds [--limit N] [options]\n\n"
          "List the rounds the coordinator keeps, oldest first: outcome, model version\n"
          "produced, participants/selected, examples, mean train loss, bytes in/out and\n"
          "duration; with secure aggregation, how many clients remained after each stage\n"
          "(advertise > shares > masked > consistency > unmask; \"secagg_remaining\" in JSON);\n"
          "with differential privacy, the clip norm each round's tasks announced (CLIP; \"dp_clip\",\n"
          "with \"dp_epsilon\" and \"dp_noise\", in JSON): adaptive clipping moves it round by round.\n"
          "With --json, one JSON object per line per round.\n\n"
          "Options:\n"
          "  --limit N                only the last N rounds (default 0 = all kept)\n"
          "  --plot FILE.png          draw the training loss, federated evaluation and (DP) epsilon per round\n"
          "                           with gnuplot (FILE.gp beside it redraws it)\n" ADMIN_HELP);
}

static json_t *round_json(const Fedc__V1__RoundRecord *r) {
  char hex[FC_SHA256_HEX_LEN];
  json_t *o = json_object();
  json_object_set_new(o, "round", json_u64(r->round));
  json_object_set_new(o, "outcome", json_string(r->outcome ? r->outcome : ""));
  json_object_set_new(o, "version", json_u64(r->version));
  json_object_set_new(o, "participants", json_u64(r->participants));
  json_object_set_new(o, "selected", json_u64(r->selected));
  json_object_set_new(o, "examples", json_u64(r->examples));
  json_object_set_new(o, "mean_train_loss", json_float(r->mean_train_loss));
  json_object_set_new(o, "bytes_in", json_u64(r->bytes_in));
  json_object_set_new(o, "bytes_out", json_u64(r->bytes_out));
  json_object_set_new(o, "started_unix_ms", json_u64(r->started_unix_ms));
  json_object_set_new(o, "ended_unix_ms", json_u64(r->ended_unix_ms));
  double secs = r->ended_unix_ms >= r->started_unix_ms ? (double)(r->ended_unix_ms - r->started_unix_ms) / 1000.0 : 0;
  json_object_set_new(o, "seconds", json_real(secs));
  json_object_set_new(o, "sha256", r->sha256.len == FC_SHA256_LEN ? json_string(sha_hex(&r->sha256, hex)) : json_null());
  json_object_set_new(o, "reason", json_string(r->reason ? r->reason : ""));
  if (r->server_optimizer && r->server_optimizer[0])
    json_object_set_new(o, "server_optimizer", json_string(r->server_optimizer));
  if (r->dp_epsilon > 0) {
    json_object_set_new(o, "dp_epsilon", json_real(r->dp_epsilon));
    json_object_set_new(o, "dp_clip", json_real(r->dp_clip));
    json_object_set_new(o, "dp_noise", json_real(r->dp_noise));
  }
  if (r->n_secagg_remaining) {
    json_t *a = json_array();
    for (size_t i = 0; i < r->n_secagg_remaining && i < 5; i++) json_array_append_new(a, json_integer(r->secagg_remaining[i]));
    json_object_set_new(o, "secagg_remaining", a);
  }
  if (r->n_secagg_blamed || r->secagg_blamed_count) {
    json_t *a = json_array();
    for (size_t i = 0; i < r->n_secagg_blamed; i++) json_array_append_new(a, json_string(r->secagg_blamed[i]));
    json_object_set_new(o, "secagg_blamed", a);
    json_object_set_new(o, "secagg_blamed_count", json_u64(r->secagg_blamed_count > r->n_secagg_blamed
                                                                ? r->secagg_blamed_count
                                                                : r->n_secagg_blamed));
  }
  if (r->eval) json_object_set_new(o, "eval", rounds_eval_json(r->eval)); /* federated evaluation of its model */
  if (r->anomaly) json_object_set_new(o, "anomaly", cli_anomaly_json(r->anomaly)); /* cmd_clients.c */
  if (r->drift) json_object_set_new(o, "drift", cli_drift_json(r->drift)); /* cmd_clients.c */
  if (r->async) json_object_set_new(o, "async", round_async_json(r->async));
  return o;
}

/* "10>9>9>8>8": clients left after each secure-aggregation stage that ran. */
static const char *secagg_cell(const Fedc__V1__RoundRecord *r, char *buf, size_t len) {
  size_t at = 0;
  buf[0] = 0;
  for (size_t i = 0; i < r->n_secagg_remaining && i < 5 && r->secagg_remaining[i] && at < len; i++)
    at += (size_t)snprintf(buf + at, len - at, "%s%u", i ? ">" : "", r->secagg_remaining[i]);
  return buf[0] ? buf : "-";
}

static void rounds_print_table(const Fedc__V1__RoundsResponse *resp) {
  if (resp->n_rounds == 0) {
    printf("no rounds yet\n");
    fflush(stdout);
    return;
  }
  int secagg = 0, dp = 0, ev = 0, as = 0;
  for (size_t i = 0; i < resp->n_rounds; i++) {
    as |= resp->rounds[i]->async != NULL;
    secagg |= resp->rounds[i]->n_secagg_remaining > 0;
    dp |= resp->rounds[i]->dp_epsilon > 0;
    ev |= resp->rounds[i]->eval != NULL;
  }
  printf("%6s  %-9s  %7s  %9s  %10s  %9s  %10s  %10s  %8s", "ROUND", "OUTCOME", "VERSION", "CLIENTS", "EXAMPLES",
         "LOSS", "IN", "OUT", "SECONDS");
  if (dp) printf("  %10s", "CLIP");
  if (ev) printf("  %9s  %9s", "EVAL ACC", "EVAL LOSS");
  if (secagg) printf("  %-24s", "SECAGG LEFT (A>S>M>C>U)");
  if (as) printf("  %-22s", "STALE 0/1/2/3/4-/8-/16+");
  putchar('\n');
  for (size_t i = 0; i < resp->n_rounds; i++) {
    const Fedc__V1__RoundRecord *r = resp->rounds[i];
    int completed = r->outcome && strcmp(r->outcome, "completed") == 0;
    char ver[24], clients[24], loss[24], in[24], out[24];
    if (completed) snprintf(ver, sizeof ver, "%llu", (unsigned long long)r->version);
    else
      snprintf(ver, sizeof ver, "-");
    snprintf(clients, sizeof clients, "%u/%u", r->participants, r->selected);
    if (completed && isfinite(r->mean_train_loss)) snprintf(loss, sizeof loss, "%.4f", r->mean_train_loss);
    else
      snprintf(loss, sizeof loss, "-");
    human_bytes(r->bytes_in, in, sizeof in);
    human_bytes(r->bytes_out, out, sizeof out);
    double secs =
        r->ended_unix_ms >= r->started_unix_ms ? (double)(r->ended_unix_ms - r->started_unix_ms) / 1000.0 : 0;
    char sa[64], o[64], why[1024]; /* outcome and reason: the coordinator's, shown escaped */
    printf("%6llu  %-9s  %7s  %9s  %10llu  %9s  %10s  %10s  %8.1f", (unsigned long long)r->round,
           CLI_SHOWN(o, r->outcome), ver, clients, (unsigned long long)r->examples, loss, in, out, secs);
    char clip[24] = "-";
    if (r->dp_epsilon > 0) snprintf(clip, sizeof clip, "%.4g", r->dp_clip); /* a round the accountant counted */
    if (dp) printf("  %10s", clip);
    char eacc[24], eloss[24];
    rounds_eval_cells(r, eacc, eloss, sizeof eacc);
    if (ev) printf("  %9s  %9s", eacc, eloss);
    if (secagg) printf("  %-24s", secagg_cell(r, sa, sizeof sa));
    if (as) printf("  %-22s", round_async_cell(r, sa, sizeof sa));
    if (!completed && r->reason && r->reason[0]) printf("  (%s)", CLI_SHOWN(why, r->reason));
    if (r->n_secagg_blamed) { /* secure aggregation: named for bad unmask shares */
      printf("  bad unmask shares:");
      for (size_t b = 0; b < r->n_secagg_blamed; b++) printf("%s%s", b ? "," : " ", CLI_SHOWN(why, r->secagg_blamed[b]));
      if (r->secagg_blamed_count > r->n_secagg_blamed)
        printf(" (+%zu more)", (size_t)(r->secagg_blamed_count - r->n_secagg_blamed));
    }
    putchar('\n');
  }
  fflush(stdout);
}

int cmd_rounds(int argc, char **argv) {
  const char *prog = "fedc rounds";
  admin_opts ao;
  admin_opts_init(&ao);
  unsigned long long limit = 0;
  const char *plot = NULL;
  static const struct option longopts[] = {ADMIN_LONGOPTS, {"limit", required_argument, 0, OPT_LIMIT},
                                           {"plot", required_argument, 0, OPT_PLOT}, {0, 0, 0, 0}};
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    int r = admin_opt(&ao, prog, c, optarg);
    if (r == 1) continue;
    if (r == 2) return 2;
    switch (c) {
    case 'h': rounds_usage(stdout); return 0;
    case OPT_LIMIT:
      if (cli_parse_u64(prog, "--limit", optarg, &limit)) return 2;
      if (limit > UINT32_MAX) return usage_error(prog, "--limit must be at most %u", UINT32_MAX);
      break;
    case OPT_PLOT: plot = optarg; break;
    default: return cli_option_error(prog, c, argv, longopts);
    }
  }
  if (optind < argc) return usage_error(prog, "unexpected argument '%s'", argv[optind]);

  fc_channel *ch = NULL;
  int rc = admin_connect(&ao, prog, &ch);
  if (rc) return rc;
  fc_status st;
  memset(&st, 0, sizeof st);
  Fedc__V1__RoundsRequest req = FEDC__V1__ROUNDS_REQUEST__INIT;
  req.limit = (uint32_t)limit;
  ProtobufCMessage *m = NULL;
  int ret = 0;
  rc = fc_call_unary(ch, M_ROUNDS, &req.base, &fedc__v1__rounds_response__descriptor, &m, ao.timeout_ms, &st);
  if (rc != FEDC_OK) {
    ret = call_failed(prog, rc, &st, ao.timeout_ms);
    goto out;
  }
  const Fedc__V1__RoundsResponse *resp = (const Fedc__V1__RoundsResponse *)m;
  if (plot) {
    char title[300];
    snprintf(title, sizeof title, "fedc rounds: %zu rounds from %s", resp->n_rounds, ao.tls.coordinator);
    ret = rounds_plot(resp, plot, title);
  } else if (ao.json) {
    for (size_t i = 0; i < resp->n_rounds; i++) cli_print_json(round_json(resp->rounds[i]));
  } else {
    rounds_print_table(resp);
  }
out:
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  admin_disconnect(ch);
  return ret;
}

/* ---- fedc round start|pause|resume ------------------------------------------------ */

static void round_usage(FILE *f) {
  fprintf(f,
          "Usage: fedc round start [--rounds N] | pause | resume [options]\n\n"
          "  start    let rounds run (clears a pause); with --rounds N, also raise the\n"
          "           round budget by N (so a finished federation trains N more rounds)\n"
          "  pause    no new round starts; the round in progress finishes\n"
          "  resume   rounds start again\n\n"
          "Prints the resulting engine state, whether paused, and the round budget.\n\n"
          "Options:\n"
          "  --rounds N               start only: extra rounds to add (default 0)\n" ADMIN_HELP);
}

int cmd_round(int argc, char **argv) {
  const char *prog = "fedc round";
  admin_opts ao;
  admin_opts_init(&ao);
  unsigned long long extra = 0;
  int have_rounds = 0;
  static const struct option longopts[] = {ADMIN_LONGOPTS, {"rounds", required_argument, 0, OPT_ROUNDS}, {0, 0, 0, 0}};
  opterr = 0;
  int c;
  /* GNU getopt permutes, so flags may come before or after the operation. */
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    int r = admin_opt(&ao, prog, c, optarg);
    if (r == 1) continue;
    if (r == 2) return 2;
    switch (c) {
    case 'h': round_usage(stdout); return 0;
    case OPT_ROUNDS:
      if (cli_parse_u64(prog, "--rounds", optarg, &extra)) return 2;
      if (extra > UINT32_MAX) return usage_error(prog, "--rounds must be at most %u", UINT32_MAX);
      have_rounds = 1;
      break;
    default: return cli_option_error(prog, c, argv, longopts);
    }
  }
  if (optind >= argc) return usage_error(prog, "missing operation: start, pause or resume");
  if (optind + 1 < argc) return usage_error(prog, "unexpected argument '%s'", argv[optind + 1]);
  const char *opname = argv[optind];
  Fedc__V1__RoundControlRequest req = FEDC__V1__ROUND_CONTROL_REQUEST__INIT;
  if (strcmp(opname, "start") == 0) {
    req.op = FEDC__V1__ROUND_CONTROL_REQUEST__OP__START;
    req.extra_rounds = (uint32_t)extra;
  } else if (strcmp(opname, "pause") == 0) {
    req.op = FEDC__V1__ROUND_CONTROL_REQUEST__OP__PAUSE;
  } else if (strcmp(opname, "resume") == 0) {
    req.op = FEDC__V1__ROUND_CONTROL_REQUEST__OP__RESUME;
  } else {
    return usage_error(prog, "unknown operation '%s' (start, pause or resume)", opname);
  }
  if (have_rounds && req.op != FEDC__V1__ROUND_CONTROL_REQUEST__OP__START)
    return usage_error(prog, "--rounds only goes with start");

  fc_channel *ch = NULL;
  int rc = admin_connect(&ao, prog, &ch);
  if (rc) return rc;
  fc_status st;
  memset(&st, 0, sizeof st);
  ProtobufCMessage *m = NULL;
  int ret = 0;
  rc = fc_call_unary(ch, M_ROUND_CONTROL, &req.base, &fedc__v1__round_control_response__descriptor, &m,
                     ao.timeout_ms, &st);
  if (rc != FEDC_OK) {
    ret = call_failed(prog, rc, &st, ao.timeout_ms);
    goto out;
  }
  const Fedc__V1__RoundControlResponse *resp = (const Fedc__V1__RoundControlResponse *)m;
  if (ao.json) {
    json_t *o = json_object();
    json_object_set_new(o, "op", json_string(opname));
    json_object_set_new(o, "paused", json_boolean(resp->paused));
    json_object_set_new(o, "state", json_string(resp->state ? resp->state : ""));
    json_object_set_new(o, "round_budget", json_u64(resp->round_budget));
    cli_print_json(o);
  } else {
    char b[256];
    printf("%s: state %s, %s, round budget %llu\n", opname, CLI_SHOWN(b, resp->state),
           resp->paused ? "paused" : "running", (unsigned long long)resp->round_budget);
    fflush(stdout);
  }
out:
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  admin_disconnect(ch);
  return ret;
}

/* ---- fedc model get --------------------------------------------------------------- */

static void model_usage(FILE *f) {
  fprintf(f,
          "Usage: fedc model get --out FILE [--version V] [--averaged] [--force] [options]\n"
          "       fedc model verify FILE --pki DIR | --ca CA [--manifest M] [--version V] [--json]\n\n"
          "get: download a global model version from the coordinator (SHA-256 verified),\n"
          "write it as a safetensors file with metadata fedc.version and fedc.sha256 and\n"
          "its signed manifest as FILE.manifest, and check that manifest as a client\n"
          "would (refusing a model that fails). Prints the version, parameter count,\n"
          "SHA-256 and signer. verify: check a downloaded file against its manifest\n"
          "(`fedc model verify --help`).\n\n"
          "Options:\n"
          "  --out FILE               where to write the model (required)\n"
          "  --version V              model version (default: the latest; 0 is the initial model)\n"
          "  --averaged               the coordinator's model average as of that version (--model-average),\n"
          "                           not the version itself; it has no manifest of its own\n"
          "  --force                  overwrite FILE if it exists (default: refuse)\n" ADMIN_HELP);
}

/*
 * Stream model `version` (exactly that version) into a new buffer.
 * want_sha, when non-NULL, must be what the stream announces.
 * On FEDC_OK the caller owns *data.
 */
static int model_stream(fc_channel *ch, uint64_t version, int averaged, const uint8_t *want_sha, int timeout_ms,
                        fc_model_spec *spec, float **data, uint64_t *total, uint8_t sha[FC_SHA256_LEN],
                        fc_signed *man, fc_status *st) {
  Fedc__V1__GetModelRequest req = FEDC__V1__GET_MODEL_REQUEST__INIT;
  req.version = version;
  req.averaged = averaged;
  fc_ccall *call = NULL;
  int rc = fc_ccall_start(ch, M_GET_MODEL, FC_RPC_SERVER_STREAM, &req.base, timeout_ms, &call, st);
  if (rc == FEDC_OK)
    rc = fc_tensor_stream_recv_signed(call, FC_MODEL_MAX_PARAMS * sizeof(float), want_sha, spec, data, total, sha,
                                      man, st);
  fc_ccall_destroy(call);
  return rc;
}

/*
 * Fetch a version (or, without have_version, the latest) and learn which it
 * is. "Latest" is resolved through Status to an explicit number first, so a
 * round that completes mid-download cannot mislabel the file.
 */
static int model_fetch(fc_channel *ch, int have_version, uint64_t want_version, int averaged, int timeout_ms,
                       uint64_t *got_version, fc_model_spec *spec, float **data, uint64_t *total,
                       uint8_t sha[FC_SHA256_LEN], fc_signed *man, fc_status *st) {
  if (have_version) {
    *got_version = want_version;
    return model_stream(ch, want_version, averaged, NULL, timeout_ms, spec, data, total, sha, man, st);
  }
  Fedc__V1__StatusResponse *s = NULL;
  int rc = do_status(ch, timeout_ms, &s, st);
  if (rc != FEDC_OK) return rc;
  uint64_t v = s->global_version;
  uint8_t status_sha[FC_SHA256_LEN];
  int have_sha = s->global_sha256.len == FC_SHA256_LEN;
  if (have_sha) memcpy(status_sha, s->global_sha256.data, FC_SHA256_LEN);
  protobuf_c_message_free_unpacked(&s->base, NULL);
  *got_version = v;
  /* The status names the version's digest, not its average's. */
  return model_stream(ch, v, averaged, have_sha && !averaged ? status_sha : NULL, timeout_ms, spec, data, total, sha,
                      man, st);
}

int cmd_model(int argc, char **argv) {
  const char *prog = "fedc model";
  if (argc > 1 && strcmp(argv[1], "verify") == 0) return cmd_model_verify(argc - 1, argv + 1);
  admin_opts ao;
  admin_opts_init(&ao);
  unsigned long long version = 0;
  int have_version = 0;
  const char *out_path = NULL;
  int force = 0, averaged = 0;
  static const struct option longopts[] = {ADMIN_LONGOPTS,
                                           {"averaged", no_argument, 0, OPT_AVERAGED},
                                           {"version", required_argument, 0, OPT_VERSION},
                                           {"out", required_argument, 0, OPT_OUT},
                                           {"force", no_argument, 0, OPT_FORCE},
                                           {0, 0, 0, 0}};
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    int r = admin_opt(&ao, prog, c, optarg);
    if (r == 1) continue;
    if (r == 2) return 2;
    switch (c) {
    case 'h': model_usage(stdout); return 0;
    case OPT_VERSION:
      if (cli_parse_u64(prog, "--version", optarg, &version)) return 2;
      have_version = 1;
      break;
    case OPT_OUT: out_path = optarg; break;
    case OPT_FORCE: force = 1; break;
    case OPT_AVERAGED: averaged = 1; break;
    default: return cli_option_error(prog, c, argv, longopts);
    }
  }
  if (optind >= argc) return usage_error(prog, "missing operation: get or verify");
  if (strcmp(argv[optind], "get") != 0)
    return usage_error(prog, "unknown operation '%s' (get, or verify FILE first)", argv[optind]);
  if (optind + 1 < argc) return usage_error(prog, "unexpected argument '%s'", argv[optind + 1]);
  if (!out_path || !out_path[0]) return usage_error(prog, "--out FILE is required");

  /* Checked before the download so a mistake costs nothing. The write itself
   * is an atomic rename, so a file appearing meanwhile is simply replaced. */
  struct stat sb;
  if (!force && lstat(out_path, &sb) == 0) {
    fprintf(stderr, "%s: %s already exists (use --force to overwrite)\n", prog, out_path);
    return 1;
  }

  fc_channel *ch = NULL;
  int rc = admin_connect(&ao, prog, &ch);
  if (rc) return rc;
  fc_status st;
  memset(&st, 0, sizeof st);
  fc_model_spec spec;
  float *data = NULL;
  uint64_t total = 0, got_version = 0;
  uint8_t sha[FC_SHA256_LEN];
  char hex[FC_SHA256_HEX_LEN], vbuf[32], err[512], signer[200] = "", man_path[PATH_MAX] = "";
  fc_signed man;
  memset(&man, 0, sizeof man);
  int ret = 0;
  rc = model_fetch(ch, have_version, version, averaged, ao.timeout_ms, &got_version, &spec, &data, &total, sha, &man,
                   &st);
  if (rc != FEDC_OK) {
    ret = call_failed(prog, rc, &st, ao.timeout_ms);
    goto out;
  }
  /* An average is never sent with a manifest: a coordinator that does
   * not know the request's averaged field (an older release) sends the
   * version itself, which must not be written as an average. */
  if (averaged && man.msg) {
    fprintf(stderr, "%s: the coordinator sent signed model v%llu, not its model average: it does not serve averages "
                    "(upgrade it)\n", prog, (unsigned long long)got_version);
    ret = 1;
    goto out;
  }
  /* Checked as a client checks it, before anything is written. */
  if (man.msg && !ao.tls.ca[0]) {
    fprintf(stderr, "%s: warning: no CA (insecure mode): the signed manifest of v%llu is not checked\n", prog,
            (unsigned long long)got_version);
  } else if (man.msg) {
    fc_manifest mf;
    rc = model_manifest_check(ao.tls.ca, &man, 1, got_version, sha, &spec, total, &mf, signer, sizeof signer, err,
                              sizeof err);
    if (rc != FEDC_OK) {
      fprintf(stderr, "%s: refusing model v%llu: %s\n", prog, (unsigned long long)got_version, err);
      ret = 1;
      goto out;
    }
  } else if (!averaged) {
    fprintf(stderr, "%s: warning: model v%llu is unsigned (the coordinator has no model-signing key)\n", prog,
            (unsigned long long)got_version);
  }
  fc_hex(sha, FC_SHA256_LEN, hex);
  snprintf(vbuf, sizeof vbuf, "%llu", (unsigned long long)got_version);
  fc_st_meta meta;
  memset(&meta, 0, sizeof meta);
  if (fc_st_meta_set(&meta, "fedc.version", vbuf) != FEDC_OK || fc_st_meta_set(&meta, "fedc.sha256", hex) != FEDC_OK ||
      (averaged && fc_st_meta_set(&meta, "fedc.model_average", "true") != FEDC_OK)) {
    fprintf(stderr, "%s: cannot build the file metadata\n", prog);
    ret = 1;
    goto out;
  }
  err[0] = '\0';
  rc = fc_safetensors_write(out_path, &spec, data, &meta, err, sizeof err);
  if (rc != FEDC_OK) {
    fprintf(stderr, "%s: cannot write %s: %s\n", prog, out_path, err[0] ? err : fedc_strerror(rc));
    ret = 1;
    goto out;
  }
  if (man.msg) {
    snprintf(man_path, sizeof man_path, "%s.manifest", out_path);
    if (fc_signed_file_write(man_path, &man, err, sizeof err) != FEDC_OK) {
      fprintf(stderr, "%s: %s\n", prog, err);
      ret = 1;
      goto out;
    }
  }
  uint64_t params = fc_model_numel(&spec);
  if (ao.json) {
    json_t *o = json_object();
    json_object_set_new(o, "version", json_u64(got_version));
    json_object_set_new(o, "params", json_u64(params));
    json_object_set_new(o, "bytes", json_u64(total));
    json_object_set_new(o, "sha256", json_string(hex));
    json_object_set_new(o, "tensors", json_u64(spec.n));
    json_object_set_new(o, "averaged", json_boolean(averaged));
    json_object_set_new(o, "out", json_string(out_path));
    json_object_set_new(o, "signed", json_boolean(man.msg != NULL));
    json_object_set_new(o, "signer", man.msg ? json_string(signer) : json_null());
    json_object_set_new(o, "manifest", man.msg ? json_string(man_path) : json_null());
    cli_print_json(o);
  } else {
    printf("%smodel v%llu: %llu parameters in %u tensors\nsha256 %s\nwritten to %s\n",
           averaged ? "model average as of " : "", (unsigned long long)got_version, (unsigned long long)params, spec.n,
           hex, out_path);
    if (man.msg) printf("signed by %s; manifest written to %s\n", signer, man_path);
    fflush(stdout);
  }
out:
  fc_signed_free(&man);
  free(data);
  admin_disconnect(ch);
  return ret;
}

/* ---- for admin subcommands in their own files (cmd_clients.c) ----------------------- */

int cli_admin_unary(const char *prog, int argc, char **argv, void (*usage)(FILE *), const char *method,
                    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp,
                    int *json) {
  admin_opts ao;
  admin_opts_init(&ao);
  static const struct option longopts[] = {ADMIN_LONGOPTS, {0, 0, 0, 0}};
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    int r = admin_opt(&ao, prog, c, optarg);
    if (r == 1) continue;
    if (r == 2) return 2;
    if (c == 'h') {
      usage(stdout);
      return 0;
    }
    return cli_option_error(prog, c, argv, longopts);
  }
  if (optind < argc) return usage_error(prog, "unexpected argument '%s'", argv[optind]);
  fc_channel *ch = NULL;
  int rc = admin_connect(&ao, prog, &ch);
  if (rc) return rc;
  fc_status st;
  memset(&st, 0, sizeof st);
  int ret = -1;
  rc = fc_call_unary(ch, method, req, desc, resp, ao.timeout_ms, &st);
  if (rc != FEDC_OK) ret = call_failed(prog, rc, &st, ao.timeout_ms);
  *json = ao.json;
  admin_disconnect(ch);
  return ret;
}
