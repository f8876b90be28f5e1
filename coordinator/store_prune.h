/*
 * store_prune.h - which model versions the state directory keeps
 * (`fedc coordinator --keep-versions N --keep-every K`).
 *
 * Off by default (N = 0: every version is kept, as before). With N >= 1,
 * relative to the current version C (the one state.json names):
 *
 *   | version v                         | kept in models/                          |
 *   |-----------------------------------|------------------------------------------|
 *   | v >= C - N + 1 (the last N, and   | everything: vN.safetensors, vN.manifest, |
 *   | anything newer than C)            | vN.opt.safetensors                       |
 *   | older, K >= 1 and v % K == 0      | the model and its signed manifest (what  |
 *   |                                   | `fedc model get` / `model verify` need); |
 *   |                                   | its optimizer state goes                 |
 *   | older, otherwise                  | nothing                                  |
 *
 * Why this is safe. A restart reads only the current version, its manifest
 * and its optimizer state (coordinator.c, model_sign.c), and N >= 1 always
 * keeps those whole. Nothing walks the parent chain: a manifest names its
 * parent's version and SHA-256, and `fedc model verify` checks one file
 * against its own manifest, so a kept version whose parent was pruned still
 * verifies. The audit log's hash chain does not read model files. Versions
 * newer than C (a publish in progress whose state.json is not written yet)
 * are never touched, so the caller passes the version state.json holds on
 * disk, after writing it.
 *
 * Only names this store writes (v + at least 6 digits, exactly as
 * fc_store_model_path prints them, + one of the three suffixes) are
 * considered; temporary files and anything else are left alone. Within one
 * version the model goes first and the manifest last, so a reader that found
 * the model (GetModel of an old version) nearly always finds its manifest.
 */
#ifndef FEDC_COORD_STORE_PRUNE_H
#define FEDC_COORD_STORE_PRUNE_H

#include <stddef.h>
#include <stdint.h>

/* What the policy keeps of version v when current is C. */
enum { FC_PRUNE_DROP = 0, FC_PRUNE_MODEL = 1, FC_PRUNE_ALL = 2 };
int fc_store_prune_keeps(uint64_t v, uint64_t current, uint64_t keep_last, uint64_t keep_every);

typedef struct fc_prune_stats {
  uint64_t files, bytes; /* removed */
} fc_prune_stats;

/* Apply the policy to dir/models. keep_last 0 does nothing. FEDC_ERR_IO
 * (naming the file) if the directory cannot be read or a file cannot be
 * removed; the other files are still tried. stats (may be NULL) counts what
 * was removed. */
int fc_store_prune(const char *dir, uint64_t current, uint64_t keep_last, uint64_t keep_every, fc_prune_stats *stats,
                   char *err, size_t errlen);

#endif
