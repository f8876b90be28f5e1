/*
 * cmd_model_verify.c - `fedc model verify FILE`: is this model file the one
 * the federation's coordinator signed? The checks are the client runtime's
 * (common/manifest.h): the manifest (FILE.manifest, as `fedc model get`
 * writes it) is signed by a model-signing certificate (role signer) of the
 * federation CA, and the file's tensors, size and SHA-256 are what it says.
 * It also shows the audit log anchor a format 2 manifest carries (the
 * record count and head hash when it was signed; coordinator/audit_anchor.h).
 */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_common.h"
#include "common/fileutil.h"
#include "common/safetensors.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"
#include "fedc/error.h"


int model_manifest_check(const char *ca_path, const fc_signed *man, int check_version, uint64_t version,
                         const uint8_t *sha, const fc_model_spec *spec, uint64_t bytes, fc_manifest *out, char *signer,
                         size_t signer_len, char *err, size_t errlen) {
  char *ca = NULL;
  size_t ca_len = 0;
  int rc = fc_read_file(ca_path, 1u << 20, &ca, &ca_len);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "cannot read CA certificate %s: %s", ca_path, fedc_strerror(rc));
    return rc;
  }
  /* The federation is the CA's trust domain (spiffe://<federation>). */
  char fed[FC_PKI_FEDERATION_MAX] = "";
  if (fc_pki_ca_federation_pem(ca, ca_len, fed) != FEDC_OK) fed[0] = 0;
  rc = fc_manifest_verify(ca, ca_len, man, fed[0] ? fed : NULL, 0, out, err, errlen);
  free(ca);
  if (rc == FEDC_OK) rc = fc_manifest_check_model(out, check_version, version, sha, spec, bytes, err, errlen);
  if (rc == FEDC_OK) {
    char f[FC_PKI_FEDERATION_MAX], r[FC_PKI_ROLE_MAX], n[FC_PKI_NAME_MAX];
    if (fc_pki_identity_from_pem(man->cert, man->cert_len, f, sizeof f, r, sizeof r, n, sizeof n) == FEDC_OK)
      snprintf(signer, signer_len, "spiffe://%s/%s/%s", f, r, n);
  }
  return rc;
}

static void usage(FILE *f) {
  fprintf(f, "Usage: fedc model verify FILE (--pki DIR | --ca CA) [--manifest M] [--version V] [--json]\n\n"
             "Check that FILE (safetensors) is a model version the federation's coordinator\n"
             "signed: its manifest M (default FILE.manifest, as `fedc model get` writes it) is\n"
             "signed by a model-signing certificate (role signer) of the federation CA, names\n"
             "the CA's federation, and describes exactly FILE's tensors, size and SHA-256.\n"
             "Exit 0 if it does, 1 with the reason if not, 2 on a usage error.\n\n"
             "  --pki DIR       use DIR/ca.crt\n"
             "  --ca FILE       the federation CA certificate\n"
             "  --manifest M    the signed manifest (default FILE.manifest)\n"
             "  --version V     also require model version V\n"
             "  --json          one JSON object on stdout\n");
}

int cmd_model_verify(int argc, char **argv) {
  const char *prog = "fedc model verify";
  enum { O_PKI = 1, O_CA, O_MAN, O_VER, O_JSON };
  static const struct option longopts[] = {{"pki", required_argument, 0, O_PKI},
                                           {"ca", required_argument, 0, O_CA},
                                           {"manifest", required_argument, 0, O_MAN},
                                           {"version", required_argument, 0, O_VER},
                                           {"json", no_argument, 0, O_JSON},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  char ca[PATH_MAX] = "", man_path[PATH_MAX] = "";
  uint64_t version = 0;
  int json = 0, c, have_version = 0;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
    case O_PKI:
      if (!ca[0]) snprintf(ca, sizeof ca, "%s/%s", optarg, FC_PKI_CA_CERT);
      break;
    case O_CA: snprintf(ca, sizeof ca, "%s", optarg); break;
    case O_MAN: snprintf(man_path, sizeof man_path, "%s", optarg); break;
    case O_VER: {
      char *end;
      unsigned long long v = strtoull(optarg, &end, 10);
      if (!*optarg || *end || optarg[0] == '-') {
        fprintf(stderr, "%s: --version needs a number, not '%s'\n", prog, optarg);
        return 2;
      }
      version = v;
      have_version = 1;
      break;
    }
    case O_JSON: json = 1; break;
    case 'h': usage(stdout); return 0;
    default: return cli_option_error(prog, c, argv, longopts);
    }
  }
  if (optind != argc - 1) {
    fprintf(stderr, "%s: give exactly one model FILE (see --help)\n", prog);
    return 2;
  }
  if (!ca[0]) {
    fprintf(stderr, "%s: --pki DIR or --ca FILE is required (the federation CA)\n", prog);
    return 2;
  }
  const char *file = argv[optind];
  if (!man_path[0]) snprintf(man_path, sizeof man_path, "%s.manifest", file);

  fc_model_spec spec;
  float *data = NULL;
  char err[600] = "", signer[200] = "";
  fc_signed man;
  memset(&man, 0, sizeof man);
  fc_manifest mf;
  uint8_t sha[FC_SHA256_LEN];
  int rc = fc_safetensors_read(file, &spec, &data, NULL, (uint64_t)FC_MODEL_MAX_PARAMS * 4, err, sizeof err);
  uint64_t bytes = rc == FEDC_OK ? fc_model_numel(&spec) * sizeof(float) : 0;
  if (rc == FEDC_OK) {
    fc_sha256(data, bytes, sha);
    rc = fc_signed_file_read(man_path, &man, err, sizeof err);
  }
  if (rc == FEDC_OK)
    rc = model_manifest_check(ca, &man, have_version, version, sha, &spec, bytes, &mf, signer, sizeof signer, err,
                              sizeof err);
  char hex[FC_SHA256_HEX_LEN] = "";
  if (bytes) fc_hex(sha, FC_SHA256_LEN, hex);
  if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "ok", json_boolean(rc == FEDC_OK));
    json_object_set_new(o, "file", json_string(file));
    json_object_set_new(o, "manifest", json_string(man_path));
    if (rc == FEDC_OK) {
      json_object_set_new(o, "federation", json_string(mf.federation));
      json_object_set_new(o, "version", json_integer((json_int_t)mf.version));
      json_object_set_new(o, "round", json_integer((json_int_t)mf.round));
      json_object_set_new(o, "parent", mf.has_parent ? json_integer((json_int_t)mf.parent) : json_null());
      json_object_set_new(o, "sha256", json_string(hex));
      json_object_set_new(o, "signer", json_string(signer));
      json_object_set_new(o, "created_unix", json_integer((json_int_t)mf.created_unix));
      /* Format 2: the coordinator's audit log when it signed (`fedc audit verify --pki`). */
      char ah[FC_SHA256_HEX_LEN];
      json_object_set_new(o, "audit", mf.has_audit ? json_pack("{s:I,s:s}", "records", (json_int_t)mf.audit_seq, "head",
                                                               fc_hex(mf.audit_head, FC_SHA256_LEN, ah))
                                                   : json_null());
    } else {
      json_object_set_new(o, "error", json_string(err));
    }
    cli_print_json(o);
  } else if (rc == FEDC_OK) {
    char parent[32] = "none";
    if (mf.has_parent) snprintf(parent, sizeof parent, "v%" PRIu64, mf.parent);
    char anchor[120] = "";
    if (mf.has_audit) {
      char ah[FC_SHA256_HEX_LEN];
      snprintf(anchor, sizeof anchor, "; audit log at record %" PRIu64 " (head %.12s...) when signed", mf.audit_seq,
               fc_hex(mf.audit_head, FC_SHA256_LEN, ah));
    }
    printf("OK %s: model v%" PRIu64 " of federation %s (round %" PRIu64 ", parent %s), sha256 %s, signed by %s%s\n",
           file, mf.version, mf.federation, mf.round, parent, hex, signer, anchor);
  } else {
    fprintf(stderr, "%s: %s: %s\n", prog, file, err);
  }
  fc_signed_free(&man);
  free(data);
  return rc == FEDC_OK ? 0 : 1;
}
