/*
 * test_transport_park.c - parked unary calls (fc_scall_park) over real mutual
 * TLS on 127.0.0.1, against the test service's Park method (its handler
 * parks the call; a thread of its own answers it N ms later):
 *   - answered later from another thread: the reply arrives after N ms, with
 *     the finisher's contents;
 *   - finished at once by the other thread, racing the end of the handler's
 *     step (N = 0), many times: every reply arrives;
 *   - 40 parked at once over 4 channels: no event thread is held, so a plain
 *     Echo on the same server answers at once meanwhile;
 *   - the caller gives up (deadline) before the answer: its status batch then
 *     fails and the call is released (the server shuts down cleanly, and
 *     under ASan leaks nothing);
 * and the server shuts down after every parked call was finished.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "tests/support/testsvc.h"
#include "transport/transport.h"

static char root[] = "/tmp/fedc-park-XXXXXX";
static int port;

static double now_s(void) { return ts_now(); }

static int call(fc_channel *ch, const char *path, uint64_t num, int deadline_ms, uint32_t *reply, fc_status *st) {
  Fedc__V1__CheckInRequest req = FEDC__V1__CHECK_IN_REQUEST__INIT;
  req.num_examples = num;
  ProtobufCMessage *resp = NULL;
  int rc = fc_call_unary(ch, path, &req.base, &fedc__v1__check_in_response__descriptor, &resp, deadline_ms, st);
  if (rc == FEDC_OK) {
    if (reply) *reply = ((Fedc__V1__CheckInResponse *)resp)->retry_after_ms;
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  return rc;
}

static void wait_parked_done(void) {
  for (int i = 0; i < 500 && ts_parked_open() > 0; i++) usleep(10000);
  CHECK_EQ_INT(ts_parked_open(), 0);
}

static void test_later(void) {
  fc_channel *ch = ts_channel(root, port, "client", "alice");
  CHECK(ch != NULL);
  if (!ch) return;
  fc_status st;
  uint32_t reply = 0;
  double t0 = now_s();
  CHECK_EQ_INT(call(ch, TS_PARK, 150, 5000, &reply, &st), FEDC_OK);
  double dt = now_s() - t0;
  CHECK_EQ_INT(reply, 150);
  CHECK(dt >= 0.149); /* a sleep of 150 ms came before the answer: the finisher's, not the handler's */
  printf("  parked 150 ms: answered after %.3f s\n", dt);
  fc_channel_destroy(ch);
}

static void test_race(void) {
  fc_channel *ch = ts_channel(root, port, "client", "alice");
  CHECK(ch != NULL);
  if (!ch) return;
  int ok = 0;
  for (int i = 0; i < 200; i++) {
    fc_status st;
    uint32_t reply = 7;
    ok += call(ch, TS_PARK, 0, 5000, &reply, &st) == FEDC_OK && reply == 0;
  }
  CHECK_EQ_INT(ok, 200);
  fc_channel_destroy(ch);
  wait_parked_done();
}

struct bg {
  fc_channel *ch;
  int ok;
  pthread_t t;
};

static void *bg_one(void *arg) {
  struct bg *b = arg;
  fc_status st;
  uint32_t reply = 0;
  b->ok = call(b->ch, TS_PARK, TS_PARK_GATED, 30000, &reply, &st) == FEDC_OK && reply == TS_PARK_GATED;
  return NULL;
}

static void test_many(void) {
  /* 12 calls parked at once on a server with ONE event thread, held until the gate opens. */
  enum { NCH = 4, N = 12 };
  struct bg b[N];
  fc_channel *ch[NCH];
  for (int i = 0; i < NCH; i++) {
    ch[i] = ts_channel(root, port, "client", "alice");
    CHECK(ch[i] != NULL);
    if (!ch[i]) return;
  }
  ts_park_gate(0);
  for (int i = 0; i < N; i++) {
    b[i].ch = ch[i % NCH];
    b[i].ok = 0;
    pthread_create(&b[i].t, NULL, bg_one, &b[i]);
  }
  for (int i = 0; i < 1000 && ts_parked_open() < N; i++) usleep(10000);
  CHECK_EQ_INT(ts_parked_open(), N);
  /* All are parked and none answered: the server's one event thread is
   * free, so an Echo on the same server is answered now. (Were a parked
   * call to hold its thread, this would wait for the gate and time out.) */
  fc_channel *e = ts_channel(root, port, "client", "alice");
  fc_status st;
  uint32_t reply = 0;
  CHECK(e && call(e, TS_ECHO, 9, 5000, &reply, &st) == FEDC_OK && reply == 9);
  CHECK_EQ_INT(ts_parked_open(), N);
  fc_channel_destroy(e);
  ts_park_gate(1);
  int ok = 0;
  for (int i = 0; i < N; i++) {
    pthread_join(b[i].t, NULL);
    ok += b[i].ok;
  }
  CHECK_EQ_INT(ok, N);
  printf("  %d parked at once, an Echo answered meanwhile, all %d answered once released\n", N, ok);
  for (int i = 0; i < NCH; i++) fc_channel_destroy(ch[i]);
  wait_parked_done();
}

static void test_caller_gone(void) {
  fc_channel *ch = ts_channel(root, port, "client", "alice");
  CHECK(ch != NULL);
  if (!ch) return;
  fc_status st;
  /* The caller waits 100 ms; the answer comes at 400 ms to a call that is gone. */
  CHECK(call(ch, TS_PARK, 400, 100, NULL, &st) != FEDC_OK);
  CHECK_EQ_INT(st.code, GRPC_STATUS_DEADLINE_EXCEEDED);
  fc_channel_destroy(ch);
  wait_parked_done();
  /* The server still serves. */
  ch = ts_channel(root, port, "client", "alice");
  uint32_t reply = 0;
  CHECK(ch && call(ch, TS_PARK, 10, 5000, &reply, &st) == FEDC_OK && reply == 10);
  fc_channel_destroy(ch);
  wait_parked_done();
}

int main(void) {
  if (!mkdtemp(root)) return 2;
  if (ts_pki(root) != FEDC_OK) return 2;
  /* One event thread, and room for 16 calls of one identity. */
  fc_server_opts o;
  fc_server_opts_init(&o);
  o.threads = 1;
  o.max_calls_per_peer = 16;
  fc_server *s = ts_start_with(root, &o);
  if (!s) return 2;
  port = fc_server_port(s);
  test_later();
  test_race();
  test_many();
  test_caller_gone();
  ts_stop(s, 2000); /* every parked call was finished: the event thread can leave */
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  return CHECK_DONE();
}
