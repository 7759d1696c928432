# mirai_map and the collection of many mirai at once: the `.flat`, `.progress` and `.stop`
# options and the errors they raise.

#' Collection options for `[.mirai_map` and `collect_mirai()`: `mp[.flat]` flattens the values
#' into a vector, `mp[.progress]` shows a progress bar, `mp[.stop]` stops at the first error
#' (cancelling the rest). They combine: `mp[.stop, .progress]`, `c(.stop, .progress)`.
.flat <- structure(".flat", class = "miraiOption")
.progress <- structure(".progress", class = "miraiOption")
.stop <- structure(".stop", class = "miraiOption")

print.miraiOption <- function(x, ...) {
  cat(sprintf("< mirai collection option %s >\n", unclass(x)))
  invisible(x)
}

#' Apply a function over a list or vector, or over the rows of a data frame, matrix or array.
mirai_map <- function(.x, .f, ..., .args = list(), .promise = NULL, .compute = NULL) {
  require_daemons(.compute)
  if (!is.function(.f)) stop(sprintf("`.f` must be of type function, not %s", typeof(.f)))
  if (!is.list(.args) && !is.environment(.args)) stop("`.args` must be a list or an environment")
  if (!is.null(.promise) && !is.function(.promise) &&
      !(is.list(.promise) && length(.promise) %in% 1:2 && all(vapply(.promise, function(h) is.null(h) || is.function(h), NA)))) {
    stop("`.promise` must be a function, or a list of one or two functions (onFulfilled, onRejected)")
  }
  if (!is.atomic(.x) && !is.list(.x)) stop(sprintf("`.x` must be a list, vector, data frame, matrix or array, not %s", typeof(.x)))
  rows <- map_rows(.x)
  items <- if (is.null(rows)) lapply(.x, function(x) list(x)) else rows
  out <- lapply(items, function(item) {
    args <- c(item, .args)
    mirai(do.call(.f, args, quote = TRUE), ..., .args = list(.f = .f, args = args, .mirai_within_map = TRUE),
          .compute = .compute)
  })
  names(out) <- if (is.null(rows)) names(.x) else attr(rows, "row_names")
  # `.promise`: an onFulfilled function, or list(onFulfilled, onRejected), attached to each mirai.
  if (!is.null(.promise)) {
    handlers <- if (is.function(.promise)) list(.promise) else .promise
    for (m in out) promises::then(as.promise.mirai(m), onFulfilled = handlers[[1L]],
                                  onRejected = if (length(handlers) > 1L) handlers[[2L]])
  }
  invisible(structure(out, class = "mirai_map"))
}

# The rows of a data frame (each cell's own value, as `[[` gives it, so a list column passes its
# element), or of a matrix or array (slices along the first dimension), as argument lists for
# `.f`; NULL for a list or vector. Names come from a data frame's character row names only, and
# from a matrix's or array's row names.
map_rows <- function(.x) {
  if (is.data.frame(.x)) {
    rows <- lapply(seq_len(nrow(.x)), function(i) lapply(.x, `[[`, i))
    rn <- attr(.x, "row.names")
    return(structure(rows, row_names = if (is.character(rn)) rn))
  }
  d <- dim(.x)
  if (length(d) < 2L) return(NULL)
  rest <- rep(list(quote(expr = )), length(d) - 1L)
  rows <- lapply(seq_len(d[1L]), function(i) as.list(do.call(`[`, c(list(.x, i), rest))))
  structure(rows, row_names = dimnames(.x)[[1L]])
}

# `mp[...]`: the options are evaluated where `[` was called, with `.flat`, `.progress` and
# `.stop` always in reach (so `mp[.flat]` works without attaching the package, and an unknown
# name is an error, not ignored).
`[.mirai_map` <- function(x, ...) {
  scope <- list2env(list(.flat = .flat, .progress = .progress, .stop = .stop), parent = parent.frame())
  exprs <- as.list(substitute(list(...)))[-1L]
  exprs <- exprs[!vapply(exprs, identical, NA, quote(expr = ))] # `mp[]`: no option
  opts <- lapply(exprs, eval, scope)
  collect_map(x, map_options(opts))
}

# Options as list(flat, stop, progress, progress_args): from option objects, a character vector
# of their names, a list of either, or a named list whose values turn each on (`.progress` may be
# a bar's name or a list of arguments for cli's progress bar).
map_options <- function(opts) {
  out <- list(flat = FALSE, stop = FALSE, progress = FALSE, progress_args = list())
  known <- c(".flat", ".stop", ".progress")
  turn_on <- function(name, value = TRUE) {
    if (!name %in% known) stop(sprintf("unknown collection option `%s`: use .flat, .progress or .stop", name), call. = FALSE)
    if (is.null(value) || isFALSE(value)) return()
    out[[substring(name, 2L)]] <<- TRUE
    if (name == ".progress") {
      if (is.character(value) && !inherits(value, "miraiOption") && !identical(value, ".progress")) out$progress_args <<- list(name = value)
      else if (is.list(value)) out$progress_args <<- value
    }
  }
  add <- function(o) {
    if (is.null(o)) return()
    if (is.character(o) && (is.null(names(o)) || inherits(o, "miraiOption"))) {
      for (name in unclass(o)) turn_on(name)
    } else if (is.list(o) && !is.null(names(o)) && all(nzchar(names(o)))) {
      for (name in names(o)) turn_on(name, o[[name]])
    } else if (is.list(o)) {
      for (e in o) add(e)
    } else {
      stop("collection options must be .flat, .progress or .stop (or their names)", call. = FALSE)
    }
  }
  add(opts)
  out
}

# Collects every element of a mirai_map (or list) in order; values that are not mirai pass
# through as they are.
collect_map <- function(x, opts) {
  n <- length(x)
  out <- vector("list", n)
  bar <- if (opts$progress) progress_bar(n, opts$progress_args)
  first_type <- NULL
  for (i in seq_len(n)) {
    value <- x[[i]]
    if (is_mirai(value)) value <- collect_value(value)
    if (!is.null(value)) out[[i]] <- value
    if (!is.null(bar)) bar(i)
    if ((opts$stop || opts$flat) && is_error_value(value)) {
      stop_mirai(x)
      map_abort(i, names(x)[i], value)
    }
    if (opts$flat) {
      if (is.null(first_type)) first_type <- typeof(value)
      else if (!identical(typeof(value), first_type)) {
        stop_mirai(x)
        map_abort(i, names(x)[i], NULL, sprintf("Cannot flatten outputs of differing type: %s / %s", first_type, typeof(value)))
      }
    }
  }
  names(out) <- names(x)
  if (opts$flat) out <- unlist(out, recursive = FALSE)
  out
}

# A progress reporter for `n` items: cli's progress bar when cli is installed (taking
# `args` for cli_progress_bar), else a text ticker on stderr.
progress_bar <- function(n, args) {
  if (requireNamespace("cli", quietly = TRUE)) {
    frame <- parent.frame() # the bar closes when the collection does
    id <- do.call(cli::cli_progress_bar, c(list(total = n, .envir = frame), args))
    return(function(i) cli::cli_progress_update(id = id, set = i, .envir = frame))
  }
  text_progress(n)
}

text_progress <- function(n) {
  function(i) {
    cat(sprintf("\r[ %d / %d %s ]", i, n, if (i == n) "done" else "...."), file = stderr())
    if (i == n) cat("\n", file = stderr())
  }
}

# The error for item `i` (named `name`) of a map: its failure `value` (a miraiError or
# errorValue) as the parent condition, or a message of the map's own. With cli, an rlang error
# as purrr's in_parallel() reads it (`location`, `name`, `parent`); without, an error condition
# carrying the same fields, whose message is "In index i:" and the cause.
map_abort <- function(i, name, value, message = NULL) {
  parent <- if (!is.null(value)) failure_condition(value)
  if (is.null(name) || !nzchar(name)) name <- NULL
  if (requireNamespace("cli", quietly = TRUE)) {
    info <- c(i = "In index: {i}.", if (!is.null(name)) c(i = "With name: {name}."))
    cli::cli_abort(c(message, info), location = i, name = name, parent = parent,
                   call = quote(mirai_map()), .frame = parent.frame())
  }
  text <- sprintf("In index %d:\n%s", i, if (is.null(message)) conditionMessage(parent) else message)
  stop(structure(list(message = text, call = quote(mirai_map()), location = i, name = name, parent = parent),
                 class = c("miraiMapError", "error", "condition")))
}

# A failed mirai's value as an R error condition: a miraiError keeps its message, call and
# fields (as the daemon's condition had them); an errorValue says what its code means.
failure_condition <- function(value) {
  if (is_mirai_error(value)) {
    fields <- attributes(value)
    fields$class <- NULL
    fields$condition.class <- NULL
    fields$stack.trace <- NULL
    cls <- attr(value, "condition.class")
    if (!"error" %in% cls) cls <- c(cls, "error", "condition")
    return(structure(c(list(message = conditionMessage(value), call = conditionCall(value)),
                       fields[setdiff(names(fields), c("message", "call"))]), class = unique(cls)))
  }
  simpleError(error_text(value))
}
