/*
 * test_diagnose.c - the failure probe (transport/diagnose.c) on a replica
 * list, as `--coordinator host:port,host:port` gives it: each address is
 * probed, not the list as one host name (it was: "cannot resolve
 * 127.0.0.1:4000,127.0.0.1"), and any live one means the path is fine.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "fedc/error.h"
#include "transport/transport_int.h"

/* A loopback port: listening (fd returned) or closed again (fd -1). */
static int port_on_loopback(int listen_too, int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0)
    return -1;
  *port = ntohs(a.sin_port);
  if (listen_too && listen(fd, 4) == 0) return fd;
  close(fd);
  return -1;
}

int main(void) {
  int p1 = 0, p2 = 0, p3 = 0;
  port_on_loopback(0, &p1);
  port_on_loopback(0, &p2);
  int live = port_on_loopback(1, &p3);
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
