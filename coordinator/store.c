/*
 * store.c - state directory of the coordinator. Layout and write order in
 * store.h. JSON through jansson; models through common/safetensors.
 */
#include "coordinator/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/manifest.h"
#include "common/safetensors.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"

/* ---- model files, optionally encrypted at rest ------------------------------------
 * With a key, a safetensors image is sealed whole with AES-256-GCM:
 *
 *   "FEDCENC1" | nonce (12, random) | ciphertext (as long as the image) | tag (16)
 *
 * The associated data is "fedc-at-rest-v1:" and the file's base name
 * (v000005.safetensors, v000005.opt.safetensors), so a file copied over
 * another version's or kind's name does not open, and the state directory
 * can move. Without a key a sealed file is refused with a sentence saying so;
 * with one, so is a plaintext file unless the key says allow_plain. Older
 * sealed files under their own names still open: the signed manifest (which
 * also covers the optimizer state) and state.json catch those swaps. */
#define ENC_MAGIC "FEDCENC1"
#define ENC_HDR (8 + FC_GCM_NONCE_LEN)

static void enc_aad(const char *path, char *aad, size_t cap) {
  const char *b = strrchr(path, '/');
  snprintf(aad, cap, "fedc-at-rest-v1:%s", b ? b + 1 : path);
}

static int write_st(const char *path, const fc_store_key *key, const fc_model_spec *spec, const float *data,
                    const fc_st_meta *meta, char *err, size_t errlen) {
  if (!key) return fc_safetensors_write(path, spec, data, meta, err, errlen);
  uint8_t *img = NULL;
  size_t n = 0;
  int rc = fc_safetensors_encode(spec, data, meta, &img, &n, err, errlen);
  if (rc != FEDC_OK) return rc;
  uint8_t hdr[ENC_HDR], tag[FC_GCM_TAG_LEN];
  char aad[1100];
  enc_aad(path, aad, sizeof aad);
  memcpy(hdr, ENC_MAGIC, 8);
  if ((rc = fc_random_bytes(hdr + 8, FC_GCM_NONCE_LEN)) == FEDC_OK)
    rc = fc_gcm_seal(key->key, hdr + 8, (const uint8_t *)aad, strlen(aad), img, n, img, tag);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "cannot encrypt %s: %s", path, fedc_strerror(rc));
  } else {
    fc_atomic_file f;
    rc = fc_atomic_begin(&f, path, 0600, err, errlen);
    if (rc == FEDC_OK) rc = fc_atomic_write(&f, hdr, sizeof hdr, err, errlen);
    if (rc == FEDC_OK) rc = fc_atomic_write(&f, img, n, err, errlen);
    if (rc == FEDC_OK) rc = fc_atomic_write(&f, tag, sizeof tag, err, errlen);
    if (rc == FEDC_OK) rc = fc_atomic_commit(&f, err, errlen);
  }
  free(img);
  return rc;
}

/* 1 if path starts with the encrypted-file magic, 0 if not, -1 if unreadable. */
static int is_encrypted(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char m[8];
  ssize_t r = read(fd, m, sizeof m);
  close(fd);
  return r == 8 && memcmp(m, ENC_MAGIC, 8) == 0;
}

static int read_st(const char *path, const fc_store_key *key, fc_model_spec *spec, float **data, fc_st_meta *meta,
                   uint64_t max_bytes, char *err, size_t errlen) {
  int enc = is_encrypted(path);
  if (enc == 0 && key && !key->allow_plain) {
    snprintf(err, errlen,
             "%s is not encrypted although --model-key-file is set (a file replaced, or a state from before the "
             "key: --adopt-state reads it once)",
             path);
    return FEDC_ERR_CRYPTO;
  }
  if (enc <= 0) return fc_safetensors_read(path, spec, data, meta, max_bytes, err, errlen);
  if (!key) {
    snprintf(err, errlen, "%s is encrypted at rest: start the coordinator with --model-key-file", path);
    return FEDC_ERR_INVALID;
  }
  char *cbuf = NULL;
  size_t n = 0;
  int rc = fc_read_file(path, (size_t)(max_bytes + (FC_ST_HEADER_MAX + 8) + ENC_HDR + FC_GCM_TAG_LEN), &cbuf, &n);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "cannot read %s: %s", path, fedc_strerror(rc));
    return rc;
  }
  uint8_t *buf = (uint8_t *)cbuf;
  char aad[1100];
  enc_aad(path, aad, sizeof aad);
  if (n < ENC_HDR + FC_GCM_TAG_LEN) {
    snprintf(err, errlen, "%s: encrypted file truncated", path);
    rc = FEDC_ERR_FORMAT;
  } else if (fc_gcm_open(key->key, buf + 8, (const uint8_t *)aad, strlen(aad), buf + ENC_HDR,
                         n - ENC_HDR - FC_GCM_TAG_LEN, buf + n - FC_GCM_TAG_LEN, buf + ENC_HDR) != FEDC_OK) {
    snprintf(err, errlen, "%s does not decrypt with the key of --model-key-file (wrong key, or the file was changed)",
             path);
    rc = FEDC_ERR_CRYPTO;
  } else {
    rc = fc_safetensors_decode(buf + ENC_HDR, n - ENC_HDR - FC_GCM_TAG_LEN, path, spec, data, meta, max_bytes, err,
                               errlen);
  }
  fc_wipe(buf, n);
  free(buf);
  return rc;
}

int fc_store_open(const char *dir, char *err, size_t errlen) {
  char p[1024];
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create state directory %s: %s", dir, strerror(errno));
    return FEDC_ERR_IO;
  }
  snprintf(p, sizeof p, "%s/models", dir);
  if (mkdir(p, 0700) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create %s: %s", p, strerror(errno));
    return FEDC_ERR_IO;
  }
  return FEDC_OK;
}

static uint64_t json_u64(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) && json_integer_value(v) >= 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* A field of state.json that must be a non-negative integer (or, when
 * optional, may be absent: then 0). */
static int state_u64(json_t *o, const char *path, const char *k, int optional, uint64_t min, uint64_t *out,
                     char *err, size_t errlen) {
  json_t *v = json_object_get(o, k);
  if (!v && optional) {
    *out = 0;
    return FEDC_OK;
  }
  if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min) {
    snprintf(err, errlen, "%s: field '%s' must be an integer >= %llu%s", path, k, (unsigned long long)min,
             v ? "" : " (missing)");
    return FEDC_ERR_FORMAT;
  }
  *out = (uint64_t)json_integer_value(v);
  return FEDC_OK;
}

int fc_store_load_state(const char *dir, const char *federation, fc_store_state *st, char *err, size_t errlen) {
  char p[1024];
  snprintf(p, sizeof p, "%s/state.json", dir);
  if (access(p, F_OK) != 0) return FEDC_ERR_NOT_FOUND;
  json_error_t je;
  /* Duplicate keys would let a later field silently replace an earlier one. */
  json_t *o = json_load_file(p, JSON_REJECT_DUPLICATES, &je);
  if (!o || !json_is_object(o)) {
    snprintf(err, errlen, "%s: %s (line %d)", p, o ? "not a JSON object" : je.text, je.line);
    json_decref(o);
    return FEDC_ERR_FORMAT;
  }
  fc_store_state s;
  memset(&s, 0, sizeof s);
  uint64_t paused = 0;
  int rc;
  if ((rc = state_u64(o, p, "version", 0, 0, &s.version, err, errlen)) != FEDC_OK ||
      (rc = state_u64(o, p, "next_round", 0, 1, &s.next_round, err, errlen)) != FEDC_OK ||
      (rc = state_u64(o, p, "completed", 0, 0, &s.completed, err, errlen)) != FEDC_OK ||
      (rc = state_u64(o, p, "abandoned", 0, 0, &s.abandoned, err, errlen)) != FEDC_OK ||
      (rc = state_u64(o, p, "budget", 1, 0, &s.budget, err, errlen)) != FEDC_OK ||
      (rc = state_u64(o, p, "config_rounds", 1, 0, &s.config_rounds, err, errlen)) != FEDC_OK ||
      (rc = state_u64(o, p, "open_round", 1, 0, &s.open_round, err, errlen)) != FEDC_OK)
    goto out;
  s.has_budget = json_object_get(o, "budget") != NULL && json_object_get(o, "config_rounds") != NULL;
  json_t *pv = json_object_get(o, "paused");
  if (pv && !json_is_boolean(pv)) {
    snprintf(err, errlen, "%s: field 'paused' must be true or false", p);
    rc = FEDC_ERR_FORMAT;
    goto out;
  }
  paused = json_is_true(pv);
  s.paused = (int)paused;
  const char *why = json_string_value(json_object_get(o, "pause_reason"));
  if (why && s.paused) snprintf(s.pause_reason, sizeof s.pause_reason, "%s", why);
  /* A round id is used once: the ids below next_round are spent. */
  if (s.open_round && s.open_round >= s.next_round) {
    snprintf(err, errlen, "%s: open_round %llu is not below next_round %llu", p, (unsigned long long)s.open_round,
             (unsigned long long)s.next_round);
    rc = FEDC_ERR_FORMAT;
    goto out;
  }
  if (s.completed > s.version) {
    snprintf(err, errlen, "%s: %llu rounds completed but the model is at version %llu", p,
             (unsigned long long)s.completed, (unsigned long long)s.version);
    rc = FEDC_ERR_FORMAT;
    goto out;
  }
  const char *sha = json_string_value(json_object_get(o, "sha256"));
  if (!sha || strlen(sha) != 2 * FC_SHA256_LEN || fc_unhex(sha, s.sha, FC_SHA256_LEN) != FEDC_OK) {
    snprintf(err, errlen, "%s: field 'sha256' must be 64 hex digits", p);
    rc = FEDC_ERR_FORMAT;
    goto out;
  }
  const char *fed = json_string_value(json_object_get(o, "federation"));
  if (!fed) {
    snprintf(err, errlen, "%s: field 'federation' must be a string", p);
    rc = FEDC_ERR_FORMAT;
    goto out;
  }
  if (federation && strcmp(fed, federation) != 0) {
    snprintf(err, errlen, "%s belongs to federation '%s', not '%s': use another --state directory", p, fed,
             federation);
    rc = FEDC_ERR_FORMAT;
    goto out;
  }
  *st = s;
  rc = FEDC_OK;
out:
  json_decref(o);
  return rc;
}

int fc_store_save_state(const char *dir, const char *federation, const fc_store_state *st, char *err,
                        size_t errlen) {
  char p[1024], hex[FC_SHA256_HEX_LEN], file[64];
  snprintf(p, sizeof p, "%s/state.json", dir);
  snprintf(file, sizeof file, "models/v%06llu.safetensors", (unsigned long long)st->version);
  /* jansson integers are signed 64-bit: every counter here is far below 2^63. */
  json_t *o = json_pack("{s:I,s:s,s:I,s:I,s:I,s:s,s:s,s:b,s:I,s:I,s:I}", "version", (json_int_t)st->version,
                        "sha256", fc_hex(st->sha, FC_SHA256_LEN, hex), "next_round", (json_int_t)st->next_round,
                        "completed", (json_int_t)st->completed, "abandoned", (json_int_t)st->abandoned,
                        "federation", federation ? federation : "", "model_file", file, "paused", st->paused,
                        "budget", (json_int_t)(st->budget > INT64_MAX ? INT64_MAX : st->budget), "config_rounds",
                        (json_int_t)(st->config_rounds > INT64_MAX ? INT64_MAX : st->config_rounds),
                        "open_round", (json_int_t)st->open_round);
  if (o && st->paused && st->pause_reason[0]) json_object_set_new(o, "pause_reason", json_string(st->pause_reason));
  char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
  json_decref(o);
  if (!s) {
    snprintf(err, errlen, "cannot encode %s: out of memory", p);
    return FEDC_ERR_NOMEM;
  }
  errno = 0;
  int rc = fc_write_file_atomic(p, s, strlen(s), 0600, 0);
  int e = errno;
  free(s);
  if (rc != FEDC_OK) snprintf(err, errlen, "cannot write %s: %s", p, e ? strerror(e) : fedc_strerror(rc));
  return rc;
}

void fc_store_model_path(const char *dir, uint64_t version, char *out, size_t outlen) {
  snprintf(out, outlen, "%s/models/v%06llu.safetensors", dir, (unsigned long long)version);
}

int fc_store_write_model(const char *dir, const fc_store_key *key, uint64_t version, uint64_t round,
                         const fc_model_spec *spec, const float *data, const uint8_t sha[FC_SHA256_LEN],
                         const uint8_t *parent_sha, char *err, size_t errlen) {
  char p[1024], hex[FC_SHA256_HEX_LEN], num[32];
  fc_st_meta meta;
  memset(&meta, 0, sizeof meta);
  snprintf(num, sizeof num, "%llu", (unsigned long long)version);
  fc_st_meta_set(&meta, "fedc.version", num);
  fc_st_meta_set(&meta, "fedc.sha256", fc_hex(sha, FC_SHA256_LEN, hex));
  snprintf(num, sizeof num, "%llu", (unsigned long long)round);
  fc_st_meta_set(&meta, "fedc.round", num);
  if (parent_sha) fc_st_meta_set(&meta, "fedc.parent_sha256", fc_hex(parent_sha, FC_SHA256_LEN, hex));
  snprintf(num, sizeof num, "%lld", (long long)time(NULL));
  fc_st_meta_set(&meta, "fedc.created_unix", num);
  fc_st_meta_set(&meta, "format", "pt");
  fc_store_model_path(dir, version, p, sizeof p);
  return write_st(p, key, spec, data, &meta, err, errlen);
}

/* jansson integers are signed: a counter past 2^63 (saturated) is written as
 * the largest one, never as a negative number. */
static json_int_t jint(uint64_t v) { return v > INT64_MAX ? INT64_MAX : (json_int_t)v; }

int fc_store_write_dp(const char *dir, const double *rdp, size_t n, uint64_t rounds, double eps, double delta,
                      double clip, char *err, size_t errlen) {
  char p[1024];
  snprintf(p, sizeof p, "%s/dp.json", dir);
  json_t *a = json_array();
  for (size_t i = 0; i < n; i++) json_array_append_new(a, json_real(rdp[i]));
  json_t *o = json_pack("{s:I,s:I,s:f,s:f,s:f,s:o}", "orders", (json_int_t)n, "rounds", jint(rounds), "epsilon",
                        eps, "delta", delta, "clip", clip, "rdp", a);
  char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
  json_decref(o);
  if (!s) {
    snprintf(err, errlen, "out of memory encoding %s", p);
    return FEDC_ERR_NOMEM;
  }
  fc_atomic_file f;
  int rc = fc_atomic_begin(&f, p, 0600, err, errlen);
  if (rc == FEDC_OK) rc = fc_atomic_write(&f, s, strlen(s), err, errlen);
  rc = rc == FEDC_OK ? fc_atomic_commit(&f, err, errlen) : (fc_atomic_abort(&f), rc);
  free(s);
  return rc;
}

int fc_store_read_dp(const char *dir, double *rdp, size_t n, uint64_t *rounds, double *clip, char *err, size_t errlen) {
  char p[1024];
  snprintf(p, sizeof p, "%s/dp.json", dir);
  json_error_t je;
  json_t *o = json_load_file(p, 0, &je);
  if (!o) {
    if (access(p, F_OK) != 0) return FEDC_ERR_NOT_FOUND;
    snprintf(err, errlen, "%s: %s", p, je.text);
    return FEDC_ERR_FORMAT;
  }
  json_t *a = json_object_get(o, "rdp");
  int rc = FEDC_OK;
  if (!json_is_array(a) || json_array_size(a) != n || json_integer_value(json_object_get(o, "orders")) != (json_int_t)n) {
    snprintf(err, errlen, "%s: not %zu Renyi orders (written by another version of fedc?)", p, n);
    rc = FEDC_ERR_FORMAT;
  } else {
    for (size_t i = 0; i < n; i++) {
      rdp[i] = json_number_value(json_array_get(a, i));
      if (!(rdp[i] >= 0)) {
        snprintf(err, errlen, "%s: a negative or missing RDP value", p);
        rc = FEDC_ERR_FORMAT;
        break;
      }
    }
    *rounds = json_u64(o, "rounds");
    *clip = json_number_value(json_object_get(o, "clip"));
    if (!(*clip >= 0 && isfinite(*clip))) {
      snprintf(err, errlen, "%s: clip %g is not a norm", p, *clip);
      rc = FEDC_ERR_FORMAT;
    }
  }
  json_decref(o);
  return rc;
}

/* The tensors of a state file: "m" and "v" (as many as nstate), then
 * "avg" if the file has a model average, each one-dimensional of n floats,
 * in that order. 1 if spec is laid out so (*has_avg: with "avg"). */
static int opt_layout_ok(const fc_model_spec *spec, int nstate, size_t n, int *has_avg) {
  static const char *const names[] = {"m", "v", "avg"};
  *has_avg = spec->n == (uint32_t)nstate + 1;
  if (spec->n != (uint32_t)nstate && !*has_avg) return 0;
  for (uint32_t i = 0; i < spec->n; i++) {
    const char *want = i < (uint32_t)nstate ? names[i] : names[2];
    const fc_tensor_spec *t = &spec->t[i];
    if (strcmp(t->name, want) != 0 || t->ndim != 1 || t->shape[0] != n) return 0;
  }
  return 1;
}

static void opt_path(const char *dir, uint64_t version, char *out, size_t outlen) {
  snprintf(out, outlen, "%s/models/v%06llu.opt.safetensors", dir, (unsigned long long)version);
}

int fc_store_write_opt(const char *dir, const fc_store_key *key, uint64_t version,
                       const uint8_t model_sha[FC_SHA256_LEN], const char *method, uint64_t step, int nstate,
                       const float *m, const float *v, const float *avg, size_t n, uint8_t *payload_sha, char *err,
                       size_t errlen) {
  char p[1024], hex[FC_SHA256_HEX_LEN], num[32];
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  uint64_t shape = n;
  if (nstate >= 1) fc_model_spec_add(&spec, "m", 1, &shape);
  if (nstate >= 2) fc_model_spec_add(&spec, "v", 1, &shape);
  if (avg) fc_model_spec_add(&spec, "avg", 1, &shape);
  size_t nvec = (size_t)nstate + (avg != NULL), total = nvec * n;
  float *buf = malloc((total ? total : 1) * sizeof *buf);
  if (!buf) {
    snprintf(err, errlen, "out of memory saving the server optimizer state");
    return FEDC_ERR_NOMEM;
  }
  if (nstate >= 1) memcpy(buf, m, n * sizeof *buf);
  if (nstate >= 2) memcpy(buf + n, v, n * sizeof *buf);
  if (avg) memcpy(buf + (size_t)nstate * n, avg, n * sizeof *buf);
  uint8_t sha[FC_SHA256_LEN];
  fc_sha256(buf, total * sizeof *buf, sha);
  if (payload_sha) memcpy(payload_sha, sha, FC_SHA256_LEN);
  fc_st_meta meta;
  memset(&meta, 0, sizeof meta);
  fc_st_meta_set(&meta, "fedc.optimizer", method);
  snprintf(num, sizeof num, "%llu", (unsigned long long)step);
  fc_st_meta_set(&meta, "fedc.step", num);
  snprintf(num, sizeof num, "%llu", (unsigned long long)version);
  fc_st_meta_set(&meta, "fedc.version", num);
  fc_st_meta_set(&meta, "fedc.model_sha256", fc_hex(model_sha, FC_SHA256_LEN, hex));
  fc_st_meta_set(&meta, "fedc.sha256", fc_hex(sha, FC_SHA256_LEN, hex));
  opt_path(dir, version, p, sizeof p);
  int rc = write_st(p, key, &spec, buf, &meta, err, errlen);
  free(buf);
  return rc;
}

int fc_store_read_opt(const char *dir, const fc_store_key *key, uint64_t version,
                      const uint8_t model_sha[FC_SHA256_LEN], const char *method, int nstate, float *m, float *v,
                      float *avg, int *avg_found, size_t n, uint64_t *step, uint8_t *payload_sha, char *err,
                      size_t errlen) {
  char p[1024], hex[FC_SHA256_HEX_LEN];
  if (avg_found) *avg_found = 0;
  fc_model_spec spec;
  fc_st_meta meta;
  float *d = NULL;
  opt_path(dir, version, p, sizeof p);
  /* At most two moments and the average, each of a model's size. */
  int rc = read_st(p, key, &spec, &d, &meta, (uint64_t)FC_MODEL_MAX_PARAMS * 12 + 8, err, errlen);
  if (rc != FEDC_OK) return rc;
  const char *got_method = fc_st_meta_get(&meta, "fedc.optimizer"), *got_model = fc_st_meta_get(&meta, "fedc.model_sha256");
  const char *got_step = fc_st_meta_get(&meta, "fedc.step"), *got_sha = fc_st_meta_get(&meta, "fedc.sha256");
  size_t numel = fc_model_numel(&spec);
  int has_avg = 0, layout = opt_layout_ok(&spec, nstate, n, &has_avg);
  size_t want_n = ((size_t)nstate + (size_t)has_avg) * n;
  rc = FEDC_ERR_FORMAT;
  if (!got_method || strcmp(got_method, method) != 0) {
    snprintf(err, errlen, "%s holds the state of server optimizer '%s', not '%s'", p, got_method ? got_method : "?",
             method);
  } else if (!got_model || strcmp(got_model, fc_hex(model_sha, FC_SHA256_LEN, hex)) != 0) {
    snprintf(err, errlen, "%s belongs to another model version", p);
  } else if (!layout || numel != want_n || !got_step || !got_sha) {
    snprintf(err, errlen, "%s: %zu values in %u tensors, expected %d or %d tensors of %zu (or metadata missing)", p,
             numel, spec.n, nstate, nstate + 1, n);
  } else {
    uint8_t sha[FC_SHA256_LEN], want[FC_SHA256_LEN];
    fc_sha256(d, numel * sizeof *d, sha);
    if (fc_unhex(got_sha, want, FC_SHA256_LEN) != FEDC_OK || !fc_digest_equal(sha, want, FC_SHA256_LEN)) {
      snprintf(err, errlen, "%s: payload SHA-256 does not match its metadata", p);
      rc = FEDC_ERR_HASH;
    } else {
      if (nstate >= 1 && m) memcpy(m, d, n * sizeof *m);
      if (nstate >= 2 && v) memcpy(v, d + n, n * sizeof *v);
      if (has_avg && avg) memcpy(avg, d + (size_t)nstate * n, n * sizeof *avg);
      if (has_avg && avg && avg_found) *avg_found = 1;
      *step = strtoull(got_step, NULL, 10);
      if (payload_sha) memcpy(payload_sha, sha, FC_SHA256_LEN);
      rc = FEDC_OK;
    }
  }
  free(d);
  return rc;
}

int fc_store_read_model(const char *dir, const fc_store_key *key, uint64_t version, fc_model_spec *spec, float **data,
                        uint8_t sha[FC_SHA256_LEN], fc_store_model_info *info, char *err, size_t errlen) {
  char p[1024];
  fc_st_meta meta;
  float *d = NULL;
  fc_store_model_path(dir, version, p, sizeof p);
  int rc = read_st(p, key, spec, &d, &meta, (uint64_t)FC_MODEL_MAX_PARAMS * 4, err, errlen);
  if (rc != FEDC_OK) return rc;
  uint8_t got[FC_SHA256_LEN], want[FC_SHA256_LEN];
  fc_sha256(d, fc_model_numel(spec) * sizeof(float), got);
  const char *hex = fc_st_meta_get(&meta, "fedc.sha256");
  if (!hex || fc_unhex(hex, want, FC_SHA256_LEN) != FEDC_OK || !fc_digest_equal(got, want, FC_SHA256_LEN)) {
    snprintf(err, errlen, "%s: payload SHA-256 does not match its fedc.sha256 metadata", p);
    free(d);
    return FEDC_ERR_HASH;
  }
  memcpy(sha, got, FC_SHA256_LEN);
  if (info) {
    const char *r = fc_st_meta_get(&meta, "fedc.round"), *ps = fc_st_meta_get(&meta, "fedc.parent_sha256");
    const char *cr = fc_st_meta_get(&meta, "fedc.created_unix");
    memset(info, 0, sizeof *info);
    info->round = r ? strtoull(r, NULL, 10) : 0;
    info->created_unix = cr ? strtoull(cr, NULL, 10) : 0;
    info->has_parent = ps && fc_unhex(ps, info->parent_sha, FC_SHA256_LEN) == FEDC_OK;
  }
  *data = d;
  return FEDC_OK;
}

/* ---- signed manifests ------------------------------------------------------------ */

void fc_store_manifest_path(const char *dir, uint64_t version, char *out, size_t outlen) {
  snprintf(out, outlen, "%s/models/v%06llu.manifest", dir, (unsigned long long)version);
}

int fc_store_write_manifest(const char *dir, uint64_t version, const fc_signed *s, char *err, size_t errlen) {
  char p[1024];
  fc_store_manifest_path(dir, version, p, sizeof p);
  return fc_signed_file_write(p, s, err, errlen);
}

int fc_store_read_manifest(const char *dir, uint64_t version, fc_signed *s, char *err, size_t errlen) {
  char p[1024];
  fc_store_manifest_path(dir, version, p, sizeof p);
  return fc_signed_file_read(p, s, err, errlen);
}

static json_t *round_to_json(const fc_round_stats *r) {
  char hex[FC_SHA256_HEX_LEN];
  json_t *o = json_pack("{s:I,s:s,s:I,s:i,s:i,s:I,s:f,s:I,s:I,s:I,s:I,s:s,s:s}", "round", jint(r->round), "outcome",
                   r->completed ? "completed" : "abandoned", "version", jint(r->version), "participants",
                   (int)r->participants, "selected", (int)r->selected, "examples", jint(r->examples),
                   "mean_train_loss", isfinite(r->mean_loss) ? r->mean_loss : 0.0, "bytes_in", jint(r->bytes_in), "bytes_out", jint(r->bytes_out),
                   "started_unix_ms", jint(r->started_ms), "ended_unix_ms", jint(r->ended_ms), "sha256",
                   r->completed ? fc_hex(r->sha, FC_SHA256_LEN, hex) : "", "reason", r->reason);
  /* An unknown mean loss (NaN: distributed DP) is null, never a number. */
  if (o && !isfinite(r->mean_loss)) json_object_set(o, "mean_train_loss", json_null());
  if (o && r->server_opt[0]) json_object_set_new(o, "server_optimizer", json_string(r->server_opt));
  if (o && r->dp_epsilon > 0) {
    json_object_set_new(o, "dp_epsilon", json_real(r->dp_epsilon));
    json_object_set_new(o, "dp_clip", json_real(r->dp_clip));
    json_object_set_new(o, "dp_noise", json_real(r->dp_noise));
  }
  if (o && r->sa_remaining[0]) {
    /* Secure aggregation ran: clients left after each of its 5 stages. */
    json_t *a = json_array();
    for (int i = 0; i < 5; i++) json_array_append_new(a, json_integer(r->sa_remaining[i]));
    json_object_set_new(o, "secagg_remaining", a);
  }
  if (o && r->sa_nblamed) {
    /* Secure aggregation: who was named for bad unmask shares (the audit log has each). */
    json_t *a = json_array();
    for (uint32_t i = 0; i < r->sa_nblamed && i < FC_ROUND_BLAMED_MAX; i++)
      json_array_append_new(a, json_string(r->sa_blamed[i]));
    json_object_set_new(o, "secagg_blamed", a);
    if (r->sa_nblamed > FC_ROUND_BLAMED_MAX) json_object_set_new(o, "secagg_blamed_count", json_integer(r->sa_nblamed));
  }
  fc_store_anomaly_put(o, r);
  fc_store_drift_put(o, r);
  fc_store_async_put(o, r);
  return o;
}

/* A federated evaluation's line: {"round": R, "eval": {...}}, merged into
 * round R's record when read (store.h). */
static json_t *eval_to_json(uint64_t round, const fc_round_eval *e) {
  json_t *v = json_pack("{s:s,s:I,s:i,s:i,s:f,s:f,s:f,s:I,s:I}", "outcome", e->outcome == 1 ? "completed" : "abandoned",
                        "version", jint(e->version), "selected", (int)e->selected, "clients", (int)e->clients,
                        "examples", e->stats.examples, "correct", e->stats.correct, "loss_sum", e->stats.loss_sum,
                        "started_unix_ms", jint(e->started_ms), "ended_unix_ms", jint(e->ended_ms));
  if (!v) return NULL;
  if (e->stats.examples > 0) {
    json_object_set_new(v, "accuracy", json_real(e->stats.correct / e->stats.examples));
    json_object_set_new(v, "loss", json_real(e->stats.loss_sum / e->stats.examples));
  }
  if (e->reason[0]) json_object_set_new(v, "reason", json_string(e->reason));
  if (e->stats.nmetrics) {
    json_t *m = json_object();
    for (uint32_t j = 0; j < e->stats.nmetrics && j < FC_EVAL_METRICS_MAX; j++)
      json_object_set_new(m, e->stats.names[j], json_pack("{s:f,s:f}", "sum", e->stats.metric_sum[j], "examples",
                                                          e->stats.metric_examples[j]));
    json_object_set_new(v, "metrics", m);
  }
  if (e->sa_remaining[0]) {
    json_t *a = json_array();
    for (int i = 0; i < 5; i++) json_array_append_new(a, json_integer(e->sa_remaining[i]));
    json_object_set_new(v, "secagg_remaining", a);
  }
  if (e->dp_noise > 0) {
    json_object_set_new(v, "dp_noise", json_real(e->dp_noise));
    json_object_set_new(v, "dp_epsilon", json_real(e->dp_epsilon));
  }
  fc_store_eval_drift_put(v, e);
  return json_pack("{s:I,s:o}", "round", jint(round), "eval", v);
}

static void eval_from_json(json_t *v, fc_round_eval *e) {
  memset(e, 0, sizeof *e);
  const char *oc = json_string_value(json_object_get(v, "outcome"));
  e->outcome = oc && strcmp(oc, "completed") == 0 ? 1 : 2;
  e->version = json_u64(v, "version");
  e->selected = (uint32_t)json_u64(v, "selected");
  e->clients = (uint32_t)json_u64(v, "clients");
  e->stats.examples = json_number_value(json_object_get(v, "examples"));
  e->stats.correct = json_number_value(json_object_get(v, "correct"));
  e->stats.loss_sum = json_number_value(json_object_get(v, "loss_sum"));
  e->started_ms = json_u64(v, "started_unix_ms");
  e->ended_ms = json_u64(v, "ended_unix_ms");
  fc_store_eval_drift_get(v, e);
  const char *why = json_string_value(json_object_get(v, "reason"));
  if (why) snprintf(e->reason, sizeof e->reason, "%s", why);
  const char *name;
  json_t *m;
  json_object_foreach(json_object_get(v, "metrics"), name, m) {
    if (e->stats.nmetrics >= FC_EVAL_METRICS_MAX || !fc_eval_name_ok(name)) continue;
    uint32_t j = e->stats.nmetrics++;
    snprintf(e->stats.names[j], sizeof e->stats.names[j], "%s", name);
    e->stats.metric_sum[j] = json_number_value(json_object_get(m, "sum"));
    e->stats.metric_examples[j] = json_number_value(json_object_get(m, "examples"));
  }
  json_t *sa = json_object_get(v, "secagg_remaining");
  for (size_t i = 0; json_is_array(sa) && i < 5 && i < json_array_size(sa); i++) {
    json_int_t x = json_integer_value(json_array_get(sa, i));
    e->sa_remaining[i] = x > 0 && x <= UINT32_MAX ? (uint32_t)x : 0;
  }
  e->dp_noise = json_number_value(json_object_get(v, "dp_noise"));
  e->dp_epsilon = json_number_value(json_object_get(v, "dp_epsilon"));
}

static int append_line(const char *dir, json_t *o, uint64_t round, char *err, size_t errlen);

int fc_store_append_eval(const char *dir, uint64_t round, const fc_round_eval *e, char *err, size_t errlen) {
  return append_line(dir, eval_to_json(round, e), round, err, errlen);
}

int fc_store_append_round(const char *dir, const fc_round_stats *r, char *err, size_t errlen) {
  return append_line(dir, round_to_json(r), r->round, err, errlen);
}

/* Append o (consumed) as one line and fsync; FEDC_ERR_STOPPED (nothing
 * written) if the commit guard (fileutil.h) refuses. */
static int append_line(const char *dir, json_t *o, uint64_t round, char *err, size_t errlen) {
  char p[1024];
  snprintf(p, sizeof p, "%s/rounds.jsonl", dir);
  char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(o);
  if (!s) {
    snprintf(err, errlen, "cannot encode the record of round %llu for %s", (unsigned long long)round, p);
    return FEDC_ERR_NOMEM;
  }
  int fd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  int rc = FEDC_OK, e = 0;
  struct stat sb;
  if (fd < 0 || fstat(fd, &sb) != 0) {
    e = errno;
    rc = FEDC_ERR_IO;
  } else if (!fc_atomic_guard_allows()) {
    /* Last moment before the line lands, as for fc_atomic_commit: a replica
     * frozen after its leadership check and deposed meanwhile must not add
     * round lines after its successor's. */
    close(fd);
    snprintf(err, errlen, "round %llu not appended to %s: this process may no longer write (a deposed coordinator "
             "replica)", (unsigned long long)round, p);
    free(s);
    return FEDC_ERR_STOPPED;
  } else {
    size_t n = strlen(s), done = 0;
    s[n++] = '\n'; /* json_dumps leaves room for the NUL we overwrite */
    while (done < n) {
      ssize_t w = write(fd, s + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        e = w < 0 ? errno : ENOSPC;
        break;
      }
      done += (size_t)w;
    }
    if (done == n && fsync(fd) != 0) e = errno;
    if (e) {
      /* Cut back to the last whole record: the next append must not be
       * glued to half a line (both would be lost on reading). */
      rc = FEDC_ERR_IO;
      if (ftruncate(fd, sb.st_size) != 0) {
        snprintf(err, errlen, "cannot append to %s: %s; cutting back the partial record failed too: %s", p,
                 strerror(e), strerror(errno));
        close(fd);
        free(s);
        return rc;
      }
    }
  }
  if (fd >= 0) close(fd);
  if (rc != FEDC_OK) snprintf(err, errlen, "cannot append to %s: %s", p, strerror(e));
  free(s);
  return rc;
}

/* One line of f without its '\n' into *buf (grown by doubling, never past
 * max + 1 bytes: the cap is checked before each allocation): 1 a line (*len
 * bytes; a last one without '\n' too, then *torn = 1), 0 the end of the
 * file, FEDC_ERR_TOO_LARGE a line over max bytes, FEDC_ERR_NOMEM. */
static int read_line(FILE *f, char **buf, size_t *cap, size_t max, size_t *len, int *torn) {
  size_t used = 0;
  int ch;
  while ((ch = getc(f)) != EOF && ch != '\n') {
    if (used == max) return FEDC_ERR_TOO_LARGE;
    if (used + 1 >= *cap) {
      size_t grown = *cap ? *cap * 2 : 4096;
      if (grown > max + 1) grown = max + 1;
      char *nb = realloc(*buf, grown);
      if (!nb) return FEDC_ERR_NOMEM;
      *buf = nb;
      *cap = grown;
    }
    (*buf)[used++] = (char)ch;
  }
  if (ch == EOF && used == 0) return 0;
  *len = used;
  *torn = ch == EOF;
  return 1;
}

int fc_store_read_rounds(const char *dir, fc_round_stats **out, size_t *n, char *err, size_t errlen) {
  char p[1024], *line = NULL;
  size_t linecap = 0, len = 0, lineno = 0;
  snprintf(p, sizeof p, "%s/rounds.jsonl", dir);
  *out = NULL;
  *n = 0;
  FILE *f = fopen(p, "r");
  if (!f) return FEDC_OK;
  size_t cap = 0;
  fc_round_stats *v = NULL;
  int got, torn = 0;
  /* Whole lines of any length up to the cap: a fixed buffer split a long
   * record into pieces that were each skipped as torn. */
  while ((got = read_line(f, &line, &linecap, FC_STORE_ROUND_LINE_MAX, &len, &torn)) == 1) {
    lineno++;
    json_t *o = torn ? NULL : json_loadb(line, len, 0, NULL);
    if (!json_is_object(o)) {
      json_decref(o);
      continue; /* a torn last line after a crash (cut off below): skip it */
    }
    json_t *ev = json_object_get(o, "eval");
    if (json_is_object(ev) && !json_object_get(o, "outcome")) {
      /* A federated evaluation: into the record of the round whose model it evaluated (the latest of that id). */
      uint64_t id = json_u64(o, "round");
      for (size_t k = *n; k > 0; k--)
        if (v[k - 1].round == id) {
          eval_from_json(ev, &v[k - 1].eval);
          break;
        }
      json_decref(o);
      continue;
    }
    if (*n == cap) {
      cap = cap ? cap * 2 : 64;
      fc_round_stats *nv = realloc(v, cap * sizeof *nv);
      if (!nv) {
        json_decref(o);
        got = FEDC_ERR_NOMEM;
        break;
      }
      v = nv;
    }
    fc_round_stats *r = &v[(*n)++];
    memset(r, 0, sizeof *r);
    r->round = json_u64(o, "round");
    const char *oc = json_string_value(json_object_get(o, "outcome"));
    r->completed = oc && strcmp(oc, "completed") == 0;
    r->version = json_u64(o, "version");
    r->participants = (uint32_t)json_u64(o, "participants");
    r->selected = (uint32_t)json_u64(o, "selected");
    r->examples = json_u64(o, "examples");
    json_t *ml = json_object_get(o, "mean_train_loss");
    r->mean_loss = json_is_null(ml) ? NAN : json_number_value(ml);
    r->bytes_in = json_u64(o, "bytes_in");
    r->bytes_out = json_u64(o, "bytes_out");
    r->started_ms = json_u64(o, "started_unix_ms");
    r->ended_ms = json_u64(o, "ended_unix_ms");
    const char *sha = json_string_value(json_object_get(o, "sha256"));
    if (sha && *sha) fc_unhex(sha, r->sha, FC_SHA256_LEN);
    const char *why = json_string_value(json_object_get(o, "reason"));
    if (why) snprintf(r->reason, sizeof r->reason, "%s", why);
    const char *so = json_string_value(json_object_get(o, "server_optimizer"));
    if (so) snprintf(r->server_opt, sizeof r->server_opt, "%s", so);
    r->dp_epsilon = json_number_value(json_object_get(o, "dp_epsilon"));
    r->dp_clip = json_number_value(json_object_get(o, "dp_clip"));
    r->dp_noise = json_number_value(json_object_get(o, "dp_noise"));
    json_t *sa = json_object_get(o, "secagg_remaining");
    for (size_t i = 0; json_is_array(sa) && i < 5 && i < json_array_size(sa); i++) {
      json_int_t x = json_integer_value(json_array_get(sa, i));
      r->sa_remaining[i] = x > 0 && x <= UINT32_MAX ? (uint32_t)x : 0;
    }
    json_t *bl = json_object_get(o, "secagg_blamed");
    for (size_t i = 0; json_is_array(bl) && i < json_array_size(bl) && i < FC_ROUND_BLAMED_MAX; i++) {
      const char *name = json_string_value(json_array_get(bl, i));
      if (name) snprintf(r->sa_blamed[r->sa_nblamed++], sizeof r->sa_blamed[0], "%s", name);
    }
    uint64_t nbl = json_u64(o, "secagg_blamed_count");
    if (nbl > r->sa_nblamed && nbl <= UINT32_MAX) r->sa_nblamed = (uint32_t)nbl;
    fc_store_anomaly_get(o, r);
    fc_store_drift_get(o, r);
    fc_store_async_get(o, r);
    json_decref(o);
  }
  free(line);
  if (got != 0) {
    if (got == FEDC_ERR_TOO_LARGE)
      snprintf(err, errlen, "%s: line %zu is longer than %u bytes: not a round record; move the file aside", p,
               lineno + 1, FC_STORE_ROUND_LINE_MAX);
    else snprintf(err, errlen, "out of memory reading %s", p);
    fclose(f);
    free(v);
    *n = 0;
    return got;
  }
  /* A crash mid-append leaves a torn last line: cut it off, or the next
   * record would be glued to it and lost too. */
  long keep = 0, pos = 0;
  int ch;
  rewind(f);
  while ((ch = fgetc(f)) != EOF) {
    pos++;
    if (ch == '\n') keep = pos;
  }
  fclose(f);
  if (keep < pos && truncate(p, keep) != 0) {
    snprintf(err, errlen, "cannot cut the torn last line of %s: %s", p, strerror(errno));
    free(v);
    return FEDC_ERR_IO;
  }
  *out = v;
  return FEDC_OK;
}
