/*
 * data_csv.c - numeric CSV loader for the built-in trainers.
 *
 * Accepted input: lines of comma-separated decimal numbers (strtod syntax,
 * blanks around a field allowed), LF or CRLF endings, blank lines ignored, an
 * optional header line (the first non-blank line, recognised because one of
 * its fields is not a number). No quoting: this reads exported feature
 * tables, not general CSV. Every row has the width of the first data row;
 * one column is an integer label in 0..255, the rest are features.
 *
 * Invariants: errors carry 1-based line and column numbers; sizes are checked
 * against FC_DATA_MAX_* before each buffer grows; *out is written only on
 * success. Storage grows geometrically, so a file is read in one pass.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/data.h"
#include "fedc/error.h"

/* Parse one field [s, end) as a finite-or-not double; 0 if it is a number. */
static int parse_field(const char *s, const char *end, double *v) {
  while (s < end && (*s == ' ' || *s == '\t')) s++;
  while (end > s && (end[-1] == ' ' || end[-1] == '\t')) end--;
  if (s == end) return -1;
  char buf[128];
  size_t len = (size_t)(end - s);
  if (len >= sizeof buf) return -1; /* no number needs 128 characters */
  memcpy(buf, s, len);
  buf[len] = '\0';
  char *stop;
  errno = 0;
  double d = strtod(buf, &stop);
  if (stop != buf + len) return -1;
  *v = errno == ERANGE && fabs(d) > 1.0 ? INFINITY : d; /* overflow; underflow is fine */
  return 0;
}

static uint32_t count_fields(const char *line) {
  uint32_t n = 1;
  for (const char *p = line; *p; p++) n += *p == ',';
  return n;
}

int fc_csv_load(const char *path, int label_col, float scale, fc_dataset *out, char *err, size_t errlen) {
  FILE *f = NULL;
  char *line = NULL;
  size_t line_cap = 0;
  double *row = NULL;
  float *x = NULL;
  uint8_t *y = NULL;
  size_t rows_cap = 0;
  uint32_t n = 0, width = 0, label_at = 0, max_label = 0;
  unsigned long line_no = 0;
  int rc = 0, seen_first = 0;

  if (!path || !out) {
    snprintf(err, errlen, "fc_csv_load: NULL argument");
    return FEDC_ERR_INVALID;
  }
  if (scale == 0.0f) scale = 1.0f;
  if (!isfinite(scale) || label_col < -1) {
    snprintf(err, errlen, "%s: invalid %s", path, label_col < -1 ? "label column" : "scale");
    return FEDC_ERR_INVALID;
  }
  f = fopen(path, "r");
  if (!f) {
    int e = errno;
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
    return e == ENOENT ? FEDC_ERR_NOT_FOUND : FEDC_ERR_IO;
  }

  ssize_t got;
  while ((got = getline(&line, &line_cap, f)) >= 0) {
    line_no++;
    size_t len = (size_t)got;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
    if (strlen(line) != len) {
      snprintf(err, errlen, "%s: line %lu: NUL byte (binary file?)", path, line_no);
      rc = FEDC_ERR_FORMAT;
      goto out;
    }
    if (strspn(line, " \t") == len) continue; /* blank */

    uint32_t fields = count_fields(line);
    /* Checked on every line until a data row fixes the width (a header line
     * comes first and must not be the only one checked). */
    if (width == 0 && fields > FC_DATA_MAX_DIM + 1) {
      snprintf(err, errlen, "%s: line %lu: %u columns (at most %u allowed)", path, line_no, fields,
               FC_DATA_MAX_DIM + 1);
      rc = FEDC_ERR_FORMAT;
      goto out;
    }
    if (!seen_first) {
      seen_first = 1;
      /* Header? Any non-numeric field in the first non-blank line. */
      int numeric = 1;
      const char *p = line;
      for (uint32_t c = 0; c < fields && numeric; c++) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        double v;
        if (parse_field(p, e, &v)) numeric = 0;
        p = *e ? e + 1 : e;
      }
      if (!numeric) continue;
    }
    if (width == 0) {
      /* First data row fixes the width. */
      if (fields < 2) {
        snprintf(err, errlen, "%s: line %lu: one column; need a label and at least one feature", path, line_no);
        rc = FEDC_ERR_FORMAT;
        goto out;
      }
      if (label_col >= 0 && (uint32_t)label_col >= fields) {
        snprintf(err, errlen, "%s: label column %d but line %lu has %u columns", path, label_col, line_no, fields);
        rc = FEDC_ERR_INVALID;
        goto out;
      }
      width = fields;
      label_at = label_col < 0 ? fields - 1 : (uint32_t)label_col;
      row = malloc(width * sizeof *row);
      if (!row) goto nomem;
    } else if (fields != width) {
      snprintf(err, errlen, "%s: line %lu: %u columns, expected %u like the first data row", path, line_no, fields,
               width);
      rc = FEDC_ERR_FORMAT;
      goto out;
    }

    const char *p = line;
    for (uint32_t c = 0; c < width; c++) {
      const char *e = strchr(p, ',');
      if (!e) e = p + strlen(p);
      if (parse_field(p, e, &row[c])) {
        snprintf(err, errlen, "%s: line %lu, column %u: not a number: \"%.*s\"", path, line_no, c + 1,
                 (int)(e - p > 40 ? 40 : e - p), p);
        rc = FEDC_ERR_FORMAT;
        goto out;
      }
      p = *e ? e + 1 : e;
    }

    uint32_t dim = width - 1;
    if (n >= FC_DATA_MAX_ITEMS || (uint64_t)(n + 1) * dim > FC_DATA_MAX_ELEMS) {
      snprintf(err, errlen, "%s: line %lu: more than %u rows or %llu values", path, line_no, FC_DATA_MAX_ITEMS,
               (unsigned long long)FC_DATA_MAX_ELEMS);
      rc = FEDC_ERR_FORMAT;
      goto out;
    }
    if (n == rows_cap) {
      size_t cap = rows_cap ? rows_cap * 2 : 256;
      if (cap > FC_DATA_MAX_ITEMS) cap = FC_DATA_MAX_ITEMS;
      if ((uint64_t)cap * dim > FC_DATA_MAX_ELEMS) cap = (size_t)(FC_DATA_MAX_ELEMS / dim);
      float *nx = realloc(x, cap * dim * sizeof *x);
      if (!nx) goto nomem;
      x = nx;
      uint8_t *ny = realloc(y, cap);
      if (!ny) goto nomem;
      y = ny;
      rows_cap = cap;
    }

    double lv = row[label_at];
    if (!(lv >= 0.0 && lv <= 255.0 && lv == floor(lv))) {
      snprintf(err, errlen, "%s: line %lu, column %u: label %g is not an integer in 0..255", path, line_no,
               label_at + 1, lv);
      rc = FEDC_ERR_FORMAT;
      goto out;
    }
    y[n] = (uint8_t)lv;
    if (y[n] > max_label) max_label = y[n];
    float *dst = x + (size_t)n * dim;
    for (uint32_t c = 0, k = 0; c < width; c++) {
      if (c == label_at) continue;
      float v = (float)(row[c] * scale);
      if (!isfinite(v)) {
        snprintf(err, errlen, "%s: line %lu, column %u: value is not finite (after scaling)", path, line_no, c + 1);
        rc = FEDC_ERR_FORMAT;
        goto out;
      }
      dst[k++] = v;
    }
    n++;
  }
  if (ferror(f)) {
    snprintf(err, errlen, "%s: read error after line %lu: %s", path, line_no, strerror(errno));
    rc = FEDC_ERR_IO;
    goto out;
  }
  if (n == 0) {
    snprintf(err, errlen, "%s: no data rows", path);
    rc = FEDC_ERR_FORMAT;
    goto out;
  }

  /* Give back the slack of geometric growth (failure just keeps the slack). */
  float *fit = realloc(x, (size_t)n * (width - 1) * sizeof *x);
  if (fit) x = fit;
  out->n = n;
  out->dim = width - 1;
  out->classes = max_label + 1;
  out->x = x;
  out->y = y;
  x = NULL;
  y = NULL;
  rc = 0;
  goto out;
nomem:
  snprintf(err, errlen, "%s: out of memory at line %lu", path, line_no);
  rc = FEDC_ERR_NOMEM;
out:
  if (f) fclose(f);
  free(line);
  free(row);
  free(x);
  free(y);
  return rc;
}
