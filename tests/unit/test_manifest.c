/*
 * test_manifest.c - signed model manifests (common/manifest.h,
 * crypto/signed.h) and model files sealed at rest (coordinator/store.c):
 *   - a manifest round-trips; every non-canonical spelling is refused;
 *     format 2 carries the audit head, format 1 (no audit line) still
 *     parses to exactly its text;
 *   - the file form round-trips; reordered, truncated or trailing text is refused;
 *   - fc_manifest_accept, the client's decision: accepts the signed model;
 *     refuses unsigned (unless allowed), a changed model, another version, a
 *     replayed older manifest, another federation, a flipped signature bit, a
 *     client certificate as signer, an edited manifest; both key types;
 *   - the store seals model files with a key, refuses them without it or with
 *     another, and refuses one copied over another version's name.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/fileutil.h"
#include "common/manifest.h"
#include "crypto/cert_cache.h"
#include "coordinator/store.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"

static char *slurp(const char *dir, const char *file, size_t *len) {
  char p[600], *b = NULL;
  snprintf(p, sizeof p, "%s/%s", dir, file);
  CHECK_EQ_INT(fc_read_file(p, 1 << 20, &b, len), FEDC_OK);
  return b;
}

static fc_manifest sample(uint64_t version, const float *w, size_t n) {
  fc_manifest m;
  memset(&m, 0, sizeof m);
  strcpy(m.federation, "fed");
  m.version = version;
  m.round = version;
  m.has_parent = version > 0;
  m.parent = version ? version - 1 : 0;
  memset(m.parent_sha, 0xab, sizeof m.parent_sha);
  uint64_t shape[2] = {2, n / 2};
  fc_model_spec_add(&m.spec, "fc1.weight", 2, shape);
  m.bytes = n * sizeof(float);
  fc_sha256(w, m.bytes, m.sha);
  m.created_unix = 1700000000;
  return m;
}

static fc_signed sign(const char *dir, const char *who, const fc_manifest *m) {
  char kf[128], cf[128], *text = NULL;
  size_t kl, cl, tl;
  snprintf(kf, sizeof kf, "%s.key", who);
  snprintf(cf, sizeof cf, "%s.crt", who);
  char *key = slurp(dir, kf, &kl), *cert = slurp(dir, cf, &cl);
  fc_signed s;
  memset(&s, 0, sizeof s);
  CHECK_EQ_INT(fc_manifest_encode(m, &text, &tl), FEDC_OK);
  CHECK_EQ_INT(fc_signed_make(key, kl, cert, cl, text, tl, &s, NULL, 0), FEDC_OK);
  free(text);
  free(key);
  free(cert);
  return s;
}

static void test_text(void) {
  float w[6] = {1, 2, 3, 4, 5, 6};
  fc_manifest m = sample(5, w, 6), back;
  char *text = NULL, err[200];
  size_t len = 0;
  CHECK_EQ_INT(fc_manifest_encode(&m, &text, &len), FEDC_OK);
  CHECK_EQ_INT(fc_manifest_parse(text, len, &back, err, sizeof err), FEDC_OK);
  CHECK(back.version == 5 && back.has_parent && back.parent == 4 && back.bytes == 24);
  CHECK(fc_model_spec_equal(&back.spec, &m.spec) && memcmp(back.sha, m.sha, 32) == 0);
  /* Non-canonical spellings: each parses leniently, then fails the round trip or a field rule. */
  static const struct {
    const char *from, *to;
  } bad[] = {{"version 5", "version 05"},   {"version 5", "version +5"}, {"round 5", "round  5"},
             {"tensors 1", "tensors 2"},    {"f32", "f16"},              {"bytes 24", "bytes 28"},
             {"federation fed", "federation Fed"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *t = malloc(len + 8);
    char *at = strstr(text, bad[i].from);
    CHECK(at != NULL);
    size_t pre = (size_t)(at - text);
    memcpy(t, text, pre);
    strcpy(t + pre, bad[i].to);
    strcat(t, at + strlen(bad[i].from));
    CHECK_EQ_INT(fc_manifest_parse(t, strlen(t), &back, err, sizeof err), FEDC_ERR_FORMAT);
    free(t);
  }
  char *upper = strdup(text);
  char *sha = strstr(upper, "\nsha256 ") + 8;
  for (int i = 0; i < 64; i++)
    if (sha[i] >= 'a' && sha[i] <= 'f') sha[i] = (char)(sha[i] - 32);
  CHECK_EQ_INT(fc_manifest_parse(upper, len, &back, err, sizeof err), FEDC_ERR_FORMAT);
  CHECK_EQ_INT(fc_manifest_parse(text, len - 1, &back, err, sizeof err), FEDC_ERR_FORMAT); /* no final LF */
  free(upper);
  free(text);
}

/* Format 2's audit line, and format 1 as it was signed before it. */
static void test_formats(void) {
  float w[6] = {1, 2, 3, 4, 5, 6};
  fc_manifest m = sample(5, w, 6), back;
  m.has_audit = 1;
  m.audit_seq = 517;
  memset(m.audit_head, 0xcd, sizeof m.audit_head);
  char *text = NULL, err[200];
  size_t len = 0;
  CHECK_EQ_INT(fc_manifest_encode(&m, &text, &len), FEDC_OK);
  CHECK(strncmp(text, "fedc-model-manifest 2\n", 22) == 0);
  CHECK(strstr(text, "\noptimizer-sha256 -\naudit 517 cdcdcdcd") != NULL);
  CHECK_EQ_INT(fc_manifest_parse(text, len, &back, err, sizeof err), FEDC_OK);
  CHECK(back.format == 2 && back.has_audit && back.audit_seq == 517 && memcmp(back.audit_head, m.audit_head, 32) == 0);
  /* Non-canonical or misplaced audit lines. */
  static const struct {
    const char *from, *to;
  } bad[] = {{"audit 517 ", "audit 0517 "}, {"audit 517 ", "audit  517 "}, {"audit 517 cd", "audit 517 CD"},
             {"audit 517 ", "audit -517 "}, {"audit 517 cdcd", "audit 517 cd"},
             {"fedc-model-manifest 2", "fedc-model-manifest 1"}, {"fedc-model-manifest 2", "fedc-model-manifest 3"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *t = malloc(len + 8), *at = strstr(text, bad[i].from);
    CHECK(at != NULL);
    size_t pre = (size_t)(at - text);
    memcpy(t, text, pre);
    strcpy(t + pre, bad[i].to);
    strcat(t, at + strlen(bad[i].from));
    CHECK_EQ_INT(fc_manifest_parse(t, strlen(t), &back, err, sizeof err), FEDC_ERR_FORMAT);
    free(t);
  }
  free(text);
  /* No audit log: "audit -". */
  m.has_audit = 0;
  CHECK_EQ_INT(fc_manifest_encode(&m, &text, &len), FEDC_OK);
  CHECK(strstr(text, "\naudit -\n") != NULL);
  CHECK_EQ_INT(fc_manifest_parse(text, len, &back, err, sizeof err), FEDC_OK);
  CHECK(back.format == 2 && !back.has_audit);
  /* A format 2 manifest without its audit line is refused. */
  char *cut = strdup(text), *line = strstr(cut, "audit -\n");
  memmove(line, line + 8, strlen(line + 8) + 1);
  CHECK_EQ_INT(fc_manifest_parse(cut, strlen(cut), &back, err, sizeof err), FEDC_ERR_FORMAT);
  free(cut);
  free(text);
  /* Format 1, byte for byte as the coordinator signed it before: parses,
   * has no anchor, and encodes back to the same text. */
  static const char v1[] = "fedc-model-manifest 1\nfederation fed\nversion 5\nround 5\nparent 4\n"
                           "parent-sha256 abababababababababababababababababababababababababababababababab\n"
                           "sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\nbytes 24\n"
                           "optimizer-sha256 -\ncreated-unix 1700000000\ntensors 1\ntensor fc1.weight f32 2,3\n";
  CHECK_EQ_INT(fc_manifest_parse(v1, sizeof v1 - 1, &back, err, sizeof err), FEDC_OK);
  CHECK(back.format == 1 && !back.has_audit && back.version == 5);
  CHECK_EQ_INT(fc_manifest_encode(&back, &text, &len), FEDC_OK);
  CHECK(len == sizeof v1 - 1 && memcmp(text, v1, len) == 0);
  free(text);
  /* ... and format 1 has no audit line to give. */
  static const char v1a[] = "fedc-model-manifest 1\nfederation fed\nversion 5\nround 5\nparent 4\n"
                            "parent-sha256 abababababababababababababababababababababababababababababababab\n"
                            "sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\nbytes 24\n"
                            "optimizer-sha256 -\naudit -\ncreated-unix 1700000000\ntensors 1\n"
                            "tensor fc1.weight f32 2,3\n";
  CHECK_EQ_INT(fc_manifest_parse(v1a, sizeof v1a - 1, &back, err, sizeof err), FEDC_ERR_FORMAT);
}

/* cached: every trust below carries a cache of verified signer certificates
 * (as the client runtime's does), and every outcome must be the same. */
static void test_accept(const char *dir, const char *other, int cached) {
  float w[6] = {1, 2, 3, 4, 5, 6};
  fc_manifest m5 = sample(5, w, 6), m4 = sample(4, w, 6);
  size_t ca_len;
  char *ca = slurp(dir, "ca.crt", &ca_len), err[400];
  fc_signed s5 = sign(dir, "signer-coordinator", &m5), s4 = sign(dir, "signer-coordinator", &m4);
  struct fc_cert_cache *cc = NULL;
  if (cached) CHECK_EQ_INT(fc_cert_cache_create(ca, ca_len, 4, &cc, err, sizeof err), FEDC_OK);
  fc_manifest_trust t = {.ca_pem = ca, .ca_len = ca_len, .federation = "fed", .certs = cc};

  fc_signed none;
  memset(&none, 0, sizeof none);
  CHECK_EQ_INT(fc_manifest_accept(&t, &none, 5, m5.sha, &m5.spec, 24, err, sizeof err), FEDC_ERR_SIGNATURE);
  CHECK(strstr(err, "unsigned") != NULL);
  fc_manifest_trust lenient = t;
  lenient.allow_unsigned = 1;
  CHECK_EQ_INT(fc_manifest_accept(&lenient, &none, 5, m5.sha, &m5.spec, 24, err, sizeof err), FEDC_OK);

  uint8_t other_sha[32];
  memcpy(other_sha, m5.sha, 32);
  other_sha[0] ^= 1;
  CHECK_EQ_INT(fc_manifest_accept(&t, &s5, 5, other_sha, &m5.spec, 24, err, sizeof err), FEDC_ERR_SIGNATURE);
  CHECK(strstr(err, "SHA-256 differs") != NULL);
  CHECK_EQ_INT(fc_manifest_accept(&t, &s5, 6, m5.sha, &m5.spec, 24, err, sizeof err), FEDC_ERR_SIGNATURE);
  fc_model_spec spec2 = m5.spec;
  spec2.t[0].shape[0] = 3, spec2.t[0].shape[1] = 2;
  CHECK_EQ_INT(fc_manifest_accept(&t, &s5, 5, m5.sha, &spec2, 24, err, sizeof err), FEDC_ERR_SIGNATURE);
  fc_manifest_trust elsewhere = t;
  elsewhere.federation = "other";
  CHECK_EQ_INT(fc_manifest_accept(&elsewhere, &s5, 5, m5.sha, &m5.spec, 24, err, sizeof err), FEDC_ERR_SIGNATURE);

  /* Accept v5, then the replayed v4 manifest (valid in itself) is refused. */
  CHECK_EQ_INT(fc_manifest_accept(&t, &s5, 5, m5.sha, &m5.spec, 24, err, sizeof err), FEDC_OK);
  CHECK(t.have_newest && t.newest == 5);
  CHECK_EQ_INT(fc_manifest_accept(&t, &s4, 4, m4.sha, &m4.spec, 24, err, sizeof err), FEDC_ERR_SIGNATURE);
  CHECK(strstr(err, "replayed") != NULL);
  CHECK_EQ_INT(fc_manifest_accept(&t, &s5, 5, m5.sha, &m5.spec, 24, err, sizeof err), FEDC_OK); /* same again: fine */
  /* A second, validly signed manifest for version 5 describing other weights. */
  float w2[6] = {1, 2, 3, 4, 5, 7};
  fc_manifest m5b = sample(5, w2, 6);
  fc_signed s5b = sign(dir, "signer-coordinator", &m5b);
  CHECK_EQ_INT(fc_manifest_accept(&t, &s5b, 5, m5b.sha, &m5b.spec, 24, err, sizeof err), FEDC_ERR_SIGNATURE);
  CHECK(strstr(err, "two signed manifests for one version") != NULL);
  fc_signed_free(&s5b);

  fc_manifest_trust fresh = {.ca_pem = ca, .ca_len = ca_len, .federation = "fed", .certs = cc};
  s5.sig[s5.sig_len / 2] ^= 0x10;
  CHECK_EQ_INT(fc_manifest_accept(&fresh, &s5, 5, m5.sha, &m5.spec, 24, err, sizeof err), FEDC_ERR_SIGNATURE);
  s5.sig[s5.sig_len / 2] ^= 0x10;
  s5.msg[30] ^= 0x01;
  CHECK_EQ_INT(fc_manifest_accept(&fresh, &s5, 5, m5.sha, &m5.spec, 24, err, sizeof err), FEDC_ERR_SIGNATURE);
  s5.msg[30] ^= 0x01;
  fc_signed byclient = sign(dir, "client-a", &m5);
  CHECK_EQ_INT(fc_manifest_accept(&fresh, &byclient, 5, m5.sha, &m5.spec, 24, err, sizeof err), FEDC_ERR_SIGNATURE);
  CHECK(strstr(err, "not a signer certificate") != NULL);
  fc_signed byother = sign(other, "signer-coordinator", &m5); /* another CA's signer, Ed25519 */
  CHECK_EQ_INT(fc_manifest_accept(&fresh, &byother, 5, m5.sha, &m5.spec, 24, err, sizeof err), FEDC_ERR_SIGNATURE);
  size_t oca_len;
  char *oca = slurp(other, "ca.crt", &oca_len);
  /* A cache of another CA than the trust's is not used. */
  fc_manifest_trust ot = {.ca_pem = oca, .ca_len = oca_len, .federation = "fed", .certs = cc};
  CHECK_EQ_INT(fc_manifest_accept(&ot, &byother, 5, m5.sha, &m5.spec, 24, err, sizeof err), FEDC_OK);
  if (cached) {
    /* Our signer was parsed and chain-checked once for its ten manifests;
     * the client-role signer once more (it verifies, then its role is refused). */
    CHECK_EQ_INT((int)fc_cert_cache_verifications(cc), 3); /* + byother, which fails */
    CHECK(fc_cert_cache_hits(cc) >= 8);
    CHECK_EQ_INT((int)fc_cert_cache_size(cc), 2);
    /* Bad input to the cached check: no cache, no signature, an empty or
     * garbled certificate; each refused with a sentence, nothing cached. */
    char fed[FC_PKI_FEDERATION_MAX], nm[FC_PKI_NAME_MAX];
    CHECK_EQ_INT(fc_signed_verify_cached(NULL, &s5, "signer", fed, nm, err, sizeof err), FEDC_ERR_INVALID);
    CHECK_EQ_INT(fc_signed_verify_cached(cc, NULL, "signer", fed, nm, err, sizeof err), FEDC_ERR_SIGNATURE);
    fc_signed bad = s5;
    bad.cert_len = 0;
    err[0] = 'x', err[1] = 0;
    CHECK_EQ_INT(fc_signed_verify_cached(cc, &bad, "signer", fed, nm, err, sizeof err), FEDC_ERR_SIGNATURE);
    CHECK(strncmp(err, "signer certificate: ", 20) == 0);
    char garbled[] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    bad.cert = garbled;
    bad.cert_len = sizeof garbled - 1;
    CHECK_EQ_INT(fc_signed_verify_cached(cc, &bad, "signer", fed, nm, err, sizeof err), FEDC_ERR_SIGNATURE);
    CHECK_EQ_INT((int)fc_cert_cache_size(cc), 2);
  }

  /* File form. */
  char *text = NULL;
  size_t tl = 0;
  fc_signed back;
  CHECK_EQ_INT(fc_signed_encode(&s5, &text, &tl), FEDC_OK);
  CHECK_EQ_INT(fc_signed_decode(text, tl, &back, err, sizeof err), FEDC_OK);
  CHECK(back.msg_len == s5.msg_len && memcmp(back.msg, s5.msg, s5.msg_len) == 0 && back.sig_len == s5.sig_len);
  CHECK_EQ_INT(fc_manifest_accept(&fresh, &back, 5, m5.sha, &m5.spec, 24, err, sizeof err), FEDC_OK);
  fc_signed_free(&back);
  CHECK_EQ_INT(fc_signed_decode(text, tl / 2, &back, err, sizeof err), FEDC_ERR_FORMAT);
  /* Sizes a coordinator can send: empty or over the limits is refused. */
  static char big[FC_SIGNED_MSG_MAX * 2 + FC_SIGNED_CERT_MAX + 2];
  CHECK_EQ_INT(fc_signed_copy(s5.msg, 0, s5.sig, s5.sig_len, s5.cert, s5.cert_len, &back, err, sizeof err),
               FEDC_ERR_TOO_LARGE);
  CHECK_EQ_INT(fc_signed_copy(big, FC_SIGNED_MSG_MAX + 1, s5.sig, s5.sig_len, s5.cert, s5.cert_len, &back, err,
                              sizeof err),
               FEDC_ERR_TOO_LARGE);
  CHECK_EQ_INT(fc_signed_copy(s5.msg, s5.msg_len, big, FC_SIG_MAX + 1, s5.cert, s5.cert_len, &back, err, sizeof err),
               FEDC_ERR_TOO_LARGE);
  CHECK_EQ_INT(fc_signed_copy(s5.msg, s5.msg_len, s5.sig, s5.sig_len, s5.cert, 0, &back, err, sizeof err),
               FEDC_ERR_TOO_LARGE);
  memset(big, 'A', sizeof big);
  CHECK_EQ_INT(fc_signed_decode(big, sizeof big, &back, err, sizeof err), FEDC_ERR_TOO_LARGE);
  char *extra = malloc(tl + 8);
  memcpy(extra, text, tl);
  memcpy(extra + tl, "junk\n", 6);
  CHECK_EQ_INT(fc_signed_decode(extra, tl + 5, &back, err, sizeof err), FEDC_ERR_FORMAT);
  char *cert_first = strstr(text, "-----BEGIN CERTIFICATE");
  CHECK_EQ_INT(fc_signed_decode(cert_first, strlen(cert_first), &back, err, sizeof err), FEDC_ERR_FORMAT);
  free(extra);
  free(text);
  fc_signed_free(&s5);
  fc_signed_free(&s4);
  fc_signed_free(&byclient);
  fc_signed_free(&byother);
  free(ca);
  free(oca);
  fc_cert_cache_destroy(cc);
}

/* A manifest signed while its signer was valid, checked after it expired:
 * refused as expired, accepted when the dates are ignored (the coordinator's
 * re-signing path), never when anything else is wrong. */
static void test_expired_signer(const char *dir) {
  char err[400];
  fc_pki_issue_opts o;
  fc_pki_issue_opts_init(&o);
  o.ca_dir = dir;
  o.role = "signer";
  o.name = "old";
  o.not_before_offset_sec = -7200;
  o.not_after_offset_sec = -3600;
  CHECK_EQ_INT(fc_pki_issue_ex(&o, err, sizeof err), FEDC_OK);
  float w[6] = {1, 2, 3, 4, 5, 6};
  fc_manifest m = sample(2, w, 6), got;
  m.has_opt = 1;
  memset(m.opt_sha, 0x5a, sizeof m.opt_sha);
  fc_signed s = sign(dir, "signer-old", &m);
  size_t ca_len;
  char *ca = slurp(dir, "ca.crt", &ca_len);
  CHECK_EQ_INT(fc_manifest_verify(ca, ca_len, &s, "fed", 0, &got, err, sizeof err), FEDC_ERR_CERT_EXPIRED);
  CHECK_EQ_INT(fc_manifest_verify(ca, ca_len, &s, "fed", 1, &got, err, sizeof err), FEDC_OK);
  CHECK(got.has_opt && got.opt_sha[0] == 0x5a && got.version == 2);
  struct fc_cert_cache *cc = NULL;
  CHECK_EQ_INT(fc_cert_cache_create(ca, ca_len, 4, &cc, err, sizeof err), FEDC_OK);
  fc_manifest_trust t = {.ca_pem = ca, .ca_len = ca_len, .federation = "fed", .certs = cc};
  CHECK_EQ_INT(fc_manifest_accept(&t, &s, 2, m.sha, &m.spec, 24, err, sizeof err), FEDC_ERR_SIGNATURE);
  CHECK(strstr(err, "expired") != NULL);
  CHECK_EQ_INT((int)fc_cert_cache_size(cc), 0);
  fc_cert_cache_destroy(cc);
  s.sig[3] ^= 1;
  CHECK_EQ_INT(fc_manifest_verify(ca, ca_len, &s, "fed", 1, &got, err, sizeof err), FEDC_ERR_SIGNATURE);
  fc_signed_free(&s);
  free(ca);
}

static void test_sealed_store(const char *dir) {
  char models[600], err[400];
  snprintf(models, sizeof models, "%s/models", dir);
  CHECK_EQ_INT(fc_store_open(dir, err, sizeof err), FEDC_OK);
  float w[6] = {1, 2, 3, 4, 5, 6}, *back = NULL;
  fc_manifest m = sample(1, w, 6);
  uint8_t sha[32];
  fc_store_key key_s, key2_s, *key = &key_s, *key2 = &key2_s;
  memset(&key_s, 0, sizeof key_s);
  memset(&key2_s, 0, sizeof key2_s);
  memset(key_s.key, 7, sizeof key_s.key);
  memset(key2_s.key, 8, sizeof key2_s.key);
  CHECK_EQ_INT(fc_store_write_model(dir, key, 1, 1, &m.spec, w, m.sha, NULL, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_store_write_model(dir, key, 2, 2, &m.spec, w, m.sha, NULL, err, sizeof err), FEDC_OK);
  size_t len;
  char *raw = slurp(models, "v000001.safetensors", &len);
  CHECK(memcmp(raw, "FEDCENC1", 8) == 0 && memmem(raw, len, "fedc.sha256", 11) == NULL);
  free(raw);
  fc_model_spec spec;
  fc_store_model_info info;
  CHECK_EQ_INT(fc_store_read_model(dir, key, 1, &spec, &back, sha, &info, err, sizeof err), FEDC_OK);
  CHECK(back && memcmp(back, w, sizeof w) == 0 && info.round == 1 && memcmp(sha, m.sha, 32) == 0);
  free(back);
  CHECK_EQ_INT(fc_store_read_model(dir, NULL, 1, &spec, &back, sha, NULL, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "encrypted at rest") != NULL);
  CHECK_EQ_INT(fc_store_read_model(dir, key2, 1, &spec, &back, sha, NULL, err, sizeof err), FEDC_ERR_CRYPTO);
  /* v2's sealed file under v1's name: the name is in the associated data. */
  char p1[700], p2[700];
  snprintf(p1, sizeof p1, "%s/v000001.safetensors", models);
  snprintf(p2, sizeof p2, "%s/v000002.safetensors", models);
  CHECK_EQ_INT(rename(p2, p1), 0);
  CHECK_EQ_INT(fc_store_read_model(dir, key, 1, &spec, &back, sha, NULL, err, sizeof err), FEDC_ERR_CRYPTO);
  /* A plaintext file under a key: refused (it could be anyone's), unless the
   * operator adopts the state as it is. */
  CHECK_EQ_INT(fc_store_write_model(dir, NULL, 3, 3, &m.spec, w, m.sha, NULL, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_store_read_model(dir, key, 3, &spec, &back, sha, NULL, err, sizeof err), FEDC_ERR_CRYPTO);
  CHECK(strstr(err, "is not encrypted although --model-key-file is set") != NULL);
  key_s.allow_plain = 1;
  CHECK_EQ_INT(fc_store_read_model(dir, key, 3, &spec, &back, sha, NULL, err, sizeof err), FEDC_OK);
  free(back);
}

int main(void) {
  char dir[] = "/tmp/fedc-manifest.XXXXXX", other[] = "/tmp/fedc-manifest-o.XXXXXX", st[] = "/tmp/fedc-seal.XXXXXX";
  if (!mkdtemp(dir) || !mkdtemp(other) || !mkdtemp(st)) return 1;
  char pki[600], opki[600], err[300];
  snprintf(pki, sizeof pki, "%s/pki", dir);
  snprintf(opki, sizeof opki, "%s/pki", other);
  CHECK_EQ_INT(fc_pki_init(pki, "fed", NULL, 0, 1, "ec", err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(pki, "client", "a", NULL, 1, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_init(opki, "fed", NULL, 0, 1, "ed25519", err, sizeof err), FEDC_OK);
  test_text();
  test_formats();
  test_accept(pki, opki, 0);
  test_accept(pki, opki, 1);
  test_expired_signer(pki);
  test_sealed_store(st);
  char cmd[2000];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s'", dir, other, st);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  return CHECK_DONE();
}
