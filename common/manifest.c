/*
 * manifest.c - model manifests: text form and checks (manifest.h).
 *
 * Strictness comes from a round trip: the parser reads the fields, then the
 * text is encoded again and must equal the input byte for byte. Whatever the
 * parser tolerated (upper-case hex, "+5", "007") fails there.
 */
#include "common/manifest.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "crypto/cert_cache.h"
#include "fedc/error.h"

#define MAGIC "fedc-model-manifest "

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

int fc_manifest_encode(const fc_manifest *m, char **out, size_t *len) {
  size_t cap = 1024 + (size_t)m->spec.n * (FC_TENSOR_NAME_MAX + 16 + FC_TENSOR_MAX_DIMS * 21);
  char *b = malloc(cap), hex[FC_SHA256_HEX_LEN], phex[FC_SHA256_HEX_LEN];
  if (!b) return FEDC_ERR_NOMEM;
  size_t n = 0;
#define PUT(...) n += (size_t)snprintf(b + n, cap - n, __VA_ARGS__)
  int format = m->format ? m->format : FC_MANIFEST_FORMAT;
  PUT(MAGIC "%d\nfederation %s\nversion %" PRIu64 "\nround %" PRIu64 "\n", format, m->federation, m->version,
      m->round);
  if (m->has_parent)
    PUT("parent %" PRIu64 "\nparent-sha256 %s\n", m->parent, fc_hex(m->parent_sha, FC_SHA256_LEN, phex));
  else
    PUT("parent -\nparent-sha256 -\n");
  PUT("sha256 %s\nbytes %" PRIu64 "\n", fc_hex(m->sha, FC_SHA256_LEN, hex), m->bytes);
  PUT("optimizer-sha256 %s\n", m->has_opt ? fc_hex(m->opt_sha, FC_SHA256_LEN, phex) : "-");
  if (format >= 2 && m->has_audit)
    PUT("audit %" PRIu64 " %s\n", m->audit_seq, fc_hex(m->audit_head, FC_SHA256_LEN, phex));
  else if (format >= 2)
    PUT("audit -\n");
  PUT("created-unix %" PRIu64 "\ntensors %u\n", m->created_unix, m->spec.n);
  for (uint32_t i = 0; i < m->spec.n && i < FC_MODEL_MAX_TENSORS; i++) {
    const fc_tensor_spec *t = &m->spec.t[i];
    PUT("tensor %s %s ", t->name, t->dtype == FC_DTYPE_F32 ? "f32" : "u32");
    for (uint32_t d = 0; d < t->ndim && d < FC_TENSOR_MAX_DIMS; d++) PUT(d ? ",%" PRIu64 : "%" PRIu64, t->shape[d]);
    PUT("\n");
  }
#undef PUT
  *out = b;
  *len = n;
  return FEDC_OK;
}

/* Next line of text (without its LF) into line[cap]; 0 at the end or if it
 * does not fit, which the round trip then reports. */
static int next_line(const char *text, size_t len, size_t *at, char *line, size_t cap) {
  if (*at >= len) return 0;
  const char *nl = memchr(text + *at, '\n', len - *at);
  size_t l = nl ? (size_t)(nl - (text + *at)) : len - *at;
  if (l >= cap) return 0;
  memcpy(line, text + *at, l);
  line[l] = 0;
  *at += l + (nl != NULL);
  return 1;
}

static int u64_field(const char *line, const char *key, uint64_t *v) {
  size_t k = strlen(key);
  if (strncmp(line, key, k) != 0 || line[k] != ' ') return 0;
  const char *s = line + k + 1;
  if (*s < '0' || *s > '9') return 0;
  char *end;
  unsigned long long x = strtoull(s, &end, 10);
  if (*end) return 0;
  *v = x;
  return 1;
}

static int sha_field(const char *line, const char *key, uint8_t *out) {
  size_t k = strlen(key);
  return strncmp(line, key, k) == 0 && line[k] == ' ' && fc_unhex(line + k + 1, out, FC_SHA256_LEN) == FEDC_OK;
}

/* "audit <seq> <64 hex>" (strictness: the round trip). */
static int audit_field(const char *line, uint64_t *seq, uint8_t *head) {
  if (strncmp(line, "audit ", 6) != 0 || line[6] < '0' || line[6] > '9') return 0;
  char *end;
  unsigned long long x = strtoull(line + 6, &end, 10);
  if (*end != ' ' || fc_unhex(end + 1, head, FC_SHA256_LEN) != FEDC_OK) return 0;
  *seq = x;
  return 1;
}

static int tensor_line(const char *line, fc_tensor_spec *t) {
  char name[FC_TENSOR_NAME_MAX + 1], dtype[8], dims[128];
  if (sscanf(line, "tensor %64s %7s %127s", name, dtype, dims) != 3) return 0;
  if (strlen(name) >= FC_TENSOR_NAME_MAX || strcmp(dtype, "f32") != 0) return 0;
  memset(t, 0, sizeof *t);
  strcpy(t->name, name);
  t->dtype = FC_DTYPE_F32;
  for (char *p = dims;;) {
    if (t->ndim == FC_TENSOR_MAX_DIMS || *p < '0' || *p > '9') return 0;
    char *end;
    t->shape[t->ndim++] = strtoull(p, &end, 10);
    if (*end == 0) break;
    if (*end != ',') return 0;
    p = end + 1;
  }
  return 1;
}

int fc_manifest_parse(const void *text_, size_t len, fc_manifest *out, char *err, size_t errlen) {
  const char *text = text_;
  char line[256];
  size_t at = 0;
  int ln = 0;
  uint64_t ntensors = 0;
  fc_manifest m;
  memset(&m, 0, sizeof m);
#define LINE(cond, what)                                                                                      \
  do {                                                                                                        \
    ln++;                                                                                                     \
    if (!next_line(text, len, &at, line, sizeof line) || !(cond))                                             \
      return fail(err, errlen, FEDC_ERR_FORMAT, "manifest line %d: expected %s", ln, what);                   \
  } while (0)
  LINE(strcmp(line, MAGIC "1") == 0 || strcmp(line, MAGIC "2") == 0, "\"" MAGIC "1\" or \"" MAGIC "2\"");
  m.format = line[sizeof MAGIC - 1] - '0';
  LINE(strncmp(line, "federation ", 11) == 0 && fc_pki_federation_ok(line + 11), "federation <name>");
  strcpy(m.federation, line + 11);
  LINE(u64_field(line, "version", &m.version), "version <n>");
  LINE(u64_field(line, "round", &m.round), "round <n>");
  LINE(strcmp(line, "parent -") == 0 || (m.has_parent = u64_field(line, "parent", &m.parent)), "parent <n>|-");
  LINE(m.has_parent ? sha_field(line, "parent-sha256", m.parent_sha) : strcmp(line, "parent-sha256 -") == 0,
       "parent-sha256 <hex>|-");
  LINE(sha_field(line, "sha256", m.sha), "sha256 <hex>");
  LINE(u64_field(line, "bytes", &m.bytes), "bytes <n>");
  LINE(strcmp(line, "optimizer-sha256 -") == 0 || (m.has_opt = sha_field(line, "optimizer-sha256", m.opt_sha)),
       "optimizer-sha256 <hex>|-");
  if (m.format >= 2)
    LINE(strcmp(line, "audit -") == 0 || (m.has_audit = audit_field(line, &m.audit_seq, m.audit_head)),
         "audit <seq> <hex>|-");
  LINE(u64_field(line, "created-unix", &m.created_unix), "created-unix <n>");
  LINE(u64_field(line, "tensors", &ntensors) && ntensors >= 1 && ntensors <= FC_MODEL_MAX_TENSORS,
       "tensors <1..32>");
  m.spec.n = (uint32_t)ntensors;
  for (uint32_t i = 0; i < m.spec.n; i++) LINE(tensor_line(line, &m.spec.t[i]), "tensor <name> f32 <dims>");
#undef LINE
  char why[200];
  if (fc_model_spec_check(&m.spec, why, sizeof why) != FEDC_OK)
    return fail(err, errlen, FEDC_ERR_FORMAT, "manifest tensors: %s", why);
  if (m.bytes != fc_model_numel(&m.spec) * sizeof(float))
    return fail(err, errlen, FEDC_ERR_FORMAT, "manifest says %" PRIu64 " bytes; its tensors hold %" PRIu64, m.bytes,
                fc_model_numel(&m.spec) * (uint64_t)sizeof(float));
  char *again = NULL;
  size_t again_len = 0;
  if (fc_manifest_encode(&m, &again, &again_len) != FEDC_OK) return FEDC_ERR_NOMEM;
  int same = again_len == len && memcmp(again, text, len) == 0;
  free(again);
  if (!same) return fail(err, errlen, FEDC_ERR_FORMAT, "manifest is not in canonical form");
  *out = m;
  return FEDC_OK;
}

/* fc_manifest_verify, with the signer looked up in certs when there is one
 * (ignore_time 0 only: the cache checks the dates). */
static int verify_manifest(const char *ca_pem, size_t ca_len, struct fc_cert_cache *certs, const fc_signed *s,
                           const char *federation, int ignore_time, fc_manifest *out, char *err, size_t errlen) {
  char fed[FC_PKI_FEDERATION_MAX], name[FC_PKI_NAME_MAX], why[300];
  int rc = certs && !ignore_time ? fc_signed_verify_cached(certs, s, "signer", fed, name, err, errlen)
                                 : fc_signed_verify_ex(ca_pem, ca_len, s, "signer", ignore_time, fed, name, err, errlen);
  if (rc != FEDC_OK) return rc;
  fc_manifest m;
  if (fc_manifest_parse(s->msg, s->msg_len, &m, why, sizeof why) != FEDC_OK)
    return fail(err, errlen, FEDC_ERR_SIGNATURE, "signed manifest does not parse: %s", why);
  if (strcmp(m.federation, fed) != 0)
    return fail(err, errlen, FEDC_ERR_SIGNATURE, "manifest is for federation '%s' but signed by a '%s' signer",
                m.federation, fed);
  if (federation && strcmp(m.federation, federation) != 0)
    return fail(err, errlen, FEDC_ERR_SIGNATURE, "manifest is for federation '%s', not '%s'", m.federation,
                federation);
  *out = m;
  return FEDC_OK;
}

int fc_manifest_verify(const char *ca_pem, size_t ca_len, const fc_signed *s, const char *federation,
                       int ignore_time, fc_manifest *out, char *err, size_t errlen) {
  return verify_manifest(ca_pem, ca_len, NULL, s, federation, ignore_time, out, err, errlen);
}

int fc_manifest_check_model(const fc_manifest *m, int check_version, uint64_t version,
                            const uint8_t sha[FC_SHA256_LEN], const fc_model_spec *spec, uint64_t bytes, char *err,
                            size_t errlen) {
  if (check_version && m->version != version)
    return fail(err, errlen, FEDC_ERR_SIGNATURE, "manifest is for model version %" PRIu64 ", not %" PRIu64,
                m->version, version);
  if (!fc_digest_equal(m->sha, sha, FC_SHA256_LEN))
    return fail(err, errlen, FEDC_ERR_SIGNATURE, "model SHA-256 differs from the signed manifest's (v%" PRIu64 ")",
                m->version);
  if (m->bytes != bytes || !fc_model_spec_equal(&m->spec, spec))
    return fail(err, errlen, FEDC_ERR_SIGNATURE, "model tensors differ from the signed manifest's (v%" PRIu64 ")",
                m->version);
  return FEDC_OK;
}

int fc_manifest_accept(fc_manifest_trust *t, const fc_signed *s, uint64_t version, const uint8_t sha[FC_SHA256_LEN],
                       const fc_model_spec *spec, uint64_t bytes, char *err, size_t errlen) {
  char why[400];
  fc_manifest mf;
  if (!s || !s->msg) {
    if (t->allow_unsigned) return FEDC_OK;
    return fail(err, errlen, FEDC_ERR_SIGNATURE,
                "refusing model v%" PRIu64 ": it is unsigned (the coordinator has no model-signing key; "
                "--allow-unsigned-models accepts that)",
                version);
  }
  if (!t->ca_pem) {
    if (t->allow_unsigned) return FEDC_OK;
    return fail(err, errlen, FEDC_ERR_SIGNATURE, "refusing model v%" PRIu64 ": no CA to verify its signature with",
                version);
  }
  const char *fed = t->federation && t->federation[0] ? t->federation : NULL;
  struct fc_cert_cache *certs = t->certs && fc_cert_cache_same_ca(t->certs, t->ca_pem, t->ca_len) ? t->certs : NULL;
  int rc = verify_manifest(t->ca_pem, t->ca_len, certs, s, fed, 0, &mf, why, sizeof why);
  if (rc == FEDC_OK) rc = fc_manifest_check_model(&mf, 1, version, sha, spec, bytes, why, sizeof why);
  if (rc == FEDC_OK && t->have_newest && mf.version < t->newest) {
    snprintf(why, sizeof why, "version %" PRIu64 " is older than v%" PRIu64 ", accepted before (a replayed manifest)",
             mf.version, t->newest);
    rc = FEDC_ERR_SIGNATURE;
  }
  if (rc == FEDC_OK && t->have_newest && mf.version == t->newest &&
      !fc_digest_equal(mf.sha, t->newest_sha, FC_SHA256_LEN)) {
    snprintf(why, sizeof why,
             "another model than the v%" PRIu64 " accepted before (two signed manifests for one version)", mf.version);
    rc = FEDC_ERR_SIGNATURE;
  }
  if (rc != FEDC_OK) return fail(err, errlen, FEDC_ERR_SIGNATURE, "refusing model v%" PRIu64 ": %s", version, why);
  t->have_newest = 1;
  t->newest = mf.version;
  memcpy(t->newest_sha, mf.sha, FC_SHA256_LEN);
  return FEDC_OK;
}

int fc_signed_file_write(const char *path, const fc_signed *s, char *err, size_t errlen) {
  char *text = NULL;
  size_t len = 0;
  if (fc_signed_encode(s, &text, &len) != FEDC_OK)
    return fail(err, errlen, FEDC_ERR_NOMEM, "out of memory encoding %s", path);
  errno = 0;
  int rc = fc_write_file_atomic(path, text, len, 0644, 0);
  int e = errno;
  free(text);
  if (rc != FEDC_OK) return fail(err, errlen, rc, "cannot write %s: %s", path, e ? strerror(e) : fedc_strerror(rc));
  return FEDC_OK;
}

int fc_signed_file_read(const char *path, fc_signed *s, char *err, size_t errlen) {
  char *buf = NULL, why[300];
  size_t n = 0;
  int rc = fc_read_file(path, FC_SIGNED_MSG_MAX * 2 + FC_SIGNED_CERT_MAX, &buf, &n);
  if (rc != FEDC_OK) return fail(err, errlen, rc, "cannot read manifest %s: %s", path, fedc_strerror(rc));
  rc = fc_signed_decode(buf, n, s, why, sizeof why);
  free(buf);
  if (rc != FEDC_OK) return fail(err, errlen, rc, "%s: %s", path, why);
  return FEDC_OK;
}
