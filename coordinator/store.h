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
 *   |                               |  "abandoned","federation","model_file"}         |
 *   | rounds.jsonl                  | one JSON object per ended round (RoundRecord)   |
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

#include <stdint.h>

#include "common/tensor.h"
#include "coordinator/engine.h"
#include "crypto/sha256.h"

typedef struct fc_store_state {
  uint64_t version;
  uint8_t sha[FC_SHA256_LEN];
  uint64_t next_round;
  uint64_t completed, abandoned;
} fc_store_state;

/* Create the directory layout if missing. */
int fc_store_open(const char *dir, char *err, size_t errlen);
/* FEDC_ERR_NOT_FOUND if the directory holds no state yet. */
int fc_store_load_state(const char *dir, fc_store_state *st, char *err, size_t errlen);
int fc_store_save_state(const char *dir, const char *federation, const fc_store_state *st, char *err, size_t errlen);
/* Path of a version's file. */
void fc_store_model_path(const char *dir, uint64_t version, char *out, size_t outlen);
int fc_store_write_model(const char *dir, uint64_t version, uint64_t round, const fc_model_spec *spec,
                         const float *data, const uint8_t sha[FC_SHA256_LEN], const uint8_t *parent_sha,
                         char *err, size_t errlen);
/* Load a version, recompute its SHA-256 and compare with the recorded one. */
int fc_store_read_model(const char *dir, uint64_t version, fc_model_spec *spec, float **data,
                        uint8_t sha[FC_SHA256_LEN], char *err, size_t errlen);
int fc_store_append_round(const char *dir, const fc_round_stats *r, char *err, size_t errlen);
/* Read up to `cap` most recent round records; returns count in *n (records malloc'd). */
int fc_store_read_rounds(const char *dir, fc_round_stats **out, size_t *n, char *err, size_t errlen);

#endif
