/*
 * server_int.h - the server's state, shared by its role files only (not an
 * interface for anything outside transport/server*.c):
 *   server.c        lifecycle: options, bind, run, shutdown, destroy
 *   server_event.c  the event threads and the per-call state machine
 *   server_pool.c   the pools of threads for blocking handlers
 *   server_auth.c   metadata, protocol version, the caller's identity
 *   server_call.c   call records, batches, the peer count, the handler API
 * Calls go one way: server.c -> server_event.c -> server_pool.c ->
 * server_call.c, and server_event.c -> server_auth.c.
 */
#ifndef FEDC_TRANSPORT_SERVER_INT_H
#define FEDC_TRANSPORT_SERVER_INT_H

#include <grpc/grpc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

#define REQUESTS_PER_QUEUE 16 /* new calls a queue can take at once before gRPC holds them */
#define SWEEP_MS 100          /* how often each event thread looks for idle calls */
#define PEER_BUCKETS 4096
#define REFUSAL_STATUS_MS 1000 /* see refuse() in server_event.c */

enum { TAG_NEW = 1, TAG_CALL = 2 };
enum op_kind { OP_NONE = 0, OP_FIRST, OP_RECV, OP_SEND, OP_STATUS, OP_WAIT };

/* Calls in progress per caller identity ("role/name"): one caller may hold at
 * most max_calls_per_peer calls, so one identity cannot pile up stalled calls.
 * A hash table of the identities that have calls now. */
typedef struct peer_count {
  struct peer_count *next;
  int calls;
  char key[100];
} peer_count;

struct poller;
struct pool;

struct fc_scall {
  int tag_type; /* TAG_CALL: events carry fc_scall* or new_call* */
  fc_server *srv;
  struct poller *p;
  const fc_method *m;
  grpc_call *call;
  fc_peer peer;
  ProtobufCMessage *req;
  char method[128];
  char peer_key[100];
  int peer_counted;
  /* the one batch in flight */
  enum op_kind op;
  atomic_uint_fast64_t deadline_ms; /* 0 = none (monotonic ms) */
  atomic_int timed_out;
  grpc_op ops[6];
  grpc_byte_buffer *recv_bb, *send_bb;
  grpc_slice status_detail;
  int status_detail_set;
  grpc_metadata trailer; /* FC_RETRY_AFTER_MD_KEY, when set */
  int trailer_set;
  int close_cancelled;
  /* a blocking handler waiting for its batch */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int wait_done, wait_ok;
  /* call state */
  int blocking;        /* served by a pool thread */
  int sent_initial_md;
  int finished;        /* a status was queued (or the call is dead) */
  int dead;            /* async: a batch could not start; the current step's end releases (settle) */
  int short_status;    /* a refusal: its status batch gets REFUSAL_STATUS_MS */
  int stream_done;
  int released;
  uint64_t bytes_in, bytes_out;
  /* parked unary call (fc_scall_park): finished later from any thread */
  int parked;     /* set by the handler on the event thread */
  int stepping;   /* under mu: the event thread's step that parked it has not ended */
  size_t pending_n; /* under mu: a status whose batch the step's end starts (finished during the step) */
  /* async stream hooks */
  fc_msg_fn on_msg;
  fc_step_fn on_end, next;
  fc_done_fn on_done;
  void *hstate;
  int hooks_set;
  /* the event thread's list */
  struct fc_scall *prev_in_list, *next_in_list;
  struct fc_scall *next_in_queue; /* pool queue */
};

typedef struct new_call {
  int tag_type; /* TAG_NEW */
  struct poller *p;
  grpc_call *call;
  grpc_call_details det;
  grpc_metadata_array md;
} new_call;

struct poller {
  fc_server *srv;
  grpc_completion_queue *cq;
  pthread_t thread;
  int started;
  pthread_mutex_t mu; /* the list: a blocking pool thread may release a call */
  fc_scall *calls;
  int ncalls;
  int requests; /* request_call posts outstanding (event thread only) */
  uint64_t last_sweep;
};

struct pool {
  fc_server *srv;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  fc_scall *head, *tail;
  int stop;
  int nthreads;
  pthread_t *threads;
  int *started;
};

struct fc_server {
  grpc_server *server;
  grpc_completion_queue *shutdown_cq;
  fc_server_opts opts;
  char federation[64];
  int port;
  int npollers;
  struct poller *pollers;
  struct pool general, admin;
  atomic_int stopping;
  int shut_down;
  size_t max_recv_any;
  grpc_resource_quota *quota;
  pthread_mutex_t peers_mu;
  peer_count *peers[PEER_BUCKETS];
};

/* ---- server_call.c ---- */
uint64_t srv_mono_ms(void);
/* Count a call for peer `key`; 0 if the peer is at its limit (or no memory). */
int srv_peer_enter(fc_server *s, const char *key);
/* The core is done with the call: tell the handler, free everything. */
void srv_release(fc_scall *c);
/* Start the call's one batch (c->ops[0..n)), bounded by stream_idle_ms. */
int srv_start_batch(fc_scall *c, enum op_kind op, size_t n);
/* Queue the status (takes msg). Async: returns at once; blocking: waits. */
void srv_send_status(fc_scall *c, grpc_status_code code, const char *detail, grpc_byte_buffer *msg);
/* End of an async step: release a call that could not start its next batch. */
void srv_settle(fc_scall *c);
/* The step in which a handler parked c ended (fc_scall_park). */
void srv_park_step_end(fc_scall *c);
/* The message in c->recv_bb: 1 with *out, 0 end of stream, <0 status queued. */
int srv_take_message(fc_scall *c, ProtobufCMessage **out);
/* Fill a {[SEND_INITIAL_METADATA], RECV_MESSAGE} batch; returns the count. */
size_t srv_recv_ops(fc_scall *c);

/* ---- server_auth.c ---- */
/* Metadata `key` into out: 1 found, 0 absent, -1 does not fit. */
int srv_md_get(const grpc_metadata_array *md, const char *key, char *out, size_t outlen);
/* s made safe to quote: printable ASCII, others as '?', at most dlen-1 bytes. */
void srv_printable(const char *s, char *dst, size_t dlen);
/* Strict "<major>" or "<major>.<minor>": 0 ok, -1 malformed. */
int srv_parse_protocol_version(const char *s, unsigned *major, unsigned *minor);
/* Who is calling (fills c->peer): 0 ok, else -1 with a refusal text in why. */
int srv_authenticate(fc_scall *c, const grpc_metadata_array *md, char *why, size_t whylen);

/* ---- server_pool.c ---- */
void srv_pool_push(struct pool *pl, fc_scall *c);
int srv_pool_start(struct pool *pl, fc_server *s, int n);
/* Let the pool finish what is queued, then join it. */
void srv_pool_stop(struct pool *pl);

/* ---- server_event.c ---- */
/* An event thread (arg: its struct poller). */
void *srv_poller_main(void *arg);

#endif
