/* Shared by the package's C files. */
#ifndef RMIRAI_H
#define RMIRAI_H

#define R_NO_REMAP
#define STRICT_R_HEADERS
#include <R.h>
#include <Rinternals.h>
#include <stddef.h>
#include <stdint.h>

#include "mirai.h"

/* Slice for interruptible waits: R's mirai re-checks for interrupts every 400 ms. */
#define SLICE_MS 400

/* Tags of the external pointers for hosts and tasks, and symbols used throughout (common.c). */
extern SEXP host_tag, task_tag;
extern SEXP s_handle, s_profile, s_value, s_host, s_data, s_id, s_read_hook, s_write_hook, s_result;

/* An R error with libmirai's message for `r`. */
void fail(mirai_result r);
/* The handle in an external pointer, or an R error if it is not one or was freed. */
mirai_host *host_of(SEXP h);
mirai_task *task_of(SEXP t);
/* Frees a host (also its finalizer); the pointer is cleared. */
void host_finalizer(SEXP h);
/* A task handle as an external pointer freed with it. */
SEXP wrap_task(mirai_task *task);
/* An optional string: NULL for NA or a missing element. */
const char *opt_string(SEXP x, R_xlen_t i);
/* A variable of an environment, R_NilValue when unbound. */
SEXP env_var(SEXP env, SEXP sym);
/* The one string of `x`, or an R error naming argument `what`. */
const char *one_string(SEXP x, const char *what);
/* A character vector (without NA) as C strings (R_alloc'd), or an R error. */
const char **c_strings(SEXP x);

void task_init(void);
void daemon_init(void);

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
mirai_buffer *serialize_buffer(SEXP obj, SEXP hook);

/* R's serialize(obj, NULL) appended to a daemon's reply, in an envelope (adopt.c) when the
 * host can take the value over in place. May raise an R error. */
void serialize_output(mirai_output *out, SEXP obj, SEXP hook);

/* R's unserialize() of `len` bytes at `data` (after an envelope), read in place, with `hook`
 * as the persistent-reference hook (R_NilValue for none). May raise an R error. */
SEXP unserialize_from(const uint8_t *data, size_t len, SEXP hook);

/* The native-order 4-byte integer at `p` of a serialization, and the bytes per element of the
 * atomic vectors whose data R serializes in bulk (0 for other types), from an item's flags. */
int32_t stream_int(const uint8_t *p);
size_t element_size(int32_t flags);

/* Taking large results over in place (adopt.c). The daemon writes an envelope of up to
 * ENVELOPE_MAX bytes before a value the host can adopt, and `*tail` zero bytes after it;
 * adopt_envelope returns its length, 0 for a value that gets none. */
#define ENVELOPE_MAX 128
size_t adopt_envelope(SEXP value, uint8_t envelope[ENVELOPE_MAX], size_t *tail);
/* The length of the envelope at the start of `data`, 0 if there is none. */
size_t envelope_len(const uint8_t *data, size_t len);
/* The result in `b` as an R vector using its memory (`b` is then emptied), or NULL if it is
 * not a vector the host adopts. May raise an R error (out of memory), leaving `b` intact. */
SEXP adopt_result(mirai_bytes *b);
/* Checks once that R lays out vectors as adoption assumes. */
void adopt_init(void);

/* The routines registered with R (init.c). */
SEXP rmirai_listen(SEXP url, SEXP memory, SEXP stream, SEXP blob, SEXP tls, SEXP secret, SEXP retry,
                   SEXP timing);
SEXP rmirai_url(SEXP h);
SEXP rmirai_secret(SEXP h);
SEXP rmirai_tls_ca(SEXP h);
SEXP rmirai_launch(SEXP h, SEXP argv, SEXP n, SEXP output);
SEXP rmirai_wait_connections(SEXP h, SEXP n);
SEXP rmirai_memory(SEXP h);
SEXP rmirai_counters(SEXP h);
SEXP rmirai_race(SEXP h, SEXP tasks, SEXP timeout_ms);
SEXP rmirai_close(SEXP h, SEXP exit_daemons);
SEXP rmirai_use_later(SEXP ready);
SEXP rmirai_setup(SEXP fun, SEXP unresolved);
SEXP rmirai_submit(SEXP p, SEXP task, SEXP timeout, SEXP try_, SEXP retry);
SEXP rmirai_collect(SEXP m);
SEXP rmirai_data(SEXP m);
SEXP rmirai_on_done(SEXP t, SEXP key);
SEXP rmirai_everywhere(SEXP p, SEXP task, SEXP min);
SEXP rmirai_resolved(SEXP t);
SEXP rmirai_cancel(SEXP t);
SEXP rmirai_launch_ssh(SEXP h, SEXP remotes, SEXP tunnel, SEXP tunnel_port, SEXP timeout, SEXP options, SEXP argv);
SEXP rmirai_launch_remote(SEXP h, SEXP command, SEXP args, SEXP quote, SEXP argv, SEXP n);
SEXP rmirai_launch_cluster(SEXP h, SEXP scheduler, SEXP options, SEXP submit, SEXP argv, SEXP n);
SEXP rmirai_cancel_jobs(SEXP j);
SEXP rmirai_wait_launched(SEXP h, SEXP n, SEXP timeout_ms);
SEXP rmirai_http_request(SEXP url, SEXP method, SEXP headers, SEXP body);
SEXP rmirai_interfaces(void);
SEXP rmirai_random_name(SEXP n);
SEXP rmirai_random_hex(SEXP n);
SEXP rmirai_take_secret(void);
SEXP rmirai_daemon(SEXP url, SEXP opts, SEXP env, SEXP secret, SEXP tls_ca);
/* Snapshots of a daemon's global state, and whether a task changed it (state.c). */
SEXP rmirai_state(void);
SEXP rmirai_state_changed(SEXP state);
/* Whether the global state is as snapshot `state` (from rmirai_state) recorded it. */
int state_unchanged(SEXP state);

#endif
