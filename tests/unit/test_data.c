/*
 * test_data.c - IDX and CSV loaders: tiny files written to a mkdtemp
 * directory (gzipped and plain), every malformed case the loaders promise to
 * reject with FEDC_ERR_FORMAT, and, where installed, the real Fashion-MNIST
 * test split.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "client/data.h"
#include "fedc/error.h"
#include "tests/unit/check.h"

static char dir[64];
static char errbuf[512];

static const char *tmp_path(const char *name) {
  static char bufs[4][256];
  static int next;
  char *p = bufs[next++ % 4];
  snprintf(p, 256, "%s/%s", dir, name);
  return p;
}

static void put_be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* Write an IDX file: magic, dims, then len payload bytes; gzipped if gz. */
static void write_idx(const char *path, uint32_t magic, const uint32_t *dims, int ndims, const unsigned char *data,
                      size_t len, int gz) {
  unsigned char hdr[4 + 4 * 4];
  put_be32(hdr, magic);
  for (int i = 0; i < ndims; i++) put_be32(hdr + 4 + 4 * i, dims[i]);
  size_t hlen = 4 + 4 * (size_t)ndims;
  if (gz) {
    gzFile f = gzopen(path, "wb");
    gzwrite(f, hdr, (unsigned)hlen);
    if (len) gzwrite(f, data, (unsigned)len);
    gzclose(f);
  } else {
    FILE *f = fopen(path, "wb");
    fwrite(hdr, 1, hlen, f);
    if (len) fwrite(data, 1, len, f);
    fclose(f);
  }
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  fputs(text, f);
  fclose(f);
}

enum { N = 5, ROWS = 3, COLS = 4 };
static unsigned char pixels[N * ROWS * COLS], labels[N] = {0, 4, 2, 1, 4};

static void write_good(const char *img, const char *lbl, int gz) {
  uint32_t d3[3] = {N, ROWS, COLS}, d1[1] = {N};
  write_idx(tmp_path(img), 0x803, d3, 3, pixels, sizeof pixels, gz);
  write_idx(tmp_path(lbl), 0x801, d1, 1, labels, sizeof labels, gz);
}

static int load(const char *img, const char *lbl, fc_dataset *d) {
  return fc_idx_load(tmp_path(img), tmp_path(lbl), d, errbuf, sizeof errbuf);
}

static void test_idx_good(void) {
  for (size_t i = 0; i < sizeof pixels; i++) pixels[i] = (unsigned char)(i * 37 % 256);
  pixels[0] = 0;
  pixels[1] = 255;
  for (int gz = 0; gz <= 1; gz++) {
    write_good("img", "lbl", gz);
    fc_dataset d = {0};
    int rc = load("img", "lbl", &d);
    CHECK_EQ_INT(rc, 0);
    if (rc) {
      fprintf(stderr, "%s\n", errbuf);
      continue;
    }
    CHECK_EQ_INT(d.n, N);
    CHECK_EQ_INT(d.dim, ROWS * COLS);
    CHECK_EQ_INT(d.classes, 5);
    CHECK(d.x[0] == 0.0f && d.x[1] == 1.0f);
    int same = 1;
    for (size_t i = 0; i < sizeof pixels; i++) same &= d.x[i] == (float)pixels[i] * (1.0f / 255.0f);
    CHECK(same);
    CHECK(memcmp(d.y, labels, N) == 0);
    fc_dataset_free(&d);
    CHECK(d.x == NULL && d.y == NULL && d.n == 0);
  }
  fc_dataset_free(NULL);
}

/* Every malformed input fails with the given code, leaves *out untouched, and
 * names a file in the message. */
static void expect_fail(const char *img, const char *lbl, int want, const char *what) {
  fc_dataset d = {.n = 12345};
  errbuf[0] = '\0';
  int rc = load(img, lbl, &d);
  if (rc != want) fprintf(stderr, "case %s: rc %d, want %d (%s)\n", what, rc, want, errbuf);
  CHECK_EQ_INT(rc, want);
  CHECK(d.n == 12345 && d.x == NULL);
  CHECK(strstr(errbuf, dir) != NULL);
}

static void test_idx_bad(void) {
  uint32_t d3[3] = {N, ROWS, COLS}, d1[1] = {N};
  write_good("img", "lbl", 1);

  write_idx(tmp_path("bad_magic"), 0x0802, d3, 3, pixels, sizeof pixels, 1);
  expect_fail("bad_magic", "lbl", FEDC_ERR_FORMAT, "image magic");
  CHECK(strstr(errbuf, "magic") != NULL);
  expect_fail("lbl", "img", FEDC_ERR_FORMAT, "files swapped");
  write_idx(tmp_path("bad_lmagic"), 0x0803, d1, 1, labels, sizeof labels, 1);
  expect_fail("img", "bad_lmagic", FEDC_ERR_FORMAT, "label magic");

  write_idx(tmp_path("short_px"), 0x803, d3, 3, pixels, sizeof pixels - 7, 1);
  expect_fail("short_px", "lbl", FEDC_ERR_FORMAT, "truncated pixels");
  CHECK(strstr(errbuf, "truncated") != NULL && strstr(errbuf, "short_px") != NULL);
  write_idx(tmp_path("short_lb"), 0x801, d1, 1, labels, N - 1, 0);
  expect_fail("img", "short_lb", FEDC_ERR_FORMAT, "truncated labels");
  write_idx(tmp_path("short_hdr"), 0x803, d3, 1, NULL, 0, 1); /* header cut after n */
  expect_fail("short_hdr", "lbl", FEDC_ERR_FORMAT, "truncated header");
  write_text(tmp_path("empty"), "");
  expect_fail("empty", "lbl", FEDC_ERR_FORMAT, "empty file");

  uint32_t d1_more[1] = {N + 1};
  unsigned char more[N + 1] = {0};
  write_idx(tmp_path("lbl_more"), 0x801, d1_more, 1, more, sizeof more, 1);
  expect_fail("img", "lbl_more", FEDC_ERR_FORMAT, "count mismatch");
  CHECK(strstr(errbuf, "labels") != NULL);

  write_idx(tmp_path("trail"), 0x801, d1, 1, more, sizeof more, 1); /* one byte too many */
  expect_fail("img", "trail", FEDC_ERR_FORMAT, "trailing bytes");

  uint32_t huge[3] = {N, 2000, 1000};
  write_idx(tmp_path("huge"), 0x803, huge, 3, pixels, sizeof pixels, 1);
  expect_fail("huge", "lbl", FEDC_ERR_FORMAT, "dim over cap");
  uint32_t zero[3] = {0, ROWS, COLS};
  write_idx(tmp_path("zero"), 0x803, zero, 3, NULL, 0, 1);
  expect_fail("zero", "lbl", FEDC_ERR_FORMAT, "no images");

  /* A gzip stream with a damaged body: zlib reports a data or CRC error. */
  {
    static unsigned char noise[4000];
    for (size_t i = 0; i < sizeof noise; i++) noise[i] = (unsigned char)(i * 2654435761u >> 13);
    uint32_t dn[3] = {10, 20, 20};
    write_idx(tmp_path("corrupt"), 0x803, dn, 3, noise, sizeof noise, 1);
    FILE *f = fopen(tmp_path("corrupt"), "r+b");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size / 2, SEEK_SET);
    unsigned char junk[16];
    memset(junk, 0xA5, sizeof junk);
    fwrite(junk, 1, sizeof junk, f);
    fclose(f);
    expect_fail("corrupt", "lbl", FEDC_ERR_FORMAT, "corrupt gzip");
  }

  fc_dataset d = {0};
  CHECK_EQ_INT(load("no_such_file", "lbl", &d), FEDC_ERR_NOT_FOUND);
}

static int csv(const char *text, int label_col, float scale, fc_dataset *d) {
  write_text(tmp_path("t.csv"), text);
  errbuf[0] = '\0';
  return fc_csv_load(tmp_path("t.csv"), label_col, scale, d, errbuf, sizeof errbuf);
}

static void csv_fail(const char *text, int label_col, int want, const char *needle) {
  fc_dataset d = {0};
  int rc = csv(text, label_col, 1.0f, &d);
  if (rc != want || (needle && !strstr(errbuf, needle)))
    fprintf(stderr, "csv case %s: rc %d want %d: %s\n", needle ? needle : "", rc, want, errbuf);
  CHECK_EQ_INT(rc, want);
  if (needle) CHECK(strstr(errbuf, needle) != NULL);
  CHECK(d.x == NULL);
}

static void test_csv(void) {
  fc_dataset d = {0};
  int rc = csv("label,a,b\r\n3, 255,0\r\n\r\n0,51 ,  102\n 7,1e2,-0\n", 0, 1.0f / 255.0f, &d);
  CHECK_EQ_INT(rc, 0);
  if (rc == 0) {
    CHECK_EQ_INT(d.n, 3);
    CHECK_EQ_INT(d.dim, 2);
    CHECK_EQ_INT(d.classes, 8);
    CHECK(d.y[0] == 3 && d.y[1] == 0 && d.y[2] == 7);
    CHECK(d.x[0] == 1.0f && d.x[1] == 0.0f && fabsf(d.x[2] - 0.2f) < 1e-7f && fabsf(d.x[3] - 0.4f) < 1e-7f);
    CHECK(d.x[4] == (float)(100.0 * (double)(1.0f / 255.0f)));
  }
  fc_dataset_free(&d);

  rc = csv("0.5,1.5,2\n0.25,0.75,1\n", -1, 0.0f, &d); /* no header, label last, scale 0 = 1 */
  CHECK_EQ_INT(rc, 0);
  if (rc == 0) {
    CHECK(d.n == 2 && d.dim == 2 && d.classes == 3);
    CHECK(d.y[0] == 2 && d.y[1] == 1 && d.x[0] == 0.5f && d.x[3] == 0.75f);
  }
  fc_dataset_free(&d);

  rc = csv("1,2,3\n4,5,6\n", 1, 1.0f, &d); /* label in the middle */
  CHECK_EQ_INT(rc, 0);
  if (rc == 0) CHECK(d.y[0] == 2 && d.y[1] == 5 && d.x[0] == 1.0f && d.x[1] == 3.0f && d.x[3] == 6.0f);
  fc_dataset_free(&d);

  csv_fail("h1,h2,h3\n1,2,3\n4,5\n", 0, FEDC_ERR_FORMAT, "line 3");
  csv_fail("1,2,3\n4,x,6\n", 0, FEDC_ERR_FORMAT, "line 2, column 2");
  csv_fail("1,2,3\n4,,6\n", 0, FEDC_ERR_FORMAT, "column 2");
  csv_fail("1,2\n256,1\n", 0, FEDC_ERR_FORMAT, "line 2, column 1");
  csv_fail("1.5,2\n", 0, FEDC_ERR_FORMAT, "label");
  csv_fail("-1,2\n", 0, FEDC_ERR_FORMAT, "label");
  csv_fail("1,1e999\n", 0, FEDC_ERR_FORMAT, "finite");
  csv_fail("1,nan\n", 0, FEDC_ERR_FORMAT, "finite");
  csv_fail("", 0, FEDC_ERR_FORMAT, "no data");
  csv_fail("a,b,c\n\n", 0, FEDC_ERR_FORMAT, "no data");
  csv_fail("1\n2\n", 0, FEDC_ERR_FORMAT, "one column");
  csv_fail("1,2\n", 2, FEDC_ERR_INVALID, "label column");
  csv_fail("1,2\n", -2, FEDC_ERR_INVALID, "label column");
  CHECK_EQ_INT(fc_csv_load(tmp_path("absent.csv"), 0, 1, &d, errbuf, sizeof errbuf), FEDC_ERR_NOT_FOUND);
  {
    /* The column limit holds after a header line too: the first data row is
     * what fixes the width (it used to be checked on the header only). */
    size_t cols = FC_DATA_MAX_DIM + 2, len = 4 + 2 * cols + 1;
    char *text = malloc(len);
    CHECK(text != NULL);
    memcpy(text, "a,b\n", 4);
    for (size_t c = 0; c < cols; c++) memcpy(text + 4 + 2 * c, c + 1 < cols ? "0," : "0\n", 2);
    text[len - 1] = 0;
    csv_fail(text, 0, FEDC_ERR_FORMAT, "columns (at most");
    free(text);
  }
}

static void test_fmnist(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte.gz", FC_FMNIST_DEFAULT_DIR);
  if (access(path, R_OK) != 0) {
    printf("skip: %s not installed\n", FC_FMNIST_DEFAULT_DIR);
    return;
  }
  fc_dataset d = {0};
  int rc = fc_fmnist_load(FC_FMNIST_DEFAULT_DIR, 0, &d, errbuf, sizeof errbuf);
  CHECK_EQ_INT(rc, 0);
  if (rc) {
    fprintf(stderr, "%s\n", errbuf);
    return;
  }
  CHECK_EQ_INT(d.n, 10000);
  CHECK_EQ_INT(d.dim, 784);
  CHECK_EQ_INT(d.classes, 10);
  float lo = 1, hi = 0;
  for (size_t i = 0; i < (size_t)d.n * d.dim; i++) {
    if (d.x[i] < lo) lo = d.x[i];
    if (d.x[i] > hi) hi = d.x[i];
  }
  CHECK(lo == 0.0f && hi == 1.0f);
  uint32_t counts[10] = {0};
  for (uint32_t i = 0; i < d.n; i++) counts[d.y[i]]++;
  CHECK(counts[0] == 1000 && counts[9] == 1000); /* the test split is balanced */
  fc_dataset_free(&d);
}

static void test_fmnist_env(void) {
  /* $FEDC_FMNIST_DIR and the fallback to uncompressed names. */
  write_good("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 0);
  setenv("FEDC_FMNIST_DIR", dir, 1);
  fc_dataset d = {0};
  int rc = fc_fmnist_load(NULL, 0, &d, errbuf, sizeof errbuf);
  CHECK_EQ_INT(rc, 0);
  CHECK_EQ_INT(d.n, N);
  fc_dataset_free(&d);
  rc = fc_fmnist_load(NULL, 1, &d, errbuf, sizeof errbuf); /* no train split there */
  CHECK_EQ_INT(rc, FEDC_ERR_NOT_FOUND);
  CHECK(strstr(errbuf, "train-images-idx3-ubyte.gz") != NULL);
  unsetenv("FEDC_FMNIST_DIR");
}

/* fc_idx_load_rows: exactly the rows a full load has at those indices, for
 * short gaps (read and dropped) and a long one (over 1 MiB: seeked), gzipped
 * and plain; classes of the whole file; no rows at all; rows out of range or
 * out of order refused. */
static void test_idx_rows(void) {
  enum { BN = 3000, BDIM = 28 * 28 };
  unsigned char *px = malloc((size_t)BN * BDIM), lb[BN];
  CHECK(px != NULL);
  if (!px) return;
  for (size_t i = 0; i < (size_t)BN * BDIM; i++) px[i] = (unsigned char)((i * 2654435761u) >> 24);
  for (int i = 0; i < BN; i++) lb[i] = (unsigned char)(i % 7);
  lb[2000] = 9; /* not among the rows taken: classes still counts it */
  uint32_t d3[3] = {BN, 28, 28}, d1[1] = {BN};
  const uint32_t want[] = {0, 1, 5, 6, 700, 2999};
  const uint32_t nwant = sizeof want / sizeof want[0];
  for (int gz = 0; gz <= 1; gz++) {
    write_idx(tmp_path("bimg"), 0x803, d3, 3, px, (size_t)BN * BDIM, gz);
    write_idx(tmp_path("blbl"), 0x801, d1, 1, lb, BN, gz);
    fc_dataset all = {0}, part = {0};
    CHECK_EQ_INT(fc_idx_load(tmp_path("bimg"), tmp_path("blbl"), &all, errbuf, sizeof errbuf), 0);
    int rc = fc_idx_load_rows(tmp_path("bimg"), tmp_path("blbl"), want, nwant, &part, errbuf, sizeof errbuf);
    CHECK_EQ_INT(rc, 0);
    if (rc) fprintf(stderr, "rows (gz %d): %s\n", gz, errbuf);
    CHECK_EQ_INT(part.n, nwant);
    CHECK_EQ_INT(part.dim, BDIM);
    CHECK_EQ_INT(part.classes, 10);
    int same = part.x && part.y && all.x;
    for (uint32_t i = 0; same && i < nwant; i++) {
      same &= memcmp(part.x + (size_t)i * BDIM, all.x + (size_t)want[i] * BDIM, BDIM * sizeof(float)) == 0;
      same &= part.y[i] == all.y[want[i]];
    }
    CHECK(same);
    fc_dataset_free(&part);
    /* No rows: the header's shape and the classes, nothing else. */
    CHECK_EQ_INT(fc_idx_load_rows(tmp_path("bimg"), tmp_path("blbl"), NULL, 0, &part, errbuf, sizeof errbuf), 0);
    CHECK(part.n == 0 && part.dim == BDIM && part.classes == 10);
    fc_dataset_free(&part);
    uint8_t *y = NULL;
    uint32_t n = 0;
    CHECK_EQ_INT(fc_idx_load_labels(tmp_path("blbl"), &y, &n, errbuf, sizeof errbuf), 0);
    CHECK(n == BN && y && memcmp(y, lb, BN) == 0);
    free(y);
    fc_dataset_free(&all);
  }
  const uint32_t out_of_range[] = {1, 3000}, out_of_order[] = {5, 5}, backwards[] = {9, 2};
  fc_dataset d = {.n = 777};
  CHECK_EQ_INT(fc_idx_load_rows(tmp_path("bimg"), tmp_path("blbl"), out_of_range, 2, &d, errbuf, sizeof errbuf),
               FEDC_ERR_INVALID);
  CHECK(strstr(errbuf, "row 3000 of 3000") != NULL);
  CHECK_EQ_INT(fc_idx_load_rows(tmp_path("bimg"), tmp_path("blbl"), out_of_order, 2, &d, errbuf, sizeof errbuf),
               FEDC_ERR_INVALID);
  CHECK_EQ_INT(fc_idx_load_rows(tmp_path("bimg"), tmp_path("blbl"), backwards, 2, &d, errbuf, sizeof errbuf),
               FEDC_ERR_INVALID);
  CHECK(d.n == 777 && d.x == NULL);
  /* A truncated image file: the row inside the missing tail is a format error. */
  write_idx(tmp_path("bimg"), 0x803, d3, 3, px, (size_t)1000 * BDIM, 0);
  CHECK_EQ_INT(fc_idx_load_rows(tmp_path("bimg"), tmp_path("blbl"), want, nwant, &d, errbuf, sizeof errbuf),
               FEDC_ERR_FORMAT);
  CHECK(d.n == 777 && d.x == NULL);
  free(px);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/fedc_test_data_XXXXXX");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_idx_good();
  test_idx_bad();
  test_idx_rows();
  test_csv();
  test_fmnist();
  test_fmnist_env();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return CHECK_DONE();
}
