/*
 * server_pool.c - the pools of threads for blocking handlers (one general,
 * one for admin methods): a FIFO of calls, served one per thread to the end.
 *
 * Owns: struct pool (its mu/cv and queue) and its threads.
 * May call: server_call.c (srv_send_status, srv_release) and the handler;
 * server_event.c pushes calls in (srv_pool_push), server.c starts and stops
 * the pools. A pool thread owns a blocking call from the push until it
 * releases it; its recv/send sleep in server_call.c's wait_batch.
 */
#include <pthread.h>
#include <stdlib.h>

#include "common/log.h"
#include "fedc/error.h"
#include "transport/server_int.h"
#include "transport/transport.h"
#include "transport/transport_int.h"

#define MOD "transport"

/* A pool thread serves a blocking call to its end and releases it. */
static void serve_blocking(fc_scall *c) {
  c->m->handler(c, c->m->ctx);
  if (!c->finished) {
    FC_ERROR(MOD, "%s: handler returned without a status", c->method);
    srv_send_status(c, GRPC_STATUS_INTERNAL, "handler returned without a status", NULL);
  }
  srv_release(c);
}

void srv_pool_push(struct pool *pl, fc_scall *c) {
  pthread_mutex_lock(&pl->mu);
  c->next_in_queue = NULL;
  if (pl->tail) pl->tail->next_in_queue = c;
  else
    pl->head = c;
  pl->tail = c;
  pthread_cond_signal(&pl->cv);
  pthread_mutex_unlock(&pl->mu);
}

static void *pool_main(void *arg) {
  struct pool *pl = arg;
  pthread_mutex_lock(&pl->mu);
  for (;;) {
    while (!pl->head && !pl->stop) pthread_cond_wait(&pl->cv, &pl->mu);
    if (!pl->head) break; /* stopping and nothing queued */
    fc_scall *c = pl->head;
    pl->head = c->next_in_queue;
    if (!pl->head) pl->tail = NULL;
    pthread_mutex_unlock(&pl->mu);
    serve_blocking(c);
    pthread_mutex_lock(&pl->mu);
  }
  pthread_mutex_unlock(&pl->mu);
  return NULL;
}

int srv_pool_start(struct pool *pl, fc_server *s, int n) {
  pl->srv = s;
  pthread_mutex_init(&pl->mu, NULL);
  pthread_cond_init(&pl->cv, NULL);
  pl->threads = calloc((size_t)n, sizeof *pl->threads);
  pl->started = calloc((size_t)n, sizeof *pl->started);
  if (!pl->threads || !pl->started) return -1;
  pl->nthreads = n;
  for (int i = 0; i < n; i++) {
    if (pthread_create(&pl->threads[i], NULL, pool_main, pl) != 0) return -1;
    pl->started[i] = 1;
  }
  return 0;
}

/* Let the pool finish what is queued, then join it. */
void srv_pool_stop(struct pool *pl) {
  if (!pl->threads) return;
  pthread_mutex_lock(&pl->mu);
  pl->stop = 1;
  pthread_cond_broadcast(&pl->cv);
  pthread_mutex_unlock(&pl->mu);
  for (int i = 0; i < pl->nthreads; i++)
    if (pl->started[i]) pthread_join(pl->threads[i], NULL);
  free(pl->threads);
  free(pl->started);
  pl->threads = NULL;
  pthread_mutex_destroy(&pl->mu);
  pthread_cond_destroy(&pl->cv);
}
