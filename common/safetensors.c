/*
 * safetensors.c - safetensors files for model versions and initial models.
 * The format is the table in safetensors.h.
 *
 * The JSON header is parsed and produced by jansson, never by hand. Reading is
 * strict because model files come from outside (a researcher's export, a
 * restored backup): every tensor must be F32 with a shape tensor.h can hold,
 * its data_offsets must span exactly 4*numel bytes, and the tensors sorted by
 * offset must tile the data section with no gap or overlap, ending at the end
 * of the file. That makes the data section byte-for-byte the flat buffer of
 * tensor.h in offset order, so it is read with no copying or reordering.
 * Stricter than the reference reader: duplicate JSON keys and tensor entries
 * with fields beyond dtype/shape/data_offsets are rejected, not ignored.
 *
 * Writing goes through fileutil.h's fc_atomic_* (the one temp-file path for
 * every file fedc replaces): an unpredictable temp name in the target's
 * directory created O_EXCL|O_NOFOLLOW, written in pieces (header, then the
 * tensor data straight from the caller's buffer, never copied), fsynced,
 * renamed over path, directory fsynced. A crash leaves the old file or the new
 * one; a planted symlink is never followed; anything but a regular file at
 * path (symlink, FIFO, device) is refused, also under `fedc model get --force`.
 *
 * Tensor bytes are stored little-endian; this file copies them as-is, so it
 * assumes a little-endian host (checked at compile time below).
 */
#include "common/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "fedc/error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c copies float32 data verbatim and needs a little-endian host"
#endif
_Static_assert(sizeof(float) == 4, "float must be IEEE-754 binary32");

#define META_KEY "__metadata__"
#define IO_STEP (1u << 30) /* largest single read; some kernels cap one call near 2 GiB */

/* ---- metadata map ----------------------------------------------------------- */

int fc_st_meta_set(fc_st_meta *meta, const char *key, const char *val) {
  if (meta->n >= FC_ST_META_MAX || strlen(key) >= FC_ST_META_KEY_MAX || strlen(val) >= FC_ST_META_VAL_MAX)
    return FEDC_ERR_INVALID;
  if (fc_st_meta_get(meta, key)) return FEDC_ERR_INVALID;
  strcpy(meta->key[meta->n], key);
  strcpy(meta->val[meta->n], val);
  meta->n++;
  return FEDC_OK;
}

const char *fc_st_meta_get(const fc_st_meta *meta, const char *key) {
  for (size_t i = 0; i < meta->n && i < FC_ST_META_MAX; i++)
    if (strncmp(meta->key[i], key, FC_ST_META_KEY_MAX) == 0) return meta->val[i];
  return NULL;
}

/* ---- file helpers -------------------------------------------------------------- */

/* Bytes actually read: less than len only at end of file; -1 on error. */
static ssize_t read_full(int fd, void *buf, size_t len) {
  uint8_t *p = buf;
  size_t got = 0;
  while (got < len) {
    size_t want = len - got < IO_STEP ? len - got : IO_STEP;
    ssize_t r = read(fd, p + got, want);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

/* ---- write ------------------------------------------------------------------ */

static int check_meta(const fc_st_meta *meta, char *err, size_t errlen) {
  if (meta->n > FC_ST_META_MAX) {
    snprintf(err, errlen, "safetensors metadata has %zu entries (at most %d)", meta->n, FC_ST_META_MAX);
    return FEDC_ERR_INVALID;
  }
  for (size_t i = 0; i < meta->n; i++) {
    if (!memchr(meta->key[i], 0, FC_ST_META_KEY_MAX) || !memchr(meta->val[i], 0, FC_ST_META_VAL_MAX)) {
      snprintf(err, errlen, "safetensors metadata entry %zu is not NUL-terminated", i);
      return FEDC_ERR_INVALID;
    }
    for (size_t j = 0; j < i; j++)
      if (strcmp(meta->key[i], meta->key[j]) == 0) {
        snprintf(err, errlen, "safetensors metadata key '%s' repeated", meta->key[i]);
        return FEDC_ERR_INVALID;
      }
  }
  return FEDC_OK;
}

/*
 * The header JSON, space-padded so 8 + length is a multiple of 8. On success
 * *out is malloc'd (caller frees) and *out_len its length (no NUL counted).
 */
static int build_header(const fc_model_spec *spec, const fc_st_meta *meta, char **out, size_t *out_len, char *err,
                        size_t errlen) {
  int rc = FEDC_ERR_NOMEM;
  char *dumped = NULL;
  json_t *root = json_object();
  if (!root) goto out;
  if (meta && meta->n > 0) {
    json_t *m = json_object();
    if (!m || json_object_set_new(root, META_KEY, m) != 0) goto out;
    for (size_t i = 0; i < meta->n; i++) {
      json_t *v = json_string(meta->val[i]); /* NULL also for invalid UTF-8 */
      if (!v || json_object_set_new(m, meta->key[i], v) != 0) {
        snprintf(err, errlen, "safetensors metadata entry '%s' is not valid UTF-8", meta->key[i]);
        rc = FEDC_ERR_INVALID;
        goto out;
      }
    }
  }
  uint64_t offset = 0;
  for (uint32_t i = 0; i < spec->n; i++) {
    const fc_tensor_spec *t = &spec->t[i];
    uint64_t bytes = 4 * fc_tensor_numel(t);
    /* Each new value is attached as soon as it exists: json_object_set_new takes ownership (and frees it on
     * failure; a NULL value just fails), so an allocation failure anywhere leaks nothing. */
    json_t *entry = json_object();
    if (json_object_set_new(root, t->name, entry) != 0) goto out;
    if (json_object_set_new(entry, "dtype", json_string("F32")) != 0) goto out;
    json_t *shape = json_array();
    if (json_object_set_new(entry, "shape", shape) != 0) goto out;
    json_t *offsets = json_array();
    if (json_object_set_new(entry, "data_offsets", offsets) != 0) goto out;
    for (uint32_t d = 0; d < t->ndim; d++)
      if (json_array_append_new(shape, json_integer((json_int_t)t->shape[d])) != 0) goto out;
    if (json_array_append_new(offsets, json_integer((json_int_t)offset)) != 0 ||
        json_array_append_new(offsets, json_integer((json_int_t)(offset + bytes))) != 0)
      goto out;
    offset += bytes;
  }
  dumped = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!dumped) goto out;
  size_t len = strlen(dumped), padded = (len + 7) / 8 * 8; /* 8 + padded is then 8-aligned too */
  char *buf = malloc(padded);
  if (!buf) goto out;
  memcpy(buf, dumped, len);
  memset(buf + len, ' ', padded - len);
  *out = buf;
  *out_len = padded;
  rc = FEDC_OK;
out:
  if (rc == FEDC_ERR_NOMEM) snprintf(err, errlen, "out of memory building the safetensors header");
  free(dumped);
  json_decref(root);
  return rc;
}

/* Checks shared by both writers, then the JSON header. */
static int prepare(const fc_model_spec *spec, const float *data, const fc_st_meta *meta, char **header,
                   size_t *header_len, char *err, size_t errlen) {
  int rc;
  if ((rc = fc_model_spec_check(spec, err, errlen)) != FEDC_OK) return rc;
  for (uint32_t i = 0; i < spec->n; i++)
    if (strcmp(spec->t[i].name, META_KEY) == 0) {
      snprintf(err, errlen, "a tensor cannot be named %s in safetensors", META_KEY);
      return FEDC_ERR_INVALID;
    }
  if (!data) {
    snprintf(err, errlen, "no tensor data to write");
    return FEDC_ERR_INVALID;
  }
  if (meta && (rc = check_meta(meta, err, errlen)) != FEDC_OK) return rc;
  return build_header(spec, meta, header, header_len, err, errlen);
}

static void put_len(uint8_t len_le[8], size_t header_len) {
  for (int i = 0; i < 8; i++) len_le[i] = (uint8_t)((uint64_t)header_len >> (8 * i));
}

int fc_safetensors_write(const char *path, const fc_model_spec *spec, const float *data, const fc_st_meta *meta,
                         char *err, size_t errlen) {
  char *header = NULL;
  size_t header_len = 0;
  int rc = prepare(spec, data, meta, &header, &header_len, err, errlen);
  if (rc != FEDC_OK) return rc;
  uint8_t len_le[8];
  put_len(len_le, header_len);
  size_t data_bytes = (size_t)(4 * fc_model_numel(spec));
  /* Model files are not secret (every client downloads them): 0644. */
  fc_atomic_file f;
  rc = fc_atomic_begin(&f, path, 0644, err, errlen);
  if (rc == FEDC_OK) rc = fc_atomic_write(&f, len_le, sizeof len_le, err, errlen);
  if (rc == FEDC_OK) rc = fc_atomic_write(&f, header, header_len, err, errlen);
  if (rc == FEDC_OK) rc = fc_atomic_write(&f, data, data_bytes, err, errlen);
  if (rc == FEDC_OK) rc = fc_atomic_commit(&f, err, errlen); /* every failure above already removed the temp file */
  free(header);
  return rc;
}

int fc_safetensors_encode(const fc_model_spec *spec, const float *data, const fc_st_meta *meta, uint8_t **out,
                          size_t *out_len, char *err, size_t errlen) {
  char *header = NULL;
  size_t header_len = 0;
  int rc = prepare(spec, data, meta, &header, &header_len, err, errlen);
  if (rc != FEDC_OK) return rc;
  size_t data_bytes = (size_t)(4 * fc_model_numel(spec)), n = 8 + header_len + data_bytes;
  uint8_t *b = malloc(n);
  if (!b) {
    free(header);
    snprintf(err, errlen, "out of memory for a %zu-byte safetensors image", n);
    return FEDC_ERR_NOMEM;
  }
  put_len(b, header_len);
  memcpy(b + 8, header, header_len);
  memcpy(b + 8 + header_len, data, data_bytes);
  free(header);
  *out = b;
  *out_len = n;
  return FEDC_OK;
}

/* ---- read ------------------------------------------------------------------- */

/* "path: " in front of a message written by a helper that does not know the path. */
static void prefix_path(const char *path, char *err, size_t errlen) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s", err);
  snprintf(err, errlen, "%s: %s", path, msg);
}

typedef struct st_entry {
  fc_tensor_spec t;
  uint64_t begin, end;
} st_entry;

/* A JSON integer in [0, max], or -1 (JSON integers are signed 64-bit in jansson). */
static int64_t json_uint(const json_t *v, uint64_t max) {
  if (!json_is_integer(v)) return -1;
  json_int_t x = json_integer_value(v);
  if (x < 0 || (uint64_t)x > max) return -1;
  return (int64_t)x;
}

static int parse_tensor(const char *name, const json_t *v, st_entry *e, char *err, size_t errlen) {
  memset(e, 0, sizeof *e);
  if (strlen(name) >= FC_TENSOR_NAME_MAX) {
    snprintf(err, errlen, "tensor name '%.32s...' longer than %d bytes", name, FC_TENSOR_NAME_MAX - 1);
    return FEDC_ERR_FORMAT;
  }
  strcpy(e->t.name, name);
  const json_t *dtype = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
               *offsets = json_object_get(v, "data_offsets");
  if (!json_is_object(v) || !dtype || !shape || !offsets || json_object_size(v) != 3) {
    snprintf(err, errlen, "tensor '%s' needs exactly the fields dtype, shape, data_offsets", name);
    return FEDC_ERR_FORMAT;
  }
  if (!json_is_string(dtype)) {
    snprintf(err, errlen, "tensor '%s' has a non-string dtype", name);
    return FEDC_ERR_FORMAT;
  }
  if (strcmp(json_string_value(dtype), "F32") != 0) {
    snprintf(err, errlen, "tensor '%s' has dtype %.16s; only F32 is supported", name, json_string_value(dtype));
    return FEDC_ERR_FORMAT;
  }
  e->t.dtype = FC_DTYPE_F32;
  if (!json_is_array(shape) || json_array_size(shape) < 1 || json_array_size(shape) > FC_TENSOR_MAX_DIMS) {
    snprintf(err, errlen, "tensor '%s' shape must be an array of 1..%d dims", name, FC_TENSOR_MAX_DIMS);
    return FEDC_ERR_FORMAT;
  }
  e->t.ndim = (uint32_t)json_array_size(shape);
  uint64_t numel = 1;
  for (uint32_t d = 0; d < e->t.ndim; d++) {
    int64_t dim = json_uint(json_array_get(shape, d), FC_MODEL_MAX_PARAMS);
    if (dim < 1 || numel * (uint64_t)dim > FC_MODEL_MAX_PARAMS) {
      snprintf(err, errlen, "tensor '%s' shape[%u] is not an integer in 1..%llu, or the tensor is too large", name, d,
               (unsigned long long)FC_MODEL_MAX_PARAMS);
      return FEDC_ERR_FORMAT;
    }
    e->t.shape[d] = (uint64_t)dim;
    numel *= (uint64_t)dim;
  }
  int64_t begin = -1, end = -1;
  if (json_is_array(offsets) && json_array_size(offsets) == 2) {
    begin = json_uint(json_array_get(offsets, 0), INT64_MAX);
    end = json_uint(json_array_get(offsets, 1), INT64_MAX);
  }
  if (begin < 0 || end < begin) {
    snprintf(err, errlen, "tensor '%s' data_offsets must be [begin, end] with 0 <= begin <= end", name);
    return FEDC_ERR_FORMAT;
  }
  if ((uint64_t)(end - begin) != 4 * numel) {
    snprintf(err, errlen, "tensor '%s' data_offsets span %" PRId64 " bytes but its shape needs %" PRIu64, name,
             end - begin, 4 * numel);
    return FEDC_ERR_FORMAT;
  }
  e->begin = (uint64_t)begin;
  e->end = (uint64_t)end;
  return FEDC_OK;
}

static int parse_meta(const json_t *m, fc_st_meta *meta, int keep, char *err, size_t errlen) {
  const char *key;
  json_t *v;
  if (!json_is_object(m)) {
    snprintf(err, errlen, "%s is not an object", META_KEY);
    return FEDC_ERR_FORMAT;
  }
  json_object_foreach((json_t *)m, key, v) {
    if (!json_is_string(v)) {
      snprintf(err, errlen, "%s entry '%.64s' is not a string", META_KEY, key);
      return FEDC_ERR_FORMAT;
    }
    if (!keep) continue;
    if (fc_st_meta_set(meta, key, json_string_value(v)) != FEDC_OK) {
      snprintf(err, errlen, "%s entry '%.64s' does not fit (at most %d entries, keys < %d and values < %d bytes)",
               META_KEY, key, FC_ST_META_MAX, FC_ST_META_KEY_MAX, FC_ST_META_VAL_MAX);
      return FEDC_ERR_TOO_LARGE;
    }
  }
  return FEDC_OK;
}

/* Where the bytes come from: a file descriptor or a buffer in memory. */
typedef struct st_src {
  int fd;
  const uint8_t *buf;
  uint64_t len, pos;
} st_src;

static ssize_t src_read(st_src *s, void *out, size_t n) {
  if (s->fd >= 0) return read_full(s->fd, out, n);
  size_t k = s->len - s->pos < n ? (size_t)(s->len - s->pos) : n;
  memcpy(out, s->buf + s->pos, k);
  s->pos += k;
  return (ssize_t)k;
}

static int read_src(const char *path, st_src *src, uint64_t file_size, fc_model_spec *spec_out, float **data_out,
                    fc_st_meta *meta_out, uint64_t max_bytes, char *err, size_t errlen);

int fc_safetensors_decode(const void *buf, size_t len, const char *label, fc_model_spec *spec_out, float **data_out,
                          fc_st_meta *meta_out, uint64_t max_bytes, char *err, size_t errlen) {
  st_src src = {-1, buf, len, 0};
  return read_src(label, &src, len, spec_out, data_out, meta_out, max_bytes, err, errlen);
}

int fc_safetensors_read(const char *path, fc_model_spec *spec_out, float **data_out, fc_st_meta *meta_out,
                        uint64_t max_bytes, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return errno == ENOENT ? FEDC_ERR_NOT_FOUND : FEDC_ERR_IO;
  }
  struct stat st;
  int rc = FEDC_ERR_FORMAT;
  if (fstat(fd, &st) != 0) {
    snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
    rc = FEDC_ERR_IO;
  } else if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s is not a regular file", path);
  } else {
    st_src src = {fd, NULL, 0, 0};
    rc = read_src(path, &src, (uint64_t)st.st_size, spec_out, data_out, meta_out, max_bytes, err, errlen);
  }
  close(fd);
  return rc;
}

static int read_src(const char *path, st_src *src, uint64_t file_size, fc_model_spec *spec_out, float **data_out,
                    fc_st_meta *meta_out, uint64_t max_bytes, char *err, size_t errlen) {
  int rc = FEDC_ERR_FORMAT;
  char *header = NULL;
  json_t *root = NULL;
  void *data = NULL;
  /* Large locals are heap-allocated: this may run on a small worker-thread stack. */
  fc_st_meta *meta = calloc(1, sizeof *meta);
  st_entry *entries = calloc(FC_MODEL_MAX_TENSORS, sizeof *entries);
  fc_model_spec *spec = calloc(1, sizeof *spec);
  uint32_t n = 0;
  if (!meta || !entries || !spec) {
    snprintf(err, errlen, "out of memory");
    rc = FEDC_ERR_NOMEM;
    goto out;
  }

  uint8_t len_le[8];
  ssize_t r = file_size >= 8 ? src_read(src, len_le, 8) : 0;
  if (r < 0) {
    snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
    rc = FEDC_ERR_IO;
    goto out;
  }
  if (r != 8) {
    snprintf(err, errlen, "%s: truncated (%" PRIu64 " bytes, no header length)", path, file_size);
    goto out;
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; i--) header_len = header_len << 8 | len_le[i];
  if (header_len < 2 || header_len > FC_ST_HEADER_MAX || header_len > file_size - 8) {
    snprintf(err, errlen, "%s: header length %" PRIu64 " invalid (at most %u, file has %" PRIu64 " bytes)", path,
             header_len, FC_ST_HEADER_MAX, file_size);
    goto out;
  }
  uint64_t data_bytes = file_size - 8 - header_len;
  if (data_bytes > max_bytes || data_bytes > SIZE_MAX) {
    snprintf(err, errlen, "%s: %" PRIu64 " bytes of tensor data exceed the limit of %" PRIu64, path, data_bytes,
             max_bytes);
    rc = FEDC_ERR_TOO_LARGE;
    goto out;
  }
  if (!(header = malloc((size_t)header_len))) {
    snprintf(err, errlen, "out of memory");
    rc = FEDC_ERR_NOMEM;
    goto out;
  }
  r = src_read(src, header, (size_t)header_len);
  if (r < 0 || (uint64_t)r != header_len) {
    snprintf(err, errlen, "%s: header unreadable or truncated", path);
    rc = r < 0 ? FEDC_ERR_IO : FEDC_ERR_FORMAT;
    goto out;
  }
  if (header[0] != '{') { /* the reference reader requires this too */
    snprintf(err, errlen, "%s: header does not start with '{'", path);
    goto out;
  }
  json_error_t jerr;
  root = json_loadb(header, (size_t)header_len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    snprintf(err, errlen, "%s: bad JSON header at byte %d: %s", path, jerr.position, jerr.text);
    goto out;
  }
  if (!json_is_object(root)) {
    snprintf(err, errlen, "%s: JSON header is not an object", path);
    goto out;
  }

  const char *key;
  json_t *value;
  json_object_foreach(root, key, value) {
    if (strcmp(key, META_KEY) == 0) {
      if ((rc = parse_meta(value, meta, meta_out != NULL, err, errlen)) != FEDC_OK) {
        prefix_path(path, err, errlen);
        goto out;
      }
      continue;
    }
    if (n >= FC_MODEL_MAX_TENSORS) {
      snprintf(err, errlen, "%s: more than %d tensors", path, FC_MODEL_MAX_TENSORS);
      rc = FEDC_ERR_FORMAT;
      goto out;
    }
    if ((rc = parse_tensor(key, value, &entries[n], err, errlen)) != FEDC_OK) {
      prefix_path(path, err, errlen);
      goto out;
    }
    n++;
  }
  rc = FEDC_ERR_FORMAT;
  if (n == 0) {
    snprintf(err, errlen, "%s: no tensors", path);
    goto out;
  }

  /* Order by data offset (insertion sort: at most FC_MODEL_MAX_TENSORS), then require an exact tiling. */
  for (uint32_t i = 1; i < n; i++) {
    st_entry e = entries[i];
    uint32_t j = i;
    for (; j > 0 && entries[j - 1].begin > e.begin; j--) entries[j] = entries[j - 1];
    entries[j] = e;
  }
  uint64_t expect = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (entries[i].begin != expect) {
      snprintf(err, errlen, "%s: tensor '%s' starts at byte %" PRIu64 ", expected %" PRIu64 " (%s)", path,
               entries[i].t.name, entries[i].begin, expect, entries[i].begin < expect ? "overlap" : "gap");
      goto out;
    }
    expect = entries[i].end;
    spec->t[i] = entries[i].t;
  }
  spec->n = n;
  if (expect != data_bytes) {
    snprintf(err, errlen, "%s: tensors cover %" PRIu64 " bytes but the data section has %" PRIu64, path, expect,
             data_bytes);
    goto out;
  }
  if (fc_model_spec_check(spec, err, errlen) != FEDC_OK) { /* names, total size: FORMAT for a file */
    prefix_path(path, err, errlen);
    goto out;
  }

  if (!(data = malloc(data_bytes ? (size_t)data_bytes : 1))) {
    snprintf(err, errlen, "out of memory for %" PRIu64 " bytes of tensor data", data_bytes);
    rc = FEDC_ERR_NOMEM;
    goto out;
  }
  r = src_read(src, data, (size_t)data_bytes);
  if (r < 0 || (uint64_t)r != data_bytes) {
    snprintf(err, errlen, "%s: tensor data unreadable or truncated while reading", path);
    rc = r < 0 ? FEDC_ERR_IO : FEDC_ERR_FORMAT;
    goto out;
  }

  *spec_out = *spec;
  *data_out = data;
  data = NULL;
  if (meta_out) *meta_out = *meta;
  rc = FEDC_OK;
out:
  json_decref(root);
  free(header);
  free(data);
  free(meta);
  free(entries);
  free(spec);
  return rc;
}
