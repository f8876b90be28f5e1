/*
 * cmd_model.c - `fedc model get` (and `fedc model verify`, which lives in
 * cmd_model_verify.c): download a global model version, or the model
 * average as of one, over the Admin service (Status, then GetModel), check
 * it as a client would, and write it as safetensors with its manifest.
 *
 * Owns: the download and the file written. May call: the admin helpers
 * (admin_int.h), the tensor stream, safetensors, the manifest check.
 *
 * Why it asks Status first: the model stream does not name its version,
 * and "latest" may move while we download. Resolving "latest" to an
 * explicit version before the download makes the metadata written into
 * the file (fedc.version, fedc.sha256) true by construction. Version 0 is
 * the one exception (the wire uses 0 for "latest"), handled in model_fetch.
 */
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/admin_int.h"
#include "cli/cli.h"
#include "common/safetensors.h"
#include "crypto/sha256.h"
#include "fedc/error.h"
#include "transport/tensor_stream.h"

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

