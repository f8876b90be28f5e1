/*
 * fuzz_metrics_http.c - any bytes a peer sends the coordinator's metrics
 * and health listener (coordinator/metrics.c): parsed by libmicrohttpd, the
 * library the listener runs on, and answered by the coordinator's own
 * access handler (coord_http_request: the method and path dispatch, the
 * dropped request body, /readyz, the /metrics text of a running
 * coordinator).
 *
 * Why a real daemon rather than the dispatch alone: the dispatch is a few
 * string compares; what a peer controls is the sequence of calls
 * libmicrohttpd makes into the handler (headers, body pieces, chunked
 * bodies, pipelined requests, HEAD, errors mid-request), and that is only
 * exercised with the library in the loop. The daemon here is ours with the
 * production handler and limits, in libmicrohttpd's external mode: no
 * listening socket and no thread, each input handed over a socketpair
 * (MHD_add_connection) and MHD_run driven until nothing moves. That is
 * deterministic (no timing), costs no TCP port per input, and keeps the
 * coordinator's own listener out of it (its thread would race the harness).
 *
 * Properties: no crash or sanitizer report; every connection ends (the
 * daemon holds none after the peer closes); every answer starts with an
 * HTTP status line; a single well-formed request is answered by path and
 * method as metrics.h says (200 / 404 / 405).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/coordinator.h"
#include "coordinator/metrics.h"
#include "fedc/error.h"
#include "fixture.h"
#include "fuzz.h"
#include "transport/transport.h"

const long fuzz_iters = 3000;

static fc_coord *coord;
static struct MHD_Daemon *daemon_;

static void discard_log(void *cls, const char *fmt, va_list ap) { (void)cls, (void)fmt, (void)ap; }

static void teardown(void) {
  if (daemon_) MHD_stop_daemon(daemon_);
  if (coord) fc_coord_stop(coord, 0);
  fc_transport_shutdown();
}

static void setup(void) {
  if (daemon_) return;
  fc_log_set_level(FC_LOG_ERROR);
  fc_transport_init();
  fc_coord_cfg cfg;
  fc_coord_cfg_defaults(&cfg);
  snprintf(cfg.federation, sizeof cfg.federation, "fuzz");
  snprintf(cfg.listen, sizeof cfg.listen, "127.0.0.1:0");
  snprintf(cfg.state_dir, sizeof cfg.state_dir, "%s", fix_path("state"));
  cfg.insecure_for_testing = 1;
  cfg.threads = 1;
  cfg.engine.min_clients = 1;
  cfg.engine.min_updates = 1;
  cfg.engine.cohort_size = 1;
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  uint64_t n = 16;
  fc_model_spec_add(&spec, "w", 1, &n);
  float init[16] = {0};
  char err[400];
  if (fc_coord_start(&cfg, &spec, init, &coord, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "fuzz_metrics_http: coordinator: %s\n", err);
    abort();
  }
  /* The production handler and limits (coord_http_start), external mode. */
  daemon_ = MHD_start_daemon(MHD_USE_NO_LISTEN_SOCKET, 0, NULL, NULL, coord_http_request, coord,
                             MHD_OPTION_CONNECTION_LIMIT, (unsigned)32, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                             MHD_OPTION_EXTERNAL_LOGGER, discard_log, NULL, MHD_OPTION_END);
  if (!daemon_) abort();
  atexit(teardown);
}

static unsigned connections(void) {
  const union MHD_DaemonInfo *i = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
  return i ? i->num_connections : 0;
}

/* The answer a single well-formed request must get, or 0 if the input is not one. */
static int expected_status(const uint8_t *data, size_t size) {
  char method[16], path[64], rest[64];
  char text[160];
  if (size >= sizeof text) return 0;
  memcpy(text, data, size);
  text[size] = 0;
  if (memchr(data, 0, size)) return 0;
  int used = 0;
  if (sscanf(text, "%15[A-Z] %63[!-~] HTTP/1.1\r\nHost: a\r\n\r%n%63s", method, path, &used, rest) != 2 || !used ||
      text[used] != '\n' || text[used + 1])
    return 0;
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) return 405;
  return !strcmp(path, "/healthz") || !strcmp(path, "/readyz") || !strcmp(path, "/metrics") ? 200 : 404;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  if (size > 65536) return 0; /* fits the socket buffers: the harness never blocks */
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  if (fcntl(sv[1], F_SETFL, O_NONBLOCK) != 0) abort();
  struct sockaddr_in peer;
  memset(&peer, 0, sizeof peer);
  peer.sin_family = AF_INET;
  peer.sin_port = htons(40000);
  peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (MHD_add_connection(daemon_, sv[0], (struct sockaddr *)&peer, sizeof peer) != MHD_YES) abort();
  char head[16] = "";
  size_t got = 0, off = 0;
  int eof = 0, idle = 0, shut = 0;
  for (int round = 0; round < 100000 && !eof; round++) {
    int moved = 0;
    if (off < size) {
      ssize_t w = write(sv[1], data + off, size - off);
      if (w > 0) off += (size_t)w, moved = 1;
    }
    if (MHD_run(daemon_) != MHD_YES) abort();
    char buf[4096];
    ssize_t r;
    while ((r = read(sv[1], buf, sizeof buf)) > 0) {
      for (ssize_t k = 0; k < r && got + (size_t)k < sizeof head - 1; k++) head[got + (size_t)k] = buf[k];
      got += (size_t)r;
      moved = 1;
    }
    if (r == 0) eof = 1;
    idle = moved ? 0 : idle + 1;
    if (idle >= 3 && off == size) {
      if (shut) break;
      /* Nothing more comes for what was sent: the peer closes its side. */
      shutdown(sv[1], SHUT_WR);
      shut = 1;
      idle = 0;
    }
  }
  close(sv[1]);
  for (int round = 0; round < 100 && connections() > 0; round++) MHD_run(daemon_);
  if (connections() != 0) abort(); /* a connection outlived its peer */
  if (got && (got < 12 || strncmp(head, "HTTP/1.", 7) != 0 || head[8] != ' ')) abort();
  int want = expected_status(data, size);
  if (want && (got < 12 || atoi(head + 9) != want)) abort();
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  static const char s[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                          "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                          "PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                          "HEAD /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
  *size = sizeof s - 1;
  *data = malloc(*size);
  memcpy(*data, s, *size);
}
