/*
 * tls_count.h - TLS handshakes the coordinator's server side finished or
 * failed, for its metrics (an operator's first sign of an expired CA, a client
 * with the wrong certificate, or a scan).
 *
 * gRPC core reports neither to the application: a failed handshake closes the
 * connection inside its transport-security layer. So, as accept_guard.c does
 * for accept4(), the coordinator binary defines OpenSSL's SSL_do_handshake()
 * itself and calls the library's through dlsym(RTLD_NEXT): gRPC's call binds to
 * ours. Only server-side handshakes are counted; a result is counted once per
 * SSL (the handshake is driven in several calls, all but the last "want
 * read"). Linked only into programs that serve (fedc_coord), like the guard.
 */
#ifndef FEDC_TRANSPORT_TLS_COUNT_H
#define FEDC_TRANSPORT_TLS_COUNT_H

#include <stdint.h>

typedef struct fc_tls_counts {
  uint64_t ok;               /* handshakes completed */
  uint64_t failed_cert;      /* failed on the peer's certificate (absent, untrusted, expired...) */
  uint64_t failed_protocol;  /* failed otherwise (not TLS, no shared version or cipher, cut short) */
} fc_tls_counts;

/* Totals since the process started; 1 if the interposition is live (gRPC's
 * calls reach it), 0 if not (then the counts stay 0). */
int fc_tls_counts_get(fc_tls_counts *out);

#endif
