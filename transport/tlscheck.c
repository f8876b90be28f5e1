/*
 * tlscheck.c - check our own TLS files before handing them to gRPC, whose
 * only complaint would be a handshake failure logged somewhere else. Each
 * mistake gets its own sentence: missing file (with the `fedc pki` command
 * that makes it), unreadable file, not PEM, expired, not issued by this CA,
 * key does not match, key file others may read (the private key is read
 * under crypto/keyfile.h's rule, like every key fedc loads).
 */
#include <errno.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "crypto/keyfile.h"
#include "crypto/pki.h"
#include "fedc/error.h"
#include "transport/transport.h"
#include "transport/transport_int.h"

int fc_tls_pem_load(const char *ca, const char *cert, const char *key, fc_tls_pem *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  int rc = fc_tls_check_local(ca, cert, key, err, errlen);
  if (rc != FEDC_OK) return rc;
  size_t n;
  const char *what = "CA certificate", *path = ca;
  if ((rc = fc_read_file(ca, 1 << 20, &out->ca, &n)) == FEDC_OK) {
    what = "certificate", path = cert;
    if ((rc = fc_read_file(cert, 1 << 20, &out->cert, &n)) == FEDC_OK) {
      if ((rc = fc_key_file_read(key, 1 << 20, &out->key, &out->key_len, err, errlen)) != FEDC_OK) {
        fc_tls_pem_free(out);
        return rc;
      }
    }
  }
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "cannot read %s %s: %s", what, path, fedc_strerror(rc));
    fc_tls_pem_free(out);
  }
  return rc;
}

void fc_tls_pem_free(fc_tls_pem *p) {
  if (p->key) fc_wipe(p->key, p->key_len);
  free(p->ca);
  free(p->cert);
  free(p->key);
  memset(p, 0, sizeof *p);
}

int fc_tls_check_files(const char *ca, const char *cert, const char *key, char *err, size_t errlen) {
  return fc_tls_check_local(ca, cert, key, err, errlen);
}

/* A file that is not there (a typo in --pki or --name, or never issued):
 * which one, and the `fedc pki` command that makes it, from its name as
 * `fedc pki init` (ca.crt, coordinator.*) and `issue` (<role>-<name>.*) write
 * them. 1 if missing (err set). */
static int missing_file(const char *path, const char *what, char *err, size_t errlen) {
  if (access(path, F_OK) == 0 || errno != ENOENT) return 0;
  const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path, *dash = strchr(base, '-');
  int dirlen = slash ? (int)(slash - path) : 1;
  const char *dir = slash ? path : ".";
  size_t stem = strcspn(base, ".");
  char role[FC_PKI_ROLE_MAX] = "";
  if (dash && (size_t)(dash - base) < sizeof role) snprintf(role, sizeof role, "%.*s", (int)(dash - base), base);
  if (!strcmp(base, FC_PKI_CA_CERT) || !strncmp(base, "coordinator.", 12))
    snprintf(err, errlen, "%s file %s is missing: `fedc pki init --dir %.*s --federation NAME` makes it", what, path,
             dirlen, dir);
  else if (role[0] && fc_pki_role_ok(role) && stem > (size_t)(dash - base) + 1)
    snprintf(err, errlen, "%s file %s is missing: `fedc pki issue --dir %.*s --role %s --name %.*s` makes it", what,
             path, dirlen, dir, role, (int)(stem - (size_t)(dash - base) - 1), dash + 1);
  else
    snprintf(err, errlen, "%s file %s is missing (`fedc pki issue` makes certificates and keys)", what, path);
  return 1;
}

int fc_tls_check_local(const char *ca, const char *cert, const char *key, char *err, size_t errlen) {
  if (missing_file(ca, "CA certificate", err, errlen) || missing_file(cert, "certificate", err, errlen) ||
      missing_file(key, "private key", err, errlen))
    return FEDC_ERR_IO;
  int rc = fc_pki_verify(ca, cert, err, errlen);
  if (rc == FEDC_ERR_CERT_EXPIRED) {
    time_t na = 0;
    int expired = 0;
    if (fc_pki_cert_expiry(cert, &na, &expired) == FEDC_OK && expired) {
      struct tm tm;
      char when[64];
      gmtime_r(&na, &tm);
      strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
      snprintf(err, errlen, "certificate %s expired on %s: issue a new one (fedc pki issue)", cert, when);
    } else {
      snprintf(err, errlen, "certificate %s is not valid yet (check the clock)", cert);
    }
    return rc;
  }
  if (rc != FEDC_OK) {
    char inner[300];
    snprintf(inner, sizeof inner, "%s", err);
    snprintf(err, errlen, "certificate %s does not verify against CA %s: %s", cert, ca, inner);
    return rc;
  }
  char *kp = NULL;
  size_t kl = 0;
  if ((rc = fc_key_file_read(key, 1 << 20, &kp, &kl, err, errlen)) != FEDC_OK) return rc;
  FILE *fc = fopen(cert, "r");
  BIO *kb = BIO_new_mem_buf(kp, (int)kl);
  X509 *x = fc ? PEM_read_X509(fc, NULL, NULL, NULL) : NULL;
  EVP_PKEY *pk = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, (void *)"") : NULL;
  BIO_free(kb);
  fc_wipe(kp, kl);
  free(kp);
  if (!pk) {
    snprintf(err, errlen, "%s is not a PEM private key", key);
    rc = FEDC_ERR_TLS;
  } else if (!x || X509_check_private_key(x, pk) != 1) {
    snprintf(err, errlen, "private key %s does not match certificate %s", key, cert);
    rc = FEDC_ERR_TLS;
  }
  X509_free(x);
  EVP_PKEY_free(pk);
  if (fc) fclose(fc);
  return rc;
}
