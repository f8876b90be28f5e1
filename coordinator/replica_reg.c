/*
 * replica_reg.c - the replica registry (replica_reg.h): a thread per
 * election that puts P/replicas/<id> on the election's lease, and the
 * leader's read of the list.
 *
 * Why the election's lease: a key on it lives exactly as long as the replica
 * takes part in the election (expired with a dead replica, revoked with a
 * stopping one), so the list needs no cleanup and no clock of its own. The
 * role is coarse ("leader" or "standby": campaigning counts as standing by),
 * so a standby's campaigns every poll_ms do not become etcd writes; a put is
 * made when the lease or that role changes, and retried each period until it
 * lands. Writes are plain Puts (not fenced): the registry is informational,
 * nothing decides from it.
 */
#include "coordinator/replica_reg.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "fedc/error.h"

#define MOD "leader"
#define PERIOD_MS 200

void fc_replica_key_name(const char *id, char *out, size_t outlen) {
  size_t k = 0;
  for (; id[k] && k + 1 < outlen; k++) {
    char ch = id[k];
    int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
             ch == '_' || ch == ':' || ch == '-';
    out[k] = ok ? ch : '_';
  }
  if (outlen) out[k] = 0;
}

int fc_replica_value(const char *id, const char *address, const char *role, char *out, size_t outlen) {
  json_t *o = json_pack("{s:s,s:s,s:s}", "id", id, "address", address, "role", role);
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  int rc = s && strlen(s) < outlen ? FEDC_OK : FEDC_ERR_INVALID;
  if (rc == FEDC_OK) snprintf(out, outlen, "%s", s);
  free(s);
  json_decref(o);
  return rc;
}

int fc_replica_parse(const char *value, size_t len, fc_replica_entry *out, char *why, size_t whylen) {
  json_error_t je;
  json_t *o = json_loadb(value, len, 0, &je);
  const char *id = json_string_value(json_object_get(o, "id")),
             *addr = json_string_value(json_object_get(o, "address")),
             *role = json_string_value(json_object_get(o, "role"));
  int rc = FEDC_ERR_FORMAT;
  memset(out, 0, sizeof *out);
  if (!id || !addr || !role || !id[0] || strlen(id) >= sizeof out->id || strlen(addr) >= sizeof out->address ||
      strlen(role) >= sizeof out->role) {
    snprintf(why, whylen, "replica registry value is not {\"id\",\"address\",\"role\"}");
    goto out;
  }
  snprintf(out->id, sizeof out->id, "%s", id);
  snprintf(out->address, sizeof out->address, "%s", addr);
  snprintf(out->role, sizeof out->role, "%s", role);
  rc = FEDC_OK;
out:
  json_decref(o);
  return rc;
}

int fc_replica_list(fc_leader *l, fc_replica_entry *out, size_t cap, size_t *n, char *err, size_t errlen) {
  fc_etcd_entry *e = calloc(cap ? cap : 1, sizeof *e);
  size_t got = 0, k = 0;
  *n = 0;
  if (!e) {
    snprintf(err, errlen, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  int rc = fc_leader_read_prefix(l, FC_REPLICA_KEY, e, cap, &got, err, errlen);
  for (size_t i = 0; rc == FEDC_OK && i < got; i++) {
    char why[200];
    if (fc_replica_parse((const char *)e[i].kv.value, e[i].kv.value_len, &out[k], why, sizeof why) != FEDC_OK)
      continue;
    out[k++].lease = e[i].kv.lease;
  }
  for (size_t i = 0; i < got; i++) fc_etcd_kv_clear(&e[i].kv);
  free(e);
  *n = k;
  return rc;
}

struct fc_replica_reg {
  fc_leader *l;
  fc_etcd *e;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;
  char key[600], id[128], address[256];
};

static void *reg_main(void *arg) {
  fc_replica_reg *r = arg;
  int64_t put_lease = 0;
  char put_role[16] = "", last_err[512] = "";
  for (;;) {
    fc_leader_info in;
    fc_leader_get_info(r->l, &in);
    const char *role = !strcmp(in.role, "leader") ? "leader" : !strcmp(in.role, "deposed") ? "deposed" : "standby";
    if (in.lease && (in.lease != put_lease || strcmp(role, put_role) != 0)) {
      char value[700], err[512];
      int rc = fc_replica_value(r->id, r->address, role, value, sizeof value);
      if (rc == FEDC_OK) rc = fc_etcd_put(r->e, r->key, value, strlen(value), in.lease, NULL, err, sizeof err);
      else
        snprintf(err, sizeof err, "replica id or address too long for the registry");
      if (rc == FEDC_OK) {
        put_lease = in.lease;
        snprintf(put_role, sizeof put_role, "%s", role);
        last_err[0] = 0;
      } else if (strcmp(err, last_err) != 0) { /* logged when it changes; the lease may be new or gone */
        FC_DEBUG(MOD, "replica registry %s not written yet: %s", r->key, err);
        snprintf(last_err, sizeof last_err, "%s", err);
      }
    }
    pthread_mutex_lock(&r->mu);
    if (!r->stop) {
      struct timespec ts;
      fc_deadline_after_ms(&ts, PERIOD_MS);
      pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    int stop = r->stop;
    pthread_mutex_unlock(&r->mu);
    if (stop) break;
  }
  return NULL;
}

int fc_replica_reg_start(const fc_etcd_opts *eo, fc_leader *l, const char *id, const char *address,
                         fc_replica_reg **out, char *err, size_t errlen) {
  fc_replica_reg *r = calloc(1, sizeof *r);
  if (!r) return FEDC_ERR_NOMEM;
  char name[256];
  fc_replica_key_name(id, name, sizeof name);
  snprintf(r->key, sizeof r->key, "%s/%s%s", fc_leader_prefix(l), FC_REPLICA_KEY, name);
  snprintf(r->id, sizeof r->id, "%s", id);
  snprintf(r->address, sizeof r->address, "%s", address);
  r->l = l;
  int rc = fc_etcd_open(eo, &r->e, err, errlen);
  if (rc != FEDC_OK) {
    free(r);
    return rc;
  }
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  if (pthread_create(&r->thread, NULL, reg_main, r) != 0) {
    snprintf(err, errlen, "cannot start the replica registry thread");
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    fc_etcd_close(r->e);
    free(r);
    return FEDC_ERR_NOMEM;
  }
  *out = r;
  return FEDC_OK;
}

void fc_replica_reg_stop(fc_replica_reg *r) {
  if (!r) return;
  pthread_mutex_lock(&r->mu);
  r->stop = 1;
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
  pthread_join(r->thread, NULL);
  fc_etcd_close(r->e);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r);
}
