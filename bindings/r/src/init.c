/* The R package's C layer over libmirai: hosts and tasks as external pointers with
 * finalizers, interruptible waits, and the daemon loop calling back into R. */
#include "rmirai.h"

#include <R_ext/Rdynload.h>
#include <R_ext/Utils.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "mirai.h"

/* R's flag for a pending user interrupt (declared in R_ext/GraphicsDevice.h; R's own SIGINT
 * handler sets it, from whichever thread takes the signal). */
LibExtern int R_interrupts_pending;

/* Slice for interruptible waits: R's mirai re-checks for interrupts every 400 ms. */
#define SLICE_MS 400

static SEXP host_tag, task_tag;
static SEXP s_handle, s_profile, s_value, s_host, s_data, s_id, s_read_hook, s_write_hook;
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
static void run_ready(void *data) {
  SEXP call = PROTECT(Rf_lang2(promise_ready, Rf_ScalarReal((double)(uintptr_t)data)));
  R_tryEvalSilent(call, R_GlobalEnv, NULL);
  UNPROTECT(1);
}

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
  SEXP fun = PROTECT(Rf_allocSExp(CLOSXP));
  SET_FORMALS(fun, R_NilValue);
  SET_BODY(fun, body);
  SET_CLOENV(fun, R_BaseEnv);
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
  mirai_task *t = NULL;
  mirai_result r = mirai_host_submit_buffer(host, serialize_buffer(task, env_var(p, s_write_hook)), &o, &t);
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

typedef struct {
  mirai_bytes bytes;
  SEXP hook;
} result_read;

static SEXP read_result(void *data) {
  result_read *rr = data;
  return unserialize_from(rr->bytes.data, rr->bytes.len, rr->hook);
}

static void free_result(void *data) { mirai_bytes_free(&((result_read *)data)->bytes); }

/* A resolved task's value: the unserialized result (read where libmirai holds it, then freed),
 * or an errorValue. */
static SEXP task_value(mirai_task *task, SEXP profile) {
  mirai_status status;
  int32_t code = 0;
  mirai_result r = mirai_task_status(task, &status, &code);
  if (r != MIRAI_RESULT_OK) fail(r);
  if (status == MIRAI_STATUS_FAILED) return error_value(code);
  result_read rr = {{NULL, 0}, Rf_isEnvironment(profile) ? env_var(profile, s_read_hook) : R_NilValue};
  r = mirai_task_take_result(task, &rr.bytes);
  if (r != MIRAI_RESULT_OK) fail(r);
  return R_ExecWithCleanup(read_result, &rr, free_result, &rr);
}

/* The value of mirai `m`, waiting (interruptibly) until it resolves. The value is kept in the
 * mirai; an ephemeral mirai's own host is closed once it is in. */
static SEXP rmirai_collect(SEXP m) {
  SEXP v = Rf_findVarInFrame3(m, s_value, TRUE);
  if (v != R_UnboundValue) return v;
  mirai_task *task = task_of(env_var(m, s_handle));
  while (mirai_task_wait(task, SLICE_MS) == MIRAI_RESULT_TIMED_OUT) R_CheckUserInterrupt();
  v = PROTECT(task_value(task, env_var(m, s_profile)));
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

/* One mirai per copy of an everywhere broadcast of `task`. */
static SEXP rmirai_everywhere(SEXP p, SEXP task, SEXP min) {
  membuf b;
  membuf_init(&b, 1000);
  serialize_into(&b, task, env_var(p, s_write_hook));
  mirai_task **tasks = NULL;
  size_t n = 0;
  mirai_result r = mirai_host_everywhere(host_of(env_var(p, s_host)), RAW(b.vec), (size_t)b.len,
                                         (size_t)Rf_asInteger(min), &tasks, &n);
  if (r != MIRAI_RESULT_OK) fail(r);
  SEXP out = PROTECT(Rf_allocVector(VECSXP, (R_xlen_t)n));
  for (size_t i = 0; i < n; i++) SET_VECTOR_ELT(out, (R_xlen_t)i, wrap_task(mirai_task_clone(tasks[i])));
  mirai_task_array_free(tasks, n);
  for (size_t i = 0; i < n; i++) SET_VECTOR_ELT(out, (R_xlen_t)i, make_mirai(VECTOR_ELT(out, (R_xlen_t)i), p));
  UNPROTECT(2);
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
  SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
  SET_VECTOR_ELT(out, 0, Rf_ScalarInteger(status));
  SET_VECTOR_ELT(out, 1, Rf_ScalarString(Rf_mkCharLenCE((const char *)response.data, (int)response.len, CE_UTF8)));
  mirai_bytes_free(&response);
  SEXP names = PROTECT(Rf_allocVector(STRSXP, 2));
  SET_STRING_ELT(names, 0, Rf_mkChar("status"));
  SET_STRING_ELT(names, 1, Rf_mkChar("data"));
  Rf_setAttrib(out, R_NamesSymbol, names);
  UNPROTECT(2);
  return out;
}

/* The machine's IPv4 addresses, loopback excluded, named by interface. */
static SEXP rmirai_interfaces(void) {
  struct ifaddrs *all = NULL;
  if (getifaddrs(&all) != 0) return Rf_allocVector(STRSXP, 0);
  int n = 0;
  for (struct ifaddrs *i = all; i; i = i->ifa_next) {
    if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && !(i->ifa_flags & IFF_LOOPBACK)) n++;
  }
  SEXP out = PROTECT(Rf_allocVector(STRSXP, n));
  SEXP names = PROTECT(Rf_allocVector(STRSXP, n));
  int k = 0;
  for (struct ifaddrs *i = all; i && k < n; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK)) continue;
    char text[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, text, sizeof text);
    SET_STRING_ELT(out, k, Rf_mkChar(text));
    SET_STRING_ELT(names, k++, Rf_mkChar(i->ifa_name));
  }
  freeifaddrs(all);
  Rf_setAttrib(out, R_NamesSymbol, names);
  UNPROTECT(2);
  return out;
}

/* ---- daemon ------------------------------------------------------------------------------- */

/* The R side of a daemon is an environment (the frame of the package's `serve`) holding the
 * functions called below and the serialization hooks `read_hook` and `write_hook`. */
typedef struct {
  SEXP env;
  pthread_t main_thread;
} evaluator;

static SEXP s_evaluate, s_failed, s_init, s_cleanup;

/* A variable seen from the daemon's frame (its own, else the package's). */
static SEXP daemon_var(evaluator *ev, SEXP sym) {
  SEXP v = Rf_findVar(sym, ev->env);
  return v == R_UnboundValue ? R_NilValue : v;
}

static void on_init(void *userdata, uint64_t id, const uint32_t *stream, const uint8_t *blob, size_t len) {
  evaluator *ev = userdata;
  SEXP s = PROTECT(Rf_allocVector(REALSXP, 6));
  for (int i = 0; i < 6; i++) REAL(s)[i] = (double)stream[i];
  SEXP b = PROTECT(Rf_allocVector(RAWSXP, (R_xlen_t)len));
  if (len) memcpy(RAW(b), blob, len);
  SEXP call = PROTECT(Rf_lang4(daemon_var(ev, s_init), Rf_ScalarReal((double)id), s, b));
  R_tryEvalSilent(call, R_GlobalEnv, NULL);
  UNPROTECT(3);
}

/* One evaluation's state, for the steps run under R_ToplevelExec (which must not longjmp
 * into libmirai's frames). */
typedef struct {
  evaluator *ev;
  const uint8_t *data;
  size_t len;
  SEXP value;
  mirai_output *out;
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
static mirai_eval_status on_evaluate(void *userdata, const uint8_t *data, size_t len, bool everywhere,
                                     const mirai_interrupt *intr, mirai_output *out) {
  (void)intr;
  evaluator *ev = userdata;
  const void *vmax = vmaxget();
  evaluation e = {ev, data, len, R_NilValue, out};
  mirai_eval_status status = MIRAI_EVAL_STATUS_VALUE;
  SEXP value;
  if (!R_ToplevelExec(read_task, &e)) {
    value = failure(ev, &status);
  } else {
    SEXP call = PROTECT(Rf_lang3(daemon_var(ev, s_evaluate), e.value, Rf_ScalarLogical(everywhere)));
    int failed = 0;
    value = R_tryEvalSilent(call, R_GlobalEnv, &failed);
    UNPROTECT(1);
    if (failed) value = failure(ev, &status);
    else if (Rf_inherits(value, "miraiError")) status = MIRAI_EVAL_STATUS_ERROR;
    else if (Rf_inherits(value, "miraiInterrupt")) status = MIRAI_EVAL_STATUS_INTERRUPTED;
  }
  PROTECT(e.value = value);
  if (!R_ToplevelExec(write_value, &e)) {
    /* The value cannot be serialized: send why instead. */
    PROTECT(e.value = failure(ev, &status));
    if (!R_ToplevelExec(write_value, &e)) mirai_output_set(out, NULL, 0);
    UNPROTECT(1);
  }
  UNPROTECT(1);
  vmaxset(vmax);
  /* A cancel that arrived as the evaluation ended must not interrupt whatever runs next. */
  R_interrupts_pending = 0;
  return status;
}

static void on_cleanup(void *userdata) {
  evaluator *ev = userdata;
  SEXP call = PROTECT(Rf_lang1(daemon_var(ev, s_cleanup)));
  R_tryEvalSilent(call, R_GlobalEnv, NULL);
  UNPROTECT(1);
}

/* Runs on libmirai's I/O thread when the running task is cancelled: interrupt R's main thread
 * as a user's Ctrl-C would. The signal also wakes blocking calls (Sys.sleep, waits on
 * connections), which a flag alone would not. */
static void on_interrupt(void *userdata) {
  evaluator *ev = userdata;
  pthread_kill(ev->main_thread, SIGINT);
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
  evaluator ev = {env, pthread_self()};
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
