/*
 * engine.h - the round engine: an I/O-free state machine (no sockets, threads
 * or clocks; time comes in as `now_ms`). The gRPC handlers and the round
 * driver thread feed it events under one lock and act on what it returns.
 * States and transitions are documented at the top of engine.c.
 */
#ifndef FEDC_COORD_ENGINE_H
#define FEDC_COORD_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/sha256.h"
#include "secagg/eval_stats.h"

enum fc_engine_state {
  FC_ENG_WAITING = 0,     /* not enough live clients (or paused, or budget spent) */
  FC_ENG_TRAINING = 1,    /* cohort selected; tasks handed out; updates arriving */
  FC_ENG_AGGREGATING = 2, /* enough updates; the driver is finalizing the model */
  FC_ENG_DONE = 3,        /* round budget spent: clients are told DONE */
  /* Secure aggregation (cfg.secagg): TRAINING is also the advertise-keys
   * stage; then one state per later stage, each with its own deadline. */
  FC_ENG_SA_SHARE = 4,       /* round 1: encrypted shares */
  FC_ENG_SA_MASKED = 5,      /* round 2: masked inputs (the only state accepting uploads) */
  FC_ENG_SA_CONSISTENCY = 6, /* round 3: signatures over the survivors */
  FC_ENG_SA_UNMASK = 7,      /* round 4: unmask shares; then AGGREGATING */
};
const char *fc_engine_state_name(int s);

typedef struct fc_engine_cfg {
  uint32_t min_clients;      /* live clients needed before a round starts */
  uint32_t cohort_size;      /* clients selected per round (0 = use fraction) */
  double cohort_fraction;    /* of live clients, when cohort_size == 0 */
  uint32_t min_updates;      /* updates needed by the deadline, else abandon */
  uint64_t rounds;           /* round budget (completed rounds); 0 = unlimited */
  uint64_t pickup_ms;        /* selected clients must fetch their task within this */
  uint64_t round_ms;         /* updates must arrive within this of round start */
  uint64_t client_ttl_ms;    /* a client is live if it checked in within this */
  uint32_t poll_ms;          /* retry_after_ms told to waiting clients */
  uint64_t seed;             /* cohort selection seed (reproducible) */
  uint32_t max_clients;      /* refuse new identities beyond this many */
  /* Per identity token buckets (requests per second, and at once): beyond
   * them a check-in or an upload is refused with a time to retry after.
   * checkin_rate 0 = automatic: 2 per poll interval, bursts of 20 + 4 s of that. */
  double checkin_rate, checkin_burst;
  double upload_rate, upload_burst;
  /* Identities without a client record (uploads from one that never
   * checked in; check-ins once max_clients are known) share one bucket:
   * none of them can be in a round, so sharing costs nobody a round. */
  double stranger_rate, stranger_burst;
  /* Secure aggregation: after the advertise stage (round_ms from the start,
   * training included) each stage may stay open sa_stage_ms. */
  int secagg;
  uint64_t sa_stage_ms;
  /* Keys first (SecAggParams.keys_first): clients advertise and share while
   * they train, so the advertise stage closes early and the masked stage
   * stays open until round_ms from the start plus sa_stage_ms. */
  int sa_keys_first;
  /* Differential privacy: Poisson subsampling. Each live client is in a
   * round independently with probability cohort_fraction (cohort_size must
   * be 0), drawn from sample_secret (secret randomness, not `seed`). */
  int poisson;
  uint64_t sample_secret;
  /* Secure aggregation: an identity named for bad unmask shares in
   * offence_limit rounds (0 = never) is left out of selection for
   * offence_exclude_s seconds from that offence (0 = counted only). */
  uint32_t offence_limit;
  uint64_t offence_exclude_s;
  /* Federated evaluation (engine_eval.c): the model of every eval_every-th
   * completed round, and of the last, is evaluated by eval_cohort clients
   * (0: eval_fraction of the live clients that can evaluate), drawn from
   * those not in the running round where possible; eval_min results by
   * eval_ms after its start, else it is abandoned. eval_every 0 = off. */
  uint32_t eval_every;
  uint32_t eval_cohort;
  double eval_fraction;
  uint32_t eval_min;
  uint64_t eval_ms;
  /* Device eligibility (engine_elig.c): what a device must report at
   * check-in (protocol 1.8) to be selected. All 0 = nothing required. */
  struct fc_elig_policy {
    int require_charging, require_unmetered, require_idle;
    uint32_t min_battery_percent;    /* 0 = no minimum */
    uint64_t min_free_storage_bytes; /* 0 = no minimum */
    /* A client that reports nothing (before 1.8, or no device-state
     * callback) meets no requirement; 1 = treat it as meeting them all (a
     * fleet that is still being upgraded). */
    int allow_unreported;
  } elig;
  /* Pace steering (engine_pace.c; Bonawitz et al. 2019, sec. 2.3): waiting
   * devices are told when to come back so check-ins arrive at a target rate.
   * pace_rate: check-ins per second wanted (0 = from the rounds: what fills a
   * cohort within one selection window); pace_min_rate: no steering while
   * the population polling at poll_ms stays below this rate; pace_max_ms: no
   * device is told to wait longer (the client runtime caps at 1 h too). */
  int pace;
  double pace_rate, pace_min_rate;
  uint64_t pace_max_ms;
  /* Asynchronous buffered aggregation (engine_async.c; FedBuff, Nguyen et
   * al. 2022): async 1 = up to async_concurrency clients train at once on
   * the current version; a version is published every async_buffer accepted
   * updates, each weighted by fc_staleness_weight of its staleness; updates
   * more than max_staleness versions behind are refused. `rounds` then
   * counts buffers (versions); round_ms is each client's own deadline.
   * async_slot_ms: a task stops counting against async_concurrency this long
   * after it was handed out (its update is still taken within max_staleness
   * and round_ms), so stragglers do not hold the slots of fast clients
   * (over-selection, Bonawitz et al. 2019 Sec. 2.2); 0 = it counts until it
   * ends. */
  int async;
  uint32_t async_concurrency, async_buffer, max_staleness;
  uint64_t async_slot_ms;
  /* async_hold_ms: the longest an upload holds its place in the buffer
   * (engine_async.c, "buffer places"); 0 = 2 s. The coordinator sets it
   * from the model's size: 2 s, or 1 s per MiB if longer. */
  uint64_t async_hold_ms;
  struct fc_staleness_fn {
    int kind;    /* enum fc_staleness_kind */
    double a, b; /* poly: exponent a; hinge: slope a past b versions */
    int fedbuff; /* 1: the buffer's sum is divided by its examples, not its weights */
  } staleness;
} fc_engine_cfg;

/* ---- asynchronous buffered aggregation (engine_async.c) ---- */
typedef struct fc_engine fc_engine;
/* The most updates one buffer counts live: async_buffer held places, and
 * overdue uploads committing past them, up to async_buffer (or
 * async_concurrency if fewer) more; the rows of a robust rule's arena and
 * the reproducible sum's terms (a fourth review: K + C rows would make a
 * robust rule's arena scale with C). */
static inline uint32_t fc_async_buffer_rows(const fc_engine_cfg *c) {
  return c->async_buffer + (c->async_concurrency < c->async_buffer ? c->async_concurrency : c->async_buffer);
}
enum fc_staleness_kind { FC_STALE_POLY = 0, FC_STALE_CONST = 1, FC_STALE_HINGE = 2 };
/* The weight of an update s versions behind (s >= 0): const 1; poly
 * (1+s)^-a (a = 0.5: 1/sqrt(1+s), the default); hinge 1 for s <= b, else
 * 1/(a(s-b)+1). Pure. */
double fc_staleness_weight(const struct fc_staleness_fn *f, uint64_t s);
/* Parse "const", "poly[:A]" or "hinge[:A:B]" (defaults poly a 0.5, hinge a
 * 10 b 4), each optionally followed by ",fedbuff" (FedBuff's Algorithm 1:
 * the buffer's result is sum w(s) n delta / sum n, so a buffer of stale
 * updates moves the model less; without it sum w n delta / sum w n);
 * FEDC_ERR_INVALID with a one-line reason. */
int fc_staleness_parse(const char *text, struct fc_staleness_fn *out, char *err, size_t errlen);
/* "poly:0.5" etc.: what parse reads back. */
void fc_staleness_text(const struct fc_staleness_fn *f, char *buf, size_t n);
/* Staleness histogram buckets: 0, 1, 2, 3, 4-7, 8-15, 16+ versions behind. */
#define FC_STALE_BUCKETS 7
int fc_stale_bucket(uint64_t s);
const char *fc_stale_bucket_name(int i);
/* The async state as status shows it. */
typedef struct fc_async_info {
  uint32_t training;      /* clients holding a task now (of async_concurrency) */
  uint32_t released;      /* tasks past async_slot_ms still running (not counted in training) */
  uint32_t buffered;      /* updates in the open buffer (of async_buffer) */
  uint32_t uploading;
  uint32_t hist[FC_STALE_BUCKETS]; /* the open buffer's staleness histogram */
  uint64_t stale_refused, expired; /* since start: refused as too stale, tasks past their deadline */
  uint64_t released_total;         /* since start: tasks that gave their slot up at async_slot_ms */
  uint64_t examples;               /* the open buffer's example weights, sum n (",fedbuff" divides by it) */
  uint32_t overdue;                /* of `uploading`: streaming without a place in the buffer (past their hold) */
  uint64_t overdue_total;          /* since start: uploads that outlived their hold or began without one */
} fc_async_info;
void fc_engine_async_info(const fc_engine *e, fc_async_info *out);
/* Async: the live clients the next buffer waits for (min_clients while no
 * round id was ever spent: a new federation's first buffer), else 0. */
uint32_t fc_engine_async_first_wait(const fc_engine *e);
/* Between upload_begin (OK) and commit, under the lock the commit takes:
 * FC_UP_OK if a commit of client's update for `round` at `now` will count
 * it (async: it is UPLOADING for exactly that round's task, before the
 * task's deadline, a buffer open), with the staleness weight and how stale
 * it is (1 and 0 when not async); else the verdict the commit would give
 * (NOT_IN_ROUND, LATE), out-parameters untouched: nothing of the update may
 * be written anywhere then. */
int fc_engine_async_weight(fc_engine *e, const char *client, uint64_t round, uint64_t now, double *weight,
                           uint64_t *staleness);
/* The upload deadline of client's task (engine time; async: its own, else
 * the round's). */
uint64_t fc_engine_task_deadline(fc_engine *e, const char *client);
/* Why the last STALE verdict was given, in one line. */
const char *fc_engine_refusal_detail(const fc_engine *e);
/* Restart mid-buffer: an update accepted into the open buffer before the
 * restart (replayed from the coordinator's buffer log): counted in the
 * open buffer as if committed now, client marked as a contributor (also
 * past async_buffer, if the log was written under a larger one: nothing
 * accepted is dropped). FEDC_ERR_INVALID unless async with a buffer open
 * and the client not already in it. */
int fc_engine_async_replay(fc_engine *e, const char *client, uint64_t examples, double loss, uint64_t staleness,
                           uint64_t bytes);
/* What fc_engine_async_replay would answer, counting nothing: asked before
 * the aggregator takes the update, so the engine counts only what it got. */
int fc_engine_async_replay_check(fc_engine *e, const char *client);

void fc_engine_cfg_defaults(fc_engine_cfg *c);

typedef struct fc_engine fc_engine;

/* Create an engine whose next round id is first_round and global version is
 * `version` (with its hash). */
int fc_engine_create(const fc_engine_cfg *cfg, uint64_t first_round, uint64_t completed, uint64_t version,
                     const uint8_t sha[FC_SHA256_LEN], fc_engine **out);
void fc_engine_destroy(fc_engine *e);

/* ---- events and their answers ---- */

enum fc_checkin_action {
  FC_CHECKIN_WAIT = 1,
  FC_CHECKIN_TRAIN = 2,
  FC_CHECKIN_DONE = 3,
  FC_CHECKIN_REFUSED = 4,      /* client table full */
  FC_CHECKIN_RATE_LIMITED = 5, /* over its check-in rate: *retry_ms says when */
  FC_CHECKIN_EVAL = 6,         /* selected for an evaluation: fc_engine_checkin_eval's *etask */
  FC_CHECKIN_INELIGIBLE = 7,   /* fails the eligibility policy: a WAIT with a reason (fc_engine_checkin_device) */
};

typedef struct fc_task_info {
  uint64_t round;
  uint64_t version;
  uint8_t sha[FC_SHA256_LEN];
  uint64_t deadline_ms;    /* engine time */
  uint64_t client_seed;    /* per client and round */
} fc_task_info;

/* "client X checked in". Returns an fc_checkin_action; *task is set for TRAIN,
 * *retry_ms for WAIT and RATE_LIMITED, and for TRAIN the wait from now
 * until it should check in after its round: poll_ms, or more when pace
 * steering gave it a slot (engine_pace.c; CheckInResponse.next_checkin_after_ms). */
int fc_engine_checkin(fc_engine *e, const char *client, uint64_t now_ms, fc_task_info *task, uint32_t *retry_ms);
/* The same from a client that says whether it can run evaluation tasks
 * (protocol 1.7) and the last round it is done with (CheckInRequest.
 * last_round: one it uploaded for or gave up): may also return
 * FC_CHECKIN_EVAL with *etask set, and WAIT instead of DONE while an
 * evaluation of the final model is still to draw its cohort (engine_eval.c). */
struct fc_eval_info;
int fc_engine_checkin_eval(fc_engine *e, const char *client, int can_evaluate, uint64_t last_round, uint64_t now_ms,
                           fc_task_info *task, struct fc_eval_info *etask, uint32_t *retry_ms);

/* ---- device eligibility (engine_elig.c) and pace steering (engine_pace.c) ----
 * What a device said about itself at check-in (CheckInRequest.device, 1.8). */
typedef struct fc_device_state {
  int reported;                /* 0: it said nothing (older client, or no device-state callback) */
  int charging, unmetered, idle;
  uint32_t battery_percent;    /* 0..100; 0 = unknown (fails any minimum) */
  uint64_t free_storage_bytes; /* 0 = unknown (fails any minimum) */
} fc_device_state;
/* Why a device is not eligible: a bit per requirement it fails. */
enum fc_inelig_reason {
  FC_INELIG_UNREPORTED = 1 << 0,
  FC_INELIG_NOT_CHARGING = 1 << 1,
  FC_INELIG_METERED = 1 << 2,
  FC_INELIG_NOT_IDLE = 1 << 3,
  FC_INELIG_BATTERY = 1 << 4,
  FC_INELIG_STORAGE = 1 << 5,
};
#define FC_INELIG_NREASONS 6
/* The requirements of policy p that state d fails (0 = eligible). Pure. */
unsigned fc_elig_check(const struct fc_elig_policy *p, const fc_device_state *d);
/* "not charging; battery 20% < 50%": one clause per failed requirement. */
void fc_elig_explain(const struct fc_elig_policy *p, const fc_device_state *d, unsigned reasons, char *buf, size_t n);
/* Reason bit i's short name for status ("not_charging", ...). */
const char *fc_elig_reason_name(int i);
/* The policy in one line ("charging, battery >= 50%" or "none"). */
void fc_elig_policy_text(const struct fc_elig_policy *p, char *buf, size_t n);

/* "client X checked in, saying this about itself": fc_engine_checkin_eval
 * plus eligibility. A device that fails the policy is answered
 * FC_CHECKIN_INELIGIBLE (reason in why, *retry_ms paced) instead of a task,
 * unless the federation is DONE; it is not selected until a check-in says
 * it is eligible again. A member of the running round that turns
 * ineligible before fetching its task gets none (it misses pick-up and is
 * replaced as any other); one already training finishes its round. */
int fc_engine_checkin_device(fc_engine *e, const char *client, const fc_device_state *dev, int can_evaluate,
                             uint64_t last_round, uint64_t now_ms, fc_task_info *task, struct fc_eval_info *etask,
                             uint32_t *retry_ms, char *why, size_t whylen);
/* The same check-in asked again while its call is held (the coordinator
 * answers a waiting client when the round it waits for opens, not at its
 * next poll): no check-in token is spent (the client asked once), and a
 * client the table no longer knows gets WAIT. */
int fc_engine_checkin_held(fc_engine *e, const char *client, const fc_device_state *dev, int can_evaluate,
                           uint64_t last_round, uint64_t now_ms, fc_task_info *task, struct fc_eval_info *etask,
                           uint32_t *retry_ms, char *why, size_t whylen);

/* The eligible population (O(clients)): live devices, how many of them are
 * eligible, and how many fail each requirement (a device failing two is
 * counted under both). */
typedef struct fc_elig_counts {
  uint32_t seen, eligible;
  uint32_t by_reason[FC_INELIG_NREASONS];
} fc_elig_counts;
void fc_engine_elig_counts(const fc_engine *e, uint64_t now_ms, fc_elig_counts *out);

/* Pace steering as it stands: the population estimate, the target rate
 * (check-ins/s), the window a waiting device is told now (ms; poll_ms when
 * not steering) and whether steering is on for this federation. */
typedef struct fc_pace_info {
  uint32_t population;
  double eligible_share;
  double target_rate;
  uint64_t window_ms;
  int active;
} fc_pace_info;
void fc_engine_pace_info(fc_engine *e, uint64_t now_ms, fc_pace_info *out);

/* Outcome codes for uploads (map to gRPC statuses in the service). */
enum fc_upload_verdict {
  FC_UP_OK = 0,
  FC_UP_NOT_IN_ROUND = 1,   /* no round open, or client not selected in it */
  FC_UP_WRONG_ROUND = 2,    /* update for another round id */
  FC_UP_WRONG_VERSION = 3,  /* delta against another model version */
  FC_UP_DUPLICATE = 4,      /* already uploaded in this round */
  FC_UP_LATE = 5,           /* deadline passed */
  FC_UP_BUSY = 6,           /* an upload from this client is already in progress */
  FC_UP_RATE_LIMITED = 7,   /* too many upload attempts: fc_engine_retry_ms says when */
  FC_UP_TOO_EARLY = 8,      /* secure aggregation: the masked-input stage is not open yet */
  FC_UP_STALE = 9,          /* async: trained from a version more than max_staleness behind */
  FC_UP_BUFFER_FULL = 10,   /* async: the buffer is full or being published: retry shortly */
};
const char *fc_upload_verdict_text(int v);

/* The wait (ms) the last RATE_LIMITED verdict asked for. */
uint32_t fc_engine_retry_ms(const fc_engine *e);
/* "client X starts uploading for round R against version V". */
int fc_engine_upload_begin(fc_engine *e, const char *client, uint64_t round, uint64_t version, uint64_t now_ms);
/* The same for an update an aggregator took and names in a partial (issue
 * 23): no upload token is charged (the aggregator took one update of the
 * client this round; the client must not be able to drain its own tokens at
 * the leader and so void the partial), and a member that said Leave during
 * the round after handing its update over is taken back into the round (its
 * update arrived; refusing it would refuse everyone in the same partial). */
int fc_engine_upload_begin_relayed(fc_engine *e, const char *client, uint64_t round, uint64_t version,
                                   uint64_t now_ms);
/* "client X's upload arrived whole and verified": counted. Returns FC_UP_OK or
 * FC_UP_LATE if the round closed meanwhile (the caller then discards it). */
int fc_engine_upload_commit(fc_engine *e, const char *client, uint64_t round, uint64_t examples, double loss,
                            uint64_t bytes, uint64_t now_ms);
/* "client X's upload failed" (stream ended early, hash mismatch, bad values...):
 * the client may try again while the round is open. client_fault: the
 * client's doing (a cut or bad stream, not the coordinator busy or failing
 * to keep it): async, its uploads then hold no place in the buffer for a
 * while if this one held one (engine_async.c). */
void fc_engine_upload_abort(fc_engine *e, const char *client, uint64_t round, uint64_t now_ms, int client_fault);
/* 1 if the client is in the cohort of the round running now and has not
 * finished its upload (it needs the model). */
int fc_engine_in_round(fc_engine *e, const char *client);
/* Bytes sent to clients (model downloads) during the round. */
void fc_engine_add_bytes_out(fc_engine *e, uint64_t bytes);

/* "client X is leaving" (the Leave call): it is not live until it checks in
 * again. A member of the running round that has not uploaded is dropped from
 * it and, where the file comment of engine.c allows, replaced. */
enum fc_leave_outcome {
  FC_LEAVE_GONE = 0,     /* unknown, or not live already: nothing changed */
  FC_LEAVE_IDLE = 1,     /* live, not in the round (or its update already counts): no longer live */
  FC_LEAVE_DROPPED = 2,  /* dropped from the round's cohort, which shrank */
  FC_LEAVE_REPLACED = 3, /* dropped and replaced by info->replacement */
};
typedef struct fc_leave_info {
  uint64_t round;          /* the round it was dropped from (DROPPED/REPLACED), else 0 */
  uint32_t selected;       /* the cohort now */
  char replacement[65];
} fc_leave_info;
int fc_engine_leave(fc_engine *e, const char *client, uint64_t now_ms, fc_leave_info *info);
/* "client X gives its task of `round` up" (Leave with a round, protocol
 * 1.19: its trainer failed, or the model did not verify): dropped from that
 * round as fc_engine_leave drops it (async: its slot freed), but still live
 * and selectable. FC_LEAVE_GONE if its task is not of `round` (unknown,
 * never picked, or picked since for a later round); FC_LEAVE_IDLE if it is
 * but nothing was left to drop (uploaded, dropped already, or past the
 * stage where the engine drops members: SecAgg's later stages). */
int fc_engine_give_up(fc_engine *e, const char *client, uint64_t round, uint64_t now_ms, fc_leave_info *info);
/* The last pick-up deadline that replaced members (FC_TICK_REPLACED): how
 * many missed it and how many replacements were drawn. */
void fc_engine_last_replacement(const fc_engine *e, uint32_t *missed, uint32_t *added);
/* DONE: live clients not yet answered DONE (the first `cap` names in names,
 * valid until the next engine call); the total is returned. */
uint32_t fc_engine_done_pending(const fc_engine *e, uint64_t now_ms, const char **names, uint32_t cap);
/* The longest retry_after_ms a check-in was told (poll_ms or a rate limit's). */
uint32_t fc_engine_max_retry_ms(const fc_engine *e);

/* What the driver must do after a tick. */
enum fc_tick_action {
  FC_TICK_NONE = 0,
  FC_TICK_AGGREGATE = 1,
  FC_TICK_ABANDON = 2,
  FC_TICK_STARTED = 3,
  FC_TICK_SA_CLOSE = 4, /* secure aggregation: close the open stage (all in, or its deadline) */
  FC_TICK_REPLACED = 5, /* members that missed pick-up were replaced (fc_engine_last_replacement) */
};
/* "time is now": start a round, close one at its deadline, ... STARTED also
 * when a secure-aggregation cohort changed before any task went out (a
 * replacement): the coordinator sets up the session again. */
int fc_engine_tick(fc_engine *e, uint64_t now_ms);
/* Secure aggregation. "everyone expected has sent this stage's message":
 * the next tick closes the stage without waiting for its deadline. */
void fc_engine_sa_ready(fc_engine *e);
/* "the stage closed with enough survivors": on to the next stage (new
 * deadline). Returns FC_TICK_AGGREGATE after the last stage, else FC_TICK_NONE. */
int fc_engine_sa_advance(fc_engine *e, uint64_t now_ms);
/* The deadline of a SecAgg stage (FC_ENG_SA_*) that opened at open_ms in a
 * round started at started_ms: open_ms + sa_stage_ms, and with keys first
 * the masked stage never before started_ms + round_ms + sa_stage_ms (its
 * members are still training). The one rule for the engine and for the
 * aggregator tier's take deadline (coord_aggtier.c). */
uint64_t fc_engine_sa_stage_end(const fc_engine_cfg *cfg, int stage, uint64_t started_ms, uint64_t open_ms);
/* Clients of the running round's cohort still expected (selected, minus
 * those dropped for not picking up their task). */
uint32_t fc_engine_expected(const fc_engine *e);
/* Secure aggregation: the round's total weight, known only once unmasked. */
void fc_engine_set_examples(fc_engine *e, uint64_t examples);
/* Secure aggregation buckets: the inputs that counted (those of a dropped
 * bucket were received but never aggregated); the round's participants. */
void fc_engine_set_counted(fc_engine *e, uint32_t inputs);
/* Names of the running round's cohort in name order (pointers valid until
 * the next engine call); returns how many (at most cap). */
uint32_t fc_engine_cohort(const fc_engine *e, const char **out, uint32_t cap);

/* "client X sent bad unmask shares" (named by the SecAgg core in the
 * running round): one offence against the identity, whatever the number of
 * secrets. At offence_limit offences (and each one after) it is excluded
 * from selection until now_ms + offence_exclude_s. Returns its offences so
 * far (0 if the identity is unknown); *until: the end of its exclusion in
 * engine time, 0 if not excluded. Kept in memory: a restart forgets it (the
 * audit log keeps the record). */
uint32_t fc_engine_offence(fc_engine *e, const char *client, uint64_t now_ms, uint64_t *until);
/* Leave client out of selection until `until` (engine time) unless it is
 * already out longer (the anomaly policy's cool-down, coord_anomaly.c).
 * 0 if the identity has no record yet (it is applied again later). */
int fc_engine_exclude(fc_engine *e, const char *client, uint64_t until);

/* Reason text of the last abandon. */
const char *fc_engine_abandon_reason(const fc_engine *e);

/* "the driver published version V (hash) from round R". Back to WAITING/DONE. */
void fc_engine_published(fc_engine *e, uint64_t version, const uint8_t sha[FC_SHA256_LEN], uint64_t now_ms);
/* "the driver failed to finalize": abandon the round. */
void fc_engine_finalize_failed(fc_engine *e, const char *why, uint64_t now_ms);

/* Admin controls (engine_admin.c, with the budget, block and status below). */
void fc_engine_pause(fc_engine *e, int paused);
void fc_engine_add_rounds(fc_engine *e, uint64_t extra);
/* "no more rounds": the budget becomes the rounds completed (the privacy
 * budget is spent); a running round ends normally. */
void fc_engine_stop_budget(fc_engine *e);
/* Poisson sampling: the running (or last) round's expected cohort size. */
double fc_engine_expected_cohort(const fc_engine *e);
/* "the state directory cannot be written" (1) / "it can again" (0): while
 * blocked no new round starts; unlike pause it is not an admin decision. */
void fc_engine_block(fc_engine *e, int blocked);
/* Admin state and counters saved before a restart (budget 0 = unlimited). */
void fc_engine_restore(fc_engine *e, uint64_t abandoned, int paused, uint64_t budget);

#define FC_ROUND_BLAMED_MAX 4

/* Federated evaluation of a round's model (engine_eval.c runs the cohort,
 * coordinator/coord_eval.c the totals): part of that round's record. */
typedef struct fc_round_eval {
  int outcome;              /* 0 none, 1 completed, 2 abandoned */
  uint64_t version;         /* the model evaluated */
  uint32_t selected, clients;
  fc_eval_stats stats;      /* the cohort's totals (noisy under DP) */
  uint64_t started_ms, ended_ms;
  uint32_t sa_remaining[5]; /* secure aggregation: clients left after each stage */
  double dp_noise, dp_epsilon; /* differential privacy: the totals' noise multiplier, epsilon after */
  char reason[160];
  /* Drift from stats.class_count against the previous evaluated version's,
   * when there is no reference set (coordinator/coord_drift_fed.c). */
  int dr_checked, dr_tripped;
  double dr_psi, dr_threshold;
  char dr_action[8];        /* "flag" | "hold" when tripped */
  uint64_t dr_baseline;     /* the version compared against */
} fc_round_eval;

/* Round record of the round that just ended (after AGGREGATE→published or ABANDON). */
typedef struct fc_round_stats {
  uint64_t round;
  int completed;           /* 1 completed, 0 abandoned */
  uint64_t version;        /* produced (completed only) */
  uint32_t selected, participants;
  uint64_t examples;
  double mean_loss;
  uint64_t bytes_in, bytes_out;
  uint64_t started_ms, ended_ms;
  uint8_t sha[FC_SHA256_LEN];
  char reason[160];
  uint32_t sa_remaining[5]; /* secure aggregation: clients left after each stage (0 = not run) */
  char server_opt[80];      /* the coordinator's server optimizer and its settings (the driver fills it) */
  double expected;          /* Poisson sampling: expected cohort (rate x live clients); else 0 */
  double dp_epsilon;        /* differential privacy: epsilon spent after this round (the driver fills it) */
  double dp_clip;           /* ... the clip norm this round's tasks announced (adaptive clipping moves it) */
  double dp_noise;          /* ... the noise multiplier the accountant counted for this round */
  /* secure aggregation: clients named for bad unmask shares (the driver fills
   * it): the first FC_ROUND_BLAMED_MAX names, and how many in all */
  char sa_blamed[FC_ROUND_BLAMED_MAX][65];
  uint32_t sa_nblamed;
  /* update anomaly statistics of a plaintext round (coord_anomaly.c fills
   * them): inputs scored (0 = none), norm min/median/max, median cosines to
   * this and the previous aggregate (NAN unknown), the top score and whose,
   * and the identities flagged (first FC_ROUND_BLAMED_MAX, and how many) */
  uint32_t an_inputs;
  double an_norm[3], an_cos_agg, an_cos_prev, an_top_score;
  char an_top[65];
  char an_flagged[FC_ROUND_BLAMED_MAX][65];
  uint32_t an_nflagged;
  /* model drift of the version it produced (coord_drift.c fills them):
   * checked or not, PSI of the predicted-class histograms and of the mean
   * softmax, the threshold, tripped, the action ("flag"/"hold"), the version
   * compared against, reference examples */
  int dr_checked;
  double dr_psi, dr_psi_softmax, dr_threshold;
  int dr_tripped;
  char dr_action[8];
  uint64_t dr_baseline;
  uint32_t dr_examples;
  fc_round_eval eval;       /* the evaluation of the model it produced (coord_eval.c fills it later) */
  /* async mode (engine_async.c): a buffer; its staleness histogram, the
   * concurrency cap and the clients training when it closed */
  int async;
  uint32_t stale_hist[FC_STALE_BUCKETS];
  uint32_t concurrency, training;
} fc_round_stats;

typedef struct fc_engine_status {
  int state;
  int paused;
  int blocked;
  uint64_t round;          /* current (TRAINING/AGGREGATING) or next round id */
  uint64_t version;
  uint8_t sha[FC_SHA256_LEN];
  uint32_t known, live;    /* live: 0 here; fc_engine_count_live counts (O(clients)) */
  uint32_t selected, received;
  uint64_t completed, abandoned;
  uint64_t budget;         /* 0 = unlimited */
  uint64_t round_started_ms;
} fc_engine_status;
void fc_engine_get_status(const fc_engine *e, uint64_t now_ms, fc_engine_status *st);
/* Clients that checked in within the liveness window: O(clients). */
uint32_t fc_engine_count_live(const fc_engine *e, uint64_t now_ms);
/* Stats of the round being finalized or just abandoned. */
const fc_round_stats *fc_engine_last_round(const fc_engine *e);

/* ---- federated evaluation (engine_eval.c) ----
 * An evaluation becomes due when a round's model is published (every
 * eval_every-th completed round, and the last of the budget); the next
 * eval tick draws its cohort (STARTED). Evaluation never changes the model
 * or the training round's state. One runs at a time: one that becomes due
 * while another runs waits; one superseded by a newer model before it
 * started is dropped (SKIPPED, recorded as abandoned). Plain: results arrive
 * by fc_engine_eval_report_*; FINISH once all are in, or at the deadline with
 * eval_min. Secure aggregation: RUNNING is the advertise stage, then the
 * stages as for training (SA_CLOSE, fc_engine_eval_sa_advance), results only
 * in SA_MASKED, FINISH after the unmask stage. The driver then computes the
 * totals and calls fc_engine_eval_finished. */
enum fc_eval_state {
  FC_EV_IDLE = 0,
  FC_EV_PENDING = 1,   /* due: the cohort is drawn at the next tick (not while paused or blocked) */
  FC_EV_RUNNING = 2,   /* cohort drawn; tasks and results (SecAgg: also the advertise stage) */
  FC_EV_SA_SHARE = 3,
  FC_EV_SA_MASKED = 4, /* secure aggregation: the only state taking results */
  FC_EV_SA_CONSISTENCY = 5,
  FC_EV_SA_UNMASK = 6,
  FC_EV_FINISHING = 7, /* the driver computes the totals */
};
enum fc_eval_tick {
  FC_EVT_NONE = 0,
  FC_EVT_STARTED = 1,  /* a cohort was drawn (fc_engine_eval_get) */
  FC_EVT_FINISH = 2,   /* enough results (or all): compute the totals, then fc_engine_eval_finished */
  FC_EVT_ABANDON = 3,  /* too few: fc_engine_eval_reason; the evaluation is over (IDLE) */
  FC_EVT_SA_CLOSE = 4, /* secure aggregation: close the open stage */
  FC_EVT_SKIPPED = 5,  /* one due was superseded before it started: fc_engine_eval_skipped */
};
/* On the wire an evaluation's id is this bit | the round whose model it
 * evaluates, so it never meets a training round's id (coord_eval.c). */
#define FC_EVAL_ID_BIT (1ull << 63)
typedef struct fc_eval_info {
  int state;               /* enum fc_eval_state */
  uint64_t round, version; /* the round whose model, and that model */
  uint8_t sha[FC_SHA256_LEN];
  uint64_t started_ms, deadline_ms;
  uint32_t selected, tasked, received;
} fc_eval_info;
const char *fc_engine_eval_state_name(int s);
int fc_engine_eval_tick(fc_engine *e, uint64_t now_ms);
void fc_engine_eval_get(const fc_engine *e, fc_eval_info *out);
/* Why the last evaluation was abandoned; the round and version SKIPPED dropped. */
const char *fc_engine_eval_reason(const fc_engine *e);
void fc_engine_eval_skipped(const fc_engine *e, uint64_t *round, uint64_t *version);
/* "client X reports for evaluation R of version V": an fc_upload_verdict
 * (rate-limited with the upload bucket); then commit (FC_UP_OK, or LATE if
 * it closed meanwhile) or abort (it may try again while it is open). */
int fc_engine_eval_report_begin(fc_engine *e, const char *client, uint64_t round, uint64_t version, uint64_t now_ms);
int fc_engine_eval_report_commit(fc_engine *e, const char *client, uint64_t round, uint64_t now_ms);
void fc_engine_eval_report_abort(fc_engine *e, const char *client, uint64_t round);
/* 1 if the client is in the running evaluation's cohort and has not
 * reported (it needs the evaluated model). */
int fc_engine_eval_member(const fc_engine *e, const char *client);
/* Names of the running evaluation's cohort in name order (valid until the next engine call). */
uint32_t fc_engine_eval_cohort(const fc_engine *e, const char **out, uint32_t cap);
void fc_engine_eval_sa_ready(fc_engine *e);
/* Members still expected in the running evaluation (the SecAgg stages wait for them). */
uint32_t fc_engine_eval_expected_n(const fc_engine *e);
/* The open stage closed: on to the next (FC_EVT_FINISH after the unmask stage, else NONE). */
int fc_engine_eval_sa_advance(fc_engine *e, uint64_t now_ms);
/* The driver is done with the running evaluation (published or not): IDLE,
 * or PENDING if another became due meanwhile. why: abandon reason or NULL. */
void fc_engine_eval_finished(fc_engine *e, const char *why, uint64_t now_ms);
/* 1 while an evaluation is due or running (the coordinator is not done). */
int fc_engine_eval_busy(const fc_engine *e);
/* The round an evaluation is due for or running on, 0 if none (and a
 * second one waiting in *next, 0 if none). */
uint64_t fc_engine_eval_pending_round(const fc_engine *e, uint64_t *next);

#endif
