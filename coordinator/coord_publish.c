/*
 * coord_publish.c - a closed round becomes a published version: the
 * aggregate (plain, robust or secure), DP noise, the server optimizer's step,
 * the watermark, the drift check on the reference set, then the optimizer
 * state, the signed manifest, the audit record and the model file, in that
 * order, and only then the pointer moves.
 *
 * Owns: the server optimizer's state and its per-round backup (c->sopt,
 * c->sopt_backup), undone unless the version is published.
 * Runs on the driver thread, outside `mu` (the engine is in AGGREGATING,
 * which refuses uploads, so nothing races it).
 * May call: aggregate.h, coord_secagg.c (the unmasked sum), coord_dp.c,
 * server_opt.h, watermark.h, coord_drift.c (the drift check), model_sign.c
 * (coord_sign_version), audit.h, store.h, coord_state.c (snapshots),
 * coord_ha.c (with --etcd: the fence before writing, the pointer after).
 */
#include "coordinator/coordinator.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/status.h>

#include "common/blas.h"
#include "common/chunk.h"
#include "common/clock.h"
#include "common/dp_accountant.h"
#include "common/dp_noise.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/aggregate.h"
#include "coordinator/anomaly.h"
#include "coordinator/audit.h"
#include "coordinator/coord_codec.h"
#include "coordinator/coord_int.h"
#include "coordinator/dp_clip.h"
#include "coordinator/refusals.h"
#include "coordinator/store.h"
#include "coordinator/store_prune.h"
#include "coordinator/watermark.h"
#include "crypto/pki.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "secagg/params.h"
#include "transport/accept_guard.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"

#define MOD "coordinator"

/* The optimizer's moments and model average before the running step, and
 * back. */
static int sopt_save(fc_coord *c) {
  fc_sopt *o = c->sopt;
  int ns = fc_sopt_nstate(o->cfg.kind), nv = ns + (o->a != NULL);
  size_t n = o->n;
  if (nv && !c->sopt_backup && !(c->sopt_backup = malloc((size_t)nv * n * sizeof(float)))) return FEDC_ERR_NOMEM;
  if (ns >= 1) memcpy(c->sopt_backup, o->m, n * sizeof(float));
  if (ns >= 2) memcpy(c->sopt_backup + n, o->v, n * sizeof(float));
  if (o->a) memcpy(c->sopt_backup + (size_t)ns * n, o->a, n * sizeof(float));
  c->sopt_backup_step = o->step;
  c->sopt_backup_a_set = o->a_set;
  return FEDC_OK;
}

static void sopt_restore(fc_coord *c) {
  fc_sopt *o = c->sopt;
  int ns = fc_sopt_nstate(o->cfg.kind);
  if (ns >= 1) memcpy(o->m, c->sopt_backup, o->n * sizeof(float));
  if (ns >= 2) memcpy(o->v, c->sopt_backup + o->n, o->n * sizeof(float));
  if (o->a) memcpy(o->a, c->sopt_backup + (size_t)ns * o->n, o->n * sizeof(float));
  o->step = c->sopt_backup_step;
  o->a_set = c->sopt_backup_a_set;
}

/* Save the optimizer state (and the model average) beside version `version`
 * (of sha); *has_opt and opt_sha: whether there is any (sgd alone keeps
 * none) and the payload's SHA-256, which the version's manifest names. */
static int sopt_write(fc_coord *c, uint64_t version, const uint8_t sha[FC_SHA256_LEN], int *has_opt,
                      uint8_t opt_sha[FC_SHA256_LEN], char *why, size_t whylen) {
  fc_sopt *o = c->sopt;
  int ns = fc_sopt_nstate(o->cfg.kind);
  *has_opt = ns > 0 || o->a;
  if (!*has_opt) return FEDC_OK;
  return fc_store_write_opt(c->cfg.state_dir, coord_model_key(c), version, sha, fc_sopt_name(o->cfg.kind), o->step,
                            ns, o->m, o->v, o->a, o->n, opt_sha, why, whylen);
}

/* The model average as a version of its own (GetModel averaged), swapped
 * in under mu; NULL without --model-average. */
static int avg_publish(fc_coord *c, uint64_t version, const fc_model_spec *spec) {
  fc_sopt *o = c->sopt;
  if (!o->a) return FEDC_OK;
  float *copy = malloc(o->n * sizeof *copy);
  if (copy) memcpy(copy, o->a, o->n * sizeof *copy);
  model_ref *m = copy ? coord_model_new(version, spec, copy) : NULL;
  if (!m) {
    free(copy);
    return FEDC_ERR_NOMEM;
  }
  pthread_mutex_lock(&c->mu);
  model_ref *prev = c->avg_model;
  c->avg_model = m;
  pthread_mutex_unlock(&c->mu);
  coord_model_unref(prev);
  return FEDC_OK;
}

/* At start: the state saved with the current version, if any. A new
 * federation, or one that ran another optimizer (or none) so far, starts
 * from fresh moments, and says so. */
int coord_sopt_load(fc_coord *c, uint64_t version, const uint8_t sha[FC_SHA256_LEN], char *err, size_t errlen) {
  fc_sopt *o = c->sopt;
  int ns = fc_sopt_nstate(o->cfg.kind);
  if (!ns && !o->a) return FEDC_OK;
  char why[600];
  uint8_t want[FC_SHA256_LEN], got[FC_SHA256_LEN];
  int rc = fc_store_read_opt(c->cfg.state_dir, coord_model_key(c), version, sha, fc_sopt_name(o->cfg.kind), ns, o->m,
                             o->v, o->a, &o->a_set, o->n, &o->step, got, why, sizeof why);
  if (rc == FEDC_OK && c->model->man.msg && !c->adopted) {
    /* The next version is computed from this state: it must be the one the
     * signed manifest names, or it could steer what gets signed next. */
    if (!coord_manifest_opt_sha(c->model, want)) {
      FC_WARN(MOD, "server optimizer %s: the state file of model v%llu is not in its signed manifest: ignored, "
                   "starting from fresh state", fc_sopt_name(o->cfg.kind), (unsigned long long)version);
      fc_sopt_reset(o);
      o->a_set = 0;
      return FEDC_OK;
    }
    if (!fc_digest_equal(want, got, FC_SHA256_LEN)) {
      snprintf(err, errlen, "server optimizer state of model v%llu differs from what its signed manifest names "
                            "(restore models/ from a backup)", (unsigned long long)version);
      return FEDC_ERR_SIGNATURE;
    }
  }
  if (rc == FEDC_OK) {
    FC_INFO(MOD, "server optimizer %s: state of model v%llu loaded (step %llu)", fc_sopt_name(o->cfg.kind),
            (unsigned long long)version, (unsigned long long)o->step);
    return FEDC_OK;
  }
  if (rc == FEDC_ERR_NOT_FOUND || rc == FEDC_ERR_FORMAT) {
    if (version > 0 || rc == FEDC_ERR_FORMAT)
      FC_WARN(MOD, "server optimizer %s starts from fresh state at model v%llu (%s)", fc_sopt_name(o->cfg.kind),
              (unsigned long long)version, rc == FEDC_ERR_NOT_FOUND ? "none saved with it" : why);
    return FEDC_OK;
  }
  snprintf(err, errlen, "server optimizer state: %s", why);
  return rc;
}

/* GetModel averaged: the model average as of `version` (latest: the current
 * one), from memory or from the state saved with that version; NULL with a
 * gRPC status and a sentence if there is none. Unsigned: the manifest
 * vouches for the version and for the state file the average is in, not for
 * the average's own bytes. */
model_ref *coord_avg_get(fc_coord *c, uint64_t version, int latest, int *code, char *why, size_t whylen) {
  pthread_mutex_lock(&c->mu);
  model_ref *m = c->avg_model, *cur = c->model;
  if (m && (latest || m->version == version)) atomic_fetch_add(&m->refs, 1);
  else m = NULL;
  uint64_t now = cur->version;
  pthread_mutex_unlock(&c->mu);
  if (m) return m;
  fc_sopt *o = c->sopt;
  if (!o->a) {
    *code = GRPC_STATUS_FAILED_PRECONDITION;
    snprintf(why, whylen, "this coordinator keeps no model average (start it with --model-average)");
    return NULL;
  }
  *code = GRPC_STATUS_NOT_FOUND;
  if (latest || version > now) {
    snprintf(why, whylen, "no model average of version %llu (latest is %llu)", (unsigned long long)version,
             (unsigned long long)now);
    return NULL;
  }
  /* An older version: its state file (of the method in use now), checked
   * as the version is: its model against its signed manifest, then the
   * state file against the hash that manifest names. */
  fc_model_spec spec;
  float *data = NULL, *avg = NULL;
  uint8_t sha[FC_SHA256_LEN], got[FC_SHA256_LEN], want[FC_SHA256_LEN];
  char err[600];
  int found = 0, rc;
  uint64_t step;
  model_ref *ver = NULL;
  rc = fc_store_read_model(c->cfg.state_dir, coord_model_key(c), version, &spec, &data, sha, NULL, err, sizeof err);
  if (rc == FEDC_OK && fc_model_numel(&spec) != o->n) {
    rc = FEDC_ERR_SHAPE;
    snprintf(err, sizeof err, "it has another model's shape");
  }
  if (rc == FEDC_OK && !(ver = coord_model_new(version, &spec, data))) rc = FEDC_ERR_NOMEM;
  if (ver) data = NULL;
  if (rc == FEDC_OK) rc = coord_manifest_load(c, ver, NULL, 0, err, sizeof err);
  /* Signing on: a version without its manifest (removed?) is not vouched
   * for, and neither is the state beside it. */
  if (rc == FEDC_OK && c->sign_key && !ver->man.msg) {
    rc = FEDC_ERR_SIGNATURE;
    snprintf(err, sizeof err, "model v%llu has no signed manifest", (unsigned long long)version);
  }
  int unnamed = rc == FEDC_OK && ver->man.msg && !coord_manifest_opt_sha(ver, want); /* --adopt-state re-signed it */
  if (rc == FEDC_OK && !unnamed && !(avg = malloc(o->n * sizeof *avg))) rc = FEDC_ERR_NOMEM;
  if (rc == FEDC_OK && !unnamed)
    rc = fc_store_read_opt(c->cfg.state_dir, coord_model_key(c), version, sha, fc_sopt_name(o->cfg.kind),
                           fc_sopt_nstate(o->cfg.kind), NULL, NULL, avg, &found, o->n, &step, got, err, sizeof err);
  if (rc == FEDC_OK && !unnamed && ver->man.msg && !fc_digest_equal(want, got, FC_SHA256_LEN)) {
    rc = FEDC_ERR_SIGNATURE;
    snprintf(err, sizeof err, "its state file is not the one its signed manifest names");
  }
  if (rc == FEDC_OK && found && (m = coord_model_new(version, &spec, avg))) {
    avg = NULL; /* m owns it */
  } else if (rc == FEDC_OK && found) {
    *code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(why, whylen, "out of memory");
  } else if (rc == FEDC_OK || rc == FEDC_ERR_NOT_FOUND) {
    /* None saved: before --model-average, the version the coordinator
     * started at, pruned (--keep-every keeps models, not state), or
     * re-signed by --adopt-state without its state. Anything else that
     * keeps the file from being read (damage, another server optimizer's
     * state) is a DATA_LOSS below, with the reason in the log. */
    snprintf(why, whylen, "no model average saved with version %llu (the average is saved with the versions "
                          "published while the coordinator keeps one)", (unsigned long long)version);
  } else {
    *code = rc == FEDC_ERR_NOMEM ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_DATA_LOSS;
    FC_WARN(MOD, "GetModel averaged v%llu: %s", (unsigned long long)version, err);
    snprintf(why, whylen, "the model average of version %llu cannot be read (the coordinator's log says why)",
             (unsigned long long)version);
  }
  coord_model_unref(ver);
  free(avg);
  free(data);
  return m;
}

/* At start, after coord_sopt_load: with --model-average, the average goes
 * on from the one saved with the current version, or starts at it. */
int coord_avg_init(fc_coord *c, char *err, size_t errlen) {
  fc_sopt *o = c->sopt;
  if (!o->a) return FEDC_OK;
  if (!o->a_set) {
    fc_sopt_average(o, c->model->data, c->model->version);
    if (c->model->version > 0)
      FC_INFO(MOD, "model average (beta %g) starts at model v%llu: none was saved with it (or it was saved by "
                   "another server optimizer)", (double)o->cfg.average, (unsigned long long)c->model->version);
  }
  if (avg_publish(c, c->model->version, &c->model->spec) != FEDC_OK) {
    snprintf(err, errlen, "out of memory for the model average");
    return FEDC_ERR_NOMEM;
  }
  return FEDC_OK;
}

/* "adam lr=0.01 beta1=0.9 beta2=0.99 tau=0.001": for status and rounds.jsonl. */
void coord_sopt_text(const fc_coord *c, char *buf, size_t len) {
  const fc_sopt_cfg *o = &c->sopt->cfg;
  int w = snprintf(buf, len, "%s lr=%g", fc_sopt_name(o->kind), (double)o->lr);
  if (w < 0 || (size_t)w >= len) return;
  if (o->kind == FC_SOPT_AVGM)
    w += snprintf(buf + w, len - (size_t)w, " beta1=%g%s", (double)o->beta1, o->nesterov ? " nesterov" : "");
  else if (o->kind == FC_SOPT_ADAGRAD)
    w += snprintf(buf + w, len - (size_t)w, " beta1=%g tau=%g", (double)o->beta1, (double)o->tau);
  else if (o->kind > FC_SOPT_ADAGRAD)
    w += snprintf(buf + w, len - (size_t)w, " beta1=%g beta2=%g tau=%g", (double)o->beta1, (double)o->beta2,
                  (double)o->tau);
  if (o->average > 0 && w >= 0 && (size_t)w < len) snprintf(buf + w, len - (size_t)w, " average=%g", (double)o->average);
}

/* The watermark (watermark.h) goes into the new version after the server
 * optimizer's step and before it is hashed and signed: what clients get and
 * what the manifest vouches for is the watermarked model. Post-processing of
 * the aggregate: no client data, no privacy cost. A failed step publishes
 * the version without this round's fine-tuning, with a warning. */
static void coord_watermark(fc_coord *c, float *params, uint64_t version) {
  fc_wm_stats st;
  int rc = fc_wm_embed(c->wm, params, &st);
  if (rc != FEDC_OK)
    FC_WARN(MOD, "watermark: fine-tuning v%llu failed (%s): it goes out without this round's steps",
            (unsigned long long)version, fedc_strerror(rc));
  else
    FC_DEBUG(MOD, "watermark: v%llu: %u steps, triggers right %u -> %u of %d", (unsigned long long)version, st.steps,
             st.before, st.after, FC_WM_TRIGGERS);
}

int coord_finalize(fc_coord *c, uint64_t *version, uint8_t sha[FC_SHA256_LEN], char *why, size_t whylen) {
  model_ref *old = coord_model_get(c);
  int stepped = 0;
  size_t n = fc_model_numel(&old->spec);
  float *next = malloc(n * sizeof *next), *delta = malloc(n * sizeof *delta);
  uint32_t count = 0;
  int rc = FEDC_ERR_NOMEM;
  if (!next || !delta) {
    snprintf(why, whylen, "out of memory finalizing the model");
    goto out;
  }
  /* A replica on etcd: nothing reaches the shared store unless we still lead (coord_ha.c). */
  if ((rc = coord_ha_check(c, "writing a new version", why, whylen)) != FEDC_OK) goto out;
  if (c->cfg.engine.secagg) {
    if ((rc = coord_sa_finish(c, delta, &count, why, whylen)) != FEDC_OK) goto out;
  } else if ((rc = c->agg->ops->round_finish(c->agg, delta, &count)) != FEDC_OK) {
    if (fc_robust_parse(c->cfg.aggregator) > FC_AGG_FEDAVG) snprintf(why, whylen, "%s", fc_agg_robust_why(c->agg));
    else snprintf(why, whylen, "aggregator has no committed update");
    goto out;
  }
  coord_calib_finish(c, delta); /* --async-calibrate: + the cached updates' mean */
  coord_anomaly_round(c, delta); /* the combined update, before DP noise and the server step */
  if (c->cfg.dp_noise_multiplier > 0 && (rc = coord_dp_privatize(c, delta, n, count, why, whylen)) != FEDC_OK) goto out;
  if (c->cfg.engine.async && c->cfg.engine.staleness.fedbuff) coord_async_fedbuff_scale(c, delta, n);
  memcpy(next, old->data, n * sizeof *next);
  /* The server optimizer's step, undone unless the version is published. */
  if ((rc = sopt_save(c)) != FEDC_OK) {
    snprintf(why, whylen, "out of memory finalizing the model");
    goto out;
  }
  fc_sopt_step(c->sopt, next, delta);
  stepped = 1;
  if (c->wm) coord_watermark(c, next, old->version + 1);
  if (!fc_all_finite(next, n, NULL)) {
    rc = FEDC_ERR_NONFINITE;
    snprintf(why, whylen, "aggregated model has NaN/Inf values");
    goto out;
  }
  fc_sopt_average(c->sopt, next, old->version + 1); /* --model-average; saved with the state below, undone with it */
  fc_engine_status es;
  pthread_mutex_lock(&c->mu);
  fc_engine_get_status(c->engine, fc_now_ms(), &es);
  pthread_mutex_unlock(&c->mu);
  /* The final weights (after the watermark), before they are signed: a
   * drift over the threshold is warned and audited before anyone can fetch
   * the version; the hold itself comes once it is published (coord_drift.c). */
  coord_drift_check(c, next, old->version + 1, es.round);
  model_ref *m = coord_model_new(old->version + 1, &old->spec, next);
  if (!m) {
    rc = FEDC_ERR_NOMEM;
    snprintf(why, whylen, "out of memory finalizing the model");
    goto out;
  }
  next = NULL;
  /* The optimizer state, then the manifest naming it and the model, then
   * the model file: no version reaches state.json without its manifest,
   * which vouches for the state the next version is computed from. */
  uint8_t opt_sha[FC_SHA256_LEN];
  int has_opt = 0, announced = 0;
  if ((rc = sopt_write(c, m->version, m->sha, &has_opt, opt_sha, why, whylen)) == FEDC_OK &&
      (rc = coord_sign_version(c, m, es.round, old->sha, has_opt ? opt_sha : NULL, why, whylen)) == FEDC_OK) {
    char hex[FC_SHA256_HEX_LEN], phex[FC_SHA256_HEX_LEN];
    fc_audit_append(c->audit, "model",
                    coord_audit_manifest(json_pack("{s:I,s:I,s:s,s:s,s:I}", "version", (json_int_t)m->version, "round",
                                                   (json_int_t)es.round, "parent", fc_hex(old->sha, FC_SHA256_LEN, phex),
                                                   "sha256", fc_hex(m->sha, FC_SHA256_LEN, hex), "updates",
                                                   (json_int_t)count),
                                         m));
    announced = 1;
    rc = fc_store_write_model(c->cfg.state_dir, coord_model_key(c), m->version, es.round, &m->spec, m->data, m->sha,
                              old->sha, why, whylen);
    /* The file is in the store: only now may etcd's pointer name it. */
    if (rc == FEDC_OK) rc = coord_ha_publish(c, m->version, m->sha, es.round, why, whylen);
  }
  if (rc != FEDC_OK) {
    if (announced) /* a failure before the record needs none: the version was never announced */
      fc_audit_append(c->audit, "model_failed",
                      json_pack("{s:I,s:s}", "version", (json_int_t)m->version, "reason", why));
    coord_model_unref(m);
    goto out;
  }
  stepped = 0; /* kept */
  pthread_mutex_lock(&c->mu);
  model_ref *prev = c->model;
  c->model = m;
  pthread_mutex_unlock(&c->mu);
  coord_model_unref(prev);
  coord_calib_published(c);
  if (avg_publish(c, m->version, &m->spec) != FEDC_OK)
    FC_WARN(MOD, "model average of v%llu: out of memory: GetModel serves it from disk", (unsigned long long)m->version);
  *version = m->version;
  memcpy(sha, m->sha, FC_SHA256_LEN);
  rc = FEDC_OK;
out:
  if (stepped) sopt_restore(c);
  coord_model_unref(old);
  free(next);
  free(delta);
  return rc;
}
