/*
 * tls_count.c - see tls_count.h: counting the server's TLS handshakes by
 * interposing SSL_do_handshake().
 */
#define _GNU_SOURCE
#include "transport/tls_count.h"

#include <dlfcn.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdatomic.h>

#define PUBLIC __attribute__((visibility("default")))

typedef int (*handshake_fn)(SSL *);
static _Atomic(handshake_fn) real_p;
static atomic_uint_fast64_t n_ok, n_cert, n_proto;
static atomic_int seen;

static handshake_fn real_handshake(void) {
  handshake_fn f = atomic_load(&real_p);
  if (!f) {
    f = (handshake_fn)dlsym(RTLD_NEXT, "SSL_do_handshake");
    atomic_store(&real_p, f);
  }
  return f;
}

PUBLIC int SSL_do_handshake(SSL *s) {
  handshake_fn f = real_handshake();
  if (!f) return -1; /* no libssl below us: cannot happen in a program linked with it */
  int rc = f(s);
  if (!SSL_is_server(s)) return rc;
  atomic_store(&seen, 1);
  if (rc == 1) {
    atomic_fetch_add(&n_ok, 1);
  } else {
    int e = SSL_get_error(s, rc);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_X509_LOOKUP &&
        e != SSL_ERROR_WANT_ASYNC && e != SSL_ERROR_WANT_ASYNC_JOB && e != SSL_ERROR_WANT_CLIENT_HELLO_CB) {
      /* A verification failure leaves its verdict; otherwise it was the protocol. */
      if (SSL_get_verify_result(s) != X509_V_OK) atomic_fetch_add(&n_cert, 1);
      else atomic_fetch_add(&n_proto, 1);
    }
  }
  return rc;
}

int fc_tls_counts_get(fc_tls_counts *out) {
  out->ok = atomic_load(&n_ok);
  out->failed_cert = atomic_load(&n_cert);
  out->failed_protocol = atomic_load(&n_proto);
  return atomic_load(&seen);
}
