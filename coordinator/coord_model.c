/*
 * coord_model.c - the global model snapshot and the round history in memory.
 *
 * Owns: c->model, an immutable refcounted snapshot (readers take a reference
 * under mu and stream from it without any lock; publishing swaps the pointer,
 * so it never waits for a slow download), and c->rounds, the history kept in
 * memory (at most ROUNDS_KEPT records; the oldest go first).
 * May call: nothing of the coordinator's (the bottom of coordinator/):
 * sha256 and the signed-manifest free only.
 */
#include "coordinator/coordinator.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/coord_int.h"

#define ROUNDS_KEPT 100000

model_ref *coord_model_new(uint64_t version, const fc_model_spec *spec, float *data) {
  model_ref *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  atomic_init(&m->refs, 1);
  m->version = version;
  m->spec = *spec;
  m->data = data;
  m->bytes = fc_model_numel(spec) * sizeof(float);
  fc_sha256(data, m->bytes, m->sha);
  return m;
}

void coord_model_unref(model_ref *m) {
  if (m && atomic_fetch_sub(&m->refs, 1) == 1) {
    fc_signed_free(&m->man);
    free(m->data);
    free(m);
  }
}

model_ref *coord_model_get(fc_coord *c) {
  pthread_mutex_lock(&c->mu);
  model_ref *m = c->model;
  atomic_fetch_add(&m->refs, 1);
  pthread_mutex_unlock(&c->mu);
  return m;
}

int coord_history_add(fc_coord *c, const fc_round_stats *r) {
  if (c->nrounds == c->caprounds) {
    if (c->nrounds >= ROUNDS_KEPT) {
      memmove(c->rounds, c->rounds + 1, (c->nrounds - 1) * sizeof *c->rounds);
      c->nrounds--;
    } else {
      size_t n = c->caprounds ? c->caprounds * 2 : 64;
      fc_round_stats *nr = realloc(c->rounds, n * sizeof *nr);
      if (!nr) return -1;
      c->rounds = nr;
      c->caprounds = n;
    }
  }
  c->rounds[c->nrounds++] = *r;
  return 0;
}

/* A federated evaluation into the record of the round whose model it
 * evaluated (the latest of that id; the line itself is owed by coord_eval.c). */
void coord_history_eval_locked(fc_coord *c, uint64_t round, const fc_round_eval *e) {
  for (size_t i = c->nrounds; i > 0; i--)
    if (c->rounds[i - 1].round == round) {
      c->rounds[i - 1].eval = *e;
      return;
    }
}
