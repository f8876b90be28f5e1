/*
 * transport.h - fedc's thin layer over the gRPC C core: a mutual-TLS server
 * with per-method roles and receive limits, and a client channel with
 * deadlines and unary / client-streaming / server-streaming calls.
 *
 * Server shape: a few event threads wait for everything (new calls, each
 * message, each send's completion, idle deadlines) and run short handlers
 * inline; no thread is held while a peer is slow. A method is either
 *   - async (fc_method.async = 1): its handler runs on an event thread with the
 *     first message, must not block, and either finishes at once or hands the
 *     rest of the stream to callbacks (fc_scall_stream_in / _out), or
 *   - blocking (async = 0): its handler runs on a pool thread and may use the
 *     blocking fc_scall_recv / fc_scall_send; methods for the admin role have
 *     a pool of their own that no client call can occupy.
 * A per-message idle timeout (stream_idle_ms) cancels a call whose peer stops.
 *
 * Identity: the caller's role and name come from the SPIFFE URI SAN of the
 * verified client certificate (spiffe://<federation>/<role>/<name>), never from
 * anything the caller says. Methods declare the one role allowed to call them.
 *
 * Protocol version: every call carries metadata "fedc-protocol: MAJOR.MINOR";
 * a different MAJOR is FAILED_PRECONDITION before any handler runs.
 */
#ifndef FEDC_TRANSPORT_H
#define FEDC_TRANSPORT_H

#include <grpc/grpc.h>
#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#define FC_PROTOCOL_MAJOR 1
#define FC_PROTOCOL_MINOR 19 /* 1.1: StatusResponse.round_budget, storage_error; 1.2: secure aggregation;
                               1.3: UpdateMeta.unclipped (adaptive clipping); 1.4: signed model manifests;
                               1.5: SecAggParams.min_survivors (in the session id) and manifest format 2
                                    (the audit head); 1.6: Leave; 1.7: federated evaluation (EVALUATE
                                    tasks, ReportEval, CheckInRequest.can_evaluate);
                               1.8: eligibility, pace steering (CheckInRequest.device,
                                    CheckInResponse.not_eligible, StatusResponse.eligibility);
                               1.9: compressed uploads, narrow SecAgg ring (Task.upload_bits, UpdateMeta,
                                    SecAggParams ring fields, DTYPE_U8);
                               1.10: resumable transfers (TensorHeader.start_offset,
                                    FetchModelRequest.start_offset, UploadOffset);
                               1.11: anomaly scores, Clients admin view (RoundRecord.anomaly, Admin/Clients);
                               1.12: model drift (RoundRecord.drift, StatusResponse.pause_reason);
                               1.13: drift from federated evaluation (EvalParams.classes,
                                    EvalReport.class_counts, EvalRecord.class_counts, RoundDrift.source);
                                    admin views of the same release: StatusResponse.replica (etcd
                                    replicas), StatusResponse.async and RoundRecord.async (--mode async);
                               1.14: aggregator tier (Task.aggregator_address, aggregator_identity; the
                                    Aggregator service: AggregatorRound, SubmitPartial; role aggregator);
                                    admin views of the same release: ReplicaStatus.replicas, replicas_error,
                                    aggregator_tier, aggregators (fedc status: replicas and aggregator load);
                               1.15: reproducible partial sums (AggRoundResponse.fixed_frac_bits,
                                    PartialMeta.fixed_frac_bits: int64 sums in one U8 tensor);
                               1.16: secure aggregation through the aggregator tier
                                    (AggRoundResponse.masked, masked_entries, client_buckets, n_buckets;
                                    PartialMeta.masked, bucket); differential privacy through it
                                    (AggRoundResponse.uniform_weights, PartialUpdate.unclipped);
                               1.17: robust rules and anomaly policies through the tier: updates relayed
                                    whole (AggRoundResponse.relay, PartialMeta.relay), signed by their
                                    clients (UpdateMeta and PartialUpdate .signature, .certificate);
                               1.18: SecAggParams.keys_first (keys and shares while training);
                               1.19: LeaveRequest.round, TASK_FAILED (give one round's task up) */
#define FC_PROTOCOL_STR_(x) #x
#define FC_PROTOCOL_STR(x) FC_PROTOCOL_STR_(x)
/* What clients send: "<major>.<minor>" of this build, e.g. "1.2". */
#define FC_PROTOCOL_VERSION_STRING FC_PROTOCOL_STR(FC_PROTOCOL_MAJOR) "." FC_PROTOCOL_STR(FC_PROTOCOL_MINOR)
#define FC_PROTOCOL_MD_KEY "fedc-protocol"
/* Trailing metadata of a refusal that says when to try again (decimal ms). */
#define FC_RETRY_AFTER_MD_KEY "fedc-retry-after-ms"
/* Only honoured by servers started with insecure_for_testing on loopback. */
#define FC_INSECURE_IDENTITY_MD_KEY "fedc-insecure-identity"

/* FC_ROLE_AGGREGATOR (issue 23): an upload aggregator, calling only the
 * leader's Aggregator service and serving clients' uploads. */
enum fc_role { FC_ROLE_NONE = 0, FC_ROLE_CLIENT = 1, FC_ROLE_ADMIN = 2, FC_ROLE_COORDINATOR = 3, FC_ROLE_AGGREGATOR = 4 };
const char *fc_role_name(int role);
int fc_role_parse(const char *s); /* FC_ROLE_NONE if unknown */

typedef struct fc_peer {
  int role;
  char federation[64];
  char name[65];
  char addr[96]; /* "ipv4:127.0.0.1:12345" */
  unsigned proto_minor; /* the caller's fedc protocol minor version (same major) */
  uint8_t cert_sha256[32]; /* SHA-256 of its certificate (DER); zeros on an insecure test server */
} fc_peer;

typedef struct fc_tls_files {
  const char *ca;   /* PEM of the federation CA */
  const char *cert; /* our certificate */
  const char *key;  /* our private key */
} fc_tls_files;

/* Outcome of a call: a gRPC status plus our translation. */
typedef struct fc_status {
  int code;         /* grpc_status_code */
  int err;          /* fedc_err translation (FEDC_OK when code is OK) */
  char detail[512]; /* one line a person can act on */
  uint32_t retry_after_ms; /* > 0: the server asked us to wait this long before trying again */
} fc_status;

/* 1 if host part of "host:port" / "ipv4:..." / "[::1]:p" is a loopback address. */
int fc_addr_is_loopback(const char *addr);

/* ---- server ------------------------------------------------------------------ */

typedef enum fc_rpc_kind { FC_RPC_UNARY = 0, FC_RPC_CLIENT_STREAM = 1, FC_RPC_SERVER_STREAM = 2 } fc_rpc_kind;

typedef struct fc_scall fc_scall;
typedef void (*fc_handler)(fc_scall *call, void *ctx);

typedef struct fc_method {
  const char *path; /* "/fedc.v1.Coordinator/CheckIn" */
  fc_rpc_kind kind;
  int role;         /* the only role allowed */
  size_t max_recv;  /* largest serialized request message accepted */
  const ProtobufCMessageDescriptor *request;
  fc_handler handler; /* called with the first request message */
  void *ctx;
  int async;        /* 1: handler runs on an event thread and never blocks (see above) */
  unsigned unpack_ratio; /* a request's unpacked allocations at most 64 KiB + this x its bytes (0: 24, what
                            the sparsest message needs; transport/util.c) */
} fc_method;

typedef struct fc_server_opts {
  const char *addr;          /* "127.0.0.1:0" picks a free port */
  fc_tls_files tls;
  int insecure_for_testing;  /* refused unless addr is loopback */
  const char *federation;    /* callers must be of this federation */
  int threads;               /* event threads (default 2) */
  int blocking_threads;      /* pool for blocking methods (default 4); admin methods have 2 more of their own */
  int stream_idle_ms;        /* max wait for one message of a call (default 30000) */
  int keepalive_ms;          /* HTTP/2 pings to idle peers this often; 0 (default) = none: each ping timer costs
                                CPU per connection; the coordinator sets kernel TCP keepalive instead */
  int max_idle_ms;           /* close connections without calls this long; 0 (default) = never: the timer per
                                connection cost ~1.7% of a core at 15,000 clients (bench_clients) */
  int memory_quota_mib;      /* gRPC buffer memory quota (default 256) */
  int max_calls_per_peer;    /* concurrent calls one identity may hold (default 4) */
  const fc_method *methods;
  size_t nmethods;
} fc_server_opts;

typedef struct fc_server fc_server;

void fc_server_opts_init(fc_server_opts *o);
/* Creates, binds and starts the server. *out owned by caller (fc_server_destroy). */
int fc_server_start(const fc_server_opts *o, fc_server **out, char *err, size_t errlen);
/* The same in two steps, for a program that must know its address is free
 * before it changes anything (the coordinator, before its state directory):
 * bind loads the TLS files and binds the address (a port in use fails here,
 * in one line); no call reaches a handler until run. fc_server_port and
 * fc_server_destroy work in between. */
int fc_server_bind(const fc_server_opts *o, fc_server **out, char *err, size_t errlen);
int fc_server_run(fc_server *s, char *err, size_t errlen);
int fc_server_port(const fc_server *s);
/* Stop accepting; let in-flight calls finish for up to grace_ms, then cancel them. */
void fc_server_shutdown(fc_server *s, int grace_ms);
/* Shuts down (grace 0) if needed and frees everything. Accepts NULL. */
void fc_server_destroy(fc_server *s);

/* In a handler. The first request message is already received and unpacked. */
const fc_peer *fc_scall_peer(const fc_scall *c);
const char *fc_scall_method(const fc_scall *c);
const ProtobufCMessage *fc_scall_request(const fc_scall *c);
/* ---- async handlers (fc_method.async = 1; on an event thread, never blocking) ----
 * Client stream: after the handler returns, each further message goes to
 * on_msg (the core frees it after the callback) and the end of the stream to
 * on_end, which must finish the call; on_msg may finish it early (refusal).
 * Server stream: next is called for the first message and again each time
 * the previous send completed; it calls fc_scall_send_async once, or finishes.
 * In both, on_done(state) is called exactly once when the core is done with
 * the call (finished, or the peer gone, or idle too long): free state there.
 * A unary async handler just calls fc_scall_finish. */
typedef void (*fc_msg_fn)(fc_scall *c, void *state, const ProtobufCMessage *msg);
typedef void (*fc_step_fn)(fc_scall *c, void *state);
typedef void (*fc_done_fn)(void *state);
void fc_scall_stream_in(fc_scall *c, fc_msg_fn on_msg, fc_step_fn on_end, fc_done_fn on_done, void *state);
void fc_scall_stream_out(fc_scall *c, fc_step_fn next, fc_done_fn on_done, void *state);
/* From `next`: queue one message (packed at once: msg may be freed on return). */
int fc_scall_send_async(fc_scall *c, const ProtobufCMessage *msg);
/* 1 once a status was queued or the call died: nothing more may be sent. */
int fc_scall_finished(const fc_scall *c);
/* From any thread, while the call is alive (before its on_done returned):
 * cancel it with this status; its pending batch completes, failed, and the
 * core releases it (on_done). */
void fc_scall_cancel(fc_scall *c, grpc_status_code code, const char *why);

/* A unary async handler that cannot answer yet (a poll for something not
 * ready) parks the call instead of finishing it: it keeps the fc_scall* and
 * finishes it later, exactly once, with fc_scall_finish or
 * fc_scall_finish_retry from any thread (the packed answer is queued at
 * once; a parked call needs no lock of the transport's). Until then the call
 * holds no thread and no batch, so a peer that went away meanwhile is seen
 * only when the status is sent (its batch fails; the core releases the
 * call). Every parked call must be finished before fc_server_shutdown: the
 * server's threads wait for it. Bounded by the owner (how many it parks,
 * for how long); the per-peer call cap counts a parked call. */
void fc_scall_park(fc_scall *c);

/* ---- blocking handlers (async = 0; on a pool thread) ---- */
/* Next message of a client stream: 1 = *msg set (free with protobuf_c_message_free_unpacked),
 * 0 = client closed the stream, <0 = fedc_err (cancelled, idle timeout, too large, malformed);
 * after an error the call is already finished with a status. */
int fc_scall_recv(fc_scall *c, ProtobufCMessage **msg);
/* Send one message of a server stream; <0 if the call is gone. */
int fc_scall_send(fc_scall *c, const ProtobufCMessage *msg);
/* Both kinds. Reply with a response (unary / client stream; NULL for server
 * stream or errors) and a status. Exactly once; a handler that returns without
 * finishing (and without handing the stream to callbacks) gets INTERNAL. In an
 * async handler it queues the status and returns at once. */
int fc_scall_finish(fc_scall *c, grpc_status_code code, const char *detail, const ProtobufCMessage *resp);
/* fc_scall_finish for a refusal that tells the caller when to try again
 * (FC_RETRY_AFTER_MD_KEY trailing metadata; the client runtime honours it). */
int fc_scall_finish_retry(fc_scall *c, grpc_status_code code, const char *detail, uint32_t retry_after_ms);
/* Bytes received / sent on this call so far (payload bytes of messages). */
uint64_t fc_scall_bytes_in(const fc_scall *c);
uint64_t fc_scall_bytes_out(const fc_scall *c);

/* ---- client channel ---------------------------------------------------------------- */

typedef struct fc_channel_opts {
  const char *target;          /* "127.0.0.1:7070" */
  fc_tls_files tls;
  int insecure_for_testing;    /* refused unless target is loopback */
  const char *insecure_identity; /* "client/alice" sent as metadata in insecure mode */
  const char *server_name;     /* TLS name to check (default: host of target) */
  int keepalive_ms;            /* HTTP/2 keepalive ping interval (default 120000: keeps NAT mappings) */
  const char *protocol_version; /* override "MAJOR.MINOR" (tests only) */
  /* The server's certificate must carry exactly this SPIFFE identity
   * ("spiffe://<federation>/<role>/<name>"), besides chaining to the CA and
   * matching the host: an upload goes to the aggregator the leader named
   * (Task.aggregator_identity, 1.14), not to any certificate of the
   * federation. NULL: any certificate of the CA (the coordinator's case). */
  const char *expect_peer;
  /* Without expect_peer: the server's certificate must carry this role
   * ("coordinator": a client's, an aggregator's and the admin CLI's channel
   * to the coordinator), any name. An aggregator's certificate is a TLS
   * server's too (issue 23): without the role it could pass as the
   * coordinator wherever its host names match. NULL: any role. */
  const char *expect_role;
} fc_channel_opts;

typedef struct fc_channel fc_channel;

void fc_channel_opts_init(fc_channel_opts *o);
/* Checks local files (readable, key matches, certificate not expired) before
 * creating the channel, so those mistakes get their own message. */
int fc_channel_create(const fc_channel_opts *o, fc_channel **out, char *err, size_t errlen);
void fc_channel_destroy(fc_channel *ch);
/* From any thread: cancel every call in flight on the channel and every call
 * started on it from now on (they end with CANCELLED / FEDC_ERR_STOPPED). */
void fc_channel_cancel_all(fc_channel *ch);
/* Undo fc_channel_cancel_all for calls started from now on (a stopping
 * client's last word, client/runtime_leave.c); a later cancel_all cancels
 * them again. */
void fc_channel_uncancel(fc_channel *ch);

/* Unary call. On FEDC_OK *resp is set (free with protobuf_c_message_free_unpacked). */
int fc_call_unary(fc_channel *ch, const char *path, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, int timeout_ms,
                  fc_status *st);

typedef struct fc_ccall fc_ccall;
/* Start a streaming call. For server streams, req is the single request message. */
int fc_ccall_start(fc_channel *ch, const char *path, fc_rpc_kind kind, const ProtobufCMessage *req,
                   int timeout_ms, fc_ccall **out, fc_status *st);
/* Client stream: send one message. On failure the status is fetched into st. */
int fc_ccall_send(fc_ccall *c, const ProtobufCMessage *msg, fc_status *st);
/* The same for a message already on the wire (e.g. fc_chunk_msg_ref); takes
 * bytes (NULL: out of memory). */
int fc_ccall_send_bytes(fc_ccall *c, grpc_byte_buffer *bytes, fc_status *st);
/* Client stream: close the sending side, receive the response and the status. */
int fc_ccall_close_and_recv(fc_ccall *c, const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                            fc_status *st);
/* Server stream: 1 = *msg set, 0 = end of stream (status in st), <0 error (status in st). */
int fc_ccall_recv(fc_ccall *c, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg, fc_status *st);
/* The same, offering each message's wire bytes to take(ctx, bytes) first:
 * when it returns 1 it has consumed the message (decoded in place: no
 * flattened and no unpacked copy) and this returns 1 with *msg NULL; 0 has
 * the message unpacked as by fc_ccall_recv. */
typedef int (*fc_recv_take_fn)(void *ctx, grpc_byte_buffer *bytes);
int fc_ccall_recv_take(fc_ccall *c, const ProtobufCMessageDescriptor *desc, fc_recv_take_fn take, void *ctx,
                       ProtobufCMessage **msg, fc_status *st);
/* Cancel (if still running) and free. Accepts NULL. */
void fc_ccall_destroy(fc_ccall *c);
uint64_t fc_ccall_bytes_in(const fc_ccall *c);
uint64_t fc_ccall_bytes_out(const fc_ccall *c);

/* Turn a failed status into one line a person can act on. For UNAVAILABLE it
 * probes the target (TCP connect, then a TLS handshake with our files) to say
 * which: coordinator unreachable, server certificate not trusted, our
 * certificate refused, expired, ... Fills st->err and st->detail. */
void fc_status_explain(fc_channel *ch, fc_status *st);

/* Route gRPC's log lines into common/log: its errors at error_level, the rest
 * at debug. Changes process-wide state: for programs, never the library. */
void fc_transport_route_grpc_logs(int error_level);

/* Check our own TLS files before any connection: readable, the certificate
 * chains to the CA and is within its validity, the key matches. FEDC_OK, or
 * FEDC_ERR_CERT_EXPIRED / FEDC_ERR_TLS / FEDC_ERR_IO with one sentence in err. */
int fc_tls_check_files(const char *ca, const char *cert, const char *key, char *err, size_t errlen);

/* Turn off abseil's mutex deadlock detection (on in Debian's build of the
 * abseil gRPC uses): its lock-graph bookkeeping (GraphCycles::GetId) was the
 * largest user-space cost of a CheckIn after the TLS identity cache, 7% of the
 * coordinator's CPU at 12,000 clients in review. Process-wide state: for the
 * coordinator binary, never the library. 1 if done, 0 if this abseil has no
 * such switch. Call before fc_transport_init. */
int fc_transport_disable_deadlock_detection(void);

/* Process-wide gRPC init/shutdown (reference counted by gRPC itself). */
void fc_transport_init(void);
void fc_transport_shutdown(void);
/* The same, returning once gRPC's clean-up is done (short-lived commands). */
void fc_transport_shutdown_wait(void);

#endif
