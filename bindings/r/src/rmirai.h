/* Shared by the package's C files. */
#ifndef RMIRAI_H
#define RMIRAI_H

#define R_NO_REMAP
#define STRICT_R_HEADERS
#include <R.h>
#include <Rinternals.h>
#include <stddef.h>
#include <stdint.h>

/* A raw vector being filled: `vec` (protected at `index`) holds `len` bytes so far. */
typedef struct {
  SEXP vec;
  PROTECT_INDEX index;
  R_xlen_t len;
} membuf;

/* Starts a buffer on the protect stack (the caller unprotects it). */
void membuf_init(membuf *b, R_xlen_t capacity);

/* R's serialize(obj, NULL) (XDR, version 3) appended to `b`, with `hook` (NULL or an R
 * function) as the persistent-reference hook. May raise an R error. */
void serialize_into(membuf *b, SEXP obj, SEXP hook);

/* R's serialize(obj, NULL) into a new libmirai buffer, for mirai_host_submit_buffer (freed
 * if the serialization fails). May raise an R error. */
struct mirai_buffer *serialize_buffer(SEXP obj, SEXP hook);

/* R's serialize(obj, NULL) appended to a daemon's reply. May raise an R error. */
struct mirai_output;
void serialize_output(struct mirai_output *out, SEXP obj, SEXP hook);

/* R's unserialize() of `len` bytes at `data`, read in place, with `hook` as the
 * persistent-reference hook (R_NilValue for none). May raise an R error. */
SEXP unserialize_from(const uint8_t *data, size_t len, SEXP hook);

/* Snapshots of a daemon's global state, and whether a task changed it (state.c). */
SEXP rmirai_state(void);
SEXP rmirai_state_changed(SEXP state);

#endif
