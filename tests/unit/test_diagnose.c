/*
 * test_diagnose.c - the failure probe (transport/diagnose.c) on a replica
 * list, as `--coordinator host:port,host:port` gives it: each address is
 * probed, not the list as one host name (it was: "cannot resolve
 * 127.0.0.1:4000,127.0.0.1"), and any live one means the path is fine.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fedc/error.h"
#include "tests/support/testsvc.h"
#include "transport/transport_int.h"

int main(void) {
  int p1 = 0, p2 = 0, p3 = 0;
  ts_loopback_socket(0, &p1);
  ts_loopback_socket(0, &p2);
  int live = ts_loopback_socket(1, &p3);
  CHECK(p1 > 0 && p2 > 0 && live >= 0);
  char target[200], why[600];
  /* Both down: each address named, no resolver error. (insecure: TCP only.) */
  snprintf(target, sizeof target, "127.0.0.1:%d,127.0.0.1:%d", p1, p2);
  CHECK_EQ_INT(fc_diagnose_probe(target, "", "", "", 1, why, sizeof why), FEDC_ERR_UNAVAILABLE);
  char a1[40], a2[40];
  snprintf(a1, sizeof a1, "127.0.0.1:%d", p1);
  snprintf(a2, sizeof a2, "127.0.0.1:%d", p2);
  CHECK(strstr(why, "no replica answered") != NULL);
  CHECK(strstr(why, a1) != NULL && strstr(why, a2) != NULL);
  CHECK(strstr(why, "cannot resolve") == NULL);
  /* One of them up: the path is fine. */
  snprintf(target, sizeof target, "127.0.0.1:%d, 127.0.0.1:%d", p1, p3);
  CHECK_EQ_INT(fc_diagnose_probe(target, "", "", "", 1, why, sizeof why), FEDC_OK);
  /* One address: as before. */
  CHECK_EQ_INT(fc_diagnose_probe(a1, "", "", "", 1, why, sizeof why), FEDC_ERR_UNAVAILABLE);
  CHECK(strstr(why, "coordinator unreachable at") != NULL);
  CHECK_EQ_INT(fc_diagnose_probe(",", "", "", "", 1, why, sizeof why), FEDC_ERR_INVALID);
  close(live);
  return CHECK_DONE();
}
