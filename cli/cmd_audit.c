/*
 * cmd_audit.c - `fedc audit verify|show --state DIR`: check the coordinator's
 * hash-chained audit log (coordinator/audit.h) and print its records. Reads
 * the file only (works on a copy, a backup, or a live coordinator's state:
 * with --pki, the manifests are read before the log, fc_audit_read_anchored).
 * With --pki/--ca, verify also checks the log against the signed manifests
 * in DIR/models (coordinator/audit_anchor.h): a rewrite before the newest
 * signed version is detected, the records after it are reported unanchored.
 *
 * Everything printed for a human is escaped (fc_text_escape): a record's
 * strings are whatever a peer put in them.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/audit.h"
#include "coordinator/audit_anchor.h"
#include "crypto/pki.h"
#include "fedc/error.h"

static void usage(FILE *f) {
  char kinds[256];
  fprintf(f, "Usage: fedc audit verify --state DIR [--pki PKI | --ca CA] [--json]\n"
             "       fedc audit show --state DIR [--kind KIND] [--last N] [--json]\n\n"
             "The coordinator's audit log (DIR/audit.log): one hash-chained record per first contact of a\n"
             "certificate, admin action, accepted or refused update, published model version, start and stop.\n"
             "  verify  check the whole chain; report the first broken, missing or reordered record and\n"
             "          the head hash. With --pki PKI (PKI/ca.crt) or --ca CA, also check it against the\n"
             "          signed manifests in DIR/models: each names the log's head when it was signed, so\n"
             "          a log rewritten (records dropped and re-chained, or cut off) before the newest\n"
             "          signed version fails; the records after it are reported as not yet anchored.\n"
             "          Exit 0 intact, 1 broken or rewritten, 2 usage/IO.\n"
             "  show    print the records, oldest first; exit 1 if the chain is broken.\n"
             "  --kind KIND  only records of KIND (%s)\n"
             "  --last N     only the last N records (of KIND, with --kind)\n"
             "  --json  verify: one JSON object; show: the records as JSON lines\n",
          fc_audit_kind_list(kinds, sizeof kinds));
}

static void print_record(json_t *o) {
  time_t ts = (time_t)(json_integer_value(json_object_get(o, "ts_ms")) / 1000);
  struct tm tm;
  char when[32], k[256], v[4 * FC_AUDIT_MAX_LINE + 1];
  gmtime_r(&ts, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  printf("%6lld  %s  %-15s", (long long)json_integer_value(json_object_get(o, "seq")), when,
         CLI_SHOWN(k, json_string_value(json_object_get(o, "kind"))));
  const char *key;
  json_t *val;
  json_object_foreach(o, key, val) {
    if (fc_audit_reserved_key(key)) continue;
    if (json_is_string(val)) {
      const char *s = json_string_value(val);
      /* Hashes shortened for the table; --json has them whole. */
      if (strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64) printf(" %s=%.12s", CLI_SHOWN(k, key), s);
      else printf(" %s=%s", CLI_SHOWN(k, key), CLI_SHOWN(v, s));
    } else {
      /* Strings inside come out JSON-escaped and ASCII: nothing raw. */
      char *t = json_dumps(val, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII);
      printf(" %s=%s", CLI_SHOWN(k, key), t ? t : "?");
      free(t);
    }
  }
  printf("\n");
}

typedef struct show_ctx {
  const char *kind; /* only this kind (NULL: all) */
  int json, count;  /* count: only count the matching records */
  uint64_t matching; /* records of kind (counting pass) */
  uint64_t skip;     /* matching records before the --last ones */
} show_ctx;

static int show_one(json_t *rec, const char *line, size_t n, void *ctx) {
  show_ctx *sc = ctx;
  const char *k = json_string_value(json_object_get(rec, "kind"));
  if (sc->kind && (!k || strcmp(k, sc->kind) != 0)) return 0;
  if (sc->count) {
    sc->matching++;
    return 0;
  }
  if (sc->skip) {
    sc->skip--;
    return 0;
  }
  /* The line as written: printable ASCII, or fc_audit_walk refused it. */
  if (sc->json) printf("%.*s\n", (int)n, line);
  else print_record(rec);
  return 0;
}

/* Two walks of the open log: count what --kind selects, then print the
 * last N of them from the same bytes (the second stops where the first did:
 * a live log grows meanwhile). */
static int show(const char *prog, int fd, const char *kind, unsigned long long last, int json) {
  fc_audit_report r, r2;
  fc_audit_src log = FC_AUDIT_SRC_FD(fd);
  show_ctx sc = {kind, json, 1, 0, 0};
  /* With --kind, only that kind's records are built; the rest are checked
   * by the tree-free scan (audit_shape.h). */
  const char *only[2] = {kind, NULL};
  log.wait_torn = 1;
  log.build = kind ? only : NULL;
  int rc = fc_audit_walk_src(&log, &r, show_one, &sc);
  if (rc == FEDC_ERR_IO || rc == FEDC_ERR_NOMEM) {
    fprintf(stderr, "%s: cannot read the log: %s\n", prog, rc == FEDC_ERR_IO ? log.err : "out of memory");
    return 2;
  }
  int ok = rc == FEDC_OK;
  sc.count = 0;
  sc.skip = last && last < sc.matching ? sc.matching - last : 0;
  fc_audit_src again = FC_AUDIT_SRC_FD_LIMIT(fd, r.valid_bytes);
  again.build = log.build;
  if ((rc = fc_audit_walk_src(&again, &r2, show_one, &sc)) != FEDC_OK) {
    /* The same bytes read otherwise the second time: rewritten in place
     * meanwhile (an append-only writer cannot do that). */
    char p[sizeof r2.problem * 4];
    if (rc == FEDC_ERR_INVALID) {
      fprintf(stderr, "%s: the log CHANGED while it was read, at line %llu: %s\n", prog,
              (unsigned long long)r2.bad_line, CLI_SHOWN(p, r2.problem));
      return 1;
    }
    fprintf(stderr, "%s: cannot read the log again: %s\n", prog,
            rc == FEDC_ERR_IO ? CLI_SHOWN(p, again.err) : "out of memory");
    return 2;
  }
  if (!ok) {
    char p[sizeof r.problem * 4];
    fprintf(stderr, "%s: the chain is BROKEN at line %llu: %s (records after it not shown)\n", prog,
            (unsigned long long)r.bad_line, CLI_SHOWN(p, r.problem));
  }
  return ok ? 0 : 1;
}

/* verify: the chain, and with a CA the signed manifests' anchors. */
static int verify(const char *prog, const char *state, const char *path, const char *ca, int json) {
  fc_anchor_report ar;
  fc_audit_anchor *anchors = NULL;
  fc_audit_src log = FC_AUDIT_SRC_FD(-1);
  size_t nman = 0;
  char err[600] = "", *ca_pem = NULL;
  size_t ca_len = 0;
  int rc;
  if (ca) {
    if ((rc = fc_read_file(ca, 1u << 20, &ca_pem, &ca_len)) != FEDC_OK) {
      fprintf(stderr, "%s: cannot read CA certificate %s: %s\n", prog, ca, fedc_strerror(rc));
      return 2;
    }
    /* The manifests before the log: a live coordinator may sign a version
     * while we read (fc_audit_read_anchored says why the order matters). */
    rc = fc_audit_read_anchored(state, ca_pem, ca_len, &anchors, &nman, &log, err, sizeof err);
    free(ca_pem);
  } else {
    rc = fc_audit_open_log(state, &log.fd, err, sizeof err);
    log.wait_torn = 1;
  }
  if (rc != FEDC_OK && rc != FEDC_ERR_SIGNATURE) {
    fprintf(stderr, "%s: %s\n", prog, err);
    return 2;
  }
  if (rc == FEDC_ERR_SIGNATURE) { /* a manifest that does not verify: the state was tampered with */
    if (json) {
      cli_print_json(json_pack("{s:s,s:b,s:s}", "file", path, "intact", 0, "problem", err));
    } else {
      char p[sizeof err * 4];
      printf("%s: a signed manifest does not verify: %s\n", path, CLI_SHOWN(p, err));
    }
    return 1;
  }
  if (ca) {
    rc = fc_audit_check_anchors_src(&log, anchors, nman, &ar);
  } else {
    memset(&ar, 0, sizeof ar);
    /* No record needs building: each line is checked by the tree-free scan,
     * which defers to jansson whatever it is not sure of (audit_shape.h). */
    static const char *const none[] = {NULL};
    log.build = none;
    rc = fc_audit_walk_src(&log, &ar.chain, NULL, NULL);
  }
  free(anchors);
  /* A live log grows while it is read; what came after the bytes checked is
   * for the next run (the walk stops there: audit.h). */
  struct stat st;
  uint64_t size = fstat(log.fd, &st) == 0 && st.st_size > 0 ? (uint64_t)st.st_size : 0;
  close(log.fd);
  if (rc == FEDC_ERR_IO) {
    fprintf(stderr, "%s: cannot read %s: %s\n", prog, path, log.err);
    return 2;
  }
  if (rc == FEDC_ERR_NOMEM) {
    fprintf(stderr, "%s: out of memory\n", prog);
    return 2;
  }
  const fc_audit_report *r = &ar.chain;
  int ok = rc == FEDC_OK;
  uint64_t unanchored = r->records - ar.anchored;
  if (json) {
    json_t *o = json_pack("{s:s,s:b,s:I,s:s}", "file", path, "intact", ok, "records", (json_int_t)r->records, "head",
                          r->head);
    json_object_set_new(o, "checked_bytes", json_integer((json_int_t)log.extent));
    if (size > log.extent) json_object_set_new(o, "log_bytes", json_integer((json_int_t)size));
    if (r->bad_line) {
      json_object_set_new(o, "bad_line", json_integer((json_int_t)r->bad_line));
      json_object_set_new(o, "problem", json_string(r->problem));
    } else if (ar.problem[0]) {
      json_object_set_new(o, "problem", json_string(ar.problem));
    }
    if (ca)
      json_object_set_new(o, "anchors",
                          json_pack("{s:I,s:I,s:I,s:o,s:I}", "signed_manifests", (json_int_t)nman, "with_anchor",
                                    (json_int_t)ar.anchors, "anchored_records", (json_int_t)ar.anchored,
                                    "anchored_by_version", ar.anchored ? json_integer((json_int_t)ar.anchored_by)
                                                                       : json_null(),
                                    "unanchored_records", (json_int_t)unanchored));
    cli_print_json(o); /* takes the reference */
    return ok ? 0 : 1;
  }
  char p[sizeof ar.problem * 4];
  if (r->bad_line) {
    printf("%s: BROKEN at line %llu: %s\n  %llu records before it are intact (head %s)\n", path,
           (unsigned long long)r->bad_line, CLI_SHOWN(p, r->problem), (unsigned long long)r->records,
           r->records ? r->head : "(none)");
  } else if (ar.problem[0]) {
    printf("%s: REWRITTEN: %s\n  (the chain itself is consistent: %llu records, head %s)\n", path, CLI_SHOWN(p, ar.problem),
           (unsigned long long)r->records, r->records ? r->head : "(empty)");
  } else {
    printf("%s: %llu records, chain intact; head %s\n", path, (unsigned long long)r->records,
           r->records ? r->head : "(empty)");
    if (size > log.extent)
      printf("  the log grew to %llu bytes while it was read: the records after byte %llu are for the next run\n",
             (unsigned long long)size, (unsigned long long)log.extent);
    if (ca && ar.anchored)
      printf("  records 1..%llu are anchored by signed manifests (the newest: model v%llu; %zu manifests, %zu with "
             "an anchor); the last %llu records are not yet covered by a signature\n",
             (unsigned long long)ar.anchored, (unsigned long long)ar.anchored_by, nman, ar.anchors,
             (unsigned long long)unanchored);
    else if (ca)
      printf("  no record is anchored: %zu signed manifests, %zu with an anchor (format 2); the %llu records are "
             "not covered by a signature\n",
             nman, ar.anchors, (unsigned long long)r->records);
  }
  return ok ? 0 : 1;
}

int cmd_audit(int argc, char **argv) {
  const char *prog = "fedc audit";
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char *verb = argv[1];
  int is_show = !strcmp(verb, "show");
  if (!is_show && strcmp(verb, "verify") != 0) {
    char v[256];
    fprintf(stderr, "%s: unknown verb '%s' (verify or show)\n", prog, CLI_SHOWN(v, verb));
    return 2;
  }
  enum { O_STATE = 1, O_JSON, O_KIND, O_LAST, O_HELP, O_PKI, O_CA };
  static const struct option lo[] = {{"state", required_argument, 0, O_STATE}, {"json", no_argument, 0, O_JSON},
                                     {"kind", required_argument, 0, O_KIND},   {"last", required_argument, 0, O_LAST},
                                     {"pki", required_argument, 0, O_PKI},     {"ca", required_argument, 0, O_CA},
                                     {"help", no_argument, 0, O_HELP},         {0, 0, 0, 0}};
  const char *state = NULL, *kind = NULL;
  char ca[PATH_MAX] = "";
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
    case O_PKI:
      if (!ca[0]) snprintf(ca, sizeof ca, "%s/%s", optarg, FC_PKI_CA_CERT);
      break;
    case O_CA: snprintf(ca, sizeof ca, "%s", optarg); break;
    case 'h':
    case O_HELP: usage(stdout); return 0;
    default: return cli_option_error(prog, opt, argv, lo);
    }
  }
  if (!state || optind < argc || (!is_show && (kind || last)) || (is_show && ca[0])) {
    usage(stderr);
    return 2;
  }
  if (kind && !fc_audit_kind_known(kind)) {
    char k[256], list[256];
    fprintf(stderr, "%s: unknown --kind '%s' (%s)\n", prog, CLI_SHOWN(k, kind), fc_audit_kind_list(list, sizeof list));
    return 2;
  }
  char path[1100], err[1200];
  snprintf(path, sizeof path, "%s/%s", state, FC_AUDIT_FILE);
  if (!is_show) return verify(prog, state, path, ca[0] ? ca : NULL, json);
  int fd;
  if (fc_audit_open_log(state, &fd, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "%s: %s\n", prog, err);
    return 2;
  }
  int rc = show(prog, fd, kind, last, json);
  close(fd);
  return rc;
}
