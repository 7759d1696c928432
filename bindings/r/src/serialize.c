/* Serialization straight between R objects and libmirai's buffers: tasks and results are
 * serialized into buffers that libmirai then owns (no copy), and unserialized where libmirai
 * holds them, with no intermediate raw vector. */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rmirai.h"

/* The byte order of the machine, as R's mirai does: a little-endian machine writes its doubles
 * and integers as they are in memory, so a vector goes out in bulk copies; XDR (big-endian) would
 * convert every element on both ends. Readers accept either format. */
#ifdef WORDS_BIGENDIAN
#define SERIAL_FORMAT R_pstream_xdr_format
#else
#define SERIAL_FORMAT R_pstream_binary_format
#endif

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

void serialize_into(membuf *b, SEXP obj, SEXP hook) {
  struct R_outpstream_st out;
  int hooked = hook != NULL && !Rf_isNull(hook);
  R_InitOutPStream(&out, (R_pstream_data_t)b, SERIAL_FORMAT, 3, out_byte, out_bytes,
                   hooked ? call_hook : NULL, hooked ? hook : R_NilValue);
  R_Serialize(obj, &out);
}

/* Hands serialized bytes on in large pieces: R writes many small ones (each integer, each
 * header), and every call into libmirai crosses its panic boundary. */
typedef struct chunked {
  mirai_result (*sink)(struct chunked *w, const uint8_t *data, size_t len);
  void *target;
  size_t n;
  uint8_t stage[32 * 1024];
} chunked;

static void pass_on(chunked *w, const uint8_t *data, size_t len) {
  if (len && w->sink(w, data, len) != MIRAI_RESULT_OK) Rf_error("cannot serialize: out of memory");
}

static void flush(chunked *w) {
  pass_on(w, w->stage, w->n);
  w->n = 0;
}

static void chunk_byte(R_outpstream_t stream, int c) {
  chunked *w = stream->data;
  if (w->n == sizeof w->stage) flush(w);
  w->stage[w->n++] = (uint8_t)c;
}

/* A large piece goes on directly, but only after what is staged: the order is the data. */
static void chunk_bytes(R_outpstream_t stream, void *data, int n) {
  chunked *w = stream->data;
  int large = (size_t)n > sizeof w->stage / 2;
  if (large || w->n + (size_t)n > sizeof w->stage) flush(w);
  if (large) {
    pass_on(w, data, (size_t)n);
  } else {
    memcpy(w->stage + w->n, data, (size_t)n);
    w->n += (size_t)n;
  }
}

static void serialize_chunked(chunked *w, SEXP obj, SEXP hook) {
  struct R_outpstream_st out;
  int hooked = !Rf_isNull(hook);
  w->n = 0;
  R_InitOutPStream(&out, (R_pstream_data_t)w, SERIAL_FORMAT, 3, chunk_byte, chunk_bytes,
                   hooked ? call_hook : NULL, hooked ? hook : R_NilValue);
  R_Serialize(obj, &out);
  flush(w);
}

static mirai_result to_buffer(chunked *w, const uint8_t *data, size_t len) {
  return mirai_buffer_write(w->target, data, len);
}

static mirai_result to_output(chunked *w, const uint8_t *data, size_t len) {
  return mirai_output_write(w->target, data, len);
}

typedef struct {
  chunked w;
  SEXP obj, hook;
  int done;
} buffer_job;

/* The usual job; a serialization hook that submits a task of its own gets another. */
static buffer_job task_job;
static int task_job_busy = 0;

static SEXP buffer_run(void *data) {
  buffer_job *j = data;
  serialize_chunked(&j->w, j->obj, j->hook);
  j->done = 1;
  return R_NilValue;
}

/* On an error (the serialization unwinds), the buffer is freed. */
static void buffer_cleanup(void *data) {
  buffer_job *j = data;
  if (!j->done) {
    mirai_buffer_free(j->w.target);
    if (j == &task_job) task_job_busy = 0;
  }
}

mirai_buffer *serialize_buffer(SEXP obj, SEXP hook) {
  /* R_alloc memory lives until the .Call returns, which for a daemon's nested submissions is
   * the daemon's whole life: give it back here. */
  const void *vmax = vmaxget();
  buffer_job *j = task_job_busy ? (buffer_job *)R_alloc(1, sizeof(buffer_job)) : &task_job;
  j->w.sink = to_buffer;
  j->w.target = mirai_buffer_new(0);
  if (j->w.target == NULL) Rf_error("cannot serialize: out of memory");
  j->obj = obj;
  j->hook = hook;
  j->done = 0;
  int own = j == &task_job;
  if (own) task_job_busy = 1;
  R_ExecWithCleanup(buffer_run, j, buffer_cleanup, j);
  if (own) task_job_busy = 0;
  mirai_buffer *buf = j->w.target;
  vmaxset(vmax);
  return buf;
}

void serialize_output(mirai_output *out, SEXP obj, SEXP hook) {
  /* On the stack: a write hook may itself run a (sync) mirai whose daemon replies too. */
  chunked reply;
  reply.sink = to_output;
  reply.target = out;
  uint8_t envelope[ENVELOPE_MAX];
  size_t tail = 0;
  size_t n = adopt_envelope(obj, envelope, &tail);
  pass_on(&reply, envelope, n);
  serialize_chunked(&reply, obj, hook);
  static const uint8_t zeros[8] = {0};
  pass_on(&reply, zeros, tail);
}

typedef struct {
  const uint8_t *start, *at;
  size_t left;
  /* Where the last read ended: a read that starts there continues the same vector. */
  void *next;
} reader;

static int in_byte(R_inpstream_t stream) {
  reader *r = stream->data;
  if (r->left == 0) Rf_error("serialized data ended early");
  r->left--;
  return *r->at++;
}

int32_t stream_int(const uint8_t *p) {
  int32_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

size_t element_size(int32_t flags) {
  switch (flags & 0xFF) {
  case RAWSXP: return 1;
  case LGLSXP:
  case INTSXP: return sizeof(int);
  case REALSXP: return sizeof(double);
  case CPLXSXP: return sizeof(Rcomplex);
  default: return 0;
  }
}

/* R has just allocated a large vector and starts copying its data to `dst`: advise huge pages
 * for it, as libmirai does for its own buffers. Fresh memory is otherwise faulted in 4 KiB at a
 * time, which costs more than the copy itself on a virtual machine. The vector's extent comes
 * from the stream, where its flags and length come just before its data: in the native binary
 * format ("B"), which R reads straight into the vector (XDR goes through a buffer of R's), and
 * only whole pages inside it are advised, so no memory but the vector's is touched. */
static void advise_vector(const reader *r, void *dst, size_t n) {
#ifdef MADV_HUGEPAGE
  const size_t large = 4 << 20;
  /* A vector's data comes in pieces of 8096 elements, the first right after its length. */
  if (n < 8096 || dst == r->next || r->at - r->start < 16 || r->start[0] != 'B') return;
  const uint8_t *p = r->at;
  int64_t len = stream_int(p - 4);
  size_t size = element_size(stream_int(p - 8));
  if (size == 0 && stream_int(p - 12) == -1) {
    /* A long vector: its flags, -1, then the length's upper and lower halves. */
    len = (int64_t)((uint64_t)(uint32_t)stream_int(p - 8) << 32 | (uint32_t)stream_int(p - 4));
    size = element_size(stream_int(p - 16));
  }
  if (size == 0 || len < 0 || (uint64_t)len > (r->left + n) / size) return;
  size_t bytes = (size_t)len * size;
  if (bytes < large) return;
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t first = ((uintptr_t)dst + page - 1) / page * page;
  uintptr_t last = ((uintptr_t)dst + bytes) / page * page;
  if (last > first) madvise((void *)first, last - first, MADV_HUGEPAGE);
#else
  (void)r;
  (void)dst;
  (void)n;
#endif
}

static void in_bytes(R_inpstream_t stream, void *buf, int n) {
  reader *r = stream->data;
  if ((size_t)n > r->left) Rf_error("serialized data ended early");
  advise_vector(r, buf, (size_t)n);
  memcpy(buf, r->at, (size_t)n);
  r->at += n;
  r->left -= (size_t)n;
  r->next = (uint8_t *)buf + n;
}

SEXP unserialize_from(const uint8_t *data, size_t len, SEXP hook) {
  size_t skip = envelope_len(data, len);
  data += skip;
  len -= skip;
  reader r = {data, data, len, NULL};
  struct R_inpstream_st in;
  int hooked = !Rf_isNull(hook);
  R_InitInPStream(&in, (R_pstream_data_t)&r, R_pstream_any_format, in_byte, in_bytes,
                  hooked ? call_hook : NULL, hooked ? hook : R_NilValue);
  return R_Unserialize(&in);
}
