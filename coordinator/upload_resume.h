/*
 * upload_resume.h - the coordinator's kept prefixes of cut uploads (protocol
 * 1.10, issue 26), without I/O: a table the UploadUpdate handler fills when a
 * stream breaks off and consults when a client resumes it.
 *
 * A partial upload is what arrived of one identity's update for one round
 * before its stream was cut: the chunk receiver (rx: bytes received, the
 * running SHA-256 of them, the header's length, hash and chunk size) and the
 * aggregator's staging slot the chunks were folded into (opaque here; freed
 * through the table's release callback). Invariants:
 *   - at most one partial per identity; a new one replaces the old;
 *   - a partial is handed out only to the identity that made it, for the
 *     same round, update meta, length, SHA-256 and chunk size, at exactly the
 *     offset it acknowledged (rx.received): a replayed or forged resume can
 *     only ever continue the caller's own bytes, and the final SHA-256 over
 *     the whole update is checked as for any upload;
 *   - none outlives its round: fc_partials_round_closed drops the round's and
 *     refuses to keep any for it or an earlier one afterwards; one past its
 *     deadline is dropped when next looked at;
 *   - each holds one staging slot, so the upload memory budget bounds them;
 *     the oldest is given up (fc_partials_evict_oldest) before a fresh upload
 *     is told the coordinator is busy.
 * Not thread-safe: the coordinator holds its upload lock around every call.
 */
#ifndef FEDC_COORD_UPLOAD_RESUME_H
#define FEDC_COORD_UPLOAD_RESUME_H

#include <stddef.h>
#include <stdint.h>

#include "common/chunk.h"

/* What must match between the cut stream and its resumption (besides the
 * header, which rx holds). */
typedef struct fc_partial_meta {
  uint64_t model_version, examples;
  float loss;
  int masked, unclipped;
  uint32_t bucket;
  uint32_t upload_bits, upload_block; /* the payload's encoding (1.9; 0: float32 / u32) */
} fc_partial_meta;

typedef struct fc_partial {
  char client[65];
  uint64_t round;
  fc_partial_meta meta;
  fc_chunk_rx rx;       /* owned: RECEIVING, rx.received > 0 */
  void *slot;           /* owned: the staging update and, for a compressed
                         * upload, its decoder's state (release callback frees it) */
  uint64_t deadline_ms; /* the round's upload deadline (UINT64_MAX: closed by its stage) */
  uint64_t kept_ms;
  struct fc_partial *next;
} fc_partial;

typedef void (*fc_partial_release)(void *ctx, void *slot);

typedef struct fc_partials {
  fc_partial *head;
  uint32_t n;
  uint64_t closed_round; /* rounds up to this one are closed: nothing is kept for them */
  fc_partial_release release;
  void *ctx;
} fc_partials;

void fc_partials_init(fc_partials *t, fc_partial_release release, void *ctx);
/* Drop every partial (releasing slots). The table may be used again. */
void fc_partials_free(fc_partials *t);

/* Keep the prefix of a cut stream: takes *rx and *slot (both zeroed/NULL on
 * return whatever happens; released at once when not kept). Kept only if
 * rx is RECEIVING with 0 < received < total, the round is open and now is
 * before deadline_ms. Replaces the identity's previous partial. 1 if kept. */
int fc_partials_keep(fc_partials *t, const char *client, uint64_t round, const fc_partial_meta *meta,
                     fc_chunk_rx *rx, void **slot, uint64_t deadline_ms, uint64_t now_ms);

/* UploadOffset: the offset to resume the update (round, total, sha,
 * chunk_bytes) of `client` from. FEDC_OK with *offset = the bytes kept;
 * FEDC_ERR_NOT_FOUND (*offset = 0, why says so) when nothing is kept for
 * this identity or it is for another round, update or chunk size (the
 * client sends from 0; a later fresh upload drops the partial). */
int fc_partials_query(fc_partials *t, const char *client, uint64_t round, uint64_t total,
                      const uint8_t sha[FC_SHA256_LEN], uint32_t chunk_bytes, uint64_t now_ms, uint64_t *offset,
                      char *why, size_t whylen);

/* A stream that resumes at `offset` (its header's start_offset, > 0) with
 * header fields total/sha/chunk_bytes and this meta. On FEDC_OK *rx and
 * *slot receive the kept prefix (the caller owns them; the partial is gone)
 * and the stream goes on at rx->received == offset. Refusals (why says
 * which; the partial stays unless it is stale):
 *   FEDC_ERR_NOT_FOUND  nothing kept for this identity (another identity's
 *                       bytes are never looked at)
 *   FEDC_ERR_REJECTED   kept for another round, or the round closed or its
 *                       deadline passed (stale: the partial is dropped)
 *   FEDC_ERR_HASH       another update: length, SHA-256 or meta differ
 *   FEDC_ERR_PROTOCOL   another chunk size, or offset below the kept bytes
 *   FEDC_ERR_TOO_LARGE  offset beyond the bytes kept */
int fc_partials_take(fc_partials *t, const char *client, uint64_t round, const fc_partial_meta *meta,
                     uint64_t total, const uint8_t sha[FC_SHA256_LEN], uint32_t chunk_bytes, uint64_t offset,
                     uint64_t now_ms, fc_chunk_rx *rx, void **slot, char *why, size_t whylen);

/* A fresh upload (start_offset 0) from `client`: its old prefix is useless. 1 if one was dropped. */
int fc_partials_drop_client(fc_partials *t, const char *client);
/* The round closed (published, abandoned, or its masked stage closed): drop
 * its partials and those of earlier rounds, keep none for them again. */
uint32_t fc_partials_round_closed(fc_partials *t, uint64_t round);
/* Give up the oldest partial (its slot is needed by a fresh upload). 1 if one was. */
int fc_partials_evict_oldest(fc_partials *t);

#endif
