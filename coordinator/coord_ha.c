/*
 * coord_ha.c - the Leader role's link to etcd (issue 23): what a replica
 * that won the election (leader.h) writes to etcd, and when.
 *
 * Write order of a publish (coord_finalize): coord_ha_check (a fenced Txn
 * with no ops: we still hold the leader key) -> DP ledger, optimizer state,
 * manifest, model file in the shared store -> coord_ha_publish (a fenced Txn
 * moving P/model to {"version","sha256","round"}) -> the new version is
 * served -> state.json (coord_store_sync, fenced by coord_ha_check too).
 * So etcd's pointer never names a file that is not in the store, and a
 * deposed leader, whose fenced Txns etcd refuses, moves neither the pointer
 * nor state.json. A standby that wins reads the pointer first
 * (fc_coord_ha_reconcile): state.json is at the pointer, or one version
 * behind it when the last leader died between the two writes (it is rolled
 * forward: the file is there and its SHA-256 is checked); anything else is
 * refused.
 *
 * The audit log in the shared store has one writer, the leader: a replica
 * opens it without the single-coordinator lock (a frozen old leader holding
 * it would keep its successor out) and writes a record only while it leads
 * by its own clock (fc_audit_open_replica); each new leader's first record
 * is "leader" (who, and its fencing revision).
 *
 * Owns: nothing; state is in leader.h and etcd. May call: leader.h, store.h,
 * audit.h, common/log.h. Called by: coord_publish.c, coord_state.c, the CLI.
 */
#include "coordinator/coordinator.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/audit.h"
#include "coordinator/coord_int.h"
#include "coordinator/leader.h"
#include "coordinator/store.h"
#include "crypto/sha256.h"
#include "fedc/v1/fedc.pb-c.h"
#include "fedc/error.h"

#define MOD "coordinator"

/* Logged only: the shared audit log has one writer, the leader, and we are
 * not it any more (the new leader's "leader" record marks the change). */
static void deposed(fc_coord *c, const char *what, const char *why) {
  (void)c;
  FC_ERROR(MOD, "deposed: %s refused (%s): this replica stops serving and stands by", what, why);
}

static int may_write(void *arg) { return fc_leader_is_leader(arg); }

int coord_ha_audit_open(fc_coord *c, char *err, size_t errlen) {
  fc_leader *l = c->cfg.leader;
  int rc = fc_audit_open_replica(c->cfg.state_dir, may_write, l, &c->audit, err, errlen);
  if (rc != FEDC_OK) return rc;
  fc_leader_info in;
  fc_leader_get_info(l, &in);
  /* The version etcd's pointer names as we take over: a "model" record of a
   * later version before this one was announced by a leader that lost the
   * election before its pointer moved (deposed, it could not record the
   * failure here): it was never published. */
  json_t *f = json_pack("{s:s,s:s,s:I}", "replica", in.leader, "etcd_key_prefix", fc_leader_prefix(l),
                        "fencing_revision", (json_int_t)in.rev);
  fc_etcd_kv kv;
  memset(&kv, 0, sizeof kv);
  uint64_t pv = 0, pround = 0;
  uint8_t psha[FC_SHA256_LEN];
  char e2[512];
  if (fc_leader_read(l, "model", &kv, e2, sizeof e2) == FEDC_OK && kv.found &&
      fc_coord_ha_parse_pointer((const char *)kv.value, kv.value_len, &pv, psha, &pround, e2, sizeof e2) == FEDC_OK)
    json_object_set_new(f, "pointer_version", json_integer((json_int_t)pv));
  else
    json_object_set_new(f, "pointer_version", json_null());
  fc_etcd_kv_clear(&kv);
  fc_audit_append(c->audit, "leader", f);
  return FEDC_OK;
}

int coord_ha_check(fc_coord *c, const char *what, char *why, size_t whylen) {
  fc_leader *l = c->cfg.leader;
  if (!l) return FEDC_OK;
  char err[512];
  int rc = fc_leader_fenced(l, NULL, 0, NULL, err, sizeof err);
  if (rc == FEDC_OK) return FEDC_OK;
  if (rc == FEDC_ERR_STOPPED && fc_leader_suspended(l, NULL))
    FC_WARN(MOD, "%s: not done while etcd has no quorum (%s)", what, err);
  else if (rc == FEDC_ERR_REJECTED || rc == FEDC_ERR_STOPPED)
    deposed(c, what, err);
  snprintf(why, whylen, "%s not written: %s", what, err);
  return rc;
}

int coord_ha_checkin_held(fc_coord *c, fc_scall *call, const char *who) {
  fc_leader *l = c->cfg.leader;
  uint32_t retry = 0;
  if (!l || !fc_leader_suspended(l, &retry)) return 0;
  /* Told, not dropped: UNAVAILABLE with a retry time, as the busy refusals
   * are (the client waits and comes back, without counting a failure). No
   * task goes out: a round it joined could not be published anyway. */
  char why[200];
  snprintf(why, sizeof why, "etcd has no quorum: the coordinator publishes nothing until it is back; retry in %u ms",
           retry);
  FC_DEBUG(MOD, "check-in from %s: %s", who, why);
  fc_scall_finish_retry(call, GRPC_STATUS_UNAVAILABLE, why, retry);
  return 1;
}

int coord_ha_publish(fc_coord *c, uint64_t version, const uint8_t sha[FC_SHA256_LEN], uint64_t round, char *why,
                     size_t whylen) {
  fc_leader *l = c->cfg.leader;
  if (!l) return FEDC_OK;
  char hex[FC_SHA256_HEX_LEN], key[300], value[200], err[512];
  snprintf(key, sizeof key, "%s/model", fc_leader_prefix(l));
  snprintf(value, sizeof value, "{\"version\":%llu,\"sha256\":\"%s\",\"round\":%llu}", (unsigned long long)version,
           fc_hex(sha, FC_SHA256_LEN, hex), (unsigned long long)round);
  fc_etcd_op op = {.kind = FC_ETCD_PUT, .key = key, .value = value, .value_len = strlen(value)};
  int rc = fc_leader_fenced(l, &op, 1, NULL, err, sizeof err);
  if (rc == FEDC_OK) return FEDC_OK;
  char what[64];
  snprintf(what, sizeof what, "publishing v%llu", (unsigned long long)version);
  if (rc == FEDC_ERR_REJECTED || rc == FEDC_ERR_STOPPED) deposed(c, what, err);
  snprintf(why, whylen, "v%llu not published: etcd's model pointer was not moved: %s", (unsigned long long)version,
           err);
  return rc;
}

int fc_coord_ha_parse_pointer(const char *value, size_t len, uint64_t *version, uint8_t sha[FC_SHA256_LEN],
                              uint64_t *round, char *err, size_t errlen) {
  json_error_t je;
  json_t *o = json_loadb(value, len, 0, &je);
  json_t *v = json_object_get(o, "version"), *s = json_object_get(o, "sha256"), *r = json_object_get(o, "round");
  int rc = FEDC_ERR_FORMAT;
  if (!json_is_integer(v) || json_integer_value(v) < 0 || !json_is_string(s) || !json_is_integer(r) ||
      json_integer_value(r) < 0 || strlen(json_string_value(s)) != 2 * FC_SHA256_LEN ||
      fc_unhex(json_string_value(s), sha, FC_SHA256_LEN) != 0) {
    snprintf(err, errlen, "etcd's model pointer is not {\"version\",\"sha256\",\"round\"}: %.80s",
             value);
    goto out;
  }
  *version = (uint64_t)json_integer_value(v);
  *round = (uint64_t)json_integer_value(r);
  rc = FEDC_OK;
out:
  json_decref(o);
  return rc;
}

int fc_coord_ha_reconcile(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  fc_leader *l = cfg->leader;
  if (!l) return FEDC_OK;
  char e2[512];
  fc_etcd_kv kv;
  memset(&kv, 0, sizeof kv);
  int rc = fc_leader_read(l, "model", &kv, e2, sizeof e2);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "reading etcd's model pointer: %s", e2);
    return rc;
  }
  uint64_t pv = 0, pround = 0;
  uint8_t psha[FC_SHA256_LEN];
  if (!kv.found) { /* nothing published through etcd yet: the store's state stands */
    FC_INFO(MOD, "etcd has no model pointer under %s yet: starting from the state directory as it is",
            fc_leader_prefix(l));
    return FEDC_OK;
  }
  rc = fc_coord_ha_parse_pointer((const char *)kv.value, kv.value_len, &pv, psha, &pround, err, errlen);
  fc_etcd_kv_clear(&kv);
  if (rc != FEDC_OK) return rc;
  fc_store_state st;
  rc = fc_store_load_state(cfg->state_dir, cfg->federation, &st, e2, sizeof e2);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "etcd's model pointer names v%llu but the state directory %s has no state (%s): is "
             "--state-dir the store the other replicas share?",
             (unsigned long long)pv, cfg->state_dir, e2);
    return rc == FEDC_ERR_NOT_FOUND ? FEDC_ERR_FORMAT : rc;
  }
  if (st.version == pv) {
    if (memcmp(st.sha, psha, FC_SHA256_LEN) != 0) {
      snprintf(err, errlen, "state.json and etcd's pointer both name v%llu but with different SHA-256s",
               (unsigned long long)pv);
      return FEDC_ERR_HASH;
    }
    return FEDC_OK;
  }
  if (pv != st.version + 1) {
    snprintf(err, errlen, "state.json is at v%llu but etcd's model pointer at v%llu: the store and etcd disagree "
             "(another --state-dir, or a coordinator without --etcd on this one)",
             (unsigned long long)st.version, (unsigned long long)pv);
    return FEDC_ERR_FORMAT;
  }
  /* The last leader moved the pointer and stopped before state.json: the
   * version is published (clients may have it); take it. */
  fc_store_key key;
  memset(&key, 0, sizeof key);
  memcpy(key.key, cfg->model_key, sizeof key.key);
  key.allow_plain = cfg->adopt_state;
  fc_model_spec spec;
  float *data = NULL;
  uint8_t fsha[FC_SHA256_LEN];
  rc = fc_store_read_model(cfg->state_dir, cfg->model_key_set ? &key : NULL, pv, &spec, &data, fsha, NULL, e2,
                           sizeof e2);
  OPENSSL_cleanse(key.key, sizeof key.key);
  free(data);
  if (rc != FEDC_OK || memcmp(fsha, psha, FC_SHA256_LEN) != 0) {
    snprintf(err, errlen, "etcd's model pointer names v%llu, whose file in the store %s", (unsigned long long)pv,
             rc != FEDC_OK ? e2 : "has another SHA-256");
    return rc != FEDC_OK ? rc : FEDC_ERR_HASH;
  }
  st.version = pv;
  memcpy(st.sha, psha, FC_SHA256_LEN);
  if (st.next_round <= pround) st.next_round = pround + 1;
  st.completed++;
  st.open_round = 0;
  if ((rc = fc_store_save_state(cfg->state_dir, cfg->federation, &st, err, errlen)) != FEDC_OK) return rc;
  FC_WARN(MOD, "state.json rolled forward to v%llu (round %llu): the previous leader published it and stopped "
          "before writing state.json",
          (unsigned long long)pv, (unsigned long long)pround);
  return FEDC_OK;
}

int coord_ha_status(fc_coord *c, Fedc__V1__ReplicaStatus *out, fc_leader_info *in) {
  fc_leader *l = c->cfg.leader;
  if (!l) return 0;
  fc_leader_get_info(l, in);
  out->role = in->role;
  out->leader = in->leader;
  out->etcd_endpoint = in->endpoint;
  out->etcd_ok = in->etcd_ok;
  out->etcd_error = in->etcd_error;
  out->etcd_last_ok_ms = in->etcd_last_ok_ms;
  out->fencing_revision = in->rev;
  out->etcd_prefix = (char *)fc_leader_prefix(l);
  out->lease_ttl_s = in->ttl_s;
  return 1;
}
