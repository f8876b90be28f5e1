/*
 * chunk.h - framing of a tensor payload as a stream: one header, then chunks.
 * No I/O here: the transport and both services (FetchModel, UploadUpdate)
 * drive these functions with whatever arrived, and decide where bytes go.
 *
 * Stream format (the fields of fedc.v1.TensorHeader / TensorChunk):
 *
 *   | message | field       | type        | rule                                              |
 *   |---------|-------------|-------------|---------------------------------------------------|
 *   | header  | total_bytes | u64         | == sum numel * (4, or 1 for U8); <= receiver's cap|
 *   | header  | tensors     | TensorSpec* | a valid spec (fc_model_spec_check); equal to the  |
 *   |         |             |             | spec the receiver expects, when it expects one    |
 *   | header  | sha256      | 32 bytes    | SHA-256 of the whole payload                      |
 *   | header  | chunk_bytes | u32         | largest chunk the sender will send, 1..4 MiB      |
 *   | chunk   | offset      | u64         | == bytes received so far (no gaps, no replays)    |
 *   | chunk   | data        | bytes       | 1..chunk_bytes bytes; offset+len <= total_bytes   |
 *
 * The payload is the float32 tensors back to back in spec order, little-endian,
 * no padding (see tensor.h). The stream is accepted only when exactly
 * total_bytes arrived and their SHA-256 equals the header's.
 *
 * The sender cuts the payload with fc_chunk_plan() at its configured size
 * (FC_CHUNK_DEFAULT unless configured, kept within [FC_CHUNK_MIN, FC_CHUNK_MAX]
 * by the configuration layer); the receiver accepts any chunk_bytes in
 * [1, FC_CHUNK_MAX] so tests can use tiny chunks.
 */
#ifndef FEDC_COMMON_CHUNK_H
#define FEDC_COMMON_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "common/tensor.h"
#include "crypto/sha256.h"

#define FC_CHUNK_DEFAULT (1u << 20) /* 1 MiB */
#define FC_CHUNK_MAX (4u << 20)     /* 4 MiB: also bounds one wire message */
#define FC_CHUNK_MIN (1u << 10)     /* 1 KiB: smallest size a sender should be configured with */

/* Receiver states (fc_chunk_rx.state). A zeroed fc_chunk_rx is IDLE. */
enum fc_chunk_rx_state {
  FC_CHUNK_RX_IDLE = 0,      /* never begun (or freed) */
  FC_CHUNK_RX_RECEIVING = 1, /* header accepted, chunks may follow */
  FC_CHUNK_RX_DONE = 2,      /* fc_chunk_rx_end() verified the stream */
  FC_CHUNK_RX_FAILED = 3,    /* an error happened; every later call fails */
};

/*
 * Receiver of one stream. Holds no payload bytes of its own: the caller copies
 * each accepted chunk to rx.received-before-the-call in its own buffer (or folds
 * it into an accumulator). Fields are readable; change them only through the
 * functions below.
 */
typedef struct fc_chunk_rx {
  fc_model_spec spec;   /* the header's spec (valid once begun) */
  uint64_t total;       /* header total_bytes */
  uint64_t received;    /* bytes accepted so far == the next expected offset */
  uint32_t chunk_max;   /* header chunk_bytes */
  uint8_t want_sha[32]; /* header sha256 */
  fc_sha256_ctx sha;    /* running digest of the accepted bytes */
  int state;            /* enum fc_chunk_rx_state */
  uint64_t chunks;      /* chunks accepted so far */
  int hash_outside;     /* fc_chunk_rx_hash_outside(): the caller digests the bytes */
} fc_chunk_rx;

/*
 * Accept a header. rx must be zeroed or freed (a begun rx is not freed here:
 * call fc_chunk_rx_free first). expect NULL accepts any valid spec. Checks, in
 * order: spec valid (SHAPE), spec equal to expect (SHAPE, naming the first
 * differing tensor), U8 only with an expect (SHAPE), total_bytes == fc_model_bytes (SHAPE), total_bytes <= max_total
 * (TOO_LARGE), sha_len == 32 (PROTOCOL), chunk_bytes in [1, FC_CHUNK_MAX]
 * (PROTOCOL). On error rx is left FAILED (and needs no free, though free is harmless).
 */
int fc_chunk_rx_begin(fc_chunk_rx *rx, const fc_model_spec *spec, uint64_t total_bytes, const uint8_t *sha,
                      size_t sha_len, uint32_t chunk_bytes, const fc_model_spec *expect, uint64_t max_total,
                      char *err, size_t errlen);

/*
 * Accept one chunk: offset must equal rx->received (PROTOCOL), 1 <= len
 * (PROTOCOL) and len <= chunk_max (TOO_LARGE), received+len <= total
 * (TOO_LARGE, "over-long stream"). On success the digest is updated and
 * received/chunks advance; the data is not kept. Any error moves rx to FAILED.
 */
int fc_chunk_rx_feed(fc_chunk_rx *rx, uint64_t offset, const void *data, size_t len, char *err, size_t errlen);

/*
 * The sender says the stream is over. received < total: PROTOCOL ("stream
 * ended early"); digest differs from the header's: HASH (constant-time
 * compare). Returns 0 once, moving rx to DONE; any later call is PROTOCOL.
 */
int fc_chunk_rx_end(fc_chunk_rx *rx, char *err, size_t errlen);

/*
 * After a successful begin: the caller computes the digest of the accepted
 * bytes itself (e.g. on another thread with common/hash_pipe.h, as they land
 * in its buffer) and ends the stream with fc_chunk_rx_end_digest; feed then
 * only checks the framing. The same rules, the same errors.
 */
void fc_chunk_rx_hash_outside(fc_chunk_rx *rx);
/* fc_chunk_rx_end for hash_outside: got is the SHA-256 of the bytes the
 * caller accepted, in order. */
int fc_chunk_rx_end_digest(fc_chunk_rx *rx, const uint8_t got[32], char *err, size_t errlen);
/* Undo fc_chunk_rx_hash_outside mid-stream: digest the bytes accepted so far
 * (bytes[0, received): the caller's copy of them) into rx's own context,
 * which then goes on as if it had hashed every chunk itself (a cut stream
 * kept to be resumed carries its digest state). FEDC_OK (also when the hash
 * was never outside), or FEDC_ERR_CRYPTO. */
int fc_chunk_rx_hash_inside(fc_chunk_rx *rx, const uint8_t *bytes);

/* Release the digest context; safe in any state after begin or on a zeroed rx. Leaves rx IDLE. */
void fc_chunk_rx_free(fc_chunk_rx *rx);

/* Number of chunks a payload of total bytes is cut into (0 if total or chunk_bytes is 0). */
uint64_t fc_chunk_count(uint64_t total, uint32_t chunk_bytes);

/*
 * The index-th slice of a payload of total bytes cut at chunk_bytes: writes
 * *offset and *len and returns 0; FEDC_ERR_NOT_FOUND past the last chunk;
 * FEDC_ERR_INVALID when chunk_bytes is 0. The last chunk may be short.
 */
int fc_chunk_plan(uint64_t total, uint32_t chunk_bytes, uint64_t index, uint64_t *offset, size_t *len);

/* SHA-256 of a whole payload (the header's sha256 field). 0 or FEDC_ERR_CRYPTO. */
int fc_payload_sha256(const void *p, size_t n, uint8_t out[32]);

#endif
