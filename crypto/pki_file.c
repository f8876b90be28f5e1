/*
 * pki_file.c - the PKI's files and messages: path joining, the checks on a
 * PKI directory (ensure_dir), exclusive writes of keys (0600, PEM kept in a
 * secure-heap BIO and cleansed) and certificates, and reading certificates
 * and keys, each with one clear error naming the file.
 *
 * Owns: nothing but the files it writes (O_EXCL: nothing is overwritten).
 * May call: OpenSSL, libc, crypto/keyfile.c; nothing else of pki*.c (the
 * bottom layer: pki.c, pki_id.c and pki_verify.c call down into it).
 * Layout and invariants of a PKI directory: see pki.c.
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


/* ---- messages ------------------------------------------------------------------- */

void pki_set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void pki_set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Report an OpenSSL failure with the newest queued reason; clears the queue. */
int pki_crypto_fail(char *err, size_t errlen, const char *what) {
  unsigned long e = ERR_peek_last_error();
  char reason[256] = "unknown error";
  if (e) ERR_error_string_n(e, reason, sizeof reason);
  ERR_clear_error();
  pki_set_err(err, errlen, "%s: %s", what, reason);
  return FEDC_ERR_CRYPTO;
}

/* ---- files ---------------------------------------------------------------------- */

int pki_path_join(char *out, size_t outlen, const char *dir, const char *file, char *err, size_t errlen) {
  int n = snprintf(out, outlen, "%s/%s", dir, file);
  if (n < 0 || (size_t)n >= outlen) {
    pki_set_err(err, errlen, "path too long: %s/%s", dir, file);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

/* FEDC_ERR_EXISTS (with the file named) if anything is at path, even a
 * dangling symlink. */
int pki_refuse_existing(const char *path, char *err, size_t errlen) {
  struct stat st;
  if (lstat(path, &st) == 0) {
    pki_set_err(err, errlen, "%s already exists; refusing to overwrite it", path);
    return FEDC_ERR_EXISTS;
  }
  if (errno != ENOENT) {
    pki_set_err(err, errlen, "%s: %s", path, strerror(errno));
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
int pki_ensure_dir(const char *dir, const char *option, char *err, size_t errlen) {
  if (mkdir(dir, 0700) == 0) return FEDC_OK;
  struct stat st;
  if (errno != EEXIST || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    pki_set_err(err, errlen, "cannot create directory %s: %s", dir, strerror(errno == EEXIST ? ENOTDIR : errno));
    return FEDC_ERR_IO;
  }
  if (st.st_uid != geteuid()) {
    pki_set_err(err, errlen,
                "refusing to use %s: it is owned by uid %lu, not by you (uid %lu), so its owner could replace the files "
                "in it; choose another %s",
                dir, (unsigned long)st.st_uid, (unsigned long)geteuid(), option);
    return FEDC_ERR_INVALID;
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    pki_set_err(err, errlen,
                "refusing to use %s: its mode is %04o, so other local users could replace the files in it; "
                "chmod 700 %s or choose another %s",
                dir, (unsigned)(st.st_mode & 07777), dir, option);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

/* Create path exclusively with exactly `mode` and write data, fsync'd. On
 * failure nothing is left at path. */
int pki_write_new_file(const char *path, const void *data, size_t len, mode_t mode, char *err, size_t errlen) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) {
    if (errno == EEXIST) {
      pki_set_err(err, errlen, "%s already exists; refusing to overwrite it", path);
      return FEDC_ERR_EXISTS;
    }
    pki_set_err(err, errlen, "cannot create %s: %s", path, strerror(errno));
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
    pki_set_err(err, errlen, "cannot write %s: %s", path, strerror(saved ? saved : EIO));
    return FEDC_ERR_IO;
  }
  return FEDC_OK;
}

int pki_write_key_file(const char *path, EVP_PKEY *key, char *err, size_t errlen) {
  /* secmem: the BIO's buffer comes from the secure heap when one is set up
   * and is cleared on free; we also cleanse explicitly, since without a
   * secure heap it is ordinary memory. */
  BIO *mem = BIO_new(BIO_s_secmem());
  if (!mem) return pki_crypto_fail(err, errlen, "allocating key buffer");
  int rc;
  if (PEM_write_bio_PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL) != 1) {
    rc = pki_crypto_fail(err, errlen, "encoding private key");
    goto out;
  }
  char *pem = NULL;
  long n = BIO_get_mem_data(mem, &pem);
  if (n <= 0 || !pem) {
    rc = pki_crypto_fail(err, errlen, "encoding private key");
    goto out;
  }
  rc = pki_write_new_file(path, pem, (size_t)n, 0600, err, errlen);
  OPENSSL_cleanse(pem, (size_t)n);
out:
  BIO_free(mem);
  return rc;
}

int pki_write_cert_file(const char *path, X509 *cert, char *err, size_t errlen) {
  BIO *mem = BIO_new(BIO_s_mem());
  if (!mem) return pki_crypto_fail(err, errlen, "allocating certificate buffer");
  int rc;
  char *pem = NULL;
  long n;
  if (PEM_write_bio_X509(mem, cert) != 1 || (n = BIO_get_mem_data(mem, &pem)) <= 0 || !pem) {
    rc = pki_crypto_fail(err, errlen, "encoding certificate");
  } else {
    rc = pki_write_new_file(path, pem, (size_t)n, 0644, err, errlen);
  }
  BIO_free(mem);
  return rc;
}

/* Read up to MAX_CHAIN PEM certificates from path into a fresh stack. */
int pki_read_certs_bio(BIO *in, const char *path, STACK_OF(X509) **out, char *err, size_t errlen);

int pki_read_certs(const char *path, STACK_OF(X509) **out, char *err, size_t errlen) {
  BIO *in = BIO_new_file(path, "r");
  if (!in) {
    int e = errno;
    ERR_clear_error();
    pki_set_err(err, errlen, "cannot open %s: %s", path, strerror(e ? e : ENOENT));
    return e == ENOENT ? FEDC_ERR_NOT_FOUND : FEDC_ERR_IO;
  }
  return pki_read_certs_bio(in, path, out, err, errlen);
}

/* Reads up to MAX_CHAIN certificates from in and frees it; path names it in errors. */
int pki_read_certs_bio(BIO *in, const char *path, STACK_OF(X509) **out, char *err, size_t errlen) {
  STACK_OF(X509) *certs = sk_X509_new_null();
  int rc = FEDC_OK;
  if (!certs) {
    rc = pki_crypto_fail(err, errlen, "allocating certificate list");
    goto out;
  }
  X509 *x;
  while (sk_X509_num(certs) < MAX_CHAIN && (x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
    if (!sk_X509_push(certs, x)) {
      X509_free(x);
      rc = pki_crypto_fail(err, errlen, "allocating certificate list");
      goto out;
    }
  }
  ERR_clear_error(); /* the read that ended the loop queued "no start line" */
  if (sk_X509_num(certs) == 0) {
    pki_set_err(err, errlen, "%s: no PEM certificate found", path);
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

int pki_read_one_cert(const char *path, X509 **out, char *err, size_t errlen) {
  STACK_OF(X509) *certs = NULL;
  int rc = pki_read_certs(path, &certs, err, errlen);
  if (rc) return rc;
  *out = sk_X509_shift(certs);
  sk_X509_pop_free(certs, X509_free);
  return FEDC_OK;
}

int pki_read_key(const char *path, EVP_PKEY **out, char *err, size_t errlen) {
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
    pki_set_err(err, errlen, "%s: not an unencrypted PEM private key", path);
    return FEDC_ERR_FORMAT;
  }
  *out = k;
  return FEDC_OK;
}
