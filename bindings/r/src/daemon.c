/* The daemon: libmirai's runtime calling back into R to evaluate each task. */
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "rmirai.h"

/* R's flag for a pending user interrupt (declared in R_ext/GraphicsDevice.h; R's own SIGINT
 * handler sets it, from whichever thread takes the signal). */
LibExtern int R_interrupts_pending;

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

static SEXP s_evaluate, s_failed, s_init, s_cleanup, s_cleans, s_snapshot;

void daemon_init(void) {
  s_evaluate = Rf_install("evaluate");
  s_failed = Rf_install("failed");
  s_init = Rf_install("init");
  s_cleanup = Rf_install("cleanup_task");
  s_cleans = Rf_install("cleans");
  s_snapshot = Rf_install("snapshot");
}

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
  int task_read = R_ToplevelExec(read_task, e);
  /* The task is in R objects now: its bytes can go (or hold the result) while it runs. */
  mirai_output_release_task(e->out);
  if (!task_read) {
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

typedef struct {
  evaluator *ev;
  int needed;
} cleanup_check;

/* Whether the R side's cleanup has anything to do: with `cleanup`, only when the task changed
 * the global state it restores. The usual task changes nothing, and that is checked here: a
 * call into the R side for every task costs more than the check. */
static void check_body(void *data) {
  cleanup_check *c = data;
  SEXP cleans = daemon_var(c->ev, s_cleans);
  if (TYPEOF(cleans) != LGLSXP || XLENGTH(cleans) != 1 || LOGICAL(cleans)[0] != TRUE) {
    c->needed = 0;
    return;
  }
  SEXP snapshot = daemon_var(c->ev, s_snapshot);
  SEXP names = Rf_getAttrib(snapshot, R_NamesSymbol);
  SEXP state = R_NilValue;
  for (R_xlen_t i = 0; TYPEOF(snapshot) == VECSXP && i < XLENGTH(snapshot) && i < XLENGTH(names); i++) {
    if (strcmp(CHAR(STRING_ELT(names, i)), "state") == 0) state = VECTOR_ELT(snapshot, i);
  }
  c->needed = TYPEOF(state) != VECSXP || XLENGTH(state) != 4 || !state_unchanged(state);
}

static void cleanup_body(void *data) {
  SEXP call = PROTECT(Rf_lang1(daemon_var(data, s_cleanup)));
  R_tryEvalSilent(call, R_GlobalEnv, NULL);
  UNPROTECT(1);
}

static void on_cleanup(void *userdata) {
  /* If the check itself fails (R out of memory), the R side decides. */
  cleanup_check c = {userdata, 1};
  R_ToplevelExec(check_body, &c);
  if (c.needed) R_ToplevelExec(cleanup_body, userdata);
}

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

/* A setter's refusal as an R error, after freeing the options (an R error does not return). */
static void check_option(mirai_result r, mirai_daemon_options *o) {
  if (r != MIRAI_RESULT_OK) {
    mirai_daemon_options_free(o);
    fail(r);
  }
}

/* secret and tls_ca: NULL to read them from the environment (MIRAI_SECRET, MIRAI_TLS_CA). */
SEXP rmirai_daemon(SEXP url, SEXP opts, SEXP env, SEXP secret, SEXP tls_ca) {
  if (TYPEOF(opts) != REALSXP || XLENGTH(opts) != 5) Rf_error("daemon options must be 5 numbers");
  /* Whatever may raise an R error comes before the options exist, so they cannot leak. */
  const char *where = one_string(url, "url");
  const char *secret_hex = opt_string(secret, 0), *ca = opt_string(tls_ca, 0);
  /* opts: c(retry, autoexit(0 exit, 1 finish, 2 stay), maxtasks, idletime, walltime); a limit
   * that is not finite is no limit, and so (as it always was here) is a maxtasks below 1. */
  const double *v = REAL(opts);
  mirai_daemon_options *o = mirai_daemon_options_new();
  if (o == NULL) Rf_error("cannot allocate daemon options");
  check_option(mirai_daemon_options_set_retry(o, v[0] != 0), o);
  check_option(mirai_daemon_options_set_autoexit(o, (int32_t)v[1], 200), o);
  if (R_FINITE(v[2]) && v[2] >= 1) check_option(mirai_daemon_options_set_maxtasks(o, (uint64_t)v[2]), o);
  if (R_FINITE(v[3]) && v[3] >= 0) check_option(mirai_daemon_options_set_idletime_ms(o, (uint64_t)v[3]), o);
  if (R_FINITE(v[4]) && v[4] >= 0) check_option(mirai_daemon_options_set_walltime_ms(o, (uint64_t)v[4]), o);
  check_option(mirai_daemon_options_set_label(o, "R mirai daemon"), o);
  if (secret_hex) check_option(mirai_daemon_options_set_secret_hex(o, secret_hex), o);
  if (ca) check_option(mirai_daemon_options_set_tls_ca(o, ca), o);
  evaluator ev = {env, pthread_self(), PTHREAD_MUTEX_INITIALIZER, 0, 0};
  mirai_evaluator c = {&ev, on_init, on_evaluate, on_cleanup, on_interrupt};
  int code = 0;
  mirai_result r = mirai_daemon_run(where, o, &c, &code);
  mirai_daemon_options_free(o);
  if (r != MIRAI_RESULT_OK) fail(r);
  return Rf_ScalarInteger(code);
}
