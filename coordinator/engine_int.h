/*
 * engine_int.h - the round engine's internals, shared by engine.c (training
 * rounds, the client table, rate limits, Leave) and engine_eval.c (federated
 * evaluation). Not an interface: everything else goes through engine.h.
 * Like the engine itself, nothing here does I/O or reads a clock.
 */
#ifndef FEDC_COORD_ENGINE_INT_H
#define FEDC_COORD_ENGINE_INT_H

#include "coordinator/engine.h"

enum client_round_state { CR_NONE = 0, CR_SELECTED, CR_TASKED, CR_UPLOADING, CR_DONE, CR_DROPPED };
/* A client's part in an evaluation (ev_state for evaluation ev_round). */
enum client_eval_state { EVR_NONE = 0, EVR_SELECTED, EVR_TASKED, EVR_REPORTING, EVR_DONE, EVR_DROPPED };

typedef struct client_rec {
  char name[65];
  uint64_t last_seen;
  uint64_t round;    /* round the fields below refer to */
  int rstate;        /* enum client_round_state */
  uint64_t last_done; /* last round whose update was accepted (duplicates stay duplicates) */
  double checkin_tokens, upload_tokens; /* rate limits (see eng_take_token); evaluation reports take upload tokens */
  uint64_t checkin_at, upload_at;       /* engine time of the last refill */
  uint32_t offences;      /* secure aggregation: rounds in which it sent bad unmask shares */
  uint64_t excluded_until; /* not selected before this engine time (repeat offenders) */
  uint8_t left;       /* said Leave: not live until it checks in again */
  uint64_t left_round; /* the round whose task Leave dropped (a relayed update of it is taken back; a check-in
                        * does not clear it, unlike `left`) */
  uint8_t heard_done; /* was answered DONE since the federation finished (the drain waits for it) */
  uint8_t ev_capable; /* said at its last check-in that it can evaluate (protocol 1.7) */
  uint8_t ev_state;   /* enum client_eval_state, for evaluation ev_round */
  uint8_t inelig;     /* enum fc_inelig_reason bits its last check-in failed (0 = eligible; engine_elig.c) */
  uint64_t ev_round;
  uint64_t next_due;  /* pace steering: when it was told to check in again (0 = at poll_ms; engine_pace.c) */
  /* async mode (engine_async.c): its task's version and deadline, the
   * buffer its last update went into, the staleness of the upload in progress */
  uint64_t a_version, a_deadline, a_buf, a_stale;
  uint64_t a_gaveup;  /* async: the buffer in which it gave a task up (it waits for the next) */
  uint64_t a_barred_until; /* async: its last task expired unfinished: no task before then (engine time) */
  uint64_t a_full_retry_at; /* async: when its last BUFFER_FULL told it to come back (engine time) */
  uint64_t a_slot_until;    /* async: its task stops counting against the concurrency then (async_slot_ms) */
  uint8_t a_released;       /* async: its task runs past async_slot_ms, no longer counted in a_training */
  uint8_t a_overdue;        /* async: its upload streams on without a place in the buffer (counted in a_overdue) */
  uint64_t a_up_at;         /* async: when its upload in progress began (engine time) */
  uint64_t a_unheld_until;  /* async: its uploads hold no place in the buffer before this (engine time) */
} client_rec;

/* The evaluation due or running, and one due while it runs (engine_eval.c). */
typedef struct eng_eval {
  int state;                 /* enum fc_eval_state */
  uint64_t round, version;   /* the round whose model is evaluated, and that model */
  uint8_t sha[FC_SHA256_LEN];
  uint64_t due_ms;           /* when it became due: a pending one waits at most eval_ms for clients */
  int has_next;              /* one more became due while this one runs */
  uint64_t next_round, next_version, next_due_ms;
  uint8_t next_sha[FC_SHA256_LEN];
  int skipped;               /* one due was superseded before it started (SKIPPED) */
  uint64_t skipped_round, skipped_version;
  uint64_t started_ms, pickup_deadline, deadline;
  uint32_t selected, tasked, received, reporting;
  int sa_ready;
  uint64_t draws;            /* cohorts drawn so far: seeds the next draw */
  char reason[160];
} eng_eval;

struct fc_engine {
  fc_engine_cfg cfg;
  int state;
  int paused;   /* by an admin: persisted across restarts */
  int blocked;  /* by the coordinator (state directory not writable): not persisted */
  uint64_t next_round;
  uint64_t round;
  uint64_t version;
  uint8_t sha[FC_SHA256_LEN];
  uint64_t completed, abandoned;
  uint64_t budget;
  /* clients: open-addressing hash table of indices into recs (start_round
   * sorts recs by name: nothing may keep an index across engine calls) */
  client_rec *recs;
  uint32_t nrecs, caprecs;
  uint32_t *slots;
  uint32_t nslots;
  /* current round */
  uint64_t started_ms, pickup_deadline, deadline;
  uint32_t selected, tasked, received, uploading;
  uint64_t examples, bytes_in, bytes_out;
  uint32_t counted; /* secure aggregation buckets: inputs that counted (0 = received) */
  double loss_sum;
  fc_round_stats last;
  char abandon_reason[160];
  uint32_t retry_ms; /* of the last RATE_LIMITED verdict */
  double stranger_tokens; /* the bucket identities without a record share (cfg.stranger_rate) */
  uint64_t stranger_at;
  int live_dirty;            /* a client became live since the last count */
  int live_short;            /* the last count found too few */
  uint64_t live_counted_at;  /* engine time of the last count (enough_live) */
  int sa_ready;              /* secure aggregation: the open stage has everything */
  double expected;           /* Poisson sampling: expected cohort of the running round */
  uint32_t lost;             /* members of the running round that left (fc_engine_leave) */
  uint32_t replaced;         /* replacements drawn in the running round (seeds the next draw) */
  uint32_t missed, added;    /* the last pick-up deadline: members dropped, replacements drawn */
  int sa_reselect;           /* secure aggregation: the cohort changed before any task went out */
  uint32_t max_retry_ms;     /* longest retry_after a check-in was told (the drain's timeout) */
  eng_eval ev;               /* federated evaluation (engine_eval.c) */
  /* pace steering (engine_pace.c) */
  double pace_cursor;        /* engine time (ms) of the next free check-in slot */
  uint64_t pace_counted_at;  /* engine time of the last population count (0 = never) */
  uint32_t pace_pop;         /* live devices at that count */
  double pace_share;         /* ... the share of them eligible */
  uint64_t pace_draws;       /* jitter draws so far (seeds the next) */
  /* async mode (engine_async.c) */
  uint32_t a_training;       /* records TASKED or UPLOADING (any buffer), not released: the concurrency in use */
  uint64_t a_freed;          /* concurrency slots freed since start (a task ended or was released) */
  uint64_t a_freed_mark, a_rate_at; /* a_freed and engine time at the last rate measure */
  double a_steer_rate;       /* check-ins a second waiting clients are steered to (0: not measured yet) */
  uint32_t a_released;       /* records TASKED or UPLOADING past async_slot_ms */
  uint64_t a_released_total;
  uint32_t a_hist[FC_STALE_BUCKETS]; /* the open buffer's staleness histogram */
  uint64_t a_stale_refused, a_expired;
  uint64_t a_scan_at;        /* engine time of the last deadline scan */
  uint32_t a_overdue;        /* uploads streaming without a place in the buffer (not in `uploading`) */
  uint64_t a_overdue_total;  /* uploads that outlived their hold, or began without one, since start */
  char a_why[200];           /* the last STALE verdict's detail */
};

/* The state in which uploads are taken: the masked inputs' stage with secure aggregation. */
static inline int eng_upload_state(const fc_engine *e) { return e->cfg.secagg ? FC_ENG_SA_MASKED : FC_ENG_TRAINING; }

/* A round is running (cohort selected, not yet finalized). */
static inline int eng_running(int state) {
  return state == FC_ENG_TRAINING || state == FC_ENG_AGGREGATING || state >= FC_ENG_SA_SHARE;
}

/* Saturating: durations come from configuration and may be huge; a wrapped
 * sum would make every deadline already passed (or no client ever live). */
static inline uint64_t eng_add_sat(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

/* Live: checked in within client_ttl_ms, or told by pace steering to come
 * back later than that and not yet overdue by client_ttl_ms. */
static inline int eng_is_live(const fc_engine *e, const client_rec *r, uint64_t now) {
  uint64_t last = r->next_due > r->last_seen ? r->next_due : r->last_seen;
  return !r->left && eng_add_sat(last, e->cfg.client_ttl_ms) >= now;
}

/* Pace steering: due to check in within the first three quarters of a
 * selection (pick-up) window starting now, so it hears of its selection in
 * time (always, for a device that is not steered). */
static inline int eng_due(const fc_engine *e, const client_rec *r, uint64_t now) {
  return r->next_due <= eng_add_sat(now, e->cfg.pickup_ms - e->cfg.pickup_ms / 4);
}

/* Live, eligible at its last check-in, due within the selection window and
 * not excluded for repeated offences: may be selected. */
static inline int eng_selectable(const fc_engine *e, const client_rec *r, uint64_t now) {
  return eng_is_live(e, r, now) && r->excluded_until <= now && !r->inelig && eng_due(e, r, now);
}

/* At least `need` selectable clients (engine_clients.c; O(clients), at most every
 * 500 ms while short unless a client became live). */
int eng_enough_live(fc_engine *e, uint64_t now, uint32_t need);

/* A token bucket in engine time: 1 and a token taken, or 0 with the wait
 * until the next token in *retry_ms. A new record starts full. */
int eng_take_token(double *tokens, uint64_t *at, double rate, double burst, uint64_t now, uint32_t *retry_ms);
/* An identity without a record takes from the shared bucket: 1, or 0 with
 * the wait in e->retry_ms. */
int eng_stranger_token(fc_engine *e, uint64_t now);
client_rec *eng_find(fc_engine *e, const char *name);
/* engine_clients.c: the record of name, added if there is room (NULL: the
 * table is full or the name too long); the index grown to 2x its size. */
client_rec *eng_find_or_add(fc_engine *e, const char *name);
int eng_grow_slots(fc_engine *e);
/* (Re)build the index with n slots, e.g. after the records were sorted. */
int eng_rebuild_slots(fc_engine *e, uint32_t n);
uint32_t eng_hash_name(const char *s);

/* The check-in behind fc_engine_checkin_eval and fc_engine_checkin_device
 * (engine.c); dev NULL: the client reported nothing. */
int eng_checkin(fc_engine *e, const char *client, const fc_device_state *dev, int can_evaluate, uint64_t last_round,
                uint64_t now, fc_task_info *task, fc_eval_info *etask, uint32_t *retry_ms, char *why, size_t whylen,
                int held);

/* Leaving DONE: a client told DONE before must hear it again next time
 * (engine.c; engine_admin.c calls it when rounds are added). */
void eng_forget_done(fc_engine *e);

/* ---- engine_async.c, called by engine.c when cfg.async ---- */
int eng_async_checkin(fc_engine *e, client_rec *r, uint64_t now, fc_task_info *task, uint32_t *retry_ms);
int eng_async_upload_begin(fc_engine *e, client_rec *r, uint64_t round, uint64_t version, uint64_t now);
int eng_async_upload_commit(fc_engine *e, client_rec *r, uint64_t round, uint64_t examples, double loss,
                            uint64_t bytes, uint64_t now);
void eng_async_upload_abort(fc_engine *e, client_rec *r, uint64_t round, uint64_t now, int client_fault);
int eng_async_leave(fc_engine *e, client_rec *r, uint64_t now, fc_leave_info *info);
int eng_async_tick(fc_engine *e, uint64_t now);
/* Clear the per-buffer counters and open buffer e->next_round (TRAINING). */
void eng_async_open(fc_engine *e, uint64_t now);

/* ---- engine_elig.c, called by engine.c ---- */
/* Record what the device reported (dev NULL: nothing) against the policy:
 * sets r->inelig and, when ineligible, the reason in why. */
void eng_elig_note(fc_engine *e, client_rec *r, const fc_device_state *dev, char *why, size_t whylen);

/* ---- engine_pace.c, called by engine.c ---- */
/* The wait to tell a device that is not needed now (a WAIT or an
 * ineligible answer): poll_ms, or its slot when steering; sets r->next_due. */
uint32_t eng_pace_retry(fc_engine *e, client_rec *r, uint64_t now);
/* The placement alone, at `rate` check-ins a second (engine_async.c steers
 * waiting clients by the rate its slots free up). */
uint32_t eng_pace_place(fc_engine *e, client_rec *r, uint64_t now, double rate);
/* The population a cohort fraction applies to: the candidates, or (when
 * steering, where only the devices due are candidates) the eligible live
 * population estimate if larger. */
uint32_t eng_pace_base(fc_engine *e, uint32_t candidates, uint64_t now);

/* ---- engine_eval.c, called by engine.c ---- */
/* A round's model was published (e->completed counts it): due for evaluation? */
void eng_eval_published(fc_engine *e, uint64_t now);
/* At a check-in that passed the rate limit, before the training answer:
 * FC_CHECKIN_EVAL (task set), FC_CHECKIN_WAIT (DONE held back while the final
 * model's evaluation is still to draw), or 0: answer as for training. */
int eng_eval_checkin(fc_engine *e, client_rec *r, uint64_t last_round, uint64_t now, fc_eval_info *task,
                     uint32_t *retry_ms);
/* The client left: out of the running evaluation's cohort. */
void eng_eval_leave(fc_engine *e, client_rec *r);

#endif
