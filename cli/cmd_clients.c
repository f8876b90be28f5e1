/*
 * cmd_clients.c - `fedc clients`: the client identities a coordinator has
 * seen (/fedc.v1.Admin/Clients, admin role): last seen, source hosts, rounds
 * its update was scored in, anomaly score across rounds (coordinator/
 * anomaly.h), flags and exclusion, rate-limit hits and identity misuse
 * counts. A table, or with --json one object per line (fields as in
 * ClientInfo of proto/fedc/v1/fedc.proto).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "fedc/v1/fedc.pb-c.h"

#define M_CLIENTS "/fedc.v1.Admin/Clients"

static void clients_usage(FILE *f) {
  fprintf(f, "Usage: fedc clients [options]\n\n"
             "List the client identities the coordinator has seen, by identity: last seen,\n"
             "source hosts (most recent first), rounds its update was scored in, its anomaly\n"
             "score across rounds (the policy acts on it), rounds flagged, exclusion, calls\n"
             "refused for its rate, and identity misuse (new hosts, concurrent connections).\n\n"
             "Options:\n" CLI_TLS_HELP
             "  --timeout-ms MS          deadline of the call (default 10000)\n"
             "  --json                   one JSON object per line\n"
             "  -h, --help               this help\n");
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }
static json_t *u64(uint64_t v) { return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v); }

static json_t *client_json(const Fedc__V1__ClientInfo *c) {
  json_t *ad = json_array();
  for (size_t i = 0; i < c->n_addresses; i++) json_array_append_new(ad, json_string(c->addresses[i]));
  json_t *o = json_object();
  json_object_set_new(o, "identity", json_string(c->identity ? c->identity : ""));
  json_object_set_new(o, "last_seen_unix_ms", u64(c->last_seen_unix_ms));
  json_object_set_new(o, "addresses", ad);
  json_object_set_new(o, "rounds", u64(c->rounds));
  json_object_set_new(o, "last_round", u64(c->last_round));
  json_object_set_new(o, "score", num(c->score));
  json_object_set_new(o, "last_score", num(c->last_score));
  json_object_set_new(o, "flags", u64(c->flags));
  json_object_set_new(o, "excluded_until_unix_ms", u64(c->excluded_until_unix_ms));
  json_object_set_new(o, "rate_limited", u64(c->rate_limited));
  json_object_set_new(o, "new_addresses", u64(c->new_addresses));
  json_object_set_new(o, "concurrent", u64(c->concurrent));
  json_object_set_new(o, "refused_concurrent", u64(c->refused_concurrent));
  return o;
}

static void print_table(const Fedc__V1__ClientsResponse *r) {
  printf("anomaly policy %s, threshold %g\n", r->policy ? r->policy : "?", r->threshold);
  if (!r->n_clients) {
    printf("no clients seen yet\n");
    return;
  }
  printf("%-28s %-19s %7s %7s %6s %-9s %6s %6s  %s\n", "IDENTITY", "LAST SEEN (UTC)", "ROUNDS", "SCORE", "FLAGS",
         "EXCLUDED", "RATE", "MISUSE", "HOSTS");
  for (size_t i = 0; i < r->n_clients; i++) {
    const Fedc__V1__ClientInfo *c = r->clients[i];
    char seen[32] = "-", hosts[200] = "";
    if (c->last_seen_unix_ms) {
      time_t t = (time_t)(c->last_seen_unix_ms / 1000);
      struct tm tm;
      gmtime_r(&t, &tm);
      strftime(seen, sizeof seen, "%Y-%m-%d %H:%M:%S", &tm);
    }
    size_t at = 0;
    for (size_t j = 0; j < c->n_addresses && at < sizeof hosts; j++)
      at += (size_t)snprintf(hosts + at, sizeof hosts - at, "%s%s", j ? "," : "", c->addresses[j]);
    printf("%-28s %-19s %7llu %7.2f %6llu %-9s %6llu %6llu  %s\n", c->identity, seen, (unsigned long long)c->rounds,
           c->score, (unsigned long long)c->flags, c->excluded_until_unix_ms ? "yes" : "no",
           (unsigned long long)c->rate_limited, (unsigned long long)(c->new_addresses + c->concurrent),
           hosts[0] ? hosts : "-");
  }
}

int cmd_clients(int argc, char **argv) {
  Fedc__V1__ClientsRequest req = FEDC__V1__CLIENTS_REQUEST__INIT;
  ProtobufCMessage *m = NULL;
  int json = 0;
  int rc = cli_admin_unary("fedc clients", argc, argv, clients_usage, M_CLIENTS, &req.base,
                           &fedc__v1__clients_response__descriptor, &m, &json);
  if (rc >= 0) return rc;
  const Fedc__V1__ClientsResponse *r = (const Fedc__V1__ClientsResponse *)m;
  if (json)
    for (size_t i = 0; i < r->n_clients; i++) cli_print_json(client_json(r->clients[i]));
  else
    print_table(r);
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}
