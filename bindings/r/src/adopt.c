/* Large results taken over in place: a result that is one plain atomic vector becomes an R
 * vector whose memory is the received payload itself (R's allocVector3 with an allocator that
 * hands R that memory), so the host neither copies it nor faults in fresh pages for it. On a
 * virtual machine fresh pages cost more than the copy: together they were most of the time a
 * 100 MB result took to collect.
 *
 * R lays out a vector from a custom allocator as [allocator copy][header][data], the data last,
 * so the daemon places the vector's data far enough into its reply, at a 16-byte boundary,
 * with an envelope before R's serialization: "\0mir", the envelope's length (4 bytes, little
 * endian), zeros. No R serialization starts with a NUL byte. The host unserializes whatever
 * follows an envelope as usual when it cannot take the vector over. */
#include <stdlib.h>
#include <string.h>

#include <R_ext/Rallocators.h>

#include "rmirai.h"

/* Vectors smaller than this are copied: the copy is cheap, and an adopted vector holds its
 * whole payload. */
#define ADOPT_MIN ((size_t)1 << 20)
/* Where the daemon puts the data: room for R's allocator copy and header (80 bytes, 96 for a
 * long vector) and for the record of the payload kept in front of them. */
#define DATA_AT 128
#define MAGIC "\0mir"

/* Whether this R lays vectors out as assumed (checked once by `adopt_init`). */
static int layout_ok = 0;

static size_t round8(size_t n) {
  return (n + 7) / 8 * 8;
}

static int adoptable_type(int type) {
  return type == RAWSXP || type == LGLSXP || type == INTSXP || type == REALSXP || type == CPLXSXP;
}

/* Bytes of R's serialization before an object's first item (format, versions, encoding):
 * counted by serializing NULL, whose item is its 4-byte flags. The native encoding's name is
 * part of it and can change with the locale, so it is counted each time. */
static void count_byte(R_outpstream_t stream, int c) {
  (void)c;
  *(size_t *)stream->data += 1;
}

static void count_bytes(R_outpstream_t stream, void *buf, int n) {
  (void)buf;
  *(size_t *)stream->data += (size_t)n;
}

static size_t stream_preamble(void) {
  size_t n = 0;
  struct R_outpstream_st out;
  R_InitOutPStream(&out, (R_pstream_data_t)&n, R_pstream_binary_format, 3, count_byte, count_bytes, NULL,
                   R_NilValue);
  R_Serialize(R_NilValue, &out);
  return n - 4;
}

size_t adopt_envelope(SEXP value, uint8_t envelope[ENVELOPE_MAX], size_t *tail) {
  *tail = 0;
#ifdef WORDS_BIGENDIAN
  /* The host takes over only the native binary format of a little-endian writer. */
  return 0;
#endif
  if (!adoptable_type(TYPEOF(value)) || ALTREP(value) || ATTRIB(value) != R_NilValue || OBJECT(value))
    return 0;
  size_t nbytes = (size_t)XLENGTH(value) * element_size(TYPEOF(value));
  if (nbytes < ADOPT_MIN) return 0;
  /* Flags, then the length: -1 and two halves for a long vector. */
  size_t before = stream_preamble() + 4 + (XLENGTH(value) > R_SHORT_LEN_MAX ? 12 : 4);
  size_t at = before + 8 <= DATA_AT ? DATA_AT : (before + 8 + 15) / 16 * 16;
  size_t len = at - before;
  if (len > ENVELOPE_MAX) return 0;
  memset(envelope, 0, len);
  memcpy(envelope, MAGIC, 4);
  for (int i = 0; i < 4; i++) envelope[4 + i] = (uint8_t)(len >> (8 * i));
  /* R's vector ends at an 8-byte boundary: the payload holds those bytes too. */
  *tail = round8(nbytes) - nbytes;
  return len;
}

size_t envelope_len(const uint8_t *data, size_t len) {
  if (len < 8 || memcmp(data, MAGIC, 4) != 0) return 0;
  size_t n = 0;
  for (int i = 0; i < 4; i++) n |= (size_t)data[4 + i] << (8 * i);
  return n >= 8 && n <= len ? n : 0;
}

/* The vector being adopted, for the allocator (R calls it synchronously from allocVector3,
 * and only R's main thread adopts). */
static struct {
  mirai_bytes payload;
  const uint8_t *data;
  size_t nbytes;
  int adopted;
} pending;

/* Payload bytes held by adopted vectors still alive, and the level at which adopting one more
 * first runs R's garbage collector: R does not count memory from a custom allocator towards
 * its own collections, so dropped results would otherwise pile up. */
static size_t adopted_live = 0;
static size_t adopted_budget = (size_t)256 << 20;

/* R asks for `request` bytes, the vector's data being its last round8(nbytes). When the
 * payload has room in front of the data, the block is the payload's memory ending with the
 * data; the payload's own extent is recorded at its start and R's copy of the allocator
 * points there. Otherwise it is fresh memory and the data is copied after. */
static void *adopt_alloc(R_allocator_t *allocator, size_t request) {
  pending.adopted = 0;
  size_t body = round8(pending.nbytes);
  if (request >= body) {
    size_t prefix = request - body;
    uint8_t *base = pending.payload.data;
    uint8_t *block = (uint8_t *)pending.data - prefix;
    if ((size_t)(pending.data - base) >= prefix + sizeof(mirai_bytes) && (uintptr_t)block % 16 == 0) {
      memcpy(base, &pending.payload, sizeof(mirai_bytes));
      /* R copies the allocator into the block after this returns: its copy points here. */
      allocator->data = base;
      pending.adopted = 1;
      return block;
    }
  }
  allocator->data = NULL;
  return malloc(request);
}

static void adopt_free(R_allocator_t *allocator, void *block) {
  /* `allocator` is R's copy, inside the block: read it before anything is freed. */
  void *base = allocator->data;
  if (base == NULL) {
    free(block);
    return;
  }
  mirai_bytes payload;
  memcpy(&payload, base, sizeof payload);
  adopted_live -= payload.len;
  mirai_bytes_free(&payload);
}

static void *vector_data(SEXP v) {
  switch (TYPEOF(v)) {
  case RAWSXP: return RAW(v);
  case LGLSXP: return LOGICAL(v);
  case INTSXP: return INTEGER(v);
  case REALSXP: return REAL(v);
  default: return COMPLEX(v);
  }
}

SEXP adopt_result(mirai_bytes *b) {
  if (!layout_ok || b->data == NULL) return NULL;
  size_t skip = envelope_len(b->data, b->len);
  if (skip == 0) return NULL;
  const uint8_t *p = b->data + skip;
  size_t left = b->len - skip;
  /* Format "B\n", version 3, the writer's and reader's versions, the encoding's name. */
  if (left < 18 || p[0] != 'B' || p[1] != '\n' || stream_int(p + 2) != 3) return NULL;
  int32_t enc = stream_int(p + 14);
  if (enc < 0 || (size_t)enc > left - 18 || left - 18 - (size_t)enc < 8) return NULL;
  const uint8_t *q = p + 18 + enc;
  int32_t flags = stream_int(q);
  int type = flags & 0xFF;
  /* Not an object, no attributes, no tag, no levels: a plain vector, all of R's reading. */
  if (!adoptable_type(type) || (flags & ~0xFF) != 0) return NULL;
  int64_t length = stream_int(q + 4);
  q += 8;
  if (length == -1) {
    if ((size_t)(q - p) + 8 > left) return NULL;
    length = (int64_t)((uint64_t)(uint32_t)stream_int(q) << 32 | (uint32_t)stream_int(q + 4));
    q += 8;
  }
  size_t size = element_size(type);
  size_t room = left - (size_t)(q - p);
  if (length < 0 || (uint64_t)length > room / size) return NULL;
  size_t nbytes = (size_t)length * size;
  if (nbytes < ADOPT_MIN || round8(nbytes) > room || (uintptr_t)q % 16 != 0) return NULL;

  if (adopted_live + b->len > adopted_budget) {
    R_gc();
    size_t twice = 2 * (adopted_live + b->len);
    adopted_budget = twice > ((size_t)256 << 20) ? twice : (size_t)256 << 20;
  }
  pending.payload = *b;
  pending.data = q;
  pending.nbytes = nbytes;
  R_allocator_t allocator = {adopt_alloc, adopt_free, NULL, NULL};
  SEXP v = Rf_allocVector3(type, (R_xlen_t)length, &allocator);
  if (pending.adopted) {
    adopted_live += b->len;
    b->data = NULL;
    b->len = 0;
  } else {
    memcpy(vector_data(v), q, nbytes);
  }
  return v;
}

/* The allocator used to check R's layout: plain memory, and where R put the data. */
static void *probe_alloc(R_allocator_t *allocator, size_t request) {
  void *block = malloc(request);
  size_t *seen = allocator->data;
  seen[0] = (size_t)block;
  seen[1] = request;
  return block;
}

static void probe_free(R_allocator_t *allocator, void *block) {
  (void)allocator;
  free(block);
}

/* MIRAI_NO_ADOPT in the environment turns adoption off: the tests' way to read results that
 * come in envelopes by copying. */
void adopt_init(void) {
  if (getenv("MIRAI_NO_ADOPT") != NULL) return;
  size_t seen[2] = {0, 0};
  R_allocator_t probe = {probe_alloc, probe_free, NULL, seen};
  SEXP v = Rf_allocVector3(REALSXP, 1001, &probe);
  layout_ok = seen[0] != 0 && (size_t)REAL(v) + round8(1001 * sizeof(double)) == seen[0] + seen[1];
}
