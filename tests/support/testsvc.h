/*
 * testsvc.h - a tiny service on transport/ for tests and benchmarks only
 * (never registered by the coordinator), plus a throwaway PKI and helpers to
 * start a server and open channels over real mutual TLS on 127.0.0.1.
 *
 *   | path                    | kind          | role   | max_recv            | request -> response                        |
 *   |-------------------------|---------------|--------|---------------------|--------------------------------------------|
 *   | /fedc.v1.Test/Echo      | unary         | client | 1024                | CheckInRequest -> CheckInResponse          |
 *   |                         |               |        |                     |   retry_after_ms = (uint32)num_examples    |
 *   | /fedc.v1.Test/AdminEcho | unary         | admin  | 1024                | same as Echo                               |
 *   | /fedc.v1.Test/Sink      | client stream | client | FC_CHUNK_MAX + 4096 | UploadMsg{header} UploadMsg{chunk}...      |
 *   |                         |               |        |                     |   -> UploadResponse{accepted, detail=hex   |
 *   |                         |               |        |                     |      SHA-256 of the payload}               |
 *   | /fedc.v1.Test/Source    | server stream | client | 1024                | FetchModelRequest{version = bytes wanted}  |
 *   |                         |               |        |                     |   -> TensorStreamMsg{header} {chunk}...    |
 *
 *   | /fedc.v1.Test/Park     | unary (async) | client | 1024                | CheckInRequest -> CheckInResponse, parked  |
 *   |                         |               |        |                     |   (fc_scall_park) and answered by a thread |
 *   |                         |               |        |                     |   num_examples ms later (retry_after_ms;   |
 *   |                         |               |        |                     |   TS_PARK_GATED: when ts_park_gate(1))     |
 *
 * Sink checks the stream with common/chunk.h without keeping the payload (cap
 * 1 GiB) and maps a failed check to a status: HASH -> DATA_LOSS, TOO_LARGE ->
 * RESOURCE_EXHAUSTED, anything else -> INVALID_ARGUMENT.
 * Source sends ts_pattern() of version bytes (a multiple of 4, at most 1 GiB)
 * as one tensor "t" of shape [version/4] in 1 MiB chunks. Payloads are cached
 * per size (immutable once built, freed by ts_stop) so a benchmark times the
 * transport, not the generation and hashing of the payload.
 */
#ifndef FEDC_TESTS_TESTSVC_H
#define FEDC_TESTS_TESTSVC_H

#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

#define TS_ECHO "/fedc.v1.Test/Echo"
#define TS_ADMIN_ECHO "/fedc.v1.Test/AdminEcho"
#define TS_SINK "/fedc.v1.Test/Sink"
#define TS_SOURCE "/fedc.v1.Test/Source"
#define TS_PARK "/fedc.v1.Test/Park"
/* Park calls not finished yet (their threads still sleeping). */
int ts_parked_open(void);
/* num_examples of a Park call answered only once the gate is open. */
#define TS_PARK_GATED 999999u
void ts_park_gate(int open);

#define TS_SINK_MAX_TOTAL (1ull << 30)
#define TS_SOURCE_MAX (1ull << 30)
#define TS_SOURCE_CHUNK (1u << 20)

/*
 * Make a throwaway PKI in dir (created if missing; must not hold one yet):
 *   dir/            CA of federation "test", coordinator cert (localhost, 127.0.0.1),
 *                   client-alice.{crt,key}, admin-root.{crt,key}
 *   dir/other/      a second CA (federation "other") and client-mallory.{crt,key}
 *   dir/bundle.crt  both CA certificates: a client using it trusts our
 *                   coordinator and passes the local check with mallory's cert,
 *                   so the refusal comes from the server.
 * 0 or a fedc_err (message on stderr).
 */
int ts_pki(const char *dir);

/* Paths of a leaf issued by ts_pki: "<dir>/<role>-<name>.crt" / ".key". */
void ts_leaf(const char *dir, const char *role, const char *name, char *crt, size_t crtlen, char *key,
             size_t keylen);

/* The test service's method table (static storage). */
const fc_method *ts_methods(size_t *n);

/*
 * Start a server on 127.0.0.1:0 with ts_methods(), the coordinator cert of
 * pki_dir and federation "test". threads <= 0 uses 4. Calls
 * fc_transport_init() itself. NULL on failure (message on stderr).
 */
fc_server *ts_start(const char *pki_dir, int threads);
/* The same with the server's per-message idle timeout (<= 0: the default). */
fc_server *ts_start_ex(const char *pki_dir, int threads, int stream_idle_ms);
/* The same with every option of base (fc_server_opts_init'd) but the
 * address, TLS files, federation and methods, which are the test service's. */
fc_server *ts_start_with(const char *pki_dir, const fc_server_opts *base);
/* Shut down with grace_ms, destroy, fc_transport_shutdown(); the last server
 * to stop frees the cached payloads. */
void ts_stop(fc_server *s, int grace_ms);

/* Channel to 127.0.0.1:port with pki_dir's CA and <role>-<name> from pki_dir. NULL on failure. */
fc_channel *ts_channel(const char *pki_dir, int port, const char *role, const char *name);
/* The general form: any CA/cert/key files (cert/key may be NULL) and protocol
 * version (NULL = ours). Returns fc_channel_create's code; err gets its message. */
int ts_channel_ex(const char *ca, const char *cert, const char *key, int port, const char *protocol_version,
                  fc_channel **out, char *err, size_t errlen);

/*
 * Client side of Sink: stream bytes of payload (a one-tensor spec "t" of
 * shape [bytes/4]) as header + chunk_bytes chunks. sha NULL: computed here.
 * corrupt_chunk >= 0 flips one bit in that chunk (the header keeps the true
 * SHA-256). Returns the fedc_err; on FEDC_OK detail gets the reply's hex
 * SHA-256; st gets the status either way.
 */
int ts_sink_upload(fc_channel *ch, const void *payload, uint64_t bytes, const uint8_t *sha, uint32_t chunk_bytes,
                   int corrupt_chunk, char *detail, size_t dlen, fc_status *st);

/* The deterministic Source payload: dst[i] = (float)i * 0.5f. */
void ts_pattern(float *dst, size_t n);

/* Seconds on the monotonic clock. */
double ts_now(void);
/* A TCP socket bound to 127.0.0.1 on a free port (*port), listening if
 * listen_too (a peer that accepts and never answers), else closed again (a
 * port nothing listens on: returns -1 with *port set). -1, *port 0 on failure. */
int ts_loopback_socket(int listen_too, int *port);

#endif
