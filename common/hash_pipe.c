/*
 * hash_pipe.c - SHA-256 of a filling buffer on a helper thread (hash_pipe.h).
 *
 * The thread takes at most STEP bytes per turn, so the receiver's publishes
 * are picked up within about 0.6 ms, and the bytes it hashes were written
 * moments before (still in the last-level cache). One mutex and one condition
 * variable: the receiver signals on publish and finish, the thread never
 * signals back (finish joins it).
 */
#include "common/hash_pipe.h"

#include <pthread.h>
#include <stdlib.h>

#include "crypto/sha256.h"
#include "fedc/error.h"

#define STEP (1u << 20)

struct fc_hash_pipe {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  const uint8_t *buf;
  uint64_t published; /* under mu */
  int closing;        /* under mu: finish or abort was called */
  int abandon;        /* under mu: abort: stop at once */
  uint64_t hashed;    /* the thread's own */
  int rc;             /* the thread's, read after join */
  fc_sha256_ctx sha;
};

static void *pipe_main(void *arg) {
  fc_hash_pipe *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    while (p->hashed == p->published && !p->closing) pthread_cond_wait(&p->cv, &p->mu);
    uint64_t upto = p->published;
    int stop = p->abandon || (p->closing && p->hashed == upto);
    pthread_mutex_unlock(&p->mu);
    if (stop) break;
    while (p->hashed < upto && p->rc == FEDC_OK) {
      size_t n = upto - p->hashed < STEP ? (size_t)(upto - p->hashed) : STEP;
      p->rc = fc_sha256_update(&p->sha, p->buf + p->hashed, n);
      p->hashed += n;
    }
  }
  return NULL;
}

int fc_hash_pipe_start(const uint8_t *buf, fc_hash_pipe **out) {
  fc_hash_pipe *p = calloc(1, sizeof *p);
  if (!p) return FEDC_ERR_NOMEM;
  int rc = fc_sha256_init(&p->sha);
  if (rc != FEDC_OK) {
    free(p);
    return rc;
  }
  p->buf = buf;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  if (pthread_create(&p->thread, NULL, pipe_main, p) != 0) {
    fc_sha256_free(&p->sha);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
    return FEDC_ERR_NOMEM;
  }
  *out = p;
  return FEDC_OK;
}

void fc_hash_pipe_publish(fc_hash_pipe *p, uint64_t upto) {
  pthread_mutex_lock(&p->mu);
  if (upto > p->published) {
    p->published = upto;
    pthread_cond_signal(&p->cv);
  }
  pthread_mutex_unlock(&p->mu);
}

static void stop(fc_hash_pipe *p, int abandon) {
  pthread_mutex_lock(&p->mu);
  p->closing = 1;
  p->abandon = abandon;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  pthread_join(p->thread, NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
}

int fc_hash_pipe_finish(fc_hash_pipe *p, uint8_t out[32]) {
  stop(p, 0);
  int rc = p->rc;
  if (rc == FEDC_OK) rc = fc_sha256_final(&p->sha, out);
  fc_sha256_free(&p->sha);
  free(p);
  return rc == FEDC_OK ? FEDC_OK : FEDC_ERR_CRYPTO;
}

void fc_hash_pipe_abort(fc_hash_pipe *p) {
  if (!p) return;
  stop(p, 1);
  fc_sha256_free(&p->sha);
  free(p);
}
