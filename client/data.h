/*
 * data.h - in-memory labelled datasets for the built-in trainers, and the
 * loaders that fill them: IDX (MNIST / Fashion-MNIST, gzipped or plain) and
 * numeric CSV.
 *
 * A dataset owns two heap buffers: x (n * dim floats, row-major) and y (n
 * labels). Loaders write *out only on success; on failure they return a
 * fedc_err and put a message naming the file (and line/column for CSV) in
 * err. Every size read from a file is checked against the caps below before
 * anything is allocated.
 */
#ifndef FEDC_CLIENT_DATA_H
#define FEDC_CLIENT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "common/dataset.h" /* fc_dataset */

#define FC_DATA_MAX_ITEMS 10000000u      /* examples per file */
#define FC_DATA_MAX_DIM 1000000u         /* features per example */
#define FC_DATA_MAX_ELEMS (1ull << 30)   /* n * dim: 4 GiB of float32 */
#define FC_FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

/* Free both buffers and zero the struct; accepts NULL and a zeroed struct. */
void fc_dataset_free(fc_dataset *d);

/* Load an IDX image file (magic 0x00000803: n x rows x cols unsigned bytes)
 * and its IDX label file (magic 0x00000801: n unsigned bytes). Either may be
 * gzipped or plain (zlib reads both). Pixels become x = byte / 255.
 * Errors: FEDC_ERR_NOT_FOUND / FEDC_ERR_IO when a file cannot be opened or
 * read, FEDC_ERR_FORMAT for a bad magic, a size over the caps, mismatched
 * counts, truncated or trailing data, FEDC_ERR_NOMEM. labels_gz NULL reads the
 * images alone (the coordinator's drift reference set): y all 0, classes 1. */
int fc_idx_load(const char *images_gz, const char *labels_gz, fc_dataset *out, char *err, size_t errlen);

/* Only rows want[0..nwant) (strictly ascending, each below n) of an IDX pair,
 * for a client that takes its part of a shared file: it never holds the
 * rest (no n x dim buffer). Short gaps between rows are read and dropped,
 * long ones seeked over. out->classes is that of the whole label file (max
 * label + 1), as fc_idx_load gives. Checks as fc_idx_load, except that the
 * image file is not read past the last row wanted (trailing data there goes
 * unnoticed); FEDC_ERR_INVALID for a row out of range or out of order. */
int fc_idx_load_rows(const char *images_gz, const char *labels_gz, const uint32_t *want, uint32_t nwant,
                     fc_dataset *out, char *err, size_t errlen);
/* All labels of an IDX label file: *y (malloc'd) and *n, on success. */
int fc_idx_load_labels(const char *labels_gz, uint8_t **y, uint32_t *n, char *err, size_t errlen);

/* The files fc_fmnist_load reads (each len bytes): "<split>-images-idx3-ubyte.gz"
 * in dir, else the same name without .gz if that exists. */
int fc_fmnist_paths(const char *dir, int train, char *images, char *labels, size_t len, char *err, size_t errlen);

/* Fashion-MNIST train (train != 0, 60000 examples) or test (10000) split from
 * dir; dir NULL means $FEDC_FMNIST_DIR if set, else FC_FMNIST_DEFAULT_DIR.
 * Looks for "<split>-images-idx3-ubyte.gz", then the same name without .gz. */
int fc_fmnist_load(const char *dir, int train, fc_dataset *out, char *err, size_t errlen);

/* Numeric CSV: one example per line, all lines the same width (>= 2 fields),
 * comma separated, optional surrounding blanks, no quoting. The first line is
 * skipped as a header if any of its fields is not a number. label_col is the
 * 0-based column holding an integer label 0..255 (-1 = last column); every
 * other column is a feature, stored as value * scale (scale 0 means 1).
 * Blank lines are ignored. Errors name the line and column: FEDC_ERR_FORMAT
 * for ragged rows, non-numbers, non-finite values, bad labels, an empty file;
 * FEDC_ERR_INVALID for a label_col outside the row. */
int fc_csv_load(const char *path, int label_col, float scale, fc_dataset *out, char *err, size_t errlen);

#endif
