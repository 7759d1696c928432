/* Remote launchers (SSH, cluster schedulers, any command) and HTTP requests for http_config. */
#include <limits.h>
#include <string.h>

#include "rmirai.h"

SEXP rmirai_launch_ssh(SEXP h, SEXP remotes, SEXP tunnel, SEXP tunnel_port, SEXP timeout,
                              SEXP options, SEXP argv) {
  mirai_result r = mirai_host_launch_ssh(
      host_of(h), c_strings(remotes), (size_t)XLENGTH(remotes), Rf_asLogical(tunnel) == TRUE,
      (uint16_t)Rf_asInteger(tunnel_port), (uint32_t)Rf_asInteger(timeout), c_strings(options),
      (size_t)XLENGTH(options), c_strings(argv), (size_t)XLENGTH(argv));
  if (r != MIRAI_RESULT_OK) fail(r);
  return R_NilValue;
}

SEXP rmirai_launch_remote(SEXP h, SEXP command, SEXP args, SEXP quote, SEXP argv, SEXP n) {
  mirai_result r = mirai_host_launch_remote(host_of(h), one_string(command, "command"), c_strings(args),
                                            (size_t)XLENGTH(args), Rf_asLogical(quote) == TRUE,
                                            c_strings(argv), (size_t)XLENGTH(argv), (size_t)Rf_asInteger(n));
  if (r != MIRAI_RESULT_OK) fail(r);
  return R_NilValue;
}

/* Cancels in the foreground (mirai_jobs_free, not _background): the finalizer also runs as the
 * session ends, and a cancel left to a thread then might never run, leaving the jobs queued. */
static void jobs_finalizer(SEXP j) {
  mirai_jobs_free((mirai_jobs *)R_ExternalPtrAddr(j));
  R_ClearExternalPtr(j);
}

/* `submit`: the submit command as the user named it (a full path, a site wrapper). */
SEXP rmirai_launch_cluster(SEXP h, SEXP scheduler, SEXP options, SEXP submit, SEXP argv, SEXP n) {
  mirai_jobs *jobs = NULL;
  mirai_result r = mirai_host_launch_cluster(host_of(h), (mirai_scheduler)Rf_asInteger(scheduler),
                                             c_strings(options), (size_t)XLENGTH(options),
                                             one_string(submit, "command"), NULL,
                                             c_strings(argv), (size_t)XLENGTH(argv), (size_t)Rf_asInteger(n), &jobs);
  if (r != MIRAI_RESULT_OK) fail(r);
  SEXP j = PROTECT(R_MakeExternalPtr(jobs, R_NilValue, R_NilValue));
  R_RegisterCFinalizerEx(j, jobs_finalizer, TRUE);
  UNPROTECT(1);
  return j;
}

SEXP rmirai_cancel_jobs(SEXP j) {
  mirai_jobs *jobs = (mirai_jobs *)R_ExternalPtrAddr(j);
  if (jobs) mirai_jobs_cancel(jobs);
  return R_NilValue;
}

/* Waits for n daemons of the latest launch, failing early with the launcher's error output. */
SEXP rmirai_wait_launched(SEXP h, SEXP n, SEXP timeout_ms) {
  mirai_result r = mirai_host_wait_launched(host_of(h), (uint64_t)Rf_asReal(n), (int64_t)Rf_asReal(timeout_ms));
  if (r != MIRAI_RESULT_OK) fail(r);
  return Rf_ScalarLogical(TRUE);
}


/* list(status, data) for an HTTP answer; the NNG-style error code (an integer) when there is none. */
SEXP rmirai_http_request(SEXP url, SEXP method, SEXP headers, SEXP body) {
  uint16_t status = 0;
  mirai_bytes response = {NULL, 0};
  mirai_result r = mirai_http_request(one_string(url, "url"), one_string(method, "method"), c_strings(headers),
                                      (size_t)XLENGTH(headers), one_string(body, "data"), &status, &response);
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
