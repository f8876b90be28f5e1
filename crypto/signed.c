/*
 * signed.c - signed messages and their three-PEM-block file form (signed.h).
 */
#include "crypto/signed.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/cert_cache.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"

#define PEM_MSG "FEDC SIGNED MESSAGE"
#define PEM_SIG "FEDC SIGNATURE"
#define PEM_CERT "CERTIFICATE"

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

void fc_signed_free(fc_signed *s) {
  if (!s) return;
  free(s->msg);
  free(s->sig);
  free(s->cert);
  memset(s, 0, sizeof *s);
}

int fc_signed_copy(const void *msg, size_t msg_len, const void *sig, size_t sig_len, const char *cert,
                   size_t cert_len, fc_signed *out, char *err, size_t errlen) {
  if (msg_len == 0 || msg_len > FC_SIGNED_MSG_MAX)
    return fail(err, errlen, FEDC_ERR_TOO_LARGE, "signed message of %zu bytes (1..%u allowed)", msg_len,
                FC_SIGNED_MSG_MAX);
  if (sig_len == 0 || sig_len > FC_SIG_MAX)
    return fail(err, errlen, FEDC_ERR_TOO_LARGE, "signature of %zu bytes (1..%d allowed)", sig_len, FC_SIG_MAX);
  if (cert_len == 0 || cert_len > FC_SIGNED_CERT_MAX)
    return fail(err, errlen, FEDC_ERR_TOO_LARGE, "signer certificate of %zu bytes (1..%u allowed)", cert_len,
                FC_SIGNED_CERT_MAX);
  fc_signed s = {malloc(msg_len), msg_len, malloc(sig_len), sig_len, malloc(cert_len + 1), cert_len};
  if (!s.msg || !s.sig || !s.cert) {
    fc_signed_free(&s);
    return fail(err, errlen, FEDC_ERR_NOMEM, "out of memory");
  }
  memcpy(s.msg, msg, msg_len);
  memcpy(s.sig, sig, sig_len);
  memcpy(s.cert, cert, cert_len);
  s.cert[cert_len] = 0;
  *out = s;
  return FEDC_OK;
}

int fc_signed_make(const char *key_pem, size_t key_len, const char *cert_pem, size_t cert_len, const void *msg,
                   size_t msg_len, fc_signed *out, char *err, size_t errlen) {
  uint8_t sig[FC_SIG_MAX];
  size_t sig_len = sizeof sig;
  int rc = fc_sign_pem(key_pem, key_len, msg, msg_len, sig, &sig_len);
  if (rc != FEDC_OK) return fail(err, errlen, rc, "signing failed: %s", fedc_strerror(rc));
  return fc_signed_copy(msg, msg_len, sig, sig_len, cert_pem, cert_len, out, err, errlen);
}

int fc_signed_verify(const char *ca_pem, size_t ca_len, const fc_signed *s, const char *role, char *federation,
                     char *name, char *err, size_t errlen) {
  return fc_signed_verify_ex(ca_pem, ca_len, s, role, 0, federation, name, err, errlen);
}

/* What both verifications check once the certificate chains to the CA and
 * its identity is read, in this order: the role, then the signature (with
 * x's key, or, x NULL, the key of s->cert). The identity goes out only when
 * everything holds. */
static int check_signer(const fc_signed *s, const fc_cert *x, const char *role, const char *fed, const char *r,
                        const char *nm, char *federation, char *name, char *err, size_t errlen) {
  if (strcmp(r, role) != 0)
    return fail(err, errlen, FEDC_ERR_SIGNATURE, "signed by spiffe://%s/%s/%s, which is not a %s certificate", fed, r,
                nm, role);
  int sig = x ? fc_cert_verify(x, s->msg, s->msg_len, s->sig, s->sig_len)
              : fc_verify_pem(s->cert, s->cert_len, s->msg, s->msg_len, s->sig, s->sig_len);
  if (sig != FEDC_OK)
    return fail(err, errlen, FEDC_ERR_SIGNATURE, "signature by spiffe://%s/%s/%s does not verify", fed, r, nm);
  if (federation) snprintf(federation, FC_PKI_FEDERATION_MAX, "%s", fed);
  if (name) snprintf(name, FC_PKI_NAME_MAX, "%s", nm);
  return FEDC_OK;
}

int fc_signed_verify_ex(const char *ca_pem, size_t ca_len, const fc_signed *s, const char *role, int ignore_time,
                        char *federation, char *name, char *err, size_t errlen) {
  char why[400];
  char fed[FC_PKI_FEDERATION_MAX], r[FC_PKI_ROLE_MAX], nm[FC_PKI_NAME_MAX];
  if (!s || !s->msg || !s->sig || !s->cert) return fail(err, errlen, FEDC_ERR_SIGNATURE, "no signature");
  int rc = fc_pki_verify_pem_ex(ca_pem, ca_len, s->cert, s->cert_len, ignore_time, why, sizeof why);
  if (rc == FEDC_ERR_CERT_EXPIRED) return fail(err, errlen, rc, "signer certificate: %s", why);
  if (rc != FEDC_OK) return fail(err, errlen, FEDC_ERR_SIGNATURE, "signer certificate: %s", why);
  if (fc_pki_identity_from_pem(s->cert, s->cert_len, fed, sizeof fed, r, sizeof r, nm, sizeof nm) != FEDC_OK)
    return fail(err, errlen, FEDC_ERR_SIGNATURE, "signer certificate has no fedc SPIFFE ID");
  return check_signer(s, NULL, role, fed, r, nm, federation, name, err, errlen);
}

int fc_signed_verify_cached(struct fc_cert_cache *certs, const fc_signed *s, const char *role, char *federation,
                            char *name, char *err, size_t errlen) {
  char why[400] = "";
  const char *fed, *r, *nm;
  fc_cert *x = NULL;
  if (!certs) return fail(err, errlen, FEDC_ERR_INVALID, "no certificate cache");
  if (!s || !s->msg || !s->sig || !s->cert) return fail(err, errlen, FEDC_ERR_SIGNATURE, "no signature");
  int rc = fc_cert_cache_get(certs, s->cert, s->cert_len, &x, why, sizeof why);
  if (rc == FEDC_ERR_CERT_EXPIRED) return fail(err, errlen, rc, "signer certificate: %s", why);
  if (rc != FEDC_OK) return fail(err, errlen, FEDC_ERR_SIGNATURE, "signer certificate: %s", why);
  if (fc_cert_identity(x, &fed, &r, &nm) != FEDC_OK)
    rc = fail(err, errlen, FEDC_ERR_SIGNATURE, "signer certificate has no fedc SPIFFE ID");
  else
    rc = check_signer(s, x, role, fed, r, nm, federation, name, err, errlen);
  fc_cert_release(x);
  return rc;
}

static int put_block(BIO *b, const char *type, const void *data, size_t len) {
  return len <= (size_t)1 << 30 && PEM_write_bio(b, type, "", data, (long)len) > 0;
}

int fc_signed_encode(const fc_signed *s, char **out, size_t *out_len) {
  BIO *b = BIO_new(BIO_s_mem());
  if (!b) return FEDC_ERR_NOMEM;
  int ok = put_block(b, PEM_MSG, s->msg, s->msg_len) && put_block(b, PEM_SIG, s->sig, s->sig_len) &&
           BIO_write(b, s->cert, (int)s->cert_len) == (int)s->cert_len;
  if (ok && s->cert_len && s->cert[s->cert_len - 1] != '\n') ok = BIO_write(b, "\n", 1) == 1;
  char *p = NULL;
  long n = ok ? BIO_get_mem_data(b, &p) : 0;
  char *buf = ok && n > 0 ? malloc((size_t)n + 1) : NULL;
  if (buf) {
    memcpy(buf, p, (size_t)n);
    buf[n] = 0;
    *out = buf;
    *out_len = (size_t)n;
  }
  BIO_free(b);
  ERR_clear_error();
  return buf ? FEDC_OK : FEDC_ERR_NOMEM;
}

/* The next PEM block of `type` from b; FEDC_ERR_FORMAT naming what is wrong. */
static int get_block(BIO *b, const char *type, unsigned char **data, long *len, char *err, size_t errlen) {
  char *name = NULL, *header = NULL;
  if (PEM_read_bio(b, &name, &header, data, len) != 1) {
    ERR_clear_error();
    return fail(err, errlen, FEDC_ERR_FORMAT, "expected a \"%s\" PEM block", type);
  }
  int ok = strcmp(name, type) == 0 && header[0] == 0;
  OPENSSL_free(name);
  OPENSSL_free(header);
  if (!ok) {
    OPENSSL_free(*data);
    *data = NULL;
    return fail(err, errlen, FEDC_ERR_FORMAT, "expected a \"%s\" PEM block without headers", type);
  }
  return FEDC_OK;
}

int fc_signed_decode(const char *buf, size_t len, fc_signed *out, char *err, size_t errlen) {
  if (len > FC_SIGNED_MSG_MAX * 2 + FC_SIGNED_CERT_MAX)
    return fail(err, errlen, FEDC_ERR_TOO_LARGE, "signed file of %zu bytes is too large", len);
  if (memchr(buf, 0, len)) return fail(err, errlen, FEDC_ERR_FORMAT, "signed file contains a NUL byte");
  BIO *b = BIO_new_mem_buf(buf, (int)len);
  if (!b) return FEDC_ERR_NOMEM;
  unsigned char *m = NULL, *s = NULL, *c = NULL;
  long ml = 0, sl = 0, cl = 0;
  int rc = get_block(b, PEM_MSG, &m, &ml, err, errlen);
  if (rc == FEDC_OK) rc = get_block(b, PEM_SIG, &s, &sl, err, errlen);
  if (rc == FEDC_OK) rc = get_block(b, PEM_CERT, &c, &cl, err, errlen);
  if (rc == FEDC_OK) {
    char *q = NULL;
    long rest = BIO_get_mem_data(b, &q);
    for (long i = 0; i < rest && rc == FEDC_OK; i++)
      if (q[i] != '\n' && q[i] != '\r') rc = fail(err, errlen, FEDC_ERR_FORMAT, "unexpected text after the certificate");
  }
  if (rc == FEDC_OK) {
    /* The certificate is kept as PEM text: the block read, re-encoded. */
    BIO *pb = BIO_new(BIO_s_mem());
    char *pem = NULL;
    long pl = pb && PEM_write_bio(pb, PEM_CERT, "", c, cl) > 0 ? BIO_get_mem_data(pb, &pem) : 0;
    rc = pl > 0 ? fc_signed_copy(m, (size_t)ml, s, (size_t)sl, pem, (size_t)pl, out, err, errlen) : FEDC_ERR_NOMEM;
    BIO_free(pb);
  }
  OPENSSL_free(m);
  OPENSSL_free(s);
  OPENSSL_free(c);
  BIO_free(b);
  return rc;
}
