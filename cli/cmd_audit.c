/*
 * cmd_audit.c - `fedc audit verify|show --state DIR`: check the coordinator's
 * hash-chained audit log (coordinator/audit.h) and print its records. Reads
 * the file only (works on a copy, a backup, or a live coordinator's state).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "coordinator/audit.h"
#include "fedc/error.h"

static void usage(FILE *f) {
  fprintf(f, "Usage: fedc audit verify --state DIR [--json]\n"
             "       fedc audit show --state DIR [--kind KIND] [--last N] [--json]\n\n"
             "The coordinator's audit log (DIR/audit.log): one hash-chained record per first contact of a\n"
             "certificate, admin action, accepted or refused update, published model version, start and stop.\n"
             "  verify  check the whole chain; report the first broken, missing or reordered record and\n"
             "          the head hash to keep elsewhere (cutting whole records off the end is only\n"
             "          detectable against such an anchor). Exit 0 intact, 1 broken, 2 usage/IO.\n"
             "  show    print the records (contact, admin, update, model, model_failed,\n"
             "          round_abandoned, start, stop); exit 1 if the chain is broken.\n"
             "  --json  verify: one JSON object; show: the records as JSON lines\n");
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  while (b) {
    size_t r = fread(b + n, 1, cap - n, f);
    n += r;
    if (n < cap) break;
    char *nb = realloc(b, cap *= 2);
    if (!nb) {
      free(b);
      b = NULL;
    } else {
      b = nb;
    }
  }
  fclose(f);
  *len = n;
  return b;
}

static void print_record(json_t *o) {
  time_t ts = (time_t)(json_integer_value(json_object_get(o, "ts_ms")) / 1000);
  struct tm tm;
  char when[32];
  gmtime_r(&ts, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  printf("%6lld  %s  %-15s", (long long)json_integer_value(json_object_get(o, "seq")), when,
         json_string_value(json_object_get(o, "kind")));
  const char *key;
  json_t *v;
  json_object_foreach(o, key, v) {
    if (fc_audit_reserved_key(key)) continue;
    if (json_is_string(v)) {
      const char *s = json_string_value(v);
      /* Hashes shortened for the table; --json has them whole. */
      if (strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64) printf(" %s=%.12s", key, s);
      else printf(" %s=%s", key, s);
    } else {
      char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
      printf(" %s=%s", key, t ? t : "?");
      free(t);
    }
  }
  printf("\n");
}

typedef struct show_ctx {
  const char *kind; /* only this kind (NULL: all) */
  int json;
  uint64_t skip;    /* records before the --last ones */
} show_ctx;

static int show_one(json_t *rec, const char *line, size_t n, void *ctx) {
  show_ctx *sc = ctx;
  if (sc->skip) {
    sc->skip--;
    return 0;
  }
  const char *k = json_string_value(json_object_get(rec, "kind"));
  if (sc->kind && (!k || strcmp(k, sc->kind) != 0)) return 0;
  if (sc->json) printf("%.*s\n", (int)n, line);
  else print_record(rec);
  return 0;
}

int cmd_audit(int argc, char **argv) {
  const char *prog = "fedc audit";
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char *verb = argv[1];
  int show = !strcmp(verb, "show");
  if (!show && strcmp(verb, "verify") != 0) {
    fprintf(stderr, "%s: unknown verb '%s' (verify or show)\n", prog, verb);
    return 2;
  }
  enum { O_STATE = 1, O_JSON, O_KIND, O_LAST, O_HELP };
  static const struct option lo[] = {{"state", required_argument, 0, O_STATE}, {"json", no_argument, 0, O_JSON},
                                     {"kind", required_argument, 0, O_KIND},   {"last", required_argument, 0, O_LAST},
                                     {"help", no_argument, 0, O_HELP},         {0, 0, 0, 0}};
  const char *state = NULL, *kind = NULL;
  unsigned long long last = 0;
  int json = 0, opt;
  opterr = 0;
  optind = 2;
  while ((opt = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
    switch (opt) {
    case O_STATE: state = optarg; break;
    case O_JSON: json = 1; break;
    case O_KIND: kind = optarg; break;
    case O_LAST:
      if (cli_parse_u64(prog, "--last", optarg, &last)) return 2;
      break;
    case 'h':
    case O_HELP: usage(stdout); return 0;
    default: return cli_option_error(prog, opt, argv, lo);
    }
  }
  if (!state || optind < argc || (!show && (kind || last))) {
    usage(stderr);
    return 2;
  }
  char path[1100];
  snprintf(path, sizeof path, "%s/%s", state, FC_AUDIT_FILE);
  size_t len = 0;
  char *buf = slurp(path, &len);
  if (!buf) {
    fprintf(stderr, "%s: cannot read %s: %s\n", prog, path, strerror(errno));
    return 2;
  }
  fc_audit_report r;
  int ok = fc_audit_verify(buf, len, &r) == FEDC_OK;
  if (!show) {
    if (json) {
      json_t *o = json_pack("{s:s,s:b,s:I,s:s}", "file", path, "intact", ok, "records", (json_int_t)r.records, "head",
                            r.head);
      if (!ok) {
        json_object_set_new(o, "bad_line", json_integer((json_int_t)r.bad_line));
        json_object_set_new(o, "problem", json_string(r.problem));
      }
      cli_print_json(o); /* takes the reference */
    } else if (ok) {
      printf("%s: %llu records, chain intact; head %s\n", path, (unsigned long long)r.records,
             r.records ? r.head : "(empty)");
    } else {
      printf("%s: BROKEN at line %llu: %s\n  %llu records before it are intact (head %s)\n", path,
             (unsigned long long)r.bad_line, r.problem, (unsigned long long)r.records,
             r.records ? r.head : "(none)");
    }
    free(buf);
    return ok ? 0 : 1;
  }
  /* show: the records (up to the first problem), oldest first. */
  show_ctx sc = {kind, json, last && last < r.records ? r.records - last : 0};
  fc_audit_walk(buf, len, &r, show_one, &sc);
  if (!ok)
    fprintf(stderr, "%s: the chain is BROKEN at line %llu: %s (records after it not shown)\n", prog,
            (unsigned long long)r.bad_line, r.problem);
  free(buf);
  return ok ? 0 : 1;
}
