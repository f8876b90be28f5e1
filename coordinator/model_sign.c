/*
 * model_sign.c - the coordinator's half of signed model versions.
 *
 * Each version's manifest (common/manifest.h) is signed with the model-signing
 * key (role signer, EKU codeSigning: issued by `fedc pki init`, or `fedc pki
 * issue --role signer`) and written to models/vN.manifest BEFORE the model
 * file and state.json name the version, so no published version lacks one.
 * The stored manifest is what clients get, also after a restart. At start
 * the current version must match its manifest, and so must the server
 * optimizer state saved with it (the manifest names its SHA-256: the next
 * version is computed from it). A version is signed again only in two cases,
 * both checked first: an operator adopting a state directory from before
 * signing (--adopt-state, explicit, since a removed manifest looks the same),
 * and a manifest whose signer certificate has expired since but which still
 * verifies apart from the date and matches the model (else a federation
 * whose signer expired could never publish again).
 *
 * Each manifest (format 2) also names the audit log's record count and head
 * hash when it is signed, and the record that announces the version names
 * the manifest's SHA-256 (a `manifest` record when a version is signed
 * again here): the signatures anchor the unkeyed hash chain
 * (coordinator/audit_anchor.h, `fedc audit verify --pki`).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "common/manifest.h"
#include "coordinator/audit.h"
#include "coordinator/coord_int.h"
#include "crypto/keyfile.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"

#define MOD "coordinator"

static int read_pem(const char *path, const char *what, char **out, size_t *len, char *err, size_t errlen) {
  int rc = fc_read_file(path, 1u << 20, out, len);
  if (rc != FEDC_OK) snprintf(err, errlen, "cannot read %s %s: %s", what, path, fedc_strerror(rc));
  return rc;
}

const fc_store_key *coord_model_key(const fc_coord *c) { return c->cfg.model_key_set ? &c->store_key : NULL; }

int coord_sign_init(fc_coord *c, char *err, size_t errlen) {
  const fc_coord_cfg *cfg = &c->cfg;
  if (!cfg->signing_cert[0]) {
    FC_WARN(MOD, "no model-signing key (--signing-cert/--signing-key, or signer-coordinator.* in --pki): model "
                 "versions go out unsigned and clients refuse them unless started with --allow-unsigned-models");
    return FEDC_OK;
  }
  int rc;
  if ((rc = read_pem(cfg->signing_cert, "signing certificate", &c->sign_cert, &c->sign_cert_len, err, errlen)) ||
      (rc = fc_key_file_read(cfg->signing_key, 1u << 20, &c->sign_key, &c->sign_key_len, err, errlen)))
    return rc;
  if (!cfg->ca[0]) {
    snprintf(err, errlen, "model signing needs the federation CA (--ca or --pki) to check the signing certificate");
    return FEDC_ERR_INVALID;
  }
  if ((rc = read_pem(cfg->ca, "CA certificate", &c->ca_pem, &c->ca_len, err, errlen))) return rc;
  /* What a client will check, checked now: chain, role, and that the key
   * belongs to the certificate (by signing and verifying a probe). */
  static const char probe[] = "fedc signing key check";
  fc_signed s;
  char why[400], fed[FC_PKI_FEDERATION_MAX], name[FC_PKI_NAME_MAX];
  rc = fc_signed_make(c->sign_key, c->sign_key_len, c->sign_cert, c->sign_cert_len, probe, sizeof probe - 1, &s,
                      why, sizeof why);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "signing key %s: %s", cfg->signing_key, why);
    return rc;
  }
  rc = fc_signed_verify(c->ca_pem, c->ca_len, &s, "signer", fed, name, why, sizeof why);
  fc_signed_free(&s);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "signing certificate %s with key %s: %s", cfg->signing_cert, cfg->signing_key, why);
    return rc;
  }
  if (strcmp(fed, cfg->federation) != 0) {
    snprintf(err, errlen, "signing certificate %s is for federation '%s', this coordinator serves '%s'",
             cfg->signing_cert, fed, cfg->federation);
    return FEDC_ERR_INVALID;
  }
  FC_INFO(MOD, "model versions are signed by spiffe://%s/signer/%s", fed, name);
  return FEDC_OK;
}

void coord_sign_free(fc_coord *c) {
  if (c->sign_key) fc_wipe(c->sign_key, c->sign_key_len);
  free(c->sign_key);
  free(c->sign_cert);
  free(c->ca_pem);
  c->sign_key = c->sign_cert = c->ca_pem = NULL;
}

static int sign_manifest(fc_coord *c, const fc_manifest *mf, model_ref *m, char *err, size_t errlen) {
  char *text = NULL;
  size_t len = 0;
  if (fc_manifest_encode(mf, &text, &len) != FEDC_OK) {
    snprintf(err, errlen, "out of memory encoding a manifest");
    return FEDC_ERR_NOMEM;
  }
  fc_signed s;
  int rc = fc_signed_make(c->sign_key, c->sign_key_len, c->sign_cert, c->sign_cert_len, text, len, &s, err, errlen);
  free(text);
  if (rc != FEDC_OK) return rc;
  if ((rc = fc_store_write_manifest(c->cfg.state_dir, m->version, &s, err, errlen)) != FEDC_OK) {
    fc_signed_free(&s);
    return rc;
  }
  fc_signed_free(&m->man);
  m->man = s;
  return FEDC_OK;
}

static void manifest_of(const fc_coord *c, const model_ref *m, uint64_t round, const uint8_t *parent_sha,
                        const uint8_t *opt_sha, uint64_t created, fc_manifest *mf) {
  memset(mf, 0, sizeof *mf);
  snprintf(mf->federation, sizeof mf->federation, "%s", c->cfg.federation);
  mf->version = m->version;
  mf->round = round;
  mf->has_parent = parent_sha != NULL && m->version > 0;
  mf->parent = mf->has_parent ? m->version - 1 : 0;
  if (mf->has_parent) memcpy(mf->parent_sha, parent_sha, FC_SHA256_LEN);
  memcpy(mf->sha, m->sha, FC_SHA256_LEN);
  mf->bytes = m->bytes;
  mf->has_opt = opt_sha != NULL;
  if (opt_sha) memcpy(mf->opt_sha, opt_sha, FC_SHA256_LEN);
  mf->created_unix = created;
  mf->spec = m->spec;
  mf->format = FC_MANIFEST_FORMAT;
  if (c->audit) {
    /* Records up to here are in the kernel (one write(2) each) before the
     * signature names them, and on disk: the manifest is synced when
     * written, and a power loss must not leave it anchoring records that
     * were not (verify would call the log rewritten). */
    if (fc_audit_sync(c->audit) != FEDC_OK)
      FC_WARN(MOD, "audit log: fdatasync before signing v%llu failed; its manifest may anchor records a power loss "
                   "would lose", (unsigned long long)m->version);
    char head[65];
    mf->has_audit = 1;
    mf->audit_seq = fc_audit_head(c->audit, head);
    fc_unhex(head, mf->audit_head, FC_SHA256_LEN);
  }
}

int coord_manifest_sha(const model_ref *m, char hex[FC_SHA256_HEX_LEN]) {
  uint8_t d[FC_SHA256_LEN];
  if (!m->man.msg || fc_sha256(m->man.msg, m->man.msg_len, d) != FEDC_OK) return 0;
  fc_hex(d, sizeof d, hex);
  return 1;
}

json_t *coord_audit_manifest(json_t *rec, const model_ref *m) {
  char hex[FC_SHA256_HEX_LEN];
  if (rec && coord_manifest_sha(m, hex)) json_object_set_new(rec, "manifest_sha256", json_string(hex));
  return rec;
}

/* A version signed again at start: its new manifest on record. */
static void audit_resigned(fc_coord *c, const model_ref *m, const char *reason) {
  char hex[FC_SHA256_HEX_LEN];
  if (c->audit && coord_manifest_sha(m, hex))
    fc_audit_append(c->audit, "manifest",
                    json_pack("{s:I,s:s,s:s}", "version", (json_int_t)m->version, "manifest_sha256", hex, "reason",
                              reason));
}

int coord_sign_version(fc_coord *c, model_ref *m, uint64_t round, const uint8_t *parent_sha, const uint8_t *opt_sha,
                       char *err, size_t errlen) {
  if (!c->sign_key) return FEDC_OK;
  fc_manifest mf;
  manifest_of(c, m, round, parent_sha, opt_sha, (uint64_t)time(NULL), &mf);
  return sign_manifest(c, &mf, m, err, errlen);
}

int coord_manifest_opt_sha(const model_ref *m, uint8_t out[FC_SHA256_LEN]) {
  fc_manifest mf;
  if (!m->man.msg || fc_manifest_parse(m->man.msg, m->man.msg_len, &mf, NULL, 0) != FEDC_OK || !mf.has_opt) return 0;
  memcpy(out, mf.opt_sha, FC_SHA256_LEN);
  return 1;
}

int coord_manifest_load(fc_coord *c, model_ref *m, const fc_store_model_info *info, int at_start, char *err,
                        size_t errlen) {
  fc_signed s;
  char why[400], path[1100];
  fc_store_manifest_path(c->cfg.state_dir, m->version, path, sizeof path);
  int rc = fc_store_read_manifest(c->cfg.state_dir, m->version, &s, why, sizeof why);
  if (rc == FEDC_ERR_NOT_FOUND) {
    if (!at_start || !c->sign_key) return FEDC_OK;
    if (!c->cfg.adopt_state) {
      snprintf(err, errlen,
               "%s is missing: restore it from a backup (a state directory from before model signing: start once "
               "with --adopt-state to sign its current version as it is)",
               path);
      return FEDC_ERR_SIGNATURE;
    }
    FC_WARN(MOD, "--adopt-state: signing model v%llu as it is in %s", (unsigned long long)m->version,
            c->cfg.state_dir);
    fc_manifest mf;
    manifest_of(c, m, info ? info->round : 0, info && info->has_parent ? info->parent_sha : NULL, NULL,
                info ? info->created_unix : 0, &mf);
    c->adopted = 1;
    if ((rc = sign_manifest(c, &mf, m, err, errlen)) == FEDC_OK) audit_resigned(c, m, "adopt-state");
    return rc;
  }
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "%s", why);
    return rc;
  }
  /* Verify it as a client would, if we can: the federation CA is known when
   * signing is on. Without it, at least the manifest must describe m. */
  fc_manifest mf;
  int expired = 0;
  if (c->ca_pem) {
    rc = fc_manifest_verify(c->ca_pem, c->ca_len, &s, c->cfg.federation, 0, &mf, why, sizeof why);
    if (rc == FEDC_ERR_CERT_EXPIRED) {
      /* Valid when signed? At start the current version is then signed
       * again; an old version (GetModel) goes out as it was signed, and
       * whoever checks it learns that its signer has expired. */
      expired = at_start && c->sign_key;
      rc = fc_manifest_verify(c->ca_pem, c->ca_len, &s, c->cfg.federation, 1, &mf, why, sizeof why);
      if (rc == FEDC_OK && !at_start) expired = 0;
      else if (rc == FEDC_OK && !expired) rc = FEDC_ERR_CERT_EXPIRED; /* at start, nothing to sign it again with */
    }
  } else {
    rc = fc_manifest_parse(s.msg, s.msg_len, &mf, why, sizeof why) == FEDC_OK ? FEDC_OK : FEDC_ERR_SIGNATURE;
  }
  if (rc == FEDC_OK) rc = fc_manifest_check_model(&mf, 1, m->version, m->sha, &m->spec, m->bytes, why, sizeof why);
  if (rc != FEDC_OK) {
    fc_signed_free(&s);
    snprintf(err, errlen, "%s does not match model v%llu: %s (restore both from a backup)", path,
             (unsigned long long)m->version, why);
    return rc == FEDC_ERR_CERT_EXPIRED ? rc : FEDC_ERR_SIGNATURE;
  }
  if (expired) {
    /* Same manifest, fresh signature: valid when signed, still matching. */
    fc_signed_free(&s);
    FC_WARN(MOD, "the signer certificate of model v%llu's manifest has expired: signing it again with the current key",
            (unsigned long long)m->version);
    mf.created_unix = (uint64_t)time(NULL);
    if ((rc = sign_manifest(c, &mf, m, err, errlen)) == FEDC_OK) audit_resigned(c, m, "signer expired");
    return rc;
  }
  fc_signed_free(&m->man);
  m->man = s;
  return FEDC_OK;
}
