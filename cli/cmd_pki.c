/*
 * cmd_pki.c - `fedc pki`: create the federation CA, issue certificates, and
 * check one. A thin shell over crypto/pki.h: parse flags, call, print.
 *
 *   subcommand  does                                              writes
 *   ----------  ------------------------------------------------  -----------------------------
 *   init        new CA + coordinator + model-signing certificate  ca.*, coordinator.*, signer-*, federation
 *   issue       a client/admin/coordinator/signer certificate     <role>-<name>.key/.crt
 *   verify      chain, identity and expiry of one certificate     nothing
 *
 * Exit status: 0 ok, 1 failure ("fedc pki: <message>" on stderr), 2 usage
 * error (one line on stderr). With --json, stdout carries exactly one JSON
 * object, also on failure ({"ok": false, "error": ...}).
 */
#define _XOPEN_SOURCE 700 /* strptime */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "common/fileutil.h"
#include "crypto/pki.h"
#include "fedc/error.h"

#define MAX_SANS 32
#define CERT_FILE_CAP (1u << 20)

/* ---- shared helpers --------------------------------------------------------------- */

static int usage_error(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const char *sub, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "fedc pki %s: ", sub);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see fedc pki %s --help)\n", sub);
  return 2;
}

static int parse_days(const char *sub, const char *s, int *out) {
  char *end = NULL;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < 1 || v > FC_PKI_MAX_DAYS) {
    fprintf(stderr, "fedc pki %s: --days must be 1..%d, not %s (see fedc pki %s --help)\n", sub, FC_PKI_MAX_DAYS, s,
            sub);
    return 2;
  }
  *out = (int)v;
  return 0;
}

/* "2027-11-26 11:58:42 UTC" */
static void format_utc(time_t t, char *buf, size_t len) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static void format_iso(time_t t, char *buf, size_t len) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Print obj (consumed) as one line on stdout. */
static void print_json(json_t *obj) {
  char *s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
  if (s) {
    puts(s);
    free(s);
  }
  json_decref(obj);
}

/* Report a failure: the message on stderr, and the JSON object on stdout when
 * asked for. Returns the exit status 1. */
static int fail(int json, int rc, const char *msg) {
  fprintf(stderr, "fedc pki: %s\n", msg);
  if (json)
    print_json(json_pack("{s:b, s:s, s:s}", "ok", 0, "error", msg, "code", fedc_strerror(rc)));
  return 1;
}

static void join(char *out, size_t len, const char *dir, const char *file) {
  snprintf(out, len, "%s/%s", dir, file);
}

/* ---- init ------------------------------------------------------------------------------- */

static void init_help(void) {
  puts("usage: fedc pki init --dir DIR --federation NAME [--san HOST_OR_IP]... [--days N]\n"
       "                     [--key-type ec|ed25519] [--json]\n"
       "\n"
       "Create a federation CA, the coordinator's certificate and its model-signing\n"
       "certificate in DIR (created 0700).\n"
       "An existing DIR must be yours and not writable by group or others (anyone who\n"
       "can write to it could replace ca.crt). Existing files are never overwritten.\n"
       "\n"
       "  --dir DIR          where to write ca.key, ca.crt, coordinator.key, coordinator.crt,\n"
       "                     signer-coordinator.key, signer-coordinator.crt\n"
       "  --federation NAME  federation (SPIFFE trust domain): 1-63 of [a-z0-9.-]\n"
       "  --san HOST_OR_IP   extra coordinator DNS or IP name (repeatable); localhost and\n"
       "                     127.0.0.1 are always included\n"
       "  --days N           validity of the certificates (default 365)\n"
       "  --key-type TYPE    ec (P-256, default) or ed25519\n"
       "  --json             print one JSON object with the paths written\n"
       "\n"
       "Keep ca.key offline: whoever holds it can mint any identity in the federation.");
}

static int pki_init(int argc, char **argv) {
  static const struct option opts[] = {
      {"dir", required_argument, NULL, 'd'},      {"federation", required_argument, NULL, 'f'},
      {"san", required_argument, NULL, 's'},      {"days", required_argument, NULL, 'n'},
      {"key-type", required_argument, NULL, 'k'}, {"json", no_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
  };
  const char *dir = NULL, *federation = NULL, *key_type = "ec";
  const char *sans[MAX_SANS];
  size_t nsans = 0;
  int days = FC_PKI_DEFAULT_DAYS, json = 0, c;
  optind = 0; /* glibc: full re-initialisation for this argv */
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (c) {
    case 'd': dir = optarg; break;
    case 'f': federation = optarg; break;
    case 's':
      if (nsans == MAX_SANS) return usage_error("init", "too many --san (at most 32), at %s", optarg);
      sans[nsans++] = optarg;
      break;
    case 'n':
      if (parse_days("init", optarg, &days)) return 2;
      break;
    case 'k': key_type = optarg; break;
    case 'j': json = 1; break;
    case 'h': init_help(); return 0;
    default: return cli_option_error("fedc pki init", c, argv, opts);
    }
  }
  if (optind < argc) return usage_error("init", "unexpected argument %s", argv[optind]);
  if (!dir) return usage_error("init", "missing --dir");
  if (!federation) return usage_error("init", "missing --federation");
  if (!fc_pki_federation_ok(federation))
    return usage_error("init", "invalid --federation \"%s\": use 1-63 of [a-z0-9.-]", federation);
  if (strcmp(key_type, "ec") != 0 && strcmp(key_type, "ed25519") != 0)
    return usage_error("init", "--key-type must be ec or ed25519, not %s", key_type);

  char err[512] = "";
  int rc = fc_pki_init(dir, federation, sans, nsans, days, key_type, err, sizeof err);
  if (rc) return fail(json, rc, err);

  char ca_key[PATH_MAX], ca_crt[PATH_MAX], co_key[PATH_MAX], co_crt[PATH_MAX], sg_key[PATH_MAX], sg_crt[PATH_MAX];
  char spiffe[160], expiry[64] = "";
  join(ca_key, sizeof ca_key, dir, FC_PKI_CA_KEY);
  join(ca_crt, sizeof ca_crt, dir, FC_PKI_CA_CERT);
  join(co_key, sizeof co_key, dir, FC_PKI_COORD_KEY);
  join(co_crt, sizeof co_crt, dir, FC_PKI_COORD_CERT);
  join(sg_key, sizeof sg_key, dir, FC_PKI_SIGNER_KEY);
  join(sg_crt, sizeof sg_crt, dir, FC_PKI_SIGNER_CERT);
  snprintf(spiffe, sizeof spiffe, "spiffe://%s/coordinator/coordinator", federation);
  time_t not_after = 0;
  int expired = 0;
  if (fc_pki_cert_expiry(ca_crt, &not_after, &expired) == FEDC_OK) format_iso(not_after, expiry, sizeof expiry);

  if (json) {
    json_t *sans_json = json_array();
    for (size_t i = 0; i < nsans; i++) json_array_append_new(sans_json, json_string(sans[i]));
    print_json(json_pack("{s:b, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "ok", 1, "dir",
                         dir, "federation", federation, "key_type", key_type, "days", days, "not_after", expiry,
                         "ca_cert", ca_crt, "ca_key", ca_key, "coordinator_cert", co_crt, "coordinator_key", co_key,
                         "coordinator_spiffe_id", spiffe, "signer_cert", sg_crt, "signer_key", sg_key, "extra_sans",
                         sans_json));
    return 0;
  }
  printf("created PKI for federation \"%s\" (%s keys, valid until %s)\n", federation, key_type, expiry);
  printf("  CA certificate           %s\n", ca_crt);
  printf("  CA key                   %s   (keep it offline)\n", ca_key);
  printf("  coordinator certificate  %s   (%s)\n", co_crt, spiffe);
  printf("  coordinator key          %s\n", co_key);
  printf("  model-signing cert       %s   (spiffe://%s/signer/coordinator)\n", sg_crt, federation);
  printf("  model-signing key        %s\n", sg_key);
  printf("next: fedc pki issue --dir %s --role client --name <id>\n", dir);
  return 0;
}

/* ---- issue ------------------------------------------------------------------------------ */

/* "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SS" (UTC) -> seconds relative to now. */
static int parse_date_offset(const char *s, long *offset) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end || *end) {
    memset(&tm, 0, sizeof tm);
    end = strptime(s, "%Y-%m-%d", &tm);
  }
  if (!end || *end) return -1;
  time_t t = timegm(&tm);
  if (t == (time_t)-1) return -1;
  *offset = (long)(t - time(NULL));
  return 0;
}

static void issue_help(void) {
  puts("usage: fedc pki issue --dir DIR --role client|admin|coordinator|aggregator|signer --name ID [--out DIR]\n"
       "                      [--days N] [--key-type ec|ed25519] [--san HOST_OR_IP]... [--json]\n"
       "\n"
       "Issue a certificate from the CA in DIR (ca.key, ca.crt), with the SPIFFE ID\n"
       "spiffe://<federation>/<role>/<name>. Writes <role>-<name>.key (0600) and .crt\n"
       "into --out (default DIR). Existing files are never overwritten.\n"
       "\n"
       "  --dir DIR         directory holding the CA key and certificate\n"
       "  --role ROLE       client (trains), admin (operates the coordinator) or\n"
       "                    coordinator (serves; gets localhost/127.0.0.1 and --san names),\n"
       "                    aggregator (takes clients' uploads and hands the leader partial sums;\n"
       "                    localhost/127.0.0.1 and --san names as a coordinator) or\n"
       "                    signer (signs model manifests: EKU codeSigning, never a TLS identity;\n"
       "                    init already issues signer-coordinator)\n"
       "  --name ID         1-64 of [A-Za-z0-9_.-]; the certificate CN\n"
       "  --out DIR         where to write (created 0700 if missing; an existing one must\n"
       "                    be yours and not writable by group or others)\n"
       "  --days N          validity (default 365, never beyond the CA's own expiry)\n"
       "  --not-before DATE validity start, YYYY-MM-DD[THH:MM:SS] UTC (default: now - 5 min)\n"
       "  --not-after DATE  validity end (overrides --days; never beyond the CA's expiry)\n"
       "  --key-type TYPE   ec or ed25519 (default: same as the CA)\n"
       "  --san HOST_OR_IP  extra DNS or IP name, coordinator or aggregator (repeatable)\n"
       "  --json            print one JSON object with the paths written");
}

static int pki_issue(int argc, char **argv) {
  static const struct option opts[] = {
      {"dir", required_argument, NULL, 'd'},  {"role", required_argument, NULL, 'r'},
      {"name", required_argument, NULL, 'N'}, {"out", required_argument, NULL, 'o'},
      {"days", required_argument, NULL, 'n'}, {"key-type", required_argument, NULL, 'k'},
      {"san", required_argument, NULL, 's'},  {"json", no_argument, NULL, 'j'},
      {"not-before", required_argument, NULL, 'B'}, {"not-after", required_argument, NULL, 'A'},
      {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
  };
  long nb_off = 0, na_off = 0;
  int have_nb = 0, have_na = 0;
  fc_pki_issue_opts o;
  fc_pki_issue_opts_init(&o);
  const char *sans[MAX_SANS];
  int days = FC_PKI_DEFAULT_DAYS, json = 0, c;
  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (c) {
    case 'd': o.ca_dir = optarg; break;
    case 'r': o.role = optarg; break;
    case 'N': o.name = optarg; break;
    case 'o': o.out_dir = optarg; break;
    case 'n':
      if (parse_days("issue", optarg, &days)) return 2;
      break;
    case 'k': o.key_type = optarg; break;
    case 's':
      if (o.nsans == MAX_SANS) return usage_error("issue", "too many --san (at most 32), at %s", optarg);
      sans[o.nsans++] = optarg;
      break;
    case 'j': json = 1; break;
    case 'B':
      if (parse_date_offset(optarg, &nb_off)) return usage_error("issue", "--not-before wants YYYY-MM-DD, not %s", optarg);
      have_nb = 1;
      break;
    case 'A':
      if (parse_date_offset(optarg, &na_off)) return usage_error("issue", "--not-after wants YYYY-MM-DD, not %s", optarg);
      have_na = 1;
      break;
    case 'h': issue_help(); return 0;
    default: return cli_option_error("fedc pki issue", c, argv, opts);
    }
  }
  if (optind < argc) return usage_error("issue", "unexpected argument %s", argv[optind]);
  if (!o.ca_dir) return usage_error("issue", "missing --dir");
  if (!o.role) return usage_error("issue", "missing --role");
  if (!o.name) return usage_error("issue", "missing --name");
  if (!fc_pki_role_ok(o.role))
    return usage_error("issue", "--role must be client, admin, coordinator, aggregator or signer, not %s", o.role);
  if (!fc_pki_name_ok(o.name)) return usage_error("issue", "invalid --name \"%s\": use 1-64 of [A-Za-z0-9_.-]", o.name);
  if (o.key_type && strcmp(o.key_type, "ec") != 0 && strcmp(o.key_type, "ed25519") != 0)
    return usage_error("issue", "--key-type must be ec or ed25519, not %s", o.key_type);
  if (o.nsans && strcmp(o.role, "coordinator") != 0 && strcmp(o.role, "aggregator") != 0)
    return usage_error("issue", "--san is for --role coordinator or aggregator only");
  o.sans = sans;
  o.not_after_offset_sec = have_na ? na_off : (long)days * 86400L;
  if (have_nb) o.not_before_offset_sec = nb_off;
  if (o.not_before_offset_sec >= o.not_after_offset_sec)
    return usage_error("issue", "the validity window is empty (not-before is not before not-after)");
  if (o.not_after_offset_sec <= 0) fprintf(stderr, "fedc pki issue: warning: this certificate is already expired\n");

  char err[512] = "";
  int rc = fc_pki_issue_ex(&o, err, sizeof err);
  if (rc) return fail(json, rc, err);

  const char *out_dir = o.out_dir ? o.out_dir : o.ca_dir;
  char key_path[PATH_MAX], crt_path[PATH_MAX], spiffe[200], expiry[64] = "", fed[FC_PKI_FEDERATION_MAX] = "";
  char role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX];
  fc_pki_leaf_paths(out_dir, o.role, o.name, key_path, sizeof key_path, crt_path, sizeof crt_path);
  char *pem = NULL;
  size_t len = 0;
  if (fc_read_file(crt_path, CERT_FILE_CAP, &pem, &len) == FEDC_OK) {
    fc_pki_identity_from_pem(pem, len, fed, sizeof fed, role, sizeof role, name, sizeof name);
    free(pem);
  }
  snprintf(spiffe, sizeof spiffe, "spiffe://%s/%s/%s", fed, o.role, o.name);
  time_t not_after = 0;
  int expired = 0;
  if (fc_pki_cert_expiry(crt_path, &not_after, &expired) == FEDC_OK) format_iso(not_after, expiry, sizeof expiry);

  if (json) {
    print_json(json_pack("{s:b, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "ok", 1, "federation", fed, "role", o.role,
                         "name", o.name, "spiffe_id", spiffe, "cert", crt_path, "key", key_path, "not_after",
                         expiry));
    return 0;
  }
  printf("issued %s (valid until %s)\n", spiffe, expiry);
  printf("  certificate  %s\n", crt_path);
  printf("  key          %s\n", key_path);
  return 0;
}

/* ---- verify ----------------------------------------------------------------------------- */

static void verify_help(void) {
  puts("usage: fedc pki verify --ca FILE --cert FILE [--json]\n"
       "\n"
       "Check that a certificate chains to the CA, carries one valid fedc SPIFFE ID\n"
       "(spiffe://<federation>/<role>/<name>) and is within its validity period.\n"
       "Prints the identity, the expiry and OK or FAILED; exits 0 only if all hold.\n"
       "\n"
       "  --ca FILE    the federation CA certificate (ca.crt)\n"
       "  --cert FILE  the certificate to check (PEM; further certificates in the\n"
       "               file are used as intermediates)\n"
       "  --json       print one JSON object");
}

static int pki_verify(int argc, char **argv) {
  static const struct option opts[] = {
      {"ca", required_argument, NULL, 'c'}, {"cert", required_argument, NULL, 'C'},
      {"json", no_argument, NULL, 'j'},     {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *ca = NULL, *cert = NULL;
  int json = 0, c;
  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (c) {
    case 'c': ca = optarg; break;
    case 'C': cert = optarg; break;
    case 'j': json = 1; break;
    case 'h': verify_help(); return 0;
    default: return cli_option_error("fedc pki verify", c, argv, opts);
    }
  }
  if (optind < argc) return usage_error("verify", "unexpected argument %s", argv[optind]);
  if (!ca) return usage_error("verify", "missing --ca");
  if (!cert) return usage_error("verify", "missing --cert");

  char *pem = NULL;
  size_t len = 0;
  int rc = fc_read_file(cert, CERT_FILE_CAP, &pem, &len);
  if (rc) {
    char msg[PATH_MAX + 64];
    snprintf(msg, sizeof msg, "cannot read %s: %s", cert, fedc_strerror(rc));
    return fail(json, rc, msg);
  }
  char fed[FC_PKI_FEDERATION_MAX] = "", role[FC_PKI_ROLE_MAX] = "", name[FC_PKI_NAME_MAX] = "";
  int id_rc = fc_pki_identity_from_pem(pem, len, fed, sizeof fed, role, sizeof role, name, sizeof name);
  free(pem);
  time_t not_after = 0;
  int expired = 0, have_expiry = fc_pki_cert_expiry(cert, &not_after, &expired) == FEDC_OK;
  char err[512] = "";
  int verify_rc = fc_pki_verify(ca, cert, err, sizeof err);
  if (verify_rc == FEDC_OK && id_rc != FEDC_OK) {
    snprintf(err, sizeof err, "%s has no valid fedc SPIFFE ID (one URI SAN spiffe://<federation>/<role>/<name>)",
             cert);
    verify_rc = id_rc;
  }
  char spiffe[200] = "";
  if (id_rc == FEDC_OK) snprintf(spiffe, sizeof spiffe, "spiffe://%s/%s/%s", fed, role, name);
  char when[64] = "", iso[64] = "";
  if (have_expiry) {
    format_utc(not_after, when, sizeof when);
    format_iso(not_after, iso, sizeof iso);
  }

  if (json) {
    json_t *obj = json_pack("{s:b, s:s, s:s}", "ok", verify_rc == FEDC_OK, "ca", ca, "cert", cert);
    if (id_rc == FEDC_OK) {
      json_object_set_new(obj, "federation", json_string(fed));
      json_object_set_new(obj, "role", json_string(role));
      json_object_set_new(obj, "name", json_string(name));
      json_object_set_new(obj, "spiffe_id", json_string(spiffe));
    }
    if (have_expiry) {
      json_object_set_new(obj, "not_after", json_string(iso));
      json_object_set_new(obj, "not_after_unix", json_integer((json_int_t)not_after));
      json_object_set_new(obj, "expired", json_boolean(expired));
    }
    if (verify_rc != FEDC_OK) {
      json_object_set_new(obj, "error", json_string(err));
      json_object_set_new(obj, "code", json_string(fedc_strerror(verify_rc)));
    }
    print_json(obj);
  } else {
    printf("certificate  %s\n", cert);
    if (id_rc == FEDC_OK)
      printf("identity     %s (federation %s, role %s, name %s)\n", spiffe, fed, role, name);
    else
      printf("identity     none\n");
    if (have_expiry) {
      long days_left = (long)((not_after - time(NULL)) / 86400);
      if (expired)
        printf("expires      %s (EXPIRED %ld days ago)\n", when, -days_left);
      else
        printf("expires      %s (in %ld days)\n", when, days_left);
    }
    printf("status       %s\n", verify_rc == FEDC_OK ? "OK" : "FAILED");
  }
  if (verify_rc != FEDC_OK) {
    fprintf(stderr, "fedc pki: %s\n", err);
    return 1;
  }
  return 0;
}

/* ---- dispatch --------------------------------------------------------------------------- */

static const struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} subcommands[] = {
    {"init", pki_init, "create a federation CA and the coordinator certificate"},
    {"issue", pki_issue, "issue a client, admin, coordinator or signer certificate"},
    {"verify", pki_verify, "check a certificate against the CA and show its identity"},
};

static void pki_help(FILE *out) {
  fprintf(out, "usage: fedc pki <subcommand> [options]\n\nsubcommands:\n");
  for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
    fprintf(out, "  %-8s %s\n", subcommands[i].name, subcommands[i].summary);
  fprintf(out, "\nRun fedc pki <subcommand> --help for its options.\n");
}

int cmd_pki(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "fedc pki: missing subcommand (init, issue or verify; see fedc pki --help)\n");
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    pki_help(stdout);
    return 0;
  }
  for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
    if (strcmp(argv[1], subcommands[i].name) == 0) return subcommands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "fedc pki: unknown subcommand %s (init, issue or verify; see fedc pki --help)\n", argv[1]);
  return 2;
}
