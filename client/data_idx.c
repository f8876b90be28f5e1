/*
 * data_idx.c - IDX loader (LeCun's MNIST format, also used by Fashion-MNIST)
 * and fc_dataset_free.
 *
 * File format (all integers big-endian):
 *   images file                         labels file
 *   off  size  field                    off  size  field
 *   0    4     magic 0x00000803         0    4     magic 0x00000801
 *   4    4     n                        4    4     n
 *   8    4     rows                     8    n     labels, 1 byte each
 *   12   4     cols
 *   16   n*rows*cols  pixels, 1 byte each, row-major
 * The magic's third byte is the element type (0x08 = unsigned byte), the
 * fourth the number of dimensions; fedc reads only the unsigned-byte forms.
 *
 * Invariants: every size is checked against FC_DATA_MAX_* before allocating;
 * files must end exactly after the data (truncated and trailing bytes are both
 * FEDC_ERR_FORMAT, naming the file), and both files must agree on n. Reading
 * goes through zlib's gzread, which passes plain files through unchanged, so
 * one code path serves .gz and uncompressed copies.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "client/data.h"
#include "fedc/error.h"

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_CHUNK (64u * 1024u)

void fc_dataset_free(fc_dataset *d) {
  if (!d) return;
  free(d->x);
  free(d->y);
  memset(d, 0, sizeof *d);
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static int open_gz(const char *path, gzFile *out, char *err, size_t errlen) {
  errno = 0;
  gzFile f = gzopen(path, "rb");
  if (!f) {
    int e = errno;
    snprintf(err, errlen, "%s: cannot open: %s", path, e ? strerror(e) : "out of memory");
    return e == ENOENT ? FEDC_ERR_NOT_FOUND : e ? FEDC_ERR_IO : FEDC_ERR_NOMEM;
  }
  gzbuffer(f, 128u * 1024u);
  *out = f;
  return 0;
}

/* Read exactly len bytes. A short read is a truncated file; a zlib error is a
 * corrupt file (FEDC_ERR_FORMAT) unless the OS reported it (FEDC_ERR_IO). */
static int read_exact(gzFile f, void *buf, size_t len, const char *path, const char *what, char *err,
                      size_t errlen) {
  unsigned char *p = buf;
  size_t got = 0;
  while (got < len) {
    size_t want = len - got > (1u << 30) ? (1u << 30) : len - got;
    int r = gzread(f, p + got, (unsigned)want);
    if (r < 0) {
      int zerr = 0;
      const char *msg = gzerror(f, &zerr);
      snprintf(err, errlen, "%s: reading %s: %s", path, what, zerr == Z_ERRNO ? strerror(errno) : msg);
      return zerr == Z_ERRNO ? FEDC_ERR_IO : FEDC_ERR_FORMAT;
    }
    if (r == 0) {
      snprintf(err, errlen, "%s: truncated: file ends inside %s", path, what);
      return FEDC_ERR_FORMAT;
    }
    got += (size_t)r;
  }
  return 0;
}

static int expect_eof(gzFile f, const char *path, char *err, size_t errlen) {
  unsigned char b;
  int r = gzread(f, &b, 1);
  if (r == 0) return 0;
  if (r > 0) {
    snprintf(err, errlen, "%s: trailing bytes after the data", path);
    return FEDC_ERR_FORMAT;
  }
  int zerr = 0;
  const char *msg = gzerror(f, &zerr);
  snprintf(err, errlen, "%s: %s", path, zerr == Z_ERRNO ? strerror(errno) : msg);
  return zerr == Z_ERRNO ? FEDC_ERR_IO : FEDC_ERR_FORMAT;
}

static int check_magic(uint32_t magic, uint32_t want, const char *path, char *err, size_t errlen) {
  if (magic == want) return 0;
  snprintf(err, errlen, "%s: bad IDX magic 0x%08x (expected 0x%08x, %s)", path, magic, want,
           want == IDX_MAGIC_IMAGES ? "unsigned-byte images n x rows x cols" : "unsigned-byte labels");
  return FEDC_ERR_FORMAT;
}

/* Both headers: n images of dim pixels (rows x cols), checked against the
 * caps and against the label file's n, before anything big is allocated. */
static int read_headers(gzFile fi, gzFile fl, const char *images_gz, const char *labels_gz, uint32_t *n_out,
                        uint32_t *rows_out, uint32_t *cols_out, char *err, size_t errlen) {
  unsigned char hdr[16];
  int rc;
  if ((rc = read_exact(fi, hdr, 16, images_gz, "the IDX header", err, errlen))) return rc;
  if ((rc = check_magic(be32(hdr), IDX_MAGIC_IMAGES, images_gz, err, errlen))) return rc;
  uint32_t n = be32(hdr + 4), rows = be32(hdr + 8), cols = be32(hdr + 12);
  uint64_t dim = (uint64_t)rows * cols;
  if (n == 0 || n > FC_DATA_MAX_ITEMS) {
    snprintf(err, errlen, "%s: %u images (1..%u allowed)", images_gz, n, FC_DATA_MAX_ITEMS);
    return FEDC_ERR_FORMAT;
  }
  if (dim == 0 || dim > FC_DATA_MAX_DIM || (uint64_t)n * dim > FC_DATA_MAX_ELEMS) {
    snprintf(err, errlen, "%s: image size %u x %u (x %u images) over the limits (%u pixels, %llu in total)",
             images_gz, rows, cols, n, FC_DATA_MAX_DIM, (unsigned long long)FC_DATA_MAX_ELEMS);
    return FEDC_ERR_FORMAT;
  }
  if (!fl) goto done; /* images only */
  if ((rc = read_exact(fl, hdr, 8, labels_gz, "the IDX header", err, errlen))) return rc;
  if ((rc = check_magic(be32(hdr), IDX_MAGIC_LABELS, labels_gz, err, errlen))) return rc;
  uint32_t nl = be32(hdr + 4);
  if (nl != n) {
    snprintf(err, errlen, "%s has %u labels but %s has %u images", labels_gz, nl, images_gz, n);
    return FEDC_ERR_FORMAT;
  }
done:
  *n_out = n;
  *rows_out = rows;
  *cols_out = cols;
  return 0;
}

static uint32_t classes_of(const uint8_t *y, uint32_t n) {
  uint32_t max_label = 0;
  for (uint32_t i = 0; i < n; i++)
    if (y[i] > max_label) max_label = y[i];
  return max_label + 1;
}

int fc_idx_load(const char *images_gz, const char *labels_gz, fc_dataset *out, char *err, size_t errlen) {
  gzFile fi = NULL, fl = NULL;
  float *x = NULL;
  uint8_t *y = NULL;
  unsigned char *chunk = NULL;
  int rc;

  if (!images_gz || !out) {
    snprintf(err, errlen, "fc_idx_load: NULL argument");
    return FEDC_ERR_INVALID;
  }
  if ((rc = open_gz(images_gz, &fi, err, errlen))) goto out;
  if (labels_gz && (rc = open_gz(labels_gz, &fl, err, errlen))) goto out;

  /* Headers first, so mismatches are reported before the big allocation. */
  uint32_t n, rows, cols;
  if ((rc = read_headers(fi, fl, images_gz, labels_gz, &n, &rows, &cols, err, errlen))) goto out;
  uint64_t dim = (uint64_t)rows * cols;

  x = malloc((size_t)n * dim * sizeof *x);
  y = labels_gz ? malloc(n) : calloc(n, 1);
  chunk = malloc(IDX_CHUNK);
  if (!x || !y || !chunk) {
    snprintf(err, errlen, "%s: out of memory for %u x %llu pixels", images_gz, n, (unsigned long long)dim);
    rc = FEDC_ERR_NOMEM;
    goto out;
  }

  /* Pixels in chunks: no second n*dim byte buffer. */
  size_t total = (size_t)n * dim, done = 0;
  char what[96];
  snprintf(what, sizeof what, "the pixel data (%zu bytes for %u images of %u x %u)", total, n, rows, cols);
  while (done < total) {
    size_t len = total - done < IDX_CHUNK ? total - done : IDX_CHUNK;
    if ((rc = read_exact(fi, chunk, len, images_gz, what, err, errlen))) goto out;
    for (size_t i = 0; i < len; i++) x[done + i] = (float)chunk[i] * (1.0f / 255.0f);
    done += len;
  }
  if ((rc = expect_eof(fi, images_gz, err, errlen))) goto out;

  if (fl && (rc = read_exact(fl, y, n, labels_gz, "the label data", err, errlen))) goto out;
  if (fl && (rc = expect_eof(fl, labels_gz, err, errlen))) goto out;

  out->n = n;
  out->dim = (uint32_t)dim;
  out->classes = classes_of(y, n);
  out->x = x;
  out->y = y;
  x = NULL;
  y = NULL;
  rc = 0;
out:
  if (fi) gzclose(fi);
  if (fl) gzclose(fl);
  free(chunk);
  free(x);
  free(y);
  return rc;
}

int fc_idx_load_labels(const char *labels_gz, uint8_t **y_out, uint32_t *n_out, char *err, size_t errlen) {
  gzFile fl = NULL;
  uint8_t *y = NULL;
  unsigned char hdr[8];
  int rc;
  if ((rc = open_gz(labels_gz, &fl, err, errlen))) goto out;
  if ((rc = read_exact(fl, hdr, 8, labels_gz, "the IDX header", err, errlen))) goto out;
  if ((rc = check_magic(be32(hdr), IDX_MAGIC_LABELS, labels_gz, err, errlen))) goto out;
  uint32_t n = be32(hdr + 4);
  if (n == 0 || n > FC_DATA_MAX_ITEMS) {
    snprintf(err, errlen, "%s: %u labels (1..%u allowed)", labels_gz, n, FC_DATA_MAX_ITEMS);
    rc = FEDC_ERR_FORMAT;
    goto out;
  }
  if (!(y = malloc(n))) {
    snprintf(err, errlen, "%s: out of memory for %u labels", labels_gz, n);
    rc = FEDC_ERR_NOMEM;
    goto out;
  }
  if (fl && (rc = read_exact(fl, y, n, labels_gz, "the label data", err, errlen))) goto out;
  if (fl && (rc = expect_eof(fl, labels_gz, err, errlen))) goto out;
  *y_out = y;
  *n_out = n;
  y = NULL;
out:
  if (fl) gzclose(fl);
  free(y);
  return rc;
}

/* Skip len bytes: seek over a long gap (a plain file then skips the reading
 * too), read and drop a short one (a seek empties zlib's buffer, which is
 * then filled again: for gaps of a few rows that costs more than it saves). */
static int skip_bytes(gzFile f, uint64_t len, unsigned char *scratch, size_t scratch_len, const char *path,
                      char *err, size_t errlen) {
  if (len >= (1u << 20)) {
    if (gzseek(f, (z_off_t)len, SEEK_CUR) >= 0) return 0;
    int zerr = 0;
    const char *msg = gzerror(f, &zerr);
    snprintf(err, errlen, "%s: cannot skip to the next row: %s", path, zerr == Z_ERRNO ? strerror(errno) : msg);
    return zerr == Z_ERRNO ? FEDC_ERR_IO : FEDC_ERR_FORMAT;
  }
  while (len) {
    size_t step = len < scratch_len ? (size_t)len : scratch_len;
    int rc = read_exact(f, scratch, step, path, "the pixel data", err, errlen);
    if (rc) return rc;
    len -= step;
  }
  return 0;
}

int fc_idx_load_rows(const char *images_gz, const char *labels_gz, const uint32_t *want, uint32_t nwant,
                     fc_dataset *out, char *err, size_t errlen) {
  gzFile fi = NULL, fl = NULL;
  float *x = NULL;
  uint8_t *y = NULL, *all = NULL;
  unsigned char *chunk = NULL;
  int rc;
  if (!images_gz || !labels_gz || !out || (nwant && !want)) {
    snprintf(err, errlen, "fc_idx_load_rows: NULL argument");
    return FEDC_ERR_INVALID;
  }
  if ((rc = open_gz(images_gz, &fi, err, errlen))) goto out;
  if ((rc = open_gz(labels_gz, &fl, err, errlen))) goto out;
  uint32_t n, rows, cols;
  if ((rc = read_headers(fi, fl, images_gz, labels_gz, &n, &rows, &cols, err, errlen))) goto out;
  size_t dim = (size_t)rows * cols;
  for (uint32_t i = 0; i < nwant; i++)
    if (want[i] >= n || (i && want[i] <= want[i - 1])) {
      snprintf(err, errlen, "%s: row %u of %u (rows must be ascending, each below the count)", images_gz, want[i],
               n);
      rc = FEDC_ERR_INVALID;
      goto out;
    }
  all = malloc(n);
  x = malloc((nwant ? nwant : 1) * dim * sizeof *x);
  y = malloc(nwant ? nwant : 1);
  chunk = malloc(dim > IDX_CHUNK ? dim : IDX_CHUNK);
  if (!all || !x || !y || !chunk) {
    snprintf(err, errlen, "%s: out of memory for %u x %zu pixels", images_gz, nwant, dim);
    rc = FEDC_ERR_NOMEM;
    goto out;
  }
  if ((rc = read_exact(fl, all, n, labels_gz, "the label data", err, errlen))) goto out;
  if ((rc = expect_eof(fl, labels_gz, err, errlen))) goto out;
  uint64_t at = 0; /* the next image gzread returns */
  for (uint32_t i = 0; i < nwant; i++) {
    if ((rc = skip_bytes(fi, (uint64_t)(want[i] - at) * dim, chunk, dim > IDX_CHUNK ? dim : IDX_CHUNK, images_gz,
                         err, errlen)))
      goto out;
    if ((rc = read_exact(fi, chunk, dim, images_gz, "the pixel data", err, errlen))) goto out;
    for (size_t j = 0; j < dim; j++) x[(size_t)i * dim + j] = (float)chunk[j] * (1.0f / 255.0f);
    y[i] = all[want[i]];
    at = (uint64_t)want[i] + 1;
  }
  out->n = nwant;
  out->dim = (uint32_t)dim;
  out->classes = classes_of(all, n);
  out->x = x;
  out->y = y;
  x = NULL;
  y = NULL;
  rc = 0;
out:
  if (fi) gzclose(fi);
  if (fl) gzclose(fl);
  free(chunk);
  free(all);
  free(x);
  free(y);
  return rc;
}

/* "<dir>/<base>.gz" if it exists, else "<dir>/<base>" if that exists, else the
 * .gz name so the error message names what was expected. */
static int pick_path(const char *dir, const char *base, char *path, size_t len, char *err, size_t errlen) {
  int w = snprintf(path, len, "%s/%s.gz", dir, base);
  if (w < 0 || (size_t)w >= len) {
    snprintf(err, errlen, "dataset directory path too long: %s", dir);
    return FEDC_ERR_INVALID;
  }
  if (access(path, F_OK) == 0) return 0;
  char plain[4096];
  snprintf(plain, sizeof plain, "%s/%s", dir, base);
  if (access(plain, F_OK) == 0) snprintf(path, len, "%s", plain);
  return 0;
}

int fc_fmnist_paths(const char *dir, int train, char *images, char *labels, size_t len, char *err, size_t errlen) {
  int rc;
  if (!dir) dir = getenv("FEDC_FMNIST_DIR");
  if (!dir || !*dir) dir = FC_FMNIST_DEFAULT_DIR;
  const char *split = train ? "train" : "t10k";
  char base[64];
  snprintf(base, sizeof base, "%s-images-idx3-ubyte", split);
  if ((rc = pick_path(dir, base, images, len, err, errlen))) return rc;
  snprintf(base, sizeof base, "%s-labels-idx1-ubyte", split);
  return pick_path(dir, base, labels, len, err, errlen);
}

int fc_fmnist_load(const char *dir, int train, fc_dataset *out, char *err, size_t errlen) {
  char images[4096], labels[4096];
  int rc = fc_fmnist_paths(dir, train, images, labels, sizeof images, err, errlen);
  return rc ? rc : fc_idx_load(images, labels, out, err, errlen);
}
