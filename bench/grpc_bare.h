/*
 * grpc_bare.h - the baseline of bench_transport: a bare gRPC C-core
 * streaming server and client, nothing of fedc in the path (no transport/,
 * no protobuf, no chunk checks, no hashing). Same mutual TLS as fedc (the
 * same certificate files, client certificate required and verified, TLS
 * 1.3 as negotiated by gRPC), same message size (one 1 MiB chunk plus the
 * few bytes of framing a TensorChunk message carries), gRPC's default
 * channel and server arguments except the receive limit.
 *
 *   upload:   client streaming, N messages of `msg` bytes, one small reply
 *   download: server streaming, one small request, N messages of `msg` bytes
 * The client ends each download with the bytes in one buffer of its own
 * (one copy out of gRPC's slices, as any receiver that keeps a model must);
 * the server drops uploaded messages unread.
 */
#ifndef FEDC_BENCH_GRPC_BARE_H
#define FEDC_BENCH_GRPC_BARE_H

#include <stddef.h>
#include <stdint.h>

typedef struct bare_server bare_server;
typedef struct bare_client bare_client;

/* PEM files: the CA, the server's certificate and key. NULL on failure. */
bare_server *bare_server_start(const char *ca, const char *cert, const char *key);
int bare_server_port(const bare_server *s);
void bare_server_stop(bare_server *s);

/* A channel to 127.0.0.1:port with a client certificate. NULL on failure. */
bare_client *bare_client_new(const char *ca, const char *cert, const char *key, int port);
void bare_client_free(bare_client *c);

/* Move `bytes` in messages of `msg` bytes (the last may be short). Seconds
 * from the call's start to its status, or < 0 on failure. */
double bare_upload(bare_client *c, const void *payload, uint64_t bytes, size_t msg);
double bare_download(bare_client *c, void *dst, uint64_t bytes, size_t msg);

#endif
