/*
 * store.h - the coordinator's state directory: every model version as a
 * safetensors file named by version and carrying its SHA-256, the current
 * state, and the round history. A coordinator restarted on the same
 * directory continues from the last completed version.
 *
 *   | path                          | content                                         |
 *   |-------------------------------|-------------------------------------------------|
 *   | models/v000042.safetensors    | global model version 42; __metadata__ holds     |
 *   |                               | fedc.version, fedc.sha256 (of the raw payload), |
 *   |                               | fedc.round, fedc.parent_sha256, fedc.created    |
 *   | state.json                    | {"version","sha256","next_round","completed",   |
 *   |                               |  "abandoned","federation","model_file",         |
 *   |                               |  "paused","budget","config_rounds",             |
 *   |                               |  "open_round","pause_reason"} (fields below)    |
 *   | rounds.jsonl                  | one JSON object per ended round (RoundRecord),  |
 *   |                               | and per federated evaluation {"round","eval"}   |
 *
 * Write order on publish: model file (atomic rename) -> state.json (atomic
 * rename) -> rounds.jsonl line. A crash before state.json leaves the state at
 * the previous version, whose file is still there (the new file is rewritten
 * by the next round of that number); a crash after it can only lose the
 * history line. Restart is consistent either way, and the history never
 * names a version the state does not know.
 */
#ifndef FEDC_COORD_STORE_H
#define FEDC_COORD_STORE_H

#include <jansson.h>
#include <stdint.h>

#include "common/tensor.h"
#include "coordinator/engine.h"
#include "crypto/sha256.h"
#include "crypto/signed.h"

typedef struct fc_store_key {
  uint8_t key[32];
  int allow_plain;
} fc_store_key;

/* state.json. Every field is checked on load (type and range); a state file
 * of another federation is refused. Fields added after the first release
 * (paused, budget, config_rounds, open_round) default to 0 when absent. */
typedef struct fc_store_state {
  uint64_t version;           /* current global model version */
  uint8_t sha[FC_SHA256_LEN]; /* its SHA-256 */
  uint64_t next_round;        /* >= 1: the next round id to use */
  uint64_t completed, abandoned;
  int paused;                 /* an admin paused the federation */
  int has_budget;             /* budget and config_rounds were in the file */
  uint64_t budget;            /* round budget in force (0 = unlimited) */
  uint64_t config_rounds;     /* the configured budget it derives from */
  uint64_t open_round;        /* round running when saved (0 = none) */
  char pause_reason[256];     /* why paused when not by an admin (a drift hold); "" = none, absent in the file */
} fc_store_state;

/* Create the directory layout if missing. */
int fc_store_open(const char *dir, char *err, size_t errlen);
/* FEDC_ERR_NOT_FOUND if the directory holds no state yet; FEDC_ERR_FORMAT
 * (with the field named in err) if a field is missing, of the wrong type or
 * out of range, or the state belongs to another federation than
 * `federation`. */
int fc_store_load_state(const char *dir, const char *federation, fc_store_state *st, char *err, size_t errlen);
int fc_store_save_state(const char *dir, const char *federation, const fc_store_state *st, char *err, size_t errlen);
/* Path of a version's file. */
void fc_store_model_path(const char *dir, uint64_t version, char *out, size_t outlen);

/* Server optimizer state saved with model version `version` (of sha
 * model_sha): models/vNNNNNN.opt.safetensors with tensors "m" and "v" (as
 * many as the method keeps: nstate 0..2, n floats each), then "avg", the
 * model average (server_opt.h), if avg is not NULL; the method's name, the
 * step count and a SHA-256 of the payload, which payload_sha (may be NULL)
 * also gets: the version's signed manifest names it. */
int fc_store_write_opt(const char *dir, const fc_store_key *key, uint64_t version,
                       const uint8_t model_sha[FC_SHA256_LEN], const char *method, uint64_t step, int nstate,
                       const float *m, const float *v, const float *avg, size_t n, uint8_t *payload_sha, char *err,
                       size_t errlen);
/* Differential privacy accountant state (dp.json): the RDP composed so far
 * at each of the n orders of common/dp_accountant.h, the rounds counted and
 * the epsilon they give. Written atomically before a round's model is
 * published (a crash in between over-counts: the safe side). */
int fc_store_write_dp(const char *dir, const double *rdp, size_t n, uint64_t rounds, double eps, double delta,
                      double clip, char *err, size_t errlen);
/* NOT_FOUND if there is none; FORMAT if it is for another set of orders. */
int fc_store_read_dp(const char *dir, double *rdp, size_t n, uint64_t *rounds, double *clip, char *err, size_t errlen);
/* Read it back into m, v (n floats each, caller's; NULL: not wanted), and
 * the model average into avg if the file holds one and avg is not NULL
 * (*avg_found, may be NULL, says whether it did); payload_sha (may be NULL)
 * gets the payload's SHA-256, checked against the file's. NOT_FOUND if there
 * is none; FORMAT if it is for another method, model or size, or its tensors
 * are not m, v (as many as nstate) and optionally avg, each of n, in that
 * order; HASH if damaged. */
int fc_store_read_opt(const char *dir, const fc_store_key *key, uint64_t version,
                      const uint8_t model_sha[FC_SHA256_LEN], const char *method, int nstate, float *m, float *v,
                      float *avg, int *avg_found, size_t n, uint64_t *step, uint8_t *payload_sha, char *err,
                      size_t errlen);
/* Model files and optimizer state take `key`: NULL writes plaintext
 * safetensors; a key seals them with AES-256-GCM (store.c has the format).
 * Reads refuse a sealed file without a key and, with one, a plaintext file
 * unless allow_plain (an operator adopting an older state directory): else
 * whoever can write the directory could swap a sealed file for a plaintext
 * one of their choosing. */
int fc_store_write_model(const char *dir, const fc_store_key *key, uint64_t version, uint64_t round,
                         const fc_model_spec *spec, const float *data, const uint8_t sha[FC_SHA256_LEN],
                         const uint8_t *parent_sha, char *err, size_t errlen);
/* What a model file records about its version beyond the tensors. */
typedef struct fc_store_model_info {
  uint64_t round, created_unix;
  int has_parent;
  uint8_t parent_sha[FC_SHA256_LEN];
} fc_store_model_info;
/* Load a version, recompute its SHA-256 and compare with the recorded one;
 * info (may be NULL) gets its metadata. */
int fc_store_read_model(const char *dir, const fc_store_key *key, uint64_t version, fc_model_spec *spec, float **data,
                        uint8_t sha[FC_SHA256_LEN], fc_store_model_info *info, char *err, size_t errlen);
/* The signed manifest of a version: models/vNNNNNN.manifest, in the file
 * form of crypto/signed.h, written atomically before the version's model. */
void fc_store_manifest_path(const char *dir, uint64_t version, char *out, size_t outlen);
int fc_store_write_manifest(const char *dir, uint64_t version, const fc_signed *s, char *err, size_t errlen);
/* NOT_FOUND if the version has none. */
int fc_store_read_manifest(const char *dir, uint64_t version, fc_signed *s, char *err, size_t errlen);
/* Append one record and fsync. On failure (ENOSPC, EFBIG, ...) the file is
 * cut back to its previous length, so a short write never glues half a line
 * onto the next record; err names the system error. FEDC_ERR_STOPPED, nothing
 * written, if fileutil.h's commit guard refuses (a deposed replica); the same
 * for fc_store_append_eval. */
int fc_store_append_round(const char *dir, const fc_round_stats *r, char *err, size_t errlen);
/* store_anomaly.c: a round record's "anomaly" object, put into / read from
 * the record's JSON object (nothing without scored inputs). */
void fc_store_anomaly_put(json_t *o, const fc_round_stats *r);
void fc_store_anomaly_get(const json_t *o, fc_round_stats *r);
/* store_drift.c: a round record's "drift" object (model drift on the reference set). */
void fc_store_drift_put(json_t *o, const fc_round_stats *r);
void fc_store_drift_get(const json_t *o, fc_round_stats *r);
/* store_async.c: a buffer's "async" object (async mode). */
void fc_store_async_put(json_t *o, const fc_round_stats *r);
void fc_store_async_get(const json_t *o, fc_round_stats *r);
/* A federated evaluation's predicted-class counts and its drift check
 * (store_drift.c): "class_counts" and "drift" in the eval object. */
void fc_store_eval_drift_put(json_t *v, const fc_round_eval *e);
void fc_store_eval_drift_get(const json_t *v, fc_round_eval *e);
/* Append the federated evaluation of round `round`'s model, a line of its
 * own ({"round": R, "eval": {...}}: the round's line was written when it
 * ended, before its model was evaluated). Reading merges it into the latest
 * record of round R (none: the line is skipped); fc_store_append_round never
 * writes a record's eval. */
int fc_store_append_eval(const char *dir, uint64_t round, const fc_round_eval *e, char *err, size_t errlen);
/* Read the round records; returns count in *n (records malloc'd). Lines of
 * any length up to FC_STORE_ROUND_LINE_MAX bytes; a longer one is refused
 * (FEDC_ERR_TOO_LARGE, err names the line, nothing changed). A torn last
 * line (no newline: a crash mid-append) is skipped and cut off. */
#define FC_STORE_ROUND_LINE_MAX (16u << 20)
int fc_store_read_rounds(const char *dir, fc_round_stats **out, size_t *n, char *err, size_t errlen);

#endif
