# mirai_map and the collection of many mirai at once: the `.flat`, `.progress` and `.stop`
# options and the errors they raise.

#' Collection options for mirai maps
#'
#' @description
#' `.flat`, `.progress` and `.stop` change how the results of a [mirai_map()] are collected,
#' given inside its brackets (`mp[.flat]`) or to [collect_mirai()]:
#' - `.flat` combines the results into one vector, as [unlist()] does one level down. They must
#'   all be of one type: a result whose type differs from the first one's, or an element that
#'   failed, stops the collection with an error, and the elements not yet done are cancelled.
#' - `.progress` shows a progress bar as the elements come in: the cli package's bar when cli
#'   is installed, otherwise a counter (`[ 3 / 10 .... ]`) on standard error.
#' - `.stop` stops at the first element that failed (with an error, a timeout or a
#'   cancellation), cancels every element not yet done, and raises an error.
#'
#' @format Each is a character string, its own name, of class `miraiOption`.
#'
#' @details
#' The options combine, as in `mp[.stop, .progress]`. Within `mp[...]` the three names are
#' found even when the package is not attached (so `mirai::mirai_map(x, f)[.flat]` works),
#' and any other value there is an error. [collect_mirai()] also takes them as a character
#' vector (`c(".flat", ".stop")`), or as a named list whose `TRUE` values turn them on; in a
#' list, `.progress` may be a character string (the bar's name) or a list of arguments for
#' `cli::cli_progress_bar()`.
#'
#' The error raised by `.stop`, or `.flat` on a failure, is the kind purrr's `in_parallel()`
#' expects. Its call is `mirai_map()`, and it has the fields `location` (the index of the
#' element), `name` (the element's name, or `NULL`) and `parent` (the element's failure as an
#' R condition: for a `miraiError`, a condition with the message, call, class and fields of
#' the error raised on the daemon; for a timeout or cancellation, a `simpleError` with the
#' text of its code). With cli installed it is an rlang error, which prints "In index: 2."
#' and the element's name; without cli, an error of class `miraiMapError` whose message
#' begins "In index 2:".
#'
#' @keywords misc
#' @seealso [mirai_map()], [collect_mirai()].
#'
#' @examples
#' .flat
#' \donttest{
#' daemons(2)
#' mp <- mirai_map(1:4, function(x) x * 10)
#' mp[.flat]
#' mp[.stop, .progress]
#' collect_mirai(mp, c(".flat", ".stop"))
#'
#' err <- tryCatch(
#'   mirai_map(list(a = 1, b = "x"), function(x) x + 1)[.stop],
#'   error = identity
#' )
#' err$location
#' err$name
#' conditionMessage(err$parent)
#' daemons(0)
#' }
.flat <- structure(".flat", class = "miraiOption")
#' @rdname dot-flat
#' @format NULL
#' @keywords misc
.progress <- structure(".progress", class = "miraiOption")
#' @rdname dot-flat
#' @format NULL
#' @keywords misc
.stop <- structure(".stop", class = "miraiOption")

print.miraiOption <- function(x, ...) {
  cat(sprintf("< mirai collection option %s >\n", unclass(x)))
  invisible(x)
}

#' Apply a function to each element, asynchronously
#'
#' @description
#' Applies `.f` to each element of `.x`, each call a [mirai()] of its own evaluated by the
#' daemons of a compute profile: the elements of a list or vector, or the rows of a data
#' frame, matrix or array. It returns at once; `mp[]` collects the results, with options
#' such as `mp[.flat]` (see [.flat]).
#'
#' @param .x what to map over:
#'   - a list or atomic vector: each element is passed to `.f` as its first argument;
#'   - a data frame: each row is one call, its cells passed as arguments named by the columns,
#'     each as `[[` gives it (so an element of a list column is passed as it is, not inside a
#'     list of length one);
#'   - a matrix or array: each slice along the first dimension (a row of a matrix) is one call,
#'     its values passed as separate arguments, named if the other dimensions have names.
#' @param .f the function to apply.
#' @param ... objects to assign in the daemons' global environment for every call, as
#'   `name = value` pairs, or one environment whose objects are sent (as `...` of [mirai()]).
#'   Use it for what `.f` calls or refers to.
#' @param .args a list of further arguments for `.f`, the same for every call, passed after the
#'   element itself.
#' @param .promise `NULL` (the default), or a function, or a list of one or two functions, to
#'   attach to each element's promise as its `onFulfilled` (and `onRejected`) handler with
#'   `promises::then()`. Needs the promises and later packages.
#' @param .compute the name of the compute profile whose daemons do the work; `NULL` (the
#'   default) for the current profile.
#'
#' @return A `mirai_map`, invisibly: a list of mirai, one for each element, named by the names
#'   of `.x` (by the character row names of a data frame, or the row names of a matrix or
#'   array). Collect it with `mp[]` (see \code{\link{[.mirai_map}}).
#'
#' @details
#' Daemons must be set for the profile (an error says so otherwise). The map runs as much in
#' parallel as there are daemons: each element is one task, queued first in, first out. A
#' failed element does not affect the others: `mp[]` returns its `miraiError` (or
#' `errorValue`) in its place, while `.stop` and `.flat` make the first failure an error of
#' the whole map. Starting local daemons with [daemons()] from within a task of a map is an
#' error.
#'
#' @seealso [.flat], [.progress] and [.stop] for collecting; [mirai()], [collect_mirai()],
#'   [stop_mirai()].
#'
#' @examples
#' \donttest{
#' daemons(2)
#' mp <- mirai_map(c(a = 1, b = 2, c = 3), function(x, y) x + y, .args = list(y = 10))
#' mp
#' mp[]
#' mp[.flat]
#'
#' # Rows of a data frame: one argument per column.
#' df <- data.frame(n = 1:2, letter = c("x", "y"))
#' mirai_map(df, function(n, letter) strrep(letter, n))[.flat]
#'
#' # Rows of a matrix.
#' mat <- matrix(1:6, nrow = 2)
#' mirai_map(mat, function(...) sum(...))[.flat]
#'
#' # A failure stays in its place, unless .stop or .flat is asked for.
#' mirai_map(list(1, "a"), function(x) x + 1)[]
#' daemons(0)
#' }
mirai_map <- function(.x, .f, ..., .args = list(), .promise = NULL, .compute = NULL) {
  require_daemons(.compute)
  if (!is.function(.f)) stop(sprintf("`.f` must be of type function, not %s", typeof(.f)))
  if (!is.list(.args) && !is.environment(.args)) stop("`.args` must be a list or an environment")
  if (is.environment(.args)) .args <- as.list.environment(.args, all.names = TRUE)
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
#' Collect the results of a mirai map
#'
#' @description
#' `mp[]` waits until every element of a [mirai_map()] has resolved and returns the results.
#' The collection options [.flat], [.progress] and [.stop] may go inside the brackets.
#' `print()` shows how many elements have resolved, as `< mirai map [2/3] >`.
#'
#' @param x a `mirai_map`.
#' @param ... for `[`, nothing, or any of the options `.flat`, `.progress` and `.stop`
#'   (evaluated where `[` is called, with the three always found; anything else is an error).
#'   For `print()`, ignored.
#'
#' @return For `[`, a list of the results in order, named as the map is (a failed element
#'   gives its `miraiError` or `errorValue`); with `.flat`, a vector. `print()` returns `x`,
#'   invisibly.
#'
#' @details
#' Waiting can be interrupted (Ctrl+C): the tasks go on, and `mp[]` can be called again. The
#' values are kept in the mirai, so a second collection is immediate.
#'
#' @seealso [mirai_map()], [.flat], [collect_mirai()].
#'
#' @examples
#' \donttest{
#' daemons(2)
#' mp <- mirai_map(1:3, function(x) { Sys.sleep(0.1); x^2 })
#' mp
#' mp[]
#' mp[.flat]
#' mp
#' daemons(0)
#' }
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
