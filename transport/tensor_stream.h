/*
 * tensor_stream.h - tensors on the wire: fedc.v1.TensorHeader <-> fc_model_spec,
 * and the send / receive loops of a chunked tensor stream (common/chunk.h does
 * the checking; this file moves protobuf messages). Used by the coordinator
 * (FetchModel, GetModel, UploadUpdate) and the client runtime alike, so the
 * framing exists once.
 */
#ifndef FEDC_TRANSPORT_TENSOR_STREAM_H
#define FEDC_TRANSPORT_TENSOR_STREAM_H

#include "common/chunk.h"
#include "common/tensor.h"
#include "crypto/signed.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/transport.h"

/* A TensorHeader message whose fields point into this struct and a spec. */
typedef struct fc_pb_header {
  Fedc__V1__TensorHeader h;
  Fedc__V1__TensorSpec specs[FC_MODEL_MAX_TENSORS];
  Fedc__V1__TensorSpec *ptrs[FC_MODEL_MAX_TENSORS];
  uint8_t sha[FC_SHA256_LEN];
} fc_pb_header;

/* Fill *out for spec (which must outlive *out). */
void fc_pb_header_build(fc_pb_header *out, const fc_model_spec *spec, uint64_t total, const uint8_t *sha,
                        uint32_t chunk_bytes);
/* Copy a received header's tensor list into spec, checking counts and
 * lengths before copying. FEDC_ERR_SHAPE / FEDC_ERR_PROTOCOL with err set. */
int fc_pb_header_parse(const Fedc__V1__TensorHeader *h, fc_model_spec *spec, char *err, size_t errlen);
/* Begin a receiver from a wire header. */
int fc_chunk_rx_begin_pb(fc_chunk_rx *rx, const Fedc__V1__TensorHeader *h, const fc_model_spec *expect,
                         uint64_t max_total, char *err, size_t errlen);

/* Send payload as header + chunks through emit(), which wraps each piece in
 * the method's message type (exactly one of header/chunk is non-NULL). */
typedef int (*fc_stream_emit)(void *ctx, const Fedc__V1__TensorHeader *header, const Fedc__V1__TensorChunk *chunk);
int fc_tensor_stream_send(const fc_model_spec *spec, const void *payload, uint64_t total, const uint8_t *sha,
                          uint32_t chunk_bytes, fc_stream_emit emit, void *ctx);
/* The same one piece at a time (event-driven senders): piece 0 is the header
 * h (built with fc_pb_header_build), piece i >= 1 is chunk i - 1. */
uint64_t fc_tensor_stream_pieces(uint64_t total, uint32_t chunk_bytes);
int fc_tensor_stream_piece(const fc_pb_header *h, const void *payload, uint64_t total, uint32_t chunk_bytes,
                           uint64_t index, fc_stream_emit emit, void *ctx);

/* The receiving end of a TensorStreamMsg stream (FetchModel, GetModel)
 * without the call, so it can be driven by anything (fuzz_model_recv):
 * init, one fc_stream_rx_msg per message as it arrives (stop at the first
 * error: the stream has failed), fc_stream_rx_end when the stream ends
 * (hands over the payload, malloc'd, and the manifest), then always free.
 * The first message must be the header (with the manifest, kept only when
 * want_manifest); later ones exactly one chunk each. */
typedef struct fc_stream_rx {
  fc_chunk_rx rx;
  fc_signed man;           /* sent with the header (all NULL if none) */
  uint8_t *buf;            /* the payload, rx.total bytes once begun */
  int began;
  uint64_t max_total;
  const uint8_t *want_sha; /* NULL: any; else the header must announce it */
  int want_manifest;
  uint8_t **bufp;          /* fc_stream_rx_into: the caller's kept buffer (NULL: a new one, handed over) */
  uint64_t *cap;
  int hash_beside;         /* hash on a helper thread (common/hash_pipe.h) from PIPE_MIN bytes on */
  struct fc_hash_pipe *pipe;
  int resuming;            /* fc_stream_rx_resume armed: the next message is a resumed stream's header */
} fc_stream_rx;
void fc_stream_rx_init(fc_stream_rx *s, uint64_t max_total, const uint8_t *want_sha, int want_manifest);
/* Receive into the caller's kept buffer (*bufp of *cap bytes, grown when a
 * stream is larger; the caller owns it always), optionally hashing on a
 * helper thread. fc_stream_rx_end then hands over no payload (pass NULL). */
void fc_stream_rx_into(fc_stream_rx *s, uint8_t **bufp, uint64_t *cap, int hash_beside);
int fc_stream_rx_msg(fc_stream_rx *s, const Fedc__V1__TensorStreamMsg *msg, char *err, size_t errlen);
int fc_stream_rx_end(fc_stream_rx *s, fc_model_spec *spec, float **payload, uint64_t *total,
                     uint8_t sha_out[FC_SHA256_LEN], fc_signed *manifest, char *err, size_t errlen);
void fc_stream_rx_free(fc_stream_rx *s);
/* The sending side's counterpart: a message whose field `field` is
 * TensorChunk{offset, data} (UploadMsg.chunk is 3), its data not copied but
 * referenced, so a client stream sends a chunk without packing it: gRPC may
 * read data until it lets go of the message's last reference, possibly after
 * the call is gone, and then calls release(owner) once (the caller keeps
 * data alive until then). Send it with fc_ccall_send_bytes. */
grpc_byte_buffer *fc_chunk_msg_ref(uint32_t field, uint64_t offset, const uint8_t *data, size_t len,
                                   void (*release)(void *), void *owner);
/* A chunk message of a begun stream, decoded from its wire bytes straight
 * into the payload buffer (no unpacked copy; fc_tensor_stream_recv_call
 * offers it every message): 1 = taken, *rc the verdict fc_stream_rx_msg would
 * give (err filled on failure); 0 = not a plain chunk it can take in place
 * (unpack it and call fc_stream_rx_msg, which decides it). */
int fc_stream_rx_bytes(fc_stream_rx *s, grpc_byte_buffer *bytes, int *rc, char *err, size_t errlen);
/* Resumable downloads (protocol 1.10). After a stream broke off without the
 * receiver failing (the call died: fc_stream_rx_msg never refused anything):
 * the byte offset to ask the sender to start from (FetchModelRequest
 * .start_offset), with s armed for the resumed stream, whose header must echo
 * that offset (TensorHeader.start_offset) and announce the same payload
 * (spec, length, SHA-256, chunk size; its manifest is not taken again); its
 * chunks then go on at the bytes kept, and the digest over the whole payload
 * is checked at the end as always. A header with start_offset 0 (a sender
 * that does not resume) starts the payload over. Returns 0 when nothing can
 * be kept (not begun, failed, or not on a chunk boundary): free s and start
 * over. A fresh stream whose header has start_offset != 0 is refused. */
uint64_t fc_stream_rx_resume(fc_stream_rx *s);

/* Drive s with the messages of call until the stream ends (then
 * fc_stream_rx_end: payload, manifest as there); s stays the caller's, so a
 * stream cut by the network can be resumed (fc_stream_rx_resume) on a new
 * call. The status is in st either way. */
int fc_tensor_stream_recv_call(fc_stream_rx *s, fc_ccall *call, fc_model_spec *spec, float **payload,
                               uint64_t *total, uint8_t sha_out[FC_SHA256_LEN], fc_signed *manifest, fc_status *st);

/* Client side of FetchModel/GetModel: receive a whole TensorStreamMsg stream
 * into a new buffer (*payload, malloc'd, caller frees), verified against the
 * header's SHA-256 and, when want_sha is given, that too. */
int fc_tensor_stream_recv(fc_ccall *call, uint64_t max_total, const uint8_t *want_sha, fc_model_spec *spec,
                          float **payload, uint64_t *total, uint8_t sha_out[FC_SHA256_LEN], fc_status *st);
/* The same, and *manifest gets the signed manifest sent with the header
 * (all fields NULL if there was none; free with fc_signed_free). A manifest
 * over the limits of crypto/signed.h fails the stream. */
int fc_tensor_stream_recv_signed(fc_ccall *call, uint64_t max_total, const uint8_t *want_sha, fc_model_spec *spec,
                                 float **payload, uint64_t *total, uint8_t sha_out[FC_SHA256_LEN], fc_signed *manifest,
                                 fc_status *st);
/* The same into a buffer the caller keeps between streams: *buf holds *cap
 * bytes (NULL and 0: none yet). A stream larger than *cap gets a new buffer
 * (the old one freed, *buf and *cap updated) before any chunk is written.
 * The caller owns *buf after every call; it holds the payload only on
 * FEDC_OK (on an error, any prefix of it may have been overwritten).
 * Why: a fresh buffer costs a page fault per 4 KiB on first touch, about
 * 2 ms per MiB on the project's VMs, as much as the transfer itself
 * (docs/results.md, "Transport"); a reused one costs nothing. */
int fc_tensor_stream_recv_into(fc_ccall *call, uint64_t max_total, const uint8_t *want_sha, fc_model_spec *spec,
                               uint8_t **buf, uint64_t *cap, uint64_t *total, uint8_t sha_out[FC_SHA256_LEN],
                               fc_signed *manifest, fc_status *st);

#endif
