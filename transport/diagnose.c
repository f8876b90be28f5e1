/*
 * diagnose.c - say WHY a call failed with UNAVAILABLE.
 *
 * gRPC reports every connection problem as UNAVAILABLE ("Socket closed",
 * "failed to connect to all addresses"); the reason is in the other side's
 * log. So when a call fails that way we probe the target ourselves:
 *   1. TCP connect (2 s): refused / timed out  -> coordinator unreachable;
 *   2. TLS handshake with our own CA, certificate and key (OpenSSL, ALPN h2):
 *      server certificate fails verification  -> not trusted by our --ca;
 *   3. read the server's first bytes (1 s): a TLS alert here means the server
 *      refused OUR certificate (TLS 1.3 sends it after the handshake): unknown
 *      CA, expired, missing, bad certificate. A gRPC server usually sends no
 *      alert at all: its TLS runs on memory BIOs and it closes the socket
 *      without flushing the alert, so a bare EOF right after our handshake is
 *      what a refusal looks like. Then we compare our certificate's issuer
 *      with the coordinator's to say which CA is missing.
 * If everything passes the original gRPC text is kept. The probe costs one
 * connection and runs only on failure.
 *
 * Calls go one way: fc_status_explain (in channel.c, which owns the channel
 * and its last healthy probe time) calls fc_diagnose_probe here; this file
 * calls nothing else of transport/.
 */
#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "crypto/keyfile.h"
#include "fedc/error.h"
#include "transport/transport.h"
#include "transport/transport_int.h"

/* Split "host:port", "[v6]:port", "ipv4:host:port". */
static int split_target(const char *target, char *host, size_t hl, char *port, size_t pl) {
  if (strncmp(target, "ipv4:", 5) == 0 || strncmp(target, "ipv6:", 5) == 0) target += 5;
  else if (strncmp(target, "dns:", 4) == 0)
    target += 4;
  const char *colon;
  if (target[0] == '[') {
    const char *end = strchr(target, ']');
    if (!end || end[1] != ':') return -1;
    snprintf(host, hl, "%.*s", (int)(end - target - 1), target + 1);
    colon = end + 1;
  } else {
    colon = strrchr(target, ':');
    if (!colon) return -1;
    snprintf(host, hl, "%.*s", (int)(colon - target), target);
  }
  snprintf(port, pl, "%s", colon + 1);
  return 0;
}

static int tcp_connect(const char *host, const char *port, char *why, size_t wl) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  int g = getaddrinfo(host, port, &hints, &res);
  if (g != 0) {
    snprintf(why, wl, "cannot resolve %s: %s", host, gai_strerror(g));
    return -1;
  }
  int fd = -1;
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    snprintf(why, wl, "%s", strerror(errno));
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  return fd;
}

static const char *alert_advice(unsigned long e) {
  switch (ERR_GET_REASON(e)) {
  case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    return "the coordinator does not trust our certificate (unknown CA): was it issued by this federation's CA?";
  case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    return "the coordinator says our certificate has expired: issue a new one";
  case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    return "the coordinator requires a client certificate and got none: pass --cert and --key";
  case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
  case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    return "the coordinator rejected our certificate (bad certificate)";
  case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
  case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
    return "the coordinator refused our certificate (access denied / key mismatch)";
  default: return NULL;
  }
}

/* The server closed the connection right after a handshake that succeeded on
 * our side: it refused our certificate without an alert (see the top). */
static void eof_advice(SSL *ssl, char *why, size_t wl) {
  X509 *ours = SSL_get_certificate(ssl); /* not owned */
  X509 *theirs = SSL_get1_peer_certificate(ssl);
  char our_ca[128] = "?", their_ca[128] = "?";
  if (ours) X509_NAME_get_text_by_NID(X509_get_issuer_name(ours), NID_commonName, our_ca, sizeof our_ca);
  if (theirs) X509_NAME_get_text_by_NID(X509_get_issuer_name(theirs), NID_commonName, their_ca, sizeof their_ca);
  if (ours && theirs && X509_NAME_cmp(X509_get_issuer_name(ours), X509_get_issuer_name(theirs)) != 0)
    snprintf(why, wl,
             "TLS handshake failed: the coordinator does not trust our certificate: it was issued by '%s' but the "
             "coordinator's CA is '%s' (get a certificate from this federation's CA)",
             our_ca, their_ca);
  else
    snprintf(why, wl,
             "TLS handshake failed: the coordinator closed the connection after the handshake, so it does not trust "
             "our certificate (revoked, expired by its clock, or from another CA of the same name): check --cert/--key");
  X509_free(theirs);
}

/* Returns the fedc_err the probe found (FEDC_OK if it found nothing wrong). */

/* Our key, read under the rule for every private key file (keyfile.h);
 * 1 if ctx now uses it, as SSL_CTX_use_PrivateKey_file says. */
static int use_key(SSL_CTX *ctx, const char *path) {
  char *pem = NULL, err[300];
  size_t len = 0;
  if (fc_key_file_read(path, 1 << 20, &pem, &len, err, sizeof err) != FEDC_OK) return 0;
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, (void *)"") : NULL;
  int ok = k && SSL_CTX_use_PrivateKey(ctx, k) == 1;
  EVP_PKEY_free(k);
  BIO_free(b);
  fc_wipe(pem, len);
  free(pem);
  return ok;
}
static int probe_one(const char *target, const char *ca, const char *cert, const char *key, int insecure, char *why,
                     size_t wl) {
  char host[256], port[32], tcpwhy[160] = "connection failed";
  if (split_target(target, host, sizeof host, port, sizeof port) != 0) {
    snprintf(why, wl, "bad coordinator address '%s' (want host:port)", target);
    return FEDC_ERR_INVALID;
  }
  int fd = tcp_connect(host, port, tcpwhy, sizeof tcpwhy);
  if (fd < 0) {
    snprintf(why, wl, "coordinator unreachable at %s: %s (is it running? is the address right?)", target, tcpwhy);
    return FEDC_ERR_UNAVAILABLE;
  }
  if (insecure) {
    close(fd);
    return FEDC_OK;
  }
  int rc = FEDC_OK;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  SSL *ssl = NULL;
  if (!ctx) goto out;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) goto out;
  if (cert && cert[0] && SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) goto out;
  if (key && key[0] && use_key(ctx, key) != 1) goto out;
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  static const unsigned char alpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn);
  ssl = SSL_new(ctx);
  if (!ssl) goto out;
  X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
  if (X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1) {
    X509_VERIFY_PARAM_set1_host(vp, host, 0);
    SSL_set_tlsext_host_name(ssl, host);
  }
  SSL_set_fd(ssl, fd);
  ERR_clear_error();
  if (SSL_connect(ssl) != 1) {
    long vr = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_error();
    if (vr != X509_V_OK) {
      if (vr == X509_V_ERR_CERT_HAS_EXPIRED)
        snprintf(why, wl, "TLS handshake failed: the coordinator's certificate has expired");
      else
        snprintf(why, wl, "TLS handshake failed: coordinator certificate not trusted (%s): check --ca",
                 X509_verify_cert_error_string(vr));
      rc = FEDC_ERR_TLS;
    } else if (e && alert_advice(e)) {
      snprintf(why, wl, "TLS handshake failed: %s", alert_advice(e));
      rc = FEDC_ERR_TLS;
    } else if (!e || ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
      /* Closed mid-handshake with no verdict: a coordinator starting or
       * stopping, or shedding connections. Transient, not a TLS mistake. */
      snprintf(why, wl, "coordinator at %s closed the connection during the TLS handshake (restarting or busy?)",
               target);
      rc = FEDC_ERR_UNAVAILABLE;
    } else {
      char es[160];
      ERR_error_string_n(e, es, sizeof es);
      snprintf(why, wl, "TLS handshake with %s failed: %s", target, es);
      rc = FEDC_ERR_TLS;
    }
    goto out;
  }
  /* TLS 1.3: the server checks our certificate after we finished; its verdict
   * arrives as an alert on the first read. Silence means it accepted us. */
  struct pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, 1000) > 0) {
    char buf[64];
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(ssl, buf, sizeof buf);
    if (n <= 0) {
      int se = SSL_get_error(ssl, n);
      unsigned long e = ERR_peek_error();
      const char *adv = e ? alert_advice(e) : NULL;
      int eof = se == SSL_ERROR_ZERO_RETURN || (se == SSL_ERROR_SYSCALL && !e && errno == 0) ||
                (e && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING);
      if (adv) {
        snprintf(why, wl, "TLS handshake failed: %s", adv);
        rc = FEDC_ERR_TLS;
      } else if (eof) {
        eof_advice(ssl, why, wl);
        rc = FEDC_ERR_TLS;
      } else if (e) {
        char es[160];
        ERR_error_string_n(e, es, sizeof es);
        snprintf(why, wl, "TLS handshake failed: the coordinator closed the connection (%s): check --cert/--key", es);
        rc = FEDC_ERR_TLS;
      }
    }
  }
out:
  ERR_clear_error();
  if (ssl) SSL_free(ssl);
  if (ctx) SSL_CTX_free(ctx);
  close(fd);
  return rc;
}

/* A replica list ("host:port,host:port", as `--coordinator` takes it) is
 * probed an address at a time: fine if any one passes (the gRPC text stands),
 * else every address's reason, the first non-"unreachable" code winning (a
 * TLS refusal says more than a replica that is down). */
int fc_diagnose_probe(const char *target, const char *ca, const char *cert, const char *key, int insecure, char *why,
                      size_t wl) {
  if (!strchr(target, ',')) return probe_one(target, ca, cert, key, insecure, why, wl);
  char list[1024], one_why[400];
  snprintf(list, sizeof list, "%s", target);
  int rc = FEDC_ERR_UNAVAILABLE, n = 0;
  size_t used = 0;
  why[0] = '\0';
  char *save = NULL;
  for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    while (*t == ' ') t++;
    if (!*t) continue;
    int r = probe_one(t, ca, cert, key, insecure, one_why, sizeof one_why);
    if (r == FEDC_OK) return FEDC_OK;
    if (rc == FEDC_ERR_UNAVAILABLE) rc = r;
    int k = snprintf(why + used, used < wl ? wl - used : 0, "%s%s", n++ ? "; " : "no replica answered: ", one_why);
    if (k > 0) used += (size_t)k;
    if (used >= wl) break;
  }
  if (!n) {
    snprintf(why, wl, "bad coordinator address '%s' (want host:port[,host:port...])", target);
    return FEDC_ERR_INVALID;
  }
  return rc;
}
