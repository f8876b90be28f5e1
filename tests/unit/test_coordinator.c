/*
 * test_coordinator.c - the coordinator service in-process (insecure loopback
 * test mode, identities from metadata), driven by raw protocol calls.
 *
 * Covered: an upload that is still streaming when its round ends is cut off
 * and frees its staging slot for the next round's uploads; an update whose
 * train_loss is NaN is refused (it would poison the round record); download
 * slots per identity (role and name); a state directory that stops taking
 * writes holds new rounds back with a growing backoff, then they resume;
 * stalled calls from many identities hold no thread (admins and an honest
 * client are served meanwhile).
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "common/clock.h"
#include "common/log.h"
#include "coordinator/coord_int.h" /* coord_tier_cfg_check */
#include "coordinator/coordinator.h"
#include "crypto/sha256.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"

#define NPARAM 1024

static char root[] = "/tmp/fedc-test-coordinator-XXXXXX";
static int seq;

static fc_model_spec model_spec(void) {
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  uint64_t shape[1] = {NPARAM};
  fc_model_spec_add(&spec, "w", 1, shape);
  return spec;
}

/* A coordinator whose model is one tensor of n zeros. */
static fc_coord *start_n(const fc_coord_cfg *cfg, uint64_t n) {
  float *init = calloc(n, sizeof *init);
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  fc_model_spec_add(&spec, "w", 1, &n);
  fc_coord *c = NULL;
  char err[400] = "";
  if (!init || fc_coord_start(cfg, &spec, init, &c, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "  coordinator start: %s\n", err);
    c = NULL;
  }
  free(init);
  return c;
}

static fc_coord *start(const fc_coord_cfg *cfg) { return start_n(cfg, NPARAM); }

static void base_cfg(fc_coord_cfg *cfg) {
  fc_coord_cfg_defaults(cfg);
  snprintf(cfg->listen, sizeof cfg->listen, "127.0.0.1:0");
  snprintf(cfg->state_dir, sizeof cfg->state_dir, "%s/state%d", root, seq++);
  cfg->insecure_for_testing = 1;
  cfg->threads = 4;
  cfg->engine.min_clients = 1;
  cfg->engine.min_updates = 1;
  cfg->engine.cohort_size = 2;
  cfg->engine.rounds = 0;
  cfg->engine.pickup_ms = 60000;
  cfg->engine.round_ms = 60000;
  cfg->engine.client_ttl_ms = 60000;
  cfg->engine.poll_ms = 50;
}

static fc_channel *channel(int port, const char *identity) {
  char target[64], err[400] = "";
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  fc_channel_opts o;
  fc_channel_opts_init(&o);
  o.target = target;
  o.insecure_for_testing = 1;
  o.insecure_identity = identity;
  fc_channel *ch = NULL;
  if (fc_channel_create(&o, &ch, err, sizeof err) != FEDC_OK) fprintf(stderr, "  channel: %s\n", err);
  return ch;
}

/* Check in (every 50 ms, up to timeout_ms) until the answer is TRAIN for a
 * round other than `not_round`. Returns the task's round, 0 on timeout. */
static uint64_t wait_task(fc_channel *ch, uint64_t not_round, int timeout_ms, uint64_t *version) {
  for (int waited = 0; waited < timeout_ms; waited += 50) {
    Fedc__V1__CheckInRequest req = FEDC__V1__CHECK_IN_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    fc_status st;
    if (fc_call_unary(ch, "/fedc.v1.Coordinator/CheckIn", &req.base, &fedc__v1__check_in_response__descriptor, &m,
                      5000, &st) == FEDC_OK) {
      Fedc__V1__CheckInResponse *r = (Fedc__V1__CheckInResponse *)m;
      uint64_t round = 0;
      if (r->action == FEDC__V1__CHECK_IN_RESPONSE__ACTION__TRAIN && r->task && r->task->round != not_round) {
        round = r->task->round;
        *version = r->task->model_version;
      }
      protobuf_c_message_free_unpacked(m, NULL);
      if (round) return round;
    }
    usleep(50 * 1000);
  }
  return 0;
}

typedef struct up_args {
  fc_channel *ch;
  uint64_t round, version;
  float loss;
  uint32_t chunk;   /* bytes per chunk */
  int gap_ms;       /* pause before each chunk */
  fc_status st;
  int rc;
} up_args;

/* Upload a zero delta for (round, version). */
static void *upload(void *arg) {
  up_args *a = arg;
  static const float zero[NPARAM];
  fc_model_spec spec = model_spec();
  uint8_t sha[FC_SHA256_LEN];
  fc_sha256(zero, sizeof zero, sha);
  fc_ccall *call = NULL;
  memset(&a->st, 0, sizeof a->st);
  a->rc = fc_ccall_start(a->ch, "/fedc.v1.Coordinator/UploadUpdate", FC_RPC_CLIENT_STREAM, NULL, 60000, &call,
                         &a->st);
  if (a->rc != FEDC_OK) return NULL;
  Fedc__V1__UpdateMeta meta = FEDC__V1__UPDATE_META__INIT;
  meta.round = a->round;
  meta.model_version = a->version;
  meta.num_examples = 10;
  meta.train_loss = a->loss;
  fc_pb_header h;
  fc_pb_header_build(&h, &spec, sizeof zero, sha, a->chunk);
  Fedc__V1__UploadMsg first = FEDC__V1__UPLOAD_MSG__INIT;
  first.meta = &meta;
  first.header = &h.h;
  a->rc = fc_ccall_send(call, &first.base, &a->st);
  for (uint64_t off = 0; a->rc == FEDC_OK && off < sizeof zero; off += a->chunk) {
    if (a->gap_ms) usleep((useconds_t)a->gap_ms * 1000);
    Fedc__V1__TensorChunk c = FEDC__V1__TENSOR_CHUNK__INIT;
    c.offset = off;
    c.data.data = (uint8_t *)zero + off;
    c.data.len = sizeof zero - off < a->chunk ? sizeof zero - off : a->chunk;
    Fedc__V1__UploadMsg m = FEDC__V1__UPLOAD_MSG__INIT;
    m.chunk = &c;
    a->rc = fc_ccall_send(call, &m.base, &a->st);
  }
  if (a->rc == FEDC_OK) {
    ProtobufCMessage *resp = NULL;
    a->rc = fc_ccall_close_and_recv(call, &fedc__v1__upload_response__descriptor, &resp, &a->st);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  }
  fc_ccall_destroy(call);
  return NULL;
}

/* One staging slot. Client a starts an upload in round 1 and trickles it
 * (a chunk every second, inside the per-message idle limit) far past the
 * round's deadline; the round is abandoned and round 2 starts. Client b's
 * upload in round 2 must get the slot: the stale upload cannot be committed
 * any more, so it must not keep holding it. */
static void test_upload_outliving_round(void) {
  fc_coord_cfg cfg;
  base_cfg(&cfg);
  cfg.upload_slots = 1;
  cfg.stream_idle_ms = 3000;
  cfg.engine.cohort_size = 2;
  cfg.engine.min_clients = 2;
  cfg.engine.round_ms = 1500;
  fc_coord *c = start(&cfg);
  CHECK(c != NULL);
  if (!c) return;
  int port = fc_coord_port(c);
  fc_channel *a = channel(port, "client/a"), *b = channel(port, "client/b");
  CHECK(a && b);
  uint64_t va = 0, vb = 0, ra = 0, rb = 0;
  /* Both must be live before a round starts (min_clients 2): check in once. */
  if (a && b) {
    Fedc__V1__CheckInRequest req = FEDC__V1__CHECK_IN_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    fc_status st;
    if (fc_call_unary(b, "/fedc.v1.Coordinator/CheckIn", &req.base, &fedc__v1__check_in_response__descriptor, &m,
                      5000, &st) == FEDC_OK)
      protobuf_c_message_free_unpacked(m, NULL);
    ra = wait_task(a, 0, 5000, &va);
  }
  CHECK(ra != 0);
  if (ra) {
    /* 4 chunks x 1 s = 4 s (chunks below 1 KiB would be refused outright). */
    up_args slow = {a, ra, va, 0.5f, 1024, 1000, {0}, 0};
    pthread_t th;
    pthread_create(&th, NULL, upload, &slow);
    /* b ignores round ra; it waits for the next one (after ra's deadline). */
    rb = wait_task(b, ra, 8000, &vb);
    CHECK(rb > ra);
    if (rb) {
      up_args fast = {b, rb, vb, 0.5f, 4096, 0, {0}, 0};
      upload(&fast);
      if (fast.rc != FEDC_OK) fprintf(stderr, "  round %llu upload: %s\n", (unsigned long long)rb, fast.st.detail);
      CHECK_EQ_INT(fast.rc, FEDC_OK);
    }
    pthread_join(th, NULL);
    /* The stale upload is refused (its round is over), never accepted. */
    CHECK(slow.rc != FEDC_OK);
    CHECK_EQ_INT(slow.st.code, GRPC_STATUS_DEADLINE_EXCEEDED);
  }
  fc_channel_destroy(a);
  fc_channel_destroy(b);
  fc_coord_stop(c, 0);
}

static int count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  int n = 0, ch;
  while ((ch = fgetc(f)) != EOF) n += ch == '\n';
  fclose(f);
  return n;
}

/* train_loss comes off the wire: a NaN must not be averaged into the round's
 * record (jansson cannot write NaN, so the round would vanish from
 * rounds.jsonl). The update is refused; a proper one then completes the round. */
static void test_nan_loss(void) {
  fc_coord_cfg cfg;
  base_cfg(&cfg);
  cfg.engine.cohort_size = 1;
  cfg.engine.rounds = 1;
  fc_coord *c = start(&cfg);
  CHECK(c != NULL);
  if (!c) return;
  fc_channel *a = channel(fc_coord_port(c), "client/a");
  CHECK(a != NULL);
  uint64_t v = 0, r = a ? wait_task(a, 0, 5000, &v) : 0;
  CHECK(r != 0);
  if (r) {
    up_args bad = {a, r, v, NAN, 4096, 0, {0}, 0};
    upload(&bad);
    CHECK(bad.rc != FEDC_OK);
    CHECK_EQ_INT(bad.st.code, GRPC_STATUS_INVALID_ARGUMENT);
    up_args inf = {a, r, v, INFINITY, 4096, 0, {0}, 0};
    upload(&inf);
    CHECK_EQ_INT(inf.st.code, GRPC_STATUS_INVALID_ARGUMENT);
    up_args good = {a, r, v, 0.25f, 4096, 0, {0}, 0};
    upload(&good);
    CHECK_EQ_INT(good.rc, FEDC_OK);
    for (int i = 0; i < 100 && !fc_coord_done(c); i++) usleep(50 * 1000);
    CHECK(fc_coord_done(c));
  }
  char path[700];
  snprintf(path, sizeof path, "%s/rounds.jsonl", cfg.state_dir);
  /* The record is written after "done" (store writes run outside the lock). */
  for (int i = 0; i < 100 && count_lines(path) < 1; i++) usleep(50 * 1000);
  CHECK_EQ_INT(count_lines(path), 1);
  fc_channel_destroy(a);
  fc_coord_stop(c, 0);
}

typedef struct slow_reader {
  fc_ccall *calls[2];
  int rounds;
} slow_reader;

/* Read one message of each stream every 800 ms (inside the idle limit). */
static void *read_slowly(void *arg) {
  slow_reader *r = arg;
  for (int i = 0; i < r->rounds; i++) {
    usleep(800 * 1000);
    for (int k = 0; k < 2; k++) {
      ProtobufCMessage *m = NULL;
      fc_status st;
      if (r->calls[k] && fc_ccall_recv(r->calls[k], &fedc__v1__tensor_stream_msg__descriptor, &m, &st) == 1)
        protobuf_c_message_free_unpacked(m, NULL);
    }
  }
  return NULL;
}

/* One whole model download (FetchModel or GetModel), discarded. */
static int download_whole(fc_channel *ch, const char *method, const ProtobufCMessage *req, fc_status *st) {
  fc_ccall *call = NULL;
  int rc = fc_ccall_start(ch, method, FC_RPC_SERVER_STREAM, req, 20000, &call, st);
  if (rc != FEDC_OK) return rc;
  fc_model_spec spec;
  float *w = NULL;
  uint64_t total = 0;
  rc = fc_tensor_stream_recv(call, 1ull << 30, NULL, &spec, &w, &total, NULL, st);
  free(w);
  fc_ccall_destroy(call);
  return rc;
}

/* Download slots are few (they pin send buffers). One client opening several
 * model downloads and reading them slowly must not take every slot: another
 * client's download goes through. */
static void test_download_slots_per_client(void) {
  fc_coord_cfg cfg;
  base_cfg(&cfg);
  cfg.download_slots = 2;
  cfg.stream_idle_ms = 1500;
  cfg.engine.min_clients = 100; /* no rounds: only downloads */
  fc_coord *c = start_n(&cfg, 4u << 20); /* 16 MiB: far more than the stream windows */
  CHECK(c != NULL);
  if (!c) return;
  int port = fc_coord_port(c);
  fc_channel *a = channel(port, "client/a"), *b = channel(port, "client/b");
  CHECK(a && b);
  if (a && b) {
    slow_reader r = {{NULL, NULL}, 5};
    Fedc__V1__FetchModelRequest req = FEDC__V1__FETCH_MODEL_REQUEST__INIT;
    fc_status st;
    for (int k = 0; k < 2; k++) {
      if (fc_ccall_start(a, "/fedc.v1.Coordinator/FetchModel", FC_RPC_SERVER_STREAM, &req.base, 20000, &r.calls[k],
                         &st) != FEDC_OK)
        continue;
      ProtobufCMessage *m = NULL;
      if (fc_ccall_recv(r.calls[k], &fedc__v1__tensor_stream_msg__descriptor, &m, &st) == 1)
        protobuf_c_message_free_unpacked(m, NULL);
    }
    pthread_t th;
    pthread_create(&th, NULL, read_slowly, &r);
    int rc = download_whole(b, "/fedc.v1.Coordinator/FetchModel", &req.base, &st);
    if (rc != FEDC_OK) fprintf(stderr, "  download of b: %s\n", st.detail);
    CHECK_EQ_INT(rc, FEDC_OK);
    pthread_join(th, NULL);
    fc_ccall_destroy(r.calls[0]);
    fc_ccall_destroy(r.calls[1]);
  }
  fc_channel_destroy(a);
  fc_channel_destroy(b);
  fc_coord_stop(c, 0);
}

/* Admin "alice" fetching a model while a client certificate named "alice"
 * holds a download slot: slots are per role and name (issue 6 item 9). */
static void test_download_slot_role(void) {
  fc_coord_cfg cfg;
  base_cfg(&cfg);
  cfg.download_slots = 2;
  cfg.stream_idle_ms = 3000;
  cfg.engine.min_clients = 100; /* no rounds: only downloads */
  fc_coord *c = start_n(&cfg, 4u << 20); /* 16 MiB: the client's stream stays open */
  CHECK(c != NULL);
  if (!c) return;
  int port = fc_coord_port(c);
  fc_channel *client = channel(port, "client/alice"), *admin = channel(port, "admin/alice");
  CHECK(client && admin);
  if (client && admin) {
    Fedc__V1__FetchModelRequest req = FEDC__V1__FETCH_MODEL_REQUEST__INIT;
    fc_status st;
    fc_ccall *held = NULL;
    CHECK_EQ_INT(fc_ccall_start(client, "/fedc.v1.Coordinator/FetchModel", FC_RPC_SERVER_STREAM, &req.base, 20000,
                                &held, &st),
                 FEDC_OK);
    ProtobufCMessage *m = NULL;
    if (held && fc_ccall_recv(held, &fedc__v1__tensor_stream_msg__descriptor, &m, &st) == 1)
      protobuf_c_message_free_unpacked(m, NULL);
    Fedc__V1__GetModelRequest g = FEDC__V1__GET_MODEL_REQUEST__INIT;
    g.latest = 1;
    int rc = download_whole(admin, "/fedc.v1.Admin/GetModel", &g.base, &st);
    if (rc != FEDC_OK) fprintf(stderr, "  admin alice's download: %s\n", st.detail);
    CHECK_EQ_INT(rc, FEDC_OK);
    fc_ccall_destroy(held);
  }
  fc_channel_destroy(client);
  fc_channel_destroy(admin);
  fc_coord_stop(c, 0);
}

static void admin_status(fc_channel *ch, uint64_t *completed, uint64_t *abandoned, char *storage, size_t len) {
  Fedc__V1__StatusRequest req = FEDC__V1__STATUS_REQUEST__INIT;
  ProtobufCMessage *m = NULL;
  fc_status st;
  *completed = *abandoned = 0;
  storage[0] = 0;
  if (fc_call_unary(ch, "/fedc.v1.Admin/Status", &req.base, &fedc__v1__status_response__descriptor, &m, 5000,
                    &st) != FEDC_OK)
    return;
  Fedc__V1__StatusResponse *r = (Fedc__V1__StatusResponse *)m;
  *completed = r->rounds_completed;
  *abandoned = r->rounds_abandoned;
  snprintf(storage, len, "%s", r->storage_error ? r->storage_error : "");
  protobuf_c_message_free_unpacked(m, NULL);
}

/* The state directory stops taking writes (here: files may not grow past
 * 3000 bytes, so each 4 KiB model version fails with EFBIG, as a full disk
 * fails with ENOSPC). Rounds must not start and fail in a tight loop (it was
 * 60 rounds in 8 s, clients training for nothing): new rounds wait with a
 * growing backoff, status and the round record give the real reason, and
 * rounds resume once writes succeed (issue 6 item 5). */
static void test_storage_failure(void) {
  fc_coord_cfg cfg;
  base_cfg(&cfg);
  cfg.engine.cohort_size = 1;
  fc_coord *c = start(&cfg);
  CHECK(c != NULL);
  if (!c) return;
  int port = fc_coord_port(c);
  fc_channel *a = channel(port, "client/a"), *admin = channel(port, "admin/root");
  struct rlimit old, lim;
  getrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, SIG_IGN);
  lim = old;
  lim.rlim_cur = 3000;
  CHECK_EQ_INT(setrlimit(RLIMIT_FSIZE, &lim), 0);
  uint64_t completed = 0, abandoned = 0, last = 0;
  char storage[400] = "", seen[400] = "";
  /* 3.5 s of a client that uploads as soon as it is selected. */
  for (double t0 = fc_mono_s(); fc_mono_s() - t0 < 3.5;) {
    uint64_t v = 0, r = wait_task(a, last, 200, &v);
    if (r) {
      up_args up = {a, r, v, 0.5f, 4096, 0, {0}, 0};
      upload(&up);
      last = r;
    }
    admin_status(admin, &completed, &abandoned, storage, sizeof storage);
    if (storage[0]) snprintf(seen, sizeof seen, "%s", storage);
  }
  CHECK_EQ_INT(completed, 0);
  /* 1 s then 2 s of backoff: at most 3 rounds, not dozens. */
  if (abandoned < 1 || abandoned > 3) fprintf(stderr, "  %llu rounds abandoned in 3.5 s\n", (unsigned long long)abandoned);
  CHECK(abandoned >= 1 && abandoned <= 3);
  CHECK(strstr(seen, strerror(EFBIG)) != NULL); /* the real reason, not "I/O error" */
  char path[700], line[1024] = "";
  snprintf(path, sizeof path, "%s/rounds.jsonl", cfg.state_dir);
  FILE *f = fopen(path, "r");
  if (f) {
    CHECK(fgets(line, sizeof line, f) != NULL);
    fclose(f);
  }
  CHECK(strstr(line, "\"abandoned\"") && strstr(line, strerror(EFBIG)));
  /* Space again: within the backoff (<= 4 s) a round completes. */
  CHECK_EQ_INT(setrlimit(RLIMIT_FSIZE, &old), 0);
  for (double t0 = fc_mono_s(); fc_mono_s() - t0 < 10 && completed == 0;) {
    uint64_t v = 0, r = wait_task(a, last, 200, &v);
    if (r) {
      up_args up = {a, r, v, 0.5f, 4096, 0, {0}, 0};
      upload(&up);
      last = r;
    }
    admin_status(admin, &completed, &abandoned, storage, sizeof storage);
  }
  CHECK_EQ_INT(completed, 1);
  CHECK_EQ_INT(storage[0], 0);
  /* Records are written after the status changes (outside the lock). */
  for (int i = 0; i < 100 && count_lines(path) < (int)(abandoned + completed); i++) usleep(50 * 1000);
  CHECK_EQ_INT(count_lines(path), (int)(abandoned + completed)); /* no record lost */
  fc_channel_destroy(a);
  fc_channel_destroy(admin);
  fc_coord_stop(c, 0);
}

/* A selected client that trickles its upload (1 KiB a second) is cut off
 * once the grace (stream_idle_ms) is over and it averages less than
 * min_transfer_bps: it must not hold a staging slot for the whole round. */
static void test_slow_upload(void) {
  fc_coord_cfg cfg;
  base_cfg(&cfg);
  cfg.engine.cohort_size = 1;
  cfg.stream_idle_ms = 1500;
  cfg.min_transfer_bps = 100000;
  fc_coord *c = start(&cfg);
  CHECK(c != NULL);
  if (!c) return;
  fc_channel *a = channel(fc_coord_port(c), "client/a");
  uint64_t v = 0, r = a ? wait_task(a, 0, 5000, &v) : 0;
  CHECK(r != 0);
  if (r) {
    up_args slow = {a, r, v, 0.5f, 1024, 1000, {0}, 0};
    upload(&slow);
    CHECK(slow.rc != FEDC_OK);
    CHECK_EQ_INT(slow.st.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    if (!strstr(slow.st.detail, "too slow")) fprintf(stderr, "  slow upload: %s\n", slow.st.detail);
    CHECK(strstr(slow.st.detail, "too slow") != NULL);
  }
  fc_channel_destroy(a);
  fc_coord_stop(c, 0);
}

/* Upload a zero delta of n parameters in 1 MiB chunks; returns the rc. */
static int upload_zeros(fc_channel *ch, uint64_t round, uint64_t version, uint64_t n, fc_status *st) {
  float *zero = calloc(n, sizeof *zero);
  if (!zero) return FEDC_ERR_NOMEM;
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  fc_model_spec_add(&spec, "w", 1, &n);
  uint8_t sha[FC_SHA256_LEN];
  uint64_t total = n * sizeof *zero;
  fc_sha256(zero, total, sha);
  fc_ccall *call = NULL;
  int rc = fc_ccall_start(ch, "/fedc.v1.Coordinator/UploadUpdate", FC_RPC_CLIENT_STREAM, NULL, 30000, &call, st);
  Fedc__V1__UpdateMeta meta = FEDC__V1__UPDATE_META__INIT;
  meta.round = round;
  meta.model_version = version;
  meta.num_examples = 10;
  meta.train_loss = 0.5f;
  fc_pb_header h;
  fc_pb_header_build(&h, &spec, total, sha, 1u << 20);
  Fedc__V1__UploadMsg first = FEDC__V1__UPLOAD_MSG__INIT;
  first.meta = &meta;
  first.header = &h.h;
  if (rc == FEDC_OK) rc = fc_ccall_send(call, &first.base, st);
  for (uint64_t off = 0; rc == FEDC_OK && off < total; off += 1u << 20) {
    Fedc__V1__TensorChunk c = FEDC__V1__TENSOR_CHUNK__INIT;
    c.offset = off;
    c.data.data = (uint8_t *)zero + off;
    c.data.len = total - off < (1u << 20) ? total - off : (1u << 20);
    Fedc__V1__UploadMsg m = FEDC__V1__UPLOAD_MSG__INIT;
    m.chunk = &c;
    rc = fc_ccall_send(call, &m.base, st);
  }
  if (rc == FEDC_OK) {
    ProtobufCMessage *resp = NULL;
    rc = fc_ccall_close_and_recv(call, &fedc__v1__upload_response__descriptor, &resp, st);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  }
  fc_ccall_destroy(call);
  free(zero);
  return rc;
}

/* Issue 7: 8 client identities each hold 3 UploadUpdate calls that never send
 * a first message and 1 FetchModel they never read (32 stalled calls; the old
 * design had 16 worker threads, each held by one such call for
 * stream_idle_ms). With 2 event threads, an admin's Status answers, and an
 * honest client fetches the 4 MiB model, uploads, and its round completes,
 * all while the stalled calls are still open. */
static void test_stalled_peers(void) {
  fc_coord_cfg cfg;
  base_cfg(&cfg);
  cfg.threads = 2;
  cfg.stream_idle_ms = 20000;
  cfg.engine.cohort_size = 1;
  cfg.engine.rounds = 1;
  uint64_t n = 1u << 20;
  fc_coord *c = start_n(&cfg, n);
  CHECK(c != NULL);
  if (!c) return;
  int port = fc_coord_port(c);
  enum { ATTACKERS = 8, STALLS = 3 };
  fc_channel *evil[ATTACKERS] = {0};
  fc_ccall *held[ATTACKERS][STALLS + 1];
  memset(held, 0, sizeof held);
  fc_status st;
  for (int i = 0; i < ATTACKERS; i++) {
    char id[32];
    snprintf(id, sizeof id, "client/evil%d", i);
    evil[i] = channel(port, id);
    for (int k = 0; evil[i] && k < STALLS; k++)
      fc_ccall_start(evil[i], "/fedc.v1.Coordinator/UploadUpdate", FC_RPC_CLIENT_STREAM, NULL, 30000, &held[i][k], &st);
    Fedc__V1__FetchModelRequest req = FEDC__V1__FETCH_MODEL_REQUEST__INIT;
    req.latest = 1;
    if (evil[i])
      fc_ccall_start(evil[i], "/fedc.v1.Coordinator/FetchModel", FC_RPC_SERVER_STREAM, &req.base, 30000,
                     &held[i][STALLS], &st);
  }
  usleep(300 * 1000); /* let the server take every stalled call */
  fc_channel *admin = channel(port, "admin/root"), *honest = channel(port, "client/honest");
  double t0 = fc_mono_s();
  Fedc__V1__StatusRequest sreq = FEDC__V1__STATUS_REQUEST__INIT;
  ProtobufCMessage *m = NULL;
  CHECK_EQ_INT(fc_call_unary(admin, "/fedc.v1.Admin/Status", &sreq.base, &fedc__v1__status_response__descriptor, &m,
                             3000, &st),
               FEDC_OK);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  uint64_t v = 0, r = wait_task(honest, 0, 5000, &v);
  CHECK(r != 0);
  if (r) {
    Fedc__V1__FetchModelRequest req = FEDC__V1__FETCH_MODEL_REQUEST__INIT;
    req.version = v;
    int rc = download_whole(honest, "/fedc.v1.Coordinator/FetchModel", &req.base, &st);
    if (rc != FEDC_OK) fprintf(stderr, "  honest download: %s\n", st.detail);
    CHECK_EQ_INT(rc, FEDC_OK);
    rc = upload_zeros(honest, r, v, n, &st);
    if (rc != FEDC_OK) fprintf(stderr, "  honest upload: %s\n", st.detail);
    CHECK_EQ_INT(rc, FEDC_OK);
    for (int i = 0; i < 100 && !fc_coord_done(c); i++) usleep(50 * 1000);
    CHECK(fc_coord_done(c));
  }
  fprintf(stderr, "  admin status, honest fetch + upload + round with %d stalled calls: %.2f s\n",
          ATTACKERS * (STALLS + 1), fc_mono_s() - t0);
  for (int i = 0; i < ATTACKERS; i++) {
    for (int k = 0; k <= STALLS; k++) fc_ccall_destroy(held[i][k]);
    fc_channel_destroy(evil[i]);
  }
  fc_channel_destroy(admin);
  fc_channel_destroy(honest);
  fc_coord_stop(c, 0);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* One identity may hold at most 4 workers (transport's max_calls_per_peer):
 * client a opens 5 upload streams and stalls before the first message; the
 * 5th is refused RESOURCE_EXHAUSTED at once, and client b is served while a's
 * four streams still wait. */
static void test_calls_per_peer(void) {
  fc_coord_cfg cfg;
  base_cfg(&cfg);
  cfg.threads = 8;
  cfg.stream_idle_ms = 5000;
  fc_coord *c = start(&cfg);
  CHECK(c != NULL);
  if (!c) return;
  int port = fc_coord_port(c);
  fc_channel *a = channel(port, "client/a"), *b = channel(port, "client/b");
  fc_ccall *stalled[5] = {0};
  fc_status st;
  for (int i = 0; i < 5 && a; i++) {
    CHECK_EQ_INT(fc_ccall_start(a, "/fedc.v1.Coordinator/UploadUpdate", FC_RPC_CLIENT_STREAM, NULL, 10000, &stalled[i],
                                &st),
                 FEDC_OK);
    usleep(100000); /* let the server take each call in order */
  }
  if (a && stalled[4]) {
    ProtobufCMessage *resp = NULL;
    memset(&st, 0, sizeof st);
    fc_ccall_close_and_recv(stalled[4], &fedc__v1__upload_response__descriptor, &resp, &st);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    CHECK_EQ_INT(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    CHECK(strstr(st.detail, "too many concurrent calls from client/a") != NULL);
  }
  if (b) {
    Fedc__V1__CheckInRequest req = FEDC__V1__CHECK_IN_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    CHECK_EQ_INT(fc_call_unary(b, "/fedc.v1.Coordinator/CheckIn", &req.base, &fedc__v1__check_in_response__descriptor,
                               &m, 2000, &st),
                 FEDC_OK);
    if (m) protobuf_c_message_free_unpacked(m, NULL);
  }
  for (int i = 0; i < 5; i++) fc_ccall_destroy(stalled[i]);
  fc_channel_destroy(a);
  fc_channel_destroy(b);
  fc_coord_stop(c, 0);
}

/* Aggregator tier (issue 23): the Aggregator service is for role aggregator
 * only, an aggregator may not call the clients' methods, and without
 * --aggregator-tier (or without etcd) there is no tier to serve. */
static void test_aggregator_roles(void) {
  fc_coord_cfg cfg;
  base_cfg(&cfg);
  char err[400] = "";
  fc_coord *c = NULL;
  cfg.agg_tier = 1; /* no cfg.leader: refused in one sentence */
  CHECK_EQ_INT(fc_coord_start(&cfg, NULL, NULL, &c, err, sizeof err), FEDC_ERR_INVALID);
  CHECK(strstr(err, "--aggregator-tier cannot be combined with a coordinator without --etcd") != NULL);
  /* With etcd, what this slice cannot run through aggregators: one sentence each. */
  static const char *const no[] = {"compressed uploads", "--mode async", "compressed uploads"};
  for (int k = 0; k < 3; k++) {
    base_cfg(&cfg);
    cfg.agg_tier = 1;
    cfg.leader = (struct fc_leader *)&cfg; /* only its presence is checked here */
    CHECK_EQ_INT(coord_tier_cfg_check(&cfg, err, sizeof err), FEDC_OK);
    CHECK(!coord_tier_relay(&cfg)); /* FedAvg, anomaly scores observed: partial sums */
    /* Secure aggregation runs through the tier (1.16), with a robust rule over its buckets too. */
    cfg.engine.secagg = k == 0;
    if (k == 0) {
      snprintf(cfg.aggregator, sizeof cfg.aggregator, "median");
      CHECK_EQ_INT(coord_tier_cfg_check(&cfg, err, sizeof err), FEDC_OK);
      CHECK(!coord_tier_relay(&cfg)); /* the rule runs over the buckets' means: masked sums */
      cfg.upload_bits = 8; /* a narrow SecAgg ring: not through aggregators */
    }
    if (k == 1) {
      /* A robust rule without SecAgg, an anomaly policy that acts, DP: each
       * update relayed whole (1.17), or summed under uniform weights (1.16). */
      snprintf(cfg.aggregator, sizeof cfg.aggregator, "median");
      CHECK_EQ_INT(coord_tier_cfg_check(&cfg, err, sizeof err), FEDC_OK);
      CHECK(coord_tier_relay(&cfg));
      snprintf(cfg.aggregator, sizeof cfg.aggregator, "fedavg");
      snprintf(cfg.anomaly_policy, sizeof cfg.anomaly_policy, "exclude");
      CHECK_EQ_INT(coord_tier_cfg_check(&cfg, err, sizeof err), FEDC_OK);
      CHECK(coord_tier_relay(&cfg));
      cfg.dp_noise_multiplier = 1;
      CHECK_EQ_INT(coord_tier_cfg_check(&cfg, err, sizeof err), FEDC_OK);
      cfg.engine.async = 1;
    }
    if (k == 2) cfg.upload_bits = 8;
    CHECK_EQ_INT(coord_tier_cfg_check(&cfg, err, sizeof err), FEDC_ERR_INVALID);
    CHECK(strstr(err, no[k]) != NULL);
  }
  base_cfg(&cfg);
  c = start(&cfg);
  CHECK(c != NULL);
  if (!c) return;
  fc_channel *cl = channel(fc_coord_port(c), "client/x"), *ag = channel(fc_coord_port(c), "aggregator/g");
  Fedc__V1__AggRoundRequest rq = FEDC__V1__AGG_ROUND_REQUEST__INIT;
  Fedc__V1__CheckInRequest ci = FEDC__V1__CHECK_IN_REQUEST__INIT;
  ProtobufCMessage *m = NULL;
  fc_status st;
  memset(&st, 0, sizeof st);
  CHECK(fc_call_unary(cl, "/fedc.v1.Aggregator/AggregatorRound", &rq.base, &fedc__v1__agg_round_response__descriptor,
                      &m, 3000, &st) != FEDC_OK);
  CHECK_EQ_INT(st.code, GRPC_STATUS_PERMISSION_DENIED);
  CHECK(fc_call_unary(ag, "/fedc.v1.Coordinator/CheckIn", &ci.base, &fedc__v1__check_in_response__descriptor, &m,
                      3000, &st) != FEDC_OK);
  CHECK_EQ_INT(st.code, GRPC_STATUS_PERMISSION_DENIED);
  CHECK(fc_call_unary(ag, "/fedc.v1.Aggregator/AggregatorRound", &rq.base, &fedc__v1__agg_round_response__descriptor,
                      &m, 3000, &st) != FEDC_OK);
  CHECK_EQ_INT(st.code, GRPC_STATUS_FAILED_PRECONDITION);
  CHECK(strstr(st.detail, "no aggregator tier") != NULL);
  fc_channel_destroy(cl);
  fc_channel_destroy(ag);
  fc_coord_stop(c, 0);
}

int main(void) {
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return 1;
  }
  if (!getenv("FEDC_LOG")) fc_log_set_level(FC_LOG_ERROR);
  fc_transport_init();
  struct {
    const char *name;
    void (*fn)(void);
  } tests[] = {
      {"upload_outliving_round", test_upload_outliving_round},
      {"calls_per_peer", test_calls_per_peer},
      {"nan_loss", test_nan_loss},
      {"download_slots_per_client", test_download_slots_per_client},
      {"download_slot_role", test_download_slot_role},
      {"storage_failure", test_storage_failure},
      {"stalled_peers", test_stalled_peers},
      {"slow_upload", test_slow_upload},
      {"aggregator_roles", test_aggregator_roles},
  };
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    int before = check_failed;
    tests[i].fn();
    fprintf(stderr, "%s: %s\n", tests[i].name, check_failed == before ? "ok" : "FAILED");
  }
  fc_transport_shutdown();
  nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  return CHECK_DONE();
}
