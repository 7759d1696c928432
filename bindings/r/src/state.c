/* A cheap check of what a daemon's `cleanup` restores after each task: the global
 * environment's variables, the search path and the options. R-level comparison (ls(),
 * search(), options(), which sorts) costs tens of microseconds per task; comparing object
 * identities here costs about one, so the R code restores only what a task changed. */
#include <string.h>

#include "rmirai.h"

static SEXP options_list(void) { return Rf_findVar(Rf_install(".Options"), R_BaseEnv); }

/* list(global names, search path environments, option names, option values). */
SEXP rmirai_state(void) {
  SEXP out = PROTECT(Rf_allocVector(VECSXP, 4));
  SET_VECTOR_ELT(out, 0, R_lsInternal3(R_GlobalEnv, TRUE, FALSE));
  R_xlen_t n = 0;
  for (SEXP e = ENCLOS(R_GlobalEnv); e != R_EmptyEnv; e = ENCLOS(e)) n++;
  SEXP path = Rf_allocVector(VECSXP, n);
  SET_VECTOR_ELT(out, 1, path);
  n = 0;
  for (SEXP e = ENCLOS(R_GlobalEnv); e != R_EmptyEnv; e = ENCLOS(e)) SET_VECTOR_ELT(path, n++, e);
  SEXP opts = options_list();
  R_xlen_t k = Rf_length(opts);
  SEXP tags = Rf_allocVector(VECSXP, k);
  SET_VECTOR_ELT(out, 2, tags);
  SEXP values = Rf_allocVector(VECSXP, k);
  SET_VECTOR_ELT(out, 3, values);
  k = 0;
  for (SEXP o = opts; o != R_NilValue; o = CDR(o), k++) {
    SET_VECTOR_ELT(tags, k, TAG(o));
    SET_VECTOR_ELT(values, k, CAR(o));
  }
  UNPROTECT(1);
  return out;
}

static int same_globals(SEXP before) {
  SEXP now = PROTECT(R_lsInternal3(R_GlobalEnv, TRUE, FALSE));
  R_xlen_t n = XLENGTH(now), m = XLENGTH(before);
  int same = n == m;
  for (R_xlen_t i = 0; same && i < n; i++) {
    SEXP name = STRING_ELT(now, i);
    int found = 0;
    /* Names are cached CHARSXPs: equal names are the same object. Usually in the same
     * order, so the search starts at the same position. */
    for (R_xlen_t j = 0; j < m && !found; j++) found = STRING_ELT(before, (i + j) % m) == name;
    same = found;
  }
  UNPROTECT(1);
  return same;
}

static int same_path(SEXP before) {
  R_xlen_t i = 0, n = XLENGTH(before);
  for (SEXP e = ENCLOS(R_GlobalEnv); e != R_EmptyEnv; e = ENCLOS(e), i++) {
    if (i >= n || VECTOR_ELT(before, i) != e) return 0;
  }
  return i == n;
}

static int same_options(SEXP tags, SEXP values) {
  R_xlen_t i = 0, n = XLENGTH(tags);
  for (SEXP o = options_list(); o != R_NilValue; o = CDR(o), i++) {
    if (i >= n || VECTOR_ELT(tags, i) != TAG(o) || VECTOR_ELT(values, i) != CAR(o)) return 0;
  }
  return i == n;
}

int state_unchanged(SEXP state) {
  return same_globals(VECTOR_ELT(state, 0)) && same_path(VECTOR_ELT(state, 1)) &&
         same_options(VECTOR_ELT(state, 2), VECTOR_ELT(state, 3));
}

/* c(globals, search path, options): TRUE where that part differs from `state`. */
SEXP rmirai_state_changed(SEXP state) {
  SEXP out = PROTECT(Rf_allocVector(LGLSXP, 3));
  LOGICAL(out)[0] = !same_globals(VECTOR_ELT(state, 0));
  LOGICAL(out)[1] = !same_path(VECTOR_ELT(state, 1));
  LOGICAL(out)[2] = !same_options(VECTOR_ELT(state, 2), VECTOR_ELT(state, 3));
  UNPROTECT(1);
  return out;
}
