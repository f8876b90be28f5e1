/*
 * cmd_ha.c - `fedc ha verify`: do etcd and the coordinator replicas' shared
 * store agree (issue 23)? What `fedc audit verify` is to the audit log, this
 * is to the election's state:
 *   - etcd's model pointer P/model parses and names version V with SHA-256 S;
 *   - the store holds V's model file, whose recomputed SHA-256 is S, and V's
 *     signed manifest, which verifies against the federation CA (role
 *     signer) and describes that file;
 *   - no version gap: every version 1..V has a model file and a manifest
 *     that verifies (later ones may exist: written, never pointed to, and
 *     rewritten by the next round of that number);
 *   - state.json is at V, or at V-1 (the last leader moved the pointer and
 *     stopped before state.json: the next leader rolls it forward);
 *   - rounds.jsonl: completed versions increasing, none past state.json; a
 *     missing line is listed, not an error (a leader stopped between
 *     state.json and its history line loses that line, never the version).
 * A live federation moves on while this reads, so it reads against the write
 * order (model file -> pointer -> state.json -> history line): history, then
 * state.json, then the pointer, each allowed to be ahead of the one before.
 * Read-only: nothing in etcd or the store is changed (rounds.jsonl is parsed
 * here rather than with fc_store_read_rounds, which cuts off a torn line).
 *
 * May call: coordinator/etcd.h, coordinator/store.h, coordinator.h (the
 * pointer's parser), common/manifest.h through cli.h. Exit 0 consistent,
 * 1 with one line per problem, 2 usage or unreadable input.
 */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "common/fileutil.h"
#include "coordinator/coordinator.h"
#include "coordinator/etcd.h"
#include "coordinator/store.h"
#include "crypto/pki.h"
#include "fedc/error.h"
#include "transport/transport.h"

#define MAX_PROBLEMS 64

typedef struct verify {
  char problems[MAX_PROBLEMS][320];
  size_t nproblems, nmissing_lines;
  uint64_t missing_lines[8];
} verify;

static void problem(verify *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(verify *v, const char *fmt, ...) {
  if (v->nproblems >= MAX_PROBLEMS) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(v->problems[v->nproblems++], sizeof v->problems[0], fmt, ap);
  va_end(ap);
}

/* Completed versions of rounds.jsonl, in file order (malloc'd). */
static int history_versions(const char *dir, uint64_t **out, size_t *n, char *err, size_t errlen) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/rounds.jsonl", dir);
  *out = NULL;
  *n = 0;
  FILE *f = fopen(path, "r");
  if (!f) return FEDC_OK; /* no round ended yet */
  char *line = NULL;
  size_t cap = 0, have = 0;
  ssize_t len;
  int rc = FEDC_OK;
  while ((len = getline(&line, &cap, f)) > 0) {
    if (line[len - 1] != '\n') break; /* torn last line: being written */
    json_t *o = json_loadb(line, (size_t)len, 0, NULL);
    json_t *ver = json_object_get(o, "version");
    const char *outcome = json_string_value(json_object_get(o, "outcome"));
    if (o && outcome && !strcmp(outcome, "completed") && json_is_integer(ver)) {
      if (*n == have) {
        have = have ? 2 * have : 64;
        uint64_t *p = realloc(*out, have * sizeof *p);
        if (!p) {
          json_decref(o);
          rc = FEDC_ERR_NOMEM;
          snprintf(err, errlen, "out of memory reading %s", path);
          break;
        }
        *out = p;
      }
      (*out)[(*n)++] = (uint64_t)json_integer_value(ver);
    }
    json_decref(o);
  }
  free(line);
  fclose(f);
  return rc;
}

/* Version k's manifest verifies and (with data) describes the file: 1 if so. */
static int check_version(verify *v, const char *dir, const char *ca, uint64_t k, const uint8_t *want_sha) {
  char err[512];
  fc_signed man;
  memset(&man, 0, sizeof man);
  int ok = 0;
  int rc = fc_store_read_manifest(dir, k, &man, err, sizeof err);
  if (rc != FEDC_OK) {
    problem(v, "v%llu: no signed manifest in the store (%s)", (unsigned long long)k, err);
    return 0;
  }
  fc_model_spec spec;
  float *data = NULL;
  uint8_t sha[FC_SHA256_LEN];
  fc_manifest mf;
  memset(&mf, 0, sizeof mf);
  char signer[300];
  if (!want_sha) { /* signature only: the model file need only exist */
    char path[PATH_MAX];
    fc_store_model_path(dir, k, path, sizeof path);
    char fed[FC_PKI_FEDERATION_MAX] = "";
    char *cap = NULL;
    size_t cal = 0;
    if (access(path, R_OK) != 0) {
      problem(v, "v%llu: no model file %s (a version gap)", (unsigned long long)k, path);
    } else if (fc_read_file(ca, 1u << 20, &cap, &cal) != FEDC_OK) {
      problem(v, "cannot read the CA %s", ca);
    } else {
      if (fc_pki_ca_federation_pem(cap, cal, fed) != FEDC_OK) fed[0] = 0;
      if (fc_manifest_verify(cap, cal, &man, fed[0] ? fed : NULL, 0, &mf, err, sizeof err) != FEDC_OK)
        problem(v, "v%llu: the manifest does not verify: %s", (unsigned long long)k, err);
      else if (mf.version != k)
        problem(v, "v%llu: the manifest names v%llu", (unsigned long long)k, (unsigned long long)mf.version);
      else
        ok = 1;
    }
    free(cap);
    goto out;
  }
  rc = fc_store_read_model(dir, NULL, k, &spec, &data, sha, NULL, err, sizeof err);
  if (rc != FEDC_OK) {
    problem(v, "v%llu: the model file does not read back: %s", (unsigned long long)k, err);
    goto out;
  }
  if (memcmp(sha, want_sha, FC_SHA256_LEN) != 0) {
    problem(v, "v%llu: etcd's pointer names another SHA-256 than the store's file", (unsigned long long)k);
    goto out;
  }
  rc = model_manifest_check(ca, &man, 1, k, sha, &spec, fc_model_numel(&spec) * sizeof(float), &mf, signer,
                            sizeof signer, err, sizeof err);
  if (rc != FEDC_OK) problem(v, "v%llu: %s", (unsigned long long)k, err);
  else
    ok = 1;
out:
  free(data);
  fc_signed_free(&man);
  return ok;
}

static void usage(FILE *f) {
  fprintf(f, "Usage: fedc ha verify --etcd ENDPOINTS --state DIR (--pki DIR | --ca CA) [--federation F]\n"
             "                      [--etcd-prefix P] [--etcd-ca F --etcd-cert F --etcd-key F] [--json]\n\n"
             "Check that etcd and the coordinator replicas' shared store agree: etcd's model\n"
             "pointer names a version whose file is in the store with that SHA-256 and a signed\n"
             "manifest; every earlier version has its file and a manifest that verifies (no gap);\n"
             "state.json is at the pointer or one behind it; rounds.jsonl's versions increase and\n"
             "none is past state.json (missing lines are listed). Read-only; safe on a live\n"
             "federation. Exit 0 if consistent, 1 with one line per problem, 2 on a usage error.\n\n"
             "  --etcd ENDPOINTS  etcd client endpoints host:port[,host:port...]\n"
             "  --state DIR       the shared state directory\n"
             "  --pki DIR         use DIR/ca.crt (the federation CA: manifests are signed under it)\n"
             "  --ca FILE         the federation CA certificate\n"
             "  --federation F    default: the CA's federation\n"
             "  --etcd-prefix P   default /fedc/<federation>\n"
             "  --etcd-ca, --etcd-cert, --etcd-key   mutual TLS to etcd (plaintext: loopback only)\n"
             "  --json            one JSON object on stdout\n");
}

static int ha_verify(int argc, char **argv) {
  enum { O_ETCD = 1, O_STATE, O_PKI, O_CA, O_FED, O_PREFIX, O_ECA, O_ECERT, O_EKEY, O_JSON };
  static const struct option longopts[] = {
      {"etcd", required_argument, 0, O_ETCD},       {"state", required_argument, 0, O_STATE},
      {"pki", required_argument, 0, O_PKI},         {"ca", required_argument, 0, O_CA},
      {"federation", required_argument, 0, O_FED},  {"etcd-prefix", required_argument, 0, O_PREFIX},
      {"etcd-ca", required_argument, 0, O_ECA},     {"etcd-cert", required_argument, 0, O_ECERT},
      {"etcd-key", required_argument, 0, O_EKEY},   {"json", no_argument, 0, O_JSON},
      {"help", no_argument, 0, 'h'},                {0, 0, 0, 0}};
  const char *endpoints = NULL, *dir = NULL, *eca = NULL, *ecert = NULL, *ekey = NULL;
  char ca[PATH_MAX] = "", fed[FC_PKI_FEDERATION_MAX] = "", prefix[256] = "";
  int json = 0, c;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
    case O_ETCD: endpoints = optarg; break;
    case O_STATE: dir = optarg; break;
    case O_PKI: snprintf(ca, sizeof ca, "%s/ca.crt", optarg); break;
    case O_CA: snprintf(ca, sizeof ca, "%s", optarg); break;
    case O_FED: snprintf(fed, sizeof fed, "%s", optarg); break;
    case O_PREFIX: snprintf(prefix, sizeof prefix, "%s", optarg); break;
    case O_ECA: eca = optarg; break;
    case O_ECERT: ecert = optarg; break;
    case O_EKEY: ekey = optarg; break;
    case O_JSON: json = 1; break;
    case 'h': usage(stdout); return 0;
    default:
      fprintf(stderr, "fedc ha verify: unknown or incomplete option %s\n", argv[optind - 1]);
      usage(stderr);
      return 2;
    }
  }
  if (!endpoints || !dir || !ca[0] || optind != argc) {
    fprintf(stderr, "fedc ha verify: --etcd, --state and --pki (or --ca) are required\n");
    usage(stderr);
    return 2;
  }
  char err[512];
  if (!fed[0]) {
    char *cap = NULL;
    size_t cal = 0;
    if (fc_read_file(ca, 1u << 20, &cap, &cal) != FEDC_OK || fc_pki_ca_federation_pem(cap, cal, fed) != FEDC_OK) {
      free(cap);
      fprintf(stderr, "fedc ha verify: cannot read the federation from the CA %s: give --federation\n", ca);
      return 2;
    }
    free(cap);
  }
  if (!prefix[0]) snprintf(prefix, sizeof prefix, "/fedc/%s", fed);
  fc_etcd_opts eo;
  fc_etcd_opts_init(&eo);
  eo.endpoints = endpoints;
  eo.tls.ca = eca;
  eo.tls.cert = ecert;
  eo.tls.key = ekey;
  fc_etcd *e = NULL;
  fc_transport_init();
  if (fc_etcd_open(&eo, &e, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "fedc ha verify: %s\n", err);
    fc_transport_shutdown();
    return 2;
  }
  verify *v = calloc(1, sizeof *v);
  uint64_t *hist = NULL;
  size_t nhist = 0;
  fc_etcd_kv kv, leader;
  memset(&kv, 0, sizeof kv);
  memset(&leader, 0, sizeof leader);
  int rc = 2;
  fc_store_state st;
  uint64_t pv = 0, pround = 0;
  uint8_t psha[FC_SHA256_LEN];
  char key[300];
  if (!v) goto out;
  /* Against the write order (file header): history, state.json, pointer. A
   * live federation that published more than once between the reads is read
   * again (a few times). */
  for (int attempt = 0;; attempt++) {
    free(hist);
    hist = NULL;
    fc_etcd_kv_clear(&kv);
    if (history_versions(dir, &hist, &nhist, err, sizeof err) != FEDC_OK ||
        fc_store_load_state(dir, fed, &st, err, sizeof err) != FEDC_OK) {
      fprintf(stderr, "fedc ha verify: %s\n", err);
      goto out;
    }
    snprintf(key, sizeof key, "%s/model", prefix);
    if (fc_etcd_get(e, key, &kv, NULL, err, sizeof err) != FEDC_OK) {
      fprintf(stderr, "fedc ha verify: reading %s: %s\n", key, err);
      goto out;
    }
    if (!kv.found) {
      problem(v, "etcd has no model pointer %s (no version published through etcd)", key);
      break;
    }
    if (fc_coord_ha_parse_pointer((const char *)kv.value, kv.value_len, &pv, psha, &pround, err, sizeof err) !=
        FEDC_OK) {
      problem(v, "%s", err);
      break;
    }
    if (pv <= st.version + 1 || attempt == 3) break;
  }
  snprintf(key, sizeof key, "%s/leader", prefix);
  if (fc_etcd_get(e, key, &leader, NULL, err, sizeof err) != FEDC_OK) leader.found = 0;
  if (kv.found && !v->nproblems) {
    if (st.version > pv)
      problem(v, "state.json is at v%llu, ahead of etcd's pointer at v%llu", (unsigned long long)st.version,
              (unsigned long long)pv);
    else if (st.version + 1 < pv)
      problem(v, "state.json is at v%llu, more than one version behind etcd's pointer at v%llu",
              (unsigned long long)st.version, (unsigned long long)pv);
    else if (st.version == pv && memcmp(st.sha, psha, FC_SHA256_LEN) != 0)
      problem(v, "state.json and etcd's pointer both name v%llu with different SHA-256s", (unsigned long long)pv);
    if (pv > 0) check_version(v, dir, ca, pv, psha);
    for (uint64_t k = 1; k < pv && v->nproblems < MAX_PROBLEMS; k++) check_version(v, dir, ca, k, NULL);
  }
  uint64_t last = 0;
  for (size_t i = 0; i < nhist; i++) {
    if (hist[i] <= last) {
      problem(v, "rounds.jsonl: v%llu after v%llu (repeated or out of order)", (unsigned long long)hist[i],
              (unsigned long long)last);
      break;
    }
    for (uint64_t k = last + 1; k < hist[i]; k++)
      if (v->nmissing_lines < 8) v->missing_lines[v->nmissing_lines++] = k;
    last = hist[i];
  }
  if (last > st.version)
    problem(v, "rounds.jsonl has v%llu, state.json only v%llu", (unsigned long long)last,
            (unsigned long long)st.version);
  rc = v->nproblems ? 1 : 0;
  if (json) {
    json_t *o = json_pack("{s:b,s:s,s:I,s:I,s:I,s:s?}", "consistent", !rc, "etcd_prefix", prefix, "pointer_version",
                          (json_int_t)pv, "state_version", (json_int_t)st.version, "history_last",
                          (json_int_t)last, "leader", leader.found ? (const char *)leader.value : NULL);
    json_t *p = json_array(), *m = json_array();
    for (size_t i = 0; i < v->nproblems; i++) json_array_append_new(p, json_string(v->problems[i]));
    for (size_t i = 0; i < v->nmissing_lines; i++) json_array_append_new(m, json_integer((json_int_t)v->missing_lines[i]));
    json_object_set_new(o, "problems", p);
    json_object_set_new(o, "history_missing", m);
    char *t = json_dumps(o, JSON_COMPACT);
    if (t) puts(t);
    free(t);
    json_decref(o);
  } else {
    for (size_t i = 0; i < v->nproblems; i++) printf("%s\n", v->problems[i]);
    if (!rc)
      printf("consistent: etcd %s/model -> v%llu (round %llu), in the store with its signed manifest; versions "
             "1..v%llu all present; state.json at v%llu; rounds.jsonl up to v%llu%s; leader: %s\n",
             prefix, (unsigned long long)pv, (unsigned long long)pround, (unsigned long long)pv,
             (unsigned long long)st.version, (unsigned long long)last,
             v->nmissing_lines ? " (some history lines missing)" : "",
             leader.found ? (const char *)leader.value : "none");
  }
out:
  fc_etcd_kv_clear(&kv);
  fc_etcd_kv_clear(&leader);
  fc_etcd_close(e);
  fc_transport_shutdown();
  free(hist);
  free(v);
  return rc;
}

int cmd_ha(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "verify")) return ha_verify(argc - 1, argv + 1);
  FILE *f = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? stdout : stderr;
  fprintf(f, "Usage: fedc ha verify ...   (coordinator replicas on etcd; fedc ha verify --help)\n");
  return f == stdout ? 0 : 2;
}
