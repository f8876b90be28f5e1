/*
 * leader.c - runs the election state machine (elect.h) against etcd on a
 * thread of its own, and makes the fenced writes of leader.h.
 *
 * The thread does what fc_elect_step says (grant a lease, campaign, keep the
 * lease alive, step down) and feeds back what etcd answered; it sleeps on a
 * condition variable until the machine's next deadline, never longer than
 * poll_ms. Campaign (etcd's election recipe, clientv3/concurrency): Txn
 * "create_revision(P/leader) == 0 ? put P/leader = id on our lease : get
 * P/leader". Won: the Txn's revision is our key's create_revision (the
 * fencing token). Lost to a key on our own lease (our earlier campaign landed
 * but its answer was lost): that is a win with the key's create_revision.
 *
 * Suspended (elect.h), the thread keeps the lease alive and then confirms
 * with a read-only Txn comparing our key's create_revision: etcd serves it
 * linearizably, so only with quorum (a keep-alive alone does not show that).
 *
 * Invariant: fc_leader_fenced sends nothing unless the machine says we lead
 * by our own clock, and a refused guard steps the machine down under the
 * same lock, so after one refusal no later fenced write is even tried. A
 * write whose outcome is unknown (deadline, unreachable) steps down too: it
 * may still apply, and the next leader reads what landed (elect.h).
 */
#include "coordinator/leader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h" /* fc_now_ms: the wall-clock time shown in status */
#include "common/log.h"
#include "coordinator/elect.h"
#include "fedc/error.h"

#define MOD "leader"

struct fc_leader {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  int started, stop;
  fc_elect s;
  fc_etcd *el;     /* the election thread's handle */
  fc_etcd *wr;     /* fenced writes and reads (callers serialised by wr_mu) */
  pthread_mutex_t wr_mu;
  char prefix[256], key[300], id[128];
  int ttl_s;
  int etcd_ok;
  uint64_t etcd_last_ok_ms;
  char etcd_error[256];
  char logged_holder[128];
  char seen_holder[128]; /* the election thread's: who holds the key, as read by the last campaign */
};

/* The clock of every lease deadline (elect.h's now_ms and sent_ms). etcd
 * counts a lease's TTL in real elapsed time, a suspended host's sleep
 * included; CLOCK_MONOTONIC stops while the host is suspended, so after a
 * resume a leader on it would still believe it leads for what was left of the
 * TTL though etcd expired the lease long ago and another replica may lead.
 * CLOCK_BOOTTIME (Linux) keeps counting through a suspend; where it is
 * missing, CLOCK_MONOTONIC is the best there is (a wall clock step must not
 * move a deadline either). */
static uint64_t lease_clock_ms(void) {
  struct timespec ts;
#ifdef CLOCK_BOOTTIME
  if (clock_gettime(CLOCK_BOOTTIME, &ts) == 0) return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
#endif
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The condition variable waits on CLOCK_MONOTONIC (a wall clock step must
 * not stretch a leader's sleep past its lease; pthread_condattr_setclock
 * takes no CLOCK_BOOTTIME). Only the length of a wait comes from here: a wait
 * that spans a suspend ends late, but every decision reads lease_clock_ms()
 * afresh, so a resumed leader past its deadline no longer leads at once
 * (fc_leader_is_leader, fc_leader_fenced; fc_leader_deposed ticks the
 * machine itself). */
static void mono_deadline(struct timespec *ts, uint64_t ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += (time_t)(ms / 1000);
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

const char *fc_leader_prefix(const fc_leader *l) { return l->prefix; }

/* Under mu. */
static int feed(fc_leader *l, fc_elect_ev *ev) {
  int before = l->s.state;
  int act = fc_elect_step(&l->s, ev);
  if (l->s.state != before) {
    if (l->s.state == FC_ELECT_LEADER && before == FC_ELECT_SUSPENDED)
      FC_INFO(MOD, "etcd renewed our lease: leading again (%s, fencing revision %lld)", l->key, (long long)l->s.rev);
    else if (l->s.state == FC_ELECT_SUSPENDED)
      FC_WARN(MOD, "%s: suspended, publishing nothing and telling clients to retry, for up to %llu ms until etcd "
              "renews our lease", l->s.why, (unsigned long long)l->s.hold_ms);
    else if (l->s.state == FC_ELECT_LEADER)
      FC_INFO(MOD, "elected leader (%s, fencing revision %lld, lease %llx, ttl %lld s)", l->key, (long long)l->s.rev,
              (unsigned long long)l->s.lease, (long long)l->s.ttl_s);
    else if (l->s.state == FC_ELECT_DEPOSED)
      FC_WARN(MOD, "deposed: %s", l->s.why);
    pthread_cond_broadcast(&l->cv);
  }
  if (l->s.state == FC_ELECT_STANDBY && strcmp(l->logged_holder, l->s.holder) != 0) {
    FC_INFO(MOD, "standby: %s is held by \"%s\"", l->key, l->s.holder);
    snprintf(l->logged_holder, sizeof l->logged_holder, "%s", l->s.holder);
  }
  return act;
}

/* Under mu. Logs when etcd stops answering and when it is back (once each). */
static void note_etcd(fc_leader *l, int rc, const char *err) {
  int ok = rc == FEDC_OK || rc == FEDC_ERR_NOT_FOUND || rc == FEDC_ERR_REJECTED;
  if (ok && !l->etcd_ok && l->etcd_error[0]) FC_INFO(MOD, "etcd answers again (%s)", fc_etcd_endpoint(l->el));
  if (!ok && (l->etcd_ok || !l->etcd_error[0])) FC_WARN(MOD, "etcd unreachable: %s", err);
  l->etcd_ok = ok;
  if (ok) l->etcd_last_ok_ms = fc_now_ms();
  else
    snprintf(l->etcd_error, sizeof l->etcd_error, "%s", err);
}

/* One action against etcd, outside mu; the answer as an event. */
static void act_once(fc_leader *l, int act, fc_elect_ev *ev) {
  char err[512] = "";
  int rc = FEDC_OK;
  int64_t lease, ttl, rev;
  pthread_mutex_lock(&l->mu);
  lease = l->s.lease;
  ttl = l->ttl_s;
  rev = l->s.rev;
  pthread_mutex_unlock(&l->mu);
  memset(ev, 0, sizeof *ev);
  ev->sent_ms = lease_clock_ms();
  switch (act) {
  case FC_ACT_GRANT: {
    int64_t id = 0, granted = 0;
    if ((rc = fc_etcd_lease_grant(l->el, ttl, &id, &granted, err, sizeof err)) == FEDC_OK) {
      ev->kind = FC_EV_LEASE_GRANTED;
      ev->lease = id;
      ev->ttl_s = granted;
    }
    break;
  }
  case FC_ACT_KEEPALIVE: {
    int64_t left = 0;
    rc = fc_etcd_lease_keepalive(l->el, lease, &left, err, sizeof err);
    if (rc == FEDC_OK) {
      ev->kind = FC_EV_KEEPALIVE_OK;
      ev->ttl_s = left;
    } else if (rc == FEDC_ERR_NOT_FOUND)
      ev->kind = FC_EV_LEASE_GONE;
    break;
  }
  case FC_ACT_CAMPAIGN: {
    fc_etcd_cmp absent = {.key = l->key, .target = FC_ETCD_CMP_CREATE, .result = FC_ETCD_EQ, .num = 0};
    fc_etcd_op put = {.kind = FC_ETCD_PUT, .key = l->key, .value = l->id, .value_len = strlen(l->id), .lease = lease};
    fc_etcd_op get = {.kind = FC_ETCD_GET, .key = l->key};
    fc_etcd_txn t = {&absent, 1, &put, &get, 1, 1};
    fc_etcd_txn_result res;
    memset(&res, 0, sizeof res);
    if ((rc = fc_etcd_txn_call(l->el, &t, &res, err, sizeof err)) == FEDC_OK) {
      if (res.succeeded) {
        ev->kind = FC_EV_WON;
        ev->rev = res.revision;
      } else if (res.kv[0].found && res.kv[0].lease == lease) {
        ev->kind = FC_EV_WON;
        ev->rev = res.kv[0].create_revision;
      } else {
        ev->kind = FC_EV_LOST;
        snprintf(l->seen_holder, sizeof l->seen_holder, "%s", res.kv[0].found ? (char *)res.kv[0].value : "(gone)");
        ev->holder = l->seen_holder;
      }
    }
    fc_etcd_txn_result_clear(&res);
    break;
  }
  case FC_ACT_CONFIRM: { /* read-only with a linearizable Range: etcd answers it only with quorum */
    fc_etcd_cmp ours = {.key = l->key, .target = FC_ETCD_CMP_CREATE, .result = FC_ETCD_EQ, .num = rev};
    fc_etcd_op get = {.kind = FC_ETCD_GET, .key = l->key};
    fc_etcd_txn t = {&ours, 1, &get, NULL, 1, 0};
    fc_etcd_txn_result res;
    memset(&res, 0, sizeof res);
    if ((rc = fc_etcd_txn_call(l->el, &t, &res, err, sizeof err)) == FEDC_OK)
      ev->kind = res.succeeded ? FC_EV_CONFIRMED : FC_EV_FENCE_REFUSED;
    fc_etcd_txn_result_clear(&res);
    break;
  }
  default: break;
  }
  if (rc != FEDC_OK && rc != FEDC_ERR_NOT_FOUND) {
    ev->kind = FC_EV_ETCD_ERROR;
    FC_DEBUG(MOD, "%s", err);
  }
  pthread_mutex_lock(&l->mu);
  note_etcd(l, rc, err);
  pthread_mutex_unlock(&l->mu);
  ev->now_ms = lease_clock_ms();
}

static void *run(void *arg) {
  fc_leader *l = arg;
  pthread_mutex_lock(&l->mu);
  while (!l->stop) {
    fc_elect_ev tick = {.kind = FC_EV_TICK, .now_ms = lease_clock_ms()};
    int act = feed(l, &tick);
    if (act == FC_ACT_STEP_DOWN) break;
    if (act == FC_ACT_WAIT) {
      uint64_t now = lease_clock_ms(), next = fc_elect_next_ms(&l->s);
      uint64_t wait = next > now ? next - now : 0;
      if (wait > l->s.poll_ms) wait = l->s.poll_ms;
      if (wait) {
        struct timespec ts;
        mono_deadline(&ts, wait);
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
      }
      continue;
    }
    pthread_mutex_unlock(&l->mu);
    fc_elect_ev ev;
    act_once(l, act, &ev);
    pthread_mutex_lock(&l->mu);
    feed(l, &ev);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

int fc_leader_start(const fc_leader_opts *o, fc_leader **out, char *err, size_t errlen) {
  int rc = FEDC_ERR_INVALID;
  fc_leader *l = calloc(1, sizeof *l);
  if (!l) return FEDC_ERR_NOMEM;
  pthread_mutex_init(&l->mu, NULL);
  pthread_mutex_init(&l->wr_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&l->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (!o->prefix || o->prefix[0] != '/' || strlen(o->prefix) >= sizeof l->prefix || !o->id || !o->id[0] ||
      strlen(o->id) >= sizeof l->id) {
    snprintf(err, errlen, "--etcd-prefix must start with '/' and be under %zu characters", sizeof l->prefix);
    goto out;
  }
  if (o->ttl_s < 1 || o->ttl_s > 3600) {
    snprintf(err, errlen, "--etcd-lease-ttl must be 1..3600 seconds");
    goto out;
  }
  snprintf(l->prefix, sizeof l->prefix, "%s", o->prefix);
  size_t pl = strlen(l->prefix);
  while (pl > 1 && l->prefix[pl - 1] == '/') l->prefix[--pl] = 0;
  snprintf(l->key, sizeof l->key, "%s/leader", l->prefix);
  snprintf(l->id, sizeof l->id, "%s", o->id);
  l->ttl_s = o->ttl_s;
  fc_elect_init(&l->s, o->poll_ms ? o->poll_ms : 200);
  l->s.hold_ms = o->hold_ms;
  if ((rc = fc_etcd_open(&o->etcd, &l->el, err, errlen)) != FEDC_OK ||
      (rc = fc_etcd_open(&o->etcd, &l->wr, err, errlen)) != FEDC_OK)
    goto out;
  if (pthread_create(&l->thread, NULL, run, l) != 0) {
    rc = FEDC_ERR_NOMEM;
    snprintf(err, errlen, "cannot start the election thread");
    goto out;
  }
  l->started = 1;
  *out = l;
  l = NULL;
  rc = FEDC_OK;
out:
  fc_leader_stop(l);
  return rc;
}

void fc_leader_stop(fc_leader *l) {
  if (!l) return;
  pthread_mutex_lock(&l->mu);
  l->stop = 1;
  pthread_cond_broadcast(&l->cv);
  pthread_mutex_unlock(&l->mu);
  if (l->started) pthread_join(l->thread, NULL);
  if (l->s.lease) {
    char err[512];
    /* Our key goes with the lease: the next replica need not wait a TTL. A
     * deposed replica's lease may be gone already (or unreachable). */
    if (fc_etcd_lease_revoke(l->el, l->s.lease, err, sizeof err) != FEDC_OK && l->s.state != FC_ELECT_DEPOSED)
      FC_WARN(MOD, "could not revoke our lease (it expires in %lld s): %s", (long long)l->s.ttl_s, err);
  }
  fc_etcd_close(l->el);
  fc_etcd_close(l->wr);
  pthread_cond_destroy(&l->cv);
  pthread_mutex_destroy(&l->mu);
  pthread_mutex_destroy(&l->wr_mu);
  free(l);
}

int fc_leader_wait(fc_leader *l, int timeout_ms) {
  pthread_mutex_lock(&l->mu);
  int lead = fc_elect_is_leader(&l->s, lease_clock_ms());
  if (!lead && l->s.state != FC_ELECT_DEPOSED && timeout_ms > 0) {
    struct timespec ts;
    mono_deadline(&ts, (uint64_t)timeout_ms);
    pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    lead = fc_elect_is_leader(&l->s, lease_clock_ms());
  }
  pthread_mutex_unlock(&l->mu);
  return lead;
}

int fc_leader_is_leader(fc_leader *l) { return fc_leader_wait(l, 0); }

int fc_leader_suspended(fc_leader *l, uint32_t *retry_ms) {
  pthread_mutex_lock(&l->mu);
  int held = fc_elect_is_suspended(&l->s, lease_clock_ms());
  /* One lease TTL: the keep-alives go on every poll_ms meanwhile, and a
   * client back sooner would only be told again. */
  uint64_t ttl_ms = (uint64_t)(l->s.ttl_s > 0 ? l->s.ttl_s : l->ttl_s) * 1000;
  pthread_mutex_unlock(&l->mu);
  if (retry_ms) *retry_ms = (uint32_t)(ttl_ms < 1000 ? 1000 : ttl_ms > 30000 ? 30000 : ttl_ms);
  return held;
}

int fc_leader_deposed(fc_leader *l, char *why, size_t whylen) {
  pthread_mutex_lock(&l->mu);
  /* A leader past its deadline (or its hold) moves now, not at the thread's next tick. */
  fc_elect_ev tick = {.kind = FC_EV_TICK, .now_ms = lease_clock_ms()};
  if (l->s.state == FC_ELECT_LEADER || l->s.state == FC_ELECT_SUSPENDED) feed(l, &tick);
  int d = l->s.state == FC_ELECT_DEPOSED;
  if (d && why) snprintf(why, whylen, "%s", l->s.why);
  pthread_mutex_unlock(&l->mu);
  return d;
}

void fc_leader_get_info(fc_leader *l, fc_leader_info *o) {
  memset(o, 0, sizeof *o);
  pthread_mutex_lock(&l->mu);
  snprintf(o->role, sizeof o->role, "%s", fc_elect_state_name(l->s.state));
  snprintf(o->leader, sizeof o->leader, "%s",
           l->s.state == FC_ELECT_LEADER || l->s.state == FC_ELECT_SUSPENDED ? l->id : l->s.holder);
  snprintf(o->endpoint, sizeof o->endpoint, "%s", fc_etcd_endpoint(l->el));
  o->etcd_ok = l->etcd_ok;
  o->etcd_last_ok_ms = l->etcd_last_ok_ms;
  snprintf(o->etcd_error, sizeof o->etcd_error, "%s", l->etcd_error);
  o->rev = l->s.rev;
  o->lease = l->s.lease;
  o->ttl_s = l->s.ttl_s;
  pthread_mutex_unlock(&l->mu);
}

int fc_leader_fenced(fc_leader *l, const fc_etcd_op *ops, size_t nops, fc_etcd_txn_result *res, char *err,
                     size_t errlen) {
  pthread_mutex_lock(&l->mu);
  int64_t rev = l->s.rev;
  int lead = fc_elect_is_leader(&l->s, lease_clock_ms());
  int held = !lead && fc_elect_is_suspended(&l->s, lease_clock_ms());
  pthread_mutex_unlock(&l->mu);
  if (!lead) {
    snprintf(err, errlen, "%s: nothing written to etcd",
             held ? "suspended (etcd has not renewed our lease: no quorum, or unreachable)"
                  : "not the leader (by our own clock)");
    return FEDC_ERR_STOPPED;
  }
  fc_etcd_cmp fence = {.key = l->key, .target = FC_ETCD_CMP_CREATE, .result = FC_ETCD_EQ, .num = rev};
  /* etcd (3.4 mvcc, isTxnSerializable) serves a Txn without ops from the
   * member's own copy, quorum or not: a check (nops = 0) reads our key with
   * a linearizable Range instead, so it too lands only with quorum. */
  fc_etcd_op check = {.kind = FC_ETCD_GET, .key = l->key};
  fc_etcd_txn t = {&fence, 1, nops ? ops : &check, NULL, nops ? nops : 1, 0};
  fc_etcd_txn_result r;
  memset(&r, 0, sizeof r);
  pthread_mutex_lock(&l->wr_mu);
  int rc = fc_etcd_txn_call(l->wr, &t, &r, err, errlen);
  pthread_mutex_unlock(&l->wr_mu);
  pthread_mutex_lock(&l->mu);
  note_etcd(l, rc, err);
  if (rc == FEDC_OK && !r.succeeded) {
    snprintf(err, errlen, "etcd refused the write: %s is no longer ours (fencing revision %lld)", l->key,
             (long long)rev);
    fc_elect_ev ev = {.kind = FC_EV_FENCE_REFUSED, .now_ms = lease_clock_ms()};
    feed(l, &ev);
    rc = FEDC_ERR_REJECTED;
  } else if (nops > 0 && (rc == FEDC_ERR_TIMEOUT || rc == FEDC_ERR_UNAVAILABLE)) {
    fc_elect_ev ev = {.kind = FC_EV_WRITE_UNKNOWN, .now_ms = lease_clock_ms()};
    feed(l, &ev);
  }
  pthread_mutex_unlock(&l->mu);
  if (rc == FEDC_OK && res) *res = r;
  else
    fc_etcd_txn_result_clear(&r);
  return rc;
}

int fc_leader_read_prefix(fc_leader *l, const char *suffix, fc_etcd_entry *out, size_t cap, size_t *n, char *err,
                          size_t errlen) {
  char key[600];
  snprintf(key, sizeof key, "%s/%s", l->prefix, suffix);
  pthread_mutex_lock(&l->wr_mu);
  int rc = fc_etcd_get_prefix(l->wr, key, out, cap, n, err, errlen);
  pthread_mutex_unlock(&l->wr_mu);
  pthread_mutex_lock(&l->mu);
  note_etcd(l, rc, err);
  pthread_mutex_unlock(&l->mu);
  return rc;
}

int fc_leader_read(fc_leader *l, const char *suffix, fc_etcd_kv *kv, char *err, size_t errlen) {
  char key[600];
  snprintf(key, sizeof key, "%s/%s", l->prefix, suffix);
  pthread_mutex_lock(&l->wr_mu);
  int rc = fc_etcd_get(l->wr, key, kv, NULL, err, errlen);
  pthread_mutex_unlock(&l->wr_mu);
  pthread_mutex_lock(&l->mu);
  note_etcd(l, rc, err);
  pthread_mutex_unlock(&l->mu);
  return rc;
}
