/*
 * cli_common.c - shared CLI helpers. See cli_common.h.
 */
#include "cli/cli_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cli_tls_init(cli_tls *t) {
  memset(t, 0, sizeof *t);
  snprintf(t->coordinator, sizeof t->coordinator, "127.0.0.1:7070");
}

int cli_tls_opt(cli_tls *t, int opt, const char *arg) {
  switch (opt) {
  case CLI_OPT_PKI: snprintf(t->pki, sizeof t->pki, "%s", arg); return 1;
  case CLI_OPT_NAME: snprintf(t->name, sizeof t->name, "%s", arg); return 1;
  case CLI_OPT_CA: snprintf(t->ca, sizeof t->ca, "%s", arg); return 1;
  case CLI_OPT_CERT: snprintf(t->cert, sizeof t->cert, "%s", arg); return 1;
  case CLI_OPT_KEY: snprintf(t->key, sizeof t->key, "%s", arg); return 1;
  case CLI_OPT_COORDINATOR: snprintf(t->coordinator, sizeof t->coordinator, "%s", arg); return 1;
  case CLI_OPT_INSECURE: t->insecure = 1; return 1;
  default: return 0;
  }
}

int cli_tls_resolve(cli_tls *t, const char *role, const char *prog) {
  if (t->insecure) return 0;
  if (t->pki[0]) {
    if (!t->ca[0]) snprintf(t->ca, sizeof t->ca, "%s/ca.crt", t->pki);
    if (!t->name[0] && strcmp(role, "coordinator") == 0) snprintf(t->name, sizeof t->name, "coordinator");
    if (t->name[0] && strcmp(role, "coordinator") == 0 && strcmp(t->name, "coordinator") == 0) {
      if (!t->cert[0]) snprintf(t->cert, sizeof t->cert, "%s/coordinator.crt", t->pki);
      if (!t->key[0]) snprintf(t->key, sizeof t->key, "%s/coordinator.key", t->pki);
    } else if (t->name[0]) {
      if (!t->cert[0]) snprintf(t->cert, sizeof t->cert, "%s/%s-%s.crt", t->pki, role, t->name);
      if (!t->key[0]) snprintf(t->key, sizeof t->key, "%s/%s-%s.key", t->pki, role, t->name);
    }
  }
  if (!t->ca[0] || !t->cert[0] || !t->key[0]) {
    fprintf(stderr, "%s: TLS identity needed: --pki DIR --name NAME, or --ca/--cert/--key\n", prog);
    return 2;
  }
  return 0;
}

void cli_print_json(json_t *v) {
  if (!v) return;
  char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s) {
    fputs(s, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    free(s);
  }
  json_decref(v);
}

int cli_parse_u64(const char *prog, const char *flag, const char *s, unsigned long long *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-') {
    fprintf(stderr, "%s: %s wants a non-negative integer, got '%s'\n", prog, flag, s);
    return 2;
  }
  *out = v;
  return 0;
}

int cli_parse_double(const char *prog, const char *flag, const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v != v) {
    fprintf(stderr, "%s: %s wants a number, got '%s'\n", prog, flag, s);
    return 2;
  }
  *out = v;
  return 0;
}

