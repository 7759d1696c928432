/* Serialization straight between R objects and libmirai's buffers: tasks are serialized into
 * a growing raw vector and submitted from there, results are unserialized where libmirai
 * holds them, with no intermediate raw vector and copy. */
#include <string.h>

#include "rmirai.h"

void membuf_init(membuf *b, R_xlen_t capacity) {
  PROTECT_WITH_INDEX(b->vec = Rf_allocVector(RAWSXP, capacity), &b->index);
  b->len = 0;
}

static void reserve(membuf *b, R_xlen_t more) {
  R_xlen_t cap = XLENGTH(b->vec);
  if (b->len + more <= cap) return;
  R_xlen_t want = cap * 2 > b->len + more ? cap * 2 : b->len + more;
  SEXP bigger = Rf_allocVector(RAWSXP, want);
  memcpy(RAW(bigger), RAW(b->vec), (size_t)b->len);
  REPROTECT(b->vec = bigger, b->index);
}

static void out_byte(R_outpstream_t stream, int c) {
  membuf *b = stream->data;
  reserve(b, 1);
  RAW(b->vec)[b->len++] = (Rbyte)c;
}

static void out_bytes(R_outpstream_t stream, void *data, int n) {
  membuf *b = stream->data;
  reserve(b, n);
  memcpy(RAW(b->vec) + b->len, data, (size_t)n);
  b->len += n;
}

/* R's refhook protocol: the hook function is called with the reference object. */
static SEXP call_hook(SEXP x, SEXP fun) {
  SEXP call = PROTECT(Rf_lang2(fun, x));
  SEXP out = Rf_eval(call, R_GlobalEnv);
  UNPROTECT(1);
  return out;
}

/* The buffer tasks are serialized into before libmirai copies them: kept between calls (up to
 * 16 MB), so a small task allocates nothing here. `scratch_busy` covers a serialization hook
 * that submits a task of its own. */
static SEXP scratch = NULL;
static int scratch_busy = 0;

typedef struct {
  membuf *b;
  SEXP obj, hook;
} scratch_job;

static SEXP scratch_run(void *data) {
  scratch_job *j = data;
  serialize_into(j->b, j->obj, j->hook);
  return R_NilValue;
}

/* Runs on success and on error alike: keep the (possibly grown) buffer, free it for reuse. */
static void scratch_done(void *data) {
  membuf *b = ((scratch_job *)data)->b;
  if (b->vec != scratch && XLENGTH(b->vec) <= (1 << 24)) {
    if (scratch != NULL) R_ReleaseObject(scratch);
    scratch = b->vec;
    R_PreserveObject(scratch);
  }
  scratch_busy = 0;
}

void serialize_scratch(membuf *b, SEXP obj, SEXP hook) {
  if (scratch_busy) {
    membuf_init(b, 1024);
    serialize_into(b, obj, hook);
    return;
  }
  scratch_busy = 1;
  PROTECT_WITH_INDEX(b->vec = scratch != NULL ? scratch : Rf_allocVector(RAWSXP, 4096), &b->index);
  b->len = 0;
  scratch_job j = {b, obj, hook};
  R_ExecWithCleanup(scratch_run, &j, scratch_done, &j);
}

void serialize_into(membuf *b, SEXP obj, SEXP hook) {
  struct R_outpstream_st out;
  int hooked = hook != NULL && !Rf_isNull(hook);
  R_InitOutPStream(&out, (R_pstream_data_t)b, R_pstream_xdr_format, 3, out_byte, out_bytes,
                   hooked ? call_hook : NULL, hooked ? hook : R_NilValue);
  R_Serialize(obj, &out);
}

typedef struct {
  const uint8_t *at;
  size_t left;
} reader;

static int in_byte(R_inpstream_t stream) {
  reader *r = stream->data;
  if (r->left == 0) Rf_error("serialized data ended early");
  r->left--;
  return *r->at++;
}

static void in_bytes(R_inpstream_t stream, void *buf, int n) {
  reader *r = stream->data;
  if ((size_t)n > r->left) Rf_error("serialized data ended early");
  memcpy(buf, r->at, (size_t)n);
  r->at += n;
  r->left -= (size_t)n;
}

SEXP unserialize_from(const uint8_t *data, size_t len, SEXP hook) {
  reader r = {data, len};
  struct R_inpstream_st in;
  int hooked = !Rf_isNull(hook);
  R_InitInPStream(&in, (R_pstream_data_t)&r, R_pstream_any_format, in_byte, in_bytes,
                  hooked ? call_hook : NULL, hooked ? hook : R_NilValue);
  return R_Unserialize(&in);
}
