/* probe_report.c - see probe_report.h. */
#include "tests/support/probe_report.h"

#include <stdio.h>

int probe_report(const char *step, int want_code, const fc_status *st) {
  int ok = st->code == want_code;
  printf("{\"step\":\"%s\",\"code\":%d,\"want\":%d,\"ok\":%s,\"detail\":\"", step, st->code, want_code,
         ok ? "true" : "false");
  for (const char *p = st->detail; *p; p++) {
    if (*p == '"' || *p == '\\') putchar('\\');
    putchar(*p >= 32 ? *p : ' ');
  }
  printf("\",\"retry_after_ms\":%u}\n", st->retry_after_ms);
  fflush(stdout);
  return ok;
}
