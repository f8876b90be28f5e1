/*
 * cmd_admin.c - the operator's side of the Admin service: `fedc status`,
 * `fedc rounds`, `fedc round start|pause|resume`, and the helpers every
 * admin subcommand shares (admin_int.h; `fedc model get` is cmd_model.c,
 * `fedc version` cmd_version.c). Each is a thin shell: parse
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
 * `model get` asks Status first, to name the version it writes (cmd_model.c).
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

#include "cli/admin_int.h"
#include "cli/cli.h"
#include "cli/cli_common.h"
#include "cli/rounds_view.h"
#include "cli/status_async.h"
#include "cli/status_elig.h"
#include "cli/status_replica.h"
#include "crypto/sha256.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/transport.h"

/* ---- shared helpers --------------------------------------------------------------- */

int usage_error(const char *prog, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see %s --help)\n", prog);
  return 2;
}

void admin_opts_init(admin_opts *o) {
  cli_tls_init(&o->tls);
  o->timeout_ms = DEFAULT_TIMEOUT_MS;
  o->json = 0;
}

/* 1 = c was a shared admin flag (stored), 0 = not ours, 2 = bad value (message printed). */
int admin_opt(admin_opts *o, const char *prog, int c, const char *arg) {
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
int admin_connect(admin_opts *o, const char *prog, fc_channel **out) {
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

void admin_disconnect(fc_channel *ch) {
  fc_channel_destroy(ch);
  fc_transport_shutdown_wait();
}

int call_failed(const char *prog, int rc, const fc_status *st, int timeout_ms) {
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

json_t *json_u64(uint64_t v) { return json_integer((json_int_t)v); }

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

int do_status(fc_channel *ch, int timeout_ms, Fedc__V1__StatusResponse **out, fc_status *st) {
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
