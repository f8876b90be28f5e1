/*
 * pki.c - the federation CA: key generation, certificate issuing, chain
 * verification and SPIFFE identity parsing, on the OpenSSL 3 API only (never
 * by running the `openssl` tool, so errors are ours to translate and no
 * private key ever passes through argv or a pipe).
 *
 * Layout of a PKI directory (fc_pki_init creates it 0700; an existing one
 * must be ours and not writable by group or others, see ensure_dir):
 *
 *   file                      mode  content
 *   ------------------------  ----  ------------------------------------------
 *   ca.key                    0600  CA private key, PKCS#8 PEM, unencrypted
 *   ca.crt                    0644  self-signed CA: CN "fedc CA <federation>",
 *                                   basicConstraints critical CA:TRUE pathlen:0,
 *                                   keyUsage critical keyCertSign+cRLSign, SKI,
 *                                   URI SAN spiffe://<federation>
 *   coordinator.key           0600  coordinator private key
 *   coordinator.crt           0644  CN "coordinator"; SANs DNS:localhost,
 *                                   IP:127.0.0.1, --san extras and
 *                                   spiffe://<fed>/coordinator/coordinator;
 *                                   EKU serverAuth+clientAuth
 *   federation                0644  the federation name and a newline (for
 *                                   people and scripts; code reads the CA SAN)
 *   signer-coordinator.key    0600  the coordinator's model-signing key
 *   signer-coordinator.crt    0644  CN "coordinator",
 *                                   spiffe://<fed>/signer/coordinator,
 *                                   EKU codeSigning only (no TLS use)
 *   <role>-<name>.key / .crt        written by fc_pki_issue (here or --out):
 *                                   CN <name>, spiffe://<fed>/<role>/<name>,
 *                                   EKU clientAuth (coordinator: both + DNS/IP;
 *                                   signer: codeSigning, never a TLS identity)
 *
 * Every leaf has basicConstraints critical CA:FALSE, keyUsage critical
 * digitalSignature (EC and Ed25519 keys sign; they never encipher), SKI and
 * AKI, so it also passes X509_V_FLAG_X509_STRICT.
 *
 * Invariants:
 *  - Nothing is overwritten. Targets are checked up front (a clear
 *    FEDC_ERR_EXISTS naming the file) and then created with O_EXCL, which also
 *    closes the check-then-create race; files created by a call that later
 *    fails are unlinked, so a failed init leaves no half-built CA.
 *  - Private keys are generated here and written 0600 (fchmod, whatever the
 *    umask). Their PEM lives only in a secure-heap memory BIO that is
 *    OPENSSL_cleanse'd before it is freed.
 *  - Serials are 159 random bits (RFC 5280 allows 20 octets; the top bit is
 *    cleared so the INTEGER stays positive), so two certificates from the same
 *    CA never share a serial in practice, without a serial-number file.
 *  - notBefore is backdated FC_PKI_SKEW_SEC so a freshly issued certificate
 *    works on a peer whose clock is a few minutes behind.
 *  - A certificate carries exactly one spiffe:// URI; identity parsing rejects
 *    anything else rather than guessing which one is meant.
 *
 * Like the rest of crypto/, these files use only OpenSSL and libc, which is
 * why pki_file.c has its own tiny exclusive-write helper instead of
 * common/fileutil.
 *
 * Files by role (pki_int.h holds the shared limits and prototypes): this
 * file is the CA: building certificates, fc_pki_init and issuing; it may call
 * pki_id.c (names, SANs, a CA's federation) and pki_file.c (files,
 * messages). pki_verify.c verifies chains and reads expiry (calls pki_id.c
 * and pki_file.c); pki_id.c the names and SPIFFE identities (calls
 * pki_file.c); pki_file.c the files and messages (calls none of them).
 */
#include "crypto/pki.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crypto/keyfile.h"
#include "crypto/sa_crypto.h"
#include "crypto/pki_int.h"
#include "fedc/error.h"


/* ---- certificate construction ------------------------------------------------------ */

static EVP_PKEY *generate_key(int type) {
  if (type == KEY_ED25519) return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

/* Ed25519 signs the message itself (no separate digest); P-256 uses SHA-256. */
static const EVP_MD *sign_digest(EVP_PKEY *signer) {
  return EVP_PKEY_is_a(signer, "ED25519") ? NULL : EVP_sha256();
}

static int set_random_serial(X509 *x) {
  unsigned char buf[20];
  int rc = 0;
  do {
    if (RAND_bytes(buf, sizeof buf) != 1) return 0;
    buf[0] &= 0x7f; /* 159 bits: positive without a leading 0x00 pad */
  } while (buf[0] == 0 && buf[1] == 0); /* keep it full length (and non-zero) in practice */
  BIGNUM *bn = BN_bin2bn(buf, sizeof buf, NULL);
  ASN1_INTEGER *serial = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
  if (serial) rc = X509_set_serialNumber(x, serial) == 1;
  ASN1_INTEGER_free(serial);
  BN_free(bn);
  return rc;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (!ext) return 0;
  int ok = X509_add_ext(x, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

static int push_name(GENERAL_NAMES *gens, int type, const char *value) {
  GENERAL_NAME *g = GENERAL_NAME_new();
  if (!g) return 0;
  if (type == GEN_IPADD) {
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(value);
    if (!ip) {
      GENERAL_NAME_free(g);
      return 0;
    }
    GENERAL_NAME_set0_value(g, GEN_IPADD, ip);
  } else {
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    if (!s || ASN1_STRING_set(s, value, -1) != 1) {
      ASN1_IA5STRING_free(s);
      GENERAL_NAME_free(g);
      return 0;
    }
    GENERAL_NAME_set0_value(g, type, s);
  }
  if (!sk_GENERAL_NAME_push(gens, g)) {
    GENERAL_NAME_free(g);
    return 0;
  }
  return 1;
}

/* Built from typed GENERAL_NAMEs rather than a config string such as
 * "DNS:a,IP:b", so no user-supplied SAN can inject another entry. */
static int add_sans(X509 *x, const char *spiffe_uri, int with_hosts, const char *const *sans, size_t nsans) {
  GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
  int ok = gens != NULL;
  if (ok && with_hosts) {
    ok = push_name(gens, GEN_DNS, "localhost") && push_name(gens, GEN_IPADD, "127.0.0.1");
    for (size_t i = 0; ok && i < nsans; i++) {
      if (strcmp(sans[i], "localhost") == 0 || strcmp(sans[i], "127.0.0.1") == 0) continue;
      int dup = 0;
      for (size_t j = 0; j < i; j++) dup |= strcmp(sans[i], sans[j]) == 0;
      if (!dup) ok = push_name(gens, pki_is_ip_literal(sans[i]) ? GEN_IPADD : GEN_DNS, sans[i]);
    }
  }
  if (ok) ok = push_name(gens, GEN_URI, spiffe_uri);
  if (ok) ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_APPEND) == 1;
  GENERAL_NAMES_free(gens);
  return ok;
}

typedef struct cert_spec {
  const char *cn;
  const char *spiffe_uri;
  int is_ca;
  const char *eku;      /* leaf only */
  int with_hosts;       /* DNS:localhost, IP:127.0.0.1 and sans */
  const char *const *sans;
  size_t nsans;
  long not_before_offset_sec, not_after_offset_sec;
  const ASN1_TIME *not_after_cap; /* the issuer's notAfter; NULL for the CA */
} cert_spec;

/* A certificate for subject_key signed by issuer_key; issuer == NULL makes it
 * self-signed. Returns NULL with the OpenSSL error queued. */
static X509 *build_cert(const cert_spec *s, EVP_PKEY *subject_key, X509 *issuer, EVP_PKEY *issuer_key) {
  X509 *x = X509_new();
  X509_NAME *subj = X509_NAME_new();
  int ok = x && subj;
  if (ok) ok = X509_set_version(x, X509_VERSION_3) == 1 && set_random_serial(x);
  if (ok)
    ok = X509_gmtime_adj(X509_getm_notBefore(x), s->not_before_offset_sec) != NULL &&
         X509_gmtime_adj(X509_getm_notAfter(x), s->not_after_offset_sec) != NULL;
  if (ok && s->not_after_cap && ASN1_TIME_compare(X509_get0_notAfter(x), s->not_after_cap) > 0)
    ok = X509_set1_notAfter(x, s->not_after_cap) == 1;
  if (ok)
    ok = X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_UTF8, (const unsigned char *)s->cn, -1, -1, 0) == 1 &&
         X509_set_subject_name(x, subj) == 1 &&
         X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : subj) == 1 &&
         X509_set_pubkey(x, subject_key) == 1;
  X509 *ctx_issuer = issuer ? issuer : x;
  if (ok && s->is_ca) {
    /* pathlen:0 - this CA signs leaves only, never another CA. */
    ok = add_ext(x, ctx_issuer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
         add_ext(x, ctx_issuer, NID_key_usage, "critical,keyCertSign,cRLSign") &&
         add_ext(x, ctx_issuer, NID_subject_key_identifier, "hash");
  } else if (ok) {
    ok = add_ext(x, ctx_issuer, NID_basic_constraints, "critical,CA:FALSE") &&
         add_ext(x, ctx_issuer, NID_key_usage, "critical,digitalSignature") &&
         add_ext(x, ctx_issuer, NID_ext_key_usage, s->eku) &&
         add_ext(x, ctx_issuer, NID_subject_key_identifier, "hash") &&
         add_ext(x, ctx_issuer, NID_authority_key_identifier, "keyid:always");
  }
  if (ok) ok = add_sans(x, s->spiffe_uri, s->with_hosts, s->sans, s->nsans);
  if (ok) ok = X509_sign(x, issuer_key, sign_digest(issuer_key)) > 0;
  X509_NAME_free(subj);
  if (!ok) {
    X509_free(x);
    return NULL;
  }
  return x;
}

/* Key and certificate for <role>/<name>, signed by the CA. */
static int make_leaf(X509 *ca, EVP_PKEY *ca_key, const char *federation, const char *role, const char *name,
                     int key_type, const char *const *sans, size_t nsans, long nb, long na, EVP_PKEY **out_key,
                     X509 **out_cert, char *err, size_t errlen) {
  char uri[URI_CAP];
  snprintf(uri, sizeof uri, SPIFFE_PREFIX "%s/%s/%s", federation, role, name);
  /* An aggregator (issue 23) is a TLS server to clients and a TLS client of
   * the leader, as a coordinator replica is: the same EKUs and host SANs. */
  int coordinator = strcmp(role, "coordinator") == 0 || strcmp(role, "aggregator") == 0;
  /* A signer signs model manifests and nothing else: without a TLS EKU it
   * can never pass as a TLS peer, so a leaked signing key opens no
   * connection and a leaked TLS key signs no model. */
  int signer = strcmp(role, "signer") == 0;
  cert_spec spec = {
      .cn = name,
      .spiffe_uri = uri,
      .eku = coordinator ? "serverAuth,clientAuth" : signer ? "codeSigning" : "clientAuth",
      .with_hosts = coordinator,
      .sans = sans,
      .nsans = nsans,
      .not_before_offset_sec = nb,
      .not_after_offset_sec = na,
      .not_after_cap = X509_get0_notAfter(ca),
  };
  EVP_PKEY *key = generate_key(key_type);
  if (!key) return pki_crypto_fail(err, errlen, "generating key");
  X509 *cert = build_cert(&spec, key, ca, ca_key);
  if (!cert) {
    EVP_PKEY_free(key);
    return pki_crypto_fail(err, errlen, "building certificate");
  }
  *out_key = key;
  *out_cert = cert;
  return FEDC_OK;
}

/* ---- init and issue ----------------------------------------------------------------- */

int fc_pki_init(const char *dir, const char *federation, const char *const *sans, size_t nsans, int days,
                const char *key_type, char *err, size_t errlen) {
  enum { F_CA_KEY, F_CA_CERT, F_COORD_KEY, F_COORD_CERT, F_SIGN_KEY, F_SIGN_CERT, F_FEDERATION, F_COUNT };
  static const char *const names[F_COUNT] = {FC_PKI_CA_KEY,     FC_PKI_CA_CERT,     FC_PKI_COORD_KEY,
                                             FC_PKI_COORD_CERT, FC_PKI_SIGNER_KEY,  FC_PKI_SIGNER_CERT,
                                             FC_PKI_FEDERATION_FILE};
  char paths[F_COUNT][PATH_CAP];
  int created[F_COUNT] = {0};
  EVP_PKEY *ca_key = NULL, *coord_key = NULL, *sign_key = NULL;
  X509 *ca = NULL, *coord = NULL, *sign = NULL;
  int kt, rc;

  if (!dir || !*dir) {
    pki_set_err(err, errlen, "no PKI directory given");
    return FEDC_ERR_INVALID;
  }
  if (!fc_pki_federation_ok(federation)) {
    pki_set_err(err, errlen, "invalid federation name \"%s\": use 1-63 of [a-z0-9.-]", federation ? federation : "");
    return FEDC_ERR_INVALID;
  }
  if (days < 1 || days > FC_PKI_MAX_DAYS) {
    pki_set_err(err, errlen, "invalid validity %d days: use 1..%d", days, FC_PKI_MAX_DAYS);
    return FEDC_ERR_INVALID;
  }
  if (!pki_parse_key_type(key_type, &kt)) {
    pki_set_err(err, errlen, "invalid key type \"%s\": use ec or ed25519", key_type);
    return FEDC_ERR_INVALID;
  }
  if ((rc = pki_check_sans(sans, nsans, err, errlen))) return rc;
  for (int i = 0; i < F_COUNT; i++) {
    if ((rc = pki_path_join(paths[i], PATH_CAP, dir, names[i], err, errlen))) return rc;
    if ((rc = pki_refuse_existing(paths[i], err, errlen))) return rc;
  }
  if ((rc = pki_ensure_dir(dir, "--dir", err, errlen))) return rc;

  char ca_cn[96], ca_uri[URI_CAP];
  snprintf(ca_cn, sizeof ca_cn, "fedc CA %s", federation);
  snprintf(ca_uri, sizeof ca_uri, SPIFFE_PREFIX "%s", federation);
  long na = (long)days * 86400L;
  cert_spec ca_spec = {
      .cn = ca_cn, .spiffe_uri = ca_uri, .is_ca = 1, .not_before_offset_sec = -FC_PKI_SKEW_SEC,
      .not_after_offset_sec = na};
  if (!(ca_key = generate_key(kt))) {
    rc = pki_crypto_fail(err, errlen, "generating CA key");
    goto out;
  }
  if (!(ca = build_cert(&ca_spec, ca_key, NULL, ca_key))) {
    rc = pki_crypto_fail(err, errlen, "building CA certificate");
    goto out;
  }
  rc = make_leaf(ca, ca_key, federation, "coordinator", "coordinator", kt, sans, nsans, -FC_PKI_SKEW_SEC, na,
                 &coord_key, &coord, err, errlen);
  if (rc) goto out;
  rc = make_leaf(ca, ca_key, federation, "signer", "coordinator", kt, NULL, 0, -FC_PKI_SKEW_SEC, na, &sign_key, &sign,
                 err, errlen);
  if (rc) goto out;

  char fed_line[FC_PKI_FEDERATION_MAX + 1];
  int fed_len = snprintf(fed_line, sizeof fed_line, "%s\n", federation);
  if ((rc = pki_write_key_file(paths[F_CA_KEY], ca_key, err, errlen))) goto out;
  created[F_CA_KEY] = 1;
  if ((rc = pki_write_cert_file(paths[F_CA_CERT], ca, err, errlen))) goto out;
  created[F_CA_CERT] = 1;
  if ((rc = pki_write_key_file(paths[F_COORD_KEY], coord_key, err, errlen))) goto out;
  created[F_COORD_KEY] = 1;
  if ((rc = pki_write_cert_file(paths[F_COORD_CERT], coord, err, errlen))) goto out;
  created[F_COORD_CERT] = 1;
  if ((rc = pki_write_key_file(paths[F_SIGN_KEY], sign_key, err, errlen))) goto out;
  created[F_SIGN_KEY] = 1;
  if ((rc = pki_write_cert_file(paths[F_SIGN_CERT], sign, err, errlen))) goto out;
  created[F_SIGN_CERT] = 1;
  if ((rc = pki_write_new_file(paths[F_FEDERATION], fed_line, (size_t)fed_len, 0644, err, errlen))) goto out;
  created[F_FEDERATION] = 1;

out:
  if (rc) {
    for (int i = 0; i < F_COUNT; i++)
      if (created[i]) unlink(paths[i]);
  }
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(coord_key);
  EVP_PKEY_free(sign_key);
  X509_free(ca);
  X509_free(coord);
  X509_free(sign);
  return rc;
}

void fc_pki_issue_opts_init(fc_pki_issue_opts *o) {
  memset(o, 0, sizeof *o);
  o->not_before_offset_sec = -FC_PKI_SKEW_SEC;
  o->not_after_offset_sec = (long)FC_PKI_DEFAULT_DAYS * 86400L;
}

int fc_pki_leaf_paths(const char *dir, const char *role, const char *name, char *key_path, size_t klen,
                      char *crt_path, size_t clen) {
  if (!dir || !fc_pki_role_ok(role) || !fc_pki_name_ok(name)) return FEDC_ERR_INVALID;
  int a = snprintf(key_path, klen, "%s/%s-%s.key", dir, role, name);
  int b = snprintf(crt_path, clen, "%s/%s-%s.crt", dir, role, name);
  if (a < 0 || (size_t)a >= klen || b < 0 || (size_t)b >= clen) return FEDC_ERR_TOO_LARGE;
  return FEDC_OK;
}

int fc_pki_issue_ex(const fc_pki_issue_opts *o, char *err, size_t errlen) {
  char ca_key_path[PATH_CAP], ca_cert_path[PATH_CAP], key_path[PATH_CAP], crt_path[PATH_CAP];
  char federation[FC_PKI_FEDERATION_MAX];
  EVP_PKEY *ca_key = NULL, *key = NULL;
  X509 *ca = NULL, *cert = NULL;
  int rc, kt = 0;

  if (!o || !o->ca_dir || !*o->ca_dir) {
    pki_set_err(err, errlen, "no CA directory given");
    return FEDC_ERR_INVALID;
  }
  if (!fc_pki_role_ok(o->role)) {
    pki_set_err(err, errlen, "invalid role \"%s\": use client, admin, coordinator, aggregator or signer", o->role ? o->role : "");
    return FEDC_ERR_INVALID;
  }
  if (!fc_pki_name_ok(o->name)) {
    pki_set_err(err, errlen, "invalid name \"%s\": use 1-64 of [A-Za-z0-9_.-]", o->name ? o->name : "");
    return FEDC_ERR_INVALID;
  }
  if (o->not_before_offset_sec >= o->not_after_offset_sec) {
    pki_set_err(err, errlen, "validity window is empty (notBefore offset %ld >= notAfter offset %ld)",
                o->not_before_offset_sec, o->not_after_offset_sec);
    return FEDC_ERR_INVALID;
  }
  if (o->key_type && !pki_parse_key_type(o->key_type, &kt)) {
    pki_set_err(err, errlen, "invalid key type \"%s\": use ec or ed25519", o->key_type);
    return FEDC_ERR_INVALID;
  }
  if (o->nsans && strcmp(o->role, "coordinator") != 0 && strcmp(o->role, "aggregator") != 0) {
    pki_set_err(err, errlen, "host names and IP SANs are for coordinator and aggregator certificates only");
    return FEDC_ERR_INVALID;
  }
  if ((rc = pki_check_sans(o->sans, o->nsans, err, errlen))) return rc;
  const char *out_dir = o->out_dir ? o->out_dir : o->ca_dir;
  if ((rc = pki_path_join(ca_key_path, PATH_CAP, o->ca_dir, FC_PKI_CA_KEY, err, errlen)) ||
      (rc = pki_path_join(ca_cert_path, PATH_CAP, o->ca_dir, FC_PKI_CA_CERT, err, errlen)))
    return rc;
  if (fc_pki_leaf_paths(out_dir, o->role, o->name, key_path, PATH_CAP, crt_path, PATH_CAP)) {
    pki_set_err(err, errlen, "output path too long in %s", out_dir);
    return FEDC_ERR_INVALID;
  }
  if ((rc = pki_refuse_existing(key_path, err, errlen)) || (rc = pki_refuse_existing(crt_path, err, errlen))) return rc;

  if ((rc = pki_read_one_cert(ca_cert_path, &ca, err, errlen)) || (rc = pki_read_key(ca_key_path, &ca_key, err, errlen)))
    goto out;
  if (X509_check_private_key(ca, ca_key) != 1) {
    ERR_clear_error();
    pki_set_err(err, errlen, "%s does not belong to %s", ca_key_path, ca_cert_path);
    rc = FEDC_ERR_CRYPTO;
    goto out;
  }
  if (X509_check_ca(ca) != 1 || pki_ca_federation(ca, federation) != FEDC_OK) {
    pki_set_err(err, errlen, "%s is not a fedc CA certificate (CA:TRUE with one spiffe://<federation> SAN)",
                ca_cert_path);
    rc = FEDC_ERR_FORMAT;
    goto out;
  }
  /* Leaves are clamped to the CA's notAfter (build_cert): beyond it the chain
   * stops verifying anyway, and "init --days 365" followed by "issue --days
   * 365" a second later should simply work. Only a window that would start
   * after the CA expires is an error. */
  int ca_days = 0, ca_secs = 0;
  if (ASN1_TIME_diff(&ca_days, &ca_secs, NULL, X509_get0_notAfter(ca)) != 1) {
    rc = pki_crypto_fail(err, errlen, "reading CA validity");
    goto out;
  }
  if (o->not_before_offset_sec >= (long)ca_days * 86400L + ca_secs) {
    pki_set_err(err, errlen, "%s has expired or expires before the certificate would start", ca_cert_path);
    rc = FEDC_ERR_CERT_EXPIRED;
    goto out;
  }
  if (!kt) kt = EVP_PKEY_is_a(ca_key, "ED25519") ? KEY_ED25519 : KEY_EC;
  if ((rc = pki_ensure_dir(out_dir, o->out_dir ? "--out" : "--dir", err, errlen))) goto out;
  rc = make_leaf(ca, ca_key, federation, o->role, o->name, kt, o->sans, o->nsans, o->not_before_offset_sec,
                 o->not_after_offset_sec, &key, &cert, err, errlen);
  if (rc) goto out;
  if ((rc = pki_write_key_file(key_path, key, err, errlen))) goto out;
  if ((rc = pki_write_cert_file(crt_path, cert, err, errlen))) unlink(key_path);

out:
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(key);
  X509_free(ca);
  X509_free(cert);
  return rc;
}

int fc_pki_issue(const char *dir, const char *role, const char *name, const char *out_dir, int days, char *err,
                 size_t errlen) {
  if (days < 1 || days > FC_PKI_MAX_DAYS) {
    pki_set_err(err, errlen, "invalid validity %d days: use 1..%d", days, FC_PKI_MAX_DAYS);
    return FEDC_ERR_INVALID;
  }
  fc_pki_issue_opts o;
  fc_pki_issue_opts_init(&o);
  o.ca_dir = dir;
  o.out_dir = out_dir;
  o.role = role;
  o.name = name;
  o.not_after_offset_sec = (long)days * 86400L;
  return fc_pki_issue_ex(&o, err, errlen);
}
