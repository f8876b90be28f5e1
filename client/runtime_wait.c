/*
 * runtime_wait.c - the client runtime's waits: a nap that a stop cuts short,
 * the errors worth retrying, and the jittered wait a coordinator's "come back
 * in N ms" asks for. The bottom of the runtime's files: it calls none of them.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "common/clock.h"
#include "common/rng.h"
#include "fedc/client.h"
#include "client/runtime_int.h"

int rt_ended(fedc_client *c, const atomic_int *cancel) {
  return atomic_load(&c->stop) || (cancel && atomic_load(cancel));
}

int rt_nap_or(fedc_client *c, uint32_t ms, const atomic_int *cancel) {
  struct timespec ts;
  fc_deadline_after_ms(&ts, ms);
  pthread_mutex_lock(&c->mu);
  while (!rt_ended(c, cancel)) {
    if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) != 0) break;
  }
  pthread_mutex_unlock(&c->mu);
  return rt_ended(c, cancel);
}

int rt_nap(fedc_client *c, uint32_t ms) { return rt_nap_or(c, ms, NULL); }

void rt_cancel(fedc_client *c, atomic_int *flag) {
  pthread_mutex_lock(&c->mu);
  atomic_store(flag, 1);
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

int rt_is_transient(int err) {
  return err == FEDC_ERR_UNAVAILABLE || err == FEDC_ERR_TIMEOUT || err == FEDC_ERR_NOMEM || err == FEDC_ERR_STOPPED;
}

/* The coordinator said when: wait that long, plus up to a quarter more so
 * the clients it refused together do not come back together. */
uint32_t rt_told_wait(fedc_client *c, uint32_t retry_after_ms) {
  return retry_after_ms + (uint32_t)fc_rng_below(&c->jitter, retry_after_ms / 4 + 1);
}
