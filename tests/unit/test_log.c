/*
 * test_log.c - the logger's per-call-site rate limit for warnings and errors
 * (issue 7: one identity holding stalled calls made 12,189 WARN lines in 12 s):
 * a flood from one site is cut to its burst, the next line it may print says
 * how many were suppressed, other sites and info lines are not affected.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/log.h"

static int lines[4];
static char last[2048];

static void sink(int level, const char *line, void *ctx) {
  (void)ctx;
  lines[level]++;
  snprintf(last, sizeof last, "%s", line);
}

static void flood_site(int i) { FC_WARN("test", "peer %d stalled", i); }
static void other_site(void) { FC_WARN("test", "something else"); }

int main(void) {
  fc_log_set_sink(sink, NULL);
  fc_log_set_level(FC_LOG_INFO);
  for (int i = 0; i < 1000; i++) flood_site(i);
  CHECK(lines[FC_LOG_WARN] >= 50 && lines[FC_LOG_WARN] <= 52); /* the burst (a little refill) */
  int printed = lines[FC_LOG_WARN];
  other_site(); /* another call site has its own budget */
  CHECK_EQ_INT(lines[FC_LOG_WARN], printed + 1);
  CHECK(strstr(last, "something else") != NULL);
  for (int i = 0; i < 1000; i++) FC_INFO("test", "progress %d", i); /* never limited */
  CHECK_EQ_INT(lines[FC_LOG_INFO], 1000);
  usleep(250 * 1000); /* refill: 2.5 lines */
  flood_site(4242);
  CHECK_EQ_INT(lines[FC_LOG_WARN], printed + 2);
  char want[128];
  snprintf(want, sizeof want, "peer 4242 stalled (and %d similar lines suppressed)", 1000 - printed);
  if (!strstr(last, want)) fprintf(stderr, "last line: %s\nwanted: %s\n", last, want);
  CHECK(strstr(last, want) != NULL);
  flood_site(4243); /* the count starts over */
  CHECK(strstr(last, "suppressed") == NULL);
  fc_log_set_sink(NULL, NULL);
  return CHECK_DONE();
}
