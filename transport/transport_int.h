/*
 * transport_int.h - helpers shared by the files of transport/ only.
 */
#ifndef FEDC_TRANSPORT_INT_H
#define FEDC_TRANSPORT_INT_H

#include <grpc/grpc.h>
#include <grpc/support/time.h>
#include <protobuf-c/protobuf-c.h>
#include <stdatomic.h>
#include <stddef.h>

/* Monotonic deadline ms from now. */
gpr_timespec fc_deadline_ms(int ms);
/* Serialize a message into a new byte buffer (no copy of the packed bytes). NULL on OOM. */
grpc_byte_buffer *fc_pack_message(const ProtobufCMessage *msg);
/* Unpack a byte buffer into a message of desc, refusing one over cap bytes
 * or one that would unpack to more than ratio (0: 24) x its size + 64 KiB
 * (util.c). 0 ok, FEDC_ERR_TOO_LARGE, FEDC_ERR_PROTOCOL (malformed),
 * FEDC_ERR_NOMEM. */
int fc_unpack_message(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc, size_t cap, unsigned ratio,
                      ProtobufCMessage **out);
/* An integer channel argument. */
static inline grpc_arg fc_int_arg(const char *key, int value) {
  grpc_arg a;
  a.type = GRPC_ARG_INTEGER;
  a.key = (char *)key;
  a.value.integer = value;
  return a;
}

/* On this thread until called with NULL: gRPC's error lines go to debug and
 * the first OS reason among them ("Address already in use") into buf. Only
 * where fc_transport_route_grpc_logs routes gRPC's logs; buf stays "" else. */
void fc_grpc_log_capture(char *buf, size_t len);

/* Wipe secret bytes (OPENSSL_cleanse). */
#include "crypto/sa_crypto.h" /* fc_wipe */
/* Our TLS material as PEM text for gRPC's credentials. */
typedef struct fc_tls_pem {
  char *ca, *cert, *key;
  size_t key_len;
} fc_tls_pem;
/* Check the files (fc_tls_check_local), then read them (1 MiB cap each).
 * On failure nothing is left allocated and err says which file and why. */
int fc_tls_pem_load(const char *ca, const char *cert, const char *key, fc_tls_pem *out, char *err, size_t errlen);
/* Wipe the key, free all three; accepts a zeroed struct. */
void fc_tls_pem_free(fc_tls_pem *p);

/* Check our own TLS files before use: readable, certificate chains to the CA,
 * not expired, key matches certificate. One clear message in err. */
int fc_tls_check_local(const char *ca, const char *cert, const char *key, char *err, size_t errlen);

/* diagnose.c: probe target (TCP connect, then a TLS handshake with our own
 * files; plain TCP when insecure) and say in why[wl] what is wrong. FEDC_OK
 * if the path is healthy, else the error with one line in why. Called by
 * fc_status_explain (channel.c) on UNAVAILABLE only. */
int fc_diagnose_probe(const char *target, const char *ca, const char *cert, const char *key, int insecure, char *why,
                      size_t wl);

#endif
