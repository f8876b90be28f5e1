/*
 * util.c - small pieces shared by the server and channel: roles, loopback
 * test, deadlines, protobuf <-> byte buffer, process-wide init.
 */
#include <arpa/inet.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <grpc/support/log.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <stdio.h>
#include <dlfcn.h>
#include <string.h>

#include "common/log.h"
#include "fedc/error.h"
#include "transport/transport.h"
#include "transport/transport_int.h"

const char *fc_role_name(int role) {
  switch (role) {
  case FC_ROLE_CLIENT: return "client";
  case FC_ROLE_ADMIN: return "admin";
  case FC_ROLE_COORDINATOR: return "coordinator";
  case FC_ROLE_AGGREGATOR: return "aggregator";
  default: return "none";
  }
}

int fc_role_parse(const char *s) {
  if (!s) return FC_ROLE_NONE;
  if (strcmp(s, "client") == 0) return FC_ROLE_CLIENT;
  if (strcmp(s, "admin") == 0) return FC_ROLE_ADMIN;
  if (strcmp(s, "coordinator") == 0) return FC_ROLE_COORDINATOR;
  if (strcmp(s, "aggregator") == 0) return FC_ROLE_AGGREGATOR;
  return FC_ROLE_NONE;
}

int fc_addr_is_loopback(const char *addr) {
  char host[256];
  if (!addr) return 0;
  if (strncmp(addr, "ipv4:", 5) == 0) addr += 5;
  else if (strncmp(addr, "ipv6:", 5) == 0)
    addr += 5;
  else if (strncmp(addr, "dns:", 4) == 0)
    addr += 4;
  if (addr[0] == '[') {
    const char *end = strchr(addr, ']');
    if (!end || (size_t)(end - addr - 1) >= sizeof host) return 0;
    memcpy(host, addr + 1, (size_t)(end - addr - 1));
    host[end - addr - 1] = 0;
  } else {
    const char *colon = strrchr(addr, ':');
    size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
    if (n >= sizeof host) return 0;
    memcpy(host, addr, n);
    host[n] = 0;
  }
  if (strcmp(host, "localhost") == 0) return 1;
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return 0;
}

gpr_timespec fc_deadline_ms(int ms) {
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

grpc_byte_buffer *fc_pack_message(const ProtobufCMessage *msg) {
  size_t n = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) return NULL;
  protobuf_c_message_pack(msg, buf);
  grpc_slice s = grpc_slice_new(buf, n, free); /* the slice owns buf */
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

/* The unpacker's allocations, bounded: an empty submessage is 2 bytes on the
 * wire and 90 to 120 bytes unpacked (its struct, its pointer, the
 * unpacker's note of the field), so a message of nothing but empty repeated
 * entries (PartialMeta.updates, TensorHeader.tensors) unpacked to 48-60 x its
 * size, past any cap on its bytes: an aggregator's 20 MiB SubmitPartial
 * first message was ~1.2 GB, a client's 4 MiB UploadUpdate one ~200 MB.
 * Real messages stay under 13 x (the sparsest: an abandoned RoundRecord,
 * ~20 bytes for a 232-byte struct; a packed shape of 1-byte dims is 8 x).
 * A method whose requests are denser says so (fc_method.unpack_ratio: the
 * leader's SubmitPartial, whose first message may be 16 MiB, takes 8: its
 * 65,536 update records of the shortest names unpack to 5.3 x, a relayed
 * one to 1.5 x, and its header has at most 32 tensors).
 * malloc/free underneath, so protobuf_c_message_free_unpacked(m, NULL)
 * frees what this allocated. */
#define UNPACK_RATIO 24u
#define UNPACK_FLOOR (64u << 10)
typedef struct unpack_budget {
  size_t left;
  int over;
} unpack_budget;

static void *budget_alloc(void *data, size_t size) {
  unpack_budget *b = data;
  if (size > b->left) {
    b->over = 1;
    return NULL;
  }
  b->left -= size;
  return malloc(size ? size : 1);
}

static void budget_free(void *data, void *p) {
  (void)data;
  free(p);
}

int fc_unpack_message(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc, size_t cap, unsigned ratio,
                      ProtobufCMessage **out) {
  size_t len = grpc_byte_buffer_length(bb);
  if (len > cap) return FEDC_ERR_TOO_LARGE;
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb)) return FEDC_ERR_NOMEM;
  grpc_slice s = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  unpack_budget b = {UNPACK_FLOOR + (ratio ? ratio : UNPACK_RATIO) * len, 0};
  ProtobufCAllocator al = {budget_alloc, budget_free, &b};
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, &al, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
  grpc_slice_unref(s);
  if (!m) return b.over ? FEDC_ERR_TOO_LARGE : FEDC_ERR_PROTOCOL;
  *out = m;
  return FEDC_OK;
}

void fc_transport_init(void) { grpc_init(); }

int fc_transport_disable_deadlock_detection(void) {
  /* absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore), by
   * its mangled name in Debian 12's abseil (inline namespace debian3): a C
   * program cannot name it otherwise. Absent (another abseil build) -> 0. */
  void (*set_mode)(int) =
      (void (*)(int))dlsym(RTLD_DEFAULT, "_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE");
  if (!set_mode) return 0;
  set_mode(0); /* kIgnore */
  return 1;
}
void fc_transport_shutdown(void) { grpc_shutdown(); }

/* grpc_shutdown may finish its clean-up on another thread after returning,
 * so a short-lived process (`fedc status`) could exit while a gRPC executor
 * thread still held a handshake's SSL objects, which LeakSanitizer reported
 * now and then under load (test_async under ASan, 1 run in 3; 1 in 40 status
 * calls under load, 0 in 80 with this). Only the admin commands use it: a
 * long-lived process keeps grpc_shutdown, whose exit path is the tested one. */
void fc_transport_shutdown_wait(void) { grpc_shutdown_blocking(); }

/* gRPC's own log lines, routed into ours: its errors (e.g. a peer's failed
 * handshake) at `error_level`, everything else at debug. */
static int g_grpc_error_level = FC_LOG_WARN;

static _Thread_local char *g_capture;
static _Thread_local size_t g_capture_len;

void fc_grpc_log_capture(char *buf, size_t len) {
  g_capture = len ? buf : NULL;
  g_capture_len = len;
}

static void grpc_log_to_ours(gpr_log_func_args *a) {
  int level = a->severity == GPR_LOG_SEVERITY_ERROR && !g_capture ? g_grpc_error_level : FC_LOG_DEBUG;
  const char *os = g_capture && !g_capture[0] ? strstr(a->message, "os_error:\"") : NULL;
  if (os) {
    os += strlen("os_error:\"");
    snprintf(g_capture, g_capture_len, "%.*s", (int)strcspn(os, "\""), os);
  }
  const char *file = strrchr(a->file, '/');
  fc_log(level, "grpc", "%s (%s:%d)", a->message, file ? file + 1 : a->file, a->line);
}

void fc_transport_route_grpc_logs(int error_level) {
  g_grpc_error_level = error_level;
  gpr_set_log_function(grpc_log_to_ours);
}
