/*
 * fuzz_tensor_stream.c - what a client can send the coordinator's upload
 * handler: protobuf-c decoding of UploadMsg frames, then the header checks
 * (fc_chunk_rx_begin_pb against the expected spec) and chunk framing
 * (fc_chunk_rx_feed/end). Input: frames as [u16 little-endian length][bytes].
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "transport/tensor_stream.h"

static fc_model_spec expected(void) {
  fc_model_spec s;
  memset(&s, 0, sizeof s);
  uint64_t w[2] = {4, 8}, b[1] = {4};
  fc_model_spec_add(&s, "fc1.weight", 2, w);
  fc_model_spec_add(&s, "fc1.bias", 1, b);
  return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fc_model_spec want = expected();
  fc_chunk_rx rx;
  memset(&rx, 0, sizeof rx);
  char err[256];
  int begun = 0, failed = 0;
  static uint8_t staging[36 * 4];
  size_t pos = 0;
  while (pos + 2 <= size && !failed) {
    size_t len = (size_t)data[pos] | (size_t)data[pos + 1] << 8;
    pos += 2;
    if (len > size - pos) len = size - pos;
    Fedc__V1__UploadMsg *m = fedc__v1__upload_msg__unpack(NULL, len, data + pos);
    pos += len;
    if (!m) break;
    if (!begun) {
      if (m->header && fc_chunk_rx_begin_pb(&rx, m->header, &want, sizeof staging, err, sizeof err) == 0) begun = 1;
      else
        failed = 1;
    } else if (m->chunk) {
      uint64_t at = rx.received;
      if (fc_chunk_rx_feed(&rx, m->chunk->offset, m->chunk->data.data, m->chunk->data.len, err, sizeof err) == 0) {
        if (at + m->chunk->data.len > sizeof staging) abort(); /* the framing must have refused it */
        memcpy(staging + at, m->chunk->data.data, m->chunk->data.len);
      } else {
        failed = 1;
      }
    }
    fedc__v1__upload_msg__free_unpacked(m, NULL);
  }
  if (begun && !failed) fc_chunk_rx_end(&rx, err, sizeof err);
  fc_chunk_rx_free(&rx);
  return 0;
}

static size_t put_frame(uint8_t *out, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_pack(m, out + 2);
  out[0] = (uint8_t)n;
  out[1] = (uint8_t)(n >> 8);
  return n + 2;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  fc_model_spec s = expected();
  float payload[36];
  for (int i = 0; i < 36; i++) payload[i] = (float)i;
  uint8_t sha[32];
  fc_sha256(payload, sizeof payload, sha);
  fc_pb_header h;
  fc_pb_header_build(&h, &s, sizeof payload, sha, 64);
  uint8_t *out = malloc(4096);
  size_t n = 0;
  Fedc__V1__UploadMsg first = FEDC__V1__UPLOAD_MSG__INIT;
  first.header = &h.h;
  n += put_frame(out + n, &first.base);
  for (size_t off = 0; off < sizeof payload; off += 64) {
    Fedc__V1__TensorChunk c = FEDC__V1__TENSOR_CHUNK__INIT;
    c.offset = off;
    c.data.data = (uint8_t *)payload + off;
    c.data.len = off + 64 <= sizeof payload ? 64 : sizeof payload - off;
    Fedc__V1__UploadMsg m = FEDC__V1__UPLOAD_MSG__INIT;
    m.chunk = &c;
    n += put_frame(out + n, &m.base);
  }
  *data = out;
  *size = n;
}
