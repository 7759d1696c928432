/* The R package's C layer over libmirai: hosts and tasks as external pointers with
 * finalizers, interruptible waits, and the daemon loop calling back into R. */
#include "rmirai.h"

#include <R_ext/Rdynload.h>
#include <Rversion.h>
#include <R_ext/Utils.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mirai.h"

/* R's flag for a pending user interrupt (declared in R_ext/GraphicsDevice.h; R's own SIGINT
 * handler sets it, from whichever thread takes the signal). */
LibExtern int R_interrupts_pending;

/* Slice for interruptible waits: R's mirai re-checks for interrupts every 400 ms. */
#define SLICE_MS 400

static SEXP host_tag, task_tag;
static SEXP s_handle, s_profile, s_value, s_host, s_data, s_id, s_read_hook, s_write_hook, s_result;
/* Set up by rmirai_setup when the package loads: the classes of mirai and errorValue objects,
 * the unresolved value, and the R function behind a mirai's `data` binding. */
static SEXP mirai_class, error_value_class, unresolved_value, data_fun;
static int mirai_count = 0; /* the `id` of the latest mirai */

static void fail(mirai_result r) {
  char why[1024];
  mirai_last_error(why, sizeof why);
  Rf_error("%s", why[0] ? why : mirai_strerror(r));
}

static mirai_host *host_of(SEXP h) {
  if (TYPEOF(h) != EXTPTRSXP || R_ExternalPtrTag(h) != host_tag || !R_ExternalPtrAddr(h))
    Rf_error("invalid or closed host");
  return (mirai_host *)R_ExternalPtrAddr(h);
}

static mirai_task *task_of(SEXP t) {
  if (TYPEOF(t) != EXTPTRSXP || R_ExternalPtrTag(t) != task_tag || !R_ExternalPtrAddr(t))
    Rf_error("invalid task");
  return (mirai_task *)R_ExternalPtrAddr(t);
}

static void host_finalizer(SEXP h) {
  mirai_host_free((mirai_host *)R_ExternalPtrAddr(h));
  R_ClearExternalPtr(h);
}

static void task_finalizer(SEXP t) {
  mirai_task_free((mirai_task *)R_ExternalPtrAddr(t));
  R_ClearExternalPtr(t);
}

static SEXP wrap_task(mirai_task *task) {
  SEXP t = PROTECT(R_MakeExternalPtr(task, task_tag, R_NilValue));
  R_RegisterCFinalizerEx(t, task_finalizer, TRUE);
  UNPROTECT(1);
  return t;
}

/* An optional string: NULL for NA or a missing element. */
static const char *opt_string(SEXP x, R_xlen_t i) {
  if (TYPEOF(x) != STRSXP || XLENGTH(x) <= i || STRING_ELT(x, i) == NA_STRING) return NULL;
  return CHAR(STRING_ELT(x, i));
}

/* stream: NULL, or the 7-integer .Random.seed of an L'Ecuyer-CMRG stream that daemons' streams
 * derive from (the k-th daemon gets it jumped k times). tls: NULL, or c(chain, key, ca,
 * password) with NA for what is not given (PEM text). */
static SEXP rmirai_listen(SEXP url, SEXP memory, SEXP stream, SEXP blob, SEXP tls) {
  mirai_host_options o;
  mirai_host_options_init(&o);
  if (!Rf_isNull(blob)) {
    o.init_blob = RAW(blob);
    o.init_blob_len = (size_t)XLENGTH(blob);
  }
  double mem = Rf_asReal(memory);
  if (R_FINITE(mem) && mem > 0) o.memory_limit = (uint64_t)(mem * 1e6);
  if (!Rf_isNull(stream)) {
    if (TYPEOF(stream) != INTSXP || XLENGTH(stream) != 7) Rf_error("`stream` must be a 7-integer .Random.seed");
    o.stream_set = true;
    for (int i = 0; i < 6; i++) o.stream[i] = (uint32_t)INTEGER(stream)[i + 1];
  }
  o.tls_cert_chain_pem = opt_string(tls, 0);
  o.tls_key_pem = opt_string(tls, 1);
  o.tls_ca_pem = opt_string(tls, 2);
  o.tls_key_password = opt_string(tls, 3);
  mirai_host *host = NULL;
  mirai_result r = mirai_host_listen(CHAR(STRING_ELT(url, 0)), &o, &host);
  if (r != MIRAI_RESULT_OK) fail(r);
  SEXP h = PROTECT(R_MakeExternalPtr(host, host_tag, R_NilValue));
  R_RegisterCFinalizerEx(h, host_finalizer, TRUE);
  UNPROTECT(1);
  return h;
}

static SEXP rmirai_url(SEXP h) { return Rf_mkString(mirai_host_url(host_of(h))); }

static SEXP rmirai_secret(SEXP h) {
  const char *s = mirai_host_secret_hex(host_of(h));
  return s ? Rf_mkString(s) : R_NilValue;
}

static SEXP rmirai_tls_ca(SEXP h) {
  const char *s = mirai_host_tls_ca(host_of(h));
  return s ? Rf_mkString(s) : R_NilValue;
}

static SEXP rmirai_launch(SEXP h, SEXP argv, SEXP n, SEXP output) {
  R_xlen_t argc = XLENGTH(argv);
  const char **args = (const char **)R_alloc((size_t)argc, sizeof(char *));
  for (R_xlen_t i = 0; i < argc; i++) args[i] = CHAR(STRING_ELT(argv, i));
  mirai_result r = mirai_host_launch_local(host_of(h), args, (size_t)argc, (size_t)Rf_asInteger(n),
                                            Rf_asLogical(output) == TRUE);
  if (r != MIRAI_RESULT_OK) fail(r);
  return R_NilValue;
}

/* Waits for n connections in slices, so the user can interrupt. */
static SEXP rmirai_wait_connections(SEXP h, SEXP n) {
  mirai_host *host = host_of(h);
  for (;;) {
    mirai_result r = mirai_host_wait_connections(host, (uint64_t)Rf_asReal(n), SLICE_MS);
    if (r == MIRAI_RESULT_OK) return Rf_ScalarLogical(TRUE);
    if (r != MIRAI_RESULT_TIMED_OUT) fail(r);
    R_CheckUserInterrupt();
  }
}

/* ---- completion on R's event loop (promises) ----------------------------------------------- */

/* later's thread-safe scheduler, looked up once on the main thread (R_GetCCallable is not
 * thread-safe); NULL while the later package is not in use. */
typedef void (*exec_later_fn)(void (*)(void *), void *, double, int);
static exec_later_fn exec_later = NULL;
static SEXP promise_ready = NULL; /* mirai's R function settling the promise of a key */

/* Runs on R's main thread, in later's event loop. */
static void ready_body(void *data) {
  SEXP call = PROTECT(Rf_lang2(promise_ready, Rf_ScalarReal((double)(uintptr_t)data)));
  R_tryEvalSilent(call, R_GlobalEnv, NULL);
  UNPROTECT(1);
}

/* Called from later's (C++) frames: no R error may unwind through them. */
static void run_ready(void *data) { R_ToplevelExec(ready_body, data); }

/* libmirai's completion callback (on its I/O thread, or the cancelling thread): hand the key to
 * later, which runs `run_ready` on the main thread the next time its loop runs. */
static void on_task_done(void *userdata, uint64_t id, mirai_status status, int32_t code) {
  (void)id;
  (void)status;
  (void)code;
  exec_later(run_ready, userdata, 0.0, 0);
}

static SEXP rmirai_use_later(SEXP ready) {
  if (!exec_later) {
    exec_later = (exec_later_fn)R_GetCCallable("later", "execLaterNative2");
    promise_ready = ready;
    R_PreserveObject(ready);
  }
  return R_NilValue;
}

/* A variable of an environment, R_NilValue when unbound. */
static SEXP env_var(SEXP env, SEXP sym) {
  SEXP v = Rf_findVarInFrame3(env, sym, TRUE);
  return v == R_UnboundValue ? R_NilValue : v;
}

/* A mirai: an environment holding the task handle and its profile, with an active binding
 * `data` (the value once resolved, else an unresolved value), classed c("mirai", "recvAio"). */
static SEXP make_mirai(SEXP handle, SEXP profile) {
  SEXP env = PROTECT(R_NewEnv(R_EmptyEnv, FALSE, 0));
  Rf_defineVar(s_handle, handle, env);
  Rf_defineVar(s_profile, profile, env);
  /* The binding's function calls data_fun(env): both are objects inside the call, so nothing
   * is looked up by name when it runs. */
  SEXP body = PROTECT(Rf_lang2(data_fun, env));
#if R_VERSION >= R_Version(4, 5, 0)
  SEXP fun = PROTECT(R_mkClosure(R_NilValue, body, R_BaseEnv));
#else
  SEXP fun = PROTECT(Rf_allocSExp(CLOSXP));
  SET_FORMALS(fun, R_NilValue);
  SET_BODY(fun, body);
  SET_CLOENV(fun, R_BaseEnv);
#endif
  R_MakeActiveBinding(s_data, fun, env);
  Rf_setAttrib(env, R_ClassSymbol, mirai_class);
  Rf_setAttrib(env, s_id, Rf_ScalarInteger(++mirai_count));
  UNPROTECT(3);
  return env;
}

static SEXP rmirai_setup(SEXP fun, SEXP unresolved) {
  data_fun = fun;
  R_PreserveObject(fun);
  unresolved_value = unresolved;
  R_PreserveObject(unresolved);
  return R_NilValue;
}

/* Serializes `task` (with the profile's `write_hook`) into a libmirai buffer and submits it to
 * the profile's host; returns the mirai. At the memory cap it waits in slices, so the user can
 * interrupt; with `try_` TRUE, a full queue returns NULL at once instead. */
static SEXP rmirai_submit(SEXP p, SEXP task, SEXP timeout, SEXP try_) {
  mirai_host *host = host_of(env_var(p, s_host));
  for (;;) {
    mirai_memory m;
    mirai_result r = mirai_host_memory(host, &m);
    if (r != MIRAI_RESULT_OK) fail(r);
    if (m.limit == 0 || m.used < m.limit) break;
    if (Rf_asLogical(try_) == TRUE) return R_NilValue;
    mirai_host_wait_capacity(host, SLICE_MS);
    R_CheckUserInterrupt();
  }
  mirai_submit_options o;
  mirai_submit_options_init(&o);
  if (!Rf_isNull(timeout)) o.timeout_ms = (int64_t)Rf_asReal(timeout);
  /* Below the cap, and only this thread submits: the call does not block. */
  mirai_buffer *buf = serialize_buffer(task, env_var(p, s_write_hook));
  /* A serialization hook is R code: it may even have reset the profile. */
  SEXP current = env_var(p, s_host);
  if (TYPEOF(current) != EXTPTRSXP || R_ExternalPtrAddr(current) == NULL) {
    mirai_buffer_free(buf);
    Rf_error("invalid or closed host");
  }
  mirai_task *t = NULL;
  mirai_result r = mirai_host_submit_buffer(R_ExternalPtrAddr(current), buf, &o, &t);
  if (r != MIRAI_RESULT_OK) fail(r);
  SEXP handle = PROTECT(wrap_task(t));
  SEXP m = make_mirai(handle, p);
  UNPROTECT(1);
  return m;
}

static SEXP error_value(int code) {
  SEXP v = PROTECT(Rf_ScalarInteger(code));
  Rf_setAttrib(v, R_ClassSymbol, error_value_class);
  UNPROTECT(1);
  return v;
}

static void bytes_finalizer(SEXP x) {
  mirai_bytes *b = R_ExternalPtrAddr(x);
  if (b) {
    mirai_bytes_free(b);
    free(b);
    R_ClearExternalPtr(x);
  }
}

/* A resolved task's value: the result unserialized where libmirai put it, or an errorValue.
 * The bytes are held by mirai `m` (`s_result`) until they have been read, so a failed read
 * (a package missing here, an interrupt) can be tried again instead of losing the result. */
static SEXP task_value(mirai_task *task, SEXP m) {
  mirai_status status;
  int32_t code = 0;
  mirai_result r = mirai_task_status(task, &status, &code);
  if (r != MIRAI_RESULT_OK) fail(r);
  if (status == MIRAI_STATUS_FAILED) return error_value(code);
  SEXP held = env_var(m, s_result);
  if (TYPEOF(held) != EXTPTRSXP) {
    mirai_bytes *b = calloc(1, sizeof(mirai_bytes));
    if (b == NULL) Rf_error("cannot allocate");
    held = PROTECT(R_MakeExternalPtr(b, R_NilValue, R_NilValue));
    R_RegisterCFinalizerEx(held, bytes_finalizer, TRUE);
    Rf_defineVar(s_result, held, m);
    UNPROTECT(1);
    r = mirai_task_take_result(task, b);
    if (r != MIRAI_RESULT_OK) fail(r);
  }
  mirai_bytes *b = R_ExternalPtrAddr(held);
  SEXP profile = env_var(m, s_profile);
  SEXP value = PROTECT(unserialize_from(b->data, b->len, Rf_isEnvironment(profile) ? env_var(profile, s_read_hook) : R_NilValue));
  bytes_finalizer(held);
  R_removeVarFromFrame(s_result, m);
  UNPROTECT(1);
  return value;
}

/* The value of mirai `m`, waiting (interruptibly) until it resolves. The value is kept in the
 * mirai; an ephemeral mirai's own host is closed once it is in. */
static SEXP rmirai_collect(SEXP m) {
  SEXP v = Rf_findVarInFrame3(m, s_value, TRUE);
  if (v != R_UnboundValue) return v;
  mirai_task *task = task_of(env_var(m, s_handle));
  while (mirai_task_wait(task, SLICE_MS) == MIRAI_RESULT_TIMED_OUT) R_CheckUserInterrupt();
  v = PROTECT(task_value(task, m));
  Rf_defineVar(s_value, v, m);
  SEXP host = env_var(m, s_host);
  if (TYPEOF(host) == EXTPTRSXP) {
    host_finalizer(host);
    Rf_defineVar(s_host, R_NilValue, m);
  }
  UNPROTECT(1);
  return v;
}

/* A mirai's `data`: its value if resolved, otherwise the unresolved value. */
static SEXP rmirai_data(SEXP m) {
  SEXP v = Rf_findVarInFrame3(m, s_value, TRUE);
  if (v != R_UnboundValue) return v;
  if (!mirai_task_is_resolved(task_of(env_var(m, s_handle)))) return unresolved_value;
  return rmirai_collect(m);
}

/* From now on, the task's completion is announced on R's event loop under `key` (now, if it
 * has already resolved). Needs rmirai_use_later first. */
static SEXP rmirai_on_done(SEXP t, SEXP key) {
  if (!exec_later) Rf_error("the later package is not in use");
  mirai_result r = mirai_task_set_callback(task_of(t), on_task_done, (void *)(uintptr_t)Rf_asReal(key));
  if (r != MIRAI_RESULT_OK) fail(r);
  return R_NilValue;
}

/* c(used, peak, capacity) in MB (1e6 bytes); capacity NA when unbounded. */
static SEXP rmirai_memory(SEXP h) {
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

typedef struct {
  mirai_task **tasks;
  size_t n;
  SEXP p;
} broadcast;

static SEXP wrap_broadcast(void *data) {
  broadcast *b = data;
  SEXP out = PROTECT(Rf_allocVector(VECSXP, (R_xlen_t)b->n));
  for (size_t i = 0; i < b->n; i++) {
    SEXP handle = PROTECT(wrap_task(mirai_task_clone(b->tasks[i])));
    SET_VECTOR_ELT(out, (R_xlen_t)i, make_mirai(handle, b->p));
    UNPROTECT(1);
  }
  UNPROTECT(1);
  return out;
}

static void free_broadcast(void *data) {
  broadcast *b = data;
  mirai_task_array_free(b->tasks, b->n);
}

/* One mirai per copy of an everywhere broadcast of `task`. */
static SEXP rmirai_everywhere(SEXP p, SEXP task, SEXP min) {
  membuf buf;
  membuf_init(&buf, 1000);
  serialize_into(&buf, task, env_var(p, s_write_hook));
  broadcast b = {NULL, 0, p};
  mirai_result r = mirai_host_everywhere(host_of(env_var(p, s_host)), RAW(buf.vec), (size_t)buf.len,
                                         (size_t)Rf_asInteger(min), &b.tasks, &b.n);
  if (r != MIRAI_RESULT_OK) fail(r);
  /* The array is freed whether wrapping finishes or R runs out of memory part way. */
  SEXP out = R_ExecWithCleanup(wrap_broadcast, &b, free_broadcast, &b);
  UNPROTECT(1);
  return out;
}

static SEXP rmirai_resolved(SEXP t) { return Rf_ScalarLogical(mirai_task_is_resolved(task_of(t))); }

static SEXP rmirai_cancel(SEXP t) { return Rf_ScalarLogical(mirai_task_cancel(task_of(t))); }

static SEXP rmirai_counters(SEXP h) {
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

static SEXP rmirai_race(SEXP h, SEXP tasks) {
  R_xlen_t n = XLENGTH(tasks);
  const mirai_task **list = (const mirai_task **)R_alloc((size_t)n, sizeof(mirai_task *));
  for (R_xlen_t i = 0; i < n; i++) list[i] = task_of(VECTOR_ELT(tasks, i));
  size_t index = 0;
  for (;;) {
    mirai_result r = mirai_host_race(host_of(h), list, (size_t)n, SLICE_MS, &index);
    if (r == MIRAI_RESULT_OK) return Rf_ScalarInteger((int)index + 1);
    if (r != MIRAI_RESULT_TIMED_OUT) fail(r);
    R_CheckUserInterrupt();
  }
}

static SEXP rmirai_close(SEXP h, SEXP exit_daemons) {
  mirai_host *host = host_of(h);
  if (Rf_asLogical(exit_daemons) == TRUE) mirai_host_exit_daemons(host);
  mirai_host_free(host);
  R_ClearExternalPtr(h);
  return R_NilValue;
}

/* ---- remote launchers --------------------------------------------------------------------- */

static const char **c_strings(SEXP x) {
  R_xlen_t n = XLENGTH(x);
  const char **out = (const char **)R_alloc((size_t)(n ? n : 1), sizeof(char *));
  for (R_xlen_t i = 0; i < n; i++) out[i] = CHAR(STRING_ELT(x, i));
  return out;
}

static SEXP rmirai_launch_ssh(SEXP h, SEXP remotes, SEXP tunnel, SEXP tunnel_port, SEXP timeout,
                              SEXP options, SEXP argv) {
  mirai_result r = mirai_host_launch_ssh(
      host_of(h), c_strings(remotes), (size_t)XLENGTH(remotes), Rf_asLogical(tunnel) == TRUE,
      (uint16_t)Rf_asInteger(tunnel_port), (uint32_t)Rf_asInteger(timeout), c_strings(options),
      (size_t)XLENGTH(options), c_strings(argv), (size_t)XLENGTH(argv));
  if (r != MIRAI_RESULT_OK) fail(r);
  return R_NilValue;
}

static SEXP rmirai_launch_remote(SEXP h, SEXP command, SEXP args, SEXP quote, SEXP argv, SEXP n) {
  mirai_result r = mirai_host_launch_remote(host_of(h), CHAR(STRING_ELT(command, 0)), c_strings(args),
                                            (size_t)XLENGTH(args), Rf_asLogical(quote) == TRUE,
                                            c_strings(argv), (size_t)XLENGTH(argv), (size_t)Rf_asInteger(n));
  if (r != MIRAI_RESULT_OK) fail(r);
  return R_NilValue;
}

static void jobs_finalizer(SEXP j) {
  mirai_jobs_free((mirai_jobs *)R_ExternalPtrAddr(j));
  R_ClearExternalPtr(j);
}

static SEXP rmirai_launch_cluster(SEXP h, SEXP scheduler, SEXP options, SEXP argv, SEXP n) {
  mirai_jobs *jobs = NULL;
  mirai_result r = mirai_host_launch_cluster(host_of(h), (mirai_scheduler)Rf_asInteger(scheduler),
                                             c_strings(options), (size_t)XLENGTH(options), NULL, NULL,
                                             c_strings(argv), (size_t)XLENGTH(argv), (size_t)Rf_asInteger(n), &jobs);
  if (r != MIRAI_RESULT_OK) fail(r);
  SEXP j = PROTECT(R_MakeExternalPtr(jobs, R_NilValue, R_NilValue));
  R_RegisterCFinalizerEx(j, jobs_finalizer, TRUE);
  UNPROTECT(1);
  return j;
}

static SEXP rmirai_cancel_jobs(SEXP j) {
  mirai_jobs *jobs = (mirai_jobs *)R_ExternalPtrAddr(j);
  if (jobs) mirai_jobs_cancel(jobs);
  return R_NilValue;
}

/* Waits for n daemons of the latest launch, failing early with the launcher's error output. */
static SEXP rmirai_wait_launched(SEXP h, SEXP n, SEXP timeout_ms) {
  mirai_result r = mirai_host_wait_launched(host_of(h), (uint64_t)Rf_asReal(n), (int64_t)Rf_asReal(timeout_ms));
  if (r != MIRAI_RESULT_OK) fail(r);
  return Rf_ScalarLogical(TRUE);
}

/* list(status, data) for an HTTP answer; the NNG-style error code (an integer) when there is none. */
static SEXP rmirai_http_request(SEXP url, SEXP method, SEXP headers, SEXP body) {
  uint16_t status = 0;
  mirai_bytes response = {NULL, 0};
  mirai_result r = mirai_http_request(CHAR(STRING_ELT(url, 0)), CHAR(STRING_ELT(method, 0)), c_strings(headers),
                                      (size_t)XLENGTH(headers), CHAR(STRING_ELT(body, 0)), &status, &response);
  if (r == MIRAI_RESULT_NULL_PARAMETER || r == MIRAI_RESULT_INVALID_ARGUMENT || r == MIRAI_RESULT_PANIC) fail(r);
  if (r != MIRAI_RESULT_OK) return Rf_ScalarInteger((int)r);
  /* Copied into R before anything can raise an error; a body R cannot hold as a string (a NUL
   * in it) comes back as raw bytes. */
  SEXP data = PROTECT(Rf_allocVector(RAWSXP, (R_xlen_t)response.len));
  if (response.len) memcpy(RAW(data), response.data, response.len);
  mirai_bytes_free(&response);
  SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
  SET_VECTOR_ELT(out, 0, Rf_ScalarInteger(status));
  if (memchr(RAW(data), 0, (size_t)XLENGTH(data)) == NULL && XLENGTH(data) < INT_MAX) {
    SET_VECTOR_ELT(out, 1, Rf_ScalarString(Rf_mkCharLenCE((const char *)RAW(data), (int)XLENGTH(data), CE_UTF8)));
  } else {
    SET_VECTOR_ELT(out, 1, data);
  }
  SEXP names = PROTECT(Rf_allocVector(STRSXP, 2));
  SET_STRING_ELT(names, 0, Rf_mkChar("status"));
  SET_STRING_ELT(names, 1, Rf_mkChar("data"));
  Rf_setAttrib(out, R_NamesSymbol, names);
  UNPROTECT(3);
  return out;
}

/* The machine's IPv4 addresses, loopback excluded, named by interface. */
static SEXP rmirai_interfaces(void) {
  /* Gathered first, so no R allocation (which may raise an error) happens while the list from
   * getifaddrs is held. */
  enum { MAX = 64 };
  char addr[MAX][INET_ADDRSTRLEN], name[MAX][IF_NAMESIZE + 1];
  int n = 0;
  struct ifaddrs *all = NULL;
  if (getifaddrs(&all) == 0) {
    for (struct ifaddrs *i = all; i && n < MAX; i = i->ifa_next) {
      if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK)) continue;
      inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, addr[n], sizeof addr[n]);
      snprintf(name[n], sizeof name[n], "%s", i->ifa_name);
      n++;
    }
    freeifaddrs(all);
  }
  SEXP out = PROTECT(Rf_allocVector(STRSXP, n));
  SEXP names = PROTECT(Rf_allocVector(STRSXP, n));
  for (int k = 0; k < n; k++) {
    SET_STRING_ELT(out, k, Rf_mkChar(addr[k]));
    SET_STRING_ELT(names, k, Rf_mkChar(name[k]));
  }
  Rf_setAttrib(out, R_NamesSymbol, names);
  UNPROTECT(2);
  return out;
}

/* `n` random letters and digits from the system's random source (/dev/urandom). */
static SEXP rmirai_random_name(SEXP n) {
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  int len = Rf_asInteger(n);
  if (len < 1 || len > 64) Rf_error("a name of 1 to 64 characters");
  unsigned char bytes[64];
  FILE *f = fopen("/dev/urandom", "rb");
  size_t got = f ? fread(bytes, 1, (size_t)len, f) : 0;
  if (f) fclose(f);
  if (got != (size_t)len) Rf_error("cannot read /dev/urandom");
  char name[65];
  for (int i = 0; i < len; i++) name[i] = alphabet[bytes[i] % (sizeof alphabet - 1)];
  name[len] = 0;
  return Rf_mkString(name);
}

/* ---- daemon ------------------------------------------------------------------------------- */

/* The R side of a daemon is an environment (the frame of the package's `serve`) holding the
 * functions called below and the serialization hooks `read_hook` and `write_hook`.
 *
 * libmirai calls the callbacks below from its own (Rust) frames: no R error may longjmp out of
 * them, so each runs its whole body under R_ToplevelExec. */
typedef struct {
  SEXP env;
  pthread_t main_thread;
  /* Whether R is evaluating a task: a cancel interrupts R only then (not its cleanup, nor the
   * next task, nor, in a sync profile, the user's own code). */
  pthread_mutex_t lock;
  int evaluating;
  int signalled; /* a SIGINT was sent during this evaluation */
} evaluator;

static SEXP s_evaluate, s_failed, s_init, s_cleanup;

/* A variable seen from the daemon's frame (its own, else the package's). */
static SEXP daemon_var(evaluator *ev, SEXP sym) {
  SEXP v = Rf_findVar(sym, ev->env);
  return v == R_UnboundValue ? R_NilValue : v;
}

static void set_evaluating(evaluator *ev, int on) {
  pthread_mutex_lock(&ev->lock);
  ev->evaluating = on;
  int signalled = ev->signalled;
  ev->signalled = 0;
  pthread_mutex_unlock(&ev->lock);
  if (!on && signalled) {
    /* The SIGINT sent is delivered at the latest on return from this system call; then forget
     * it. (Only after a cancel: no system call on the usual task.) */
    sigset_t pending;
    sigpending(&pending);
  }
  if (!on) R_interrupts_pending = 0;
}

typedef struct {
  evaluator *ev;
  uint64_t id;
  const uint32_t *stream;
  const uint8_t *blob;
  size_t len;
} init_args;

static void init_body(void *data) {
  init_args *a = data;
  SEXP s = PROTECT(Rf_allocVector(REALSXP, 6));
  for (int i = 0; i < 6; i++) REAL(s)[i] = (double)a->stream[i];
  SEXP b = PROTECT(Rf_allocVector(RAWSXP, (R_xlen_t)a->len));
  if (a->len) memcpy(RAW(b), a->blob, a->len);
  SEXP call = PROTECT(Rf_lang4(daemon_var(a->ev, s_init), Rf_ScalarReal((double)a->id), s, b));
  R_tryEvalSilent(call, R_GlobalEnv, NULL);
  UNPROTECT(3);
}

static void on_init(void *userdata, uint64_t id, const uint32_t *stream, const uint8_t *blob, size_t len) {
  init_args a = {userdata, id, stream, blob, len};
  R_ToplevelExec(init_body, &a);
}

/* One evaluation's state, for the steps run under R_ToplevelExec. */
typedef struct {
  evaluator *ev;
  const uint8_t *data;
  size_t len;
  bool everywhere;
  const mirai_interrupt *intr;
  SEXP value;
  mirai_output *out;
  mirai_eval_status status;
} evaluation;

static void read_task(void *data) {
  evaluation *e = data;
  e->value = unserialize_from(e->data, e->len, daemon_var(e->ev, s_read_hook));
}

static void write_value(void *data) {
  evaluation *e = data;
  mirai_output_set(e->out, NULL, 0);
  serialize_output(e->out, e->value, daemon_var(e->ev, s_write_hook));
}

/* The value standing for a failure: the miraiError or miraiInterrupt the R side recorded, or
 * a miraiError made from R's error message. */
static SEXP failure(evaluator *ev, mirai_eval_status *status) {
  SEXP call = PROTECT(Rf_lang2(daemon_var(ev, s_failed), Rf_mkString(R_curErrorBuf())));
  SEXP res = R_tryEvalSilent(call, R_GlobalEnv, NULL);
  UNPROTECT(1);
  *status = res != NULL && Rf_inherits(res, "miraiInterrupt") ? MIRAI_EVAL_STATUS_INTERRUPTED : MIRAI_EVAL_STATUS_ERROR;
  return res != NULL ? res : R_NilValue;
}

/* Reads the task where libmirai holds it, evaluates it through the R side (which records an
 * error or interrupt before it unwinds to here), and serializes the value into the reply. */
static void evaluate_body(void *data) {
  evaluation *e = data;
  evaluator *ev = e->ev;
  const void *vmax = vmaxget();
  SEXP value;
  if (!R_ToplevelExec(read_task, e)) {
    value = failure(ev, &e->status);
  } else {
    SEXP call = PROTECT(Rf_lang3(daemon_var(ev, s_evaluate), e->value, Rf_ScalarLogical(e->everywhere)));
    int failed = 0;
    set_evaluating(ev, 1);
    /* Cancelled before R started: interrupt at R's first check. */
    if (mirai_interrupt_is_set(e->intr)) R_interrupts_pending = 1;
    value = R_tryEvalSilent(call, R_GlobalEnv, &failed);
    set_evaluating(ev, 0);
    UNPROTECT(1);
    if (failed) value = failure(ev, &e->status);
    else if (Rf_inherits(value, "miraiError")) e->status = MIRAI_EVAL_STATUS_ERROR;
    else if (Rf_inherits(value, "miraiInterrupt")) e->status = MIRAI_EVAL_STATUS_INTERRUPTED;
  }
  PROTECT(e->value = value);
  if (!R_ToplevelExec(write_value, e)) {
    /* The value cannot be serialized: send why instead. */
    PROTECT(e->value = failure(ev, &e->status));
    if (!R_ToplevelExec(write_value, e)) mirai_output_set(e->out, NULL, 0);
    UNPROTECT(1);
  }
  UNPROTECT(1);
  vmaxset(vmax);
}

static mirai_eval_status on_evaluate(void *userdata, const uint8_t *data, size_t len, bool everywhere,
                                     const mirai_interrupt *intr, mirai_output *out) {
  evaluation e = {userdata, data, len, everywhere, intr, R_NilValue, out, MIRAI_EVAL_STATUS_VALUE};
  if (!R_ToplevelExec(evaluate_body, &e)) {
    /* Only R itself failing (out of memory) gets here. */
    set_evaluating(userdata, 0);
    mirai_output_set(out, NULL, 0);
    return MIRAI_EVAL_STATUS_ERROR;
  }
  return e.status;
}

static void cleanup_body(void *data) {
  SEXP call = PROTECT(Rf_lang1(daemon_var(data, s_cleanup)));
  R_tryEvalSilent(call, R_GlobalEnv, NULL);
  UNPROTECT(1);
}

static void on_cleanup(void *userdata) { R_ToplevelExec(cleanup_body, userdata); }

/* Runs on libmirai's I/O thread when the running task is cancelled: interrupt R's main thread
 * as a user's Ctrl-C would, if it is still evaluating. The signal also wakes blocking calls
 * (Sys.sleep, waits on connections), which a flag alone would not. */
static void on_interrupt(void *userdata) {
  evaluator *ev = userdata;
  pthread_mutex_lock(&ev->lock);
  if (ev->evaluating) {
    pthread_kill(ev->main_thread, SIGINT);
    ev->signalled = 1;
  }
  pthread_mutex_unlock(&ev->lock);
}

/* secret and tls_ca: NULL to read them from the environment (MIRAI_SECRET, MIRAI_TLS_CA). */
static SEXP rmirai_daemon(SEXP url, SEXP opts, SEXP env, SEXP secret, SEXP tls_ca) {
  mirai_daemon_options o;
  mirai_daemon_options_init(&o);
  /* opts: c(retry, autoexit(0 exit, 1 finish, 2 stay), maxtasks, idletime, walltime) */
  o.retry = REAL(opts)[0] != 0;
  o.autoexit = (mirai_autoexit)(int)REAL(opts)[1];
  o.maxtasks = R_FINITE(REAL(opts)[2]) ? (uint64_t)REAL(opts)[2] : 0;
  o.idletime_ms = R_FINITE(REAL(opts)[3]) ? (int64_t)REAL(opts)[3] : -1;
  o.walltime_ms = R_FINITE(REAL(opts)[4]) ? (int64_t)REAL(opts)[4] : -1;
  o.label = "R mirai daemon";
  o.secret_hex = opt_string(secret, 0);
  o.tls_ca_pem = opt_string(tls_ca, 0);
  evaluator ev = {env, pthread_self(), PTHREAD_MUTEX_INITIALIZER, 0, 0};
  mirai_evaluator c = {&ev, on_init, on_evaluate, on_cleanup, on_interrupt};
  int code = 0;
  mirai_result r = mirai_daemon_run(CHAR(STRING_ELT(url, 0)), &o, &c, &code);
  if (r != MIRAI_RESULT_OK) fail(r);
  return Rf_ScalarInteger(code);
}

static const R_CallMethodDef calls[] = {
    {"rmirai_listen", (DL_FUNC)&rmirai_listen, 5},
    {"rmirai_tls_ca", (DL_FUNC)&rmirai_tls_ca, 1},
    {"rmirai_url", (DL_FUNC)&rmirai_url, 1},
    {"rmirai_secret", (DL_FUNC)&rmirai_secret, 1},
    {"rmirai_launch", (DL_FUNC)&rmirai_launch, 4},
    {"rmirai_wait_connections", (DL_FUNC)&rmirai_wait_connections, 2},
    {"rmirai_submit", (DL_FUNC)&rmirai_submit, 4},
    {"rmirai_setup", (DL_FUNC)&rmirai_setup, 2},
    {"rmirai_state", (DL_FUNC)&rmirai_state, 0},
    {"rmirai_state_changed", (DL_FUNC)&rmirai_state_changed, 1},
    {"rmirai_collect", (DL_FUNC)&rmirai_collect, 1},
    {"rmirai_data", (DL_FUNC)&rmirai_data, 1},
    {"rmirai_on_done", (DL_FUNC)&rmirai_on_done, 2},
    {"rmirai_use_later", (DL_FUNC)&rmirai_use_later, 1},
    {"rmirai_memory", (DL_FUNC)&rmirai_memory, 1},
    {"rmirai_everywhere", (DL_FUNC)&rmirai_everywhere, 3},
    {"rmirai_resolved", (DL_FUNC)&rmirai_resolved, 1},
    {"rmirai_cancel", (DL_FUNC)&rmirai_cancel, 1},
    {"rmirai_counters", (DL_FUNC)&rmirai_counters, 1},
    {"rmirai_race", (DL_FUNC)&rmirai_race, 2},
    {"rmirai_close", (DL_FUNC)&rmirai_close, 2},
    {"rmirai_daemon", (DL_FUNC)&rmirai_daemon, 5},
    {"rmirai_launch_ssh", (DL_FUNC)&rmirai_launch_ssh, 7},
    {"rmirai_launch_remote", (DL_FUNC)&rmirai_launch_remote, 6},
    {"rmirai_launch_cluster", (DL_FUNC)&rmirai_launch_cluster, 5},
    {"rmirai_cancel_jobs", (DL_FUNC)&rmirai_cancel_jobs, 1},
    {"rmirai_wait_launched", (DL_FUNC)&rmirai_wait_launched, 3},
    {"rmirai_http_request", (DL_FUNC)&rmirai_http_request, 4},
    {"rmirai_interfaces", (DL_FUNC)&rmirai_interfaces, 0},
    {"rmirai_random_name", (DL_FUNC)&rmirai_random_name, 1},
    {NULL, NULL, 0}};

void R_init_mirai(DllInfo *dll) {
  host_tag = Rf_install("mirai_host");
  task_tag = Rf_install("mirai_task");
  s_handle = Rf_install("handle");
  s_profile = Rf_install("profile");
  s_value = Rf_install("value");
  s_host = Rf_install("host");
  s_data = Rf_install("data");
  s_id = Rf_install("id");
  s_read_hook = Rf_install("read_hook");
  s_write_hook = Rf_install("write_hook");
  s_result = Rf_install("result");
  s_evaluate = Rf_install("evaluate");
  s_failed = Rf_install("failed");
  s_init = Rf_install("init");
  s_cleanup = Rf_install("cleanup_task");
  mirai_class = Rf_allocVector(STRSXP, 2);
  R_PreserveObject(mirai_class);
  SET_STRING_ELT(mirai_class, 0, Rf_mkChar("mirai"));
  SET_STRING_ELT(mirai_class, 1, Rf_mkChar("recvAio"));
  error_value_class = Rf_allocVector(STRSXP, 2);
  R_PreserveObject(error_value_class);
  SET_STRING_ELT(error_value_class, 0, Rf_mkChar("errorValue"));
  SET_STRING_ELT(error_value_class, 1, Rf_mkChar("try-error"));
  R_registerRoutines(dll, NULL, calls, NULL, NULL);
  R_useDynamicSymbols(dll, FALSE);
  R_forceSymbols(dll, TRUE);
}
