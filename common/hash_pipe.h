/*
 * hash_pipe.h - SHA-256 of a buffer that fills from its start, computed on a
 * thread of its own while it fills.
 *
 * A receiver that copies a tensor stream into its buffer publishes how far
 * the buffer is filled; the pipe's thread hashes up to there and waits for
 * more. The receiving thread then only moves bytes, and the digest (1.7 GB/s
 * per core here, as slow as the transfer itself) runs beside it on another
 * core instead of after each message on the same one.
 *
 * Invariants: bytes [0, published) of buf are final (the receiver never
 * writes them again); the thread reads only that range; published never
 * decreases. The pipe owns its thread; finish or abort joins it.
 */
#ifndef FEDC_COMMON_HASH_PIPE_H
#define FEDC_COMMON_HASH_PIPE_H

#include <stddef.h>
#include <stdint.h>

typedef struct fc_hash_pipe fc_hash_pipe;

/* Start hashing buf as it fills. FEDC_OK, or FEDC_ERR_NOMEM / CRYPTO (no
 * thread could be started or no digest context made: hash inline instead). */
int fc_hash_pipe_start(const uint8_t *buf, fc_hash_pipe **out);
/* Bytes [0, upto) of buf are in place. upto below an earlier value is ignored. */
void fc_hash_pipe_publish(fc_hash_pipe *p, uint64_t upto);
/* Wait for the thread to hash everything published, write the digest, free
 * the pipe. FEDC_OK or FEDC_ERR_CRYPTO. */
int fc_hash_pipe_finish(fc_hash_pipe *p, uint8_t out[32]);
/* Stop without a digest and free the pipe; accepts NULL. */
void fc_hash_pipe_abort(fc_hash_pipe *p);

#endif
