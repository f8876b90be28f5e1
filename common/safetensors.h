/*
 * safetensors.h - read and write model files in the safetensors format
 * (https://github.com/huggingface/safetensors), float32 only.
 *
 *   | bytes          | field  | contents                                                 |
 *   |----------------|--------|----------------------------------------------------------|
 *   | 0..8           | N      | u64 little-endian: length of the JSON header             |
 *   | 8..8+N         | header | UTF-8 JSON object, may be padded with trailing spaces    |
 *   | 8+N..end       | data   | tensor bytes, back to back, no gaps                      |
 *
 *   header = { "__metadata__": {string: string, ...}   (optional)
 *              "<tensor name>": {"dtype": "F32", "shape": [d0, ...],
 *                                "data_offsets": [begin, end]}, ... }
 *
 * data_offsets are relative to the start of the data section. Files this
 * module writes put __metadata__ first, then the tensors in spec order, and pad
 * the header with spaces so the data starts at a multiple of 8 bytes.
 */
#ifndef FEDC_COMMON_SAFETENSORS_H
#define FEDC_COMMON_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/tensor.h"

#define FC_ST_META_MAX 16      /* entries in __metadata__ that fc_st_meta holds */
#define FC_ST_META_KEY_MAX 64  /* bytes per key, NUL included */
#define FC_ST_META_VAL_MAX 256 /* bytes per value, NUL included */
#define FC_ST_HEADER_MAX (100u << 20) /* largest JSON header accepted: 100 MiB, as the reference reader */

/* The string-to-string __metadata__ map, in file order. Keys are unique and non-empty. */
typedef struct fc_st_meta {
  size_t n;
  char key[FC_ST_META_MAX][FC_ST_META_KEY_MAX];
  char val[FC_ST_META_MAX][FC_ST_META_VAL_MAX];
} fc_st_meta;

/* Append key=value; FEDC_ERR_INVALID if full, a string is too long, or the key is empty or repeated. */
int fc_st_meta_set(fc_st_meta *meta, const char *key, const char *val);
/* The value for key, or NULL. */
const char *fc_st_meta_get(const fc_st_meta *meta, const char *key);

/*
 * Write spec's tensors (data: the flat float32 buffer, 4*numel bytes) and meta
 * (may be NULL) to path atomically, mode 0644, through fileutil.h's
 * fc_atomic_*: a temp file with an unpredictable name next to path is
 * written, fsynced and renamed over path, then the directory is fsynced.
 * Nothing is left behind on error. Only a regular file at path is ever
 * replaced. Errors: SHAPE (invalid spec), INVALID (bad metadata, a tensor
 * named "__metadata__", NULL data, something other than a regular file at
 * path: a symlink, FIFO, device...), NOMEM, IO.
 */
int fc_safetensors_write(const char *path, const fc_model_spec *spec, const float *data, const fc_st_meta *meta,
                         char *err, size_t errlen);

/*
 * Read path. On success *spec_out gets the tensors in data order (ascending
 * data_offsets), *data_out a malloc'd buffer of 4*numel bytes the caller frees,
 * and *meta_out (if non-NULL) the metadata; nothing is written on error.
 * max_bytes caps the tensor data (the allocation), checked before allocating.
 * Errors: NOT_FOUND (no such file), IO, FORMAT (anything malformed, including a
 * dtype other than F32, tensors the spec limits of tensor.h cannot hold, offsets
 * that overlap, leave gaps or do not cover the data section exactly), TOO_LARGE
 * (data over max_bytes, or metadata that does not fit fc_st_meta when meta_out
 * is non-NULL: pass NULL to ignore metadata), NOMEM.
 */
int fc_safetensors_read(const char *path, fc_model_spec *spec_out, float **data_out, fc_st_meta *meta_out,
                        uint64_t max_bytes, char *err, size_t errlen);

/* The same two in memory (a file image to encrypt, or one just decrypted):
 * encode checks as fc_safetensors_write and returns a malloc'd image; decode
 * checks as fc_safetensors_read, naming `label` in errors. */
int fc_safetensors_encode(const fc_model_spec *spec, const float *data, const fc_st_meta *meta, uint8_t **out,
                          size_t *out_len, char *err, size_t errlen);
int fc_safetensors_decode(const void *buf, size_t len, const char *label, fc_model_spec *spec_out, float **data_out,
                          fc_st_meta *meta_out, uint64_t max_bytes, char *err, size_t errlen);

#endif
