/*
 * runtime_resume.c - resumable transfers on the client (protocol 1.10,
 * issue 26): a model download or an update upload cut by the network goes on
 * from the last chunk the coordinator acknowledged, within the same round,
 * instead of starting over.
 *
 * Download: the stream receiver (transport/tensor_stream.h) keeps the bytes
 * received in the model buffer and their running SHA-256; a new FetchModel
 * names the offset (FetchModelRequest.start_offset), the coordinator sends
 * the header (echoing it) and the chunks from there; the digest of the whole
 * model is checked against the task's as for any download. At most
 * RT_RESUMES resumptions per fetch, after the usual backoff.
 * Upload: the coordinator keeps what arrived of a cut stream for our
 * identity and round; UploadOffset says how much (rt_upload_offset), and the
 * next UploadUpdate's header starts there (runtime.c, rt_upload). An old
 * coordinator answers UNIMPLEMENTED (upload) or ignores the offset and sends
 * the header with start_offset 0 (download): both mean "from the start".
 * May call: the transport and the runtime's internals (runtime_int.h).
 */
#include <stdio.h>
#include <string.h>

#include "client/runtime_int.h"
#include "common/clock.h"
#include "common/log.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/tensor_stream.h"

#define MOD "client"
#define RT_RESUMES 8

/* A failure the network caused: the stream may go on where it was cut. */
static int cut(int rc, const fc_status *st) {
  return (rc == FEDC_ERR_UNAVAILABLE || rc == FEDC_ERR_TIMEOUT) && !st->retry_after_ms;
}

int rt_fetch_resumable(fedc_client *c, const Fedc__V1__Task *t, const uint8_t *want, fc_model_spec *spec,
                       uint8_t **buf, uint64_t *cap, uint64_t *total, uint8_t sha[FC_SHA256_LEN], fc_signed *man,
                       fc_status *st) {
  fc_stream_rx s;
  fc_stream_rx_init(&s, c->o.max_model_bytes, want, 1);
  fc_stream_rx_into(&s, buf, cap, 1);
  Fedc__V1__FetchModelRequest req = FEDC__V1__FETCH_MODEL_REQUEST__INIT;
  req.version = t->model_version;
  int rc;
  for (int resumes = 0;; resumes++) {
    fc_ccall *call = NULL;
    rc = fc_ccall_start(c->ch, "/fedc.v1.Coordinator/FetchModel", FC_RPC_SERVER_STREAM, &req.base,
                        c->o.call_timeout_ms, &call, st);
    if (rc == FEDC_OK) rc = fc_tensor_stream_recv_call(&s, call, spec, NULL, total, sha, man, st);
    fc_ccall_destroy(call);
    if (rc == FEDC_OK || atomic_load(&c->stop)) break;
    if (req.start_offset && st->code == GRPC_STATUS_UNAVAILABLE && st->retry_after_ms) {
      /* Our cut stream still looks open at the coordinator (no FIN reached
       * it; it ends there after its stream_idle_ms): come back as told,
       * keeping the bytes, within the task's deadline. Not a resumption. */
      if (fc_now_ms() + st->retry_after_ms >= t->deadline_unix_ms || rt_nap(c, st->retry_after_ms)) break;
      resumes--;
      continue;
    }
    if (resumes >= RT_RESUMES) break;
    if (req.start_offset &&
        (st->code == GRPC_STATUS_OUT_OF_RANGE || rc == FEDC_ERR_HASH || rc == FEDC_ERR_PROTOCOL)) {
      /* The coordinator cannot start there (another chunk size since), or
       * its resumed stream does not continue the one cut (a restart with
       * another --chunk-bytes whose chunks still meet our offset; a digest
       * of the whole that fails after a resumption): from 0, once the bytes
       * kept are dropped. A whole download that fails its digest is final. */
      FC_WARN(MOD, "model download resume refused (%s): fetching it whole", st->detail);
      fc_stream_rx_free(&s);
      fc_stream_rx_init(&s, c->o.max_model_bytes, want, 1);
      fc_stream_rx_into(&s, buf, cap, 1);
      req.start_offset = 0;
      continue;
    }
    if (!cut(rc, st)) break;
    uint64_t have = fc_stream_rx_resume(&s);
    if (!have) break; /* nothing kept: the round loop fetches again, whole */
    FC_INFO(MOD, "model download cut after %llu of %llu bytes (%s): resuming there", (unsigned long long)have,
            (unsigned long long)s.rx.total, st->detail);
    req.start_offset = have;
    if (rt_nap(c, c->o.min_backoff_ms)) break;
  }
  fc_stream_rx_free(&s);
  return rc;
}

int rt_upload_offset(fedc_client *c, const Fedc__V1__Task *t, const uint8_t sha[FC_SHA256_LEN], uint64_t bytes,
                     uint64_t deadline, uint64_t *offset) {
  *offset = 0;
  Fedc__V1__UploadOffsetRequest req = FEDC__V1__UPLOAD_OFFSET_REQUEST__INIT;
  req.round = t->round;
  req.total_bytes = bytes;
  req.sha256.data = (uint8_t *)sha;
  req.sha256.len = FC_SHA256_LEN;
  req.chunk_bytes = c->o.chunk_bytes;
  for (;;) {
    ProtobufCMessage *resp = NULL;
    fc_status st;
    memset(&st, 0, sizeof st);
    int rc = fc_call_unary(c->ch, "/fedc.v1.Coordinator/UploadOffset", &req.base,
                           &fedc__v1__upload_offset_response__descriptor, &resp, c->o.call_timeout_ms, &st);
    if (rc == FEDC_OK) {
      const Fedc__V1__UploadOffsetResponse *r = (const Fedc__V1__UploadOffsetResponse *)resp;
      /* Only a chunk boundary inside the update can be ours to go on from. */
      if (r->offset < bytes && r->offset % c->o.chunk_bytes == 0) *offset = r->offset;
      FC_INFO(MOD, "upload offset for round %llu: %llu of %llu bytes kept (%s)", (unsigned long long)t->round,
              (unsigned long long)*offset, (unsigned long long)bytes, r->detail ? r->detail : "");
      protobuf_c_message_free_unpacked(resp, NULL);
      return FEDC_OK;
    }
    /* Our cut stream still looks open there: it keeps the bytes only once it
     * ends, so ask again when told (bounded by the round's deadline). */
    uint64_t now = fc_now_ms();
    if (st.code != GRPC_STATUS_UNAVAILABLE || !st.retry_after_ms || now + st.retry_after_ms >= deadline ||
        atomic_load(&c->stop))
      return rc; /* UNIMPLEMENTED (an older coordinator) and the rest: send it all */
    if (rt_nap(c, st.retry_after_ms)) return FEDC_ERR_STOPPED;
  }
}
