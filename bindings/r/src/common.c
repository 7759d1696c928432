/* What the package's C files share: handles as external pointers, errors from libmirai, and
 * small conversions. */
#include <string.h>

#include "rmirai.h"

SEXP host_tag, task_tag;
SEXP s_handle, s_profile, s_value, s_host, s_data, s_id, s_read_hook, s_write_hook, s_result;

void fail(mirai_result r) {
  char why[1024];
  mirai_last_error(why, sizeof why);
  Rf_error("%s", why[0] ? why : mirai_strerror(r));
}

mirai_host *host_of(SEXP h) {
  if (TYPEOF(h) != EXTPTRSXP || R_ExternalPtrTag(h) != host_tag || !R_ExternalPtrAddr(h))
    Rf_error("invalid or closed host");
  return (mirai_host *)R_ExternalPtrAddr(h);
}

mirai_task *task_of(SEXP t) {
  if (TYPEOF(t) != EXTPTRSXP || R_ExternalPtrTag(t) != task_tag || !R_ExternalPtrAddr(t))
    Rf_error("invalid task");
  return (mirai_task *)R_ExternalPtrAddr(t);
}

void host_finalizer(SEXP h) {
  mirai_host_free((mirai_host *)R_ExternalPtrAddr(h));
  R_ClearExternalPtr(h);
}

static void task_finalizer(SEXP t) {
  mirai_task_free((mirai_task *)R_ExternalPtrAddr(t));
  R_ClearExternalPtr(t);
}

SEXP wrap_task(mirai_task *task) {
  SEXP t = PROTECT(R_MakeExternalPtr(task, task_tag, R_NilValue));
  R_RegisterCFinalizerEx(t, task_finalizer, TRUE);
  UNPROTECT(1);
  return t;
}

/* An optional string: NULL for NA or a missing element. */
const char *opt_string(SEXP x, R_xlen_t i) {
  if (TYPEOF(x) != STRSXP || XLENGTH(x) <= i || STRING_ELT(x, i) == NA_STRING) return NULL;
  return CHAR(STRING_ELT(x, i));
}

/* A variable of an environment, R_NilValue when unbound. */
SEXP env_var(SEXP env, SEXP sym) {
  if (TYPEOF(env) != ENVSXP) Rf_error("not a mirai or compute profile");
  SEXP v = Rf_findVarInFrame3(env, sym, TRUE);
  return v == R_UnboundValue ? R_NilValue : v;
}

const char *one_string(SEXP x, const char *what) {
  if (TYPEOF(x) != STRSXP || XLENGTH(x) != 1 || STRING_ELT(x, 0) == NA_STRING)
    Rf_error("`%s` must be a character string", what);
  return CHAR(STRING_ELT(x, 0));
}

const char **c_strings(SEXP x) {
  if (TYPEOF(x) != STRSXP) Rf_error("expected a character vector");
  R_xlen_t n = XLENGTH(x);
  for (R_xlen_t i = 0; i < n; i++)
    if (STRING_ELT(x, i) == NA_STRING) Rf_error("expected a character vector without NA");
  const char **out = (const char **)R_alloc((size_t)(n ? n : 1), sizeof(char *));
  for (R_xlen_t i = 0; i < n; i++) out[i] = CHAR(STRING_ELT(x, i));
  return out;
}
