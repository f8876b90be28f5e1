/*
 * etcd_harness.h - for unit tests that need a real etcd: a free port on
 * 127.0.0.1 and one etcd member started on it (log in <dir>.log), to be
 * killed by the test. Tests skip their etcd part when `etcd` is missing.
 */
#ifndef FEDC_TESTS_ETCD_HARNESS_H
#define FEDC_TESTS_ETCD_HARNESS_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int etcd_installed(void) { return system("command -v etcd >/dev/null 2>&1") == 0; }

static int free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof a;
  int port = -1;
  if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(s, (struct sockaddr *)&a, &l) == 0)
    port = ntohs(a.sin_port);
  if (s >= 0) close(s);
  return port;
}

/* One member `name` of the cluster `cluster` ("t1=http://127.0.0.1:P1,..."). */
static pid_t start_etcd_member(const char *dir, const char *name, int cport, int pport, const char *cluster) {
  char client[64], peer[64];
  snprintf(client, sizeof client, "http://127.0.0.1:%d", cport);
  snprintf(peer, sizeof peer, "http://127.0.0.1:%d", pport);
  pid_t pid = fork();
  if (pid == 0) {
    /* etcd dies with the test, however the test ends (a crash, ctest's timeout). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    char logpath[512];
    snprintf(logpath, sizeof logpath, "%s.log", dir);
    if (!freopen(logpath, "w", stderr)) _exit(127);
    if (!freopen("/dev/null", "w", stdout)) _exit(127);
    execlp("etcd", "etcd", "--name", name, "--data-dir", dir, "--listen-client-urls", client,
           "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
           "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "fedc-unit",
           (char *)NULL);
    _exit(127);
  }
  return pid;
}

static pid_t start_etcd(const char *dir, int cport, int pport) {
  char cluster[96];
  snprintf(cluster, sizeof cluster, "t1=http://127.0.0.1:%d", pport);
  return start_etcd_member(dir, "t1", cport, pport, cluster);
}

#endif
