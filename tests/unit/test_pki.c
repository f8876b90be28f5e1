/*
 * test_pki.c - crypto/pki.c end to end in a throwaway directory: init, issue,
 * verify, identity parsing, refusal to overwrite, refusal of a directory
 * others can write to, file modes, foreign and expired certificates, serial
 * randomness, Ed25519, the identity rule on certificates with odd SANs built
 * here with OpenSSL, and a real in-memory mutual-TLS handshake with the
 * issued certificates (the point of the PKI).
 */
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "common/fileutil.h"
#include "crypto/pki.h"
#include "fedc/error.h"

static char root[] = "/tmp/fedc-test-pki-XXXXXX";

/* "<root>/<a>[/<b>]" in one of a few rotating static buffers: fine as a call
 * argument, but copy it (P_keep) when it must outlive other P() calls. */
static const char *P(const char *a, const char *b) {
  static char bufs[8][512];
  static int next;
  char *buf = bufs[next++ % 8];
  if (b)
    snprintf(buf, 512, "%s/%s/%s", root, a, b);
  else
    snprintf(buf, 512, "%s/%s", root, a);
  return buf;
}

static const char *P_keep(char *buf, size_t len, const char *a) {
  snprintf(buf, len, "%s", P(a, NULL));
  return buf;
}

static int file_mode(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) return -1;
  return (int)(st.st_mode & 07777);
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

static char *slurp(const char *path, size_t *len) {
  char *buf = NULL;
  size_t n = 0;
  if (fc_read_file(path, 1 << 20, &buf, &n) != FEDC_OK) return NULL;
  if (len) *len = n;
  return buf;
}

static X509 *load_cert(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
  fclose(f);
  return x;
}

static int identity_of(const char *path, char *fed, char *role, char *name) {
  size_t len = 0;
  char *pem = slurp(path, &len);
  if (!pem) return -1;
  int rc = fc_pki_identity_from_pem(pem, len, fed, FC_PKI_FEDERATION_MAX, role, FC_PKI_ROLE_MAX, name,
                                    FC_PKI_NAME_MAX);
  free(pem);
  return rc;
}

static int same_file(const char *path, const char *content, size_t len) {
  size_t n = 0;
  char *now = slurp(path, &n);
  int same = now && n == len && memcmp(now, content, len) == 0;
  free(now);
  return same;
}

/* ---- in-memory mutual TLS ----------------------------------------------------------- */

static SSL_CTX *tls_ctx(int server, const char *ca, const char *crt, const char *key) {
  SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx) return NULL;
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx, crt) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_load_verify_file(ctx, ca) != 1) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
  return ctx;
}

/* Run a TLS 1.3 handshake over a BIO pair. Returns 1 if both ends completed
 * with peer verification; *client_id receives the SPIFFE identity the server
 * read from the client's certificate. */
static int mtls_handshake(const char *server_ca, const char *server_crt, const char *server_key,
                          const char *client_ca, const char *client_crt, const char *client_key, char *client_id,
                          size_t idlen) {
  int ok = 0;
  SSL_CTX *sctx = tls_ctx(1, server_ca, server_crt, server_key);
  SSL_CTX *cctx = tls_ctx(0, client_ca, client_crt, client_key);
  SSL *s = NULL, *c = NULL;
  if (!sctx || !cctx) goto out;
  s = SSL_new(sctx);
  c = SSL_new(cctx);
  BIO *sb = NULL, *cb = NULL;
  if (!s || !c || BIO_new_bio_pair(&sb, 0, &cb, 0) != 1) goto out;
  SSL_set_bio(s, sb, sb);
  SSL_set_bio(c, cb, cb);
  SSL_set_accept_state(s);
  SSL_set_connect_state(c);
  SSL_set1_host(c, "localhost"); /* the client checks the coordinator's DNS SAN */
  int sdone = 0, cdone = 0;
  for (int i = 0; i < 64 && !(sdone && cdone); i++) {
    if (!cdone) {
      int r = SSL_do_handshake(c);
      if (r == 1)
        cdone = 1;
      else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ && SSL_get_error(c, r) != SSL_ERROR_WANT_WRITE)
        goto out;
    }
    if (!sdone) {
      int r = SSL_do_handshake(s);
      if (r == 1)
        sdone = 1;
      else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ && SSL_get_error(s, r) != SSL_ERROR_WANT_WRITE)
        goto out;
    }
  }
  if (!(sdone && cdone) || SSL_get_verify_result(s) != X509_V_OK || SSL_get_verify_result(c) != X509_V_OK) goto out;
  X509 *peer = SSL_get0_peer_certificate(s);
  if (!peer) goto out;
  BIO *mem = BIO_new(BIO_s_mem());
  char *pem = NULL;
  long n = 0;
  char fed[FC_PKI_FEDERATION_MAX], role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX];
  if (mem && PEM_write_bio_X509(mem, peer) == 1 && (n = BIO_get_mem_data(mem, &pem)) > 0 &&
      fc_pki_identity_from_pem(pem, (size_t)n, fed, sizeof fed, role, sizeof role, name, sizeof name) == 0) {
    snprintf(client_id, idlen, "%s/%s/%s", fed, role, name);
    ok = 1;
  }
  BIO_free(mem);
out:
  ERR_clear_error();
  SSL_free(s);
  SSL_free(c);
  SSL_CTX_free(sctx);
  SSL_CTX_free(cctx);
  return ok;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_init_and_issue(void) {
  char id0[256] = "";
  char err[512] = "";
  const char *sans[] = {"10.0.0.5", "coord.example.org", "::1"};
  CHECK_EQ_INT(fc_pki_init(P("a", NULL), "fed-a.example", sans, 3, 30, "ec", err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(file_mode(P("a", NULL)), 0700);
  CHECK_EQ_INT(file_mode(P("a", "ca.key")), 0600);
  CHECK_EQ_INT(file_mode(P("a", "coordinator.key")), 0600);
  CHECK_EQ_INT(file_mode(P("a", "ca.crt")), 0644);
  CHECK(same_file(P("a", "federation"), "fed-a.example\n", 14));

  /* The CA: a critical CA:TRUE, cert-signing key, trust-domain-only SPIFFE ID. */
  X509 *ca = load_cert(P("a", "ca.crt"));
  CHECK(ca != NULL);
  if (ca) {
    CHECK_EQ_INT(X509_check_ca(ca), 1);
    int crit = 0;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(ca, NID_basic_constraints, &crit, NULL);
    CHECK(bc && bc->ca && crit == 1);
    BASIC_CONSTRAINTS_free(bc);
    CHECK((X509_get_key_usage(ca) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) == (KU_KEY_CERT_SIGN | KU_CRL_SIGN));
    CHECK(X509_get0_subject_key_id(ca) != NULL);
    char cn[128] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(ca), NID_commonName, cn, sizeof cn);
    CHECK(strcmp(cn, "fedc CA fed-a.example") == 0);
    X509_free(ca);
  }
  char fed[FC_PKI_FEDERATION_MAX], role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX];
  CHECK_EQ_INT(identity_of(P("a", "ca.crt"), fed, role, name), FEDC_ERR_INVALID); /* no role/name */

  /* The coordinator: server (and client) auth, host SANs, its SPIFFE ID. */
  X509 *coord = load_cert(P("a", "coordinator.crt"));
  CHECK(coord != NULL);
  if (coord) {
    CHECK_EQ_INT(X509_check_host(coord, "localhost", 0, 0, NULL), 1);
    CHECK_EQ_INT(X509_check_host(coord, "coord.example.org", 0, 0, NULL), 1);
    CHECK(X509_check_host(coord, "evil.example.org", 0, 0, NULL) != 1);
    CHECK_EQ_INT(X509_check_ip_asc(coord, "127.0.0.1", 0), 1);
    CHECK_EQ_INT(X509_check_ip_asc(coord, "10.0.0.5", 0), 1);
    CHECK_EQ_INT(X509_check_ip_asc(coord, "::1", 0), 1);
    CHECK(X509_check_ip_asc(coord, "10.0.0.6", 0) != 1);
    CHECK_EQ_INT(X509_check_purpose(coord, X509_PURPOSE_SSL_SERVER, 0), 1);
    CHECK_EQ_INT(X509_check_ca(coord), 0);
    X509_free(coord);
  }
  CHECK_EQ_INT(identity_of(P("a", "coordinator.crt"), fed, role, name), FEDC_OK);
  CHECK(strcmp(fed, "fed-a.example") == 0 && strcmp(role, "coordinator") == 0 && strcmp(name, "coordinator") == 0);
  CHECK_EQ_INT(fc_pki_verify(P("a", "ca.crt"), P("a", "coordinator.crt"), err, sizeof err), FEDC_OK);

  /* Client and admin. */
  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "client", "alice", NULL, 30, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "admin", "bob_01", NULL, 30, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(file_mode(P("a", "client-alice.key")), 0600);
  CHECK_EQ_INT(file_mode(P("a", "admin-bob_01.key")), 0600);
  CHECK_EQ_INT(fc_pki_verify(P("a", "ca.crt"), P("a", "client-alice.crt"), err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_verify(P("a", "ca.crt"), P("a", "admin-bob_01.crt"), err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(identity_of(P("a", "client-alice.crt"), fed, role, name), FEDC_OK);
  CHECK(strcmp(fed, "fed-a.example") == 0 && strcmp(role, "client") == 0 && strcmp(name, "alice") == 0);
  CHECK_EQ_INT(identity_of(P("a", "admin-bob_01.crt"), fed, role, name), FEDC_OK);
  CHECK(strcmp(fed, "fed-a.example") == 0 && strcmp(role, "admin") == 0 && strcmp(name, "bob_01") == 0);

  X509 *alice = load_cert(P("a", "client-alice.crt"));
  X509 *bob = load_cert(P("a", "admin-bob_01.crt"));
  CHECK(alice && bob);
  if (alice && bob) {
    /* A client certificate authenticates a client and nothing else. */
    CHECK_EQ_INT(X509_check_purpose(alice, X509_PURPOSE_SSL_CLIENT, 0), 1);
    CHECK(X509_check_purpose(alice, X509_PURPOSE_SSL_SERVER, 0) != 1);
    CHECK(X509_check_host(alice, "localhost", 0, 0, NULL) != 1);
    char cn[128] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(alice), NID_commonName, cn, sizeof cn);
    CHECK(strcmp(cn, "alice") == 0);
    /* Serials: distinct, positive, at most 159 bits, and not short by accident. */
    const ASN1_INTEGER *sa = X509_get0_serialNumber(alice), *sb = X509_get0_serialNumber(bob);
    CHECK(ASN1_INTEGER_cmp(sa, sb) != 0);
    BIGNUM *bn = ASN1_INTEGER_to_BN(sa, NULL);
    CHECK(bn && !BN_is_negative(bn) && BN_num_bits(bn) <= 159 && BN_num_bits(bn) >= 144);
    BN_free(bn);
    /* Validity: backdated for skew, 30 days ahead. */
    time_t now = time(NULL);
    int pday = 0, psec = 0;
    CHECK(ASN1_TIME_diff(&pday, &psec, NULL, X509_get0_notBefore(alice)) == 1);
    CHECK(pday == 0 && psec <= -FC_PKI_SKEW_SEC + 5 && psec >= -FC_PKI_SKEW_SEC - 60);
    time_t na = 0;
    int expired = -1;
    CHECK_EQ_INT(fc_pki_cert_expiry(P("a", "client-alice.crt"), &na, &expired), FEDC_OK);
    CHECK_EQ_INT(expired, 0);
    CHECK(na >= now + 30 * 86400 - 60 && na <= now + 30 * 86400 + 60);
  }
  X509_free(alice);
  X509_free(bob);

  /* An aggregator (issue 23): its own role, a TLS server to clients (host
   * SANs as a coordinator) and a TLS client of the leader. */
  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "aggregator", "agg1", NULL, 30, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_verify(P("a", "ca.crt"), P("a", "aggregator-agg1.crt"), err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(identity_of(P("a", "aggregator-agg1.crt"), fed, role, name), FEDC_OK);
  CHECK(strcmp(fed, "fed-a.example") == 0 && strcmp(role, "aggregator") == 0 && strcmp(name, "agg1") == 0);
  X509 *agg = load_cert(P("a", "aggregator-agg1.crt"));
  CHECK(agg != NULL);
  if (agg) {
    CHECK_EQ_INT(X509_check_purpose(agg, X509_PURPOSE_SSL_SERVER, 0), 1);
    CHECK_EQ_INT(X509_check_purpose(agg, X509_PURPOSE_SSL_CLIENT, 0), 1);
    CHECK_EQ_INT(X509_check_host(agg, "localhost", 0, 0, NULL), 1);
  }
  X509_free(agg);
  CHECK(mtls_handshake(P("a", "ca.crt"), P("a", "aggregator-agg1.crt"), P("a", "aggregator-agg1.key"),
                       P("a", "ca.crt"), P("a", "client-alice.crt"), P("a", "client-alice.key"), id0, sizeof id0));
  CHECK(strcmp(id0, "fed-a.example/client/alice") == 0);

  /* The certificates actually work for mutual TLS. */
  char id[256] = "";
  CHECK(mtls_handshake(P("a", "ca.crt"), P("a", "coordinator.crt"), P("a", "coordinator.key"), P("a", "ca.crt"),
                       P("a", "client-alice.crt"), P("a", "client-alice.key"), id, sizeof id));
  CHECK(strcmp(id, "fed-a.example/client/alice") == 0);
}

static void test_refuses_overwrite(void) {
  char err[512] = "";
  size_t klen = 0, clen = 0;
  char *key_before = slurp(P("a", "ca.key"), &klen);
  char *crt_before = slurp(P("a", "ca.crt"), &clen);
  CHECK(key_before && crt_before);
  CHECK_EQ_INT(fc_pki_init(P("a", NULL), "fed-a.example", NULL, 0, 30, NULL, err, sizeof err), FEDC_ERR_EXISTS);
  CHECK(strstr(err, "ca.key") != NULL); /* the message names the file */
  if (key_before) CHECK(same_file(P("a", "ca.key"), key_before, klen));
  if (crt_before) CHECK(same_file(P("a", "ca.crt"), crt_before, clen));
  free(key_before);
  free(crt_before);

  /* A single stray target file is enough to refuse, and nothing is created. */
  mkdir(P("partial", NULL), 0700);
  CHECK(fc_write_file_atomic(P("partial", "coordinator.crt"), "x", 1, 0644, 1) == FEDC_OK);
  CHECK_EQ_INT(fc_pki_init(P("partial", NULL), "fed-p", NULL, 0, 30, NULL, err, sizeof err), FEDC_ERR_EXISTS);
  CHECK(strstr(err, "coordinator.crt") != NULL);
  CHECK(!exists(P("partial", "ca.key")) && !exists(P("partial", "ca.crt")));
  CHECK(same_file(P("partial", "coordinator.crt"), "x", 1));

  /* Issuing the same identity twice fails and keeps the first certificate. */
  size_t alen = 0;
  char *alice = slurp(P("a", "client-alice.crt"), &alen);
  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "client", "alice", NULL, 30, err, sizeof err), FEDC_ERR_EXISTS);
  CHECK(strstr(err, "client-alice") != NULL);
  if (alice) CHECK(same_file(P("a", "client-alice.crt"), alice, alen));
  free(alice);
}

static void test_out_dir(void) {
  char err[512] = "";
  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "client", "carol", P("out", NULL), 10, err, sizeof err), FEDC_OK);
  CHECK(exists(P("out", "client-carol.key")) && exists(P("out", "client-carol.crt")));
  CHECK(!exists(P("a", "client-carol.crt")));
  CHECK_EQ_INT(file_mode(P("out", NULL)), 0700);
  CHECK_EQ_INT(file_mode(P("out", "client-carol.key")), 0600);
  CHECK_EQ_INT(fc_pki_verify(P("a", "ca.crt"), P("out", "client-carol.crt"), err, sizeof err), FEDC_OK);

  /* An issued coordinator certificate gets host SANs and serverAuth too. */
  fc_pki_issue_opts o;
  fc_pki_issue_opts_init(&o);
  const char *sans[] = {"192.168.1.9", "coord2.internal"};
  char ca_dir[512], out_dir[512];
  o.ca_dir = P_keep(ca_dir, sizeof ca_dir, "a");
  o.out_dir = P_keep(out_dir, sizeof out_dir, "out");
  o.role = "coordinator";
  o.name = "coord2";
  o.sans = sans;
  o.nsans = 2;
  CHECK_EQ_INT(fc_pki_issue_ex(&o, err, sizeof err), FEDC_OK);
  X509 *c2 = load_cert(P("out", "coordinator-coord2.crt"));
  CHECK(c2 != NULL);
  if (c2) {
    CHECK_EQ_INT(X509_check_host(c2, "coord2.internal", 0, 0, NULL), 1);
    CHECK_EQ_INT(X509_check_ip_asc(c2, "192.168.1.9", 0), 1);
    CHECK_EQ_INT(X509_check_purpose(c2, X509_PURPOSE_SSL_SERVER, 0), 1);
    CHECK_EQ_INT(X509_check_purpose(c2, X509_PURPOSE_SSL_CLIENT, 0), 1);
    X509_free(c2);
  }
  /* SANs on a client certificate are refused. */
  o.role = "client";
  o.name = "dave";
  CHECK_EQ_INT(fc_pki_issue_ex(&o, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(!exists(P("out", "client-dave.key")));
}

static void test_foreign_and_expired(void) {
  char err[512] = "";
  /* A second federation's CA and client. */
  CHECK_EQ_INT(fc_pki_init(P("b", NULL), "fed-b", NULL, 0, 30, "ec", err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(P("b", NULL), "client", "mallory", NULL, 30, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_verify(P("b", "ca.crt"), P("b", "client-mallory.crt"), err, sizeof err), FEDC_OK);
  err[0] = '\0';
  CHECK_EQ_INT(fc_pki_verify(P("a", "ca.crt"), P("b", "client-mallory.crt"), err, sizeof err), FEDC_ERR_TLS);
  CHECK(strstr(err, "unable to get local issuer certificate") != NULL);
  CHECK_EQ_INT(fc_pki_verify(P("a", "ca.crt"), P("b", "coordinator.crt"), err, sizeof err), FEDC_ERR_TLS);
  /* ... and the coordinator of federation A refuses it in a handshake. */
  char id[256] = "";
  CHECK(!mtls_handshake(P("a", "ca.crt"), P("a", "coordinator.crt"), P("a", "coordinator.key"), P("b", "ca.crt"),
                        P("b", "client-mallory.crt"), P("b", "client-mallory.key"), id, sizeof id));

  /* Already expired (via the test hook) and not yet valid. */
  fc_pki_issue_opts o;
  fc_pki_issue_opts_init(&o);
  char ca_dir[512];
  o.ca_dir = P_keep(ca_dir, sizeof ca_dir, "a");
  o.role = "client";
  o.name = "expired";
  o.not_before_offset_sec = -2 * 86400L;
  o.not_after_offset_sec = -86400L;
  CHECK_EQ_INT(fc_pki_issue_ex(&o, err, sizeof err), FEDC_OK);
  err[0] = '\0';
  CHECK_EQ_INT(fc_pki_verify(P("a", "ca.crt"), P("a", "client-expired.crt"), err, sizeof err),
               FEDC_ERR_CERT_EXPIRED);
  CHECK(strstr(err, "certificate has expired") != NULL);
  time_t na = 0, now = time(NULL);
  int expired = -1;
  CHECK_EQ_INT(fc_pki_cert_expiry(P("a", "client-expired.crt"), &na, &expired), FEDC_OK);
  CHECK_EQ_INT(expired, 1);
  CHECK(na <= now - 86400 + 60 && na >= now - 86400 - 60);

  o.name = "future";
  o.not_before_offset_sec = 86400L;
  o.not_after_offset_sec = 2 * 86400L;
  CHECK_EQ_INT(fc_pki_issue_ex(&o, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_verify(P("a", "ca.crt"), P("a", "client-future.crt"), err, sizeof err),
               FEDC_ERR_CERT_EXPIRED);

  o.name = "empty";
  o.not_before_offset_sec = 10;
  o.not_after_offset_sec = 10;
  CHECK_EQ_INT(fc_pki_issue_ex(&o, err, sizeof err), FEDC_ERR_INVALID);

  /* A leaf never outlives its CA (30 days here): it is clamped to the CA's end. */
  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "client", "longlived", NULL, 400, err, sizeof err), FEDC_OK);
  time_t ca_end = 0, leaf_end = 0;
  CHECK_EQ_INT(fc_pki_cert_expiry(P("a", "ca.crt"), &ca_end, &expired), FEDC_OK);
  CHECK_EQ_INT(fc_pki_cert_expiry(P("a", "client-longlived.crt"), &leaf_end, &expired), FEDC_OK);
  CHECK(ca_end > now && leaf_end == ca_end);
  o.name = "late";
  o.not_before_offset_sec = 40 * 86400L;
  o.not_after_offset_sec = 41 * 86400L;
  CHECK_EQ_INT(fc_pki_issue_ex(&o, err, sizeof err), FEDC_ERR_CERT_EXPIRED);

  /* Missing files. */
  CHECK_EQ_INT(fc_pki_verify(P("a", "ca.crt"), P("a", "nope.crt"), err, sizeof err), FEDC_ERR_NOT_FOUND);
  CHECK_EQ_INT(fc_pki_verify(P("a", "federation"), P("a", "client-alice.crt"), err, sizeof err), FEDC_ERR_FORMAT);
  CHECK_EQ_INT(fc_pki_issue(P("nope", NULL), "client", "x", NULL, 30, err, sizeof err), FEDC_ERR_NOT_FOUND);
  /* A CA key that does not match the CA certificate is refused. */
  mkdir(P("mixed", NULL), 0700);
  size_t n = 0;
  char *pem = slurp(P("a", "ca.crt"), &n);
  CHECK(pem && fc_write_file_atomic(P("mixed", "ca.crt"), pem, n, 0644, 1) == FEDC_OK);
  free(pem);
  pem = slurp(P("b", "ca.key"), &n);
  CHECK(pem && fc_write_file_atomic(P("mixed", "ca.key"), pem, n, 0600, 1) == FEDC_OK);
  free(pem);
  CHECK_EQ_INT(fc_pki_issue(P("mixed", NULL), "client", "x", NULL, 30, err, sizeof err), FEDC_ERR_CRYPTO);
  CHECK(!exists(P("mixed", "client-x.key")));
}

/* Review issue 6, item 10: a PKI directory another local user can write to
 * (or that another user owns) is refused, with its mode in the message, and
 * left as it was; nothing is written into it. */
static void test_refuses_open_dir(void) {
  char err[512] = "";
  const struct {
    const char *name;
    int mode;
    const char *shown;
  } open_dirs[] = {{"open777", 0777, "0777"}, {"open770", 0770, "0770"}, {"open1777", 01777, "1777"},
                   {"open707", 0707, "0707"}};
  for (size_t i = 0; i < sizeof open_dirs / sizeof open_dirs[0]; i++) {
    const char *d = P(open_dirs[i].name, NULL);
    CHECK(mkdir(d, 0700) == 0 && chmod(d, (mode_t)open_dirs[i].mode) == 0);
    err[0] = '\0';
    CHECK_EQ_INT(fc_pki_init(d, "fed-o", NULL, 0, 30, NULL, err, sizeof err), FEDC_ERR_INVALID);
    if (!strstr(err, open_dirs[i].shown)) fprintf(stderr, "  %s: %s\n", open_dirs[i].name, err);
    CHECK(strstr(err, d) != NULL);
    CHECK(strstr(err, open_dirs[i].shown) != NULL);
    CHECK(strstr(err, "chmod 700") != NULL);
    CHECK(strchr(err, '\n') == NULL);
    CHECK(!exists(P(open_dirs[i].name, "ca.key")) && !exists(P(open_dirs[i].name, "ca.crt")));
    CHECK_EQ_INT(file_mode(P(open_dirs[i].name, NULL)), open_dirs[i].mode); /* not silently changed */
  }
  /* issue --out into such a directory is refused the same way. */
  err[0] = '\0';
  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "client", "olive", P("open777", NULL), 30, err, sizeof err),
               FEDC_ERR_INVALID);
  CHECK(strstr(err, "0777") != NULL);
  CHECK(!exists(P("open777", "client-olive.key")));

  /* Controls: an existing directory only we can write to is fine. */
  CHECK(mkdir(P("mine755", NULL), 0700) == 0 && chmod(P("mine755", NULL), 0755) == 0);
  CHECK_EQ_INT(fc_pki_init(P("mine755", NULL), "fed-m", NULL, 0, 30, NULL, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(file_mode(P("mine755", NULL)), 0755);

  /* Owned by another user (only root can make one to test with). */
  if (geteuid() == 0) {
    const char *d = P("theirs", NULL);
    CHECK(mkdir(d, 0700) == 0 && chown(d, 65534, 65534) == 0);
    err[0] = '\0';
    CHECK_EQ_INT(fc_pki_init(d, "fed-t", NULL, 0, 30, NULL, err, sizeof err), FEDC_ERR_INVALID);
    CHECK(strstr(err, d) != NULL && strstr(err, "uid 65534") != NULL);
    CHECK(!exists(P("theirs", "ca.key")));
  } else {
    fprintf(stderr, "  (not root: the owned-by-another-user case is not tested)\n");
  }
}

static void test_invalid_arguments(void) {
  char err[512] = "";
  CHECK_EQ_INT(fc_pki_init(P("bad", NULL), "Fed_A", NULL, 0, 30, NULL, err, sizeof err), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_pki_init(P("bad", NULL), "", NULL, 0, 30, NULL, err, sizeof err), FEDC_ERR_INVALID);
  char long_fed[70];
  memset(long_fed, 'a', 64);
  long_fed[64] = '\0';
  CHECK_EQ_INT(fc_pki_init(P("bad", NULL), long_fed, NULL, 0, 30, NULL, err, sizeof err), FEDC_ERR_INVALID);
  long_fed[63] = '\0';
  CHECK(fc_pki_federation_ok(long_fed));
  CHECK_EQ_INT(fc_pki_init(P("bad", NULL), "fed", NULL, 0, 0, NULL, err, sizeof err), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_pki_init(P("bad", NULL), "fed", NULL, 0, 30, "rsa", err, sizeof err), FEDC_ERR_INVALID);
  const char *bad_san[] = {"bad host!"};
  CHECK_EQ_INT(fc_pki_init(P("bad", NULL), "fed", bad_san, 1, 30, NULL, err, sizeof err), FEDC_ERR_INVALID);
  const char *inject[] = {"a.example,IP:1.2.3.4"};
  CHECK_EQ_INT(fc_pki_init(P("bad", NULL), "fed", inject, 1, 30, NULL, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(!exists(P("bad", NULL))); /* validation happens before anything is created */

  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "root", "x", NULL, 30, err, sizeof err), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "client", "a b", NULL, 30, err, sizeof err), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "client", "../x", NULL, 30, err, sizeof err), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "client", "..", NULL, 30, err, sizeof err), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "client", "zero", NULL, 0, err, sizeof err), FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_pki_issue(P("a", NULL), "client", "neg", NULL, -5, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(!exists(P("a", "client-zero.crt")) && !exists(P("a", "client-neg.crt")));
}

static void test_spiffe_parser(void) {
  char fed[FC_PKI_FEDERATION_MAX] = "", role[FC_PKI_ROLE_MAX] = "", name[FC_PKI_NAME_MAX] = "";
  CHECK_EQ_INT(fc_pki_identity_from_spiffe("spiffe://fed.example/admin/ops-1.x_Y", fed, sizeof fed, role,
                                           sizeof role, name, sizeof name),
               FEDC_OK);
  CHECK(strcmp(fed, "fed.example") == 0 && strcmp(role, "admin") == 0 && strcmp(name, "ops-1.x_Y") == 0);

  char name64[100] = "spiffe://f/client/";
  size_t base = strlen(name64);
  memset(name64 + base, 'n', 64);
  name64[base + 64] = '\0';
  CHECK_EQ_INT(fc_pki_identity_from_spiffe(name64, fed, sizeof fed, role, sizeof role, name, sizeof name), FEDC_OK);
  CHECK_EQ_INT(strlen(name), 64);
  name64[base + 64] = 'n';
  name64[base + 65] = '\0';

  const char *bad[] = {
      "spiffe://fed/client",     "http://fed/client/x",   "spiffe://fed/root/x",   "spiffe://fed/client/a/b",
      "spiffe://fed/client/a b", "spiffe://fed/client/",  "spiffe:///client/x",    "SPIFFE://fed/client/x",
      "spiffe://Fed/client/x",   "spiffe://fed/client/x/", "spiffe://fed/client/..", "spiffe://fed/client/x?y",
      "spiffe://fed//client/x",  "spiffe:/fed/client/x",  "spiffe://fed/Client/x", " spiffe://fed/client/x",
      "spiffe://fed/client/x\n", "",                      name64,                  "spiffe://fed:443/client/x",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    strcpy(fed, "untouched");
    int rc = fc_pki_identity_from_spiffe(bad[i], fed, sizeof fed, role, sizeof role, name, sizeof name);
    if (rc != FEDC_ERR_INVALID) fprintf(stderr, "accepted bad SPIFFE ID \"%s\"\n", bad[i]);
    CHECK_EQ_INT(rc, FEDC_ERR_INVALID);
    CHECK(strcmp(fed, "untouched") == 0); /* outputs only written on success */
  }
  CHECK_EQ_INT(fc_pki_identity_from_spiffe(NULL, fed, sizeof fed, role, sizeof role, name, sizeof name),
               FEDC_ERR_INVALID);
  /* Output buffers too small. */
  char tiny[4] = "abc";
  CHECK_EQ_INT(fc_pki_identity_from_spiffe("spiffe://fed/client/alice", fed, sizeof fed, role, sizeof role, tiny,
                                           sizeof tiny),
               FEDC_ERR_TOO_LARGE);
  CHECK(strcmp(tiny, "abc") == 0);
  /* Not a certificate. */
  CHECK_EQ_INT(fc_pki_identity_from_pem("hello", 5, fed, sizeof fed, role, sizeof role, name, sizeof name),
               FEDC_ERR_FORMAT);
}

/* A throwaway self-signed certificate whose SAN extension holds exactly the
 * given typed names (GEN_URI, GEN_DNS, GEN_EMAIL); nsans 0 = no SAN
 * extension at all. Only the SANs matter to fc_pki_cert_spiffe_uri. */
typedef struct test_san {
  int type;
  const char *value;
} test_san;

static X509 *cert_with_sans(const test_san *sans, size_t nsans) {
  EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *x = X509_new();
  GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
  int ok = key && x && gens && X509_set_version(x, X509_VERSION_3) == 1 &&
           ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1 && X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
           X509_gmtime_adj(X509_getm_notAfter(x), 3600) &&
           X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8, (const unsigned char *)"t", -1,
                                      -1, 0) == 1 &&
           X509_set_issuer_name(x, X509_get_subject_name(x)) == 1 && X509_set_pubkey(x, key) == 1;
  for (size_t i = 0; ok && i < nsans; i++) {
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    ok = g && s && ASN1_STRING_set(s, sans[i].value, -1) == 1;
    if (ok) {
      GENERAL_NAME_set0_value(g, sans[i].type, s);
      s = NULL;
      ok = sk_GENERAL_NAME_push(gens, g) > 0;
      if (ok) g = NULL;
    }
    GENERAL_NAME_free(g);
    ASN1_IA5STRING_free(s);
  }
  if (ok && nsans) ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_APPEND) == 1;
  if (ok) ok = X509_sign(x, key, EVP_sha256()) > 0;
  GENERAL_NAMES_free(gens);
  EVP_PKEY_free(key);
  if (!ok) {
    X509_free(x);
    return NULL;
  }
  return x;
}

/* fc_pki_cert_spiffe_uri on a certificate with these SANs; *uri gets the result. */
static int spiffe_uri_of(const test_san *sans, size_t nsans, char *uri, size_t urilen) {
  X509 *x = cert_with_sans(sans, nsans);
  CHECK(x != NULL);
  if (!x) return -1;
  int rc = fc_pki_cert_spiffe_uri(x, uri, urilen);
  X509_free(x);
  return rc;
}

/* The identity rule shared with transport/server.c (review issue 6, item 3). */
static void test_cert_spiffe_uri(void) {
  char uri[FC_PKI_URI_MAX];
  const struct {
    const char *what;
    test_san sans[3];
    size_t nsans;
  } refused[] = {
      {"no SAN extension", {{0, NULL}}, 0},
      {"spiffe ID only in a DNS SAN", {{GEN_DNS, "spiffe://demo/admin/mallory"}}, 1},
      {"spiffe ID only in an e-mail SAN", {{GEN_EMAIL, "spiffe://demo/admin/mallory"}}, 1},
      {"DNS spiffe ID beside an unrelated URI",
       {{GEN_URI, "https://example.org/"}, {GEN_DNS, "spiffe://demo/admin/m"}},
       2},
      {"upper-case scheme beside a lower-case one",
       {{GEN_URI, "SPIFFE://demo/admin/alice"}, {GEN_URI, "spiffe://demo/client/zz"}},
       2},
      {"mixed-case scheme beside a lower-case one",
       {{GEN_URI, "spiffe://demo/client/zz"}, {GEN_URI, "Spiffe://demo/admin/alice"}},
       2},
      {"two lower-case spiffe URIs", {{GEN_URI, "spiffe://demo/client/a"}, {GEN_URI, "spiffe://demo/client/b"}}, 2},
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    strcpy(uri, "untouched");
    int rc = spiffe_uri_of(refused[i].sans, refused[i].nsans, uri, sizeof uri);
    if (rc != FEDC_ERR_INVALID) fprintf(stderr, "  accepted: %s (%s)\n", refused[i].what, uri);
    CHECK_EQ_INT(rc, FEDC_ERR_INVALID);
    CHECK(strcmp(uri, "untouched") == 0); /* written only on success */
  }

  /* One good URI, also among DNS/e-mail SANs and a non-spiffe URI. */
  const test_san good[] = {{GEN_URI, "spiffe://demo/client/dev1"}};
  CHECK_EQ_INT(spiffe_uri_of(good, 1, uri, sizeof uri), FEDC_OK);
  CHECK(strcmp(uri, "spiffe://demo/client/dev1") == 0);
  const test_san mixed[] = {{GEN_DNS, "spiffe://demo/admin/mallory"},
                            {GEN_URI, "spiffe://demo/client/dev2"},
                            {GEN_URI, "https://x.example/"}};
  CHECK_EQ_INT(spiffe_uri_of(mixed, 3, uri, sizeof uri), FEDC_OK);
  CHECK(strcmp(uri, "spiffe://demo/client/dev2") == 0);

  /* A lone upper-case scheme is found (it is a spiffe URI) but is no valid ID. */
  const test_san upper[] = {{GEN_URI, "SPIFFE://demo/admin/alice"}};
  CHECK_EQ_INT(spiffe_uri_of(upper, 1, uri, sizeof uri), FEDC_OK);
  char fed[FC_PKI_FEDERATION_MAX], role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX];
  CHECK_EQ_INT(fc_pki_identity_from_spiffe(uri, fed, sizeof fed, role, sizeof role, name, sizeof name),
               FEDC_ERR_INVALID);

  /* Output too small: TOO_LARGE, untouched. */
  char small[10] = "untouched";
  CHECK_EQ_INT(spiffe_uri_of(good, 1, small, sizeof small), FEDC_ERR_TOO_LARGE);
  CHECK(strcmp(small, "untouched") == 0);

  /* What fc_pki_issue writes passes the same rule. */
  X509 *alice = load_cert(P("a", "client-alice.crt"));
  CHECK(alice != NULL);
  if (alice) {
    CHECK_EQ_INT(fc_pki_cert_spiffe_uri(alice, uri, sizeof uri), FEDC_OK);
    CHECK(strcmp(uri, "spiffe://fed-a.example/client/alice") == 0);
    X509_free(alice);
  }
}

static void test_ed25519(void) {
  char err[512] = "";
  CHECK_EQ_INT(fc_pki_init(P("ed", NULL), "fed-ed", NULL, 0, 7, "ed25519", err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_issue(P("ed", NULL), "client", "edwin", NULL, 7, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_verify(P("ed", "ca.crt"), P("ed", "client-edwin.crt"), err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_pki_verify(P("ed", "ca.crt"), P("ed", "coordinator.crt"), err, sizeof err), FEDC_OK);
  X509 *ca = load_cert(P("ed", "ca.crt"));
  X509 *leaf = load_cert(P("ed", "client-edwin.crt"));
  CHECK(ca && leaf);
  if (ca && leaf) {
    CHECK(EVP_PKEY_is_a(X509_get0_pubkey(ca), "ED25519"));
    CHECK(EVP_PKEY_is_a(X509_get0_pubkey(leaf), "ED25519")); /* same type as the CA by default */
  }
  X509_free(ca);
  X509_free(leaf);
  char fed[FC_PKI_FEDERATION_MAX], role[FC_PKI_ROLE_MAX], name[FC_PKI_NAME_MAX];
  CHECK_EQ_INT(identity_of(P("ed", "client-edwin.crt"), fed, role, name), FEDC_OK);
  CHECK(strcmp(fed, "fed-ed") == 0 && strcmp(role, "client") == 0 && strcmp(name, "edwin") == 0);

  /* An EC leaf under the Ed25519 CA, on request. */
  fc_pki_issue_opts o;
  fc_pki_issue_opts_init(&o);
  char ca_dir[512];
  o.ca_dir = P_keep(ca_dir, sizeof ca_dir, "ed");
  o.role = "client";
  o.name = "ecclient";
  o.key_type = "ec";
  CHECK_EQ_INT(fc_pki_issue_ex(&o, err, sizeof err), FEDC_OK);
  leaf = load_cert(P("ed", "client-ecclient.crt"));
  CHECK(leaf && EVP_PKEY_is_a(X509_get0_pubkey(leaf), "EC"));
  X509_free(leaf);
  CHECK_EQ_INT(fc_pki_verify(P("ed", "ca.crt"), P("ed", "client-ecclient.crt"), err, sizeof err), FEDC_OK);

  char id[256] = "";
  CHECK(mtls_handshake(P("ed", "ca.crt"), P("ed", "coordinator.crt"), P("ed", "coordinator.key"), P("ed", "ca.crt"),
                       P("ed", "client-edwin.crt"), P("ed", "client-edwin.key"), id, sizeof id));
  CHECK(strcmp(id, "fed-ed/client/edwin") == 0);
}

int main(void) {
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return 1;
  }
  test_init_and_issue();
  test_refuses_overwrite();
  test_out_dir();
  test_foreign_and_expired();
  test_refuses_open_dir();
  test_invalid_arguments();
  test_spiffe_parser();
  test_cert_spiffe_uri();
  test_ed25519();
  if (!check_failed) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  } else {
    fprintf(stderr, "files kept in %s\n", root);
  }
  return CHECK_DONE();
}
