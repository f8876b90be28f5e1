/*
 * server_auth.c - who is calling and in which protocol: metadata lookup, the
 * strict "<major>[.<minor>]" protocol version, the caller's identity from the
 * verified certificate's SPIFFE ID (with a cache keyed by the certificate PEM).
 *
 * Owns: the identity cache (g_id_*, under g_id_mu; process-wide, bounded).
 * May call: crypto/pki.c (fc_pki_cert_spiffe_uri, fc_pki_identity_from_spiffe),
 * OpenSSL and gRPC's auth context; nothing else of the server (server_event.c
 * calls it from start_call, on an event thread).
 */
#include <grpc/grpc_security.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/pki.h"

#include "common/log.h"
#include "fedc/error.h"
#include "transport/server_int.h"
#include "transport/transport.h"
#include "transport/transport_int.h"

#define MOD "transport"

/* Copy the value of metadata `key` into out[outlen] (NUL-terminated). 1 if
 * found, 0 if absent, -1 if the value does not fit (nothing is truncated: a
 * cut value could read as a different, valid one). */
int srv_md_get(const grpc_metadata_array *md, const char *key, char *out, size_t outlen) {
  for (size_t i = 0; i < md->count; i++) {
    const grpc_slice *k = &md->metadata[i].key;
    if (GRPC_SLICE_LENGTH(*k) == strlen(key) && memcmp(GRPC_SLICE_START_PTR(*k), key, strlen(key)) == 0) {
      size_t n = GRPC_SLICE_LENGTH(md->metadata[i].value);
      if (n >= outlen) return -1;
      memcpy(out, GRPC_SLICE_START_PTR(md->metadata[i].value), n);
      out[n] = 0;
      return 1;
    }
  }
  return 0;
}

/* The metadata value s made safe to quote in a status or log line: at most
 * dlen-1 bytes, anything but printable ASCII shown as '?'. */
void srv_printable(const char *s, char *dst, size_t dlen) {
  size_t i = 0;
  for (; s[i] && i + 1 < dlen; i++) dst[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
  dst[i] = '\0';
}

#define PROTOCOL_PART_DIGITS 6 /* "999999" is plenty for a version number */

/* One version part: 1..PROTOCOL_PART_DIGITS decimal digits. Returns the
 * character after it, or NULL. */
static const char *parse_version_part(const char *s, unsigned *out) {
  unsigned v = 0;
  int n = 0;
  while (s[n] >= '0' && s[n] <= '9') {
    if (n == PROTOCOL_PART_DIGITS) return NULL;
    v = v * 10 + (unsigned)(s[n] - '0');
    n++;
  }
  if (n == 0) return NULL;
  *out = v;
  return s + n;
}

/* Strict "<major>" or "<major>.<minor>", digits only: atoi would read
 * "1garbage" as 1 and "+1" or " 1" as 1 too. 0 ok, -1 malformed. */
int srv_parse_protocol_version(const char *s, unsigned *major, unsigned *minor) {
  unsigned maj = 0, min = 0;
  const char *p = parse_version_part(s, &maj);
  if (p && *p == '.') p = parse_version_part(p + 1, &min);
  if (!p || *p) return -1;
  *major = maj;
  *minor = min;
  return 0;
}

/* Largest peer certificate we parse; gRPC already verified it against the CA. */
#define PEER_CERT_PEM_MAX (64 * 1024)

/*
 * The peer's SPIFFE ID into uri[urilen], by the one rule of crypto/pki.c
 * (fc_pki_cert_spiffe_uri: only URI SANs, exactly one spiffe URI in any letter
 * case) applied to the leaf certificate gRPC verified and hands us as PEM.
 * gRPC's own peer_spiffe_id and SAN list are not used: the first compares the
 * scheme case-sensitively, so "SPIFFE://f/admin/a" beside
 * "spiffe://f/client/b" passed as b, and the second mixes DNS and e-mail SANs
 * in with the URIs. 0 ok, else -1 with a refusal text in why.
 */
/*
 * Identities already read, keyed by the exact certificate PEM: parsing a PEM
 * certificate with OpenSSL 3 (its decoder framework, provider locks) cost
 * more than the rest of a CheckIn together (28% of the coordinator's CPU in
 * libcrypto with 1,000 clients checking in), and every call of a connection
 * carries the same certificate. Only certificates that passed are cached; the
 * table is emptied when full (bounded memory, then it refills from use).
 */
#define ID_CACHE_BUCKETS 8192
#define ID_CACHE_MAX 65536

typedef struct id_entry {
  struct id_entry *next;
  uint64_t hash;
  size_t pem_len;
  char uri[FC_PKI_URI_MAX];
  uint8_t fp[32]; /* SHA-256 of the certificate (DER) */
  char pem[]; /* pem_len bytes */
} id_entry;

static pthread_mutex_t g_id_mu = PTHREAD_MUTEX_INITIALIZER;
static id_entry *g_id_buckets[ID_CACHE_BUCKETS];
static size_t g_id_count;

static uint64_t pem_hash(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a 64 */
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
  return h;
}

static int id_cache_get(const char *pem, size_t n, uint64_t h, char *uri, size_t urilen, uint8_t fp[32]) {
  int found = 0;
  pthread_mutex_lock(&g_id_mu);
  for (id_entry *e = g_id_buckets[h % ID_CACHE_BUCKETS]; e; e = e->next)
    if (e->hash == h && e->pem_len == n && memcmp(e->pem, pem, n) == 0) {
      snprintf(uri, urilen, "%s", e->uri);
      memcpy(fp, e->fp, 32);
      found = 1;
      break;
    }
  pthread_mutex_unlock(&g_id_mu);
  return found;
}

static void id_cache_clear_locked(void) {
  for (size_t b = 0; b < ID_CACHE_BUCKETS; b++)
    while (g_id_buckets[b]) {
      id_entry *e = g_id_buckets[b];
      g_id_buckets[b] = e->next;
      free(e);
    }
  g_id_count = 0;
}

static void id_cache_put(const char *pem, size_t n, uint64_t h, const char *uri, const uint8_t fp[32]) {
  id_entry *e = malloc(sizeof *e + n);
  if (!e) return;
  memcpy(e->fp, fp, 32);
  e->hash = h;
  e->pem_len = n;
  memcpy(e->pem, pem, n);
  snprintf(e->uri, sizeof e->uri, "%s", uri);
  pthread_mutex_lock(&g_id_mu);
  if (g_id_count >= ID_CACHE_MAX) id_cache_clear_locked();
  e->next = g_id_buckets[h % ID_CACHE_BUCKETS];
  g_id_buckets[h % ID_CACHE_BUCKETS] = e;
  g_id_count++;
  pthread_mutex_unlock(&g_id_mu);
}

static int peer_spiffe_uri(grpc_call *call, char *uri, size_t urilen, uint8_t fp[32], char *why, size_t whylen) {
  int rc = -1;
  X509 *cert = NULL;
  grpc_auth_context *ctx = grpc_call_auth_context(call);
  if (!ctx) {
    snprintf(why, whylen, "no authenticated peer");
    return -1;
  }
  grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
  const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
  if (!p || !p->value || p->value_length == 0 || p->value_length > PEER_CERT_PEM_MAX) {
    snprintf(why, whylen, "no client certificate in the TLS session");
    goto out;
  }
  uint64_t h = pem_hash(p->value, p->value_length);
  if (id_cache_get(p->value, p->value_length, h, uri, urilen, fp)) {
    rc = 0;
    goto out;
  }
  BIO *in = BIO_new_mem_buf(p->value, (int)p->value_length);
  if (in) cert = PEM_read_bio_X509(in, NULL, NULL, NULL);
  BIO_free(in);
  if (!cert) {
    ERR_clear_error();
    snprintf(why, whylen, "cannot parse the client certificate");
    goto out;
  }
  if (fc_pki_cert_spiffe_uri(cert, uri, urilen) != FEDC_OK) {
    snprintf(why, whylen,
             "client certificate carries no single spiffe://<federation>/<role>/<name> URI SAN "
             "(exactly one spiffe URI is required; DNS and e-mail SANs never name an identity)");
    goto out;
  }
  unsigned int fplen = 0;
  if (X509_digest(cert, EVP_sha256(), fp, &fplen) != 1 || fplen != 32) {
    ERR_clear_error();
    snprintf(why, whylen, "cannot fingerprint the client certificate");
    goto out;
  }
  id_cache_put(p->value, p->value_length, h, uri, fp);
  rc = 0;
out:
  X509_free(cert);
  grpc_auth_context_release(ctx);
  return rc;
}

/* Who is calling: from the verified certificate's SPIFFE ID (or, only on an
 * insecure loopback test server, from metadata). 0 ok, else a refusal text. */
int srv_authenticate(fc_scall *c, const grpc_metadata_array *md, char *why, size_t whylen) {
  char uri[FC_PKI_URI_MAX] = "";
  if (c->srv->opts.insecure_for_testing) {
    char id[160];
    if (srv_md_get(md, FC_INSECURE_IDENTITY_MD_KEY, id, sizeof id) != 1) {
      snprintf(why, whylen, "insecure test server: missing or overlong %s metadata", FC_INSECURE_IDENTITY_MD_KEY);
      return -1;
    }
    snprintf(uri, sizeof uri, "spiffe://%s/%s", c->srv->federation, id);
  } else if (peer_spiffe_uri(c->call, uri, sizeof uri, c->peer.cert_sha256, why, whylen) != 0) {
    return -1;
  }
  char role[32];
  if (fc_pki_identity_from_spiffe(uri, c->peer.federation, sizeof c->peer.federation, role, sizeof role,
                                  c->peer.name, sizeof c->peer.name) != FEDC_OK) {
    char shown[FC_PKI_URI_MAX];
    srv_printable(uri, shown, sizeof shown);
    snprintf(why, whylen, "malformed SPIFFE ID in client certificate: %.200s", shown);
    return -1;
  }
  c->peer.role = fc_role_parse(role);
  if (c->srv->federation[0] && strcmp(c->peer.federation, c->srv->federation) != 0) {
    snprintf(why, whylen, "certificate is for federation '%s', this coordinator serves '%s'", c->peer.federation,
             c->srv->federation);
    return -1;
  }
  return 0;
}
