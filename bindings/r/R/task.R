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

#' Evaluate an expression asynchronously
#'
#' @description
#' Sends `.expr` to a daemon to be evaluated and returns at once with a `mirai`, which will
#' hold the value once the daemon has finished. `m[]` waits for the value (see
#' \code{\link{[.mirai}}); `m$data` gives the value if it is there and an `unresolvedValue`
#' otherwise; [unresolved()] tells without waiting.
#'
#' @param .expr the expression to evaluate, written in place (wrap several lines in `{}`), or
#'   the name of an object holding a language object (a quoted expression or call), which is
#'   then evaluated instead.
#' @param ... objects to assign in the daemon's global environment before `.expr` is
#'   evaluated: `name = value` pairs, all named, or one environment whose objects are all sent.
#'   Functions that `.expr` calls, and the objects those functions use, go here.
#' @param .args objects to place in the local environment in which `.expr` is evaluated (its
#'   parent is the daemon's global environment): a named list, or an environment whose objects
#'   are sent.
#' @param .timeout `NULL` (the default) for no limit, or a number of milliseconds after which
#'   the task is abandoned: the mirai resolves to `errorValue` 5 ("Timed out") and a task still
#'   running is interrupted on its daemon, which stays for the next task.
#' @param .compute the name of the compute profile whose daemons evaluate the task; `NULL` (the
#'   default) for the current profile.
#' @param .retry `NULL` (the default) to take the profile's setting (`daemons(retry =)`), or
#'   the number of times this task runs again on another daemon if the daemon evaluating it
#'   dies (0 for never). Specific to this package.
#'
#' @return A `mirai` (an environment of that class), invisibly. Its value is that of `.expr`,
#'   or, when that could not be had, one of the failures [is_error_value()] recognises: a
#'   `miraiError` (the evaluation raised an error), a `miraiInterrupt` (it was interrupted), or
#'   an `errorValue`, an integer code: 5 the timeout passed, 19 the profile was reset before
#'   the task finished, 20 the task was cancelled with [stop_mirai()].
#'
#' @details
#' Nothing is taken from the calling environment unless it is named in `...` or `.args`: the
#' expression is evaluated elsewhere. The objects are serialized when `mirai()` is called, so
#' changing them afterwards has no effect on the task.
#'
#' Without daemons set for the profile, each `mirai()` starts an R process of its own, which
#' evaluates that task and exits (an ephemeral daemon). This is convenient for an occasional
#' task; for many, set [daemons()]. With a synchronous profile (`daemons(sync = TRUE)`), the
#' task is evaluated in this process before `mirai()` returns.
#'
#' When the profile's queue has reached the cap set with `daemons(memory =)`, `mirai()` waits
#' (and can be interrupted) until there is room; [try_mirai()] returns `NULL` instead. With
#' `daemons(seed =)`, each mirai takes the profile's next random-number stream, so results do
#' not depend on which daemon evaluates the task.
#'
#' @seealso \code{\link{[.mirai}} to collect the value; [mirai_map()], [everywhere()],
#'   [stop_mirai()], [daemons()].
#'
#' @examples
#' \donttest{
#' # Without daemons, a process is started for the task alone.
#' m <- mirai(Sys.getpid())
#' m[] != Sys.getpid()
#'
#' daemons(2)
#' m <- mirai({
#'   Sys.sleep(0.2)
#'   x + y
#' }, .args = list(x = 1, y = 2))
#' m
#' m[]
#' m$data
#'
#' # Functions and what they use go in `...`.
#' scale_by <- function(x) x * k
#' mirai(scale_by(3), scale_by = scale_by, k = 10)[]
#'
#' # Failures are values, not errors.
#' mirai(stop("failed"))[]
#' mirai(Sys.sleep(5), .timeout = 100)[]
#' daemons(0)
#' }
mirai <- function(.expr, ..., .args = list(), .timeout = NULL, .compute = NULL, .retry = NULL) {
  if (missing(.expr)) stop("missing expression, perhaps wrap in {}?")
  check_timeout(.timeout)
  check_retry(.retry, ".retry")
  p <- get_profile(.compute)
  task <- build_task(substitute(.expr), list(...), .args, parent.frame(), p)
  if (is.null(p)) return(invisible(ephemeral_mirai(task, .timeout)))
  m <- .Call(rmirai_submit, p, task, .timeout, FALSE, .retry)
  if (isTRUE(p$sync)) sync_resolve(p, m)
  invisible(m)
}

#' Evaluate an expression asynchronously, unless the queue is full
#'
#' @description
#' Does what [mirai()] does, except when the profile's queue has reached the memory cap set
#' with `daemons(memory =)`: then, instead of waiting for room, it returns `NULL` at once and
#' sends nothing.
#'
#' @inheritParams mirai
#'
#' @return A `mirai`, invisibly, or `NULL`, invisibly, if the queue was full. A task refused
#'   this way does not use up a random-number stream (with `daemons(seed =)`).
#'
#' @details
#' The cap counts the serialized tasks waiting for a daemon, not those already being
#' evaluated: [status()] shows the amount as `memory`. For a profile without a cap, or without
#' daemons set, `try_mirai()` does exactly what [mirai()] does.
#'
#' @seealso [mirai()], [daemons()].
#'
#' @examples
#' \donttest{
#' daemons(1, memory = 1)
#' busy <- try_mirai(Sys.sleep(0.5))             # evaluated at once
#' queued <- try_mirai(length(x), x = runif(2e5)) # about 1.6 MB, waits in the queue
#' refused <- try_mirai(1)                        # the queue is over its 1 MB cap
#' is.null(refused)
#' status()$memory
#' queued[]
#' daemons(0)
#' }
try_mirai <- function(.expr, ..., .args = list(), .timeout = NULL, .compute = NULL, .retry = NULL) {
  if (missing(.expr)) stop("missing expression, perhaps wrap in {}?")
  check_timeout(.timeout)
  check_retry(.retry, ".retry")
  p <- get_profile(.compute)
  stream <- p$stream
  task <- build_task(substitute(.expr), list(...), .args, parent.frame(), p)
  if (is.null(p)) return(invisible(ephemeral_mirai(task, .timeout)))
  m <- .Call(rmirai_submit, p, task, .timeout, TRUE, .retry)
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

check_retry <- function(retry, what) {
  if (!is.null(retry)) check_number(retry, what, 0, 2^31 - 1)
}

# A mirai without daemons: a host of its own and one `Rscript` daemon for this task alone (its
# output discarded). The mirai keeps the host; collecting the value closes it.
ephemeral_mirai <- function(task, timeout) {
  p <- new.env(parent = emptyenv())
  p$host <- .Call(rmirai_listen, local_url(), 0, NULL, NULL, NULL, session_secret(), 0, host_timing())
  .Call(rmirai_launch, p$host, c(rscript_path(), "-e", "mirai:::.daemon(\"{url}\")"), 1L, FALSE)
  m <- .Call(rmirai_submit, p, task, timeout, FALSE, NULL)
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

#' Collect the value of a mirai
#'
#' @description
#' `m[]` waits until a mirai has resolved and returns its value, the same value that `m$data`
#' then holds. `print()` shows whether the value is in: `< mirai [] >` while it is not,
#' `< mirai [$data] >` once it is.
#'
#' @param x a mirai.
#' @param i leave it empty, as in `m[]`; anything given is ignored.
#' @param ... ignored.
#'
#' @return For `[`, the value: that of the expression, or a `miraiError`, `miraiInterrupt` or
#'   `errorValue` describing a failure (see [is_error_value()]); collecting never raises an
#'   error itself. `print()` returns `x`, invisibly.
#'
#' @details
#' The wait can be interrupted (Ctrl+C) without affecting the task, and `m[]` called again
#' later. The value is kept in the mirai: collecting again returns it at once. `m$data` never
#' waits: until the value is in, it is an `unresolvedValue` (a logical `NA` of that class,
#' which [unresolved()] recognises).
#'
#' @seealso [mirai()], [call_mirai()], [collect_mirai()], [unresolved()].
#'
#' @examples
#' \donttest{
#' daemons(1)
#' m <- mirai({ Sys.sleep(0.2); "done" })
#' m
#' m$data
#' m[]
#' m
#' m$data
#' daemons(0)
#' }
`[.mirai` <- function(x, i) collect_value(x)

#' @rdname sub-.mirai
print.mirai <- function(x, ...) {
  cat(if (unresolved(x)) "< mirai [] >\n" else "< mirai [$data] >\n")
  invisible(x)
}

#' @rdname sub-.mirai_map
print.mirai_map <- function(x, ...) {
  done <- sum(!vapply(x, unresolved, logical(1L)))
  cat(sprintf("< mirai map [%d/%d] >\n", done, length(x)))
  invisible(x)
}

#' @rdname is_mirai_error
#' @usage NULL
print.errorValue <- function(x, ...) {
  cat(sprintf("'errorValue' int %s\n", error_text(x)))
  invisible(x)
}

#' @rdname is_mirai_error
#' @usage NULL
print.miraiError <- function(x, ...) {
  cat(sprintf("'miraiError' chr %s\n", x))
  invisible(x)
}

#' @rdname is_mirai_error
#' @usage NULL
print.miraiInterrupt <- function(x, ...) {
  cat("'miraiInterrupt' chr \"\"\n")
  invisible(x)
}

print.unresolvedValue <- function(x, ...) {
  cat("'unresolved' logi NA\n")
  invisible(x)
}

#' @rdname is_mirai_error
#' @param name the name of a field (an attribute) of a `miraiError`.
#' @usage NULL
`$.miraiError` <- function(x, name) attr(x, name, exact = TRUE)
.DollarNames.miraiError <- function(x, pattern = "") grep(pattern, names(attributes(x)), value = TRUE, fixed = TRUE)
#' @rdname is_mirai_error
#' @param c a `miraiError`.
#' @usage NULL
conditionMessage.miraiError <- function(c) attr(c, "message", exact = TRUE)
#' @rdname is_mirai_error
#' @usage NULL
conditionCall.miraiError <- function(c) attr(c, "call", exact = TRUE)

# Values that are not mirai pass through unresolved, call_mirai, collect_mirai and stop_mirai
# unchanged, as in R's mirai; a list is looked into one level deep.
#' Query whether a mirai is unresolved
#'
#' @description
#' Tells, without waiting, whether a mirai's value is still to come.
#'
#' @param x a mirai; a list of mirai, such as a `mirai_map` (looked into one level: `TRUE`
#'   while any of them is unresolved); or the `$data` of a mirai, which is an
#'   `unresolvedValue` until the value is in. Anything else counts as resolved.
#'
#' @return `TRUE` or `FALSE`.
#'
#' @details
#' A mirai that timed out, failed or was cancelled is resolved: its value says what happened.
#' Checking `unresolved()` in a loop lets other work go on in the meantime; [call_mirai()]
#' and `m[]` wait instead.
#'
#' @seealso [call_mirai()], [race_mirai()], \code{\link{[.mirai}}.
#'
#' @examples
#' unresolved(42)
#' \donttest{
#' daemons(1)
#' m <- mirai({ Sys.sleep(0.2); 1 })
#' unresolved(m)
#' unresolved(m$data)
#' while (unresolved(m)) Sys.sleep(0.05)
#' m$data
#' daemons(0)
#' }
unresolved <- function(x) {
  if (is_mirai(x)) return(!exists("value", envir = x, inherits = FALSE) && !.Call(rmirai_resolved, x$handle))
  if (inherits(x, "unresolvedValue")) return(TRUE)
  if (is.list(x)) {
    for (e in unclass(x)) if (is_mirai(e) || inherits(e, "unresolvedValue")) if (unresolved(e)) return(TRUE)
  }
  FALSE
}

#' Wait for mirai to resolve
#'
#' @description
#' Waits until a mirai, or each mirai in a list such as a `mirai_map`, has resolved, and
#' returns what it was given, so that the values can be read from `$data`.
#'
#' @param x a mirai, or a list of mirai (looked into one level; other elements are left
#'   alone). Anything else is returned as it is.
#'
#' @return `x`, invisibly.
#'
#' @details
#' The wait can be interrupted (Ctrl+C) without affecting the tasks. Where `m[]` returns the
#' value, `call_mirai(m)` returns the mirai, as in `call_mirai(m)$data`.
#'
#' @seealso [collect_mirai()] to get the values, [race_mirai()] to wait for the first.
#'
#' @examples
#' \donttest{
#' daemons(1)
#' m <- mirai(2 + 2)
#' call_mirai(m)$data
#' ms <- list(mirai(1), mirai(2))
#' call_mirai(ms)
#' sapply(ms, function(m) m$data)
#' daemons(0)
#' }
call_mirai <- function(x) {
  if (is_mirai(x)) collect_value(x)
  else if (is.list(x)) for (e in unclass(x)) if (is_mirai(e)) collect_value(e)
  invisible(x)
}

#' Collect the values of mirai
#'
#' @description
#' Waits for a mirai and returns its value; or waits for each mirai in a list, such as a
#' `mirai_map`, and returns their values, collected as the `options` ask.
#'
#' @param x a mirai; or a list of mirai (elements that are not mirai come back as they are);
#'   anything else is returned as it is.
#' @param options how to collect a list: `NULL` (the default) for a list of values; or the
#'   options [.flat], [.progress] and [.stop], alone or combined with `c()`, or their names as
#'   a character vector, or a named list whose `TRUE` values turn them on (where `.progress`
#'   may be the bar's name, or a list of arguments for `cli::cli_progress_bar()`).
#'
#' @return For a mirai, its value. For a list, a list of the values, named as `x` is; with
#'   `.flat`, a vector.
#'
#' @details
#' `collect_mirai(mp, options)` is the same as `mp[...]` for a `mirai_map` with those
#' options, and works for plain lists of mirai as well. See [.flat] for the error raised by
#' `.stop` and `.flat`.
#'
#' @seealso [.flat], \code{\link{[.mirai_map}}, [call_mirai()].
#'
#' @examples
#' \donttest{
#' daemons(1)
#' collect_mirai(mirai(1 + 1))
#' mp <- mirai_map(c(a = 1, b = 4), sqrt)
#' collect_mirai(mp)
#' collect_mirai(mp, .flat)
#' collect_mirai(mp, c(".stop", ".flat"))
#' collect_mirai(list(mirai(1), mirai(2)), list(.progress = "Collecting", .flat = TRUE))
#' daemons(0)
#' }
collect_mirai <- function(x, options = NULL) {
  if (is_mirai(x)) return(collect_value(x))
  if (!is.list(x)) return(x)
  collect_map(x, map_options(options))
}

#' Stop mirai
#'
#' @description
#' Cancels a mirai, or each mirai in a list such as a `mirai_map`: a task still queued is
#' dropped, and one being evaluated is interrupted on its daemon, which stays connected and
#' takes the next task. The mirai resolves to `errorValue` 20 ("Operation canceled").
#'
#' @param x a mirai, or a list of mirai (cancelled from last to first, as R's mirai does).
#'   Anything else is left alone.
#'
#' @return Invisibly: for a mirai, `TRUE` if it was cancelled and `FALSE` if it had already
#'   resolved; for a list, a logical vector with that answer for each element (`FALSE` for
#'   elements that are not mirai); for anything else, `FALSE`.
#'
#' @details
#' This works the same with `daemons(dispatcher = FALSE)`, and for ephemeral mirai (those
#' created without daemons), whose task is stopped in its process as well.
#'
#' @seealso [mirai()] and its `.timeout`, [is_error_value()].
#'
#' @examples
#' \donttest{
#' daemons(1)
#' m <- mirai(Sys.sleep(10))
#' stop_mirai(m)
#' m[]
#' mirai("still there")[]
#' daemons(0)
#' }
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
#' Wait for the first of several mirai
#'
#' @description
#' Waits until one element of a list of mirai has resolved and returns its index, for
#' processing results in the order they come in.
#'
#' @param x a list of mirai, such as a `mirai_map`, or a single mirai. Elements that are not
#'   mirai count as resolved.
#' @param .compute the name of the compute profile the mirai belong to; `NULL` (the default)
#'   for the current profile. Its daemons must be set. Mirai of other profiles in `x` are
#'   looked at every 50 milliseconds or so.
#'
#' @return Invisibly, the index (an integer) of the first resolved element: the lowest index
#'   of those already resolved, if any, otherwise the first to resolve. `0` for an empty list.
#'
#' @seealso [call_mirai()], [unresolved()].
#'
#' @examples
#' \donttest{
#' daemons(2)
#' ms <- unclass(mirai_map(c(0.3, 0.1, 0.2), function(s) { Sys.sleep(s); s }))
#' while (length(ms)) {
#'   i <- race_mirai(ms)
#'   print(ms[[i]][])
#'   ms <- ms[-i]
#' }
#' daemons(0)
#' }
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

#' Is an object a mirai, or a mirai map?
#'
#' @description
#' `is_mirai()` tells a mirai (from [mirai()] or [try_mirai()]); `is_mirai_map()` tells a
#' `mirai_map` (from [mirai_map()] or [everywhere()]).
#'
#' @param x an object.
#'
#' @return `TRUE` or `FALSE`.
#'
#' @seealso [is_mirai_error()] and the other tests for failures.
#'
#' @examples
#' is_mirai(1)
#' is_mirai_map(list())
#' \donttest{
#' daemons(sync = TRUE)
#' is_mirai(mirai(1))
#' is_mirai_map(mirai_map(1:2, identity))
#' daemons(0)
#' }
is_mirai <- function(x) is.environment(x) && inherits(x, "mirai")
#' @rdname is_mirai
is_mirai_map <- function(x) inherits(x, "mirai_map")
#' Error validators
#'
#' @description
#' These tell the kinds of failure a mirai's value can be.
#' - `is_mirai_error()` recognises a `miraiError`, the value of a task whose evaluation raised
#'   an error. It is a character string, the message as R would print it (`"Error in f(x):
#'   ..."`), of classes `miraiError`, `errorValue` and `try-error`, whose attributes hold the
#'   error's fields, read with `$`: `message`, `call`, `condition.class` (the classes of the
#'   original condition), `stack.trace` (the task's calls, innermost first, as a list) and any
#'   other field the condition had. [conditionMessage()] and [conditionCall()] work on it.
#' - `is_mirai_interrupt()` recognises a `miraiInterrupt`, the value of a task that an
#'   interrupt stopped on its daemon: an empty string of classes `miraiInterrupt`,
#'   `errorValue` and `try-error`.
#' - `is_error_value()` recognises any failure: a `miraiError`, a `miraiInterrupt`, or an
#'   `errorValue`, an integer code for a failure outside the task's code: 5 the `.timeout`
#'   passed, 19 the profile was reset before the task finished, 20 the task was cancelled with
#'   [stop_mirai()].
#'
#' @usage
#' is_mirai_error(x)
#'
#' is_mirai_interrupt(x)
#'
#' is_error_value(x)
#'
#' \method{$}{miraiError}(x, name)
#'
#' \method{conditionMessage}{miraiError}(c)
#'
#' \method{conditionCall}{miraiError}(c)
#'
#' \method{print}{miraiError}(x, ...)
#'
#' \method{print}{miraiInterrupt}(x, ...)
#'
#' \method{print}{errorValue}(x, ...)
#'
#' @param x an object.
#' @param ... ignored.
#'
#' @return The tests return `TRUE` or `FALSE`. `$` returns the field (`NULL` if there is none),
#'   `conditionMessage()` the error's message and `conditionCall()` its call (`NULL` for an
#'   error raised directly by the task's expression). The `print()` methods return `x`,
#'   invisibly.
#'
#' @seealso [mirai()], \code{\link{[.mirai}}.
#'
#' @examples
#' is_error_value(1)
#' \donttest{
#' daemons(1)
#' e <- mirai(stop("boom"))[]
#' e
#' is_mirai_error(e)
#' is_error_value(e)
#' e$condition.class
#' conditionMessage(e)
#' e$stack.trace
#'
#' t <- mirai(Sys.sleep(1), .timeout = 50)[]
#' t
#' is_mirai_error(t)
#' is_error_value(t)
#' daemons(0)
#' }
is_mirai_error <- function(x) inherits(x, "miraiError")
#' @rdname is_mirai_error
#' @usage NULL
is_mirai_interrupt <- function(x) inherits(x, "miraiInterrupt")
#' @rdname is_mirai_error
#' @usage NULL
is_error_value <- function(x) inherits(x, "errorValue")

#' Evaluate an expression on every daemon
#'
#' @description
#' Evaluates `.expr` once on each daemon connected to a compute profile, typically to load
#' packages, set options or define objects before the tasks that need them. What it leaves
#' in a daemon's global environment stays there: objects given in `...` or assigned with
#' `<<-`, packages attached, options set. The cleanup a daemon does after each task keeps it.
#'
#' @param .expr the expression, as for [mirai()].
#' @param ... objects to assign in each daemon's global environment, where they stay:
#'   `name = value` pairs, or one environment whose objects are all sent.
#' @param .args objects for the local environment of `.expr` (a named list or an
#'   environment); these, and local assignments, do not stay.
#' @param .min the least number of copies to send, from 0 to 100000 (1 by default). When fewer
#'   daemons are connected, the extra copies wait for daemons that connect later, each of which
#'   takes one: useful with remote daemons that are still starting.
#' @param .compute the name of the compute profile; `NULL` (the default) for the current one.
#'   Its daemons must be set.
#'
#' @return A `mirai_map` of one mirai for each copy, invisibly. Collect it (`[]`) to wait until
#'   every daemon has evaluated the expression.
#'
#' @details
#' Each copy goes to a different daemon, and tasks submitted after `everywhere()` wait until
#' every copy has been handed out, so none of them runs on a daemon that has not yet evaluated
#' it. Daemons that connect once all copies are handed out do not receive it. Should daemons
#' leave before taking their copy, so that fewer remain than copies wait (beyond those `.min`
#' asks for), the extra copies resolve to `errorValue` 19 and the tasks behind them go on: the
#' queue never waits for daemons that have gone. With a synchronous profile, the expression is evaluated once, in the profile's own global
#' environment.
#'
#' @seealso [mirai()], [daemons()].
#'
#' @examples
#' \donttest{
#' daemons(2)
#' everywhere(library(tools))
#' mirai("tools" %in% .packages())[]
#' everywhere({}, threshold = 0.5)[]
#' mirai(threshold)[]
#' daemons(0)
#' }
everywhere <- function(.expr, ..., .args = list(), .min = 1L, .compute = NULL) {
  require_daemons(.compute)
  p <- get_profile(.compute)
  check_number(.min, ".min", 0, 1e5) # one copy each: a bound keeps a typo from exhausting memory
  task <- build_task(substitute(.expr), list(...), .args, parent.frame())
  ms <- .Call(rmirai_everywhere, p, task, as.integer(.min))
  if (isTRUE(p$sync)) run_sync(p, length(ms))
  invisible(structure(ms, class = "mirai_map"))
}
