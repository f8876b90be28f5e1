/*
 * coord_limits.c - the coordinator's per-identity call limits, and what
 * refusals cost the audit log (review #20, finding 5).
 *
 * Owns: the call limiter (limiter.c), the refusal counts (refusals.c) and
 * the audit log's disk budget. May call: the audit log (audit.c), statvfs(3)
 * on the state directory, the transport's call API. coordinator.c calls it at
 * start (before the server), from the round driver's tick, when it refuses an
 * upload, and at stop (after the server is gone).
 *
 * Call limits. CheckIn, UploadUpdate and ReportEval (the upload bucket) are
 * limited in the engine (per client record; identities without one share a
 * bucket there). Every other
 * method is limited here, before its handler and any lock: a token bucket
 * per identity (role/name) and class of method, in a bounded table
 * (limiter.h: identities past it share one identity's budget). A refusal is
 * RESOURCE_EXHAUSTED with fedc-retry-after-ms, which the runtime honours.
 *
 *   class          methods                        default (per identity)
 *   secagg_poll    SecAggPoll                     20/s, bursts of 40 (a poll is held until its stage opens: about one a stage)
 *   calls          FetchModel, SecAggSubmit       2/s, bursts of 10 (a few per round)
 *   admin          Status, Rounds, RoundControl,  20/s, bursts of 100
 *                  GetModel
 *
 * Audit budget. Refusals are audited through refusals.c (an identity's first
 * few per interval in full, the rest as counts). Every second the tick
 * compares audit.log's size with audit_max_mib and the state directory's
 * free space with a floor (state_min_free_mib; 0 = 4 x the model + 64 MiB:
 * room for the store's next version, its optimizer state and a temporary
 * copy). Level 1 (past 80% of the budget, or less than twice the floor
 * free): a warning and fedc_audit_alarm 1. Level 2 (the budget spent, or
 * below the floor): an error, fedc_audit_alarm 2, and refusals are only
 * counted, one record per interval for every identity together. The
 * coordinator's own records (rounds, models, admin actions, first contacts,
 * start and stop) are always written: they are what the log is for, and
 * clients cannot multiply them.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/audit.h"
#include "coordinator/coord_int.h"
#include "coordinator/limiter.h"
#include "coordinator/refusals.h"
#include "fedc/error.h"

#define MOD "coordinator"
#define LIMIT_IDS 16384          /* identities with call buckets of their own at once */
#define REFUSAL_IDS 4096         /* identities counted one by one per interval */
#define REFUSALS_DETAILED 4      /* refusals per identity and interval recorded in full */
#define DISK_CHECK_MS 1000

static const char *const class_names[COORD_LIM_N] = {"secagg_poll", "calls", "admin"};

typedef struct limited {
  struct coord_limits *L;
  fc_coord *c;
  fc_handler handler;
  void *ctx;
  int cls;
} limited;

struct coord_limits {
  fc_limiter *lim;
  limited wrap[16];
  size_t nwrap;
  atomic_uint_fast64_t refused[COORD_LIM_N];
  fc_refusals *ref; /* NULL with the audit log off */
  /* The disk budget, under mu (the driver writes, metrics read). */
  pthread_mutex_t mu;
  uint64_t next_check, audit_bytes, free_bytes, budget, floor;
  int level, have_free;
};

const char *coord_limit_class_name(int cls) { return cls >= 0 && cls < COORD_LIM_N ? class_names[cls] : "?"; }

/* A method's class; a method added later is limited as "calls" (admin
 * methods as "admin") until it is given a class of its own. */
static int class_of(const char *path) {
  if (!strcmp(path, "/fedc.v1.Coordinator/CheckIn") || !strcmp(path, "/fedc.v1.Coordinator/UploadUpdate") ||
      !strcmp(path, "/fedc.v1.Coordinator/ReportEval"))
    return -1; /* the engine limits them (ReportEval: the upload bucket) */
  /* Aggregators (issue 23) poll the round every 200 ms (5/s) and submit
   * partials: the poll is paced as SecAgg polls are (20/s, bursts of 40,
   * per identity: one aggregator certificate must not keep the leader's
   * lock busy, each poll lists its clients under it); partials are one
   * stream at a time per aggregator, one per bucket it holds, not paced. */
  if (!strcmp(path, "/fedc.v1.Aggregator/AggregatorRound")) return COORD_LIM_POLL;
  if (!strncmp(path, "/fedc.v1.Aggregator/", 20)) return -1;
  if (!strcmp(path, "/fedc.v1.Coordinator/SecAggPoll")) return COORD_LIM_POLL;
  if (!strncmp(path, "/fedc.v1.Admin/", 15)) return COORD_LIM_ADMIN;
  return COORD_LIM_CALLS; /* FetchModel, SecAggSubmit */
}

int coord_limits_start(fc_coord *c, char *err, size_t errlen) {
  const fc_coord_cfg *cfg = &c->cfg;
  struct coord_limits *L = calloc(1, sizeof *L);
  if (!L) goto nomem;
  pthread_mutex_init(&L->mu, NULL);
  c->limits = L;
  fc_limiter_cfg lc;
  memset(&lc, 0, sizeof lc);
  lc.nclasses = COORD_LIM_N;
  lc.cls[COORD_LIM_POLL] = (fc_rate){cfg->secagg_poll_rate, 2 * cfg->secagg_poll_rate};
  lc.cls[COORD_LIM_CALLS] = (fc_rate){cfg->call_rate, cfg->call_rate * 5 > 10 ? cfg->call_rate * 5 : 10};
  lc.cls[COORD_LIM_ADMIN] = (fc_rate){cfg->admin_rate, 5 * cfg->admin_rate};
  lc.max_ids = LIMIT_IDS;
  if (fc_limiter_create(&lc, &L->lim) != FEDC_OK) goto nomem;
  if (c->audit) {
    fc_refusals_cfg rc = {cfg->audit_refusal_interval_ms, REFUSALS_DETAILED, REFUSAL_IDS};
    if (fc_refusals_create(&rc, fc_now_ms(), &L->ref) != FEDC_OK) goto nomem;
  }
  L->budget = cfg->audit_max_mib << 20;
  L->floor = cfg->state_min_free_mib ? cfg->state_min_free_mib << 20 : 4 * c->model->bytes + (64ull << 20);
  coord_limits_tick(c, fc_now_ms()); /* the level from the start */
  return FEDC_OK;
nomem:
  snprintf(err, errlen, "out of memory for the call limits");
  return FEDC_ERR_NOMEM;
}

static void limited_call(fc_scall *call, void *ctx) {
  limited *w = ctx;
  const fc_peer *p = fc_scall_peer(call);
  char id[FC_LIMITER_ID_MAX];
  uint32_t retry = 0;
  snprintf(id, sizeof id, "%s/%s", fc_role_name(p->role), p->name);
  if (fc_limiter_take(w->L->lim, id, w->cls, fc_now_ms(), &retry)) {
    w->handler(call, w->ctx);
    return;
  }
  atomic_fetch_add(&w->L->refused[w->cls], 1);
  coord_refusal_note(w->c, p->role == FC_ROLE_CLIENT ? p->name : id, FC_RF_CALLS); /* "admin/root" */
  char why[200];
  snprintf(why, sizeof why, "%s: too many calls from %s, retry in %u ms", fc_scall_method(call), p->name, retry);
  FC_WARN(MOD, "%s", why);
  fc_scall_finish_retry(call, GRPC_STATUS_RESOURCE_EXHAUSTED, why, retry);
}

void coord_limits_wrap(fc_coord *c, fc_method *m, size_t n) {
  struct coord_limits *L = c->limits;
  for (size_t i = 0; i < n && L->nwrap < sizeof L->wrap / sizeof *L->wrap; i++) {
    int cls = class_of(m[i].path);
    if (cls < 0) continue;
    limited *w = &L->wrap[L->nwrap++];
    *w = (limited){L, c, m[i].handler, m[i].ctx, cls};
    m[i].handler = limited_call;
    m[i].ctx = w;
  }
}

int coord_refusal_reason(grpc_status_code code) {
  switch (code) {
  case GRPC_STATUS_INVALID_ARGUMENT: return FC_RF_INVALID;
  case GRPC_STATUS_FAILED_PRECONDITION: return FC_RF_PRECONDITION;
  case GRPC_STATUS_DEADLINE_EXCEEDED: return FC_RF_LATE;
  case GRPC_STATUS_RESOURCE_EXHAUSTED:
  case GRPC_STATUS_OUT_OF_RANGE: return FC_RF_LIMIT;
  default: return FC_RF_OTHER;
  }
}

int coord_refusal_note(fc_coord *c, const char *client, int reason) {
  struct coord_limits *L = c->limits;
  if (reason == FC_RF_LIMIT || reason == FC_RF_CALLS) coord_anomaly_rate_limited(c, client); /* `fedc clients` */
  if (!L || !L->ref) return 0;
  return fc_refusals_note(L->ref, client, reason, fc_now_ms());
}

static void emit_audit(json_t *fields, void *ctx) { fc_audit_append(ctx, "refusals", fields); }

static double mib(uint64_t b) { return (double)b / 1048576.0; }

/* The budget's level from the log's size and the free space (see the file comment). */
static int budget_level(const struct coord_limits *L) {
  int low = L->have_free && L->free_bytes < L->floor, lowish = L->have_free && L->free_bytes / 2 < L->floor;
  if (L->audit_bytes >= L->budget || low) return 2;
  if (L->audit_bytes >= L->budget / 10 * 8 || lowish) return 1;
  return 0;
}

void coord_limits_tick(fc_coord *c, uint64_t now_ms) {
  struct coord_limits *L = c->limits;
  if (!L || !L->ref) return;
  fc_refusals_flush(L->ref, now_ms, 0, emit_audit, c->audit);
  pthread_mutex_lock(&L->mu);
  if (now_ms < L->next_check) {
    pthread_mutex_unlock(&L->mu);
    return;
  }
  L->next_check = now_ms + DISK_CHECK_MS;
  L->audit_bytes = fc_audit_bytes(c->audit);
  struct statvfs vfs;
  L->have_free = statvfs(c->cfg.state_dir, &vfs) == 0;
  if (L->have_free) L->free_bytes = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
  int was = L->level, level = budget_level(L);
  L->level = level;
  pthread_mutex_unlock(&L->mu);
  if (level == was) return;
  fc_refusals_set_detail(L->ref, level < 2);
  char state[300];
  snprintf(state, sizeof state,
           "audit log %.1f MiB of its %.0f MiB budget (audit_max_mib), %.1f MiB free on %s (floor %.0f MiB, "
           "state_min_free_mib)",
           mib(L->audit_bytes), mib(L->budget), mib(L->free_bytes), c->cfg.state_dir, mib(L->floor));
  if (level == 2)
    FC_ERROR(MOD, "%s: refusals are now only counted, one audit record per interval for all identities", state);
  else if (level == 1)
    FC_WARN(MOD, "%s: nearing the limit%s", state, was == 2 ? " (refusals are recorded per identity again)" : "");
  else
    FC_INFO(MOD, "%s: back within the budget", state);
}

void coord_limits_get(fc_coord *c, coord_limits_stats *st) {
  struct coord_limits *L = c->limits;
  memset(st, 0, sizeof *st);
  if (!L) return;
  for (int k = 0; k < COORD_LIM_N; k++) st->refused[k] = atomic_load(&L->refused[k]);
  if (L->lim) {
    fc_limiter_stats ls;
    fc_limiter_get_stats(L->lim, &ls);
    st->identities = ls.tracked;
  }
  if (!L->ref) return;
  st->audit = 1;
  st->refusals_counted = fc_refusals_counted(L->ref);
  pthread_mutex_lock(&L->mu);
  st->audit_bytes = L->audit_bytes;
  st->audit_budget = L->budget;
  st->free_bytes = L->have_free ? L->free_bytes : 0;
  st->free_floor = L->floor;
  st->level = L->level;
  pthread_mutex_unlock(&L->mu);
}

void coord_limits_stop(fc_coord *c) {
  struct coord_limits *L = c->limits;
  if (!L) return;
  if (L->ref) fc_refusals_flush(L->ref, fc_now_ms(), 1, emit_audit, c->audit);
  fc_refusals_destroy(L->ref);
  fc_limiter_destroy(L->lim);
  pthread_mutex_destroy(&L->mu);
  free(L);
  c->limits = NULL;
}
