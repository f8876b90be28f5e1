/*
 * elect.c - the election state machine of elect.h (table there). Pure: every
 * input is an argument, every output the return value or *s.
 *
 * Invariant: state LEADER implies now < deadline_ms at the last step; the
 * deadline only moves forward, and only from the send time of a keep-alive
 * etcd answered (a late answer cannot stretch it past what etcd granted).
 */
#include "coordinator/elect.h"

#include <stdio.h>
#include <string.h>

void fc_elect_init(fc_elect *s, uint32_t poll_ms) {
  memset(s, 0, sizeof *s);
  s->state = FC_ELECT_INIT;
  s->poll_ms = poll_ms ? poll_ms : 200;
}

const char *fc_elect_state_name(int state) {
  switch (state) {
  case FC_ELECT_INIT: return "init";
  case FC_ELECT_CAMPAIGN: return "campaigning";
  case FC_ELECT_STANDBY: return "standby";
  case FC_ELECT_LEADER: return "leader";
  case FC_ELECT_DEPOSED: return "deposed";
  case FC_ELECT_SUSPENDED: return "suspended";
  default: return "?";
  }
}

static void depose(fc_elect *s, const char *why) {
  s->state = FC_ELECT_DEPOSED;
  snprintf(s->why, sizeof s->why, "%s", why);
}

/* A leader that cannot renew its lease now: not leading, keep-alives at once. */
static void suspend(fc_elect *s, uint64_t now, const char *why) {
  if (s->state != FC_ELECT_SUSPENDED) {
    s->state = FC_ELECT_SUSPENDED;
    s->suspended_ms = now;
    s->confirm = 0;
  }
  snprintf(s->why, sizeof s->why, "%s", why);
  if (s->next_keepalive_ms > now) s->next_keepalive_ms = now;
}

/* Back to the start: a new lease, then a new campaign. */
static void restart(fc_elect *s, uint64_t now) {
  s->state = FC_ELECT_INIT;
  s->lease = s->ttl_s = s->rev = 0;
  s->deadline_ms = 0;
  s->next_campaign_ms = now;
}

static uint64_t keepalive_period(const fc_elect *s) {
  uint64_t p = (uint64_t)s->ttl_s * 1000 / 3;
  return p ? p : 1;
}

int fc_elect_step(fc_elect *s, const fc_elect_ev *ev) {
  uint64_t now = ev->now_ms;
  int campaigning = s->state == FC_ELECT_CAMPAIGN || s->state == FC_ELECT_STANDBY;
  switch (ev->kind) {
  case FC_EV_LEASE_GRANTED:
    if (s->state == FC_ELECT_INIT && ev->lease != 0 && ev->ttl_s > 0) {
      s->lease = ev->lease;
      s->ttl_s = ev->ttl_s;
      s->deadline_ms = ev->sent_ms + (uint64_t)ev->ttl_s * 1000;
      s->next_keepalive_ms = now + keepalive_period(s);
      s->next_campaign_ms = now;
      s->state = FC_ELECT_CAMPAIGN;
    }
    break;
  case FC_EV_WON:
    if (campaigning && ev->rev > 0) {
      s->state = FC_ELECT_LEADER;
      s->rev = ev->rev;
      s->holder[0] = 0;
    }
    break;
  case FC_EV_LOST:
    if (campaigning) {
      s->state = FC_ELECT_STANDBY;
      snprintf(s->holder, sizeof s->holder, "%s", ev->holder ? ev->holder : "");
      s->next_campaign_ms = now + s->poll_ms;
    }
    break;
  case FC_EV_KEEPALIVE_OK:
    if (s->lease && s->state != FC_ELECT_DEPOSED && s->state != FC_ELECT_INIT && ev->ttl_s > 0) {
      uint64_t d = ev->sent_ms + (uint64_t)ev->ttl_s * 1000;
      if (d > s->deadline_ms) s->deadline_ms = d;
      s->next_keepalive_ms = now + keepalive_period(s);
      /* A renewal alone proves no quorum: etcd's raft leader renews leases
       * by itself until it notices, an election timeout later, that it lost
       * its followers. So a suspended leader confirms with a linearizable
       * read (CONFIRM) before it leads again. */
      if (s->state == FC_ELECT_SUSPENDED && now < s->deadline_ms) s->confirm = 1;
    }
    break;
  case FC_EV_CONFIRMED:
    /* etcd committed a read with our key's create_revision in it: etcd has
     * quorum and the key (on our lease) is still ours, nobody can have been
     * elected since; we lead again under the same fencing revision. */
    if (s->state == FC_ELECT_SUSPENDED && s->confirm && now < s->deadline_ms) {
      s->confirm = 0;
      if (s->unsure)
        depose(s, "etcd has quorum again, but a fenced write sent before has an unknown outcome: stepping down "
                  "so that the next leader reads what landed");
      else
        s->state = FC_ELECT_LEADER;
    }
    break;
  case FC_EV_LEASE_GONE:
    if (s->state == FC_ELECT_LEADER || s->state == FC_ELECT_SUSPENDED) depose(s, "our etcd lease has expired: another replica may lead");
    else if (s->state != FC_ELECT_DEPOSED)
      restart(s, now);
    break;
  case FC_EV_FENCE_REFUSED:
    if (s->state == FC_ELECT_LEADER || s->state == FC_ELECT_SUSPENDED) depose(s, "a fenced write was refused: the leader key is gone or another's");
    break;
  case FC_EV_WRITE_UNKNOWN:
    /* Writing the next version again with other content could leave etcd
     * naming bytes the store no longer has, if the first write applied after
     * all: step down, and let the next leader read what landed. With a hold
     * (the usual cause is quorum lost under a write), not before etcd
     * answers again: suspended meanwhile, and deposed at the keep-alive that
     * ends the suspension. */
    if (s->state == FC_ELECT_LEADER || s->state == FC_ELECT_SUSPENDED) {
      if (!s->hold_ms) {
        depose(s, "a fenced write's outcome is unknown (etcd timed out or became unreachable)");
        break;
      }
      suspend(s, now, "a fenced write's outcome is unknown (etcd timed out or became unreachable)");
      s->unsure = 1;
    }
    break;
  case FC_EV_ETCD_ERROR:
    s->confirm = 0; /* a failed confirmation starts over with a keep-alive */
    if (s->next_keepalive_ms <= now) s->next_keepalive_ms = now + s->poll_ms;
    if (s->next_campaign_ms <= now) s->next_campaign_ms = now + s->poll_ms;
    break;
  default: break;
  }
  /* The clock rules, whatever the event. */
  if (s->state == FC_ELECT_LEADER && now >= s->deadline_ms) {
    if (s->hold_ms)
      suspend(s, now, "our etcd lease was not renewed within its TTL (etcd without quorum or unreachable)");
    else
      depose(s, "our etcd lease was not renewed within its TTL (etcd unreachable or without quorum)");
  }
  if (s->state == FC_ELECT_SUSPENDED && now >= s->suspended_ms + s->hold_ms) {
    char why[sizeof s->why];
    snprintf(why, sizeof why, "our etcd lease could not be renewed for %llu ms (etcd unreachable or without quorum)",
             (unsigned long long)(now - s->suspended_ms));
    depose(s, why);
  } else if ((s->state == FC_ELECT_CAMPAIGN || s->state == FC_ELECT_STANDBY) && now >= s->deadline_ms)
    restart(s, now);

  switch (s->state) {
  case FC_ELECT_DEPOSED: return FC_ACT_STEP_DOWN;
  case FC_ELECT_INIT: return now >= s->next_campaign_ms ? FC_ACT_GRANT : FC_ACT_WAIT;
  case FC_ELECT_LEADER: return now >= s->next_keepalive_ms ? FC_ACT_KEEPALIVE : FC_ACT_WAIT;
  case FC_ELECT_SUSPENDED:
    if (s->confirm && now < s->deadline_ms) return FC_ACT_CONFIRM;
    return now >= s->next_keepalive_ms ? FC_ACT_KEEPALIVE : FC_ACT_WAIT;
  default:
    if (now >= s->next_keepalive_ms) return FC_ACT_KEEPALIVE;
    return now >= s->next_campaign_ms ? FC_ACT_CAMPAIGN : FC_ACT_WAIT;
  }
}

uint64_t fc_elect_next_ms(const fc_elect *s) {
  switch (s->state) {
  case FC_ELECT_DEPOSED: return 0;
  case FC_ELECT_INIT: return s->next_campaign_ms;
  case FC_ELECT_LEADER: return s->next_keepalive_ms < s->deadline_ms ? s->next_keepalive_ms : s->deadline_ms;
  case FC_ELECT_SUSPENDED: {
    uint64_t end = s->suspended_ms + s->hold_ms;
    if (s->confirm) return 0;
    return s->next_keepalive_ms < end ? s->next_keepalive_ms : end;
  }
  default: {
    uint64_t t = s->next_keepalive_ms < s->next_campaign_ms ? s->next_keepalive_ms : s->next_campaign_ms;
    return t < s->deadline_ms ? t : s->deadline_ms;
  }
  }
}

int fc_elect_is_leader(const fc_elect *s, uint64_t now_ms) {
  return s->state == FC_ELECT_LEADER && now_ms < s->deadline_ms;
}

int fc_elect_is_suspended(const fc_elect *s, uint64_t now_ms) {
  /* A LEADER past its deadline that no step has moved yet is suspended too
   * (if it may be: hold_ms > 0). */
  return (s->state == FC_ELECT_SUSPENDED && now_ms < s->suspended_ms + s->hold_ms) ||
         (s->state == FC_ELECT_LEADER && now_ms >= s->deadline_ms && s->hold_ms > 0);
}
