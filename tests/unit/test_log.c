/*
 * test_log.c - the logger's per-call-site rate limit for warnings and errors
 * (issue 7: one identity holding stalled calls made 12,189 WARN lines in 12 s):
 * a flood from one site is cut to its burst, the next line it may print says
 * how many were suppressed, other sites and info lines are not affected.
 * And fc_text_escape (security review, finding 6): a peer's string cannot
 * break a text log line or reach the terminal as a control sequence.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "common/log.h"

static int lines[4];
static char last[2048];
static int last_flood = -1; /* the i of the last flood_site line printed */

static void sink(int level, const char *line, void *ctx) {
  (void)ctx;
  lines[level]++;
  snprintf(last, sizeof last, "%s", line);
  const char *p = strstr(line, "peer ");
  int i;
  if (p && sscanf(p, "peer %d stalled", &i) == 1) last_flood = i;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void flood_site(int i) { FC_WARN("test", "peer %d stalled", i); }
static void other_site(void) { FC_WARN("test", "something else"); }

static void expect_esc(const char *in, size_t n, const char *want) {
  char out[256];
  fc_text_escape(out, sizeof out, in, n);
  if (strcmp(out, want) != 0) fprintf(stderr, "  escape: got '%s', want '%s'\n", out, want);
  CHECK(strcmp(out, want) == 0);
}

/* Valid UTF-8 without C0/C1 controls, DEL, bidi controls or line separators. */
static int shown_safe(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    unsigned c = *p, cp, len;
    if (c < 0x20 || c == 0x7F) return 0;
    if (c < 0x80) {
      p++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return 0;
    for (unsigned i = 1; i < len; i++) {
      if ((p[i] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((cp >= 0x80 && cp <= 0x9F) || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF || cp == 0x2028 ||
        cp == 0x2029 || (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200E ||
        cp == 0x200F)
      return 0;
    p += len;
  }
  return 1;
}

static void test_escape(void) {
  expect_esc("fc1.weight", (size_t)-1, "fc1.weight");
  expect_esc("a\nb\rc\td", (size_t)-1, "a\\nb\\rc\\td");
  expect_esc("\x1b[31mred", (size_t)-1, "\\x1b[31mred");
  expect_esc("x\x7f\x01", (size_t)-1, "x\\x7f\\x01");
  expect_esc("a\0b", 3, "a\\x00b"); /* an explicit length shows a NUL */
  expect_esc("c:\\x1b", (size_t)-1, "c:\\\\x1b"); /* a literal backslash stays distinguishable */
  expect_esc("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x99\x82", (size_t)-1, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x99\x82");
  expect_esc("\xc2\x9b" "31m", (size_t)-1, "\\u009b31m");      /* C1 CSI */
  expect_esc("\xe2\x80\xae" "txt", (size_t)-1, "\\u202etxt"); /* right-to-left override */
  expect_esc("\xe2\x80\xa8", (size_t)-1, "\\u2028");           /* line separator */
  expect_esc("\x80", (size_t)-1, "\\x80");                       /* lone continuation byte */
  expect_esc("\xc0\xaf", (size_t)-1, "\\xc0\\xaf");             /* overlong '/' */
  expect_esc("\xed\xa0\x80", (size_t)-1, "\\xed\\xa0\\x80");   /* a surrogate */
  expect_esc("\xe2\x82", (size_t)-1, "\\xe2\\x82");             /* cut short */
  expect_esc("\xf5\x80\x80\x80", (size_t)-1, "\\xf5\\x80\\x80\\x80");
  expect_esc(NULL, 0, "");
  /* Cut at a whole escape when out is short. */
  char small[6];
  fc_text_escape(small, sizeof small, "ab\x1b", (size_t)-1);
  CHECK(strcmp(small, "ab") == 0);
  /* Any bytes at all come out safe to show (deterministic random inputs). */
  unsigned long long x = 88172645463325252ull;
  int unsafe = 0;
  for (int i = 0; i < 20000; i++) {
    unsigned char in[48];
    char out[48 * 6 + 1];
    size_t n = (size_t)(i % 48);
    for (size_t j = 0; j < n; j++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      in[j] = (unsigned char)(i & 1 ? x : (x % 4 == 0 ? 0xC2 + x % 0x30 : x % 0x30 + 0x70)); /* dense in UTF-8 leads */
    }
    fc_text_escape(out, sizeof out, (const char *)in, n);
    unsafe += !shown_safe(out);
  }
  CHECK_EQ_INT(unsafe, 0);
  /* The review's tensor name through a text log line: one line, no ESC. */
  fc_log_set_level(FC_LOG_INFO);
  FC_WARN("test", "upload rejected: tensor '%s'", "w\n2026-01-01T00:00:00.000Z INFO  admin: forged line\x1b[31m");
  CHECK(strchr(last, '\n') == NULL && strchr(last, '\x1b') == NULL);
  CHECK(strstr(last, "tensor 'w\\n2026-01-01T00:00:00.000Z INFO  admin: forged line\\x1b[31m'") != NULL);
}

int main(void) {
  fc_log_set_sink(sink, NULL);
  test_escape();
  memset(lines, 0, sizeof lines);
  fc_log_set_level(FC_LOG_INFO);
  /* The burst, and what refilled (10 lines/s) while the flood ran: under an
   * emulator the loop takes long enough for a line or two more. */
  double t0 = now_s();
  for (int i = 0; i < 1000; i++) flood_site(i);
  int refill = (int)((now_s() - t0) * 10.0) + 1;
  CHECK(lines[FC_LOG_WARN] >= 50 && lines[FC_LOG_WARN] <= 51 + refill);
  int printed = lines[FC_LOG_WARN], flood_last = last_flood;
  other_site(); /* another call site has its own budget */
  CHECK_EQ_INT(lines[FC_LOG_WARN], printed + 1);
  CHECK(strstr(last, "something else") != NULL);
  for (int i = 0; i < 1000; i++) FC_INFO("test", "progress %d", i); /* never limited */
  CHECK_EQ_INT(lines[FC_LOG_INFO], 1000);
  usleep(250 * 1000); /* refill: 2.5 lines */
  flood_site(4242);
  CHECK_EQ_INT(lines[FC_LOG_WARN], printed + 2);
  char want[128];
  /* Suppressed: the flood's calls after the last line it printed. */
  snprintf(want, sizeof want, "peer 4242 stalled (and %d similar lines suppressed)", 999 - flood_last);
  if (!strstr(last, want)) fprintf(stderr, "last line: %s\nwanted: %s\n", last, want);
  CHECK(strstr(last, want) != NULL);
  flood_site(4243); /* the count starts over */
  CHECK(strstr(last, "suppressed") == NULL);
  fc_log_set_sink(NULL, NULL);
  return CHECK_DONE();
}
