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
    stop("all `...` arguments must be named, unless supplying an environment", call. = FALSE)
  }
  if (is.environment(.args)) .args <- as.list.environment(.args, all.names = TRUE)
  if (length(.args) && (is.null(names(.args)) || any(!nzchar(names(.args))))) {
    stop("all items in `.args` must be named, unless supplying an environment", call. = FALSE)
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

# A mirai without daemons: a host of its own and one `Rscript` daemon for this task alone (its
# output discarded). The mirai keeps the host; collecting the value closes it.
ephemeral_mirai <- function(task, timeout) {
  p <- new.env(parent = emptyenv())
  p$host <- .Call(rmirai_listen, local_url(), 0, NULL, NULL, NULL)
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

`[.mirai_map` <- function(x, ...) {
  opts <- vapply(as.list(substitute(list(...)))[-1L], deparse, "")
  collect_map(x, opts)
}

collect_map <- function(x, opts) {
  flat <- ".flat" %in% opts
  stop_at <- ".stop" %in% opts
  progress <- ".progress" %in% opts
  n <- length(x)
  out <- vector("list", n)
  for (i in seq_len(n)) {
    out[[i]] <- collect_value(x[[i]])
    if (progress) cat(sprintf("\r[ %d / %d %s ]", i, n, strrep(".", i * 10L %/% n)), file = stderr())
    if ((stop_at || flat) && is_error_value(out[[i]])) {
      stop_mirai(x)
      msg <- if (is_mirai_error(out[[i]])) as.character(out[[i]]) else nextcode(out[[i]])
      stop(sprintf("In index %d:\n%s", i, msg), call. = FALSE)
    }
  }
  if (progress) cat("\n", file = stderr())
  names(out) <- names(x)
  if (flat) {
    types <- unique(vapply(out, typeof, ""))
    if (length(types) > 1L) stop(sprintf("cannot flatten outputs of differing type: %s", paste(types, collapse = " / ")))
    out <- unlist(out, recursive = FALSE)
  }
  out
}

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
  cat(sprintf("'errorValue' int %s\n", nextcode(x)))
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

unresolved <- function(x) {
  if (inherits(x, "mirai")) return(!exists("value", envir = x, inherits = FALSE) && !.Call(rmirai_resolved, x$handle))
  if (inherits(x, "unresolvedValue")) return(TRUE)
  if (is.list(x)) return(any(vapply(x, unresolved, logical(1L))))
  FALSE
}

call_mirai <- function(x) {
  if (inherits(x, "mirai")) collect_value(x) else lapply(x, call_mirai)
  invisible(x)
}

collect_mirai <- function(x, options = NULL) {
  if (inherits(x, "mirai")) return(collect_value(x))
  # A named list turns on each option whose value is not FALSE or NULL (`.progress` may be a label).
  if (is.list(options)) options <- names(options)[vapply(options, function(o) !is.null(o) && !isFALSE(o), logical(1L))]
  collect_map(x, options)
}

stop_mirai <- function(x) {
  if (is.null(x)) return(FALSE)
  if (inherits(x, "mirai")) return(.Call(rmirai_cancel, x$handle))
  # Last to first, as R's mirai does (unclassed: `[` on a mirai_map collects it).
  x <- unclass(x)
  out <- logical(length(x))
  for (i in rev(seq_along(x))) out[i] <- stop_mirai(x[[i]])
  out
}

race_mirai <- function(x, .compute = NULL) {
  p <- get_profile(.compute)
  if (is.null(p)) stop("daemons must be set to use race_mirai()")
  if (!length(x)) return(invisible(0L))
  invisible(.Call(rmirai_race, p$host, lapply(x, function(m) m$handle)))
}

is_mirai <- function(x) inherits(x, "mirai")
is_mirai_map <- function(x) inherits(x, "mirai_map")
is_mirai_error <- function(x) inherits(x, "miraiError")
is_mirai_interrupt <- function(x) inherits(x, "miraiInterrupt")
is_error_value <- function(x) inherits(x, "errorValue")

#' Apply a function over a list or vector, or over the rows of a data frame or matrix.
mirai_map <- function(.x, .f, ..., .args = list(), .promise = NULL, .compute = NULL) {
  require_daemons(.compute)
  if (!is.function(.f)) stop("`.f` must be of type function, not ", typeof(.f))
  rows <- is.data.frame(.x) || is.matrix(.x)
  items <- if (rows) lapply(seq_len(nrow(.x)), function(i) as.list(if (is.data.frame(.x)) .x[i, , drop = FALSE] else .x[i, ])) else as.list(.x)
  out <- lapply(items, function(item) {
    args <- if (rows) c(item, .args) else c(list(item), .args)
    mirai(do.call(.f, args, quote = TRUE), ..., .args = list(.f = .f, args = args, .mirai_within_map = TRUE), .compute = .compute)
  })
  names(out) <- if (rows) rownames(.x) else names(.x)
  if (rows && is.data.frame(.x) && identical(names(out), as.character(seq_len(nrow(.x))))) names(out) <- NULL
  # `.promise`: an onFulfilled function, or list(onFulfilled, onRejected), attached to each mirai.
  if (!is.null(.promise)) {
    handlers <- if (is.function(.promise)) list(.promise) else .promise
    for (m in out) promises::then(as.promise.mirai(m), onFulfilled = handlers[[1L]],
                                  onRejected = if (length(handlers) > 1L) handlers[[2L]])
  }
  structure(out, class = "mirai_map")
}

#' Evaluate an expression once on every connected daemon.
everywhere <- function(.expr, ..., .args = list(), .min = 1L, .compute = NULL) {
  require_daemons(.compute)
  p <- get_profile(.compute)
  task <- build_task(substitute(.expr), list(...), .args, parent.frame())
  ms <- .Call(rmirai_everywhere, p, task, as.integer(.min))
  if (isTRUE(p$sync)) run_sync(p, length(ms))
  invisible(structure(ms, class = "mirai_map"))
}
