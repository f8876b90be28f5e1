/*
 * test_safetensors.c - round trip, a file laid out the way other writers lay
 * it out, every rejection path of the reader with its exact code, and writes
 * that cannot be redirected (planted symlinks, FIFOs, device nodes) or leave
 * temp files behind.
 */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "common/fileutil.h"
#include "common/safetensors.h"
#include "fedc/error.h"

#define MAXB (1ull << 30)

static char dir[256];

static const char *tpath(const char *name) {
  static char buf[512];
  snprintf(buf, sizeof buf, "%s/%s", dir, name);
  return buf;
}

/* Write [u64 len][header][data]; declared_len 0 means strlen(header). */
static void write_raw(const char *path, const char *header, uint64_t declared_len, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  uint64_t len = declared_len ? declared_len : strlen(header);
  uint8_t le[8];
  for (int i = 0; i < 8; i++) le[i] = (uint8_t)(len >> (8 * i));
  fwrite(le, 1, 8, f);
  fwrite(header, 1, strlen(header), f);
  if (n) fwrite(data, 1, n, f);
  fclose(f);
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static fc_model_spec test_spec(void) {
  fc_model_spec m;
  memset(&m, 0, sizeof m);
  uint64_t w[2] = {3, 4}, b[1] = {4}, c[4] = {1, 2, 1, 3};
  fc_model_spec_add(&m, "layer1.weight", 2, w);
  fc_model_spec_add(&m, "layer1.bias", 1, b);
  fc_model_spec_add(&m, "conv.k", 4, c);
  return m; /* 12 + 4 + 6 = 22 floats */
}

static void test_round_trip(void) {
  char err[256];
  fc_model_spec spec = test_spec(), got;
  float data[22];
  for (int i = 0; i < 22; i++) data[i] = (float)i * 0.25f - 2.0f;
  data[3] = -0.0f;
  data[5] = NAN;
  data[7] = INFINITY;
  data[9] = 1e-40f; /* subnormal */
  fc_st_meta meta = {0}, got_meta;
  CHECK_EQ_INT(fc_st_meta_set(&meta, "version", "7"), FEDC_OK);
  CHECK_EQ_INT(fc_st_meta_set(&meta, "sha256_parent", "ab12"), FEDC_OK);
  CHECK_EQ_INT(fc_st_meta_set(&meta, "note", "unicode: \xc3\xa9t\xc3\xa9 \"quoted\""), FEDC_OK);
  CHECK_EQ_INT(fc_st_meta_set(&meta, "version", "8"), FEDC_ERR_INVALID); /* duplicate */

  char p[512];
  snprintf(p, sizeof p, "%s", tpath("model.safetensors")); /* tpath's buffer is reused below */
  CHECK_EQ_INT(fc_safetensors_write(p, &spec, data, &meta, err, sizeof err), FEDC_OK);
  CHECK(access(tpath("model.safetensors.tmp"), F_OK) != 0);
  float *out = NULL;
  CHECK_EQ_INT(fc_safetensors_read(p, &got, &out, &got_meta, MAXB, err, sizeof err), FEDC_OK);
  CHECK(fc_model_spec_equal(&spec, &got));
  CHECK(out && memcmp(out, data, sizeof data) == 0); /* bitwise, NaN and -0 included */
  CHECK_EQ_INT(got_meta.n, 3);
  CHECK(strcmp(got_meta.key[0], "version") == 0 && strcmp(got_meta.val[0], "7") == 0);
  CHECK(fc_st_meta_get(&got_meta, "note") && strcmp(fc_st_meta_get(&got_meta, "note"), meta.val[2]) == 0);
  free(out);

  /* Layout: header length 8-aligned, metadata first, tensors in spec order, exact data size. */
  FILE *f = fopen(p, "rb");
  CHECK(f != NULL);
  if (f) {
    uint8_t le[8];
    CHECK_EQ_INT(fread(le, 1, 8, f), 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | le[i];
    CHECK_EQ_INT(n % 8, 0);
    CHECK_EQ_INT(file_size(p), (long)(8 + n + sizeof data));
    char *h = calloc(1, n + 1);
    CHECK(h && fread(h, 1, n, f) == n);
    if (h) {
      char *m = strstr(h, "\"__metadata__\""), *w = strstr(h, "\"layer1.weight\""), *b = strstr(h, "\"layer1.bias\""),
           *k = strstr(h, "\"conv.k\"");
      CHECK(h[0] == '{' && m && w && b && k && m < w && w < b && b < k);
      CHECK(strstr(h, "\"data_offsets\":[64,88]") != NULL); /* conv.k after 16 floats */
    }
    free(h);
    fclose(f);
  }

  /* No metadata; meta_out given gets n == 0; meta_out NULL is fine; overwrite in place. */
  CHECK_EQ_INT(fc_safetensors_write(p, &spec, data, NULL, err, sizeof err), FEDC_OK);
  got_meta.n = 99;
  CHECK_EQ_INT(fc_safetensors_read(p, &got, &out, &got_meta, MAXB, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(got_meta.n, 0);
  free(out);
  CHECK_EQ_INT(fc_safetensors_read(p, &got, &out, NULL, MAXB, err, sizeof err), FEDC_OK);
  free(out);

  /* Exactly at the cap is fine; one byte below the data size is TOO_LARGE. */
  CHECK_EQ_INT(fc_safetensors_read(p, &got, &out, NULL, sizeof data, err, sizeof err), FEDC_OK);
  free(out);
  out = (float *)(uintptr_t)1;
  CHECK_EQ_INT(fc_safetensors_read(p, &got, &out, NULL, sizeof data - 1, err, sizeof err), FEDC_ERR_TOO_LARGE);
  CHECK(out == (float *)(uintptr_t)1); /* untouched on error */
}

static void test_write_errors(void) {
  char err[256];
  fc_model_spec spec = test_spec(), bad = spec;
  float data[22] = {0};
  strcpy(bad.t[1].name, "__metadata__");
  CHECK_EQ_INT(fc_safetensors_write(tpath("w1"), &bad, data, NULL, err, sizeof err), FEDC_ERR_INVALID);
  bad = spec;
  bad.t[0].shape[0] = 0;
  CHECK_EQ_INT(fc_safetensors_write(tpath("w1"), &bad, data, NULL, err, sizeof err), FEDC_ERR_SHAPE);
  CHECK_EQ_INT(fc_safetensors_write(tpath("w1"), &spec, NULL, NULL, err, sizeof err), FEDC_ERR_INVALID);
  fc_st_meta meta = {0};
  fc_st_meta_set(&meta, "k", "\xff\xfe not utf-8");
  CHECK_EQ_INT(fc_safetensors_write(tpath("w1"), &spec, data, &meta, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(access(tpath("w1"), F_OK) != 0 && access(tpath("w1.tmp"), F_OK) != 0);
  CHECK_EQ_INT(fc_safetensors_write(tpath("no/such/dir/x"), &spec, data, NULL, err, sizeof err), FEDC_ERR_IO);
}

/* Another writer's layout: metadata first, keys not in data order, field order varied, no padding. */
static void test_foreign_layout(void) {
  char err[256];
  float a[3] = {1.5f, -2.0f, 3.25f}, b[2] = {10.0f, 20.0f}, c[4] = {0.5f, 0.25f, 0.125f, 0.0625f};
  uint8_t bytes[36];
  memcpy(bytes, a, 12);      /* "a" at [0,12) */
  memcpy(bytes + 12, c, 16); /* "c" at [12,28) */
  memcpy(bytes + 28, b, 8);  /* "b" at [28,36) */
  const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[28,36]},"
                  "\"a\":{\"data_offsets\":[0,12],\"shape\":[3],\"dtype\":\"F32\"},"
                  "\"c\":{\"shape\":[2,2],\"dtype\":\"F32\",\"data_offsets\":[12,28]}}   ";
  write_raw(tpath("foreign"), h, 0, bytes, sizeof bytes);
  fc_model_spec spec;
  float *out = NULL;
  fc_st_meta meta;
  CHECK_EQ_INT(fc_safetensors_read(tpath("foreign"), &spec, &out, &meta, MAXB, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(spec.n, 3);
  CHECK(strcmp(spec.t[0].name, "a") == 0 && strcmp(spec.t[1].name, "c") == 0 && strcmp(spec.t[2].name, "b") == 0);
  CHECK(spec.t[1].ndim == 2 && spec.t[1].shape[0] == 2 && spec.t[1].shape[1] == 2);
  CHECK(out && memcmp(out, bytes, sizeof bytes) == 0);
  CHECK(meta.n == 1 && strcmp(meta.key[0], "format") == 0 && strcmp(meta.val[0], "pt") == 0);
  free(out);

  /* Pretty-printed JSON with newlines, no metadata. */
  const char *pretty = "{\n  \"w\": {\n    \"dtype\": \"F32\",\n    \"shape\": [1, 1],\n"
                       "    \"data_offsets\": [0, 4]\n  }\n}\n";
  write_raw(tpath("pretty"), pretty, 0, a, 4);
  CHECK_EQ_INT(fc_safetensors_read(tpath("pretty"), &spec, &out, &meta, MAXB, err, sizeof err), FEDC_OK);
  CHECK(spec.n == 1 && meta.n == 0 && out && out[0] == 1.5f);
  free(out);
}

/* Expect a read of a hand-built file to return code; on failure the out-params must stay untouched. */
static void expect_read(const char *name, int code, const char *needle) {
  char err[256] = "";
  fc_model_spec spec;
  spec.n = 12345;
  float *out = NULL;
  fc_st_meta meta;
  int rc = fc_safetensors_read(tpath(name), &spec, &out, &meta, MAXB, err, sizeof err);
  CHECK_EQ_INT(rc, code);
  if (rc != code) fprintf(stderr, "  file %s: %s\n", name, err);
  if (code == FEDC_OK)
    CHECK(out != NULL && spec.n != 12345);
  else
    CHECK(out == NULL && spec.n == 12345);
  if (needle && !strstr(err, needle)) {
    fprintf(stderr, "  file %s: error '%s' lacks '%s'\n", name, err, needle);
    CHECK(0);
  }
  free(out);
}

static void bad_file(const char *name, const char *header, const void *data, size_t n, int code, const char *needle) {
  write_raw(tpath(name), header, 0, data, n);
  expect_read(name, code, needle);
}

static void test_corrupt(void) {
  char err[256];
  float d[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  fc_model_spec spec = test_spec();
  float data[22] = {0};

  /* Truncated: a valid file cut at several points. */
  CHECK_EQ_INT(fc_safetensors_write(tpath("full"), &spec, data, NULL, err, sizeof err), FEDC_OK);
  long size = file_size(tpath("full"));
  FILE *f = fopen(tpath("full"), "rb");
  uint8_t *whole = malloc((size_t)size);
  CHECK(f && whole && fread(whole, 1, (size_t)size, f) == (size_t)size);
  if (f) fclose(f);
  const long cuts[] = {0, 5, 8, 20, size - 88 - 1, size - 4, size - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    f = fopen(tpath("cut"), "wb");
    if (f) {
      fwrite(whole, 1, (size_t)cuts[i], f);
      fclose(f);
    }
    expect_read("cut", FEDC_ERR_FORMAT, NULL);
  }
  /* Trailing garbage after the last tensor. */
  f = fopen(tpath("long"), "wb");
  if (f) {
    fwrite(whole, 1, (size_t)size, f);
    fputc(0, f);
    fclose(f);
  }
  expect_read("long", FEDC_ERR_FORMAT, "data section");
  free(whole);

  bad_file("badjson", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]", d, 8, FEDC_ERR_FORMAT,
           "bad JSON");
  bad_file("notobj", "[1,2]", d, 0, FEDC_ERR_FORMAT, NULL);
  bad_file("dupkey",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
           d, 8, FEDC_ERR_FORMAT, "bad JSON");
  bad_file("overlap",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
           d, 24, FEDC_ERR_FORMAT, "overlap");
  bad_file("same",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
           d, 8, FEDC_ERR_FORMAT, "overlap");
  bad_file("gap",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
           d, 20, FEDC_ERR_FORMAT, "gap");
  bad_file("notzero", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", d, 12, FEDC_ERR_FORMAT,
           "gap");
  bad_file("f16", "{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}", d, 8, FEDC_ERR_FORMAT, "F16");
  bad_file("shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", d, 8, FEDC_ERR_FORMAT,
           "shape needs 12");
  bad_file("size", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d, 12, FEDC_ERR_FORMAT,
           "data section");
  bad_file("scalar", "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", d, 4, FEDC_ERR_FORMAT, NULL);
  bad_file("zerodim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", d, 0, FEDC_ERR_FORMAT,
           NULL);
  bad_file("fivedims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", d, 4,
           FEDC_ERR_FORMAT, NULL);
  bad_file("negdim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", d, 8, FEDC_ERR_FORMAT, NULL);
  bad_file("realdim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", d, 8, FEDC_ERR_FORMAT,
           NULL);
  bad_file("hugedim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", d, 8,
           FEDC_ERR_FORMAT, NULL);
  bad_file("negoff", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", d, 8, FEDC_ERR_FORMAT,
           NULL);
  bad_file("backoff", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", d, 8, FEDC_ERR_FORMAT,
           NULL);
  bad_file("threeoff", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", d, 8, FEDC_ERR_FORMAT,
           NULL);
  bad_file("nodtype", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", d, 8, FEDC_ERR_FORMAT, NULL);
  bad_file("extra", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", d, 8,
           FEDC_ERR_FORMAT, NULL);
  bad_file("notentry", "{\"a\":7}", d, 0, FEDC_ERR_FORMAT, NULL);
  bad_file("badname", "{\"a b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d, 8, FEDC_ERR_FORMAT,
           NULL);
  bad_file("empty", "{}", d, 0, FEDC_ERR_FORMAT, "no tensors");
  bad_file("onlymeta", "{\"__metadata__\":{\"a\":\"b\"}}", d, 0, FEDC_ERR_FORMAT, "no tensors");
  bad_file("metanum",
           "{\"__metadata__\":{\"a\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d, 8,
           FEDC_ERR_FORMAT, NULL);
  bad_file("metaarr", "{\"__metadata__\":[],\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d, 8,
           FEDC_ERR_FORMAT, NULL);
  bad_file("leadspace", " {\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d, 8, FEDC_ERR_FORMAT,
           NULL);

  /* Header length beyond the file, and beyond the 100 MiB cap. */
  const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  write_raw(tpath("hdrlong"), ok, strlen(ok) + 9, d, 8);
  expect_read("hdrlong", FEDC_ERR_FORMAT, "header length");
  write_raw(tpath("hdrhuge"), ok, (uint64_t)FC_ST_HEADER_MAX + 1, d, 8);
  expect_read("hdrhuge", FEDC_ERR_FORMAT, "header length");
  write_raw(tpath("hdrmax"), ok, UINT64_MAX, d, 8);
  expect_read("hdrmax", FEDC_ERR_FORMAT, "header length");
  /* Header length short of the JSON: the tail becomes "data" and the JSON is cut. */
  write_raw(tpath("hdrshort"), ok, strlen(ok) - 1, d, 8);
  expect_read("hdrshort", FEDC_ERR_FORMAT, NULL);
  /* Control: the same file with the right length reads. */
  write_raw(tpath("hdrok"), ok, 0, d, 8);
  expect_read("hdrok", FEDC_OK, NULL);

  /* Metadata that does not fit fc_st_meta: TOO_LARGE with meta_out, fine without. */
  char big[600];
  snprintf(big, sizeof big, "{\"__metadata__\":{\"k\":\"%0300d\"},%s", 0, ok + 1);
  write_raw(tpath("bigmeta"), big, 0, d, 8);
  expect_read("bigmeta", FEDC_ERR_TOO_LARGE, NULL);
  fc_model_spec s2;
  float *out = NULL;
  CHECK_EQ_INT(fc_safetensors_read(tpath("bigmeta"), &s2, &out, NULL, MAXB, err, sizeof err), FEDC_OK);
  free(out);

  expect_read("does-not-exist", FEDC_ERR_NOT_FOUND, NULL);
  /* A directory is not a model file. */
  expect_read("", FEDC_ERR_FORMAT, NULL);
}

/* Names in dir other than the ones a test expects: a leftover temp file shows up here. */
static int count_entries_in(const char *path) {
  DIR *d = opendir(path);
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)))
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
  if (d) closedir(d);
  return n;
}

static int same_content(const char *path, const char *want) {
  char buf[256];
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strcmp(buf, want) == 0;
}

static mode_t lmode(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0 ? st.st_mode & S_IFMT : 0;
}

/*
 * Review issue 6, item 4: `fedc model get --out F` followed a symlink planted
 * at F.tmp (and overwrote its target), and with --force replaced a device
 * node or FIFO at F. Writes go through fileutil's temp-file helper now: an
 * unpredictable name created O_EXCL|O_NOFOLLOW, and only a regular file (or
 * nothing) at F is ever replaced.
 */
static void test_write_safety(void) {
  char err[256], out[512], planted[512], victim[512];
  fc_model_spec spec = test_spec();
  float data[22] = {0};
  mkdir(tpath("safe"), 0700);

  /* A symlink planted at F.tmp: its target is left alone, F is a new regular file. */
  snprintf(out, sizeof out, "%s", tpath("safe/model.safetensors"));
  snprintf(planted, sizeof planted, "%s.tmp", out);
  snprintf(victim, sizeof victim, "%s", tpath("safe/victim"));
  FILE *f = fopen(victim, "w");
  CHECK(f != NULL);
  if (f) {
    fputs("precious", f);
    fclose(f);
  }
  CHECK(symlink(victim, planted) == 0);
  err[0] = '\0';
  CHECK_EQ_INT(fc_safetensors_write(out, &spec, data, NULL, err, sizeof err), FEDC_OK);
  CHECK(same_content(victim, "precious"));
  CHECK(lmode(out) == S_IFREG);
  CHECK(lmode(planted) == S_IFLNK); /* not ours: left as it was */
  fc_model_spec got;
  float *back = NULL;
  CHECK_EQ_INT(fc_safetensors_read(out, &got, &back, NULL, MAXB, err, sizeof err), FEDC_OK);
  free(back);
  unlink(planted);

  /* A symlink at F itself: refused (also with --force, which only skips the
   * CLI's existence check), link and target untouched. */
  char link_out[512];
  snprintf(link_out, sizeof link_out, "%s", tpath("safe/link.safetensors"));
  CHECK(symlink(victim, link_out) == 0);
  err[0] = '\0';
  CHECK_EQ_INT(fc_safetensors_write(link_out, &spec, data, NULL, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "not a regular file") != NULL);
  if (!strstr(err, "not a regular file")) fprintf(stderr, "  symlink: %s\n", err);
  CHECK(lmode(link_out) == S_IFLNK);
  CHECK(same_content(victim, "precious"));

  /* A FIFO at F: refused and still a FIFO. */
  char fifo[512];
  snprintf(fifo, sizeof fifo, "%s", tpath("safe/fifo"));
  CHECK(mkfifo(fifo, 0600) == 0);
  err[0] = '\0';
  CHECK_EQ_INT(fc_safetensors_write(fifo, &spec, data, NULL, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "not a regular file") != NULL);
  CHECK(lmode(fifo) == S_IFIFO);

  /* A device node like /dev/null at F (root can make one; anyone a socket,
   * another non-regular file). Never /dev/null itself: a regression here
   * would replace the real one. */
  char dev[512];
  snprintf(dev, sizeof dev, "%s", tpath("safe/null"));
  mode_t kind = 0;
  if (geteuid() == 0 && mknod(dev, S_IFCHR | 0666, makedev(1, 3)) == 0) {
    kind = S_IFCHR;
  } else {
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", dev);
    if (s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof sa) == 0) kind = S_IFSOCK;
    if (s >= 0) close(s);
  }
  CHECK(kind != 0);
  err[0] = '\0';
  CHECK_EQ_INT(fc_safetensors_write(dev, &spec, data, NULL, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "not a regular file") != NULL);
  CHECK(lmode(dev) == kind);

  /* Nothing but what the test made is in the directory: no temp files. */
  CHECK_EQ_INT(count_entries_in(tpath("safe")), 5); /* victim, model, link, fifo, null */

  /* A write that fails half-way (file size limit) leaves no temp file behind
   * and the old F in place. */
  struct rlimit old_lim, lim;
  CHECK(getrlimit(RLIMIT_FSIZE, &old_lim) == 0);
  signal(SIGXFSZ, SIG_IGN); /* write() then fails with EFBIG instead of killing us */
  lim = old_lim;
  lim.rlim_cur = 64;
  CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
  long before = file_size(out);
  err[0] = '\0';
  int rc = fc_safetensors_write(out, &spec, data, NULL, err, sizeof err);
  setrlimit(RLIMIT_FSIZE, &old_lim);
  signal(SIGXFSZ, SIG_DFL);
  CHECK_EQ_INT(rc, FEDC_ERR_IO);
  CHECK(strstr(err, "cannot write") != NULL);
  CHECK_EQ_INT(file_size(out), before);
  CHECK_EQ_INT(count_entries_in(tpath("safe")), 5);

  /* fc_write_file_atomic (state.json) goes through the same helper. */
  CHECK_EQ_INT(fc_write_file_atomic(fifo, "{}", 2, 0600, 0), FEDC_ERR_INVALID);
  CHECK(lmode(fifo) == S_IFIFO);
  CHECK_EQ_INT(fc_write_file_atomic(link_out, "{}", 2, 0600, 0), FEDC_ERR_INVALID);
  CHECK(lmode(link_out) == S_IFLNK && same_content(victim, "precious"));
  char state[512];
  snprintf(state, sizeof state, "%s", tpath("safe/state.json"));
  snprintf(planted, sizeof planted, "%s.tmp", state);
  CHECK(symlink(victim, planted) == 0);
  CHECK_EQ_INT(fc_write_file_atomic(state, "{\"a\":1}", 7, 0600, 0), FEDC_OK);
  CHECK_EQ_INT(fc_write_file_atomic(state, "{\"a\":2}", 7, 0600, 0), FEDC_OK);
  CHECK(same_content(state, "{\"a\":2}") && same_content(victim, "precious"));
  struct stat st;
  CHECK(stat(state, &st) == 0 && (st.st_mode & 07777) == 0600);
  CHECK_EQ_INT(count_entries_in(tpath("safe")), 7); /* + state.json and the planted link */
}

static void rm_dir(void) {
  /* Remove what the test created; a leftover file means a test path above failed. */
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/fedc_st_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_round_trip();
  test_write_errors();
  test_write_safety();
  test_foreign_layout();
  test_corrupt();
  rm_dir();
  return CHECK_DONE();
}
