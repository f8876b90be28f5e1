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
 * Like the rest of crypto/, this file uses only OpenSSL and libc, which is why
 * it has its own tiny exclusive-write helper instead of common/fileutil.
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
#include "fedc/error.h"

#define PATH_CAP 4096
#define URI_CAP FC_PKI_URI_MAX
#define MAX_CHAIN 16  /* certificates read from one PEM file */
#define SPIFFE_PREFIX "spiffe://"

enum key_type { KEY_EC = 1, KEY_ED25519 = 2 };

/* ---- messages ------------------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Report an OpenSSL failure with the newest queued reason; clears the queue. */
static int crypto_fail(char *err, size_t errlen, const char *what) {
  unsigned long e = ERR_peek_last_error();
  char reason[256] = "unknown error";
  if (e) ERR_error_string_n(e, reason, sizeof reason);
  ERR_clear_error();
  set_err(err, errlen, "%s: %s", what, reason);
  return FEDC_ERR_CRYPTO;
}

/* ---- names ---------------------------------------------------------------------- */

int fc_pki_federation_ok(const char *federation) {
  if (!federation) return 0;
  size_t n = strnlen(federation, FC_PKI_FEDERATION_MAX);
  if (n == 0 || n >= FC_PKI_FEDERATION_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = federation[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-')) return 0;
  }
  return 1;
}

int fc_pki_role_ok(const char *role) {
  return role && (strcmp(role, "client") == 0 || strcmp(role, "admin") == 0 || strcmp(role, "coordinator") == 0 ||
                  strcmp(role, "signer") == 0);
}

int fc_pki_name_ok(const char *name) {
  if (!name) return 0;
  size_t n = strnlen(name, FC_PKI_NAME_MAX);
  if (n == 0 || n >= FC_PKI_NAME_MAX) return 0;
  /* "." and ".." are path segments SPIFFE forbids; they would also make
   * confusing file names. */
  if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
          c == '-'))
      return 0;
  }
  return 1;
}

/* RFC 1123 host name: dot-separated labels of [A-Za-z0-9-], 1..63 each, no
 * leading or trailing hyphen, 253 bytes in all. */
static int hostname_ok(const char *h) {
  size_t n = strnlen(h, 254);
  if (n == 0 || n > 253) return 0;
  size_t label = 0;
  for (size_t i = 0; i <= n; i++) {
    char c = h[i];
    if (c == '.' || c == '\0') {
      if (label == 0 || label > 63 || h[i - 1] == '-') return 0;
      label = 0;
      continue;
    }
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')) return 0;
    if (c == '-' && label == 0) return 0;
    label++;
  }
  return 1;
}

/* 1 if s is an IPv4 or IPv6 literal (what a2i_IPADDRESS accepts). */
static int is_ip_literal(const char *s) {
  ASN1_OCTET_STRING *ip = a2i_IPADDRESS(s);
  ERR_clear_error();
  if (!ip) return 0;
  ASN1_OCTET_STRING_free(ip);
  return 1;
}

static int check_sans(const char *const *sans, size_t nsans, char *err, size_t errlen) {
  for (size_t i = 0; i < nsans; i++) {
    if (!sans[i] || (!is_ip_literal(sans[i]) && !hostname_ok(sans[i]))) {
      set_err(err, errlen, "invalid --san \"%s\": expected a host name or an IP address",
              sans[i] ? sans[i] : "(null)");
      return FEDC_ERR_INVALID;
    }
  }
  return FEDC_OK;
}

static int parse_key_type(const char *s, int *out) {
  if (!s || strcmp(s, "ec") == 0) {
    *out = KEY_EC;
    return 1;
  }
  if (strcmp(s, "ed25519") == 0) {
    *out = KEY_ED25519;
    return 1;
  }
  return 0;
}

/* ---- files ---------------------------------------------------------------------- */

static int path_join(char *out, size_t outlen, const char *dir, const char *file, char *err, size_t errlen) {
  int n = snprintf(out, outlen, "%s/%s", dir, file);
  if (n < 0 || (size_t)n >= outlen) {
    set_err(err, errlen, "path too long: %s/%s", dir, file);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

/* FEDC_ERR_EXISTS (with the file named) if anything is at path, even a
 * dangling symlink. */
static int refuse_existing(const char *path, char *err, size_t errlen) {
  struct stat st;
  if (lstat(path, &st) == 0) {
    set_err(err, errlen, "%s already exists; refusing to overwrite it", path);
    return FEDC_ERR_EXISTS;
  }
  if (errno != ENOENT) {
    set_err(err, errlen, "%s: %s", path, strerror(errno));
    return FEDC_ERR_IO;
  }
  return FEDC_OK;
}

/*
 * mkdir 0700; an existing directory is used only if it is ours and nobody
 * else can write to it. Another local user who can write to the directory can
 * rename our ca.crt away and put theirs in its place (in a sticky directory
 * too, before we create a name), and an owner other than us can do anything,
 * so such a directory is refused rather than quietly chmod'ed: the mode was
 * someone's choice, and the files may already have been tampered with.
 * option names the CLI flag for the hint ("--dir", "--out").
 */
static int ensure_dir(const char *dir, const char *option, char *err, size_t errlen) {
  if (mkdir(dir, 0700) == 0) return FEDC_OK;
  struct stat st;
  if (errno != EEXIST || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    set_err(err, errlen, "cannot create directory %s: %s", dir, strerror(errno == EEXIST ? ENOTDIR : errno));
    return FEDC_ERR_IO;
  }
  if (st.st_uid != geteuid()) {
    set_err(err, errlen,
            "refusing to use %s: it is owned by uid %lu, not by you (uid %lu), so its owner could replace the files "
            "in it; choose another %s",
            dir, (unsigned long)st.st_uid, (unsigned long)geteuid(), option);
    return FEDC_ERR_INVALID;
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    set_err(err, errlen,
            "refusing to use %s: its mode is %04o, so other local users could replace the files in it; "
            "chmod 700 %s or choose another %s",
            dir, (unsigned)(st.st_mode & 07777), dir, option);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

/* Create path exclusively with exactly `mode` and write data, fsync'd. On
 * failure nothing is left at path. */
static int write_new_file(const char *path, const void *data, size_t len, mode_t mode, char *err, size_t errlen) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) {
    if (errno == EEXIST) {
      set_err(err, errlen, "%s already exists; refusing to overwrite it", path);
      return FEDC_ERR_EXISTS;
    }
    set_err(err, errlen, "cannot create %s: %s", path, strerror(errno));
    return FEDC_ERR_IO;
  }
  int ok = fchmod(fd, mode) == 0;
  const char *p = data;
  size_t left = len;
  while (ok && left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = 0;
      break;
    }
    p += n;
    left -= (size_t)n;
  }
  if (ok) ok = fsync(fd) == 0;
  int saved = errno;
  if (close(fd) != 0) ok = 0;
  if (!ok) {
    unlink(path);
    set_err(err, errlen, "cannot write %s: %s", path, strerror(saved ? saved : EIO));
    return FEDC_ERR_IO;
  }
  return FEDC_OK;
}

static int write_key_file(const char *path, EVP_PKEY *key, char *err, size_t errlen) {
  /* secmem: the BIO's buffer comes from the secure heap when one is set up
   * and is cleared on free; we also cleanse explicitly, since without a
   * secure heap it is ordinary memory. */
  BIO *mem = BIO_new(BIO_s_secmem());
  if (!mem) return crypto_fail(err, errlen, "allocating key buffer");
  int rc;
  if (PEM_write_bio_PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL) != 1) {
    rc = crypto_fail(err, errlen, "encoding private key");
    goto out;
  }
  char *pem = NULL;
  long n = BIO_get_mem_data(mem, &pem);
  if (n <= 0 || !pem) {
    rc = crypto_fail(err, errlen, "encoding private key");
    goto out;
  }
  rc = write_new_file(path, pem, (size_t)n, 0600, err, errlen);
  OPENSSL_cleanse(pem, (size_t)n);
out:
  BIO_free(mem);
  return rc;
}

static int write_cert_file(const char *path, X509 *cert, char *err, size_t errlen) {
  BIO *mem = BIO_new(BIO_s_mem());
  if (!mem) return crypto_fail(err, errlen, "allocating certificate buffer");
  int rc;
  char *pem = NULL;
  long n;
  if (PEM_write_bio_X509(mem, cert) != 1 || (n = BIO_get_mem_data(mem, &pem)) <= 0 || !pem) {
    rc = crypto_fail(err, errlen, "encoding certificate");
  } else {
    rc = write_new_file(path, pem, (size_t)n, 0644, err, errlen);
  }
  BIO_free(mem);
  return rc;
}

/* Read up to MAX_CHAIN PEM certificates from path into a fresh stack. */
static int read_certs_bio(BIO *in, const char *path, STACK_OF(X509) **out, char *err, size_t errlen);

static int read_certs(const char *path, STACK_OF(X509) **out, char *err, size_t errlen) {
  BIO *in = BIO_new_file(path, "r");
  if (!in) {
    int e = errno;
    ERR_clear_error();
    set_err(err, errlen, "cannot open %s: %s", path, strerror(e ? e : ENOENT));
    return e == ENOENT ? FEDC_ERR_NOT_FOUND : FEDC_ERR_IO;
  }
  return read_certs_bio(in, path, out, err, errlen);
}

/* Reads up to MAX_CHAIN certificates from in and frees it; path names it in errors. */
static int read_certs_bio(BIO *in, const char *path, STACK_OF(X509) **out, char *err, size_t errlen) {
  STACK_OF(X509) *certs = sk_X509_new_null();
  int rc = FEDC_OK;
  if (!certs) {
    rc = crypto_fail(err, errlen, "allocating certificate list");
    goto out;
  }
  X509 *x;
  while (sk_X509_num(certs) < MAX_CHAIN && (x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
    if (!sk_X509_push(certs, x)) {
      X509_free(x);
      rc = crypto_fail(err, errlen, "allocating certificate list");
      goto out;
    }
  }
  ERR_clear_error(); /* the read that ended the loop queued "no start line" */
  if (sk_X509_num(certs) == 0) {
    set_err(err, errlen, "%s: no PEM certificate found", path);
    rc = FEDC_ERR_FORMAT;
  }
out:
  BIO_free(in);
  if (rc == FEDC_OK) {
    *out = certs;
  } else {
    sk_X509_pop_free(certs, X509_free);
  }
  return rc;
}

static int read_one_cert(const char *path, X509 **out, char *err, size_t errlen) {
  STACK_OF(X509) *certs = NULL;
  int rc = read_certs(path, &certs, err, errlen);
  if (rc) return rc;
  *out = sk_X509_shift(certs);
  sk_X509_pop_free(certs, X509_free);
  return FEDC_OK;
}

static int read_key(const char *path, EVP_PKEY **out, char *err, size_t errlen) {
  char *pem = NULL;
  size_t len = 0;
  int rc = fc_key_file_read(path, 1u << 20, &pem, &len, err, errlen); /* the one rule for key files */
  if (rc != FEDC_OK) return rc;
  BIO *in = BIO_new_mem_buf(pem, (int)len);
  /* The empty-passphrase callback makes an encrypted key fail cleanly instead
   * of prompting on the terminal. */
  EVP_PKEY *k = in ? PEM_read_bio_PrivateKey(in, NULL, NULL, (void *)"") : NULL;
  BIO_free(in);
  fc_wipe(pem, len);
  free(pem);
  if (!k) {
    ERR_clear_error();
    set_err(err, errlen, "%s: not an unencrypted PEM private key", path);
    return FEDC_ERR_FORMAT;
  }
  *out = k;
  return FEDC_OK;
}

/* ---- SPIFFE identity -------------------------------------------------------------- */

/* Copy src (length n) into dst[dlen] with a NUL; 0 if it does not fit. */
static int copy_out(char *dst, size_t dlen, const char *src, size_t n) {
  if (!dst || n >= dlen) return 0;
  memcpy(dst, src, n);
  dst[n] = '\0';
  return 1;
}

int fc_pki_identity_from_spiffe(const char *uri, char *federation, size_t flen, char *role, size_t rlen,
                                char *name, size_t nlen) {
  if (!uri) return FEDC_ERR_INVALID;
  size_t total = strnlen(uri, URI_CAP);
  if (total >= URI_CAP || strncmp(uri, SPIFFE_PREFIX, strlen(SPIFFE_PREFIX)) != 0) return FEDC_ERR_INVALID;
  const char *fed = uri + strlen(SPIFFE_PREFIX);
  const char *slash = strchr(fed, '/');
  if (!slash) return FEDC_ERR_INVALID;
  const char *role_start = slash + 1;
  const char *slash2 = strchr(role_start, '/');
  if (!slash2) return FEDC_ERR_INVALID;
  const char *name_start = slash2 + 1; /* any further '/' fails the name check */

  char fed_buf[FC_PKI_FEDERATION_MAX], role_buf[FC_PKI_ROLE_MAX];
  if (!copy_out(fed_buf, sizeof fed_buf, fed, (size_t)(slash - fed)) || !fc_pki_federation_ok(fed_buf))
    return FEDC_ERR_INVALID;
  if (!copy_out(role_buf, sizeof role_buf, role_start, (size_t)(slash2 - role_start)) ||
      !fc_pki_role_ok(role_buf))
    return FEDC_ERR_INVALID;
  if (!fc_pki_name_ok(name_start)) return FEDC_ERR_INVALID;

  size_t nname = strlen(name_start);
  if (!federation || !role || !name || strlen(fed_buf) >= flen || strlen(role_buf) >= rlen || nname >= nlen)
    return FEDC_ERR_TOO_LARGE;
  copy_out(federation, flen, fed_buf, strlen(fed_buf));
  copy_out(role, rlen, role_buf, strlen(role_buf));
  copy_out(name, nlen, name_start, nname);
  return FEDC_OK;
}

/*
 * The identity rule (pki.h): only URI SANs count, and every URI whose scheme
 * is "spiffe" in any letter case counts, so "SPIFFE://x" next to a valid ID
 * makes the certificate ambiguous rather than being skipped. The transport
 * server calls this too, on the peer certificate gRPC verified, so the CA
 * tools and the server can never disagree about who a certificate names.
 */
int fc_pki_cert_spiffe_uri(const X509 *cert, char *out, size_t outlen) {
  if (!cert || !out || outlen == 0) return FEDC_ERR_INVALID;
  int crit = 0;
  GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
  if (!gens) {
    ERR_clear_error();
    return FEDC_ERR_INVALID; /* absent (crit -1) or duplicated extension (crit -2) */
  }
  const char *uri = NULL;
  int found = 0, uri_len = 0;
  for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
    if (g->type != GEN_URI) continue; /* an ID in a DNS or e-mail SAN is not an identity */
    const char *s = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
    int n = ASN1_STRING_length(g->d.uniformResourceIdentifier);
    if (n < 7 || strncasecmp(s, "spiffe:", 7) != 0) continue;
    found++;
    uri = s;
    uri_len = n;
  }
  int rc = FEDC_OK;
  if (found != 1 || uri_len >= URI_CAP || memchr(uri, '\0', (size_t)uri_len))
    rc = FEDC_ERR_INVALID;
  else if ((size_t)uri_len >= outlen)
    rc = FEDC_ERR_TOO_LARGE;
  else {
    memcpy(out, uri, (size_t)uri_len);
    out[uri_len] = '\0';
  }
  GENERAL_NAMES_free(gens);
  return rc;
}

static int cert_identity(X509 *cert, char *federation, size_t flen, char *role, size_t rlen, char *name,
                         size_t nlen) {
  char uri[URI_CAP];
  int rc = fc_pki_cert_spiffe_uri(cert, uri, sizeof uri);
  if (rc) return rc;
  return fc_pki_identity_from_spiffe(uri, federation, flen, role, rlen, name, nlen);
}

/* The first certificate in a PEM buffer: FEDC_OK, INVALID, NOMEM or FORMAT. */
static int first_cert_pem(const char *pem, size_t len, X509 **out) {
  if (!pem || len == 0 || len > INT_MAX) return FEDC_ERR_INVALID;
  BIO *in = BIO_new_mem_buf(pem, (int)len);
  if (!in) return FEDC_ERR_NOMEM;
  *out = PEM_read_bio_X509(in, NULL, NULL, NULL);
  BIO_free(in);
  if (!*out) {
    ERR_clear_error();
    return FEDC_ERR_FORMAT;
  }
  return FEDC_OK;
}

int fc_pki_identity_from_pem(const char *cert_pem, size_t len, char *federation, size_t flen, char *role,
                             size_t rlen, char *name, size_t nlen) {
  X509 *cert = NULL;
  int rc = first_cert_pem(cert_pem, len, &cert);
  if (rc) return rc;
  rc = cert_identity(cert, federation, flen, role, rlen, name, nlen);
  X509_free(cert);
  return rc;
}

int fc_pki_cert_sha256_pem(const char *cert_pem, size_t len, uint8_t out[32]) {
  X509 *cert = NULL;
  unsigned int n = 0;
  uint8_t fp[32];
  int rc = first_cert_pem(cert_pem, len, &cert);
  if (rc) return rc;
  if (X509_digest(cert, EVP_sha256(), fp, &n) != 1 || n != sizeof fp) {
    ERR_clear_error();
    rc = FEDC_ERR_CRYPTO;
  } else {
    memcpy(out, fp, sizeof fp);
  }
  X509_free(cert);
  return rc;
}

/* The federation a CA certificate is for: its one URI SAN "spiffe://<fed>". */
static int ca_federation(X509 *ca, char fed[FC_PKI_FEDERATION_MAX]) {
  char uri[URI_CAP];
  if (fc_pki_cert_spiffe_uri(ca, uri, sizeof uri) != FEDC_OK) return FEDC_ERR_INVALID;
  if (strncmp(uri, SPIFFE_PREFIX, strlen(SPIFFE_PREFIX)) != 0) return FEDC_ERR_INVALID;
  const char *td = uri + strlen(SPIFFE_PREFIX);
  if (!fc_pki_federation_ok(td)) return FEDC_ERR_INVALID; /* also rejects a path */
  copy_out(fed, FC_PKI_FEDERATION_MAX, td, strlen(td));
  return FEDC_OK;
}

int fc_pki_ca_federation_pem(const char *ca_pem, size_t len, char fed[FC_PKI_FEDERATION_MAX]) {
  X509 *ca = NULL;
  int rc = first_cert_pem(ca_pem, len, &ca);
  if (rc) return rc;
  rc = ca_federation(ca, fed);
  X509_free(ca);
  return rc;
}

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
      if (!dup) ok = push_name(gens, is_ip_literal(sans[i]) ? GEN_IPADD : GEN_DNS, sans[i]);
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
  int coordinator = strcmp(role, "coordinator") == 0;
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
  if (!key) return crypto_fail(err, errlen, "generating key");
  X509 *cert = build_cert(&spec, key, ca, ca_key);
  if (!cert) {
    EVP_PKEY_free(key);
    return crypto_fail(err, errlen, "building certificate");
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
    set_err(err, errlen, "no PKI directory given");
    return FEDC_ERR_INVALID;
  }
  if (!fc_pki_federation_ok(federation)) {
    set_err(err, errlen, "invalid federation name \"%s\": use 1-63 of [a-z0-9.-]", federation ? federation : "");
    return FEDC_ERR_INVALID;
  }
  if (days < 1 || days > FC_PKI_MAX_DAYS) {
    set_err(err, errlen, "invalid validity %d days: use 1..%d", days, FC_PKI_MAX_DAYS);
    return FEDC_ERR_INVALID;
  }
  if (!parse_key_type(key_type, &kt)) {
    set_err(err, errlen, "invalid key type \"%s\": use ec or ed25519", key_type);
    return FEDC_ERR_INVALID;
  }
  if ((rc = check_sans(sans, nsans, err, errlen))) return rc;
  for (int i = 0; i < F_COUNT; i++) {
    if ((rc = path_join(paths[i], PATH_CAP, dir, names[i], err, errlen))) return rc;
    if ((rc = refuse_existing(paths[i], err, errlen))) return rc;
  }
  if ((rc = ensure_dir(dir, "--dir", err, errlen))) return rc;

  char ca_cn[96], ca_uri[URI_CAP];
  snprintf(ca_cn, sizeof ca_cn, "fedc CA %s", federation);
  snprintf(ca_uri, sizeof ca_uri, SPIFFE_PREFIX "%s", federation);
  long na = (long)days * 86400L;
  cert_spec ca_spec = {
      .cn = ca_cn, .spiffe_uri = ca_uri, .is_ca = 1, .not_before_offset_sec = -FC_PKI_SKEW_SEC,
      .not_after_offset_sec = na};
  if (!(ca_key = generate_key(kt))) {
    rc = crypto_fail(err, errlen, "generating CA key");
    goto out;
  }
  if (!(ca = build_cert(&ca_spec, ca_key, NULL, ca_key))) {
    rc = crypto_fail(err, errlen, "building CA certificate");
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
  if ((rc = write_key_file(paths[F_CA_KEY], ca_key, err, errlen))) goto out;
  created[F_CA_KEY] = 1;
  if ((rc = write_cert_file(paths[F_CA_CERT], ca, err, errlen))) goto out;
  created[F_CA_CERT] = 1;
  if ((rc = write_key_file(paths[F_COORD_KEY], coord_key, err, errlen))) goto out;
  created[F_COORD_KEY] = 1;
  if ((rc = write_cert_file(paths[F_COORD_CERT], coord, err, errlen))) goto out;
  created[F_COORD_CERT] = 1;
  if ((rc = write_key_file(paths[F_SIGN_KEY], sign_key, err, errlen))) goto out;
  created[F_SIGN_KEY] = 1;
  if ((rc = write_cert_file(paths[F_SIGN_CERT], sign, err, errlen))) goto out;
  created[F_SIGN_CERT] = 1;
  if ((rc = write_new_file(paths[F_FEDERATION], fed_line, (size_t)fed_len, 0644, err, errlen))) goto out;
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
    set_err(err, errlen, "no CA directory given");
    return FEDC_ERR_INVALID;
  }
  if (!fc_pki_role_ok(o->role)) {
    set_err(err, errlen, "invalid role \"%s\": use client, admin, coordinator or signer", o->role ? o->role : "");
    return FEDC_ERR_INVALID;
  }
  if (!fc_pki_name_ok(o->name)) {
    set_err(err, errlen, "invalid name \"%s\": use 1-64 of [A-Za-z0-9_.-]", o->name ? o->name : "");
    return FEDC_ERR_INVALID;
  }
  if (o->not_before_offset_sec >= o->not_after_offset_sec) {
    set_err(err, errlen, "validity window is empty (notBefore offset %ld >= notAfter offset %ld)",
            o->not_before_offset_sec, o->not_after_offset_sec);
    return FEDC_ERR_INVALID;
  }
  if (o->key_type && !parse_key_type(o->key_type, &kt)) {
    set_err(err, errlen, "invalid key type \"%s\": use ec or ed25519", o->key_type);
    return FEDC_ERR_INVALID;
  }
  if (o->nsans && strcmp(o->role, "coordinator") != 0) {
    set_err(err, errlen, "host names and IP SANs are for coordinator certificates only");
    return FEDC_ERR_INVALID;
  }
  if ((rc = check_sans(o->sans, o->nsans, err, errlen))) return rc;
  const char *out_dir = o->out_dir ? o->out_dir : o->ca_dir;
  if ((rc = path_join(ca_key_path, PATH_CAP, o->ca_dir, FC_PKI_CA_KEY, err, errlen)) ||
      (rc = path_join(ca_cert_path, PATH_CAP, o->ca_dir, FC_PKI_CA_CERT, err, errlen)))
    return rc;
  if (fc_pki_leaf_paths(out_dir, o->role, o->name, key_path, PATH_CAP, crt_path, PATH_CAP)) {
    set_err(err, errlen, "output path too long in %s", out_dir);
    return FEDC_ERR_INVALID;
  }
  if ((rc = refuse_existing(key_path, err, errlen)) || (rc = refuse_existing(crt_path, err, errlen))) return rc;

  if ((rc = read_one_cert(ca_cert_path, &ca, err, errlen)) || (rc = read_key(ca_key_path, &ca_key, err, errlen)))
    goto out;
  if (X509_check_private_key(ca, ca_key) != 1) {
    ERR_clear_error();
    set_err(err, errlen, "%s does not belong to %s", ca_key_path, ca_cert_path);
    rc = FEDC_ERR_CRYPTO;
    goto out;
  }
  if (X509_check_ca(ca) != 1 || ca_federation(ca, federation) != FEDC_OK) {
    set_err(err, errlen, "%s is not a fedc CA certificate (CA:TRUE with one spiffe://<federation> SAN)",
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
    rc = crypto_fail(err, errlen, "reading CA validity");
    goto out;
  }
  if (o->not_before_offset_sec >= (long)ca_days * 86400L + ca_secs) {
    set_err(err, errlen, "%s has expired or expires before the certificate would start", ca_cert_path);
    rc = FEDC_ERR_CERT_EXPIRED;
    goto out;
  }
  if (!kt) kt = EVP_PKEY_is_a(ca_key, "ED25519") ? KEY_ED25519 : KEY_EC;
  if ((rc = ensure_dir(out_dir, o->out_dir ? "--out" : "--dir", err, errlen))) goto out;
  rc = make_leaf(ca, ca_key, federation, o->role, o->name, kt, o->sans, o->nsans, o->not_before_offset_sec,
                 o->not_after_offset_sec, &key, &cert, err, errlen);
  if (rc) goto out;
  if ((rc = write_key_file(key_path, key, err, errlen))) goto out;
  if ((rc = write_cert_file(crt_path, cert, err, errlen))) unlink(key_path);

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
    set_err(err, errlen, "invalid validity %d days: use 1..%d", days, FC_PKI_MAX_DAYS);
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

/* ---- verify ----------------------------------------------------------------------------- */

static int verify_chain(STACK_OF(X509) *cas, STACK_OF(X509) *chain, const char *ca_pem_path,
                        const char *cert_pem_path, int ignore_time, char *err, size_t errlen);

int fc_pki_verify(const char *ca_pem_path, const char *cert_pem_path, char *err, size_t errlen) {
  STACK_OF(X509) *cas = NULL, *chain = NULL;
  int rc;
  if ((rc = read_certs(ca_pem_path, &cas, err, errlen)) == FEDC_OK &&
      (rc = read_certs(cert_pem_path, &chain, err, errlen)) == FEDC_OK)
    rc = verify_chain(cas, chain, ca_pem_path, cert_pem_path, 0, err, errlen);
  sk_X509_pop_free(chain, X509_free);
  sk_X509_pop_free(cas, X509_free);
  return rc;
}

int fc_pki_verify_pem(const char *ca_pem, size_t ca_len, const char *cert_pem, size_t cert_len, char *err,
                      size_t errlen) {
  return fc_pki_verify_pem_ex(ca_pem, ca_len, cert_pem, cert_len, 0, err, errlen);
}

int fc_pki_verify_pem_ex(const char *ca_pem, size_t ca_len, const char *cert_pem, size_t cert_len, int ignore_time,
                         char *err, size_t errlen) {
  STACK_OF(X509) *cas = NULL, *chain = NULL;
  int rc = FEDC_ERR_INVALID;
  if (ca_len > INT_MAX || cert_len > INT_MAX) return rc;
  BIO *a = BIO_new_mem_buf(ca_pem, (int)ca_len), *b = BIO_new_mem_buf(cert_pem, (int)cert_len);
  if (!a || !b) {
    BIO_free(a);
    BIO_free(b);
    return crypto_fail(err, errlen, "allocating certificate reader");
  }
  rc = read_certs_bio(a, "the CA certificate", &cas, err, errlen);
  if (rc == FEDC_OK) {
    rc = read_certs_bio(b, "the certificate", &chain, err, errlen);
    b = NULL;
  }
  BIO_free(b);
  if (rc == FEDC_OK) rc = verify_chain(cas, chain, "the federation CA", "the certificate", ignore_time, err, errlen);
  sk_X509_pop_free(chain, X509_free);
  sk_X509_pop_free(cas, X509_free);
  return rc;
}

static int verify_leaf(STACK_OF(X509) *cas, X509 *leaf, STACK_OF(X509) *untrusted, const char *ca_pem_path,
                       const char *cert_pem_path, int ignore_time, time_t *from, time_t *until, char *err,
                       size_t errlen);

/* Verifies chain's first certificate (shifted off: the rest are untrusted
 * intermediates) against cas. Names are for the error message only. */
static int verify_chain(STACK_OF(X509) *cas, STACK_OF(X509) *chain, const char *ca_pem_path,
                        const char *cert_pem_path, int ignore_time, char *err, size_t errlen) {
  X509 *leaf = sk_X509_shift(chain); /* the rest are untrusted intermediates */
  int rc = verify_leaf(cas, leaf, chain, ca_pem_path, cert_pem_path, ignore_time, NULL, NULL, err, errlen);
  X509_free(leaf);
  return rc;
}

int fc_pki_verify_x509(struct stack_st_X509 *cas, X509 *leaf, struct stack_st_X509 *untrusted, time_t *valid_from,
                       time_t *valid_until, char *err, size_t errlen) {
  return verify_leaf(cas, leaf, untrusted, "the federation CA", "the certificate", 0, valid_from, valid_until, err,
                     errlen);
}

/* The validity window shared by every certificate of a verified chain. */
static int chain_window(STACK_OF(X509) *chain, time_t *from, time_t *until) {
  time_t lo = 0, hi = (time_t)INT64_MAX;
  for (int i = 0; i < sk_X509_num(chain); i++) {
    struct tm nb, na;
    memset(&nb, 0, sizeof nb);
    memset(&na, 0, sizeof na);
    X509 *x = sk_X509_value(chain, i);
    if (ASN1_TIME_to_tm(X509_get0_notBefore(x), &nb) != 1 || ASN1_TIME_to_tm(X509_get0_notAfter(x), &na) != 1) {
      ERR_clear_error();
      return FEDC_ERR_FORMAT;
    }
    time_t b = timegm(&nb), a = timegm(&na);
    if (b > lo) lo = b;
    if (a < hi) hi = a;
  }
  *from = lo;
  *until = hi;
  return FEDC_OK;
}

/* The check itself: leaf against cas with the untrusted intermediates;
 * from/until (may be NULL) receive the verified chain's common validity
 * window, so a caller that keeps the result can tell when it lapses. */
static int verify_leaf(STACK_OF(X509) *cas, X509 *leaf, STACK_OF(X509) *untrusted, const char *ca_pem_path,
                       const char *cert_pem_path, int ignore_time, time_t *from, time_t *until, char *err,
                       size_t errlen) {
  X509_STORE *store = NULL;
  X509_STORE_CTX *ctx = NULL;
  STACK_OF(X509) *chain = untrusted;
  int rc;
  if (!leaf) {
    set_err(err, errlen, "%s: no certificate", cert_pem_path);
    return FEDC_ERR_FORMAT;
  }
  if (!(store = X509_STORE_new()) || !(ctx = X509_STORE_CTX_new())) {
    rc = crypto_fail(err, errlen, "allocating verifier");
    goto out;
  }
  for (int i = 0; i < sk_X509_num(cas); i++) {
    if (X509_STORE_add_cert(store, sk_X509_value(cas, i)) != 1) {
      rc = crypto_fail(err, errlen, "loading CA certificate");
      goto out;
    }
  }
  if (X509_STORE_CTX_init(ctx, store, leaf, chain) != 1) {
    rc = crypto_fail(err, errlen, "initialising verifier");
    goto out;
  }
  /* Strict RFC 5280 checks: what we issue passes them, and a certificate that
   * does not is better caught here than in a peer's TLS stack. */
  X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx),
                              X509_V_FLAG_X509_STRICT | (ignore_time ? X509_V_FLAG_NO_CHECK_TIME : 0));
  /* If the certificate names its role, check its EKU fits it: clients and
   * admins authenticate as TLS clients, the coordinator as a TLS server. */
  char fed[FC_PKI_FEDERATION_MAX], role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX];
  if (cert_identity(leaf, fed, sizeof fed, role, sizeof role, name, sizeof name) == FEDC_OK) {
    if (strcmp(role, "signer") == 0) {
      /* OpenSSL 3.0 has no code-signing purpose: check the EKU by hand. */
      uint32_t xku = X509_get_extended_key_usage(leaf);
      if (!(X509_get_extension_flags(leaf) & EXFLAG_XKUSAGE) || xku != XKU_CODE_SIGN) {
        set_err(err, errlen, "%s is a signer certificate without exactly the codeSigning extended key usage",
                cert_pem_path);
        rc = FEDC_ERR_TLS;
        goto out;
      }
    } else {
      X509_STORE_CTX_set_purpose(ctx, strcmp(role, "coordinator") == 0 ? X509_PURPOSE_SSL_SERVER
                                                                        : X509_PURPOSE_SSL_CLIENT);
    }
  }
  if (X509_verify_cert(ctx) == 1) {
    rc = from || until ? chain_window(X509_STORE_CTX_get0_chain(ctx), from, until) : FEDC_OK;
    goto out;
  }
  int e = X509_STORE_CTX_get_error(ctx);
  int depth = X509_STORE_CTX_get_error_depth(ctx);
  rc = (e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID) ? FEDC_ERR_CERT_EXPIRED
                                                                                : FEDC_ERR_TLS;
  set_err(err, errlen, "%s does not verify against %s: %s%s", cert_pem_path, ca_pem_path,
          X509_verify_cert_error_string(e), depth == 0 ? "" : " (in its issuer chain)");
  ERR_clear_error();
out:
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return rc;
}

int fc_pki_cert_expiry(const char *cert_path, time_t *not_after, int *expired_now) {
  X509 *cert = NULL;
  int rc = read_one_cert(cert_path, &cert, NULL, 0);
  if (rc) return rc;
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) {
    ERR_clear_error();
    rc = FEDC_ERR_FORMAT;
  } else {
    time_t t = timegm(&tm);
    if (not_after) *not_after = t;
    if (expired_now) *expired_now = time(NULL) > t;
  }
  X509_free(cert);
  return rc;
}
