/* Hosts: listening, launching local daemons, counters, races and closing. */
#include <string.h>

#include "rmirai.h"

#include <R_ext/Utils.h>

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* The bytes of a hex string (R_alloc'd), as daemons decode MIRAI_SECRET. */
static uint8_t *hex_bytes(const char *hex, size_t *len) {
  size_t n = strlen(hex);
  if (n == 0 || n % 2) Rf_error("a secret must be an even number of hex digits");
  uint8_t *out = (uint8_t *)R_alloc(n / 2, 1);
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) Rf_error("a secret must be hex digits only");
    out[i] = (uint8_t)(hi * 16 + lo);
  }
  *len = n / 2;
  return out;
}

/* A setter's refusal as an R error, after freeing the options (an R error does not return). */
static void check_option(mirai_result r, mirai_host_options *o) {
  if (r != MIRAI_RESULT_OK) {
    mirai_host_options_free(o);
    fail(r);
  }
}

/* stream: NULL, or the 7-integer .Random.seed of an L'Ecuyer-CMRG stream that daemons' streams
 * derive from (the k-th daemon gets it jumped k times). tls: NULL, or c(chain, key, ca,
 * password) with NA for what is not given (PEM text). secret: the hex secret daemons must
 * prove they hold, or NULL for no authentication. */
SEXP rmirai_listen(SEXP url, SEXP memory, SEXP stream, SEXP blob, SEXP tls, SEXP secret, SEXP retry,
                   SEXP timing) {
  /* Whatever may raise an R error comes before the options exist, so they cannot leak. */
  const char *where = one_string(url, "url");
  size_t secret_len = 0;
  const uint8_t *key = Rf_isNull(secret) ? NULL : hex_bytes(one_string(secret, "secret"), &secret_len);
  uint32_t base[6];
  if (!Rf_isNull(stream)) {
    if (TYPEOF(stream) != INTSXP || XLENGTH(stream) != 7) Rf_error("`stream` must be a 7-integer .Random.seed");
    for (int i = 0; i < 6; i++) base[i] = (uint32_t)INTEGER(stream)[i + 1];
  }
  double mem = Rf_asReal(memory);
  double retries = Rf_asReal(retry);
  if (!R_FINITE(retries) || retries < 0 || retries > 4294967295.0) Rf_error("`retry` must be a count");
  /* timing: c(cancel_grace, heartbeat, peer_timeout) in seconds, NA for off (0 to libmirai). */
  if (TYPEOF(timing) != REALSXP || XLENGTH(timing) != 3) Rf_error("`timing` must be 3 numbers");
  uint64_t ms[3];
  for (int i = 0; i < 3; i++) {
    double x = REAL(timing)[i];
    if (ISNA(x)) {
      ms[i] = 0;
    } else if (R_FINITE(x) && x * 1000 >= 1 && x * 1000 < 1.8e19) {
      ms[i] = (uint64_t)(x * 1000);
    } else {
      Rf_error("timing settings must be positive numbers of seconds, or NULL");
    }
  }
  mirai_host_options *o = mirai_host_options_new();
  if (o == NULL) Rf_error("cannot allocate host options");
  check_option(key ? mirai_host_options_set_auth(o, MIRAI_AUTH_SECRET, key, secret_len)
                   : mirai_host_options_set_auth(o, MIRAI_AUTH_DISABLED, NULL, 0), o);
  if (!Rf_isNull(blob)) check_option(mirai_host_options_set_init_blob(o, RAW(blob), (size_t)XLENGTH(blob)), o);
  if (R_FINITE(mem) && mem > 0) check_option(mirai_host_options_set_memory_limit(o, (uint64_t)(mem * 1e6)), o);
  if (!Rf_isNull(stream)) check_option(mirai_host_options_set_stream(o, base), o);
  check_option(mirai_host_options_set_retry(o, (uint32_t)retries, 3), o);
  check_option(mirai_host_options_set_cancel_grace_ms(o, ms[0]), o);
  check_option(mirai_host_options_set_heartbeat_ms(o, ms[1]), o);
  check_option(mirai_host_options_set_peer_timeout_ms(o, ms[2]), o);
  if (opt_string(tls, 0) || opt_string(tls, 1)) {
    check_option(mirai_host_options_set_tls(o, opt_string(tls, 0), opt_string(tls, 1), opt_string(tls, 2),
                                            opt_string(tls, 3)), o);
  }
  mirai_host *host = NULL;
  mirai_result r = mirai_host_listen(where, o, &host);
  mirai_host_options_free(o);
  if (r != MIRAI_RESULT_OK) fail(r);
  SEXP h = PROTECT(R_MakeExternalPtr(host, host_tag, R_NilValue));
  R_RegisterCFinalizerEx(h, host_finalizer, TRUE);
  UNPROTECT(1);
  return h;
}

SEXP rmirai_url(SEXP h) { return Rf_mkString(mirai_host_url(host_of(h))); }

SEXP rmirai_secret(SEXP h) {
  const char *s = mirai_host_secret_hex(host_of(h));
  return s ? Rf_mkString(s) : R_NilValue;
}

SEXP rmirai_tls_ca(SEXP h) {
  const char *s = mirai_host_tls_ca(host_of(h));
  return s ? Rf_mkString(s) : R_NilValue;
}

SEXP rmirai_launch(SEXP h, SEXP argv, SEXP n, SEXP output) {
  const char **args = c_strings(argv);
  mirai_result r = mirai_host_launch_local(host_of(h), args, (size_t)XLENGTH(argv), (size_t)Rf_asInteger(n),
                                            Rf_asLogical(output) == TRUE);
  if (r != MIRAI_RESULT_OK) fail(r);
  return R_NilValue;
}

/* Waits for n connections in slices, so the user can interrupt; fails (with what it wrote to
 * stderr, if libmirai kept it) when a daemon of the latest launch exits in failure first. */
SEXP rmirai_wait_connections(SEXP h, SEXP n) {
  mirai_host *host = host_of(h);
  for (;;) {
    mirai_result r = mirai_host_wait_launched(host, (uint64_t)Rf_asReal(n), SLICE_MS);
    if (r == MIRAI_RESULT_OK) return Rf_ScalarLogical(TRUE);
    if (r != MIRAI_RESULT_TIMED_OUT) fail(r);
    R_CheckUserInterrupt();
  }
}


/* c(used, peak, capacity) in MB (1e6 bytes); capacity NA when unbounded. */
SEXP rmirai_memory(SEXP h) {
  mirai_memory m;
  mirai_result r = mirai_host_memory(host_of(h), &m);
  if (r != MIRAI_RESULT_OK) fail(r);
  SEXP out = PROTECT(Rf_allocVector(REALSXP, 3));
  REAL(out)[0] = (double)m.used / 1e6;
  REAL(out)[1] = (double)m.peak / 1e6;
  REAL(out)[2] = m.limit ? (double)m.limit / 1e6 : NA_REAL;
  UNPROTECT(1);
  return out;
}

SEXP rmirai_counters(SEXP h) {
  mirai_counters c;
  mirai_result r = mirai_host_counters(host_of(h), &c);
  if (r != MIRAI_RESULT_OK) fail(r);
  SEXP out = PROTECT(Rf_allocVector(INTSXP, 5));
  INTEGER(out)[0] = (int)c.connections;
  INTEGER(out)[1] = (int)c.cumulative;
  INTEGER(out)[2] = (int)c.awaiting;
  INTEGER(out)[3] = (int)c.executing;
  INTEGER(out)[4] = (int)c.completed;
  UNPROTECT(1);
  return out;
}

/* The 1-based index of the first of `tasks` to resolve, waiting in slices so the user can
 * interrupt; after `timeout_ms` (negative: no limit), 0. */
SEXP rmirai_race(SEXP h, SEXP tasks, SEXP timeout_ms) {
  if (TYPEOF(tasks) != VECSXP) Rf_error("`tasks` must be a list");
  R_xlen_t n = XLENGTH(tasks);
  const mirai_task **list = (const mirai_task **)R_alloc((size_t)(n ? n : 1), sizeof(mirai_task *));
  for (R_xlen_t i = 0; i < n; i++) list[i] = task_of(VECTOR_ELT(tasks, i));
  int left = Rf_asInteger(timeout_ms);
  size_t index = 0;
  for (;;) {
    int slice = left >= 0 && left < SLICE_MS ? left : SLICE_MS;
    mirai_result r = mirai_host_race(host_of(h), list, (size_t)n, slice, &index);
    if (r == MIRAI_RESULT_OK) return Rf_ScalarInteger((int)index + 1);
    if (r != MIRAI_RESULT_TIMED_OUT) fail(r);
    if (left >= 0 && (left -= slice) <= 0) return Rf_ScalarInteger(0);
    R_CheckUserInterrupt();
  }
}

SEXP rmirai_close(SEXP h, SEXP exit_daemons) {
  mirai_host *host = host_of(h);
  if (Rf_asLogical(exit_daemons) == TRUE) mirai_host_exit_daemons(host);
  mirai_host_close(host);
  /* The I/O thread goes on closing the daemons' connections, which freeing waits for: with many
     daemons that takes a while, so the collector frees the host later, and daemons(0) returns. */
  SEXP closed = PROTECT(R_MakeExternalPtr(host, R_NilValue, R_NilValue));
  R_RegisterCFinalizerEx(closed, host_finalizer, TRUE);
  R_ClearExternalPtr(h);
  UNPROTECT(1);
  return R_NilValue;
}
