/* mirai objects: submission, collection, broadcasts, cancellation, and completion announced on
 * R's event loop for promises. */
#include <stdlib.h>
#include <string.h>

#include "rmirai.h"

#include <R_ext/Utils.h>
#include <Rversion.h>

/* Set up when the package loads: the classes of mirai and errorValue objects, the unresolved
 * value, and the R function behind a mirai's `data` binding. */
static SEXP mirai_class, error_value_class, unresolved_value, data_fun;
static int mirai_count = 0; /* the `id` of the latest mirai */
/* The options of submissions with a timeout, set just before each: one object for the
 * session, so a submission allocates none. */
static mirai_submit_options *timed_options = NULL;

void task_init(void) {
  timed_options = mirai_submit_options_new();
  if (timed_options == NULL) Rf_error("cannot allocate submit options");
  mirai_class = Rf_allocVector(STRSXP, 2);
  R_PreserveObject(mirai_class);
  SET_STRING_ELT(mirai_class, 0, Rf_mkChar("mirai"));
  SET_STRING_ELT(mirai_class, 1, Rf_mkChar("recvAio"));
  error_value_class = Rf_allocVector(STRSXP, 2);
  R_PreserveObject(error_value_class);
  SET_STRING_ELT(error_value_class, 0, Rf_mkChar("errorValue"));
  SET_STRING_ELT(error_value_class, 1, Rf_mkChar("try-error"));
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

SEXP rmirai_use_later(SEXP ready) {
  if (!exec_later) {
    exec_later = (exec_later_fn)R_GetCCallable("later", "execLaterNative2");
    promise_ready = ready;
    R_PreserveObject(ready);
  }
  return R_NilValue;
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

SEXP rmirai_setup(SEXP fun, SEXP unresolved) {
  data_fun = fun;
  R_PreserveObject(fun);
  unresolved_value = unresolved;
  R_PreserveObject(unresolved);
  return R_NilValue;
}

/* Serializes `task` (with the profile's `write_hook`) into a libmirai buffer and submits it to
 * the profile's host; returns the mirai. At the memory cap it waits in slices, so the user can
 * interrupt; with `try_` TRUE, a full queue returns NULL at once instead. */
SEXP rmirai_submit(SEXP p, SEXP task, SEXP timeout, SEXP try_, SEXP retry) {
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
  /* Below the cap, and only this thread submits: the call does not block. */
  mirai_buffer *buf = serialize_buffer(task, env_var(p, s_write_hook));
  /* A serialization hook is R code: it may even have reset the profile. */
  SEXP current = env_var(p, s_host);
  if (TYPEOF(current) != EXTPTRSXP || R_ExternalPtrAddr(current) == NULL) {
    mirai_buffer_free(buf);
    Rf_error("invalid or closed host");
  }
  /* Set after serializing: a hook's R code may itself submit with these options. */
  const mirai_submit_options *o = NULL;
  if (!Rf_isNull(timeout) || !Rf_isNull(retry)) {
    mirai_submit_options_set_timeout_ms(timed_options, Rf_isNull(timeout) ? -1 : (int64_t)Rf_asReal(timeout));
    mirai_submit_options_set_retry(timed_options, Rf_isNull(retry) ? -1 : (int64_t)Rf_asReal(retry));
    o = timed_options;
  }
  mirai_task *t = NULL;
  mirai_result r = mirai_host_submit_buffer(R_ExternalPtrAddr(current), buf, o, &t);
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

/* Entry points taking a mirai are reachable with anything from R. */
static void check_mirai(SEXP m) {
  if (TYPEOF(m) != ENVSXP || !Rf_inherits(m, "mirai")) Rf_error("not a mirai");
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
  SEXP value = adopt_result(b);
  if (value == NULL) {
    SEXP hook = Rf_isEnvironment(profile) ? env_var(profile, s_read_hook) : R_NilValue;
    value = unserialize_from(b->data, b->len, hook);
  }
  PROTECT(value);
  bytes_finalizer(held);
  R_removeVarFromFrame(s_result, m);
  UNPROTECT(1);
  return value;
}

/* The value of mirai `m`, waiting (interruptibly) until it resolves. The value is kept in the
 * mirai; an ephemeral mirai's own host is closed once it is in. */
SEXP rmirai_collect(SEXP m) {
  check_mirai(m);
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
SEXP rmirai_data(SEXP m) {
  check_mirai(m);
  SEXP v = Rf_findVarInFrame3(m, s_value, TRUE);
  if (v != R_UnboundValue) return v;
  if (!mirai_task_is_resolved(task_of(env_var(m, s_handle)))) return unresolved_value;
  return rmirai_collect(m);
}

/* From now on, the task's completion is announced on R's event loop under `key` (now, if it
 * has already resolved). Needs rmirai_use_later first. */
SEXP rmirai_on_done(SEXP t, SEXP key) {
  if (!exec_later) Rf_error("the later package is not in use");
  mirai_result r = mirai_task_set_callback(task_of(t), on_task_done, (void *)(uintptr_t)Rf_asReal(key));
  if (r != MIRAI_RESULT_OK) fail(r);
  return R_NilValue;
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
SEXP rmirai_everywhere(SEXP p, SEXP task, SEXP min) {
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

SEXP rmirai_resolved(SEXP t) { return Rf_ScalarLogical(mirai_task_is_resolved(task_of(t))); }

SEXP rmirai_cancel(SEXP t) { return Rf_ScalarLogical(mirai_task_cancel(task_of(t))); }
