# mirai objects: submission, collection, cancellation, maps and broadcasts.

.unresolved <- structure(NA, class = "unresolvedValue")


error_value <- function(code) structure(as.integer(code), class = c("errorValue", "try-error"))

.onLoad <- function(libname, pkgname) .Call(rmirai_setup, data_value, .unresolved)

# The task for `expr` (serialized on submission): a symbol bound to a language object in `caller` stands for that
# object; `...` (named, or one environment) goes to the daemon's global environment; `.args`
# (named, or an environment) becomes the local environment of the expression.
build_task <- function(expr, globals, .args, caller, p = NULL) {
  if (is.symbol(expr)) {
    value <- tryCatch(eval(expr, caller), error = function(e) NULL)
    if (is.language(value)) expr <- value
  }
  if (length(globals) == 1L && is.environment(globals[[1L]]) && is.null(names(globals))) {
    globals <- as.list.environment(globals[[1L]], all.names = TRUE)
    globals[[".Random.seed"]] <- NULL
  } else if (length(globals) && (is.null(names(globals)) || any(!nzchar(names(globals))))) {
    stop(simpleError("all `...` arguments must be named, unless supplying an environment", sys.call(-1L)))
  }
  if (is.environment(.args)) .args <- as.list.environment(.args, all.names = TRUE)
  if (length(.args) && (is.null(names(.args)) || any(!nzchar(names(.args))))) {
    stop(simpleError("all items in `.args` must be named, unless supplying an environment", sys.call(-1L)))
  }
  # With `daemons(seed =)`, every mirai takes the next stream: results then do not depend on
  # which daemon, or how many, evaluate them.
  if (!is.null(p) && !is.null(p$seed)) globals[[".Random.seed"]] <- nextstream(p$name)
  c(.args, list(._expr_. = expr, ._globals_. = globals))
}

#' Evaluate an expression asynchronously on a daemon. With a memory cap set by
#' `daemons(memory =)`, waits (interruptibly) while the queue is full. Without daemons, the
#' expression runs in a new R process started for it alone.
mirai <- function(.expr, ..., .args = list(), .timeout = NULL, .compute = NULL) {
  if (missing(.expr)) stop("missing expression, perhaps wrap in {}?")
  check_timeout(.timeout)
  p <- get_profile(.compute)
  task <- build_task(substitute(.expr), list(...), .args, parent.frame(), p)
  if (is.null(p)) return(invisible(ephemeral_mirai(task, .timeout)))
  m <- .Call(rmirai_submit, p, task, .timeout, FALSE)
  if (isTRUE(p$sync)) sync_resolve(p, m)
  invisible(m)
}

#' Like `mirai()`, but returns NULL at once instead of waiting when the queue is at its memory cap.
try_mirai <- function(.expr, ..., .args = list(), .timeout = NULL, .compute = NULL) {
  if (missing(.expr)) stop("missing expression, perhaps wrap in {}?")
  check_timeout(.timeout)
  check_timeout(.timeout)
  p <- get_profile(.compute)
  stream <- p$stream
  task <- build_task(substitute(.expr), list(...), .args, parent.frame(), p)
  if (is.null(p)) return(invisible(ephemeral_mirai(task, .timeout)))
  m <- .Call(rmirai_submit, p, task, .timeout, TRUE)
  if (is.null(m)) {
    p$stream <- stream # a refused submission consumes no stream
    return(invisible(NULL))
  }
  if (isTRUE(p$sync)) sync_resolve(p, m)
  invisible(m)
}

check_timeout <- function(.timeout) {
  if (!is.null(.timeout)) check_number(.timeout, ".timeout", 0, 2^53)
}

# A mirai without daemons: a host of its own and one `Rscript` daemon for this task alone (its
# output discarded). The mirai keeps the host; collecting the value closes it.
ephemeral_mirai <- function(task, timeout) {
  p <- new.env(parent = emptyenv())
  p$host <- .Call(rmirai_listen, local_url(), 0, NULL, NULL, NULL, session_secret())
  .Call(rmirai_launch, p$host, c(rscript_path(), "-e", "mirai:::.daemon(\"{url}\")"), 1L, FALSE)
  m <- .Call(rmirai_submit, p, task, timeout, FALSE)
  m$host <- p$host
  m
}

# Evaluates the task of a sync profile in this process; the mirai is resolved on return.
sync_resolve <- function(p, m) {
  if (unresolved(m)) run_sync(p)
  collect_value(m)
}

# A mirai's value, waiting for it; kept in the mirai (see rmirai_collect).
collect_value <- function(env) .Call(rmirai_collect, env)

# Behind each mirai's `data` active binding (made in C).
data_value <- function(env) .Call(rmirai_data, env)

`[.mirai` <- function(x, i) collect_value(x)

print.mirai <- function(x, ...) {
  cat(if (unresolved(x)) "< mirai [] >\n" else "< mirai [$data] >\n")
  invisible(x)
}

print.mirai_map <- function(x, ...) {
  done <- sum(!vapply(x, unresolved, logical(1L)))
  cat(sprintf("< mirai map [%d/%d] >\n", done, length(x)))
  invisible(x)
}

print.errorValue <- function(x, ...) {
  cat(sprintf("'errorValue' int %s\n", error_text(x)))
  invisible(x)
}

print.miraiError <- function(x, ...) {
  cat(sprintf("'miraiError' chr %s\n", x))
  invisible(x)
}

print.miraiInterrupt <- function(x, ...) {
  cat("'miraiInterrupt' chr \"\"\n")
  invisible(x)
}

print.unresolvedValue <- function(x, ...) {
  cat("'unresolved' logi NA\n")
  invisible(x)
}

`$.miraiError` <- function(x, name) attr(x, name, exact = TRUE)
.DollarNames.miraiError <- function(x, pattern = "") grep(pattern, names(attributes(x)), value = TRUE, fixed = TRUE)
conditionMessage.miraiError <- function(c) attr(c, "message", exact = TRUE)
conditionCall.miraiError <- function(c) attr(c, "call", exact = TRUE)

# Values that are not mirai pass through unresolved, call_mirai, collect_mirai and stop_mirai
# unchanged, as in R's mirai; a list is looked into one level deep.
unresolved <- function(x) {
  if (is_mirai(x)) return(!exists("value", envir = x, inherits = FALSE) && !.Call(rmirai_resolved, x$handle))
  if (inherits(x, "unresolvedValue")) return(TRUE)
  if (is.list(x)) {
    for (e in unclass(x)) if (is_mirai(e) || inherits(e, "unresolvedValue")) if (unresolved(e)) return(TRUE)
  }
  FALSE
}

call_mirai <- function(x) {
  if (is_mirai(x)) collect_value(x)
  else if (is.list(x)) for (e in unclass(x)) if (is_mirai(e)) collect_value(e)
  invisible(x)
}

collect_mirai <- function(x, options = NULL) {
  if (is_mirai(x)) return(collect_value(x))
  if (!is.list(x)) return(x)
  collect_map(x, map_options(options))
}

stop_mirai <- function(x) {
  if (is_mirai(x)) return(invisible(.Call(rmirai_cancel, x$handle)))
  if (!is.list(x)) return(invisible(FALSE))
  # Last to first, as R's mirai does (unclassed: `[` on a mirai_map collects it).
  x <- unclass(x)
  out <- logical(length(x))
  for (i in rev(seq_along(x))) if (is_mirai(x[[i]])) out[i] <- .Call(rmirai_cancel, x[[i]]$handle)
  invisible(out)
}

# The index of the first element to resolve. An element that is not a mirai of this profile
# (a value, or a mirai of another profile, whose host this wait does not hear from) counts
# as resolved when it is not unresolved.
race_mirai <- function(x, .compute = NULL) {
  p <- get_profile(.compute)
  if (is.null(p)) stop("daemons must be set to use this function")
  if (is_mirai(x)) x <- list(x)
  if (!is.list(x)) stop("`x` must be a mirai or a list of mirai")
  if (!length(x)) return(invisible(0L))
  x <- unclass(x)
  repeat {
    ours <- vapply(x, function(m) is_mirai(m) && identical(m$profile, p), logical(1L))
    done <- which(!vapply(x, unresolved, logical(1L)))
    if (length(done)) return(invisible(done[1L]))
    if (all(ours)) return(invisible(.Call(rmirai_race, p$host, lapply(x, function(m) m$handle), -1L)))
    # Mixed hosts: wait on this profile's share a little, then look at every element again.
    if (any(ours)) .Call(rmirai_race, p$host, lapply(x[ours], function(m) m$handle), 50L)
    else Sys.sleep(0.05)
  }
}

is_mirai <- function(x) is.environment(x) && inherits(x, "mirai")
is_mirai_map <- function(x) inherits(x, "mirai_map")
is_mirai_error <- function(x) inherits(x, "miraiError")
is_mirai_interrupt <- function(x) inherits(x, "miraiInterrupt")
is_error_value <- function(x) inherits(x, "errorValue")

#' Evaluate an expression once on every connected daemon, as an ordinary task (`.args` and
#' local assignments stay local); what it changes in the daemon's global environment (with `<<-`
#' or `...`, packages loaded, options) persists across the daemon's cleanup.
everywhere <- function(.expr, ..., .args = list(), .min = 1L, .compute = NULL) {
  require_daemons(.compute)
  p <- get_profile(.compute)
  check_number(.min, ".min", 0, 1e5) # one copy each: a bound keeps a typo from exhausting memory
  task <- build_task(substitute(.expr), list(...), .args, parent.frame())
  ms <- .Call(rmirai_everywhere, p, task, as.integer(.min))
  if (isTRUE(p$sync)) run_sync(p, length(ms))
  invisible(structure(ms, class = "mirai_map"))
}
